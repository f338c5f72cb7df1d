"""
The benchmark's memory sampler must not trip over a gateway child that
has just exited: the CI run on 2026-12-03 aborted the whole benchmark with
``KeyError: 'VmRSS'`` because a zombie's /proc/PID/status has no VmRSS.
"""

import subprocess
import sys
import time
import types

from bench import run as bench_run

# A parent that forks a child which exits at once and is never reaped:
# the child stays a zombie for as long as the parent sleeps.
ZOMBIE_PARENT = (
    "import os, sys, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os._exit(0)\n"
    "print(pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("State:"):
                return line.split()[1]
    return "?"


def test_a_zombie_child_is_left_out_of_the_rss_sample():
    parent = subprocess.Popen([sys.executable, "-c", ZOMBIE_PARENT], stdout=subprocess.PIPE, text=True)
    try:
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while _state(zombie) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(zombie) == "Z"
        gateway = types.SimpleNamespace(process=parent)
        assert zombie in bench_run.gateway_pids(gateway)

        sample = bench_run.gateway_rss(gateway)

        assert str(zombie) not in sample["processes"]
        assert list(sample["processes"]) == [str(parent.pid)]
        assert sample["VmRSS"] > 0
    finally:
        parent.kill()
        parent.wait()


def test_a_load_without_percentiles_is_logged_as_not_available():
    # 2026-12-03: hey returned no percentiles at 4 workers and the log line
    # raised TypeError, aborting the run before its results were written.
    measured = {"rps": 0.0, "p50_ms": None, "p99_ms": None, "tool": "hey",
                "gateway_cpu_us_per_request": None, "gateway_cores_busy": 0.5}
    line = bench_run.load_line("HEAD", 64, measured)
    assert line == ("  HEAD /directory @64: 0 req/s, p50 n/a, p99 n/a (hey); "
                    "gateway CPU n/a, 0.50 cores busy")
    measured.update(p50_ms=4.3, p99_ms=9.7, gateway_cpu_us_per_request=100.4)
    assert bench_run.load_line("HEAD", 64, measured) == (
        "  HEAD /directory @64: 0 req/s, p50 4.30 ms, p99 9.70 ms (hey); "
        "gateway CPU 100 us/request, 0.50 cores busy")


def test_a_gateway_that_has_exited_stops_the_sample_with_its_output():
    # 2026-12-03 again: a --workers gateway whose worker could not open
    # the fresh state had exited; the sampler found no process and the
    # benchmark aborted with KeyError: 'VmRSS' instead of the reason.
    ended = subprocess.Popen([sys.executable, "-c", "print('cannot start: database is locked')"],
                             stdout=subprocess.PIPE, text=True)
    output = ended.stdout.read()
    ended.wait()
    gateway = types.SimpleNamespace(process=ended, log=lambda: output)
    try:
        bench_run.gateway_rss(gateway)
    except RuntimeError as error:
        assert "not running" in str(error)
        assert "cannot start: database is locked" in str(error)
    else:
        raise AssertionError("a sample of no process was returned")
