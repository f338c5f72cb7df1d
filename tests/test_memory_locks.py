"""
`gateway.translate.memory` with a `task.Clock` and an in-memory table of
shared locks (what the store's cross-process locks do): a name another
process holds is tried with doubling pauses (10 ms to 250 ms) for 90 s,
then refused; a failed wait gives this process's own lock back; a release
gives the shared lock back; ``alone`` skips work another process is doing;
locks are pruned at 1024 names, keeping the held and the awaited ones;
background work is drained at shutdown and its failures logged; revalidation
counts reach their observer; clients of other CAs are made once.
"""

from __future__ import annotations

from typing import List, Set

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.errors import InternalFailure
from gateway.translate.memory import (
    LOCK_WAIT_SECONDS,
    PRUNE_AT,
    BackgroundWork,
    NameLocks,
    OtherCAs,
    Revalidations,
)


class SharedTable:
    """Shared locks as the store keeps them: names held by other processes."""

    def __init__(self, held=()):
        self.held: Set[str] = set(held)
        self.tries: List[str] = []
        self.unlocked: List[str] = []

    async def try_lock(self, name):
        self.tries.append(name)
        if name in self.held:
            return False
        self.held.add(name)
        return True

    async def unlock(self, name):
        self.unlocked.append(name)
        self.held.discard(name)


class FailingUnlock(SharedTable):
    async def unlock(self, name):
        raise OSError("the store is gone")


class Upstream:
    def __init__(self, directory_url):
        self.directory_url = directory_url


class LogEvents:
    def __enter__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info):
        globalLogPublisher.removeObserver(self.events.append)

    def failures(self, text):
        return [e for e in self.events if e.get("log_format") == text and "log_failure" in e]


class NamedLockTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.table = SharedTable()
        self.locks = NameLocks(self.table, self.clock)

    def test_a_free_name_is_taken_at_once_and_given_back(self):
        lock = self.locks.lock_for("acct:1")
        self.successResultOf(lock.acquire())
        self.assertTrue(lock.locked)
        self.assertEqual(self.table.held, {"acct:1"})
        lock.release()
        self.assertFalse(lock.locked)
        self.assertEqual(self.table.unlocked, ["acct:1"])
        self.assertEqual(self.table.held, set())

    def test_a_name_another_process_holds_is_tried_with_doubling_pauses(self):
        self.table.held.add("acct:1")
        lock = self.locks.lock_for("acct:1")
        acquired = lock.acquire()
        self.assertNoResult(acquired)
        self.assertEqual(len(self.table.tries), 1)
        # pauses of 0.01, 0.02, 0.04, 0.08, 0.16, then 0.25 each
        for pause, tries in [(0.01, 2), (0.02, 3), (0.04, 4), (0.08, 5), (0.16, 6), (0.25, 7), (0.25, 8)]:
            self.clock.advance(pause - 0.001)
            self.assertEqual(len(self.table.tries), tries - 1, pause)
            self.clock.advance(0.001)
            self.assertEqual(len(self.table.tries), tries, pause)
        self.table.held.discard("acct:1")
        self.clock.advance(0.25)
        self.successResultOf(acquired)
        self.assertTrue(lock.locked)
        self.assertEqual(self.table.held, {"acct:1"})

    def test_after_ninety_seconds_of_waiting_the_request_is_refused(self):
        self.table.held.add("acct:1")
        lock = self.locks.lock_for("acct:1")
        acquired = lock.acquire()
        # 0.01 + 0.02 + 0.04 + 0.08 + 0.16 = 0.31 s, then 0.25 s per try
        self.clock.pump([0.01, 0.02, 0.04, 0.08, 0.16])
        steps = int((LOCK_WAIT_SECONDS - 0.31) / 0.25)
        self.clock.pump([0.25] * steps)
        self.assertNoResult(acquired)
        self.clock.pump([0.25] * 2)
        failure = self.failureResultOf(acquired, InternalFailure)
        self.assertEqual(str(failure.value),
                         "Another gateway process has been working on this request's account "
                         "for too long; try again later")
        # this process's own lock was given back: the next request may try
        self.assertFalse(lock.locked)
        self.table.held.discard("acct:1")
        self.successResultOf(lock.acquire())

    def test_without_a_clock_a_held_name_is_refused_at_once(self):
        locks = NameLocks(SharedTable(held={"acct:1"}), None)
        lock = locks.lock_for("acct:1")
        self.failureResultOf(lock.acquire(), InternalFailure)
        self.assertFalse(lock.locked)

    def test_a_cancelled_wait_gives_this_processes_lock_back(self):
        self.table.held.add("acct:1")
        lock = self.locks.lock_for("acct:1")
        acquired = lock.acquire()
        acquired.cancel()
        self.failureResultOf(acquired, CancelledError)
        self.assertFalse(lock.locked)

    def test_requests_of_this_process_queue_in_order(self):
        lock = self.locks.lock_for("acct:1")
        self.assertIs(self.locks.lock_for("acct:1"), lock)
        self.successResultOf(lock.acquire())
        second = lock.acquire()
        self.assertNoResult(second)
        self.assertTrue(lock.waiting)
        lock.release()
        self.successResultOf(second)
        self.assertFalse(lock.waiting)
        self.assertEqual(self.table.unlocked, ["acct:1"])

    def test_a_failed_unlock_is_logged_and_the_local_lock_still_released(self):
        locks = NameLocks(FailingUnlock(), self.clock)
        lock = locks.lock_for("acct:1")
        self.successResultOf(lock.acquire())
        with LogEvents() as log:
            lock.release()
        self.assertFalse(lock.locked)
        self.assertEqual(len(log.failures("releasing lock {name} failed")), 1)
        self.flushLoggedErrors(OSError)

    def test_a_process_alone_takes_no_shared_lock(self):
        locks = NameLocks()
        lock = locks.lock_for("acct:1")
        self.successResultOf(lock.acquire())
        self.assertTrue(lock.locked)
        lock.release()
        self.assertFalse(lock.locked)


