"""
What the flows keep in memory between requests, each in an object of its
own, owned by the `gateway.translate.context.Context`.

Everything here may be lost at a restart without harm — which is why it is
not in the store: per-name locks (no request is in flight after a restart;
their cross-process half is the store's, released by the database or the
kernel when a process dies),
work running in the background (its ``finally`` clauses run at shutdown;
the followers of `gateway.translate.following` run there: after a restart
the next client read asks the CA),
revalidation counts (the metrics start again), and clients of other CAs (made
again on demand).  What must survive a restart is store data.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Coroutine, Dict, Optional, Protocol, Set, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.translate.errors import InternalFailure
from gateway.upstream.client import UpstreamClient

log = Logger()

#: Per-name locks are pruned when this many accumulate, so memory stays
#: bounded however many names a long-running gateway serves.
PRUNE_AT = 1024


#: How long a request waits for a name another process holds before it
#: gives up (a lock is held across upstream calls of some seconds at most).
LOCK_WAIT_SECONDS = 90.0

#: The first and the longest pause between two tries of a lock another
#: process holds.
_LOCK_RETRY_FIRST, _LOCK_RETRY_MAX = 0.01, 0.25

T = TypeVar("T")


class SharedLocks(Protocol):
    """
    Named locks across every process of the state (the store: SQLite's lock
    file on one host, PostgreSQL's advisory locks across hosts); each is
    released when its process dies, however it dies.
    """

    def try_lock(self, name: str) -> Awaitable[bool]: ...

    def unlock(self, name: str) -> Awaitable[None]: ...


@attrs.define
class NamedLock:
    """
    One name's lock: first this process's own (a `DeferredLock`, so its
    requests queue in order), then the shared one, tried until the process
    holding it lets go.
    """

    name: str
    local: DeferredLock
    shared: Optional[SharedLocks]
    clock: Optional[IReactorTime]

    def acquire(self) -> "Deferred[None]":
        return Deferred.fromCoroutine(self._acquire())

    async def _acquire(self) -> None:
        await self.local.acquire()
        if self.shared is None:
            return
        try:
            waited, pause = 0.0, _LOCK_RETRY_FIRST
            while not await self.shared.try_lock(self.name):
                if self.clock is None or waited >= LOCK_WAIT_SECONDS:
                    raise InternalFailure(
                        "Another gateway process has been working on this request's account "
                        "for too long; try again later")
                await deferLater(self.clock, pause, lambda: None)
                waited += pause
                pause = min(pause * 2, _LOCK_RETRY_MAX)
        except BaseException:
            self.local.release()
            raise

    def release(self) -> None:
        if self.shared is not None:
            # Queued in the store's order: this process's next holder tries
            # the shared lock only after it was given back.
            unlocking = Deferred.fromCoroutine(_awaited(self.shared.unlock(self.name)))
            unlocking.addErrback(lambda failure: log.failure(
                "releasing lock {name} failed", failure, name=self.name))
        self.local.release()

    @property
    def locked(self) -> bool:
        return bool(self.local.locked)

    @property
    def waiting(self) -> bool:
        return bool(self.local.waiting)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


@attrs.define
class NameLocks:
    """
    A lock per name (a thumbprint, an order key), so that two concurrent
    requests of one client — reaching this process, another ``--workers``
    process or another replica — do not both create the same upstream
    object.

    :ivar shared: the store's cross-process locks (`None`: this process is
        alone, as in unit tests).
    :ivar clock: paces the tries of a lock another process holds.
    """

    shared: Optional[SharedLocks] = None
    clock: Optional[IReactorTime] = None
    _locks: Dict[str, NamedLock] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._locks)

    def lock_for(self, name: str) -> NamedLock:
        lock = self._locks.get(name)
        if lock is None:
            if len(self._locks) >= PRUNE_AT:
                self._locks = {n: held for n, held in self._locks.items()
                               if held.locked or held.waiting}
            lock = self._locks[name] = NamedLock(name, DeferredLock(), self.shared, self.clock)
        return lock

    async def alone(self, name: str, work: Callable[[], Awaitable[T]]) -> Optional[T]:
        """
        Run ``work`` unless another process (or this one) is running the
        work called ``name`` right now — the periodic sweeps, which must run
        once, not once per replica.

        :return: what ``work`` returned, or `None` when it was skipped.
        """
        lock = self.lock_for(name)
        if lock.locked:
            return None
        await lock.local.acquire()
        try:
            if self.shared is not None and not await self.shared.try_lock(name):
                return None
            try:
                return await work()
            finally:
                if self.shared is not None:
                    await self.shared.unlock(name)
        finally:
            lock.local.release()


@attrs.define
class BackgroundWork:
    """
    Follow-up work that no response waits for (removing a challenge file
    once its authorization settles): failures are logged, never lost, and
    `drain` ends whatever still runs at shutdown.
    """

    _running: Set["Deferred[None]"] = attrs.field(factory=set)

    def __len__(self) -> int:
        return len(self._running)

    def start(self, work: Coroutine[Any, Any, None]) -> "Deferred[None]":
        running: "Deferred[None]" = Deferred.fromCoroutine(work)
        self._running.add(running)

        def done(result: object) -> None:
            self._running.discard(running)
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("background work failed", result)
            return None

        return running.addBoth(done)

    async def drain(self) -> None:
        """
        Cancel the work still running (its ``finally`` clauses still remove
        what it provisioned) and wait for it to end.
        """
        for running in list(self._running):
            running.cancel()
        for running in list(self._running):
            await running


class RevalidationObserver(Protocol):
    """
    Told of every name the gateway validated itself (`gateway.operations.
    metrics.Metrics` is one).
    """

    def revalidation(self, outcome: str) -> None: ...


@attrs.define
class Revalidations:
    """
    Names the gateway validated itself, by outcome (``valid``, ``invalid``).
    """

    observer: Optional[RevalidationObserver] = None
    counts: Dict[str, int] = attrs.field(factory=dict)

    def count(self, outcome: str, names: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + names
        if self.observer is not None:
            for _ in range(names):
                self.observer.revalidation(outcome)


@attrs.define
class OtherCAs:
    """
    Clients of the CAs the gateway ran against before (``--upstream``
    changed), to revoke the certificates they issued where they issued them.

    :ivar client_for: makes a client of the CA at a directory URL, or
        `None` when the gateway cannot reach other CAs.
    """

    current: UpstreamClient
    client_for: Optional[Callable[[str], UpstreamClient]] = None
    _clients: Dict[str, UpstreamClient] = attrs.field(factory=dict)

    def at(self, directory_url: str) -> UpstreamClient:
        """
        A client of the CA at ``directory_url``.

        :raises InternalFailure: when the gateway has no way to reach it.
        """
        if directory_url == self.current.directory_url:
            return self.current
        client = self._clients.get(directory_url)
        if client is None:
            if self.client_for is None:
                raise InternalFailure(
                    f"This certificate was issued by another CA ({directory_url}) than the "
                    f"gateway's upstream, which the gateway cannot reach")
            client = self._clients[directory_url] = self.client_for(directory_url)
        return client
