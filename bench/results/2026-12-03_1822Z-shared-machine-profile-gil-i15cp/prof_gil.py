"""bench/run.py with py-spy --gil at 500 Hz, only the sequential 3-name legacy profile."""
import os, subprocess, sys, time
sys.path.insert(0, os.getcwd())
from bench import profiling, run

def enter(self):
    self.process = subprocess.Popen(
        [profiling.py_spy(), "record", "--pid", str(self.pid), "--format", "raw", "--rate", "500",
         "--gil", "--nonblocking", "--output", self.path],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    return self
profiling.Recorder.__enter__ = enter
run.Bench.profile_issuance = lambda self, stack: None
run.Bench.profile_head = lambda self, stack: None
sys.exit(run.main(sys.argv[1:]))
