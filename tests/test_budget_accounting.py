"""
`gateway.translate.budget.Budget` alone (issue 21): exact Retry-After values
and details of each refusal, the limits at their edges, expired pending
authorizations not counted, holds that only lengthen, and the state for
metrics — over a store double that answers the two queries the budget makes
and records what it was asked.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.status import Status
from gateway.store.records import OrderAttempt, Spend, format_timestamp
from gateway.translate.budget import DEFAULT_HOLD_SECONDS, Budget, BudgetLimits, BudgetState, _duration
from gateway.translate.errors import RateLimited

START = 1_800_000_000.0
ACCOUNT = 7


class BudgetStore:
    """The budget's two questions, answered from lists; every question kept."""

    def __init__(self, order_times=(), pending=()):
        self.order_times = list(order_times)
        self.pending = list(pending)
        self.asked = []

    async def order_times_since(self, account_id, since):
        self.asked.append(("order_times_since", account_id, since))
        return list(self.order_times)

    async def authorizations_with_status(self, status, account_id=None):
        self.asked.append(("authorizations_with_status", status, account_id))
        return list(self.pending)

    async def reserve(self, attempt, since, orders, pending_authorizations, now):
        """What `Budget.reserve` asks, in one transaction of the real store:
        the spend, and the attempt written when `Spend.admits` it."""
        self.asked.append(("spend", attempt.account_id, since))
        spend = Spend(tuple(self.order_times), tuple(self.pending), names_in_flight=0)
        if not spend.admits(orders, pending_authorizations, len(attempt.identifiers), now):
            return spend, False
        self.asked.append(("write", [type(attempt).__name__]))
        self.order_times.append(format_timestamp(START))
        return spend, True


def authz(created: float, expires=None):
    return SimpleNamespace(created_at=format_timestamp(created),
                           expires=format_timestamp(expires) if expires is not None else None)


def run(coroutine):
    result = []
    defer.ensureDeferred(coroutine).addBoth(result.append)
    assert result, "the budget never waits on anything but its store"
    if isinstance(result[0], Failure):
        result[0].raiseException()
    return result[0]


def budget(store, **limits):
    clock = Clock()
    clock.advance(START)
    return Budget(store, clock, BudgetLimits(**limits)), clock


def reserve(budget_, names=1):
    """`Budget.reserve` of an order for ``names`` identifiers."""
    attempt = OrderAttempt(id="attempt", account_id=ACCOUNT,
                           identifiers=[f"n{i}.example" for i in range(names)],
                           created_at=format_timestamp(START))
    return budget_.reserve(attempt)


def refusal(budget_, names=1) -> RateLimited:
    with pytest.raises(RateLimited) as raised:
        run(reserve(budget_, names))
    assert not [a for a in budget_.store.asked if a[0] == "write"], "a refusal records nothing"
    return raised.value


# --------------------------------------------------------------------------
# Holds after an upstream rateLimited
# --------------------------------------------------------------------------

def test_a_hold_without_retry_after_lasts_the_default():
    b, clock = budget(BudgetStore())
    b.hold(ACCOUNT, None)
    assert DEFAULT_HOLD_SECONDS == 60.0
    assert b.held_for(ACCOUNT) == 60.0
    assert b.held_for(ACCOUNT + 1) == 0.0


def test_a_hold_lasts_at_least_a_second():
    b, clock = budget(BudgetStore())
    b.hold(ACCOUNT, 0.25)
    assert b.held_for(ACCOUNT) == 1.0
    b.hold(ACCOUNT + 1, -5)
    assert b.held_for(ACCOUNT + 1) == 1.0


def test_a_shorter_hold_does_not_shorten_a_longer_one():
    b, clock = budget(BudgetStore())
    b.hold(ACCOUNT, 120)
    b.hold(ACCOUNT, 10)
    assert b.held_for(ACCOUNT) == 120.0
    b.hold(ACCOUNT, 300)
    assert b.held_for(ACCOUNT) == 300.0


def test_a_hold_ends_at_its_instant():
    b, clock = budget(BudgetStore())
    b.hold(ACCOUNT, 30)
    clock.advance(29.5)
    assert b.held_for(ACCOUNT) == 0.5
    clock.advance(0.5)
    assert b.held_for(ACCOUNT) == 0.0
    assert ACCOUNT not in b._holds, "an ended hold is forgotten"


def test_a_held_account_is_refused_with_the_seconds_left():
    store = BudgetStore()
    b, clock = budget(store)
    b.hold(ACCOUNT, 120)
    clock.advance(9.5)
    refused = refusal(b)
    assert refused.retry_after == 110.5
    assert refused.detail == ("The upstream CA rate-limited this account; the gateway holds new "
                              "orders back for 111 more seconds")
    assert store.asked == [], "a held account costs no store query"


# --------------------------------------------------------------------------
# Orders in the window
# --------------------------------------------------------------------------

def test_orders_up_to_the_limit_pass_and_the_store_is_asked_for_the_window():
    store = BudgetStore(order_times=[format_timestamp(START - 100)])
    b, clock = budget(store, orders=2, order_window=3600)
    run(reserve(b, 1))
    assert store.asked == [("spend", ACCOUNT, format_timestamp(START - 3600)),
                           ("write", ["OrderAttempt"])]


def test_one_order_over_the_limit_is_refused_until_the_oldest_leaves_the_window():
    store = BudgetStore(order_times=[format_timestamp(START - 1000), format_timestamp(START - 10)])
    b, clock = budget(store, orders=2, order_window=3600)
    refused = refusal(b)
    assert refused.retry_after == 2600.0
    assert refused.detail == (
        "Error creating new order :: too many new orders recently: the gateway has created 2 orders "
        "for this account in the last 1 hour (limit 2, --order-limit)")


