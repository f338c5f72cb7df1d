"""
Recovery: completing from the CA what a crash left unfinished.

Every logical write is one transaction (`gateway.store.interface`), so a
crash leaves no half of one.  What it can leave is a step the CA took and
the gateway never recorded, and rows an older gateway wrote in several
transactions:

- a ``newOrder`` recorded (`OrderAttempt`) but whose order was never stored:
  the order is looked for in the account's order list at the CA (RFC 8555
  §7.1.2.1; Pebble has one, Let's Encrypt does not) and stored with its
  authorizations, so the abandoned-authorization sweep and the budget see
  them; without a list, or when it is not there, the attempt is marked
  ``lost`` (it still counts in the order budget);
- a pending authorization without challenges: its challenges are read from
  the CA and added (or it is marked expired when the CA no longer has it);
- a pending or ready order without (some of) its authorizations: they are
  read from the CA and stored (or the order is marked invalid when the CA
  no longer has it).

It runs once before the gateway serves (bounded in time), and again with
each abandoned-authorization sweep; only rows of the current CA are
touched.  A read path repairs a partial authorization on its own too
(`gateway.translate.authorizations`).
"""

from __future__ import annotations

from typing import List, Optional

import attrs
from twisted.logger import Logger

from gateway.status import Status

from gateway.store import AttemptStatus, Order, OrderAttempt, Update
from gateway.store.records import (
    PARTIAL_AUTHORIZATION,
    PARTIAL_ORDER,
    timestamp_instant,
)
from gateway.translate.errors import Refused
from gateway.translate.authorizations import (
    record_authorization,
    refresh_authorization,
    store_new_order,
)
from gateway.translate.accounts import upstream_for
from gateway.translate.context import Context
from gateway.upstream.errors import UpstreamError, UpstreamProblem
from gateway.upstream.messages import UpstreamAccount

log = Logger()

#: Pages of an account's order list read at most (Pebble pages by 3).
MAX_ORDER_PAGES = 50


@attrs.define
class Recovered:
    """
    What one recovery pass did, for its log line and for tests.
    """

    adopted: int = 0
    lost: int = 0
    repaired: int = 0
    gone: int = 0
    failed: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.adopted or self.lost or self.repaired or self.gone or self.failed)


async def recover(context: Context, settled_after: float = 0.0) -> Recovered:
    """
    One recovery pass over the current CA's unfinished rows.  Upstream
    failures are logged and leave the row for the next pass.

    :param settled_after: seconds after which an open order attempt can no
        longer be in flight (0 before the gateway serves: nothing is).
    """
    done = Recovered()
    cutoff = context.clock.seconds() - settled_after
    for attempt in await context.store.open_order_attempts():
        if settled_after and timestamp_instant(attempt.created_at).timestamp() > cutoff:
            continue
        try:
            await _resolve_attempt(context, attempt, done)
        except (UpstreamError, Refused) as error:
            done.failed += 1
            log.warn("recovery: order attempt {id}: {error}", id=attempt.id, error=str(error))
    for finding in await context.store.inconsistencies():
        if finding.kind not in (PARTIAL_AUTHORIZATION, PARTIAL_ORDER):
            continue
        if not context.is_current(finding):
            continue
        try:
            if finding.kind == PARTIAL_AUTHORIZATION:
                await _repair_authorization(context, finding.record_id, done)
            else:
                await _repair_order(context, finding.record_id, done)
        except (UpstreamError, Refused) as error:
            done.failed += 1
            log.warn("recovery: {what}: {error}", what=finding.describe(), error=str(error))
    if done.anything:
        log.info(
            "recovery: {adopted} lost order(s) found at the CA and stored, {lost} not found, "
            "{repaired} partial row(s) completed, {gone} gone at the CA, {failed} left for later",
            adopted=done.adopted, lost=done.lost, repaired=done.repaired, gone=done.gone,
            failed=done.failed,
        )
    return done


async def _upstream_of(context: Context, account_id: int) -> Optional[UpstreamAccount]:
    account = await context.store.account_by_id(account_id)
    if account is None or not context.keys.holds(account.thumbprint):
        return None
    return await upstream_for(context, account)


async def _order_urls(context: Context, upstream_account: UpstreamAccount) -> Optional[List[str]]:
    """
    The URLs in the account's order list at the CA, or ``None`` when it
    offers none (or advertises one it does not serve).
    """
    account = await context.upstream.read_account(upstream_account)
    url = account.body.get("orders")
    if not isinstance(url, str):
        return None
    urls: List[str] = []
    for _ in range(MAX_ORDER_PAGES):
        try:
            response = await context.upstream.post_as_get(upstream_account, url, kind="orders")
        except UpstreamProblem as problem:
            if problem.status in (404, 405) and not urls:
                return None  # advertised but not served
            raise
        listed = response.json().get("orders")
        urls += [u for u in listed or () if isinstance(u, str)]
        following = response.links.get("next")
        if not following:
            break
        url = following[0]
    return urls


async def _resolve_attempt(context: Context, attempt: OrderAttempt, done: Recovered) -> None:
    upstream_account = await _upstream_of(context, attempt.account_id)
    if upstream_account is None:
        return
    urls = await _order_urls(context, upstream_account)
    if urls:
        known = {o.upstream_url for o in await context.store.find_orders(
            attempt.account_id, attempt.identifiers)}
        for url in reversed(urls):
            if url in known:
                continue
            order = await context.upstream.get_order(upstream_account, url)
            if tuple(sorted(n.lower() for n in order.identifiers)) != attempt.identifiers:
                continue
            await store_new_order(context, attempt.account_id, upstream_account, order,
                                  attempt.id, created_at=attempt.created_at)
            done.adopted += 1
            log.info("recovery: order {order} for {names}, whose answer was lost, found at the "
                     "CA and stored", order=attempt.id, names=list(attempt.identifiers))
            return
    await context.store.write([Update(OrderAttempt, attempt.id, {"status": AttemptStatus.LOST})])
    done.lost += 1


async def _repair_authorization(context: Context, authorization_id: str, done: Recovered) -> None:
    record = await context.store.authorization_by_id(authorization_id)
    if record is None:
        return
    upstream_account = await _upstream_of(context, record.account_id)
    if upstream_account is None:
        return
    try:
        upstream = await context.upstream.get_authorization(upstream_account, record.upstream_url)
    except UpstreamProblem as problem:
        if problem.status != 404:
            raise
        await context.store.update_authorization(record.id, status=Status.EXPIRED,
                                                 updated_at=context.now())
        done.gone += 1
        return
    await refresh_authorization(context, record, upstream)
    done.repaired += 1


async def _repair_order(context: Context, order_id: str, done: Recovered) -> None:
    record = await context.store.order_by_id(order_id)
    if record is None:
        return
    upstream_account = await _upstream_of(context, record.account_id)
    if upstream_account is None:
        return
    try:
        order = await context.upstream.get_order(upstream_account, record.upstream_url)
    except UpstreamProblem as problem:
        if problem.status != 404:
            raise
        await context.store.update_order(record.id, status=Status.INVALID)
        done.gone += 1
        return
    for url in order.authorizations:
        if await context.store.authorization_by_upstream_url(record.account_id, url) is None:
            upstream = await context.upstream.get_authorization(upstream_account, url)
            await record_authorization(context, record.account_id, record.id, upstream)
    await context.store.write([Update(Order, record.id, {
        "status": order.status, "authorization_urls": order.authorizations})])
    done.repaired += 1


__all__ = ["Recovered", "recover"]
