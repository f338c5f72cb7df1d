"""
The periodic sweeps: recovery from the CA of what a crash left unfinished
(`gateway.translate.recovery`), then the deactivation of pending
authorizations no client finished, which frees the account's pending
budget (`gateway.translate.budget`).

Every process of a state runs the sweeps on its own timer (``--workers``,
replicas), but a sweep runs in one process at a time: the others skip their
turn while one holds the state's ``sweeps`` lock, so each account's
abandoned authorizations are deactivated once, not once per replica.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from gateway.status import Status
from gateway.store.records import format_timestamp
from gateway.translate.accounts import upstream_for
from gateway.translate.context import Context
from gateway.translate.recovery import recover
from gateway.upstream.errors import UpstreamError, UpstreamProblem

log = Logger()


#: The name of the lock a sweep holds (`gateway.translate.memory.NameLocks.alone`).
SWEEP_LOCK = "sweeps"


async def sweep(context: Context, request_timeout: float) -> bool:
    """
    One sweep, unless another process is sweeping right now.

    :return: whether this process swept.
    """
    async def work() -> bool:
        await _sweep(context, request_timeout)
        return True

    return bool(await context.locks.alone(SWEEP_LOCK, work))


async def _sweep(context: Context, request_timeout: float) -> None:
    """
    Recovery, then abandoned pending authorizations (which recovery may
    just have made visible).  A newOrder younger than ten request timeouts
    may still be in flight: recovery leaves it.
    """
    try:
        await recover(context, settled_after=10 * request_timeout)
    except Exception as error:
        # Recovery must not stop the abandoned-authorization sweep; each
        # row it could not finish is logged by recovery itself, and this
        # (a store failure) is retried at the next sweep.
        log.warn("recovery failed: {error}", error=str(error))
    await deactivate_abandoned(context)


async def deactivate_abandoned(context: Context) -> int:
    """
    Deactivate upstream the pending authorizations the gateway created that
    no client finished within ``abandoned_after`` (a client gave up), so they
    stop counting against the pending-authorizations limit.

    :return: how many were deactivated.
    """
    limits = context.budget.limits
    if limits.abandoned_after is None:
        return 0
    cutoff = format_timestamp(context.clock.seconds() - limits.abandoned_after)
    stale = await context.store.authorizations_with_status(Status.PENDING,
                                                          created_before=cutoff)
    done = 0
    for authorization in stale:
        account = await context.store.account_by_id(authorization.account_id)
        if account is None or not context.keys.holds(account.thumbprint):
            continue
        status: Optional[str]
        try:
            upstream_account = await upstream_for(context, account)
            upstream = await context.upstream.deactivate_authorization(
                upstream_account, authorization.upstream_url
            )
            status = upstream.status
        except UpstreamProblem as problem:
            # A 404: the CA no longer has it, which frees the budget as well
            # as a deactivation.  Anything else (already settled, refused):
            # left as it is; the CA expires it eventually.
            log.info("could not deactivate abandoned authorization {id}: {error}",
                     id=authorization.id, error=str(problem))
            status = Status.DEACTIVATED if problem.status == 404 else None
        except UpstreamError as error:
            # The CA did not answer: try again at the next sweep.
            log.info("could not deactivate abandoned authorization {id}: {error}",
                     id=authorization.id, error=str(error))
            status = None
        if status is not None:
            await context.store.update_authorization(
                authorization.id, status=status, updated_at=context.now()
            )
            done += status == Status.DEACTIVATED
    if done:
        log.info("deactivated {count} abandoned pending authorization(s)", count=done)
    return done
