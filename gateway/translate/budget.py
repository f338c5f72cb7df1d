"""
The rate-limit economy: the gateway counts its own spend of each upstream
account's budget and refuses locally, before the CA does.

Let's Encrypt limits an account to 300 new orders per 3 hours and 300
pending authorizations.  A v1 flow costs more orders than a native v2 one
(one per ``new-authz``, one more at ``new-cert`` for several names), and a
fleet of legacy clients behind one gateway could lock an account out for
hours.  So before every new order the gateway checks, from its own store:

- the orders it created for the account in the sliding window;
- the authorizations of the account still pending (a new order may add one
  per name);
- whether the CA itself told it to back off (an upstream ``rateLimited``
  answer holds the account until its ``Retry-After`` passes).

Over a limit, the v1 client gets 429 ``urn:acme:error:rateLimited`` at once,
with a detail naming the limit and a ``Retry-After``, and nothing is sent
upstream.

The check and the record of the ``newOrder`` it admits are one write
transaction of the store (`gateway.store.interface.IStore.reserve`), which
excludes every other — of this process, another ``--workers`` process or
another replica: twelve parallel ``new-authz`` under ``--order-limit 3``
send exactly three orders, and orders still in flight count their names as
pending authorizations.  Pending authorizations no client will finish are deactivated
after an idle time, which frees that part of the budget.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.status import Status
from gateway.store import Authorization, IStore, OrderAttempt, Spend
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.translate.errors import RateLimited

log = Logger()

#: When the CA says ``rateLimited`` without ``Retry-After``, hold this long.
DEFAULT_HOLD_SECONDS = 60.0


@attrs.frozen
class BudgetLimits:
    """
    The budget of one upstream account.

    :ivar orders: new orders allowed per ``order_window`` seconds.
    :ivar pending_authorizations: authorizations that may be pending at once.
    :ivar abandoned_after: seconds after which a pending authorization the
        gateway created is deemed abandoned and deactivated upstream
        (``None``: never).
    """

    orders: int = 300
    order_window: float = 3 * 3600.0
    pending_authorizations: int = 300
    abandoned_after: Optional[float] = 3600.0


@attrs.frozen
class BudgetState:
    """
    What is left of one account's budget right now.
    """

    orders_used: int
    orders_left: int
    pending: int
    pending_left: int
    held_for: float


@attrs.define
class Budget:
    """
    The accounting, over the gateway's store and clock.
    """

    store: IStore
    clock: IReactorTime
    limits: BudgetLimits = BudgetLimits()
    _holds: Dict[int, float] = attrs.field(factory=dict, init=False)

    def hold(self, account_id: int, retry_after: Optional[float]) -> None:
        """
        Stop sending new orders for ``account_id`` until the CA's
        ``Retry-After`` has passed.
        """
        seconds = retry_after if retry_after is not None else DEFAULT_HOLD_SECONDS
        until = self.clock.seconds() + max(1.0, seconds)
        self._holds[account_id] = max(until, self._holds.get(account_id, 0.0))
        log.warn("upstream rate limit: holding account {account} for {seconds:.0f}s",
                 account=account_id, seconds=seconds)

    def held_for(self, account_id: int) -> float:
        until = self._holds.get(account_id)
        if until is None:
            return 0.0
        left = until - self.clock.seconds()
        if left <= 0:
            del self._holds[account_id]
            return 0.0
        return left

    async def _pending(self, account_id: int) -> List[Authorization]:
        now = self.clock.seconds()
        pending = await self.store.authorizations_with_status(Status.PENDING,
                                                              account_id=account_id)
        return [a for a in pending if not a.expires or timestamp_instant(a.expires).timestamp() > now]

    async def state(self, account_id: int) -> BudgetState:
        """
        The account's spend and what is left, for metrics and the report.
        """
        now = self.clock.seconds()
        times = await self.store.order_times_since(
            account_id, format_timestamp(now - self.limits.order_window)
        )
        pending = await self._pending(account_id)
        return BudgetState(
            orders_used=len(times),
            orders_left=max(0, self.limits.orders - len(times)),
            pending=len(pending),
            pending_left=max(0, self.limits.pending_authorizations - len(pending)),
            held_for=self.held_for(account_id),
        )

    async def reserve(self, attempt: OrderAttempt) -> OrderAttempt:
        """
        Record ``attempt`` — the ``newOrder`` about to be sent for its
        account and identifiers — if the account's budget allows it, else
        refuse: checked and recorded in one store transaction, so no other
        request can spend between the check and the record.

        :raises RateLimited: with the seconds until the order would fit
            (nothing is recorded).
        """
        account_id = attempt.account_id
        held = self.held_for(account_id)
        if held > 0:
            raise RateLimited(
                f"The upstream CA rate-limited this account; the gateway holds new orders "
                f"back for {math.ceil(held)} more seconds",
                retry_after=held,
            )
        now = self.clock.seconds()
        spend, admitted = await self.store.reserve(
            attempt, format_timestamp(now - self.limits.order_window), self.limits.orders,
            self.limits.pending_authorizations, now)
        if not admitted:
            judge(self.limits, now, spend, len(attempt.identifiers))
            raise AssertionError(f"the store refused what the budget admits: {spend!r}")
        return attempt


def judge(limits: BudgetLimits, now: float, spend: Spend, names: int) -> None:
    """
    Refuse an order of ``names`` identifiers that would exceed ``limits``
    given the account's ``spend`` (pure; the store's transaction decided
    with `Spend.admits`, this words the refusal).

    :raises RateLimited: with the seconds until the order would fit.
    """
    window = limits.order_window
    times = spend.order_times
    if len(times) + 1 > limits.orders:
        oldest = timestamp_instant(times[0]).timestamp() if times else now
        retry = max(1.0, oldest + window - now)
        raise RateLimited(
            f"Error creating new order :: too many new orders recently: the gateway has "
            f"created {len(times)} orders for this account in the last "
            f"{_duration(window)} (limit {limits.orders}, --order-limit)",
            retry_after=retry,
        )
    pending = spend.live_pending(now)
    counted = len(pending) + spend.names_in_flight
    if counted + names > limits.pending_authorizations:
        expiries = [timestamp_instant(a.expires).timestamp() for a in pending if a.expires]
        retry = max(1.0, min(expiries) - now) if expiries else 60.0
        if limits.abandoned_after is not None and pending:
            oldest = timestamp_instant(pending[0].created_at).timestamp()
            retry = min(retry, max(1.0, oldest + limits.abandoned_after - now))
        raise RateLimited(
            f"Error creating new authz :: too many currently pending authorizations: "
            f"{counted} pending for this account (limit "
            f"{limits.pending_authorizations}, --pending-authz-limit)",
            retry_after=retry,
        )


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{int(seconds)} seconds"
