"""
Upstream-driven state: once a challenge is answered (or an order
finalized), the gateway itself follows the object at the CA until it
settles, and v1 clients are answered from what it learns.

Legacy clients poll as they like (every 0.05 s, every second, twenty at
once), with unsigned GETs; upstream each read is a signed POST-as-GET.  So
the reads are not the clients' business: a `Follower` reads the CA on its
own schedule — at once or very soon, then backing off, honouring the CA's
``Retry-After`` — and stores each answer as it arrives.  A client read
while a follower runs causes no upstream request: it joins the read in
flight, if one is (`SingleFlight`), and is otherwise answered at once with
the newest answer — never held back by a timer, never staler than the
newest upstream answer.  The one exception is the follower's first read,
which a client read brings forward to now (the follower was going to make
that read anyway; a v1 client typically asks right after answering, as a
native client would read the CA).

Without a follower, a client read reads upstream, and concurrent reads of
one object share that one read.

Followers are memory only (`gateway.translate.memory` explains why that is
harmless): after a restart the next client read reads upstream, and a
challenge still being validated is followed again.
"""

from __future__ import annotations

from typing import (
    Any, Awaitable, Callable, Dict, Generic, Iterator, List, Optional, TypeVar,
)

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.translate.memory import BackgroundWork
from gateway.upstream.errors import PollTimeout

log = Logger()

T = TypeVar("T")


@attrs.frozen
class Answer(Generic[T]):
    """
    One upstream answer, already stored, with the CA's ``Retry-After``
    (seconds) when it sent one.
    """

    value: T
    retry_after: Optional[float] = None


#: Reads one upstream object and stores what the CA said.
Read = Callable[[], Awaitable[Answer[T]]]


@attrs.frozen
class FollowPolicy:
    """
    When a follower reads the CA.

    :ivar first: the delay before a follower's first read (unless a client
        read brings it forward), and the first delay of the backoff after
        a read that is not final.
    :ivar factor: the growth of that delay after each read.
    :ivar maximum: the longest delay of the backoff.
    :ivar longest_retry_after: the longest ``Retry-After`` honoured (a
        longer one waits this long).
    :ivar timeout: how long a follower reads before giving up: the object
        is then read again when a client asks.
    """

    first: float = 0.05
    factor: float = 2.0
    maximum: float = 10.0
    longest_retry_after: float = 60.0
    timeout: float = 600.0

    def backoff(self) -> Iterator[float]:
        """
        The delays after each read without ``Retry-After``.
        """
        delay = self.first
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)

    def after(self, retry_after: Optional[float], backoff: Iterator[float]) -> float:
        """
        The delay before the next read: the CA's ``Retry-After`` when it
        sent one (at least `first`, so that ``0`` or a date in the past
        cannot make a busy loop), else the next step of the backoff.
        """
        if retry_after is None:
            return next(backoff)
        return min(max(retry_after, self.first), self.longest_retry_after)


class _Flight(Generic[T]):
    """
    One upstream read in flight and the callers waiting for it.
    """

    def __init__(self) -> None:
        self.waiting: List["Deferred[Answer[T]]"] = []

    def join(self) -> "Deferred[Answer[T]]":
        waiter: "Deferred[Answer[T]]" = Deferred()
        self.waiting.append(waiter)
        return waiter

    def land(self, result: "Answer[T] | Failure") -> None:
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            if waiter.called:  # a cancelled waiter has fired already
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


@attrs.define
class SingleFlight:
    """
    At most one upstream read per object in flight: callers that ask while
    one runs join it, and get its answer (or its error).  A caller that
    gives up (its Deferred is cancelled) leaves the read running for the
    others.
    """

    _flights: Dict[str, _Flight[Any]] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._flights)

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    def read(self, key: str, read: Read[T]) -> "Deferred[Answer[T]]":
        """
        The answer of the read of ``key`` in flight, or of ``read()``
        started now.
        """
        flight = self._flights.get(key)
        if flight is not None:
            return flight.join()
        flight = self._flights[key] = _Flight()
        waiter = flight.join()
        running: "Deferred[Answer[T]]" = Deferred.fromCoroutine(read())  # type: ignore[arg-type]

        def landed(result: "Answer[T] | Failure") -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.land(result)
            return None

        running.addBoth(landed)
        return waiter


class _Nap:
    """
    A cancellable, interruptible wait on the reactor's clock.
    """

    def __init__(self, clock: IReactorTime, seconds: float) -> None:
        self.done: "Deferred[None]" = Deferred(lambda _: self._stop())
        self._call: Optional[IDelayedCall] = clock.callLater(seconds, self.wake)

    def _stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def wake(self) -> None:
        self._stop()
        if not self.done.called:
            self.done.callback(None)