def test_the_order_retry_is_at_least_a_second():
    store = BudgetStore(order_times=[format_timestamp(START - 3600)])
    b, clock = budget(store, orders=1, order_window=3600)
    assert refusal(b).retry_after == 1.0


def test_a_zero_order_limit_refuses_with_the_whole_window():
    b, clock = budget(BudgetStore(), orders=0, order_window=7200)
    refused = refusal(b)
    assert refused.retry_after == 7200.0
    assert "created 0 orders for this account in the last 2 hours (limit 0," in refused.detail


@pytest.mark.parametrize("seconds, spelled", [(3600, "1 hour"), (7200, "2 hours"), (10800, "3 hours"),
                                              (90, "90 seconds"), (5400.0, "5400 seconds")])
def test_durations_are_spelled_for_people(seconds, spelled):
    assert _duration(seconds) == spelled


# --------------------------------------------------------------------------
# Pending authorizations
# --------------------------------------------------------------------------

def test_pending_authorizations_up_to_the_limit_pass():
    store = BudgetStore(pending=[authz(START - 10, START + 1000)])
    b, clock = budget(store, pending_authorizations=3)
    run(reserve(b, 2))  # 1 pending + 2 names = 3


def test_pending_authorizations_over_the_limit_wait_for_the_first_expiry():
    store = BudgetStore(pending=[authz(START - 10, START + 5000), authz(START - 5, START + 900)])
    b, clock = budget(store, pending_authorizations=3, abandoned_after=None)
    refused = refusal(b, names=2)
    assert refused.retry_after == 900.0
    assert refused.detail == (
        "Error creating new authz :: too many currently pending authorizations: 2 pending for this "
        "account (limit 3, --pending-authz-limit)")


def test_or_for_the_oldest_to_be_abandoned_when_that_comes_first():
    store = BudgetStore(pending=[authz(START - 100, START + 5000), authz(START - 5, START + 900)])
    b, clock = budget(store, pending_authorizations=2, abandoned_after=600)
    assert refusal(b).retry_after == 500.0
    b.limits = BudgetLimits(pending_authorizations=2, abandoned_after=2000)
    assert refusal(b).retry_after == 900.0, "the first expiry comes first"


def test_the_pending_retry_is_at_least_a_second():
    store = BudgetStore(pending=[authz(START - 700, START + 1)])
    b, clock = budget(store, pending_authorizations=1, abandoned_after=600)
    clock.advance(0.5)
    assert refusal(b).retry_after == 1.0
    b.limits = BudgetLimits(pending_authorizations=1, abandoned_after=None)
    assert refusal(b).retry_after == 1.0


def test_pending_authorizations_without_expiry_wait_a_minute():
    store = BudgetStore(pending=[authz(START - 10)])
    b, clock = budget(store, pending_authorizations=1, abandoned_after=None)
    assert refusal(b).retry_after == 60.0


def test_expired_pending_authorizations_are_not_counted():
    """The CA no longer counts them either; expiring now counts as expired."""
    store = BudgetStore(pending=[authz(START - 100, START - 1), authz(START - 100, START),
                                 authz(START - 100, START + 60), authz(START - 100)])
    b, clock = budget(store, pending_authorizations=3)
    run(reserve(b, 1))
    state = run(b.state(ACCOUNT))
    assert (state.pending, state.pending_left) == (2, 1)


# --------------------------------------------------------------------------
# The state for metrics and the report
# --------------------------------------------------------------------------

def test_the_state_counts_what_is_used_and_left():
    store = BudgetStore(order_times=[format_timestamp(START - 10)] * 3,
                        pending=[authz(START - 10, START + 60)])
    b, clock = budget(store, orders=5, order_window=600, pending_authorizations=4)
    b.hold(ACCOUNT, 30)
    state = run(b.state(ACCOUNT))
    assert state == BudgetState(orders_used=3, orders_left=2, pending=1, pending_left=3, held_for=30.0)
    assert store.asked == [("order_times_since", ACCOUNT, format_timestamp(START - 600)),
                           ("authorizations_with_status", Status.PENDING, ACCOUNT)]


def test_the_state_never_shows_a_negative_budget():
    store = BudgetStore(order_times=[format_timestamp(START - 10)] * 4,
                        pending=[authz(START - 10, START + 60)] * 3)
    b, clock = budget(store, orders=2, pending_authorizations=1)
    state = run(b.state(ACCOUNT))
    assert (state.orders_left, state.pending_left, state.held_for) == (0, 0, 0.0)


def test_the_default_limits_are_lets_encrypts():
    assert BudgetLimits() == BudgetLimits(orders=300, order_window=10800.0, pending_authorizations=300,
                                          abandoned_after=3600.0)


def test_a_hold_under_a_second_still_holds():
    b, clock = budget(BudgetStore())
    b.hold(ACCOUNT, 1)
    clock.advance(0.5)
    refused = refusal(b)
    assert refused.retry_after == 0.5
    assert refused.detail.endswith("holds new orders back for 1 more seconds")


def test_an_abandonment_retry_is_at_least_a_second():
    store = BudgetStore(pending=[authz(START - 599, START + 900)])
    b, clock = budget(store, pending_authorizations=1, abandoned_after=600)
    clock.advance(0.5)
    assert refusal(b).retry_after == 1.0


def test_a_hold_is_logged_with_the_account_and_seconds():
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        b, clock = budget(BudgetStore())
        b.hold(ACCOUNT, 120.4)
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = [e for e in events if e.get("log_namespace") == "gateway.translate.budget"]
    assert event["log_level"] == LogLevel.warn
    assert (event["account"], event["seconds"]) == (ACCOUNT, 120.4)
    assert formatEvent(event) == "upstream rate limit: holding account 7 for 120s"