class PruneTests(SynchronousTestCase):

    def test_locks_are_pruned_at_1024_names_keeping_the_held_and_awaited(self):
        locks = NameLocks()
        held = locks.lock_for("held")
        self.successResultOf(held.acquire())
        awaited = locks.lock_for("awaited")
        self.successResultOf(awaited.acquire())
        queued = awaited.acquire()
        awaited.release()  # the queued request holds it now
        self.successResultOf(queued)
        waiting = locks.lock_for("waiting")
        self.successResultOf(waiting.acquire())
        behind = waiting.acquire()
        for n in range(PRUNE_AT - 3):
            locks.lock_for(f"free-{n}")
        self.assertEqual(len(locks), PRUNE_AT)
        kept = locks.lock_for("free-0")
        self.assertEqual(len(locks), PRUNE_AT, "a known name prunes nothing")
        locks.lock_for("new")
        self.assertEqual(len(locks), 4)
        self.assertIs(locks.lock_for("held"), held)
        self.assertIs(locks.lock_for("awaited"), awaited)
        self.assertIs(locks.lock_for("waiting"), waiting)
        self.assertIsNot(locks.lock_for("free-0"), kept)
        waiting.release()
        self.successResultOf(behind)

    def test_below_1024_names_nothing_is_pruned(self):
        locks = NameLocks()
        first = locks.lock_for("free-0")
        for n in range(1, PRUNE_AT - 1):
            locks.lock_for(f"free-{n}")
        locks.lock_for("last")
        self.assertEqual(len(locks), PRUNE_AT)
        self.assertIs(locks.lock_for("free-0"), first)


