"""
How the benchmark starts the gateway: exactly ``acme-gateway …`` (the same
``gateway.process.cli.main``), with two optional benchmark-only switches in front:

    gateway_main.py [--bench-src DIR] [--bench-tracemalloc FILE] -- serve ...

``--bench-src DIR`` imports the ``gateway`` package from DIR instead of the
checkout (to measure a patched copy side by side, before/after, without
touching the working tree); ``--bench-tracemalloc FILE`` traces Python
allocations and, on SIGUSR1, writes the top allocation sites (and their
growth since the previous SIGUSR1) to FILE -- for explaining memory growth,
never in a timed run.
"""

import os
import signal
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    src = None
    trace_file = None
    while argv and argv[0] != "--":
        flag = argv.pop(0)
        if flag == "--bench-src":
            src = argv.pop(0)
        elif flag == "--bench-tracemalloc":
            trace_file = argv.pop(0)
        else:
            raise SystemExit(f"gateway_main.py: unknown switch {flag}")
    if argv and argv[0] == "--":
        argv.pop(0)
    sys.path.insert(0, os.path.abspath(src) if src else REPO_ROOT)
    if trace_file:
        _trace(trace_file)
    try:
        from gateway.process.cli import main as gateway_main
    except ImportError:
        # A --bench-src tree from before the package was grouped by role.
        from gateway.cli import main as gateway_main

    return gateway_main(argv)


def _trace(path):
    import tracemalloc

    tracemalloc.start(12)
    state = {"previous": None}

    def dump(signum, frame):
        snapshot = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<frozen abc>"),
        ))
        current, peak = tracemalloc.get_traced_memory()
        with open(path, "a") as f:
            f.write(f"=== snapshot: traced {current / 1e6:.2f} MB (peak {peak / 1e6:.2f} MB)\n")
            if state["previous"] is not None:
                f.write("--- growth since the previous snapshot, by allocation site\n")
                for stat in snapshot.compare_to(state["previous"], "traceback")[:15]:
                    f.write(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks\n")
                    for line in stat.traceback.format(limit=6):
                        f.write(f"      {line}\n")
            f.write("--- largest allocation sites (by line)\n")
            for stat in snapshot.statistics("lineno")[:15]:
                f.write(f"{stat.size / 1024:10.1f} KiB {stat.count:8d} blocks  {stat.traceback[0]}\n")
            f.write("=== end of snapshot\n")
        state["previous"] = snapshot

    signal.signal(signal.SIGUSR1, dump)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
