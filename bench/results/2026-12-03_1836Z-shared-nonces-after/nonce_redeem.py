"""
Micro-measure (issue 15, sixth round): what redeeming one v1 nonce costs a
v1 POST, at the store (a process of several: one hand-off to the store's
thread and one write transaction, INSERT into used_nonces, on an SQLite
file in WAL mode) and in the process's memory (a process alone).  Sequential
redemptions on the real reactor; wall time and the process's CPU time
(every thread) per redemption, best of ROUNDS rounds of N.

    .venv/bin/python nonce_redeem.py [N] [ROUNDS]
"""

import os
import sys
import tempfile
import time

from twisted.internet import defer, task

from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NONCE_KEY_NAME, NonceIssuer

try:
    from gateway.v1.nonces import InstanceNonceIssuer
except ImportError:  # the "before" tree
    InstanceNonceIssuer = None


async def rounds(reactor, issuer, n, count):
    best = None
    for _ in range(count):
        nonces = [issuer.issue() for _ in range(n)]
        wall, cpu = time.perf_counter(), time.process_time()
        for nonce in nonces:
            assert await issuer.redeem(nonce) is True
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        figures = (wall / n * 1e6, cpu / n * 1e6)
        best = figures if best is None or figures[1] < best[1] else best
    return best


async def main(reactor, n="2000", count="5"):
    n, count = int(n), int(count)
    with tempfile.TemporaryDirectory() as directory:
        store = await SQLiteStore.open(os.path.join(directory, "state.sqlite3"), reactor,
                                       close_on_shutdown=False)
        key = await store.secret(NONCE_KEY_NAME)
        results = {"store (several processes)": await rounds(
            reactor, NonceIssuer(reactor, store, key=key), n, count)}
        if InstanceNonceIssuer is not None:
            results["memory (alone)"] = await rounds(
                reactor, InstanceNonceIssuer(reactor, key=key), n, count)
        await store.close()
    for name, (wall, cpu) in results.items():
        print(f"{name:28s} wall {wall:8.1f} us   process CPU {cpu:8.1f} us  per redemption")


task.react(lambda reactor, *a: defer.ensureDeferred(main(reactor, *a)), sys.argv[1:])
