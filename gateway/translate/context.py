"""
What every translated flow needs: the upstream client, the store, the key
store, a clock and the operator's policy, plus the binding of a verified v1
signer to its upstream account.

A migrating client never calls ``new-reg`` again: its account was made at
the old v1 CA, so its first request may be ``new-authz`` or ``new-cert``.
`Context.bind_account` therefore finds (or, when the CA has never seen the
key, creates) the upstream account on the first request signed by any key
in the store, and remembers it, so later requests cost no upstream lookup.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import attrs
from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.python.failure import Failure
from twisted.logger import Logger

from gateway.budget import Budget
from gateway.jose import AccountKey
from gateway.keystore import KeyStore
from gateway.managed import ManagedKeys
from gateway.problems import V1Problem
from gateway.store import Account, Authorization, DuplicateAccount, Insert, OrderAttempt, Update
from gateway.store.records import ATTEMPT_REFUSED
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.upstream.client import UpstreamClient
from gateway.upstream import messages as v2
from gateway.upstream.errors import UpstreamProblem
from gateway.upstream.messages import UpstreamAccount
from gateway.v1.jws import VerifiedRequest
from gateway.validation.revalidate import Validators

log = Logger()

#: Per-name locks and read times are pruned when this many accumulate, so
#: memory stays bounded however many names a long-running gateway serves.
_PRUNE_AT = 1024

#: The status of the record a key change leaves behind for the old key.
RETIRED = "retired"


@attrs.frozen
class Policy:
    """
    Operator choices that change how flows are translated.

    :ivar agree_to_terms: agree to the CA's terms of service upstream on a
        client's behalf when it sent no agreement (dehydrated 0.7 sends
        ``""`` and never updates it; migrating clients agreed long ago).
    """

    agree_to_terms: bool = True


@attrs.frozen
class BoundAccount:
    """
    A v1 signer resolved to its stored account and its upstream account.
    """

    record: Account
    upstream: UpstreamAccount
    #: Whether the upstream key is a gateway-managed one (not the client's).
    managed: bool = False

    @property
    def key(self) -> AccountKey:
        """
        The key that signs upstream (the client's own, unless managed).
        """
        return self.upstream.key

    @property
    def thumbprint(self) -> str:
        return self.record.thumbprint


def key_not_in_store(thumbprint: str) -> V1Problem:
    """
    The refusal for a correctly signed request whose key the gateway does
    not hold: it names the key and says how to import it.
    """
    return V1Problem.unauthorized(
        f"The account key with JWK thumbprint {thumbprint} is not in the gateway's key store. "
        f"The gateway signs upstream with the client's own account key, so it must hold it: "
        f"copy the client's account key file (certbot: accounts/.../private_key.json; "
        f"dehydrated: account_key.pem; acme.sh: account.key) into the --keys directory and "
        f"restart the gateway (`acme-gateway keys list --keys DIR` shows what it loads)."
    )


@attrs.define
class Context:
    """
    The collaborators of every flow.
    """

    upstream: UpstreamClient
    store: Any  # gateway.store.IStore
    keys: KeyStore
    clock: Any
    policy: Policy = Policy()
    validators: Validators = attrs.field(factory=Validators)
    #: Upstream keys for clients whose key is not in the store
    #: (``--unknown-keys managed``); ``None`` refuses such clients.
    managed_keys: Optional[ManagedKeys] = None
    #: Authorizations the gateway validated itself, for logs and metrics.
    revalidations: int = 0
    #: A `gateway.metrics.Metrics` told of revalidations, or ``None``.
    metrics: Any = None
    budget: Budget = attrs.field(
        default=attrs.Factory(lambda self: Budget(self.store, self.clock), takes_self=True)
    )
    #: ``upstream_factory(directory_url)``: an `UpstreamClient` of another CA
    #: (the one an older certificate came from, to revoke it there), or
    #: `None` when the gateway cannot reach other CAs.
    upstream_factory: Optional[Callable[[str], UpstreamClient]] = None

    def __attrs_post_init__(self):
        self.upstream.account_recovery = self.recover_account
    _locks: Dict[str, DeferredLock] = attrs.field(factory=dict, init=False)
    _background: set = attrs.field(factory=set, init=False)
    _other_upstreams: Dict[str, UpstreamClient] = attrs.field(factory=dict, init=False)
    #: When each authorization was last read upstream (clock seconds).
    read_times: Dict[str, float] = attrs.field(factory=dict, init=False)

    def in_background(self, coroutine) -> defer.Deferred:
        """
        Run follow-up work that no response waits for (removing a challenge
        file once its authorization settles); failures are logged, never
        lost, and `drain` waits for whatever is still running.
        """
        work = defer.Deferred.fromCoroutine(coroutine)
        self._background.add(work)

        def done(result):
            self._background.discard(work)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.failure("background work failed", result)
            return None

        return work.addBoth(done)

    async def drain(self) -> None:
        """
        At shutdown: cancel background work (its ``finally`` clauses still
        remove what it provisioned) and wait for it to end.
        """
        for work in list(self._background):
            work.cancel()
        for work in list(self._background):
            await work

    async def new_order(self, bound: BoundAccount, names, attempt_id: Optional[str] = None) -> v2.Order:
        """
        Create an upstream order for ``names``, within the account's budget:
        refused locally (v1 429) when it would exceed a limit; an upstream
        ``rateLimited`` holds the account back until its ``Retry-After``.

        :param attempt_id: when given, an `OrderAttempt` with this id is
            written before the request is sent, so that an order whose
            answer is lost (a crash, a dropped connection) is still known:
            store the order under the same id.  A refusal by the CA marks it
            ``refused``; an unanswered request leaves it open for recovery.
        """
        names = list(names)
        await self.budget.check_new_order(bound.record.id, len(names))
        if attempt_id is not None:
            await self.store.write([Insert(OrderAttempt(
                id=attempt_id, account_id=bound.record.id, identifiers=names,
                created_at=self.now()))])
        try:
            return await self.upstream.new_order(bound.upstream, names)
        except UpstreamProblem as problem:
            if problem.code == "rateLimited":
                self.budget.hold(bound.record.id, problem.retry_after)
            if attempt_id is not None:
                await self.store.write([Update(OrderAttempt, attempt_id, {"status": ATTEMPT_REFUSED})])
            raise

    def is_current(self, record: Any) -> bool:
        """
        Whether a stored order, authorization or certificate belongs to the
        CA the gateway runs against now (``--upstream``), rather than to one
        it ran against before.
        """
        bound_to = getattr(self.store, "upstream", None)
        return bound_to is None or record.directory_url == bound_to

    def upstream_at(self, directory_url: str) -> UpstreamClient:
        """
        A client of the CA at ``directory_url`` (another than the current
        one: where an older certificate came from).

        :raises V1Problem: ``serverInternal`` when the gateway has no way to
            reach other CAs.
        """
        if directory_url == self.upstream.directory_url:
            return self.upstream
        client = self._other_upstreams.get(directory_url)
        if client is None:
            if self.upstream_factory is None:
                raise V1Problem.server_internal(
                    f"This certificate was issued by another CA ({directory_url}) than the "
                    f"gateway's upstream, which the gateway cannot reach")
            client = self._other_upstreams[directory_url] = self.upstream_factory(directory_url)
        return client

    async def recover_account(self, key: AccountKey, stale_url: str) -> str:
        """
        The upstream no longer knows the account at ``stale_url`` (a CA that
        lost its state, as a restarted Pebble does): find or create the
        account of ``key`` again, record its new URL, and return it.

        Whatever the CA knew of the old account went with it: its pending
        and valid authorizations are recorded as expired in the same
        transaction, so that none is offered to a client again (a client
        told its name is still authorized would skip validating it, and its
        ``new-cert`` could not succeed).
        """
        upstream = await self.upstream.find_account(key)
        if upstream is None:
            upstream = await self.upstream.new_account(
                key, terms_of_service_agreed=self.policy.agree_to_terms
            )
        for account in await self.store.list_accounts():
            if account.upstream_url == stale_url:
                gone = [a for status in ("pending", "valid") for a in
                        await self.store.authorizations_with_status(status, account_id=account.id)]
                await self.store.write([
                    Update(Account, account.id, {"upstream_url": upstream.url}),
                    *(Update(Authorization, a.id, {"status": "expired", "updated_at": self.now()})
                      for a in gone),
                ])
        log.warn("upstream lost account {stale}; re-attached as {url}", stale=stale_url,
                 url=upstream.url)
        return upstream.url

    def count_revalidation(self, outcome: str, count: int = 1) -> None:
        """
        Count names the gateway validated itself, by outcome.
        """
        self.revalidations += count
        if self.metrics is not None:
            for _ in range(count):
                self.metrics.revalidation(outcome)

    def has_expired(self, expires: Optional[str]) -> bool:
        """
        Whether an RFC 3339 ``expires`` (of an authorization or order) has
        passed on the gateway's clock; no or unreadable expiry never has.
        """
        if not expires:
            return False
        try:
            return timestamp_instant(expires).timestamp() <= self.clock.seconds()
        except ValueError:
            return False

    def now(self) -> str:
        """
        The current time as the store spells timestamps.
        """
        return format_timestamp(self.clock.seconds())

    def lock_for(self, name: str) -> DeferredLock:
        """
        A lock per name (a thumbprint, an order key), so that two concurrent
        requests of one client do not both create the same upstream object.
        """
        lock = self._locks.get(name)
        if lock is None:
            if len(self._locks) >= _PRUNE_AT:
                self._locks = {n: l for n, l in self._locks.items() if l.locked or l.waiting}
                now = self.clock.seconds()
                self.read_times = {i: t for i, t in self.read_times.items() if now - t < 60}
            lock = self._locks[name] = DeferredLock()
        return lock

    def _stored_key(self, thumbprint: str) -> Optional[AccountKey]:
        key = self.keys.get(thumbprint)
        if key is None and self.managed_keys is not None:
            key = self.managed_keys.get(thumbprint)
        return key

    def holds_key_for(self, thumbprint: str) -> bool:
        """
        Whether the gateway can sign upstream for the client key
        ``thumbprint`` right now (its own key, or a managed one).
        """
        return self._stored_key(thumbprint) is not None

    def is_managed(self, thumbprint: str) -> bool:
        """
        Whether the client key ``thumbprint`` is served with a managed key.
        """
        return thumbprint not in self.keys and self.managed_keys is not None

    async def signing_key(self, thumbprint: str) -> AccountKey:
        """
        The private key that signs upstream for the client key
        ``thumbprint``: that very key from the key store, or in managed mode
        a gateway key bound to it.

        :raises V1Problem: ``unauthorized`` when the store lacks the key and
            the gateway does not manage accounts.
        """
        key = self.keys.get(thumbprint)
        if key is not None:
            return key
        if self.managed_keys is not None:
            return await self.managed_keys.obtain(thumbprint)
        raise key_not_in_store(thumbprint)

    async def upstream_for(self, account: Account) -> UpstreamAccount:
        """
        The upstream account of a stored account, without any upstream call
        when its URL is known.
        """
        key = self._stored_key(account.thumbprint)
        if key is None:
            raise key_not_in_store(account.thumbprint)
        if account.upstream_url is None:
            account = await self._attach_upstream(account, key)
        return UpstreamAccount(key=key, url=account.upstream_url, status=account.status)

    async def _attach_upstream(self, account: Account, key: AccountKey) -> Account:
        upstream = await self.upstream.find_account(key)
        if upstream is None:
            upstream = await self.upstream.new_account(
                key,
                contact=account.contact,
                terms_of_service_agreed=bool(account.agreement) or self.policy.agree_to_terms,
            )
            log.info("created upstream account {url} for key {thumbprint}",
                     url=upstream.url, thumbprint=key.thumbprint)
        return await self.store.update_account(account.id, upstream_url=upstream.url)

    async def bind_account(self, verified: VerifiedRequest, remote_ip: str) -> BoundAccount:
        """
        Resolve the signer of an account-bound request (anything but
        ``new-reg`` and ``revoke-cert``).

        :raises V1Problem: ``unauthorized`` for a key the store lacks or a
            deactivated registration.
        """
        key = await self.signing_key(verified.thumbprint)
        lock = self.lock_for("account:" + verified.thumbprint)
        await lock.acquire()
        try:
            record = await self.store.account_by_thumbprint(verified.thumbprint)
            if record is None:
                record = await self._adopt(key, verified, remote_ip)
            if record.status == RETIRED:
                raise V1Problem.unauthorized(
                    "No registration exists matching provided key (this key was replaced by a "
                    "key change)"
                )
            if record.status != "valid":
                raise V1Problem.unauthorized(
                    f"Registration is not valid, has status '{record.status}'"
                )
            upstream = await self.upstream_for(record)
            if record.upstream_url != upstream.url:
                record = await self.store.account_by_id(record.id)
        finally:
            lock.release()
        return BoundAccount(record=record, upstream=upstream,
                            managed=self.is_managed(verified.thumbprint))

    async def _adopt(self, key: AccountKey, verified: VerifiedRequest, remote_ip: str) -> Account:
        """
        First sight of a key the store holds: record the v1 registration the
        client made at the old CA, backed by the upstream account of the same
        key.
        """
        upstream = await self.upstream.find_account(key)
        if upstream is None:
            upstream = await self.upstream.new_account(
                key, terms_of_service_agreed=self.policy.agree_to_terms
            )
        try:
            return await self.store.create_account(
                thumbprint=verified.thumbprint,
                public_jwk=verified.jwk.to_json(),
                contact=tuple(upstream.contact),
                agreement=None,
                initial_ip=remote_ip,
                upstream_url=upstream.url,
            )
        except DuplicateAccount:
            existing = await self.store.account_by_thumbprint(verified.thumbprint)
            assert existing is not None
            return existing
