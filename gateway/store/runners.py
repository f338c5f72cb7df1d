"""
Where the store's blocking work runs (`gateway.store.engine.Runner`).

A database call blocks, and the reactor thread must never block.  In
production a store owns a `ThreadRunner`: a pool of exactly one thread, in
which the connection is made and every statement runs.  One thread also
serialises all access: there are no concurrent transactions to reason
about, and calls run in the order they were made.

Unit tests give the store an `InlineRunner` instead: the work runs at once,
in the calling thread, and its Deferred has fired when the store's method
returns, so a test is deterministic and needs no running reactor.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadRunner:
    """
    Runs work in one thread of its own, results delivered on ``reactor``.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pool.start()

    @property
    def threads(self) -> list[Any]:
        """
        The pool's threads (one once it has run something), for tests.
        """
        return list(self._pool.threads)

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work)

    def stop(self) -> None:
        # Called when the last work has finished, so joining the idle
        # worker does not hold up the reactor.
        self._pool.stop()


class InlineRunner:
    """
    Runs work at once in the calling thread; its outcome is an already
    fired Deferred, so errors still take the asynchronous path.
    """

    def run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        return defer.execute(work)

    def stop(self) -> None:
        pass