class Follower(Generic[T]):
    """
    Reads one upstream object until it settles (or `FollowPolicy.timeout`
    passes, or the CA fails), each read shared with the client reads that
    come while it is in flight.

    :ivar latest: the newest upstream answer, or `None` before the first.
    :ivar reads: how many upstream reads it has made.
    """

    def __init__(self, key: str, clock: IReactorTime, flights: SingleFlight, read: Read[T],
                 settled: Callable[[T], bool], policy: FollowPolicy, first_delay: float) -> None:
        self.key = key
        self.latest: Optional[T] = None
        self.reads = 0
        self._clock = clock
        self._flights = flights
        self._read = read
        self._settled = settled
        self._policy = policy
        self._first_delay = first_delay
        self._nap: Optional[_Nap] = None
        self._outcome: "Optional[T | Failure]" = None  # the settled value, or why it ended
        self._waiting: List["Deferred[T]"] = []

    @property
    def running(self) -> bool:
        return self._outcome is None

    async def run(self) -> None:
        """
        The follower's loop (started by `Following.follow`).
        """
        deadline = self._clock.seconds() + self._policy.timeout
        backoff = self._policy.backoff()
        delay = self._first_delay
        try:
            while True:
                if delay > 0:
                    self._nap = _Nap(self._clock, delay)
                    try:
                        await self._nap.done
                    finally:
                        self._nap = None
                answer: Answer[T] = await self._flights.read(self.key, self._read)
                self.reads += 1
                self.latest = answer.value
                if self._settled(answer.value):
                    self._end(answer.value)
                    return
                delay = self._policy.after(answer.retry_after, backoff)
                if self._clock.seconds() + delay > deadline:
                    raise PollTimeout(self.key, "unsettled")
        except CancelledError:
            self._end(Failure())
        except Exception as error:
            log.info("stopped following {key}: {error}", key=self.key, error=str(error))
            self._end(Failure())

    def _end(self, outcome: "T | Failure") -> None:
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.called:
                continue
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def newest(self) -> "Deferred[T]":
        """
        What a client read gets: the answer of the read in flight, else the
        newest answer at once; before the first answer, the first read,
        brought forward to now.
        """
        if self.latest is None and self._nap is not None:
            self._nap.wake()  # the loop reads now (and may have its answer already)
        if isinstance(self._outcome, Failure):
            # That read failed already (the CA forgot the object, say): its
            # error is the answer, not a second read.
            return fail(self._outcome)
        if self.latest is not None and not self._flights.in_flight(self.key):
            return succeed(self.latest)
        # The read in flight, or (no answer yet, none in flight) one now.
        joined: "Deferred[Answer[T]]" = self._flights.read(self.key, self._read)
        return joined.addCallback(lambda answer: answer.value)

    def settled(self) -> "Deferred[T]":
        """
        The settled answer, once the follower has it; the follower's error
        (`PollTimeout`, an upstream failure) otherwise.
        """
        waiter: "Deferred[T]" = Deferred()
        if isinstance(self._outcome, Failure):
            waiter.errback(self._outcome)
        elif self._outcome is not None:
            waiter.callback(self._outcome)
        else:
            self._waiting.append(waiter)
        return waiter


#: Read times kept before the old ones (over a minute) are pruned.
_READ_TIMES_KEPT = 4096


@attrs.define
class Following:
    """
    The followers running now, by key (``authz:<id>``, ``order:<id>``), and
    the single-flight reads they share with client reads.

    :ivar background: where followers run, so that a shutdown ends them.
    """

    clock: IReactorTime
    background: BackgroundWork
    policy: FollowPolicy = FollowPolicy()
    flights: SingleFlight = attrs.field(factory=SingleFlight)
    _followers: Dict[str, Follower[Any]] = attrs.field(factory=dict)
    #: When each key was last read by `read` (pruned past `_READ_TIMES_KEPT`).
    _read_at: Dict[str, float] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._followers)

    def get(self, key: str) -> Optional[Follower[Any]]:
        """
        The follower of ``key`` while it runs, else `None`.
        """
        follower = self._followers.get(key)
        return follower if follower is not None and follower.running else None

    def follow(self, key: str, read: Read[T], settled: Callable[[T], bool],
               first_delay: Optional[float] = None) -> Follower[T]:
        """
        Follow ``key`` with ``read`` until ``settled(value)`` — or join its
        follower, when it already has one.

        :param first_delay: seconds before the first read (default: the
            policy's `FollowPolicy.first`); ``0`` reads at once.
        """
        running = self.get(key)
        if running is not None:
            return running
        follower: Follower[T] = Follower(
            key, self.clock, self.flights, read, settled, self.policy,
            self.policy.first if first_delay is None else first_delay)
        self._followers[key] = follower

        async def follow() -> None:
            try:
                await follower.run()
            finally:
                if self._followers.get(key) is follower:
                    del self._followers[key]

        self.background.start(follow())
        return follower

    async def read(self, key: str, read: Read[T]) -> T:
        """
        One upstream read of ``key`` (no follower), shared with concurrent
        ones.
        """
        answer: Answer[T] = await self.flights.read(key, read)
        now = self.clock.seconds()
        if len(self._read_at) >= _READ_TIMES_KEPT:
            self._read_at = {k: at for k, at in self._read_at.items() if now - at < 60.0}
        self._read_at[key] = now
        return answer.value

    def read_within(self, key: str, seconds: float) -> bool:
        """
        Whether this process read ``key`` with `read` in the last
        ``seconds``.
        """
        at = self._read_at.get(key)
        return at is not None and self.clock.seconds() - at < seconds
