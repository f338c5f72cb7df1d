"""
What the store's own work costs a request, counted (never timed): work a
profile of sequential 3-name issuance showed and that was removed, each
test counting that it stays removed while the answers stay what they were.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.store import Insert, Order, OrderAttempt
from gateway.store import records
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.store.runners import InlineRunner
from gateway.store.sqlite import SQLiteStore

NOW = 1_796_292_000


class CountingPattern:
    """
    `records._RFC3339` counting the timestamps it is asked to parse.
    """

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern
        self.parsed: List[str] = []

    def match(self, text: str) -> Any:
        self.parsed.append(text)
        return self.pattern.match(text)


class TimestampsParsedOnce(SynchronousTestCase):
    """
    `timestamp_instant` parses a spelling once while it is remembered: the
    budget's check (`IStore.spend`, `IStore.reserve`) reads every order time
    of the account's window at each new order, and parsed each twice.
    """

    def setUp(self) -> None:
        records._instant_of.cache_clear()  # what other tests left
        clock = task.Clock()
        clock.advance(NOW)
        self.store = self.successResultOf(SQLiteStore.open(
            ":memory:", clock, upstream="https://ca.test/dir", runner=InlineRunner()))
        self.account = self.successResultOf(self.store.create_account("tp", {"kty": "EC"}))
        self.times = [format_timestamp(NOW - 4 * 3600 + i * 600) for i in range(30)]
        operations: List[Any] = []
        for i, created_at in enumerate(self.times):
            operations.append(Insert(OrderAttempt(
                id=f"o{i}", account_id=self.account.id, identifiers=[f"n{i}.test"],
                created_at=created_at)))
            operations.append(Insert(Order(
                id=f"o{i}", account_id=self.account.id, upstream_url=f"https://ca.test/o/{i}",
                identifiers=[f"n{i}.test"], status="valid", finalize_url="https://ca.test/f",
                expires=None, certificate_url=None, created_at=created_at)))
        self.successResultOf(self.store.write(operations))
        self.pattern = CountingPattern(records._RFC3339)
        self.patch(records, "_RFC3339", self.pattern)

    def test_the_window_is_read_without_parsing_its_times_again(self):
        """
        A spend over thirty stored orders parses none of their times (it
        parsed each twice); its answer is the window's times, oldest first.
        """
        since = format_timestamp(NOW - 3 * 3600 + 1)
        spend = self.successResultOf(self.store.spend(self.account.id, since))
        self.assertEqual(spend.order_times, tuple(t for t in self.times if t >= since))
        self.assertEqual(len(spend.order_times), 23)
        self.assertEqual(self.pattern.parsed, [since])

    def test_other_spellings_of_an_instant_stay_apart_and_equal(self):
        """
        Each spelling is remembered as itself, and spellings of one instant
        parse to equal instants.
        """
        spellings = ["2027-01-05T10:00:00Z", "2027-01-05T10:00:00.000000001Z",
                     "2027-01-05t11:00:00+01:00", "2027-01-05T10:00:00z"]
        instants = [timestamp_instant(text) for text in spellings]
        self.assertEqual(len(set(instants)), 1)
        self.assertEqual([timestamp_instant(text) for text in spellings], instants)
        self.assertEqual(self.pattern.parsed, spellings)

    def test_a_refusal_is_not_remembered(self):
        """
        A spelling that is not RFC 3339 is refused each time it is asked
        about, and a value that is not a string is refused without a parse.
        """
        for _ in range(2):
            with self.assertRaises(ValueError):
                timestamp_instant("2026-12-03 10:00:00Z")
        with self.assertRaises(ValueError):
            timestamp_instant(["2026-12-03T10:00:00Z"])  # type: ignore[arg-type]
        self.assertEqual(self.pattern.parsed, ["2026-12-03 10:00:00Z"] * 2)

    def test_a_bounded_number_remembered(self):
        """
        Past `TIMESTAMPS_REMEMBERED` spellings, the oldest are forgotten
        (and parsed again when asked about).
        """
        bound = records.TIMESTAMPS_REMEMBERED
        spellings = [format_timestamp(NOW + i) for i in range(bound + 10)]
        for text in spellings:
            timestamp_instant(text)
        self.assertLessEqual(records._instant_of.cache_info().currsize, bound)
        before = len(self.pattern.parsed)
        timestamp_instant(spellings[0])
        timestamp_instant(spellings[-1])
        self.assertEqual(self.pattern.parsed[before:], [spellings[0]])
