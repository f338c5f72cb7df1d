"""
An in-memory `IStore`, for unit tests of the translation code.

It keeps nothing across restarts, but otherwise behaves exactly like
`SQLiteStore`: the same validation, the same errors, the same ordering, and
every result delivered through a Deferred.  Those Deferreds have already fired
when returned, so synchronous tests can use ``successResultOf`` without a
running reactor.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, TypeVar

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from gateway.store.interface import IStore
from gateway.store.records import (
    ATTEMPT_OPEN,
    ATTEMPT_REFUSED,
    PARTIAL_AUTHORIZATION,
    PARTIAL_ORDER,
    UNSTORED_ORDER,
    Account,
    Authorization,
    Certificate,
    Challenge,
    ClientVisit,
    Conflict,
    DuplicateAccount,
    Finding,
    Insert,
    Issuer,
    LegacyClient,
    NotFound,
    Order,
    OrderAttempt,
    StoreError,
    Update,
    apply_changes,
    check_changes,
    format_timestamp,
    issuer_id,
    merge_visit,
    newest_first,
    normalize_identifier,
    normalize_identifiers,
    normalize_statuses,
    timestamp_instant,
)

F = TypeVar("F", bound=Callable[..., Any])

#: Bytes of randomness in `new_id`: 128 bits, 22 base64url characters.
ID_BYTES = 16


def _fired(method: F) -> F:
    """
    Run ``method`` now and return its outcome as an already-fired Deferred,
    so errors take the same asynchronous path as in `SQLiteStore`.
    """

    @functools.wraps(method)
    def wrapper(self: "MemoryStore", *args: Any, **kwargs: Any) -> defer.Deferred:
        def call() -> Any:
            if self._closed:
                raise StoreError("the store is closed")
            return method(self, *args, **kwargs)

        return defer.maybeDeferred(call)

    return wrapper  # type: ignore[return-value]


class _WallClock:
    """
    The system clock, for a `MemoryStore` made without a reactor.
    """

    def seconds(self) -> float:
        return time.time()


@implementer(IStore)
@attrs.define(eq=False)
class MemoryStore:
    """
    Gateway state in dictionaries.

    :param clock: an `IReactorTime` (a `twisted.internet.task.Clock` in
        tests) that timestamps new accounts; the system clock by default.
    :param upstream: the directory URL of the CA the store is bound to (see
        `IStore`), or `None`.
    """

    _clock: IReactorTime = attrs.field(factory=_WallClock)
    upstream: Optional[str] = None
    _closed: bool = attrs.field(default=False, init=False)
    #: The CA each account's upstream_url was recorded at.
    _account_upstreams: Dict[int, Optional[str]] = attrs.field(factory=dict, init=False)
    _attempts: Dict[str, OrderAttempt] = attrs.field(factory=dict, init=False)
    _next_account_id: int = attrs.field(default=1, init=False)
    _accounts: Dict[int, Account] = attrs.field(factory=dict, init=False)
    # Python dicts keep insertion order, which stands in for SQLite's rowid
    # when breaking ties and for "insertion order" results.
    _orders: Dict[str, Order] = attrs.field(factory=dict, init=False)
    _authorizations: Dict[str, Authorization] = attrs.field(factory=dict, init=False)
    _challenges: Dict[str, Challenge] = attrs.field(factory=dict, init=False)
    _certificates: Dict[str, Certificate] = attrs.field(factory=dict, init=False)
    _issuers: Dict[str, Issuer] = attrs.field(factory=dict, init=False)
    _clients: Dict[tuple, LegacyClient] = attrs.field(factory=dict, init=False)

    def new_id(self) -> str:
        return secrets.token_urlsafe(ID_BYTES)

    # -- Upstreams --

    def _mine(self, record: Any) -> bool:
        return self.upstream is None or record.directory_url == self.upstream

    def _stamped(self, record: Any) -> Any:
        if self.upstream is not None and record.directory_url is None:
            return attrs.evolve(record, directory_url=self.upstream)
        return record

    # -- Atomic writes --

    #: The add_* method of each record type `write` inserts.
    _INSERTS = {
        Order: "add_order",
        Authorization: "add_authorization",
        Challenge: "add_challenge",
        Certificate: "add_certificate",
        OrderAttempt: "_add_attempt",
    }
    _UPDATES = {
        Account: "update_account",
        Order: "update_order",
        Authorization: "update_authorization",
        Challenge: "update_challenge",
        Certificate: "update_certificate",
        OrderAttempt: "_update_attempt",
    }

    @_fired
    def write(self, operations: Iterable[Any]) -> list:
        operations = list(operations)
        # All or nothing: apply in turn on the live tables, and put copies
        # taken beforehand back when one fails.
        saved = {name: dict(getattr(self, name)) for name in self._TABLES}
        saved_next = self._next_account_id
        try:
            return [self._apply(operation) for operation in operations]
        except BaseException:
            for name, table in saved.items():
                setattr(self, name, table)
            self._next_account_id = saved_next
            raise

    _TABLES = ("_accounts", "_account_upstreams", "_orders", "_authorizations", "_challenges",
               "_certificates", "_issuers", "_attempts")

    def _apply(self, operation: Any) -> Any:
        # The undecorated methods (functools.wraps keeps them as __wrapped__)
        # run now, inside this write.
        if isinstance(operation, Insert):
            record = operation.record
            if isinstance(record, Account):
                return type(self).create_account.__wrapped__(
                    self, record.thumbprint, record.public_jwk, record.contact, record.agreement,
                    record.initial_ip, record.upstream_url, record.status)
            if isinstance(record, Issuer):
                return type(self).add_issuer.__wrapped__(self, record.der)
            name = self._INSERTS.get(type(record))
        elif isinstance(operation, Update):
            name = self._UPDATES.get(operation.record_type)
            if name is not None:
                method = getattr(type(self), name)
                method = getattr(method, "__wrapped__", method)
                return method(self, operation.id, **operation.changes)
        else:
            raise TypeError(f"expected an Insert or Update, not {operation!r}")
        if name is None:
            raise TypeError(f"cannot write {operation!r}")
        method = getattr(type(self), name)
        return getattr(method, "__wrapped__", method)(self, record)

    def _add_attempt(self, attempt: OrderAttempt) -> OrderAttempt:
        self._add(self._attempts, attempt, OrderAttempt)
        self._need_account(attempt.account_id)
        attempt = self._stamped(attempt)
        self._attempts[attempt.id] = attempt
        return attempt

    def _update_attempt(self, id: str, **changes: Any) -> OrderAttempt:
        updated = self._update(self._attempts, OrderAttempt, id, changes)
        self._attempts[id] = updated
        return updated

    # -- Integrity checks shared by adds and updates --

    def _need_account(self, account_id: int) -> None:
        if account_id not in self._accounts:
            raise NotFound(f"no account {account_id!r}")

    def _need_order(self, order_id: Optional[str], account_id: int) -> None:
        if order_id is None:
            return
        order = self._orders.get(order_id)
        if order is None or order.account_id != account_id:
            raise NotFound(f"no order {order_id!r} of account {account_id!r}")

    def _check_authorization(self, authorization: Authorization) -> None:
        self._need_account(authorization.account_id)
        self._need_order(authorization.order_id, authorization.account_id)

    def _check_challenge(self, challenge: Challenge) -> None:
        self._need_account(challenge.account_id)
        parent = self._authorizations.get(challenge.authorization_id)
        if parent is None or parent.account_id != challenge.account_id:
            raise NotFound(
                f"no authorization {challenge.authorization_id!r}"
                f" of account {challenge.account_id!r}"
            )

    def _check_certificate(self, certificate: Certificate) -> None:
        self._need_account(certificate.account_id)
        self._need_order(certificate.order_id, certificate.account_id)
        for id in certificate.issuer_ids:
            if id not in self._issuers:
                raise NotFound(f"no issuer {id!r}")
        for other in self._certificates.values():
            if other.serial == certificate.serial and other.id != certificate.id:
                raise Conflict(f"serial {certificate.serial!r} is already stored")

    @staticmethod
    def _add(table: Dict[str, Any], record: Any, record_type: type) -> None:
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, not {record!r}")
        if record.id in table:
            raise Conflict(f"{record_type.__name__} {record.id!r} already exists")

    @staticmethod
    def _update(
        table: Dict[str, Any], record_type: type, id: Any, changes: Dict[str, Any]
    ) -> Any:
        check_changes(record_type, changes)
        record = table.get(id)
        if record is None:
            raise NotFound(f"no {record_type.__name__} {id!r}")
        return apply_changes(record, changes)

    # -- Accounts --

    def _detached(self, account: Account) -> Account:
        # Re-running the converter copies public_jwk, so a caller mutating the
        # dict cannot change what is stored (as with SQLiteStore).  An
        # upstream URL of another CA is not shown.
        if self.upstream is not None and self._account_upstreams.get(account.id) != self.upstream:
            return attrs.evolve(account, upstream_url=None)
        return attrs.evolve(account)

    @_fired
    def create_account(
        self,
        thumbprint: str,
        public_jwk: dict,
        contact: Iterable[str] = (),
        agreement: Optional[str] = None,
        initial_ip: str = "",
        upstream_url: Optional[str] = None,
        status: str = "valid",
    ) -> Account:
        account = Account(
            id=self._next_account_id,
            thumbprint=thumbprint,
            public_jwk=public_jwk,
            upstream_url=upstream_url,
            contact=contact,
            agreement=agreement,
            status=status,
            created_at=format_timestamp(self._clock.seconds()),
            initial_ip=initial_ip,
        )
        if self._account_id_for(thumbprint) is not None:
            raise DuplicateAccount(f"thumbprint {thumbprint!r} is already registered")
        self._next_account_id += 1
        self._accounts[account.id] = account
        self._account_upstreams[account.id] = self.upstream if upstream_url is not None else None
        return self._detached(account)

    def _account_id_for(self, thumbprint: str) -> Optional[int]:
        for account in self._accounts.values():
            if account.thumbprint == thumbprint:
                return account.id
        return None

    @_fired
    def account_by_id(self, id: int) -> Optional[Account]:
        account = self._accounts.get(id)
        return None if account is None else self._detached(account)

    @_fired
    def account_by_thumbprint(self, thumbprint: str) -> Optional[Account]:
        id = self._account_id_for(thumbprint)
        return None if id is None else self._detached(self._accounts[id])

    @_fired
    def update_account(self, id: int, /, **changes: Any) -> Account:
        check_changes(Account, changes)
        account = self._accounts.get(id)
        if account is None:
            raise NotFound(f"no Account {id!r}")
        # The stored record keeps an upstream URL of another CA (not shown)
        # unless the change replaces it.
        updated = apply_changes(account, changes)
        owner = self._account_id_for(updated.thumbprint)
        if owner is not None and owner != id:
            raise DuplicateAccount(
                f"thumbprint {updated.thumbprint!r} is already registered"
            )
        if "upstream_url" in changes:
            self._account_upstreams[id] = self.upstream if updated.upstream_url is not None else None
        self._accounts[id] = updated
        return self._detached(updated)

    @_fired
    def list_accounts(self) -> List[Account]:
        return [self._detached(a) for _, a in sorted(self._accounts.items())]

    # -- Orders --

    @_fired
    def add_order(self, order: Order) -> Order:
        self._add(self._orders, order, Order)
        self._need_account(order.account_id)
        order = self._stamped(order)
        self._orders[order.id] = order
        return order

    @_fired
    def order_by_id(self, id: str) -> Optional[Order]:
        return self._orders.get(id)

    @_fired
    def update_order(self, id: str, /, **changes: Any) -> Order:
        updated = self._update(self._orders, Order, id, changes)
        self._orders[id] = updated
        return updated

    @_fired
    def find_orders(
        self,
        account_id: int,
        identifiers: Iterable[str],
        statuses: Optional[Iterable[str]] = None,
    ) -> List[Order]:
        wanted = normalize_identifiers(identifiers)
        wanted_statuses = normalize_statuses(statuses)
        return newest_first(
            (seq, order)
            for seq, order in enumerate(self._orders.values())
            if order.account_id == account_id
            and order.identifiers == wanted
            and self._mine(order)
            and (wanted_statuses is None or order.status in wanted_statuses)
        )

    # -- Authorizations --

    @_fired
    def add_authorization(self, authorization: Authorization) -> Authorization:
        self._add(self._authorizations, authorization, Authorization)
        self._check_authorization(authorization)
        authorization = self._stamped(authorization)
        self._authorizations[authorization.id] = authorization
        return authorization

    @_fired
    def authorization_by_id(self, id: str) -> Optional[Authorization]:
        return self._authorizations.get(id)

    @_fired
    def authorization_by_upstream_url(
        self, account_id: int, url: str
    ) -> Optional[Authorization]:
        matches = newest_first(
            (seq, authz)
            for seq, authz in enumerate(self._authorizations.values())
            if authz.account_id == account_id and authz.upstream_url == url and self._mine(authz)
        )
        return matches[0] if matches else None

    @_fired
    def update_authorization(self, id: str, /, **changes: Any) -> Authorization:
        updated = self._update(self._authorizations, Authorization, id, changes)
        self._check_authorization(updated)
        self._authorizations[id] = updated
        return updated

    @_fired
    def authorizations_for_order(self, order_id: str) -> List[Authorization]:
        return [a for a in self._authorizations.values() if a.order_id == order_id]

    @_fired
    def find_authorizations(
        self,
        account_id: int,
        identifier: str,
        wildcard: bool,
        statuses: Optional[Iterable[str]] = None,
    ) -> List[Authorization]:
        wanted = normalize_identifier(identifier)
        wanted_statuses = normalize_statuses(statuses)
        return newest_first(
            (seq, authz)
            for seq, authz in enumerate(self._authorizations.values())
            if authz.account_id == account_id
            and authz.identifier == wanted
            and authz.wildcard == bool(wildcard)
            and self._mine(authz)
            and (wanted_statuses is None or authz.status in wanted_statuses)
        )

    @_fired
    def order_times_since(self, account_id: int, since: str) -> List[str]:
        moment = timestamp_instant(since)
        spent = [o for o in self._orders.values() if o.account_id == account_id and self._mine(o)]
        # A newOrder whose answer was lost still spent the budget.
        spent += [a for a in self._attempts.values()
                  if a.account_id == account_id and self._mine(a) and a.id not in self._orders
                  and a.status != ATTEMPT_REFUSED]
        found = [o.created_at for o in spent if timestamp_instant(o.created_at) >= moment]
        return sorted(found, key=timestamp_instant)

    @_fired
    def authorizations_with_status(
        self, status: str, account_id: Optional[int] = None, created_before: Optional[str] = None
    ) -> List[Authorization]:
        moment = timestamp_instant(created_before) if created_before else None
        found = [
            authz for authz in self._authorizations.values()
            if authz.status == status
            and self._mine(authz)
            and (account_id is None or authz.account_id == account_id)
            and (moment is None or timestamp_instant(authz.created_at) < moment)
        ]
        return sorted(found, key=lambda a: timestamp_instant(a.created_at))

    @_fired
    def open_order_attempts(self) -> List[OrderAttempt]:
        found = [a for a in self._attempts.values()
                 if a.status == ATTEMPT_OPEN and self._mine(a) and a.id not in self._orders]
        return sorted(found, key=lambda a: timestamp_instant(a.created_at))

    # -- Challenges --

    @_fired
    def add_challenge(self, challenge: Challenge) -> Challenge:
        self._add(self._challenges, challenge, Challenge)
        self._check_challenge(challenge)
        self._challenges[challenge.id] = challenge
        return challenge

    @_fired
    def challenge_by_id(self, id: str) -> Optional[Challenge]:
        return self._challenges.get(id)

    @_fired
    def challenges_for_authorization(self, authorization_id: str) -> List[Challenge]:
        return [
            c
            for c in self._challenges.values()
            if c.authorization_id == authorization_id
        ]

    @_fired
    def update_challenge(self, id: str, /, **changes: Any) -> Challenge:
        updated = self._update(self._challenges, Challenge, id, changes)
        self._check_challenge(updated)
        self._challenges[id] = updated
        return updated

    # -- Certificates --

    @_fired
    def add_certificate(self, certificate: Certificate) -> Certificate:
        self._add(self._certificates, certificate, Certificate)
        self._check_certificate(certificate)
        certificate = self._stamped(certificate)
        self._certificates[certificate.id] = certificate
        return certificate

    @_fired
    def certificate_by_id(self, id: str) -> Optional[Certificate]:
        return self._certificates.get(id)

    @_fired
    def certificate_by_serial(self, serial: str) -> Optional[Certificate]:
        for certificate in self._certificates.values():
            if certificate.serial == serial:
                return certificate
        return None

    @_fired
    def update_certificate(self, id: str, /, **changes: Any) -> Certificate:
        updated = self._update(self._certificates, Certificate, id, changes)
        self._check_certificate(updated)
        self._certificates[id] = updated
        return updated

    @_fired
    def certificates_for_account(self, account_id: int) -> List[Certificate]:
        return newest_first(
            (
                (seq, c)
                for seq, c in enumerate(self._certificates.values())
                if c.account_id == account_id
            ),
            attribute="issued_at",
        )

    @_fired
    def orphaned_certificates(self) -> List[Certificate]:
        return newest_first(
            ((seq, c) for seq, c in enumerate(self._certificates.values()) if c.orphaned),
            attribute="issued_at",
        )

    # -- Issuers --

    @_fired
    def add_issuer(self, der: bytes) -> Issuer:
        issuer = Issuer(id=issuer_id(der), der=der)
        stored = self._issuers.setdefault(issuer.id, issuer)
        if stored.der != der:
            raise Conflict(f"issuer id {issuer.id!r} already holds another DER")
        return stored

    @_fired
    def issuer_by_id(self, id: str) -> Optional[Issuer]:
        return self._issuers.get(id)

    # -- The migration report --

    @_fired
    def record_client(self, visit: ClientVisit) -> LegacyClient:
        if not isinstance(visit, ClientVisit):
            raise TypeError(f"expected a ClientVisit, not {visit!r}")
        key = (visit.address, visit.user_agent)
        client = merge_visit(self._clients.get(key), visit)
        self._clients[key] = client
        return client

    def record_clients(self, visits) -> defer.Deferred:
        clients = []
        for visit in visits:
            recorded = self.record_client(visit)
            failures = []
            recorded.addCallbacks(clients.append, failures.append)
            if failures:
                return defer.fail(failures[0])
        return defer.succeed(clients)

    @_fired
    def list_clients(self) -> List[LegacyClient]:
        return newest_first(enumerate(self._clients.values()), attribute="last_seen")

    # -- Operations --

    @_fired
    def count_authorizations(self, status: str, unexpired_at: Optional[str] = None) -> int:
        limit = None if unexpired_at is None else timestamp_instant(unexpired_at)
        return sum(
            1
            for a in self._authorizations.values()
            if a.status == status
            and self._mine(a)
            and (limit is None or a.expires is None or timestamp_instant(a.expires) > limit)
        )

    @_fired
    def inconsistencies(self) -> List[Finding]:
        findings = []
        for attempt in self._attempts.values():
            if attempt.status == ATTEMPT_OPEN and attempt.id not in self._orders:
                findings.append(Finding(
                    UNSTORED_ORDER, "order_attempts", attempt.id,
                    f"newOrder for {', '.join(attempt.identifiers)} sent at "
                    f"{attempt.created_at}, its order never stored", attempt.directory_url))
        now = self._clock.seconds()

        def unexpired(expires):
            return expires is None or timestamp_instant(expires).timestamp() > now

        with_challenges = {c.authorization_id for c in self._challenges.values()}
        for authz in self._authorizations.values():
            if (authz.status == "pending" and authz.id not in with_challenges
                    and unexpired(authz.expires)):
                findings.append(Finding(
                    PARTIAL_AUTHORIZATION, "authorizations", authz.id,
                    f"pending authorization for {authz.identifier} without challenges",
                    authz.directory_url))
        for order in self._orders.values():
            if order.status not in ("pending", "ready") or not unexpired(order.expires):
                continue
            stored = {(a.account_id, a.upstream_url) for a in self._authorizations.values()}
            if order.authorization_urls:
                missing = [u for u in order.authorization_urls
                           if (order.account_id, u) not in stored]
            else:
                linked = any(a.order_id == order.id for a in self._authorizations.values())
                missing = [] if linked else ["(unknown)"]
            if missing:
                findings.append(Finding(
                    PARTIAL_ORDER, "orders", order.id,
                    f"order for {', '.join(order.identifiers)} without "
                    f"{len(missing) if order.authorization_urls else 'any'} of its "
                    f"authorizations", order.directory_url))
        # The add_* checks keep parents present; nothing in memory can
        # orphan a row.
        return findings

    @_fired
    def check_writable(self) -> None:
        return None

    def close(self) -> defer.Deferred:
        self._closed = True
        return defer.succeed(None)
