"""
py-spy profiles of the running gateway process (``bench/run.py --profile``):
collapsed stacks to ``<name>.txt`` and a short summary of where the
samples went (by function, inclusive and self).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time


def py_spy() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(local, os.X_OK):
        return local
    return shutil.which("py-spy") or ""


def available() -> bool:
    return bool(py_spy())


class Recorder:
    def __init__(self, pid: int, stem: str, rate: int = 250):
        self.pid = pid
        self.path = stem + ".txt"
        self.rate = rate
        self.process = None
        self.summary: dict = {}

    def __enter__(self):
        self.process = subprocess.Popen(
            [py_spy(), "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.rate),
             "--nonblocking", "--output", self.path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.summary = summarize(self.path)
        return False


def _function(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize(path: str, top: int = 15) -> dict:
    inclusive = collections.Counter()
    own = collections.Counter()
    total = 0
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = [_function(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "file": os.path.basename(path),
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top * 3)
                      if 100 * n / total < 99.5][:top],
        "self": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
    }
