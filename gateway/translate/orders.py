"""
The flows of the v2 face (`gateway.v2`) that v1 has no counterpart for:
orders the client names itself, their finalization, certificate chains,
and finding the key a ``kid`` stands for.

A draft-era v2 client already speaks orders, so an order is passed through:
``newOrder`` is one upstream order (or the account's pending one for the
same names, as Let's Encrypt answered), its authorizations are the stored
upstream ones (the same rows and flows v1 clients use), and ``finalize``
finalizes that very order with the client's CSR.  Everything upstream is
signed by the account's key (POST-as-GET for every read, whatever the
client sent), and a certificate is stored before it is served, as for v1.

Statuses are the CA's own: a draft-era client either never looks at an
order before finalizing it (acme-tiny 4.0, ``acme`` 0.27 poll the
authorizations) or looks only for ``valid`` and a ``certificate`` after
it, so ``ready`` is shown as it is, which RFC 8555 clients need.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.logger import Logger

from gateway.status import Status
from gateway.store import Certificate, Order
from gateway.translate.accounts import BoundAccount, bind, upstream_for
from gateway.translate.authorizations import create_order, record_authorization
from gateway.translate.context import Context
from gateway.translate.csr import cn_only_refusal
from gateway.translate.errors import CSRRejected, InternalFailure, NotFound, UpstreamRefused, flow
from gateway.translate.issuance import store_chain
from gateway.translate.requests import FinalizeOrder, NewOrder
from gateway.translate.terms import order_terms
from gateway.upstream import messages as v2
from gateway.upstream.errors import UpstreamProblem
from gateway.upstream.messages import UpstreamAccount

log = Logger()

#: Order statuses that may still change upstream.
_OPEN = (Status.PENDING, Status.READY, Status.PROCESSING)


@attrs.frozen
class OrderView:
    """
    An order as the v2 face shows it: the stored order (its status the
    CA's latest), the gateway ids of its authorizations in the CA's order,
    its certificate once stored, and the CA's reason when it failed.
    """

    order: Order
    authorization_ids: Tuple[str, ...]
    certificate_id: Optional[str] = None
    error: Optional[UpstreamRefused] = None


@attrs.frozen
class ChainView:
    """
    A stored certificate and its issuers (DER, leaf side first).
    """

    certificate: Certificate
    issuers: Tuple[bytes, ...] = attrs.field(repr=False)


@attrs.frozen
class KnownKey:
    """
    A public key that may have signed a request: its thumbprint and JWK.
    """

    thumbprint: str
    jwk: Mapping[str, Any]


async def keys_for_kid(context: Context, kid: str, account_id: Optional[int]) -> List[KnownKey]:
    """
    The keys that may have signed a v2 request with ``kid``, most likely
    first:

    - the gateway's own account URL (``account_id``): that account's key;
    - the URL the CA gave the account (Let's Encrypt's, kept in certbot's
      ``regr.json``, when the gateway runs against that CA): the key whose
      upstream account it is;
    - any other URL (the old CA's, when the gateway runs against another):
      every key the gateway holds, then every account it knows, for the
      caller to try against the signature — whichever verifies, the request
      proved possession of it.
    """
    accounts = await context.store.list_accounts()
    if account_id is not None:
        return [KnownKey(a.thumbprint, a.public_jwk) for a in accounts if a.id == account_id]
    matching = [KnownKey(a.thumbprint, a.public_jwk) for a in accounts
                if a.upstream_url == kid and a.status == Status.VALID]
    if matching:
        return matching
    keys = [KnownKey(loaded.key.thumbprint, loaded.key.public_jwk_json)
            for loaded in context.keys.store.loaded]
    held = {k.thumbprint for k in keys}
    return keys + [KnownKey(a.thumbprint, a.public_jwk) for a in accounts
                   if a.thumbprint not in held and a.status == Status.VALID]


# -- orders -----------------------------------------------------------------------------


async def _authorization_ids(context: Context, record: Order,
                             upstream_account: Optional[UpstreamAccount]) -> Tuple[str, ...]:
    """
    The gateway ids of an order's authorizations, in the CA's order; one
    the store lacks (a row a crash left partial) is read from the CA.
    """
    if not record.authorization_urls:
        return tuple(a.id for a in await context.store.authorizations_for_order(record.id))
    ids = []
    for url in record.authorization_urls:
        stored = await context.store.authorization_by_upstream_url(record.account_id, url)
        if stored is None and upstream_account is not None:
            upstream = await context.upstream.get_authorization(upstream_account, url)
            stored = await record_authorization(context, record.account_id, record.id, upstream)
        if stored is not None:
            ids.append(stored.id)
    return tuple(ids)


async def _certificate_id(context: Context, record: Order) -> Optional[str]:
    for certificate in await context.store.certificates_for_account(record.account_id):
        if certificate.order_id == record.id and not certificate.orphaned:
            return certificate.id
    return None


async def _has_orphan(context: Context, record: Order) -> bool:
    """
    Whether the order's certificate was kept as an orphan (issued for
    another key than the CSR's): it must never be fetched again and served.
    """
    return any(certificate.order_id == record.id and certificate.orphaned
               for certificate in await context.store.certificates_for_account(record.account_id))


async def _view(context: Context, record: Order, upstream_account: Optional[UpstreamAccount],
                error: Optional[UpstreamRefused] = None) -> OrderView:
    return OrderView(record, await _authorization_ids(context, record, upstream_account),
                     await _certificate_id(context, record), error)


async def _refreshed(context: Context, record: Order,
                     upstream_account: UpstreamAccount) -> Tuple[Order, Optional[v2.Order]]:
    """
    A stored order brought up to the CA's view; ``None`` for the upstream
    order when the CA no longer knows it (recorded as invalid).
    """
    try:
        upstream = await context.upstream.get_order(upstream_account, record.upstream_url)
    except UpstreamProblem as problem:
        if problem.status != 404:
            raise
        return await context.store.update_order(record.id, status=Status.INVALID), None
    if upstream.status != record.status or upstream.certificate != record.certificate_url:
        record = await context.store.update_order(record.id, status=upstream.status,
                                                  certificate_url=upstream.certificate)
    return record, upstream


def _lock_key(account_id: int, names: Tuple[str, ...]) -> str:
    # The key v1's new-cert locks too: one request at a time per name set.
    return f"order:{account_id}:{','.join(names)}"


async def new_order(context: Context, request: NewOrder) -> OrderView:
    """
    ``newOrder``: the account's pending or ready order for exactly these
    names that the CA still has (as Let's Encrypt answered a repeated
    request), else a new upstream order within the account's budget.
    """
    context.policy.check_names(request.names)
    bound = await bind(context, request.signer)
    names = request.spellings
    lock = context.locks.lock_for(_lock_key(bound.record.id, names))
    await lock.acquire()
    try:
        for candidate in await context.store.find_orders(bound.record.id, names,
                                                         (Status.PENDING, Status.READY)):
            if context.has_expired(candidate.expires):
                continue
            record, upstream = await _refreshed(context, candidate, bound.upstream)
            if upstream is not None and record.status in (Status.PENDING, Status.READY):
                return await _view(context, record, bound.upstream)
        terms = await order_terms(context, bound.thumbprint, request.signer.user_agent, names)
        record, _, authorizations = await create_order(context, bound, names, terms)
        log.info("newOrder: created order {order} for {names}", order=record.id, names=list(names))
        return OrderView(record, tuple(stored.id for stored, _, _ in authorizations))
    finally:
        lock.release()


new_order = flow(new_order)


async def read_order(context: Context, order_id: str) -> OrderView:
    """
    An order, read by a plain ``GET`` (draft-era clients) or POST-as-GET:
    from the CA while it may still change, signed by the owning account.
    A valid order whose certificate the gateway never stored (its
    download was interrupted) gets it now -- unless finalize kept it as an
    orphan, for another key than the CSR's.
    """
    record = await context.store.order_by_id(order_id)
    if record is None or not context.is_current(record):
        raise NotFound("No order for ID " + order_id)
    owner = await context.store.account_by_id(record.account_id)
    if owner is None or not context.keys.holds(owner.thumbprint):
        # The key left the store: show what the gateway last knew.
        return await _view(context, record, None)
    upstream_account = await upstream_for(context, owner)
    error = None
    if record.status in _OPEN:
        record, upstream = await _refreshed(context, record, upstream_account)
        if upstream is not None and upstream.error is not None:
            error = UpstreamRefused.of(upstream.error)
    view = await _view(context, record, upstream_account, error)
    if (record.status == Status.VALID and view.certificate_id is None and record.certificate_url
            and not await _has_orphan(context, record)):
        chain = await context.upstream.download_certificate(upstream_account,
                                                            record.certificate_url)
        stored = await store_chain(context, record.account_id, record.id, chain)
        view = attrs.evolve(view, certificate_id=stored.id)
    return view


read_order = flow(read_order)


async def finalize_order(context: Context, request: FinalizeOrder) -> OrderView:
    """
    ``finalize``: the order's names must be exactly the CSR's; the order is
    finalized upstream with the client's CSR as it signed it, and the
    certificate stored (for the CSR's key only) before the order is shown
    ``valid`` with it.
    """
    bound = await bind(context, request.signer)
    csr = request.csr
    record = await context.store.order_by_id(request.order_id)
    if record is None or not context.is_current(record) or record.account_id != bound.record.id:
        raise NotFound("No order for ID " + request.order_id)
    names = tuple(sorted(n.spelled for n in csr.names))
    if names != tuple(sorted(record.identifiers)):
        raise CSRRejected(
            f"Error finalizing order :: CSR does not specify the same identifiers as the order: "
            f"CSR {', '.join(names)}; order {', '.join(sorted(record.identifiers))}")
    if csr.public_key_der == _spki(bound.key.private_key.public_key()):
        raise CSRRejected("Error finalizing order :: certificate public key must be different "
                          "than account key")
    lock = context.locks.lock_for(_lock_key(bound.record.id, tuple(sorted(record.identifiers))))
    await lock.acquire()
    try:
        order = v2.Order(url=record.upstream_url, status=record.status,
                         identifiers=record.identifiers, authorizations=record.authorization_urls,
                         finalize=record.finalize_url, certificate=None, expires=record.expires)
        try:
            finalized = await context.upstream.finalize(bound.upstream, order, csr.der)
        except UpstreamProblem as problem:
            hint = cn_only_refusal(csr, problem.code, problem.detail)
            if hint is not None:
                raise hint
            raise
        record = await context.store.update_order(record.id, status=finalized.status,
                                                  certificate_url=finalized.certificate)
        error = UpstreamRefused.of(finalized.error) if finalized.error is not None else None
        if finalized.status == Status.VALID and finalized.certificate:
            await _store_certificate(context, bound, record, finalized.certificate, csr.public_key_der)
        return await _view(context, record, bound.upstream, error)
    finally:
        lock.release()


finalize_order = flow(finalize_order)


async def _store_certificate(context: Context, bound: BoundAccount, record: Order, url: str,
                             csr_key: bytes) -> Certificate:
    chain = await context.upstream.download_certificate(bound.upstream, url)
    if _spki(x509.load_der_x509_certificate(chain.leaf).public_key()) != csr_key:
        orphan = await store_chain(context, bound.record.id, record.id, chain, orphaned=True)
        log.warn("finalize: order {order} holds a certificate for another key; kept as orphan "
                 "{certificate}", order=record.id, certificate=orphan.id)
        raise InternalFailure("The upstream CA issued a certificate for another key than the CSR's")
    certificate = await store_chain(context, bound.record.id, record.id, chain)
    log.info("certificate {certificate} for {names} (v2 order {order})",
             certificate=certificate.id, names=list(record.identifiers), order=record.id)
    return certificate


def _spki(public_key: Any) -> bytes:
    spki: bytes = public_key.public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki


async def read_chain(context: Context, certificate_id: str) -> ChainView:
    """
    A certificate with its issuers, for the v2 face's PEM chain (public:
    plain ``GET`` or POST-as-GET alike).
    """
    certificate = await context.store.certificate_by_id(certificate_id)
    if certificate is None or certificate.orphaned:
        raise NotFound("Certificate not found")
    issuers = []
    for issuer_id in certificate.issuer_ids:
        issuer = await context.store.issuer_by_id(issuer_id)
        if issuer is None:
            break
        issuers.append(issuer.der)
    return ChainView(certificate, tuple(issuers))


read_chain = flow(read_chain)
