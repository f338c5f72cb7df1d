"""CPU (process_time) of in-process 3-name v1 certificates: SQLite :memory:, inline runner, FakeCA."""
import sys, os, time, unittest
sys.path.insert(0, os.getcwd())
import gateway
from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, _clock_at_now, build_test_gateway
from gateway.store.runners import InlineRunner
from gateway.store.sqlite import SQLiteStore
from tests.test_v1_face import KEY, FaceTestCase, make_csr

N = int(os.environ.get("N", "60"))
out = {}

class Probe(FaceTestCase):
    def setUp(self):
        clock = _clock_at_now()
        ca = FakeCA(clock=clock)
        store = self.successResultOf(SQLiteStore.open(":memory:", clock, upstream=ca.directory_url, runner=InlineRunner()))
        self.gateway = build_test_gateway(self.keys, ca=ca, clock=clock, store=store)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def test_probe(self):
        self.register()
        times = []
        for i in range(N):
            names = [f"a{i}.example.com", f"b{i}.example.com", f"c{i}.example.com"]
            start = time.process_time()
            for name in names:
                url, answered = self.authorize(name)
                self.get(url[len(self.base):])
            issued = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(names))})
            times.append(time.process_time() - start)
            assert issued.status == 201, issued.body
        out["times"] = times

r = unittest.TestResult()
Probe("test_probe").run(r)
assert not r.errors and not r.failures, (r.errors, r.failures)
t = out["times"]
import statistics
print(gateway.__file__, f"N={N} mean {statistics.mean(t)*1e3:.2f} ms; first10 {statistics.mean(t[:10])*1e3:.2f}; last10 {statistics.mean(t[-10:])*1e3:.2f}; median {statistics.median(t)*1e3:.2f}")