class AloneTests(SynchronousTestCase):

    def setUp(self):
        self.table = SharedTable()
        self.locks = NameLocks(self.table, Clock())

    def test_the_work_runs_holding_the_shared_lock_and_gives_it_back(self):
        seen = []

        async def work():
            seen.append(set(self.table.held))
            return "swept"

        self.assertEqual(self.successResultOf(defer.ensureDeferred(self.locks.alone("sweeps", work))),
                         "swept")
        self.assertEqual(seen, [{"sweeps"}])
        self.assertEqual(self.table.unlocked, ["sweeps"])
        self.assertFalse(self.locks.lock_for("sweeps").locked)

    def test_work_another_process_does_is_skipped(self):
        self.table.held.add("sweeps")

        async def work():
            raise AssertionError("ran")

        self.assertIsNone(self.successResultOf(defer.ensureDeferred(self.locks.alone("sweeps", work))))
        self.assertEqual(self.table.unlocked, [])
        self.assertFalse(self.locks.lock_for("sweeps").locked)

    def test_work_this_process_does_is_skipped(self):
        release = Deferred()
        ran = []

        async def slow():
            ran.append("slow")
            await release
            return 1

        async def other():
            ran.append("other")
            return 2

        first = defer.ensureDeferred(self.locks.alone("sweeps", slow))
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(self.locks.alone("sweeps", other))))
        release.callback(None)
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(ran, ["slow"])

    def test_failing_work_gives_both_locks_back(self):
        async def work():
            raise ValueError("broken")

        self.failureResultOf(defer.ensureDeferred(self.locks.alone("sweeps", work)), ValueError)
        self.assertEqual(self.table.held, set())
        self.assertFalse(self.locks.lock_for("sweeps").locked)

    def test_alone_in_one_process(self):
        async def work():
            return 3

        self.assertEqual(self.successResultOf(defer.ensureDeferred(NameLocks().alone("x", work))), 3)


class BackgroundWorkTests(SynchronousTestCase):

    def test_finished_work_is_forgotten_and_failures_logged(self):
        background = BackgroundWork()
        gate = Deferred()

        async def fails():
            await gate
            raise ValueError("no file to remove")

        with LogEvents() as log:
            running = background.start(fails())
            self.assertEqual(len(background), 1)
            gate.callback(None)
        self.assertIsNone(self.successResultOf(running))
        self.assertEqual(len(background), 0)
        self.assertEqual(len(log.failures("background work failed")), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_drain_cancels_what_runs_and_waits_for_its_cleanup(self):
        background = BackgroundWork()
        cleaned = []

        async def waits(name):
            try:
                await Deferred()
            finally:
                cleaned.append(name)

        with LogEvents() as log:
            background.start(waits("a"))
            background.start(waits("b"))
            self.assertEqual(len(background), 2)
            self.successResultOf(defer.ensureDeferred(background.drain()))
        self.assertEqual(sorted(cleaned), ["a", "b"])
        self.assertEqual(len(background), 0)
        self.assertEqual(log.failures("background work failed"), [], "a cancellation is no failure")


class RevalidationCountTests(SynchronousTestCase):

    def test_counts_by_outcome_reach_the_observer_once_per_name(self):
        told = []

        class Observer:
            def revalidation(self, outcome):
                told.append(outcome)

        counts = Revalidations(Observer())
        counts.count("valid")
        counts.count("valid", names=2)
        counts.count("invalid")
        self.assertEqual(counts.counts, {"valid": 3, "invalid": 1})
        self.assertEqual(told, ["valid", "valid", "valid", "invalid"])
        alone = Revalidations()
        alone.count("valid", names=3)
        self.assertEqual(alone.counts, {"valid": 3})


class OtherCATests(SynchronousTestCase):

    def test_a_client_per_other_ca_made_once(self):
        current = Upstream("https://ca.test/dir")
        made = []

        def client_for(url):
            made.append(url)
            return Upstream(url)

        cas = OtherCAs(current, client_for)
        self.assertIs(cas.at("https://ca.test/dir"), current)
        old = cas.at("https://old.test/dir")
        self.assertEqual(old.directory_url, "https://old.test/dir")
        self.assertIs(cas.at("https://old.test/dir"), old)
        self.assertEqual(made, ["https://old.test/dir"])

    def test_without_a_way_to_reach_another_ca_the_refusal_names_it(self):
        cas = OtherCAs(Upstream("https://ca.test/dir"))
        with self.assertRaises(InternalFailure) as raised:
            cas.at("https://old.test/dir")
        self.assertEqual(str(raised.exception),
                         "This certificate was issued by another CA (https://old.test/dir) than the "
                         "gateway's upstream, which the gateway cannot reach")
