"""
v1 ``new-cert`` translated to finalizing a v2 order, and the certificate
reads that follow it.

The order finalized is the one whose identifier set equals the CSR's names:
for a single name, the order its ``new-authz`` created (one order per
certificate); for several names, a pending or ready order of the account
with exactly that set, else a new one.  If that order's authorizations are
not all valid (the CA did not reuse those of the single-name orders), the
client gets Boulder's own answer, 403 ``unauthorized`` naming the names.

An issued certificate is stored before it is returned, so a client that
loses the response finds it again at its ``Location``.

A certificate is only handed out for the CSR key it certifies.  When the
CA issued but its answer never reached the client (finalize's answer lost,
the download failing, the gateway killed), the client's retry usually
comes with a new key (certbot makes one on every run), and the order it
finds valid holds a certificate for the old one: that certificate is
stored as an orphan (listed in the migration report, never handed out)
and the retry gets a new order for its own key.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.logger import Logger

from gateway.status import ORDER_FINAL, Status
from gateway.store import Authorization, Certificate, Insert, Issuer, Order, issuer_id
from gateway.store import Conflict as StoreConflict
from gateway.translate.accounts import BoundAccount, bind
from gateway.translate.authorizations import create_order, record_authorization
from gateway.translate.context import Context, written_as
from gateway.store.leaf import leaf_facts
from gateway.translate.csr import ParsedCSR, cn_only_refusal
from gateway.translate.errors import CSRRejected, InternalFailure, NotFound, Refused, Unauthorized, flow
from gateway.translate.following import Answer
from gateway.translate.inventory import exactly
from gateway.translate.policy import DNSName
from gateway.translate.renewals import abandon_wrong_plans
from gateway.translate.requests import NewCert
from gateway.translate.revalidation import revalidate
from gateway.translate.terms import order_terms
from gateway.upstream import messages as v2
from gateway.upstream.errors import UpstreamError, UpstreamProblem

log = Logger()

#: The sorted spellings of a certificate's names: the key of an order.
Names = Tuple[str, ...]
#: A stored order with the CA's view of it.
OrderState = Tuple[Order, v2.Order]


#: The stored orders `_usable_order` considers.
_USABLE = (Status.PENDING, Status.READY, Status.PROCESSING, Status.VALID)


async def _usable_order(context: Context, bound: BoundAccount, names: Names,
                        candidates: Optional[Sequence[Order]] = None) -> Optional[OrderState]:
    """
    A stored order of the account for exactly ``names`` that can still be
    finalized (or was, and holds a certificate not yet stored), refreshed
    from upstream.

    ``candidates``: the account's orders for ``names`` in a `_USABLE`
    status, read already (else read here).
    """
    if candidates is None:
        candidates = await context.store.find_orders(bound.record.id, names, _USABLE)
    for record in candidates:
        try:
            upstream = await context.upstream.get_order(bound.upstream, record.upstream_url)
        except UpstreamProblem as problem:
            if problem.status == 404:
                await context.store.update_order(record.id, status=Status.INVALID)
                continue
            raise
        if upstream.status != record.status:
            record = await context.store.update_order(record.id, status=upstream.status,
                                                      certificate_url=upstream.certificate)
        if upstream.status in (Status.PENDING, Status.READY, Status.PROCESSING):
            return record, upstream
        if upstream.status == Status.VALID and upstream.certificate:
            existing = await context.store.certificates_for_account(bound.record.id)
            if not any(c.order_id == record.id for c in existing):
                return record, upstream
    return None


async def _authorization_states(context: Context, bound: BoundAccount, order_record: Order,
                                order: v2.Order) -> List[v2.Authorization]:
    states = []
    for url in order.authorizations:
        upstream = await context.upstream.get_authorization(bound.upstream, url)
        await record_authorization(context, bound.record.id, order_record.id, upstream)
        states.append(upstream)
    return states


async def _names_not_authorized(context: Context, bound: BoundAccount,
                                names: Iterable[DNSName]) -> List[DNSName]:
    """
    The names for which the account holds no pending or valid, unexpired
    authorization in the gateway's store (read in one store call).
    """
    names = list(names)
    found = await context.store.find_authorizations_of_names(
        bound.record.id, [(name.value, name.wildcard) for name in names],
        (Status.PENDING, Status.VALID))
    return [name for name, authorizations in zip(names, found)
            if not any(not context.has_expired(a.expires) for a in authorizations)]


async def new_certificate(context: Context, request: NewCert) -> Certificate:
    """
    ``new-cert``.

    Without any means to validate names itself, the gateway refuses a CSR
    naming a name the account never asked to authorize (``new-authz``)
    before any upstream call, with Boulder's answer: the order could not
    become ready, and creating it would only spend the account's upstream
    order budget on a request that cannot succeed.
    """
    csr = request.csr
    context.policy.check_names(csr.names)
    bound = await bind(context, request.signer)
    # The client's key was compared with the CSR's already; in managed mode
    # the key that signs upstream is another, and must differ too.
    if csr.public_key_der == _account_spki(bound):
        raise CSRRejected("Certificate public key must be different than account key")
    await abandon_wrong_plans(context, bound, request.names)
    if not context.validators.configured and not bound.managed:
        missing = await _names_not_authorized(context, bound, csr.names)
        if missing:
            raise Unauthorized(
                "Error creating new cert :: authorizations for these names not found or "
                f"expired: {', '.join(n.spelled for n in missing)}. Request an authorization "
                f"(new-authz) for each name first, or start the gateway with "
                f"{context.validators.missing_means(missing)} to let it validate them."
            )
    names = request.names
    lock = context.locks.lock_for(f"order:{bound.record.id}:{','.join(names)}")
    await lock.acquire()
    try:
        for _ in range(MAX_FOREIGN_CERTIFICATES + 1):
            try:
                record, upstream_order = await _finalized_order(context, bound, names, csr,
                                                                request.signer.user_agent)
            except UpstreamProblem as problem:
                hint = cn_only_refusal(csr, problem.code, problem.detail)
                if hint is not None:
                    raise hint
                raise
            if upstream_order.status != Status.VALID or not upstream_order.certificate:
                await context.store.update_order(record.id, status=upstream_order.status)
                error = upstream_order.error
                if error is not None:
                    hint = cn_only_refusal(csr, error.code, error.detail)
                    if hint is not None:
                        raise hint
                detail = error.detail if error else "the order is " + upstream_order.status
                raise Unauthorized(f"Error creating new cert :: {detail}")
            record = await context.store.update_order(
                record.id, status=Status.VALID, certificate_url=upstream_order.certificate
            )
            # The order may have been finalized by an earlier attempt whose
            # answer was lost: its certificate is then for that attempt's key.
            chain = await context.upstream.download_certificate(bound.upstream, upstream_order.certificate)
            if _leaf_spki(chain.leaf) == csr.public_key_der:
                certificate = await store_chain(context, bound.record.id, record.id, chain,
                                                profile=record.profile)
                if not certificate.orphaned:
                    log.info(
                        "certificate {certificate} for {names} cost {orders} upstream order(s)",
                        certificate=certificate.id, names=list(names),
                        orders=await _orders_spent(context, bound, record, csr.names),
                    )
                    return certificate
            orphan = await store_chain(context, bound.record.id, record.id, chain, orphaned=True,
                                       profile=record.profile)
            log.warn(
                "new-cert: order {order} holds a certificate for another key (an earlier attempt "
                "whose answer was lost); kept as orphan {certificate}, never handed out; "
                "ordering anew", order=record.id, certificate=orphan.id)
        raise InternalFailure(
            "Error creating new cert :: the upstream CA keeps returning certificates for "
            "another key than the CSR's")
    finally:
        lock.release()


new_certificate = flow(new_certificate)


#: How many certificates for other keys (each kept as an orphan) one
#: new-cert may come across before it gives up: one per earlier attempt
#: whose answer was lost is the most a client's retries can leave.
MAX_FOREIGN_CERTIFICATES = 3


def _leaf_spki(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def _finalized_order(context: Context, bound: BoundAccount, names: Names,
                           csr: ParsedCSR, user_agent: str) -> OrderState:
    """
    Finalize the order for ``names`` with ``csr``: the known ready one at
    once, else a usable or new one, its authorizations completed first.  A
    usable one may be finalized already (``processing`` or ``valid``), by
    an earlier attempt whose answer was lost: the caller compares keys.

    :return: ``(order record, upstream order)`` as finalize left it.
    """
    # One read of the account's orders for the names serves both paths
    # when the fast one has no candidate (the usual v1 flow: the names were
    # authorized through single-name orders), where each read them.
    usable = await context.store.find_orders(bound.record.id, names, _USABLE)
    ready = [o for o in usable if o.status in (Status.PENDING, Status.READY)]
    finalized = await _finalize_known_ready_order(context, bound, ready, csr.der)
    if finalized is not None:
        return finalized
    record, upstream_order, authorizations = await _order_for(
        context, bound, names, user_agent, None if ready else usable)
    if upstream_order.status == Status.READY:
        upstream_order = await _finalize(context, bound, record, upstream_order, csr.der)
    elif upstream_order.status == Status.PENDING:
        if authorizations is None:
            authorizations = await _authorization_states(context, bound, record, upstream_order)
        if not v2.order_is_ready(upstream_order, authorizations):
            await _complete_authorizations(context, bound, record, authorizations)
        upstream_order = await _finalize(context, bound, record, upstream_order, csr.der)
    elif upstream_order.status == Status.PROCESSING:
        upstream_order = await follow_order(context, bound, record)
    return record, upstream_order


async def _finalize(context: Context, bound: BoundAccount, record: Order, order: v2.Order,
                    csr_der: bytes) -> v2.Order:
    """
    Finalize ``order`` upstream, then follow it until it is ``valid`` or
    ``invalid``.
    """
    finalized, retry_after = await context.upstream.submit_finalize(bound.upstream, order, csr_der)
    if finalized.status in ORDER_FINAL:
        return finalized
    if finalized.status != record.status:
        await context.store.update_order(record.id, status=finalized.status)
    return await follow_order(context, bound, record, first_delay=retry_after or 0.0)


async def follow_order(context: Context, bound: BoundAccount, record: Order,
                       first_delay: float = 0.0) -> v2.Order:
    """
    Follow a finalized order upstream until it is ``valid`` or ``invalid``
    (`gateway.translate.following`: at once, then backing off, honouring
    the CA's ``Retry-After``), storing each change of its status as it
    arrives; a second caller joins the same follower.

    :raises PollTimeout: when the order does not settle in time.
    """
    stored = [record.status]

    async def read() -> Answer[v2.Order]:
        order, retry_after = await context.upstream.read_order(bound.upstream, record.upstream_url)
        if order.status != stored[0]:
            await context.store.update_order(record.id, status=order.status,
                                             certificate_url=order.certificate)
            stored[0] = order.status
        return Answer(order, retry_after)

    follower = context.following.follow(f"order:{record.id}", read,
                                        lambda order: order.status in ORDER_FINAL, first_delay)
    settled: v2.Order = await follower.settled()
    return settled


async def _order_for(context: Context, bound: BoundAccount, names: Names, user_agent: str,
                     candidates: Optional[Sequence[Order]] = None,
                     ) -> Tuple[Order, v2.Order, Optional[List[v2.Authorization]]]:
    """
    The order to finalize for ``names``: a usable stored one (refreshed
    from upstream), else a new one within the account's budget — which
    ``replaces`` the account's certificate for exactly these names, when
    there is one (ARI).

    :return: ``(order record, upstream order, its upstream authorizations
        when already read, else None)``.
    """
    found = await _usable_order(context, bound, names, candidates)
    if found is not None:
        return (*found, None)
    held = await context.store.current_certificates(bound.record.id, names[0])
    renewing = exactly(held, bound.record.id, names)
    terms = await order_terms(context, bound.thumbprint, user_agent, names, renewing=renewing)
    record, upstream_order, authorizations = await create_order(context, bound, names, terms)
    log.info("new-cert: created order {order} for {names}", order=record.id, names=names)
    return record, upstream_order, [upstream for _, upstream, _ in authorizations]


async def _finalize_known_ready_order(context: Context, bound: BoundAccount,
                                     candidates: Sequence[Order],
                                     csr_der: bytes) -> Optional[OrderState]:
    """
    The fast path of the usual v1 flow: the client validated each name
    through the gateway (so the stored authorizations of a stored order for
    exactly these names are all valid), and the order can be finalized at
    once — no re-reading of the order and its authorizations, the same
    upstream cost as a native v2 client.  Should the CA disagree
    (``orderNotReady``, an order it no longer knows), the careful path runs.

    ``candidates``: the account's stored orders for the certificate's
    names that are ``pending`` or ``ready``, newest first.

    :return: ``(order record, finalized upstream order)`` or ``None``.
    """
    for record in candidates:
        authorizations = await _stored_authorizations(context, record)
        if not authorizations or any(
            a.status != Status.VALID or context.has_expired(a.expires) for a in authorizations
        ):
            continue
        order = v2.Order(
            url=record.upstream_url, status=Status.READY, identifiers=record.identifiers,
            authorizations=tuple(a.upstream_url for a in authorizations),
            finalize=record.finalize_url, certificate=None, expires=record.expires,
        )
        try:
            return record, await _finalize(context, bound, record, order, csr_der)
        except UpstreamProblem as problem:
            if problem.code not in ("orderNotReady", "malformed") and problem.status != 404:
                raise
            log.info("new-cert: order {order} was not ready upstream ({code}); re-reading it",
                     order=record.id, code=problem.code)
            return None
    return None


async def _stored_authorizations(context: Context, record: Order) -> List[Authorization]:
    """
    The stored authorizations of an order (an empty list when one is
    missing: the order is then read from the CA).
    """
    if not record.authorization_urls:
        return await context.store.authorizations_for_order(record.id)
    found = []
    for url in record.authorization_urls:
        authorization = await context.store.authorization_by_upstream_url(record.account_id, url)
        if authorization is None:
            return []
        found.append(authorization)
    return found


async def _orders_spent(context: Context, bound: BoundAccount, final: Order,
                        names: Iterable[DNSName]) -> int:
    """
    The upstream orders a certificate cost: the order finalized, plus the
    single-name orders whose authorizations (still valid) proved the names
    the finalized order did not create or take over itself — the figure the
    order economy keeps at 1 for a single name.
    """
    orders = {final.id}
    own = {(a.identifier, a.wildcard) for a in await context.store.authorizations_for_order(final.id)}
    for name in names:
        if (name.value, name.wildcard) in own:
            continue
        for authorization in await context.store.find_authorizations(
            bound.record.id, name.value, name.wildcard, (Status.VALID,)
        ):
            if authorization.order_id is not None:
                orders.add(authorization.order_id)
                break
    return len(orders)


async def _complete_authorizations(context: Context, bound: BoundAccount, record: Order,
                                   authorizations: Sequence[v2.Authorization]) -> None:
    """
    Make every authorization of the order valid, or refuse.

    Without any configured responder the client gets Boulder's own answer,
    naming the names and the flag that would let the gateway revalidate.
    A name that is ``invalid``, ``deactivated`` or ``expired`` upstream can
    never become valid in this order; the order is dropped, so the client's
    retry starts a fresh one.
    """
    dead = [a for a in authorizations if a.status not in (Status.VALID, Status.PENDING)]
    if dead:
        await context.store.update_order(record.id, status=Status.INVALID)
        names = ", ".join(sorted(a.name for a in dead))
        raise Unauthorized(
            f"Error creating new cert :: authorizations for these names are not valid "
            f"({', '.join(sorted({a.status for a in dead}))}): {names}; request them again"
        )
    pending = [a for a in authorizations if a.status == Status.PENDING]
    if not context.validators.configured:
        names = ", ".join(sorted(a.name for a in pending))
        raise Unauthorized(
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{names}. The upstream CA requires them to be validated again; start the gateway "
            f"with {context.validators.missing_means(pending)} to let it revalidate them."
        )
    log.info("new-cert: revalidating {names} for order {order}",
             names=[a.name for a in pending], order=record.id)
    try:
        await revalidate(context.upstream, bound.upstream, pending, context.validators)
    except Refused:
        context.revalidations.count(Status.INVALID, len(pending))
        raise
    else:
        context.revalidations.count(Status.VALID, len(pending))
    finally:
        for final in await _fresh_states(context, bound, pending):
            await record_authorization(context, bound.record.id, record.id, final)



async def _fresh_states(context: Context, bound: BoundAccount,
                        authorizations: Sequence[v2.Authorization]) -> List[v2.Authorization]:
    """
    The CA's current view of ``authorizations``, to record after
    revalidation (whatever its outcome); one the CA does not answer for is
    left as the store has it, and said so.
    """
    fresh = []
    for authorization in authorizations:
        try:
            fresh.append(await context.upstream.get_authorization(bound.upstream, authorization.url))
        except UpstreamError as error:
            log.info("new-cert: could not read authorization {url} after revalidation: {error}",
                     url=authorization.url, error=str(error))
    return fresh


def _account_spki(bound: BoundAccount) -> bytes:
    return bound.key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def store_chain(context: Context, account_id: int, order_id: Optional[str],
                      chain: v2.CertificateChain, orphaned: bool = False,
                      profile: Optional[str] = None) -> Certificate:
    """
    Store a downloaded chain, its issuers (each once, with the issuer above
    it in this chain for its ``Link: rel="up"``) and its leaf in one
    transaction, with what the renewal inventory keeps of the leaf (its
    names, issuer key id, validity, and ``profile``).

    :param orphaned: the leaf is for a key no client waits for (see
        `Certificate.orphaned`): keep it, never hand it out.
    """
    issuer_ids = [issuer_id(der) for der in chain.issuers]
    facts = leaf_facts(chain.leaf)
    serial = facts.serial
    # Each issuer with the one above it in this chain, stored from the top
    # down so that a parent is stored before its child.  (An issuer listed
    # twice in a row is not its own parent.)
    links = list(zip(issuer_ids, chain.issuers, [*issuer_ids[1:], None]))
    operations = [
        *(Insert(Issuer(id=child, der=der, parent_id=None if parent == child else parent))
          for child, der, parent in reversed(links)),
        Insert(Certificate(
            id=context.store.new_id(),
            account_id=account_id,
            order_id=order_id,
            serial=serial,
            leaf_der=chain.leaf,
            issuer_ids=tuple(issuer_ids),
            upstream_url=chain.url,
            issued_at=context.now(),
            orphaned=orphaned,
            names=facts.names,
            authority_key_id=facts.authority_key_id,
            not_before=facts.not_before,
            not_after=facts.not_after,
            profile=profile,
        )),
    ]
    try:
        written = await context.store.write(operations)
    except StoreConflict:
        # Stored already (a retry after a lost answer), which the write's
        # check of the serial found in its transaction: the store is asked
        # once per chain, not first whether it holds it (issue 15).
        existing = await context.store.certificate_by_serial(serial)
        if existing is None:
            raise
        return existing
    certificate = written_as(Certificate, written[-1])
    log.info("issued certificate {certificate} serial {serial}{orphan}", certificate=certificate.id,
             serial=serial, orphan=" (orphan)" if orphaned else "")
    return certificate


async def read_certificate(context: Context, certificate_id: str) -> Certificate:
    """
    Unauthenticated ``GET /acme/cert/<id>``.
    """
    certificate = await context.store.certificate_by_id(certificate_id)
    if certificate is None:
        raise NotFound("Certificate not found")
    return certificate


read_certificate = flow(read_certificate)


async def read_issuer(context: Context, issuer_id: str) -> Tuple[Issuer, Optional[str]]:
    """
    Unauthenticated ``GET /acme/issuer-cert/<id>``.

    :return: ``(issuer, next issuer id or None)``: the issuer above it in
        the chain it was last stored with, for ``Link: rel="up"``.
    """
    issuer = await context.store.issuer_by_id(issuer_id)
    if issuer is None:
        raise NotFound("Issuer certificate not found")
    return issuer, issuer.parent_id


read_issuer = flow(read_issuer)
