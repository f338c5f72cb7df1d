"""
A longer summary of a py-spy raw profile than the one ``results.json``
keeps (`bench.profiling.summarize`): every function's inclusive and self
share of the samples, the top N of each.

    .venv/bin/python bench/profile_top.py bench/results/<run>/profile-head.txt [N]
"""

from __future__ import annotations

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.profiling import _function  # noqa: E402


def top(path: str, count: int = 70) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, samples = line.rstrip("\n").rpartition(" ")
            if not samples.isdigit():
                continue
            number = int(samples)
            total += number
            frames = [_function(frame) for frame in stack.split(";")
                      if frame and not frame.startswith(("process ", "thread "))]
            for name in set(frames):
                inclusive[name] += number
            if frames:
                own[frames[-1]] += number
    lines = [f"samples {total}"]
    if total:
        lines += [f"inc  {100 * n / total:5.1f} {name}" for name, n in inclusive.most_common(count)]
        lines += [f"self {100 * n / total:5.1f} {name}" for name, n in own.most_common(40)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(top(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 70))
