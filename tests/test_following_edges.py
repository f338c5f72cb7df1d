"""
`gateway.translate.following` at its edges (issue 21): a follower's read
due exactly at its timeout, what a follower that ended (settled, failed,
cancelled) answers afterwards, a follower shut down mid-nap leaving no timer
behind, the log line of a follower that stops, keys kept apart, and the
pruning of `Following.read`'s read times.  Against a ``task.Clock``, with
reads a test answers one by one.
"""

from __future__ import annotations

from typing import List

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.following import (
    _READ_TIMES_KEPT, Answer, Follower, FollowPolicy, Following, SingleFlight,
)
from gateway.translate.memory import BackgroundWork
from gateway.upstream.errors import PollTimeout
from tests.test_following import ScriptedReads


def _settled(value: str) -> bool:
    return value == "valid"


class FollowerEdgeTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.reads = ScriptedReads(self.clock)
        self.background = BackgroundWork()
        self.following = Following(self.clock, self.background,
                                   FollowPolicy(first=0.05, factor=2.0, maximum=0.4, timeout=10.0))
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def follow(self, key="authz:1", first_delay=None):
        return self.following.follow(key, self.reads, _settled, first_delay)

    def test_a_read_due_exactly_at_the_timeout_is_made(self):
        """
        Timeout 10 s, ``Retry-After: 5`` twice: the third read, due at
        exactly 10 s, is still made; one more would be past the deadline.
        """
        follower = self.follow(first_delay=0)
        settled = follower.settled()
        self.reads.answer("pending", 5.0)
        self.clock.advance(5.0)
        self.reads.answer("pending", 5.0)
        self.clock.advance(5.0)
        self.assertEqual(self.reads.started, [0.0, 5.0, 10.0])
        self.reads.answer("valid")
        self.assertEqual(self.successResultOf(settled), "valid")

    def test_the_timeout_names_the_key_and_is_logged(self):
        follower = self.follow(first_delay=0)
        settled = follower.settled()
        self.reads.answer("pending", 6.0)
        self.clock.advance(6.0)
        self.reads.answer("pending", 6.0)
        timeout = self.failureResultOf(settled, PollTimeout).value
        self.assertEqual((timeout.url, timeout.last_status), ("authz:1", "unsettled"))
        self.assertEqual(
            [formatEvent(e) for e in self.events if "stopped following" in e.get("log_format", "")],
            ["stopped following authz:1: authz:1 still 'unsettled' after polling"])

    def test_reads_counts_the_upstream_reads(self):
        follower = self.follow(first_delay=0)
        self.assertEqual(follower.reads, 0)
        self.reads.answer("pending")
        self.assertEqual(follower.reads, 1)
        self.clock.advance(0.05)
        self.reads.answer("pending")
        self.clock.advance(0.1)
        self.reads.answer("valid")
        self.assertEqual(follower.reads, 3)

    def test_a_client_read_while_the_first_read_is_in_flight_joins_it(self):
        """
        With no first delay, the first read is in flight at once: a client
        read before its answer joins it, and no second read is made.
        """
        follower = self.follow(first_delay=0)
        joined = follower.newest()
        self.assertNoResult(joined)
        self.reads.answer("pending")
        self.assertEqual(self.successResultOf(joined), "pending")
        self.assertEqual(len(self.reads.started), 1)

    def test_a_client_read_without_a_follower_joins_the_followers_read(self):
        """
        `Following.read` of a key whose follower's read is in flight shares
        that read: the follower's reads are keyed as the client's are.
        """
        self.follow(first_delay=0)
        client_read = defer.Deferred.fromCoroutine(self.following.read("authz:1", self.reads))
        self.assertEqual(len(self.reads.started), 1)
        self.reads.answer("pending")
        self.assertEqual(self.successResultOf(client_read), "pending")

    def test_client_reads_of_two_keys_are_two_reads(self):
        first = defer.Deferred.fromCoroutine(self.following.read("authz:1", self.reads))
        second = defer.Deferred.fromCoroutine(self.following.read("authz:2", self.reads))
        self.assertEqual(len(self.reads.started), 2)
        self.reads.answer("one")
        self.reads.answer("two")
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)),
                         ("one", "two"))

    def test_a_follower_not_started_reads_when_asked(self):
        """
        A follower whose loop has not run yet has nothing to join: a client
        read makes the read itself.
        """
        follower = Follower("authz:1", self.clock, SingleFlight(), self.reads, _settled,
                            FollowPolicy(), first_delay=0.05)
        asked = follower.newest()
        self.assertEqual(len(self.reads.started), 1)
        self.reads.answer("pending")
        self.assertEqual(self.successResultOf(asked), "pending")

    def test_after_it_settled_it_answers_the_settled_value(self):
        follower = self.follow(first_delay=0)
        self.reads.answer("valid")
        self.assertEqual(self.successResultOf(follower.settled()), "valid")
        self.assertEqual(self.successResultOf(follower.newest()), "valid")
        self.assertEqual(len(self.reads.started), 1)

    def test_after_it_failed_its_error_is_every_answer(self):
        """
        A follower whose read failed answers later callers with that error,
        without another read.
        """
        follower = self.follow(first_delay=0)
        self.reads.fail(ValueError("the CA forgot it"))
        self.assertEqual(
            str(self.failureResultOf(follower.settled(), ValueError).value), "the CA forgot it")
        self.assertEqual(
            str(self.failureResultOf(follower.newest(), ValueError).value), "the CA forgot it")
        self.assertEqual(len(self.reads.started), 1)
        self.assertEqual(
            [formatEvent(e) for e in self.events if "stopped following" in e.get("log_format", "")],
            ["stopped following authz:1: the CA forgot it"])

    def test_a_waiter_that_gave_up_leaves_the_answer_to_the_others(self):
        follower = self.follow(first_delay=0)
        gave_up, waiting, also = follower.settled(), follower.settled(), follower.settled()
        gave_up.cancel()
        self.failureResultOf(gave_up, defer.CancelledError)
        self.reads.answer("valid")
        self.assertEqual((self.successResultOf(waiting), self.successResultOf(also)),
                         ("valid", "valid"))

    def test_an_ended_follower_is_gone_for_its_waiters(self):
        """
        Whoever learns that a follower settled (its ``settled()`` waiters)
        finds no follower of the key any more: a new ``follow`` would start
        a new one.
        """
        follower = self.follow(first_delay=0)
        seen = []
        follower.settled().addCallback(lambda _: seen.append(self.following.get("authz:1")))
        self.reads.answer("valid")
        self.assertEqual(seen, [None])
        self.assertEqual(len(self.following), 0)

    def test_followers_are_counted_while_they_run(self):
        self.follow("authz:1", first_delay=0)
        self.follow("authz:2", first_delay=0)
        self.assertEqual(len(self.following), 2)
        self.reads.answer("valid")
        self.assertEqual(len(self.following), 1)
        self.reads.fail(ValueError("gone"))
        self.assertEqual(len(self.following), 0)

    def test_a_shutdown_mid_nap_leaves_no_timer(self):
        """
        A follower napping until its next read, ended by a shutdown,
        cancels its timer: nothing of it stays on the reactor.
        """
        follower = self.follow()
        settled = follower.settled()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(defer.ensureDeferred(self.background.drain()))
        self.failureResultOf(settled, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.following), 0)


