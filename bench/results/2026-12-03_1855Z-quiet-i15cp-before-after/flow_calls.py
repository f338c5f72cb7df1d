# Run from a source tree (cwd), e.g.: cd /tmp/before && N=25 .venv/bin/python <this dir>/flow_calls.py
import sys, os, cProfile, pstats, io
sys.path.insert(0, os.getcwd())
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "flow_cpu.py")).read().split("r = unittest.TestResult()")[0])
prof = cProfile.Profile()
def test_probe(self):
    self.register()
    for i in range(N):
        names = [f"a{i}.example.com", f"b{i}.example.com", f"c{i}.example.com"]
        if i == 5: prof.enable()
        for name in names:
            url, answered = self.authorize(name)
            self.get(url[len(self.base):])
        issued = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(names))})
    prof.disable()
Probe.test_probe = test_probe
r = unittest.TestResult()
Probe("test_probe").run(r)
assert not r.errors and not r.failures, (r.errors, r.failures)
st = pstats.Stats(prof)
gw = sum(v[1] for k, v in st.stats.items() if "/gateway/" in k[0] and "process/testing.py" not in k[0])
print(gateway.__file__, "total calls per cert", st.total_calls / (N - 5), "gateway-code calls per cert", gw / (N - 5))
