"""
Write transactions of two processes on one SQLite state, as the store of
``serve --workers 2`` makes them, with the writers taking turns on the lock
file (``SQLiteDatabase._take_turn``) and without (SQLite's busy handler
alone, as before issue 15's fifth round), rounds alternating in one run.

    python bench/writer_turns.py [--transactions N] [--rounds R] [--gateway-src DIR]

Each process makes N short write transactions (the size of a nonce's or an
authorization's: an UPDATE of one row), a little CPU work between them (the
rest of a request), and times each call of ``transaction`` (wall clock,
waits included).  Prints per round the p50, p99 and maximum time of a
transaction and the round's wall time, then the medians over the rounds of
each mode and the ratio turns / busy handler.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time


def _writer(src: str, path: str, turns: bool, transactions: int, barrier, out) -> None:
    if src:
        sys.path.insert(0, src)
    from gateway.store.sqlite import SQLiteDatabase, connect

    if not turns:
        SQLiteDatabase._take_turn = lambda self: None  # type: ignore[method-assign]
    database = connect(path)
    durations = []
    barrier.wait(timeout=60)
    started = time.perf_counter()
    for i in range(transactions):
        before = time.perf_counter()
        database.transaction(
            lambda: database.execute("UPDATE counter SET n = n + 1 WHERE id = ?", (i % 8,)),
            durable=False)
        durations.append(time.perf_counter() - before)
        # The rest of a request: ~0.3 ms of CPU outside any transaction.
        spin = time.perf_counter() + 0.0003
        while time.perf_counter() < spin:
            pass
    out.put((durations, time.perf_counter() - started))
    database.close()


def _round(src: str, turns: bool, transactions: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "state.sqlite3")
        if src:
            sys.path.insert(0, src)
        from gateway.store.sqlite import connect

        setup = connect(path)
        setup.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        for k in range(8):
            setup.execute("INSERT INTO counter VALUES (?, 0)", (k,))
        setup.close()
        barrier, out = context.Barrier(2), context.Queue()
        children = [context.Process(target=_writer,
                                    args=(src, path, turns, transactions, barrier, out))
                    for _ in range(2)]
        for child in children:
            child.start()
        results = [out.get(timeout=600) for _ in children]
        for child in children:
            child.join(timeout=60)
    durations = sorted(d for ds, _ in results for d in ds)
    return {
        "p50_ms": 1000 * durations[len(durations) // 2],
        "p99_ms": 1000 * durations[int(len(durations) * 0.99)],
        "max_ms": 1000 * durations[-1],
        "wall_s": max(wall for _, wall in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gateway-src", default="")
    parser.add_argument("--json", help="write the figures to this file")
    options = parser.parse_args()
    figures = {"turns": [], "busy handler": []}
    for r in range(options.rounds):
        # on, off, off, on, ...: neither mode always runs first.
        order = [True, False] if r % 2 == 0 else [False, True]
        for turns in order:
            result = _round(options.gateway_src, turns, options.transactions)
            name = "turns" if turns else "busy handler"
            figures[name].append(result)
            print(f"round {r + 1} {name:>12}: p50 {result['p50_ms']:.3f} ms, p99 "
                  f"{result['p99_ms']:.3f} ms, max {result['max_ms']:.1f} ms, "
                  f"wall {result['wall_s']:.2f} s", flush=True)
    summary = {}
    for name, rounds in figures.items():
        summary[name] = {key: statistics.median(r[key] for r in rounds)
                         for key in ("p50_ms", "p99_ms", "max_ms", "wall_s")}
        print(f"median {name:>12}: " + ", ".join(
            f"{key} {value:.3f}" for key, value in summary[name].items()))
    for key in ("p99_ms", "max_ms", "wall_s"):
        print(f"turns / busy handler, {key}: "
              f"{summary['turns'][key] / summary['busy handler'][key]:.2f}x")
    if options.json:
        with open(options.json, "w") as out:
            json.dump({"rounds": figures, "median": summary,
                       "transactions": options.transactions}, out, indent=2)


if __name__ == "__main__":
    main()
