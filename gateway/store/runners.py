"""
Where the store's blocking work runs (`gateway.store.engine.Runner`).

A database call blocks, and the reactor thread must never block.  In
production a store owns a `ThreadRunner`: one thread of its own, in which
the connection is made and every statement runs.  One thread also
serialises all access: there are no concurrent transactions to reason
about, and calls run in the order they were made.

The thread works in batches (group commit, issue 15): whatever work is
queued when it wakes runs back to back, then the engine's sync (when it
gave one, `Runner.sync_batches`) makes the batch's durable commits durable
with one disk sync, then every result of the batch goes back to the
reactor in one call.  At K=32 concurrent clients a py-spy profile showed
the store's thread in its commits' fsyncs (3.6 ms each here, three per
certificate) for more than half of its time, every other call queued
behind them, and a wake-up of each thread per call.  No result is
delivered before the sync after its work, so a durable write's Deferred
still fires only once it would survive a power failure.

Unit tests give the store an `InlineRunner` instead: the work runs at once,
in the calling thread (each call its own batch), and its Deferred has fired
when the store's method returns, so a test is deterministic and needs no
running reactor.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")

#: One queued call: the work and the Deferred its outcome fires.
_Call = Tuple[Callable[[], Any], "defer.Deferred[Any]"]


class ThreadRunner:
    """
    Runs work in one thread of its own, in batches, results delivered on
    ``reactor``.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self._queue: Deque[_Call] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self._stopping = False
        self._sync: Optional[Callable[[], None]] = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def threads(self) -> list[Any]:
        """
        The runner's thread, for tests.
        """
        return [self._thread]

    def sync_batches(self, sync: Callable[[], None]) -> None:
        self._sync = sync

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        result: defer.Deferred[T] = defer.Deferred()
        with self._wake:
            self._queue.append((work, result))
            if len(self._queue) == 1:
                self._wake.notify()
        return result

    def stop(self) -> None:
        # Called when the last work has finished, so joining the idle
        # thread does not hold up the reactor.
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            outcomes = _run_batch(batch, self._sync)
            self._reactor.callFromThread(_deliver, outcomes)


def _run_batch(batch: List[_Call], sync: Optional[Callable[[], None]]
               ) -> List[Tuple["defer.Deferred[Any]", Any]]:
    """
    Run each call of ``batch``, then ``sync``; each call's Deferred with
    its result or `Failure`.  A failed sync fails every call that had
    succeeded: what they wrote may not be durable (a read fails with it,
    for it might have shown what a crash would take back).
    """
    outcomes: List[Tuple["defer.Deferred[Any]", Any]] = []
    for work, result in batch:
        try:
            outcomes.append((result, work()))
        except BaseException:
            outcomes.append((result, Failure()))
    if sync is not None:
        try:
            sync()
        except BaseException:
            failed = Failure()
            outcomes = [(result, outcome if isinstance(outcome, Failure) else failed)
                        for result, outcome in outcomes]
    return outcomes


def _deliver(outcomes: List[Tuple["defer.Deferred[Any]", Any]]) -> None:
    for result, outcome in outcomes:
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)


class InlineRunner:
    """
    Runs work at once in the calling thread; its outcome is an already
    fired Deferred, so errors still take the asynchronous path.
    """

    def __init__(self) -> None:
        self._sync: Optional[Callable[[], None]] = None

    def sync_batches(self, sync: Callable[[], None]) -> None:
        self._sync = sync

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        result: defer.Deferred[T] = defer.Deferred()
        _deliver(_run_batch([(work, result)], self._sync))
        return result

    def stop(self) -> None:
        pass
