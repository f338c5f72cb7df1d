"""
v1 authorizations and challenges translated to v2 orders.

Let's Encrypt's v2 offers no ``newAuthz`` (no pre-authorization), so a v1
``new-authz`` becomes a single-name order whose one authorization is
returned to the client (MAPPING.md §3.5b, option A).  A later single-name
``new-cert`` finalizes that very order, so such a certificate costs one
order, as a native v2 client's would.

Before creating anything, an authorization the account already holds for the
name is returned, as Boulder v1 did — but only one that a later ``new-cert``
can still use (`usable_view`).  A *used* valid authorization is never
returned: one whose order was finalized (or failed, or is being finalized),
or that the CA may no longer honour (it lapses within `HONOUR_MARGIN_SECONDS`,
its order is gone, the CA lost its state).  Handing such an authorization to a
client made its ``new-cert`` need a fresh order whose authorization is
pending at a CA that reuses nothing, and fail.  Instead ``new-authz`` orders
anew; the CA answers with a valid authorization (it reused it, and it now
belongs to the new order) or a pending one (the client validates again), and
the single-name certificate still costs one order.

v1 reads are unauthenticated GETs; upstream they are POST-as-GET signed by
the owning account, which every stored row names.  Once a challenge is
answered, the gateway follows the authorization upstream itself
(`gateway.translate.following`), and client reads are answered from what
it learns: they cause no upstream request of their own while it does.

With a means to prove names upstream, a v1 authorization also offers
``tls-sni-01``, a challenge the gateway judges itself
(`gateway.translate.tlssni`): an answer is checked as Boulder's VA did,
then the name is proved upstream with the gateway's own means, in the
background (the client polls, as it did at Boulder).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from twisted.internet.defer import CancelledError

from twisted.logger import Logger

import attrs

from gateway.status import AUTHORIZATION_FINAL, Status
from gateway.store import (
    Account,
    AttemptStatus,
    Authorization,
    AuthorizationRead,
    Challenge,
    Insert,
    Operation,
    Order,
    OrderAttempt,
    Update,
)
from gateway.translate.accounts import BoundAccount, bind, bind_existing, upstream_for
from gateway.translate.context import Context, lapses_within, written_as
from gateway.translate.errors import (
    InternalFailure,
    Malformed,
    NotFound,
    Refused,
    Unauthorized,
    UpstreamRefused,
    flow,
)
from gateway.translate import tlssni
from gateway.translate.following import Answer, Follower, Read
from gateway.translate.policy import DNSName
from gateway.translate.requests import ABSENT, AnswerChallenge, DeactivateAuthz, NewAuthz
from gateway.translate.inventory import renewal_target
from gateway.translate.memory import NamedLock
from gateway.translate.revalidation import revalidate
from gateway.translate.terms import OrderTerms, order_terms
from gateway.translate.tlssni import ChallengeProblem, GatewayCheck
from gateway.upstream import messages as v2
from gateway.upstream.errors import UpstreamError, UpstreamProblem
from gateway.upstream.messages import UpstreamAccount

log = Logger()

#: Authorization statuses that never change again (RFC 8555 § 7.1.6:
#: ``invalid`` too): served from the store.
SETTLED = frozenset({Status.VALID, Status.INVALID, Status.DEACTIVATED, Status.REVOKED})


@attrs.frozen
class AuthorizationView:
    """
    An authorization with its challenges and, for failed ones, the CA's
    reason by challenge id — everything the v1 renderer needs.
    """

    authorization: Authorization
    challenges: Tuple[Challenge, ...]
    thumbprint: str
    errors: Dict[str, UpstreamRefused] = attrs.field(factory=dict)
    #: What the gateway's own check found, by challenge id (tls-sni-01).
    checks: Dict[str, GatewayCheck] = attrs.field(factory=dict)

    def challenge(self, challenge_id: str) -> Optional[Challenge]:
        for challenge in self.challenges:
            if challenge.id == challenge_id:
                return challenge
        return None


def _order_record(context: Context, account_id: int, order: v2.Order, order_id: str,
                  created_at: Optional[str] = None, terms: OrderTerms = OrderTerms()) -> Order:
    return Order(
        id=order_id,
        account_id=account_id,
        upstream_url=order.url,
        identifiers=order.identifiers,
        status=order.status,
        finalize_url=order.finalize,
        expires=order.expires,
        certificate_url=order.certificate,
        created_at=created_at or context.now(),
        authorization_urls=order.authorizations,
        planned_for=terms.planned_for,
        replaces=order.replaces or terms.replaces,
        profile=order.profile or terms.profile,
    )


def _challenge_inserts(context: Context, authorization_id: str, account_id: int,
                       challenges: Iterable[v2.Challenge]) -> List[Operation]:
    return [
        Insert(Challenge(
            id=context.store.new_id(),
            authorization_id=authorization_id,
            account_id=account_id,
            upstream_url=challenge.url,
            type=challenge.type,
            token=challenge.token,
            status=challenge.status,
        ))
        for challenge in challenges
        if challenge.token is not None
    ]


#: An authorization as the store keeps it, with the CA's view of it and its
#: challenges as stored (its view needs no read of them: issue 15).
StoredAuthorization = Tuple[Authorization, v2.Authorization, Tuple[Challenge, ...]]


def _authorization_inserts(context: Context, account_id: int, order_id: Optional[str],
                           upstream: v2.Authorization) -> List[Operation]:
    """
    An upstream authorization and its challenges as `Insert` operations,
    the authorization first: one logical step, written in one transaction.
    """
    now = context.now()
    authorization = Authorization(
        id=context.store.new_id(),
        account_id=account_id,
        order_id=order_id,
        upstream_url=upstream.url,
        identifier=upstream.identifier,
        wildcard=upstream.wildcard,
        status=upstream.status,
        expires=upstream.expires,
        created_at=now,
        updated_at=now,
    )
    operations: List[Operation] = [
        Insert(authorization),
        *_challenge_inserts(context, authorization.id, account_id, upstream.challenges)]
    if context.validators.offers_tls_sni01 and not upstream.wildcard:
        operations.append(Insert(tlssni.offered_challenge(
            context.store.new_id(), authorization.id, account_id)))
    return operations


async def create_order(context: Context, bound: BoundAccount, names: Sequence[str],
                       terms: OrderTerms = OrderTerms(),
                       ) -> Tuple[Order, v2.Order, List[StoredAuthorization]]:
    """
    Create an upstream order for ``names``, within the account's budget, and
    store it with its authorizations.

    The ``newOrder`` is recorded (an `OrderAttempt`) before it is sent, so
    that an order whose answer never arrives is still known (recovery finds
    it in the account's order list at the CA, and the budget counts it); the
    order is stored under the same id.  A refusal by the CA marks the
    attempt ``refused``; an upstream ``rateLimited`` also holds the account
    back until its ``Retry-After``.

    An order that ``replaces`` a certificate (ARI) and is refused for it —
    ``alreadyReplaced``, a certificate the CA does not know or will not
    let this account replace — is made again without ``replaces``: the
    renewal still happens, as a plain order.

    :param terms: ``replaces``, the profile, the certificate a renewal was
        planned for (`gateway.translate.terms`).
    :raises RateLimited: when the order would exceed the account's budget
        (nothing is sent).
    :return: ``(order record, upstream order, [(authorization record,
        upstream authorization), …])``, in the order's authorization order.
    """
    names = list(names)
    order_id = context.store.new_id()
    # The budget's check and the attempt's record are one transaction.
    await context.budget.reserve(OrderAttempt(
        id=order_id, account_id=bound.record.id, identifiers=names, created_at=context.now()))
    try:
        order = await context.upstream.new_order(bound.upstream, names, replaces=terms.replaces,
                                                 profile=terms.profile)
    except UpstreamProblem as problem:
        if problem.code == "rateLimited":
            context.budget.hold(bound.record.id, problem.retry_after)
        await context.store.write([Update(OrderAttempt, order_id, {"status": AttemptStatus.REFUSED})])
        if terms.replaces is not None and problem.code not in _NOT_ABOUT_REPLACES:
            log.info("newOrder replacing {cert_id} refused ({code}: {detail}); ordering without "
                     "replaces", cert_id=terms.replaces, code=problem.code, detail=problem.detail)
            return await create_order(context, bound, names, attrs.evolve(terms, replaces=None))
        raise
    record, authorizations = await store_new_order(
        context, bound.record.id, bound.upstream, order, order_id, terms=terms)
    if terms.replaces is not None:
        log.info("order {order} for {names} replaces {cert_id} (ARI)", order=order_id,
                 names=names, cert_id=terms.replaces)
    return record, order, authorizations


#: Refusals of a ``newOrder`` that a retry without ``replaces`` would get
#: too: the account's limits, and a CA asking the person to act.
_NOT_ABOUT_REPLACES = frozenset({"rateLimited", "userActionRequired", "accountDoesNotExist",
                                 "rejectedIdentifier", "unsupportedIdentifier", "invalidProfile"})


async def store_new_order(context: Context, account_id: int, upstream_account: UpstreamAccount,
                          order: v2.Order, order_id: str, created_at: Optional[str] = None,
                          terms: OrderTerms = OrderTerms(),
                          ) -> Tuple[Order, List[StoredAuthorization]]:
    """
    Store an order the CA just created (or recovery found) with its
    authorizations and their challenges, read from the CA first, in one
    transaction: a crash leaves all of it or none.  An authorization an
    earlier order already stored (the CA reused it) is refreshed instead.

    Every authorization of a ``ready`` order is valid (RFC 8555 §7.1.6), so
    one the gateway stores already — the CA reused it from an earlier
    order, typically the single-name order of a v1 ``new-authz`` — is known
    without asking: a 3-name ``new-cert`` would otherwise read its three
    authorizations again, reads a native client finalizing a ready order
    does not make.  Any other is read from the CA.

    What the store holds of the order's authorizations is read in one store
    call (`IStore.authorizations_by_upstream_urls`; two per authorization
    before issue 15's fifth round, and one more for each one's challenges
    when it was refreshed) — again after the CA was asked, for an
    authorization stored meanwhile.

    Should reading the authorizations fail, the order is stored alone, with
    their URLs, for recovery to complete, and the error raised.

    Each authorization comes with its challenges as written (or as stored
    and refreshed), so that the view a ``new-authz`` answers with reads
    none from the store (one store call per ``new-authz`` before issue
    15's sixth round).

    :return: ``(order record, [(authorization record, upstream
        authorization, its challenges), …])``.
    """
    record = _order_record(context, account_id, order, order_id, created_at, terms)
    stored: Dict[str, Tuple[Authorization, Tuple[Challenge, ...]]] = {}
    if order.status == Status.READY:
        stored = await context.store.authorizations_by_upstream_urls(
            account_id, order.authorizations)
    try:
        fetched = [known_valid(*stored[url]) if url in stored
                   else await context.upstream.get_authorization(upstream_account, url)
                   for url in order.authorizations]
    except Exception:
        # Whatever stopped it, the order exists at the CA: keep it, for
        # recovery to complete, and let the error through.
        await context.store.write([Insert(record)])
        raise
    if any(url not in stored for url in order.authorizations):
        # The CA was asked: read again, for one stored meanwhile.
        stored = await context.store.authorizations_by_upstream_urls(
            account_id, order.authorizations)
    operations: List[Operation] = [Insert(record)]
    pairs: List[Tuple[Union[slice, Tuple[Authorization, Tuple[Challenge, ...]]],
                      v2.Authorization]] = []
    for upstream in fetched:
        if upstream.url not in stored:
            inserts = _authorization_inserts(context, account_id, order_id, upstream)
            # Where its records will be among those written: the
            # authorization first, then its challenges.
            pairs.append((slice(len(operations), len(operations) + len(inserts)), upstream))
            operations += inserts
        else:
            existing, challenges = stored[upstream.url]
            if existing.order_id != order_id:
                # The CA reused an authorization of an earlier order: it now
                # belongs to this one, the order a new-cert will finalize
                # (new-authz judges an authorization by its order's fate).
                operations.append(Update(Authorization, existing.id, {"order_id": order_id}))
                existing = attrs.evolve(existing, order_id=order_id)
            pairs.append(((existing, challenges), upstream))
    written = await context.store.write(operations)
    authorizations: List[StoredAuthorization] = []
    for known, upstream in pairs:
        if isinstance(known, slice):
            row, *challenge_rows = written[known]
            authorizations.append((written_as(Authorization, row), upstream,
                                   tuple(written_as(Challenge, c) for c in challenge_rows)))
        else:
            refreshed, current = await _refreshed(context, known[0], upstream, known[1])
            authorizations.append((refreshed, upstream, current))
    return written_as(Order, written[0]), authorizations


def known_valid(record: Authorization, challenges: Iterable[Challenge]) -> v2.Authorization:
    """
    A stored authorization as the CA shows it once it is valid: its stored
    facts and its challenges (those the CA judges), status ``valid``.
    """
    return v2.Authorization(
        url=record.upstream_url, identifier_type="dns", identifier=record.identifier,
        status=Status.VALID, expires=record.expires, wildcard=record.wildcard,
        challenges=tuple(
            v2.Challenge(url=c.upstream_url, type=c.type, status=c.status, token=c.token)
            for c in challenges if not tlssni.judged_by_gateway(c)),
    )


async def record_authorization(
    context: Context, account_id: int, order_id: Optional[str], upstream: v2.Authorization
) -> Authorization:
    """
    Store (or refresh) an upstream authorization and its challenges.
    """
    existing = await context.store.authorization_by_upstream_url(account_id, upstream.url)
    if existing is None:
        written = await context.store.write(
            _authorization_inserts(context, account_id, order_id, upstream))
        return written_as(Authorization, written[0])
    return await _refresh_records(context, existing, upstream)


async def _refresh_records(
    context: Context, record: Authorization, upstream: v2.Authorization
) -> Authorization:
    """
    Bring a stored authorization and its challenges up to the CA's view, in
    one transaction; a challenge the CA lists that the store lacks is added
    (the repair of a row a crash left without its challenges).
    """
    return (await _refreshed(context, record, upstream))[0]


def _lagging(stored: Challenge, fresh: v2.Challenge) -> bool:
    """
    Whether the CA shows a challenge the gateway answered as ``pending``
    still: a CA may mark it ``processing`` only once its VA takes the job
    (Debian's Pebble 2.4 does, now and then, for a moment after the
    answer).  A challenge's status only moves forward, so the stored
    ``processing`` stands — and the authorization is followed until the CA
    decides it, not dropped as "nothing being validated".
    """
    return stored.status == Status.PROCESSING and fresh.status == Status.PENDING


async def _refreshed(
    context: Context, record: Authorization, upstream: v2.Authorization,
    stored: Optional[Sequence[Challenge]] = None,
) -> Tuple[Authorization, Tuple[Challenge, ...]]:
    """
    `_refresh_records`, and the challenges as stored now (so that the view
    needs no second read of them).

    ``stored``: ``record``'s challenges, read with it, not read again.
    """
    operations: List[Operation] = []
    changed = record.status != upstream.status or record.expires != upstream.expires
    if changed:
        operations.append(Update(Authorization, record.id, {
            "status": upstream.status, "expires": upstream.expires, "updated_at": context.now()}))
    by_url = {c.url: c for c in upstream.challenges}
    if stored is None:
        stored = await context.store.challenges_for_authorization(record.id)
    challenges: List[Challenge] = []
    for challenge in stored:
        fresh = by_url.get(challenge.upstream_url)
        changes: Dict[str, Any] = {}
        if fresh is not None and fresh.status != challenge.status and not _lagging(challenge, fresh):
            changes["status"] = fresh.status
        if fresh is not None and fresh.error is not None and challenge.error is None:
            # Kept: later reads of the settled authorization come from the
            # store, and still show why the CA refused it.
            changes["error"] = _stored_error(fresh.error)
        if changes:
            operations.append(Update(Challenge, challenge.id, changes))
            challenge = attrs.evolve(challenge, **changes)
        challenges.append(challenge)
    known = {c.upstream_url for c in stored}
    missing = _challenge_inserts(context, record.id, record.account_id,
                                 [c for c in upstream.challenges if c.url not in known])
    if missing and upstream.status == Status.PENDING:
        log.info("authorization {id} was stored without {count} of its challenges; "
                 "added them from the CA", id=record.id, count=len(missing))
        operations += missing
    else:
        missing = []
    if not operations:
        return record, tuple(challenges)
    written = await context.store.write(operations)
    challenges += [written_as(Challenge, r) for r in written[len(operations) - len(missing):]]
    return (written_as(Authorization, written[0]) if changed else record), tuple(challenges)


async def refresh_authorization(context: Context, record: Authorization,
                                upstream: v2.Authorization) -> Authorization:
    """
    Bring a stored authorization (and its challenges) up to ``upstream``,
    the CA's current view of it.
    """
    return await _refresh_records(context, record, upstream)


async def _view(context: Context, record: Authorization, thumbprint: str,
                upstream: Optional[v2.Authorization] = None,
                challenges: Optional[Tuple[Challenge, ...]] = None) -> AuthorizationView:
    if challenges is None:
        challenges = tuple(await context.store.challenges_for_authorization(record.id))
    return _view_of(record, _shown(context, challenges), thumbprint, upstream)


def _shown(context: Context, challenges: Iterable[Challenge]) -> Tuple[Challenge, ...]:
    """
    The challenges a client is shown: tls-sni-01 was offered while the
    gateway had a means, and is not without one.
    """
    if context.validators.offers_tls_sni01:
        return tuple(challenges)
    return tuple(c for c in challenges if not tlssni.judged_by_gateway(c))


def _view_of(record: Authorization, challenges: Tuple[Challenge, ...], thumbprint: str,
             upstream: Optional[v2.Authorization] = None) -> AuthorizationView:
    errors: Dict[str, UpstreamRefused] = {}
    if upstream is not None:
        by_url = {c.url: c for c in upstream.challenges}
        for challenge in challenges:
            fresh = by_url.get(challenge.upstream_url)
            if fresh is not None and fresh.error is not None:
                errors[challenge.id] = UpstreamRefused.of(fresh.error)
    for challenge in challenges:
        if (challenge.id not in errors and challenge.error is not None
                and not tlssni.judged_by_gateway(challenge)):
            errors[challenge.id] = _refusal_of(challenge.error)
    checks = {c.id: checked for c in challenges if (checked := tlssni.outcome(c)) is not None}
    if _failed_by_gateway(challenges) and record.status != Status.INVALID:
        # A read that raced the failed check may have stored the CA's
        # status (deactivated) over it: the gateway's verdict stands.
        record = attrs.evolve(record, status=Status.INVALID)
    return AuthorizationView(record, challenges, thumbprint, errors, checks)


def _stored_error(problem: UpstreamProblem) -> str:
    """
    The CA's problem of a challenge, as its ``error`` column keeps it:
    its subproblems too, since a settled authorization is shown from the
    store, and they carry the per-name reasons (and, for a ``compound``
    problem, the v1 type the client gets).
    """
    document: Dict[str, Any] = {"type": problem.type, "detail": problem.detail,
                                "status": problem.status}
    if problem.subproblems:
        document["subproblems"] = [
            {"type": sub.type, "detail": sub.detail,
             **({"identifier": dict(sub.identifier)} if sub.identifier is not None else {})}
            for sub in problem.subproblems]
    return json.dumps(document, separators=(",", ":"))


def _refusal_of(stored: str) -> UpstreamRefused:
    """
    A challenge's stored ``error`` column as the CA's refusal, read back by
    the parser that read the CA's document (`UpstreamProblem.from_document`),
    its subproblems included (none in a row stored before they were kept).
    A column that is not a JSON object with a numeric status is shown as
    the CA's unnamed problem.
    """
    try:
        document = json.loads(stored)
        status = int(document["status"])
    except (ValueError, KeyError, TypeError):
        return UpstreamRefused("about:blank", "The CA refused this challenge", 400)
    return UpstreamRefused.of(UpstreamProblem.from_document(document, status))


def _failed_by_gateway(challenges: Iterable[Challenge]) -> bool:
    """
    Whether the gateway's own check of a challenge made the authorization
    invalid: that is final, whatever the CA still shows (the gateway
    deactivated it there).
    """
    return any(c.status == Status.INVALID and tlssni.judged_by_gateway(c) for c in challenges)


async def new_authorization(context: Context, request: NewAuthz) -> AuthorizationView:
    """
    ``new-authz``: for a name of a certificate the account holds, that
    certificate's planned renewal order's authorization (`_planned_view`);
    else the account's authorization for the name that a ``new-cert`` can
    still use, else a new single-name order upstream.
    """
    context.policy.check_names([request.name])
    bound = await bind(context, request.signer)
    name = request.name
    lock = context.locks.lock_for(f"authz:{bound.record.id}:{name.spelled}")
    await lock.acquire()
    try:
        planned, candidates = await _planned_view(context, bound, name,
                                                  request.signer.user_agent)
        if planned is not None:
            return planned
        if candidates is None:
            candidates = tuple(await context.store.find_authorizations(
                bound.record.id, name.value, name.wildcard, _REUSABLE))
        for candidate in candidates:
            view = await usable_view(context, bound, candidate)
            if view is not None:
                return view
        terms = await order_terms(context, bound.thumbprint, request.signer.user_agent,
                                  [name.spelled])
        _, _, authorizations = await create_order(context, bound, [name.spelled], terms)
        return await _view_for(context, bound, authorizations, name)
    finally:
        lock.release()


new_authorization = flow(new_authorization)


async def _view_for(context: Context, bound: BoundAccount,
                    authorizations: Sequence[StoredAuthorization],
                    name: DNSName) -> AuthorizationView:
    """
    The view of a new order's authorization for ``name``.
    """
    last = None
    for stored in authorizations:
        upstream = stored[1]
        if upstream.identifier == name.value and upstream.wildcard == name.wildcard:
            last = stored
    if last is None:
        raise InternalFailure("The upstream order holds no authorization for the name")
    record, upstream, challenges = last
    return await _view(context, record, bound.thumbprint, upstream, challenges)


async def _planned_view(context: Context, bound: BoundAccount, name: DNSName, user_agent: str,
                        ) -> Tuple[Optional[AuthorizationView], Optional[Sequence[Authorization]]]:
    """
    Renewal planning.  A ``new-authz`` for a name of a certificate the
    account holds starts (or continues) that certificate's renewal: the
    gateway orders the certificate's whole name set at once — one order,
    which carries ARI ``replaces`` — and answers each ``new-authz`` of the
    renewal with that order's authorization for the name.  The client
    validates every name of the order it will finalize, so the renewal
    needs neither authorization reuse nor a means of the gateway's, and
    costs one order however many names it has.

    A planned order still open (pending or ready) that holds the name
    answers first, when its authorization for the name is still usable
    (`usable_view`: never a used one); otherwise a certificate of the
    account holding the name (`gateway.translate.inventory.
    renewal_target`) gets a new planned order.  `None` when no
    certificate holds the name: the usual single-name path.

    One plan at a time per account (a lock), so that two ``new-authz`` of
    one renewal arriving together make one order.

    What it reads, it reads in one store call (`IStore.name_reads`) with the
    account's authorizations for the name, which it hands back with a view
    of `None` for ``new-authz`` to try — unless it asked the CA about one
    of them, which may have changed them (`None` then: read them again).
    """
    if not context.policy.plan_renewals:
        return None, None
    lock = context.locks.lock_for(f"plan:{bound.record.id}")
    await lock.acquire()
    try:
        reads = await context.store.name_reads(
            bound.record.id, name.value, name.spelled, name.wildcard, _REUSABLE,
            (Status.PENDING, Status.READY))
        candidates: Optional[Sequence[Authorization]] = reads.candidates
        for order, for_name in reads.planned:
            if context.has_expired(order.expires) or name.spelled not in order.identifiers:
                continue
            for candidate in for_name:
                if _fresh_in_plan(context, candidate, order):
                    return await _view(context, candidate, bound.thumbprint), None
                candidates = None
                view = await usable_view(context, bound, candidate)
                if view is not None:
                    return view, None
        target = renewal_target(reads.held, bound.record.id, name.spelled,
                                context.clock.seconds())
        if target is None:
            return None, candidates
        terms = await order_terms(context, bound.thumbprint, user_agent, target.names,
                                  renewing=target, planned=True)
        order, _, authorizations = await create_order(context, bound, target.names, terms)
        log.info("new-authz for {name}: renewal of certificate {certificate} ({names}) planned "
                 "as order {order}", name=name.spelled, certificate=target.id,
                 names=list(target.names), order=order.id)
        return await _view_for(context, bound, authorizations, name), None
    finally:
        lock.release()


def _fresh_in_plan(context: Context, candidate: Authorization, order: Order) -> bool:
    """
    Whether a valid authorization of an open planned order can be answered
    from the store: the gateway made the order for this renewal, nothing
    finalized it (its stored status is open), and neither it nor the
    authorization lapses soon.  Asking the CA whether the order is still
    ready at each ``new-authz`` of the renewal would cost a request per name
    more than a native client spends; should the CA disagree at
    ``new-cert``, the finalize fast path falls back to reading the order.
    """
    return (candidate.status == Status.VALID and order.status in _FINALIZABLE
            and not lapses_within(context.clock, candidate.expires, HONOUR_MARGIN_SECONDS)
            and not lapses_within(context.clock, order.expires, HONOUR_MARGIN_SECONDS))


#: The statuses of an authorization ``new-authz`` may hand out again.
_REUSABLE = (Status.PENDING, Status.VALID)


#: A valid authorization (or its order) that lapses sooner than this is not
#: handed out again: the client's new-cert could come too late for it.
HONOUR_MARGIN_SECONDS = 300

#: Statuses of an order that can still be finalized.
_FINALIZABLE = (Status.PENDING, Status.READY)


async def usable_view(context: Context, bound: BoundAccount,
                      candidate: Authorization) -> Optional[AuthorizationView]:
    """
    The view of a stored pending or valid authorization that ``new-authz``
    may return, or ``None`` when it is used or the CA may no longer honour
    it.

    - pending: its order can still be finalized, and the CA still has it
      pending (read upstream, as before);
    - valid: its order was not finalized, neither authorization nor order
      lapses within `HONOUR_MARGIN_SECONDS`, and the CA confirms the order
      ``ready`` (one POST-as-GET; an order the CA no longer knows, after it
      lost its state, is remembered as invalid) — or, for an order of
      several names, still ``pending`` for the others.
    """
    if context.has_expired(candidate.expires):
        return None
    order = None
    if candidate.order_id is not None:
        order = await context.store.order_by_id(candidate.order_id)
        if order is not None and (
            order.status not in _FINALIZABLE or context.has_expired(order.expires)
        ):
            return None
    if candidate.status == Status.VALID:
        if order is None:
            return None
        if (lapses_within(context.clock, candidate.expires, HONOUR_MARGIN_SECONDS)
                or lapses_within(context.clock, order.expires, HONOUR_MARGIN_SECONDS)):
            return None
        return await _confirmed_ready(context, bound, candidate, order)
    try:
        view = await read_view(context, candidate, confirm=True)
    except NotFound:
        # The CA no longer knows it (expired early, or a CA that lost its
        # state; the read recorded it as expired): order anew.
        return None
    if view.authorization.status == Status.PENDING:
        return view
    if view.authorization.status == Status.VALID:
        # Validated upstream since the store last looked: judge it as valid.
        return await usable_view(context, bound, view.authorization)
    return None


async def _confirmed_ready(context: Context, bound: BoundAccount, candidate: Authorization,
                           order: Order) -> Optional[AuthorizationView]:
    """
    Ask the CA whether the order of a valid authorization is still ready to
    be finalized; record what it says.
    """
    try:
        upstream = await context.upstream.get_order(bound.upstream, order.upstream_url)
    except UpstreamProblem as problem:
        if problem.status != 404:
            raise
        await context.store.update_order(order.id, status=Status.INVALID)
        await context.store.update_authorization(
            candidate.id, status=Status.EXPIRED, updated_at=context.now())
        log.info("new-authz: the CA no longer knows order {order}; ordering anew", order=order.id)
        return None
    if upstream.status != order.status:
        await context.store.update_order(order.id, status=upstream.status,
                                         certificate_url=upstream.certificate)
    # A single-name order that is not ready has lost this authorization; an
    # order for several names may still wait for the others.
    if upstream.status != Status.READY and not (upstream.status == Status.PENDING
                                                and len(order.identifiers) > 1):
        return None
    return await _view(context, candidate, bound.thumbprint)


async def _owner(context: Context, record: Authorization) -> Account:
    account = await context.store.account_by_id(record.account_id)
    if account is None:
        raise NotFound("No such authorization")
    return account


def _following_key(record: Authorization) -> str:
    return f"authz:{record.id}"


def _validating(view: AuthorizationView) -> bool:
    """
    Whether the CA is validating the authorization (RFC 8555 §7.1.6: a
    challenge answered is ``processing`` until the CA decides).

    A pending authorization with a challenge already ``valid`` or
    ``invalid`` counts too: it is a read torn between the CA's two writes
    (Pebble copies the authorization's status, then reads each challenge's,
    while its VA sets them one after the other), and the next read shows
    the authorization decided.  A follower that stopped there would leave
    the client polling ``pending`` for good.
    """
    return (view.authorization.status == Status.PENDING
            and any(c.status != Status.PENDING for c in view.challenges))


def _settled(view: AuthorizationView) -> bool:
    """
    When a follower stops: the authorization is final, or nothing is being
    validated (the CA has no outcome to wait for).
    """
    return view.authorization.status in AUTHORIZATION_FINAL or not _validating(view)


def _upstream_read(context: Context, record: Authorization,
                   account: Account) -> Read[AuthorizationView]:
    """
    One read of the authorization at the CA, stored before it is answered
    (so that no later client read is answered with anything older).  An
    authorization the CA no longer knows is recorded as expired.
    """
    current = [record]

    async def read() -> Answer[AuthorizationView]:
        upstream_account = await upstream_for(context, account)
        try:
            upstream, retry_after = await context.upstream.read_authorization(
                upstream_account, current[0].upstream_url)
        except UpstreamProblem as problem:
            if problem.status == 404:
                await context.store.update_authorization(
                    current[0].id, status=Status.EXPIRED, updated_at=context.now())
                raise NotFound("Expired authorization")
            raise
        stored, challenges = await _refreshed(context, current[0], upstream)
        current[0] = stored
        return Answer(_view_of(stored, _shown(context, challenges), account.thumbprint, upstream),
                      retry_after)

    return read


def follow_authorization(context: Context, record: Authorization, account: Account,
                         first_delay: Optional[float] = None) -> "Follower[AuthorizationView]":
    """
    Follow the authorization at the CA while it is being validated (or
    join the follower it has): meanwhile client reads cost the CA nothing.
    """
    return context.following.follow(_following_key(record),
                                    _upstream_read(context, record, account), _settled,
                                    first_delay)


#: How long a client read of a pending authorization that nothing is
#: validating is answered from the store alone, after this process's last
#: upstream read of it.
PENDING_RECHECK_SECONDS = 5.0


async def read_view(context: Context, record: Authorization, confirm: bool = False,
                    stored: Optional[AuthorizationRead] = None) -> AuthorizationView:
    """
    The current state of a stored authorization, never staler than the
    newest upstream answer, and costing the CA as little as that allows:

    - settled, ``invalid`` included (or its key left the store): the store's;
    - being validated: the follower's newest answer, or its read in flight
      (a client read brings its first read forward); after a restart, a
      read of an authorization stored as being validated follows it again;
    - pending, nothing being validated: the store's, which is the CA's
      last word — nothing changes at the CA until a challenge is answered
      (through the gateway, which then follows it) — but asked of the CA
      again when this process has not read it for `PENDING_RECHECK_SECONDS`
      (a challenge answered by a process killed before it stored the
      answer, or by another replica, would leave it pending for good), or when ``confirm``
      asks the CA whether it still has it (``new-authz`` does, before it
      hands the authorization out again), or the row lacks its challenges
      (a crash left it partial): then one upstream read, shared with the
      concurrent reads of the same authorization.

    ``stored``: ``record``'s owner and challenges, read with it (one store
    call, `IStore.authorization_read`), not read again.
    """
    account = stored.owner if stored is not None else None
    if account is None:
        account = await _owner(context, record)
    challenges = stored.challenges if stored is not None else None
    if record.status in SETTLED or not context.keys.holds(account.thumbprint):
        return await _view(context, record, account.thumbprint, challenges=challenges)
    if context.validators.offers_tls_sni01:
        view = await _view(context, record, account.thumbprint, challenges=challenges)
        # The gateway's own check failed it: final, whatever the CA shows.
        if _failed_by_gateway(view.challenges):
            return view
    follower = context.following.get(_following_key(record))
    if follower is None and not confirm:
        view = await _view(context, record, account.thumbprint, challenges=challenges)
        if (view.challenges and not _validating(view)
                and context.following.read_within(_following_key(record),
                                                  PENDING_RECHECK_SECONDS)):
            return view
        if view.challenges and _validating(view):
            follower = follow_authorization(context, record, account)
    if follower is not None:
        followed: AuthorizationView = await follower.newest()
        return followed
    view = await context.following.read(_following_key(record),
                                        _upstream_read(context, record, account))
    if _validating(view):
        follow_authorization(context, view.authorization, account)
    return view


async def read_authorization(context: Context, authorization_id: str) -> AuthorizationView:
    """
    Unauthenticated ``GET /acme/authz/<id>``.
    """
    stored = await context.store.authorization_read(authorization_id)
    if stored is None:
        raise NotFound("Unable to find authorization")
    record = stored.authorization
    if record.status == Status.EXPIRED or context.has_expired(record.expires):
        raise NotFound("Expired authorization")
    if not context.is_current(record):
        raise NotFound(_OF_ANOTHER_CA)
    view = await read_view(context, record, stored=stored)
    if view.authorization.status == Status.EXPIRED:
        raise NotFound("Expired authorization")
    return view


read_authorization = flow(read_authorization)


async def read_challenge(context: Context, authorization_id: str,
                         challenge_id: str) -> Tuple[AuthorizationView, Challenge]:
    """
    Unauthenticated ``GET /acme/challenge/<authz>/<id>``.

    :return: ``(view, challenge)``.
    """
    view = await read_authorization(context, authorization_id)
    challenge = view.challenge(challenge_id)
    if challenge is None:
        raise NotFound("No such challenge")
    return view, challenge


read_challenge = flow(read_challenge)


#: What an authorization made at a CA the gateway no longer uses is, to a
#: v1 client: gone (its names are authorized anew at the current CA).
_OF_ANOTHER_CA = "Expired authorization (it was made at a previous upstream CA)"

#: Boulder's refusals of another account's challenge and authorization.
_NOT_YOUR_CHALLENGE = "User registration ID doesn't match registration ID in authorization"
_NOT_YOUR_AUTHORIZATION = "Registration ID doesn't match ID for authorization"


async def _owned(context: Context, bound: BoundAccount, authorization_id: str,
                 refusal: str) -> Authorization:
    return _checked_owner(context, bound, await context.store.authorization_by_id(authorization_id),
                          refusal)


async def _owned_with_challenges(context: Context, bound: BoundAccount, authorization_id: str,
                                 ) -> Tuple[Authorization, Tuple[Challenge, ...]]:
    """
    `_owned`, with the authorization's challenges, in one store call
    (`IStore.authorization_read`; a challenge POST made two before issue
    15's fifth round).
    """
    stored = await context.store.authorization_read(authorization_id)
    record = _checked_owner(context, bound, None if stored is None else stored.authorization,
                            _NOT_YOUR_CHALLENGE)
    assert stored is not None
    return record, stored.challenges


def _checked_owner(context: Context, bound: BoundAccount, record: Optional[Authorization],
                   refusal: str) -> Authorization:
    """
    ``record``, when it exists, is ``bound``'s and of the current CA.
    """
    if record is None:
        raise NotFound("Unable to find authorization")
    if record.account_id != bound.record.id:
        raise Unauthorized(refusal)
    if not context.is_current(record):
        raise NotFound(_OF_ANOTHER_CA)
    return record


async def answer_challenge(context: Context,
                           request: AnswerChallenge) -> Tuple[AuthorizationView, Challenge]:
    """
    v1 challenge POST: check a supplied ``keyAuthorization`` against the
    account key (as Boulder did until 2018), then answer upstream with ``{}``.

    :return: ``(view, challenge)``.
    """
    bound = await bind_existing(context, request.signer)
    record, challenges = await _owned_with_challenges(context, bound, request.authorization_id)
    challenge = next((c for c in challenges if c.id == request.challenge_id), None)
    if challenge is None:
        raise NotFound("No such challenge")
    if request.type is not ABSENT and request.type != challenge.type:
        raise Malformed(
            f"Challenge type {request.type!r} does not match the challenge ({challenge.type})"
        )
    if request.key_authorization is not ABSENT:
        if request.key_authorization != f"{challenge.token}.{bound.thumbprint}":
            raise Malformed("The key authorization provided does not match the expected value: provided key authorization was incorrect")
    if context.has_expired(record.expires):
        raise NotFound("Expired authorization")
    if tlssni.judged_by_gateway(challenge):
        if not context.validators.offers_tls_sni01:
            raise NotFound("No such challenge")
        if record.status == Status.PENDING and challenge.status in (Status.PENDING,
                                                                    Status.PROCESSING):
            await _start_tls_sni01(context, bound, record, challenge)
        # The gateway's own check runs in the background (the client polls,
        # as at Boulder): what the store says now.
        current = await context.store.authorization_by_id(record.id)
        view = await _view(context, current or record, bound.thumbprint)
    elif bound.managed and record.status == Status.PENDING:
        await _validate_for_managed_account(context, bound, record)
        # Validated (or not) already: read the outcome.
        view = await context.following.read(_following_key(record),
                                            _upstream_read(context, record, bound.record))
    elif challenge.status == Status.PENDING and record.status == Status.PENDING:
        view = await _answer(context, bound, record, challenges, challenge)
    else:
        # Answered before (a client's retry), or settled.
        view = await read_view(context, record)
    answered_challenge = view.challenge(request.challenge_id)
    if answered_challenge is None:
        raise NotFound("No such challenge")
    return view, answered_challenge


answer_challenge = flow(answer_challenge)


async def _answer(context: Context, bound: BoundAccount, record: Authorization,
                  challenges: Sequence[Challenge], challenge: Challenge) -> AuthorizationView:
    """
    Answer ``challenge`` upstream and follow its authorization from now on.

    :return: the view to answer the client with: the stored authorization
        with the challenge as the CA's answer left it (``processing``,
        shown as ``pending``) — no upstream read; the client's next read
        brings the follower's first one forward — or, when the CA decided
        at once, the authorization as the CA has it now.
    """
    withdraw = await _publish_for_client(context, bound, record, challenge)
    try:
        try:
            answered = await context.upstream.answer_challenge(bound.upstream,
                                                               challenge.upstream_url)
        except UpstreamProblem as problem:
            # A challenge answered already (a client's retry) is refused as
            # malformed; anything else, or a challenge still pending, is a
            # real refusal.
            if problem.code != "malformed":
                raise
            answered = await context.upstream.get_challenge(bound.upstream, challenge.upstream_url)
            if answered.status == Status.PENDING:
                raise
    except BaseException:
        if withdraw is not None:
            await withdraw()
        raise
    # Answered: ``processing`` from now on, even where the CA's answer still
    # says ``pending`` (`_lagging`).
    answered_status = Status.PROCESSING if answered.status == Status.PENDING else answered.status
    await context.store.update_challenge(challenge.id, status=answered_status)
    follower = follow_authorization(context, record, bound.record)
    if withdraw is not None:
        context.background.start(_withdraw_when_settled(follower, withdraw))
    if answered.status in (Status.VALID, Status.INVALID):
        view: AuthorizationView = await follower.newest()
        return view
    updated = tuple(attrs.evolve(c, status=answered_status) if c.id == challenge.id else c
                    for c in challenges)
    return _view_of(record, _shown(context, updated), bound.thumbprint)


Withdraw = Callable[[], Awaitable[None]]


async def _publish_for_client(context: Context, bound: BoundAccount, record: Authorization,
                              challenge: Challenge) -> Optional[Withdraw]:
    """
    With the built-in HTTP-01 responder configured, port 80's challenge path
    is routed to the gateway, so the file a client writes into its own
    webroot is no longer what the CA reads.  The gateway serves the client's
    key authorization itself (it holds the client's key, so it is the same
    value) until the authorization settles.

    :return: what withdraws it again, or `None` when nothing was published.
    """
    responder = context.validators.responders.get("http-01")
    if responder is None or challenge.type != "http-01" or bound.managed:
        return None
    key_authorization = bound.key.key_authorization(challenge.token)
    await responder.publish(record.identifier, challenge.token, key_authorization)

    async def withdraw() -> None:
        assert responder is not None
        await responder.withdraw(record.identifier, challenge.token, key_authorization)

    return withdraw


async def _withdraw_when_settled(follower: "Follower[AuthorizationView]",
                                 withdraw: Withdraw) -> None:
    """
    Withdraw a published key authorization once the follower of its
    authorization ends: settled, or given up.
    """
    try:
        await follower.settled()
    except Exception:
        pass  # the follower said why; the key authorization goes all the same
    finally:
        await withdraw()


async def _validate_for_managed_account(context: Context, bound: BoundAccount,
                                        record: Authorization) -> None:
    """
    In managed mode the CA checks key authorizations against the gateway's
    key, which the client's provisioning cannot match: whatever challenge
    the client answers, the gateway validates the name itself.  A failure
    shows in the authorization (``invalid`` with the CA's error), as a v1
    validation failure would.
    """
    upstream = await context.upstream.get_authorization(bound.upstream, record.upstream_url)
    if upstream.status != Status.PENDING:
        return
    try:
        await revalidate(context.upstream, bound.upstream, [upstream], context.validators)
    except Refused as refusal:
        context.revalidations.count(Status.INVALID)
        log.info("managed validation of {name} failed: {detail}", name=upstream.name,
                 detail=refusal.detail)
    else:
        context.revalidations.count(Status.VALID)


async def _start_tls_sni01(context: Context, bound: BoundAccount, record: Authorization,
                           challenge: Challenge) -> None:
    """
    Check a client's tls-sni-01 answer and prove the name upstream, in the
    background; the challenge shows ``processing`` (v1: ``pending``) until
    then.  A check already running is left to finish; one a restart or a
    shutdown interrupted (the challenge still ``processing``) starts again.
    """
    lock = context.locks.lock_for(f"tls-sni-01:{challenge.id}")
    if lock.locked:
        return
    await lock.acquire()
    try:
        if challenge.status != Status.PROCESSING:
            await context.store.update_challenge(challenge.id, status=Status.PROCESSING)
    except BaseException:
        lock.release()
        raise
    context.background.start(_check_and_prove(context, bound, record, challenge, lock))


async def _check_and_prove(context: Context, bound: BoundAccount, record: Authorization,
                           challenge: Challenge, lock: NamedLock) -> None:
    """
    The client's answer first (the name's TLS server presents the
    certificate for the key authorization's SNI name), then the gateway's
    own proof upstream: valid only when both hold.
    """
    checker = context.validators.tls_sni01
    try:
        if checker is None:
            raise InternalFailure("tls-sni-01 is no longer offered")
        checked = await tlssni.check(checker, context.clock, record.identifier,
                                     f"{challenge.token}.{bound.thumbprint}")
        if checked.problem is not None:
            log.info("tls-sni-01 check of {name} failed: {detail}", name=record.identifier,
                     detail=checked.problem.detail)
            await _judged_invalid(context, bound, record, challenge, checked, deactivate=True)
            return
        upstream = await context.upstream.get_authorization(bound.upstream, record.upstream_url)
        if upstream.status == Status.PENDING:
            try:
                (upstream,) = await revalidate(context.upstream, bound.upstream, [upstream],
                                               context.validators)
            except Refused as refusal:
                context.revalidations.count(Status.INVALID)
                await _judged_invalid(context, bound, record, challenge, GatewayCheck(
                    ChallengeProblem("unauthorized", f"The tls-sni-01 answer for {record.identifier} "
                                     f"was right, but the gateway could not prove the name to the "
                                     f"upstream CA: {refusal.detail}", 403), checked.record),
                    deactivate=False)
                return
            context.revalidations.count(Status.VALID)
        if upstream.status != Status.VALID:
            await _judged_invalid(context, bound, record, challenge, GatewayCheck(
                ChallengeProblem("unauthorized", f"The authorization is {upstream.status} at the "
                                 f"upstream CA", 403), checked.record), deactivate=False)
            return
        await context.store.write([Update(Challenge, challenge.id, {
            "status": Status.VALID, **tlssni.stored_outcome(checked)})])
        await _refresh_records(context, record, upstream)
        log.info("tls-sni-01 answer for {name} checked and the name proved upstream",
                 name=record.identifier)
    except CancelledError:
        raise  # shutdown: the challenge stays processing, and a retry checks again
    except (Refused, UpstreamError) as error:
        await _judged_invalid(context, bound, record, challenge, GatewayCheck(ChallengeProblem(
            "serverInternal", f"The gateway could not complete the tls-sni-01 validation: {error}",
            500)), deactivate=False)
    finally:
        lock.release()


async def _judged_invalid(context: Context, bound: BoundAccount, record: Authorization,
                          challenge: Challenge, checked: GatewayCheck, deactivate: bool) -> None:
    """
    Record a failed tls-sni-01 validation as Boulder showed one (the
    authorization and the challenge invalid, with the problem and the
    validation record), and free the CA's pending authorization, which
    would count against the account's pending limit until it expired.
    """
    await context.store.write([
        Update(Challenge, challenge.id, {"status": Status.INVALID, **tlssni.stored_outcome(checked)}),
        Update(Authorization, record.id, {"status": Status.INVALID, "updated_at": context.now()}),
    ])
    if deactivate:
        try:
            await context.upstream.deactivate_authorization(bound.upstream, record.upstream_url)
        except UpstreamError as error:
            log.info("could not deactivate {url} upstream: {error}", url=record.upstream_url,
                     error=str(error))


async def deactivate_authorization(context: Context, request: DeactivateAuthz) -> AuthorizationView:
    """
    v1 authorization POST ``{"status": "deactivated"}``.  Ownership is
    checked first, as Boulder did: another account learns nothing from the
    payload's fate.
    """
    bound = await bind_existing(context, request.signer)
    record = await _owned(context, bound, request.authorization_id, _NOT_YOUR_AUTHORIZATION)
    if not request.deactivate:
        raise Malformed("Invalid status value")
    upstream = await context.upstream.deactivate_authorization(bound.upstream, record.upstream_url)
    record = await _refresh_records(context, record, upstream)
    return await _view(context, record, bound.thumbprint, upstream)


deactivate_authorization = flow(deactivate_authorization)