class ReadTimesTests(SynchronousTestCase):
    """
    `Following.read` remembers when it read each key (`read_within`), and
    prunes the times over a minute old once it holds `_READ_TIMES_KEPT`.
    """

    def setUp(self):
        self.clock = Clock()
        self.following = Following(self.clock, BackgroundWork())

    def read(self, key):
        async def answer():
            return Answer(key)
        self.assertEqual(self.successResultOf(
            defer.Deferred.fromCoroutine(self.following.read(key, answer))), key)

    def test_old_read_times_are_pruned_when_the_table_is_full(self):
        for n in range(_READ_TIMES_KEPT - 2):
            self.read(f"old:{n}")
        self.clock.advance(1)
        self.read("a minute before")
        self.clock.advance(30)
        self.read("recent")
        self.clock.advance(30)  # 61 s: the table holds _READ_TIMES_KEPT times
        self.read("new")
        self.assertFalse(self.following.read_within("old:0", 3600))
        self.assertFalse(self.following.read_within("a minute before", 3600))
        self.assertTrue(self.following.read_within("recent", 3600))
        self.assertTrue(self.following.read_within("new", 1))

    def test_no_pruning_below_the_limit(self):
        for n in range(_READ_TIMES_KEPT - 1):
            self.read(f"old:{n}")
        self.clock.advance(61)
        self.read("new")
        self.assertTrue(self.following.read_within("old:0", 3600))
        self.assertFalse(self.following.read_within("old:0", 61))
