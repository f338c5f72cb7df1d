"""
When a planned renewal was the wrong guess.

At the first ``new-authz`` for a name of a certificate it knows, the
gateway orders the certificate's whole name set
(`gateway.translate.authorizations`).  A client may have meant something
else: a certificate for fewer names, or more, or for the name alone.  Its
``new-cert`` then names another set than the planned order's; the
gateway issues as it would have without the plan (a usable order for
exactly the CSR's names, else a new one), and tidies the plan up: every
authorization of the planned order that nobody used — still pending, no
challenge answered — is deactivated at the CA, so it neither lingers in
the account's pending-authorization limit nor waits for the sweep.  The
names the client did validate stay valid, for the CA to reuse.
"""

from __future__ import annotations

from typing import Sequence

from twisted.logger import Logger

from gateway.status import Status
from gateway.translate.accounts import BoundAccount
from gateway.translate.authorizations import refresh_authorization
from gateway.translate.context import Context
from gateway.upstream.errors import UpstreamError

log = Logger()


async def abandon_wrong_plans(context: Context, bound: BoundAccount, names: Sequence[str]) -> int:
    """
    Deactivate the unused pending authorizations of the account's open
    planned orders that share a name with ``names`` (a CSR's) without
    being for exactly them, and record those orders as given up.

    :return: how many authorizations were deactivated.
    """
    wanted = tuple(sorted({n.lower() for n in names}))
    deactivated = 0
    for order in await context.store.planned_orders(bound.record.id,
                                                     (Status.PENDING, Status.READY)):
        if order.identifiers == wanted or not set(order.identifiers) & set(wanted):
            continue
        for authorization in await context.store.authorizations_for_order(order.id):
            if authorization.status != Status.PENDING:
                continue
            challenges = await context.store.challenges_for_authorization(authorization.id)
            if any(c.status != Status.PENDING for c in challenges):
                continue
            try:
                upstream = await context.upstream.deactivate_authorization(
                    bound.upstream, authorization.upstream_url)
            except UpstreamError as error:
                log.info("could not deactivate authorization {id} of abandoned plan {order}: "
                         "{error}", id=authorization.id, order=order.id, error=str(error))
                continue
            await refresh_authorization(context, authorization, upstream)
            deactivated += 1
        await context.store.update_order(order.id, status=Status.INVALID)
        log.info("new-cert for {names} is not the planned renewal {order} ({planned}): "
                 "plan given up, {count} unused authorization(s) deactivated",
                 names=list(wanted), order=order.id, planned=list(order.identifiers),
                 count=deactivated)
    return deactivated
