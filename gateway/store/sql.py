"""
The gateway's one `IStore`: the records in SQL, whatever the engine.

Legacy clients keep the URLs the gateway gave them, so the mapping behind
those URLs has to survive restarts and crashes; an issued certificate in
particular exists nowhere else the gateway can rely on.  So every write is
committed in its own transaction before its Deferred fires, and
`SQLStore.write` commits a logical step of several records all or nothing.

The SQL here runs on both SQLite and PostgreSQL (standard SQL, upserts as
``ON CONFLICT``); what differs between engines is behind
`gateway.store.engine.Database` (one module per engine:
`gateway.store.sqlite`, `gateway.store.postgresql`), and where the blocking calls run is a
`gateway.store.engine.Runner` (`gateway.store.runners`).  The schema is in
`gateway.store.schema`.
"""

from __future__ import annotations

import json
import secrets
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    cast,
)

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from zope.interface import implementer

from gateway.crashpoints import crash_point
from gateway.store.engine import Database, Row, Runner
from gateway.store.interface import IStore
from gateway.store.records import (
    ATTEMPT_OPEN,
    ATTEMPT_REFUSED,
    MAX_CLIENTS,
    ORPHAN_ROW,
    PARTIAL_AUTHORIZATION,
    PARTIAL_ORDER,
    UNSTORED_ORDER,
    Account,
    Authorization,
    AuthorizationRead,
    Certificate,
    Challenge,
    ClientVisit,
    Conflict,
    DuplicateAccount,
    Finding,
    Insert,
    Issuer,
    LegacyClient,
    NameReads,
    NotFound,
    Operation,
    Order,
    OrderAttempt,
    Record,
    RenewalWindow,
    Spend,
    StoreError,
    Update,
    apply_changes,
    check_changes,
    format_timestamp,
    issuer_id,
    makes_no_row,
    merge_visit,
    newest_first,
    normalize_identifier,
    normalize_identifiers,
    normalize_statuses,
    origin_of,
    overflowing,
    timestamp_instant,
)
from gateway.store.schema import migrate
from gateway.status import Status

log = Logger()

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound="SQLStore")

#: Bytes of randomness in `SQLStore.new_id`: 128 bits, 22 base64url characters.
ID_BYTES = 16

#: Used nonces past their expiry are deleted with every this many uses (by
#: each process), which keeps the table to about an hour of redemptions.
NONCE_PRUNE_EVERY = 512

_TABLES: Mapping[type, str] = {
    Account: "accounts",
    Order: "orders",
    Authorization: "authorizations",
    Challenge: "challenges",
    Certificate: "certificates",
    Issuer: "issuers",
    LegacyClient: "clients",
    OrderAttempt: "order_attempts",
    RenewalWindow: "renewal_windows",
}

# Tuples and dicts are stored as JSON text, booleans as INTEGER, bytes as
# the engine's bytes type.
_JSON_FIELDS = frozenset(
    {"public_jwk", "contact", "identifiers", "issuer_ids", "thumbprints", "names",
     "authorization_urls"}
)
_BOOL_FIELDS = frozenset({"wildcard", "orphaned", "opened_early"})

#: The crash point after a row of each kind, when more of its logical step
#: follows in the same `SQLStore.write` (`gateway.crashpoints`).
#: Records whose rows mirror what the CA holds (an authorization's status,
#: its challenges'): a write of only these need not survive a power failure
#: when it commits — the next upstream read restores it — and is synced by
#: the next durable commit.  Accounts, orders and their attempts,
#: certificates and issuers are inserted durably; an order's status is
#: updated like an authorization's.
_RECONCILED_INSERTS: FrozenSet[type] = frozenset({Authorization, Challenge})
_RECONCILED_UPDATES: FrozenSet[type] = frozenset({Authorization, Challenge, Order})


def _reconciled(operation: Operation) -> bool:
    """
    Whether ``operation`` only mirrors the CA's state (see above).
    """
    if isinstance(operation, Insert):
        return type(operation.record) in _RECONCILED_INSERTS
    return operation.record_type in _RECONCILED_UPDATES


_ROW_POINTS: Mapping[type, str] = {
    Account: "account-row",
    Order: "order-row",
    Authorization: "authorization-row",
    Challenge: "challenge-row",
    Certificate: "certificate-row",
    Issuer: "issuer-row",
    OrderAttempt: "order-attempt-row",
    RenewalWindow: "renewal-window-row",
}


def _json(value: Any) -> str:
    # Canonical spelling, so that equal identifier sets are equal strings and
    # find_orders can compare them in SQL.
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _encode(record: Any) -> Dict[str, Any]:
    """
    The column values of a record.
    """
    row = {}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if field.name in _JSON_FIELDS:
            value = _json(value)
        elif field.name in _BOOL_FIELDS:
            value = int(value)
        row[field.name] = value
    return row


def _decode(record_type: Type[R], row: Row) -> R:
    """
    The record stored in a row (columns that are no field of the record
    are ignored).  Runs in the store's runner, like everything that touches
    the database.
    """
    values = {}
    for field in attrs.fields(cast(Any, record_type)):
        value = row[field.name]
        if field.name in _JSON_FIELDS:
            value = json.loads(value)
        elif field.name in _BOOL_FIELDS:
            value = bool(value)
        elif isinstance(value, memoryview):
            value = bytes(value)
        values[field.name] = value
    return cast(Callable[..., R], record_type)(**values)


def claim_legacy_rows(database: Database, upstream: str) -> None:
    """
    Attribute rows written before the store recorded each row's CA to
    ``upstream`` when their upstream URL has its origin (a CA's URLs share
    its directory's origin); other such rows stay unattributed, and a bound
    store never uses them.
    """
    origin = origin_of(upstream)
    like = origin.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    match = "(upstream_url = ? OR upstream_url LIKE ? ESCAPE '\\')"

    def claim() -> None:
        for table in ("orders", "authorizations", "certificates"):
            database.execute(
                f"UPDATE {table} SET directory_url = ? WHERE directory_url IS NULL AND {match}",
                (upstream, origin, like),
            )
        database.execute(
            f"UPDATE accounts SET upstream_directory = ?"
            f" WHERE upstream_directory IS NULL AND upstream_url IS NOT NULL AND {match}",
            (upstream, origin, like),
        )

    database.transaction(claim)


@implementer(IStore)
@attrs.define(eq=False)
class SQLStore:
    """
    Gateway state in an SQL database.  Made by an engine's ``open``
    (`gateway.store.sqlite.SQLiteStore.open`).

    Every method but `new_id` returns a Deferred and runs its SQL in the
    store's runner; see `IStore` for the contract.
    """

    #: Timestamps new accounts (``seconds()``); the reactor in production.
    _clock: Any
    _runner: Runner
    _database: Database
    #: The directory URL of the CA the store is bound to (`IStore.upstream`).
    upstream: Optional[str] = None
    _closing: bool = attrs.field(default=False, init=False)
    _closed: Optional[defer.Deferred[None]] = attrs.field(default=None, init=False)
    _close_waiters: List[defer.Deferred[None]] = attrs.field(factory=list, init=False)
    _shutdown: Optional[Tuple[Any, Any]] = attrs.field(default=None, init=False)
    _nonces_used: int = attrs.field(default=0, init=False)

    @classmethod
    def _open(cls: Type[S], connect: Callable[[], Database], runner: Runner, reactor: Any,
              close_on_shutdown: bool = True, upstream: Optional[str] = None) -> defer.Deferred[S]:
        """
        Connect in ``runner``, migrate the schema, attribute old rows to
        ``upstream``, and make the store.  For the engines' ``open``.

        :param reactor: the store's clock; if it is an `IReactorCore`, the
            store closes itself before it shuts down, unless
            ``close_on_shutdown`` is false (an owner that must finish
            requests in flight first closes it itself).
        """

        def prepare() -> Database:
            database = connect()
            try:
                migrate(database)
                if upstream is not None:
                    claim_legacy_rows(database, upstream)
            except BaseException:
                database.close()
                raise
            sync = database.defer_syncs()
            if sync is not None:
                runner.sync_batches(sync)
            return database

        def opened(database: Database) -> S:
            store = cls(reactor, runner, database, upstream)
            if close_on_shutdown and IReactorCore.providedBy(reactor):
                trigger = reactor.addSystemEventTrigger(
                    "before", "shutdown", store._close_for_shutdown)
                store._shutdown = (reactor, trigger)
            return store

        def failed(failure: Any) -> Any:
            runner.stop()
            return failure

        return runner.run(prepare).addCallbacks(opened, failed)

    def _call(self, work: Callable[[], T]) -> defer.Deferred[T]:
        if self._closing:
            return defer.fail(StoreError("the store is closed"))
        return self._runner.run(work)

    def _write(self, work: Callable[[], T], durable: bool = True) -> defer.Deferred[T]:
        return self._call(lambda: self._database.transaction(work, durable))

    def new_id(self) -> str:
        return secrets.token_urlsafe(ID_BYTES)

    def write(self, operations: Iterable[Operation]) -> defer.Deferred[List[Record]]:
        operations = list(operations)
        for operation in operations:
            if not isinstance(operation, (Insert, Update)):
                return defer.fail(TypeError(f"expected an Insert or Update, not {operation!r}"))

        def work() -> List[Record]:
            results = []
            for index, operation in enumerate(operations):
                results.append(self._apply(operation))
                if index + 1 < len(operations):
                    # Inside the transaction: a crash here must leave nothing.
                    kind = (type(operation.record) if isinstance(operation, Insert)
                            else operation.record_type)
                    crash_point(_ROW_POINTS.get(kind, "row"))
            return results

        return self._write(work, durable=not all(map(_reconciled, operations)))

    # -- Helpers; these run in the runner --

    def _one(self, record_type: Type[R], where: str, *params: Any) -> Optional[R]:
        row = self._database.execute(
            f"SELECT * FROM {_TABLES[record_type]} WHERE {where}", params
        ).fetchone()
        return None if row is None else _decode(record_type, row)

    def _rows(self, record_type: Type[R], where: str, *params: Any) -> List[Tuple[int, R]]:
        """
        Matching records with their insertion sequence, in insertion order.
        """
        order = self._database.row_order
        rows = self._database.execute(
            f"SELECT {order} AS _seq, * FROM {_TABLES[record_type]} WHERE {where}"
            f" ORDER BY {order}",
            params,
        ).fetchall()
        return [(row["_seq"], _decode(record_type, row)) for row in rows]

    def _exists(self, table: str, where: str, *params: Any) -> bool:
        return (
            self._database.execute(f"SELECT 1 FROM {table} WHERE {where}", params).fetchone()
            is not None
        )

    def _scoped(self, where: str, params: Sequence[Any]) -> Tuple[str, Tuple[Any, ...]]:
        """
        ``where`` limited to the bound CA's rows.
        """
        if self.upstream is None:
            return where, tuple(params)
        return f"({where}) AND directory_url = ?", (*params, self.upstream)

    def _stamped(self, record: R) -> R:
        if self.upstream is not None and getattr(record, "directory_url", False) is None:
            stamped: R = attrs.evolve(cast(Any, record), directory_url=self.upstream)
            return stamped
        return record

    def _insert(self, record: Any) -> None:
        row = _encode(record)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._database.execute(
            f"INSERT INTO {_TABLES[type(record)]} ({columns}) VALUES ({marks})",
            tuple(row.values()),
        )

    def _replace(self, record: Any) -> None:
        row = _encode(record)
        del row["id"]
        assignments = ", ".join(f"{column} = ?" for column in row)
        self._database.execute(
            f"UPDATE {_TABLES[type(record)]} SET {assignments} WHERE id = ?",
            (*row.values(), record.id),
        )

    def _check_new(self, record: Any) -> None:
        record_type = type(record)
        if self._exists(_TABLES[record_type], "id = ?", record.id):
            raise Conflict(f"{record_type.__name__} {record.id!r} already exists")

    def _changed(self, record_type: Type[R], id: Any, changes: Dict[str, Any]) -> R:
        check_changes(record_type, changes)
        record = self._one(record_type, "id = ?", id)
        if record is None:
            raise NotFound(f"no {record_type.__name__} {id!r}")
        return apply_changes(record, changes)

    def _need_account(self, account_id: int) -> None:
        if not self._exists("accounts", "id = ?", account_id):
            raise NotFound(f"no account {account_id!r}")

    def _need_order(self, order_id: Optional[str], account_id: int) -> None:
        if order_id is not None and not self._exists(
            "orders", "id = ? AND account_id = ?", order_id, account_id
        ):
            raise NotFound(f"no order {order_id!r} of account {account_id!r}")

    def _check_order(self, order: Any) -> None:
        self._need_account(order.account_id)

    def _check_attempt(self, attempt: Any) -> None:
        self._need_account(attempt.account_id)

    def _check_authorization(self, authorization: Any) -> None:
        self._need_account(authorization.account_id)
        self._need_order(authorization.order_id, authorization.account_id)

    def _check_challenge(self, challenge: Any) -> None:
        self._need_account(challenge.account_id)
        if not self._exists(
            "authorizations",
            "id = ? AND account_id = ?",
            challenge.authorization_id,
            challenge.account_id,
        ):
            raise NotFound(
                f"no authorization {challenge.authorization_id!r}"
                f" of account {challenge.account_id!r}"
            )

    def _check_certificate(self, certificate: Any) -> None:
        self._need_account(certificate.account_id)
        self._need_order(certificate.order_id, certificate.account_id)
        for id in certificate.issuer_ids:
            if not self._exists("issuers", "id = ?", id):
                raise NotFound(f"no issuer {id!r}")
        if self._exists(
            "certificates", "serial = ? AND id != ?", certificate.serial, certificate.id
        ):
            raise Conflict(f"serial {certificate.serial!r} is already stored")

    def _check_window(self, window: Any) -> None:
        self._need_account(window.account_id)
        if not self._exists("certificates", "id = ? AND account_id = ?",
                            window.id, window.account_id):
            raise NotFound(f"no certificate {window.id!r} of account {window.account_id!r}")

    def _no_check(self, record: Any) -> None:
        return None

    @staticmethod
    def _status_clause(statuses: Optional[Iterable[str]]) -> Tuple[str, Tuple[str, ...]]:
        wanted = normalize_statuses(statuses)
        if wanted is None:
            return "", ()
        if not wanted:
            return " AND 1 = 0", ()
        ordered = tuple(sorted(wanted))
        return f" AND status IN ({', '.join('?' for _ in ordered)})", ordered

    # -- Writes: every add_* and update_* is one operation of `write` --

    def _apply(self, operation: Operation) -> Record:
        if isinstance(operation, Insert):
            record = operation.record
            if isinstance(record, Account):
                return self._insert_account(record)
            if isinstance(record, Issuer):
                return self._insert_issuer(record.der, record.parent_id)
            insert_check = _INSERT_CHECKS.get(type(record))
            if insert_check is None:
                raise TypeError(f"cannot insert {record!r}")
            record = self._stamped(record)
            self._check_new(record)
            insert_check(self, record)
            self._insert(record)
            return record
        if operation.record_type is Account:
            return self._update_account(cast(int, operation.id), dict(operation.changes))
        update_check = _UPDATE_CHECKS.get(operation.record_type)
        if update_check is None:
            raise TypeError(f"cannot update a {operation.record_type!r}")
        changed = self._changed(operation.record_type, operation.id, dict(operation.changes))
        update_check(self, changed)
        self._replace(changed)
        return changed

    def _insert_as(self, record_type: Type[R], record: R) -> defer.Deferred[R]:
        if not isinstance(record, record_type):
            return defer.fail(TypeError(f"expected a {record_type.__name__}, not {record!r}"))
        insert = Insert(cast(Record, record))
        return self._write(lambda: cast(R, self._apply(insert)), durable=not _reconciled(insert))

    def _update_as(self, record_type: Type[R], id: Any,
                   changes: Dict[str, Any]) -> defer.Deferred[R]:
        update = Update(cast(Any, record_type), id, changes)
        return self._write(lambda: cast(R, self._apply(update)), durable=not _reconciled(update))

    # -- Accounts --

    def _account(self, where: str, *params: Any) -> Optional[Account]:
        """
        The account as the bound CA sees it: its ``upstream_url`` only when
        recorded at that CA.
        """
        row = self._database.execute(f"SELECT * FROM accounts WHERE {where}", params).fetchone()
        return None if row is None else self._presented(row)

    def _presented(self, row: Row) -> Account:
        account = _decode(Account, row)
        if self.upstream is not None and row["upstream_directory"] != self.upstream:
            account = attrs.evolve(account, upstream_url=None)
        return account

    def _insert_account(self, account: Account) -> Account:
        if not isinstance(account, Account):
            raise TypeError(f"expected an Account, not {account!r}")
        if self._exists("accounts", "thumbprint = ?", account.thumbprint):
            raise DuplicateAccount(f"thumbprint {account.thumbprint!r} is already registered")
        row = _encode(account)
        del row["id"]
        row["upstream_directory"] = self.upstream if account.upstream_url is not None else None
        return attrs.evolve(account, id=self._database.insert_returning_id("accounts", row))

    def _update_account(self, id: int, changes: Dict[str, Any]) -> Account:
        check_changes(Account, changes)
        current = self._account("id = ?", id)
        if current is None:
            raise NotFound(f"no Account {id!r}")
        account = apply_changes(current, changes)
        if self._exists("accounts", "thumbprint = ? AND id != ?", account.thumbprint, id):
            raise DuplicateAccount(f"thumbprint {account.thumbprint!r} is already registered")
        # Only the changed columns: an upstream URL of another CA, which
        # this store does not show, stays as it was unless replaced.
        row = {name: value for name, value in _encode(account).items() if name in changes}
        if "upstream_url" in changes:
            row["upstream_directory"] = (
                self.upstream if account.upstream_url is not None else None)
        if row:
            self._database.execute(
                f"UPDATE accounts SET {', '.join(f'{c} = ?' for c in row)} WHERE id = ?",
                (*row.values(), id),
            )
        return account

    def create_account(
        self,
        thumbprint: str,
        public_jwk: Mapping[str, Any],
        contact: Iterable[str] = (),
        agreement: Optional[str] = None,
        initial_ip: str = "",
        upstream_url: Optional[str] = None,
        status: str = Status.VALID,
    ) -> defer.Deferred[Account]:
        created_at = format_timestamp(self._clock.seconds())
        try:
            # Validate with a provisional id; the database assigns the real one.
            account = Account(
                id=0,
                thumbprint=thumbprint,
                public_jwk=public_jwk,
                upstream_url=upstream_url,
                contact=contact,
                agreement=agreement,
                status=status,
                created_at=created_at,
                initial_ip=initial_ip,
            )
        except (TypeError, ValueError) as error:
            return defer.fail(error)
        return self._write(lambda: self._insert_account(account))

    def account_by_id(self, id: int) -> defer.Deferred[Optional[Account]]:
        return self._call(lambda: self._account("id = ?", id))

    def account_by_thumbprint(self, thumbprint: str) -> defer.Deferred[Optional[Account]]:
        return self._call(lambda: self._account("thumbprint = ?", thumbprint))

    def update_account(self, id: int, /, **changes: Any) -> defer.Deferred[Account]:
        return self._write(lambda: self._update_account(id, changes))

    def list_accounts(self) -> defer.Deferred[List[Account]]:
        def work() -> List[Account]:
            rows = self._database.execute("SELECT * FROM accounts ORDER BY id")
            return [self._presented(row) for row in rows]

        return self._call(work)

    # -- Orders --

    def add_order(self, order: Order) -> defer.Deferred[Order]:
        return self._insert_as(Order, order)

    def order_by_id(self, id: str) -> defer.Deferred[Optional[Order]]:
        return self._call(lambda: self._one(Order, "id = ?", id))

    def update_order(self, id: str, /, **changes: Any) -> defer.Deferred[Order]:
        return self._update_as(Order, id, changes)

    def find_orders(
        self,
        account_id: int,
        identifiers: Iterable[str],
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred[List[Order]]:
        def work() -> List[Order]:
            wanted = _json(normalize_identifiers(identifiers))
            clause, params = self._status_clause(statuses)
            where, values = self._scoped(
                "account_id = ? AND identifiers = ?" + clause, (account_id, wanted, *params))
            return newest_first(self._rows(Order, where, *values))

        return self._call(work)

    def _planned_orders(self, account_id: int,
                        statuses: Optional[Iterable[str]]) -> List[Order]:
        clause, params = self._status_clause(statuses)
        where, values = self._scoped(
            "account_id = ? AND planned_for IS NOT NULL" + clause, (account_id, *params))
        return newest_first(self._rows(Order, where, *values))

    def planned_orders(
        self, account_id: int, statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred[List[Order]]:
        return self._call(lambda: self._planned_orders(account_id, statuses))

    # -- Authorizations --

    def add_authorization(self, authorization: Authorization) -> defer.Deferred[Authorization]:
        return self._insert_as(Authorization, authorization)

    def authorization_by_id(self, id: str) -> defer.Deferred[Optional[Authorization]]:
        return self._call(lambda: self._one(Authorization, "id = ?", id))

    def authorization_read(self, id: str) -> defer.Deferred[Optional[AuthorizationRead]]:
        def work() -> Optional[AuthorizationRead]:
            authorization = self._one(Authorization, "id = ?", id)
            if authorization is None:
                return None
            return AuthorizationRead(
                authorization, self._account("id = ?", authorization.account_id),
                tuple(c for _, c in self._rows(Challenge, "authorization_id = ?", id)))

        return self._call(work)

    def authorization_by_upstream_url(
            self, account_id: int, url: str) -> defer.Deferred[Optional[Authorization]]:
        def work() -> Optional[Authorization]:
            where, values = self._scoped("account_id = ? AND upstream_url = ?", (account_id, url))
            matches = newest_first(self._rows(Authorization, where, *values))
            return matches[0] if matches else None

        return self._call(work)

    def authorizations_by_upstream_urls(
            self, account_id: int, urls: Iterable[str],
    ) -> defer.Deferred[Dict[str, Tuple[Authorization, Tuple[Challenge, ...]]]]:
        wanted = tuple(dict.fromkeys(urls))

        def work() -> Dict[str, Tuple[Authorization, Tuple[Challenge, ...]]]:
            if not wanted:
                return {}
            where, values = self._scoped(
                f"account_id = ? AND upstream_url IN ({', '.join('?' * len(wanted))})",
                (account_id, *wanted))
            by_url: Dict[str, List[Tuple[int, Authorization]]] = {}
            for row in self._rows(Authorization, where, *values):
                by_url.setdefault(row[1].upstream_url, []).append(row)
            newest = {url: newest_first(rows)[0] for url, rows in by_url.items()}
            challenges: Dict[str, List[Challenge]] = {a.id: [] for a in newest.values()}
            if challenges:
                for _, challenge in self._rows(
                        Challenge, f"authorization_id IN ({', '.join('?' * len(challenges))})",
                        *challenges):
                    challenges[challenge.authorization_id].append(challenge)
            return {url: (authorization, tuple(challenges[authorization.id]))
                    for url, authorization in newest.items()}

        return self._call(work)

    def update_authorization(self, id: str, /, **changes: Any) -> defer.Deferred[Authorization]:
        return self._update_as(Authorization, id, changes)

    def authorizations_for_order(self, order_id: str) -> defer.Deferred[List[Authorization]]:
        return self._call(
            lambda: [a for _, a in self._rows(Authorization, "order_id = ?", order_id)])

    def _find_authorizations(self, account_id: int, identifier: str, wildcard: bool,
                             statuses: Optional[Iterable[str]]) -> List[Authorization]:
        clause, params = self._status_clause(statuses)
        where, values = self._scoped(
            "account_id = ? AND identifier = ? AND wildcard = ?" + clause,
            (account_id, normalize_identifier(identifier), int(bool(wildcard)), *params),
        )
        return newest_first(self._rows(Authorization, where, *values))

    def find_authorizations(
        self,
        account_id: int,
        identifier: str,
        wildcard: bool,
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred[List[Authorization]]:
        return self._call(
            lambda: self._find_authorizations(account_id, identifier, wildcard, statuses))

    def find_authorizations_of_names(
        self,
        account_id: int,
        names: Iterable[Tuple[str, bool]],
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred[List[List[Authorization]]]:
        wanted = list(names)
        statuses = None if statuses is None else tuple(statuses)
        return self._call(lambda: [
            self._find_authorizations(account_id, identifier, wildcard, statuses)
            for identifier, wildcard in wanted])

    def name_reads(self, account_id: int, identifier: str, spelled: str, wildcard: bool,
                   statuses: Optional[Iterable[str]],
                   planned_statuses: Iterable[str]) -> defer.Deferred[NameReads]:
        def work() -> NameReads:
            wanted = (normalize_identifier(identifier), bool(wildcard))
            planned = tuple(
                (order, tuple(a for _, a in self._rows(Authorization, "order_id = ?", order.id)
                              if (a.identifier, a.wildcard) == wanted))
                for order in self._planned_orders(account_id, planned_statuses))
            return NameReads(
                planned=planned,
                held=tuple(current_certificates_in(self._database, account_id, spelled)),
                candidates=tuple(self._find_authorizations(account_id, identifier, wildcard,
                                                           statuses)))

        return self._call(work)

    def order_times_since(self, account_id: int, since: str) -> defer.Deferred[List[str]]:
        moment = timestamp_instant(since)

        def work() -> List[str]:
            where, values = self._scoped("account_id = ?", (account_id,))
            times = [order.created_at for _, order in self._rows(Order, where, *values)]
            # A newOrder whose answer was lost still spent the budget.
            times += [attempt.created_at for _, attempt in self._rows(
                OrderAttempt, where + " AND status != ? AND id NOT IN (SELECT id FROM orders)",
                *values, ATTEMPT_REFUSED)]
            found = [t for t in times if timestamp_instant(t) >= moment]
            return sorted(found, key=timestamp_instant)

        return self._call(work)

    def authorizations_with_status(
        self, status: str, account_id: Optional[int] = None, created_before: Optional[str] = None
    ) -> defer.Deferred[List[Authorization]]:
        moment = timestamp_instant(created_before) if created_before else None

        def work() -> List[Authorization]:
            if account_id is None:
                where, values = self._scoped("status = ?", (status,))
            else:
                where, values = self._scoped("status = ? AND account_id = ?", (status, account_id))
            found = [
                authz for _, authz in self._rows(Authorization, where, *values)
                if moment is None or timestamp_instant(authz.created_at) < moment
            ]
            return sorted(found, key=lambda a: timestamp_instant(a.created_at))

        return self._call(work)

    def open_order_attempts(self) -> defer.Deferred[List[OrderAttempt]]:
        def work() -> List[OrderAttempt]:
            where, values = self._scoped(
                "status = ? AND id NOT IN (SELECT id FROM orders)", (ATTEMPT_OPEN,))
            found = [attempt for _, attempt in self._rows(OrderAttempt, where, *values)]
            return sorted(found, key=lambda a: timestamp_instant(a.created_at))

        return self._call(work)

    # -- Challenges --

    def add_challenge(self, challenge: Challenge) -> defer.Deferred[Challenge]:
        return self._insert_as(Challenge, challenge)

    def challenge_by_id(self, id: str) -> defer.Deferred[Optional[Challenge]]:
        return self._call(lambda: self._one(Challenge, "id = ?", id))

    def challenges_for_authorization(
            self, authorization_id: str) -> defer.Deferred[List[Challenge]]:
        return self._call(lambda: [
            c for _, c in self._rows(Challenge, "authorization_id = ?", authorization_id)])

    def update_challenge(self, id: str, /, **changes: Any) -> defer.Deferred[Challenge]:
        return self._update_as(Challenge, id, changes)

    # -- Certificates --

    def add_certificate(self, certificate: Certificate) -> defer.Deferred[Certificate]:
        return self._insert_as(Certificate, certificate)

    def certificate_by_id(self, id: str) -> defer.Deferred[Optional[Certificate]]:
        return self._call(lambda: self._one(Certificate, "id = ?", id))

    def certificate_by_serial(self, serial: str) -> defer.Deferred[Optional[Certificate]]:
        return self._call(lambda: self._one(Certificate, "serial = ?", serial))

    def update_certificate(self, id: str, /, **changes: Any) -> defer.Deferred[Certificate]:
        return self._update_as(Certificate, id, changes)

    def certificates_for_account(self, account_id: int) -> defer.Deferred[List[Certificate]]:
        return self._call(lambda: newest_first(
            self._rows(Certificate, "account_id = ?", account_id), attribute="issued_at"))

    def orphaned_certificates(self) -> defer.Deferred[List[Certificate]]:
        return self._call(lambda: orphaned_certificates_in(self._database))

    def current_certificates(self, account_id: Optional[int] = None, name: Optional[str] = None
                             ) -> defer.Deferred[List[Certificate]]:
        return self._call(lambda: current_certificates_in(self._database, account_id, name))

    # -- Renewal windows --

    def renewal_window(self, certificate_id: str) -> defer.Deferred[Optional[RenewalWindow]]:
        return self._call(lambda: self._one(RenewalWindow, "id = ?", certificate_id))

    def renewal_windows(self) -> defer.Deferred[List[RenewalWindow]]:
        return self._call(lambda: renewal_windows_in(self._database))

    # -- Issuers --

    def _insert_issuer(self, der: bytes, parent_id: Optional[str]) -> Issuer:
        issuer = Issuer(id=issuer_id(der), der=der, parent_id=parent_id)
        if parent_id == issuer.id:
            # Its Link: rel="up" would send a client round in a circle.
            raise ValueError(f"issuer {issuer.id!r} cannot be its own parent")
        if parent_id is not None and not self._exists("issuers", "id = ?", parent_id):
            raise NotFound(f"no issuer {parent_id!r}")
        stored = self._one(Issuer, "id = ?", issuer.id)
        if stored is None:
            self._insert(issuer)
            return issuer
        if stored.der != der:
            raise Conflict(f"issuer id {issuer.id!r} already holds another DER")
        if parent_id is None or parent_id == stored.parent_id:
            return stored
        self._database.execute(
            "UPDATE issuers SET parent_id = ? WHERE id = ?", (parent_id, issuer.id))
        return issuer

    def add_issuer(self, der: bytes, parent_id: Optional[str] = None) -> defer.Deferred[Issuer]:
        return self._write(lambda: self._insert_issuer(der, parent_id))

    def issuer_by_id(self, id: str) -> defer.Deferred[Optional[Issuer]]:
        return self._call(lambda: self._one(Issuer, "id = ?", id))

    # -- The migration report --

    def record_client(self, visit: ClientVisit) -> defer.Deferred[Optional[LegacyClient]]:
        return self.record_clients([visit]).addCallback(
            lambda clients: clients[0] if clients else None)

    def record_clients(self, visits: Iterable[ClientVisit]) -> defer.Deferred[List[LegacyClient]]:
        visits = list(visits)
        for visit in visits:
            if not isinstance(visit, ClientVisit):
                return defer.fail(TypeError(f"expected a ClientVisit, not {visit!r}"))

        def row_of(visit: ClientVisit) -> Optional[Row]:
            found: Optional[Row] = self._database.execute(
                "SELECT * FROM clients WHERE address = ? AND user_agent = ?",
                (visit.address, visit.user_agent),
            ).fetchone()
            return found

        def work() -> List[LegacyClient]:
            clients = []
            rows: Optional[int] = None
            for visit in visits:
                row = row_of(visit)
                if row is None:
                    if makes_no_row(visit):
                        continue
                    if rows is None:
                        counted = self._database.execute(
                            "SELECT COUNT(*) AS count FROM clients").fetchone()
                        rows = 0 if counted is None else int(counted["count"])
                    if rows >= MAX_CLIENTS:
                        visit = overflowing(visit)
                        row = row_of(visit)
                    rows += 1 if row is None else 0
                client = merge_visit(None if row is None else _decode(LegacyClient, row), visit)
                values = _encode(client)
                updates = ", ".join(
                    f"{column} = excluded.{column}" for column in values
                    if column not in ("address", "user_agent"))
                self._database.execute(
                    f"INSERT INTO clients ({', '.join(values)})"
                    f" VALUES ({', '.join('?' for _ in values)})"
                    f" ON CONFLICT (address, user_agent) DO UPDATE SET {updates}",
                    tuple(values.values()),
                )
                clients.append(client)
            return clients

        # The report's counts: a power failure may cost the last seconds of them.
        return self._write(work, durable=False)

    def list_clients(self) -> defer.Deferred[List[LegacyClient]]:
        return self._call(lambda: list_clients_in(self._database))

    # -- Operations --

    def count_authorizations(
            self, status: str, unexpired_at: Optional[str] = None) -> defer.Deferred[int]:
        def work() -> int:
            where, values = self._scoped("status = ?", (status,))
            rows = self._database.execute(
                f"SELECT expires FROM authorizations WHERE {where}", values
            ).fetchall()
            if unexpired_at is None:
                return len(rows)
            limit = timestamp_instant(unexpired_at)
            # Upstream expiries are spelled as the CA spells them, so they are
            # compared as instants here rather than as strings in SQL.
            return sum(
                1 for row in rows
                if row["expires"] is None or timestamp_instant(row["expires"]) > limit
            )

        return self._call(work)

    def inconsistencies(self) -> defer.Deferred[List[Finding]]:
        now = self._clock.seconds()
        return self._call(lambda: inconsistencies_in(self._database, now))

    # -- Shared by every process on the store --

    def _spend(self, account_id: int, moment: Any) -> Spend:
        where, values = self._scoped("account_id = ?", (account_id,))
        # Only the creation times: decoding each of the account's orders
        # (it keeps them all) cost a new-authz more the older the account.
        times = [row["created_at"] for row in self._database.execute(
            f"SELECT created_at FROM {_TABLES[Order]} WHERE {where}", values).fetchall()]
        unstored = where + " AND status != ? AND id NOT IN (SELECT id FROM orders)"
        in_flight = 0
        for _, attempt in self._rows(OrderAttempt, unstored, *values, ATTEMPT_REFUSED):
            times.append(attempt.created_at)
            if attempt.status == ATTEMPT_OPEN:
                in_flight += len(attempt.identifiers)
        pending_where, pending_values = self._scoped(
            "status = ? AND account_id = ?", (Status.PENDING.value, account_id))
        pending = sorted((a for _, a in self._rows(Authorization, pending_where,
                                                    *pending_values)),
                         key=lambda a: timestamp_instant(a.created_at))
        return Spend(
            order_times=tuple(sorted((t for t in times if timestamp_instant(t) >= moment),
                                     key=timestamp_instant)),
            pending=tuple(pending),
            names_in_flight=in_flight,
        )

    def spend(self, account_id: int, since: str) -> defer.Deferred[Spend]:
        moment = timestamp_instant(since)
        # One transaction: a consistent view of the three.
        return self._write(lambda: self._spend(account_id, moment))

    def reserve(self, attempt: OrderAttempt, since: str, orders: int,
                pending_authorizations: int, now: float) -> defer.Deferred[Tuple[Spend, bool]]:
        if not isinstance(attempt, OrderAttempt):
            return defer.fail(TypeError(f"expected an OrderAttempt, not {attempt!r}"))
        moment = timestamp_instant(since)
        insert = Insert(attempt)

        def work() -> Tuple[Spend, bool]:
            spend = self._spend(attempt.account_id, moment)
            if not spend.admits(orders, pending_authorizations, len(attempt.identifiers), now):
                return spend, False
            self._apply(insert)
            return spend, True

        return self._write(work)

    def secret(self, name: str, size: int = 32) -> defer.Deferred[bytes]:
        def work() -> bytes:
            self._database.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_bytes(size)))
            row = self._database.execute(
                "SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            assert row is not None
            return bytes(row["value"])

        return self._write(work)

    def use_nonce(self, nonce: str, expires_at: int) -> defer.Deferred[bool]:
        now = int(self._clock.seconds())
        self._nonces_used += 1
        prune = self._nonces_used % NONCE_PRUNE_EVERY == 1

        def work() -> bool:
            if prune:
                self._database.execute("DELETE FROM used_nonces WHERE expires_at < ?", (now,))
            cursor = self._database.execute(
                "INSERT INTO used_nonces (nonce, expires_at) VALUES (?, ?)"
                " ON CONFLICT (nonce) DO NOTHING", (nonce, int(expires_at)))
            return bool(cursor.rowcount == 1)

        return self._call(lambda: self._database.transaction(work, durable=False))

    def publish_answer(self, token: str, key_authorization: str,
                       expires_at: int) -> defer.Deferred[None]:
        now = int(self._clock.seconds())

        def work() -> None:
            self._database.execute("DELETE FROM http01_answers WHERE expires_at < ?", (now,))
            self._database.execute(
                "INSERT INTO http01_answers (token, key_authorization, expires_at)"
                " VALUES (?, ?, ?) ON CONFLICT (token) DO UPDATE SET"
                " key_authorization = excluded.key_authorization,"
                " expires_at = excluded.expires_at",
                (token, key_authorization, int(expires_at)))

        return self._call(lambda: self._database.transaction(work, durable=False))

    def withdraw_answer(self, token: str) -> defer.Deferred[None]:
        def work() -> None:
            self._database.execute("DELETE FROM http01_answers WHERE token = ?", (token,))

        return self._call(lambda: self._database.transaction(work, durable=False))

    def answer_for(self, token: str) -> defer.Deferred[Optional[str]]:
        now = int(self._clock.seconds())

        def work() -> Optional[str]:
            row = self._database.execute(
                "SELECT key_authorization FROM http01_answers"
                " WHERE token = ? AND expires_at >= ?", (token, now)).fetchone()
            return None if row is None else str(row["key_authorization"])

        return self._call(work)

    def try_lock(self, name: str) -> defer.Deferred[bool]:
        return self._lock_call(lambda: self._database.try_lock(name))

    def unlock(self, name: str) -> defer.Deferred[None]:
        return self._lock_call(lambda: self._database.unlock(name))

    def _lock_call(self, work: Callable[[], T]) -> defer.Deferred[T]:
        """
        A named lock's call: in the calling thread when the engine's locks
        never wait (`Database.locks_never_wait`: no thread hand-off), else
        in the runner.
        """
        if not self._database.locks_never_wait:
            return self._call(work)
        if self._closing:
            return defer.fail(StoreError("the store is closed"))
        return defer.execute(work)

    def check_writable(self) -> defer.Deferred[None]:
        checked_at = format_timestamp(self._clock.seconds())

        def work() -> None:
            self._database.execute(
                "INSERT INTO probes (id, checked_at) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                (checked_at,),
            )

        return self._write(work)

    # -- Closing --

    def _close_for_shutdown(self) -> defer.Deferred[None]:
        # The trigger is firing, so it must not be removed again in close().
        self._shutdown = None
        return self.close()

    def close(self) -> defer.Deferred[None]:
        """
        Close the connection after every call already made, then stop the
        runner.  Later calls fail with `StoreError`.
        """
        if self._closing:
            waiter: defer.Deferred[None] = defer.Deferred()
            if self._closed is not None and self._closed.called:
                waiter.callback(None)
            else:
                self._close_waiters.append(waiter)
            return waiter
        self._closing = True
        if self._shutdown is not None:
            reactor, trigger = self._shutdown
            reactor.removeSystemEventTrigger(trigger)
            self._shutdown = None

        def stop(result: Any) -> Any:
            self._runner.stop()
            for waiter in self._close_waiters:
                waiter.callback(None)
            del self._close_waiters[:]
            return result

        self._closed = self._runner.run(self._database.close).addBoth(stop)
        return self._closed


#: What an inserted record of each kind must refer to (accounts and issuers
#: have inserts of their own).
_INSERT_CHECKS: Mapping[type, Callable[[SQLStore, Any], None]] = {
    Order: SQLStore._check_order,
    Authorization: SQLStore._check_authorization,
    Challenge: SQLStore._check_challenge,
    Certificate: SQLStore._check_certificate,
    OrderAttempt: SQLStore._check_attempt,
    RenewalWindow: SQLStore._check_window,
}

#: What an updated record of each kind must still refer to; the kinds that
#: can be updated (accounts have an update of their own).
_UPDATE_CHECKS: Mapping[type, Callable[[SQLStore, Any], None]] = {
    Order: SQLStore._no_check,
    Authorization: SQLStore._check_authorization,
    Challenge: SQLStore._check_challenge,
    Certificate: SQLStore._check_certificate,
    OrderAttempt: SQLStore._no_check,
    RenewalWindow: SQLStore._no_check,
}


# --- Reads shared with the command line's read-only views ---------------------------


def list_clients_in(database: Database) -> List[LegacyClient]:
    """
    Every report row, most recently seen first.
    """
    rows = database.execute(f"SELECT {database.row_order} AS _seq, * FROM clients").fetchall()
    return newest_first(
        ((row["_seq"], _decode(LegacyClient, row)) for row in rows), attribute="last_seen"
    )


def orphaned_certificates_in(database: Database) -> List[Certificate]:
    """
    Every orphaned certificate, of any CA, newest first.
    """
    rows = database.execute(
        f"SELECT {database.row_order} AS _seq, * FROM certificates WHERE orphaned = 1").fetchall()
    return newest_first(
        ((row["_seq"], _decode(Certificate, row)) for row in rows), attribute="issued_at"
    )


def current_certificates_in(database: Database, account_id: Optional[int] = None,
                            name: Optional[str] = None) -> List[Certificate]:
    """
    The renewal inventory: of every account's certificates (or of
    ``account_id``'s, holding ``name``) that are not orphans, the newest of
    each name set (an older one with the same names was renewed by it), of
    every CA, newest first.
    """
    where = "orphaned = 0"
    values: Tuple[Any, ...] = ()
    if account_id is not None:
        where, values = where + " AND account_id = ?", (*values, account_id)
    if name is not None:
        # A coarse match on the names column (its JSON list), made exact
        # below: every certificate of a name set that holds the name is read.
        where, values = where + " AND names LIKE ?", (*values, f"%{json.dumps(name.lower())}%")
    rows = database.execute(
        f"SELECT {database.row_order} AS _seq, * FROM certificates WHERE {where}", values).fetchall()
    certificates = newest_first(
        ((row["_seq"], _decode(Certificate, row)) for row in rows), attribute="issued_at")
    seen = set()
    current = []
    for certificate in sorted(certificates, key=_validity_start, reverse=True):
        key = (certificate.account_id, certificate.names)
        if not certificate.names or key in seen:
            continue
        if name is not None and name.lower() not in certificate.names:
            continue
        seen.add(key)
        current.append(certificate)
    return current


def renewal_windows_in(database: Database) -> List[RenewalWindow]:
    """
    Every suggested renewal window stored, of every CA, in insertion order.
    """
    rows = database.execute(
        f"SELECT * FROM renewal_windows ORDER BY {database.row_order}").fetchall()
    return [_decode(RenewalWindow, row) for row in rows]


def _validity_start(certificate: Certificate) -> Any:
    """
    When a certificate's validity began (when it was stored, if unknown):
    of two certificates for the same names, the later one renewed the
    other, whenever either was imported.
    """
    return timestamp_instant(certificate.not_before or certificate.issued_at)


def _unexpired(expires: Optional[str], now: float) -> bool:
    return expires is None or timestamp_instant(expires).timestamp() > now


def inconsistencies_in(database: Database, now: float) -> List[Finding]:
    """
    `IStore.inconsistencies`, for the store and for ``acme-gateway check``
    (which reads a database the gateway may be using).
    """
    order = database.row_order
    findings = []
    for row in database.execute(
        "SELECT id, identifiers, created_at, directory_url FROM order_attempts"
        f" WHERE status = ? AND id NOT IN (SELECT id FROM orders) ORDER BY {order}",
        (ATTEMPT_OPEN,),
    ):
        findings.append(Finding(
            UNSTORED_ORDER, "order_attempts", row["id"],
            f"newOrder for {', '.join(json.loads(row['identifiers']))} sent at "
            f"{row['created_at']}, its order never stored", row["directory_url"]))
    for row in database.execute(
        "SELECT id, identifier, expires, directory_url FROM authorizations a"
        " WHERE status = ?"
        " AND NOT EXISTS (SELECT 1 FROM challenges c WHERE c.authorization_id = a.id)"
        f" ORDER BY {order}",
        (Status.PENDING.value,),
    ):
        if not _unexpired(row["expires"], now):
            continue
        findings.append(Finding(
            PARTIAL_AUTHORIZATION, "authorizations", row["id"],
            f"pending authorization for {row['identifier']} without challenges",
            row["directory_url"]))
    for row in database.execute(
        "SELECT id, account_id, identifiers, authorization_urls, expires, directory_url"
        f" FROM orders WHERE status IN (?, ?) ORDER BY {order}",
        (Status.PENDING.value, Status.READY.value),
    ):
        if not _unexpired(row["expires"], now):
            continue
        urls = json.loads(row["authorization_urls"])
        missing: List[str]
        if urls:
            missing = [url for url in urls if database.execute(
                "SELECT 1 FROM authorizations WHERE account_id = ? AND upstream_url = ?",
                (row["account_id"], url)).fetchone() is None]
        else:
            linked = database.execute(
                "SELECT 1 FROM authorizations WHERE order_id = ?", (row["id"],)).fetchone()
            missing = [] if linked else ["(unknown)"]
        if missing:
            findings.append(Finding(
                PARTIAL_ORDER, "orders", row["id"],
                f"order for {', '.join(json.loads(row['identifiers']))} without "
                f"{len(missing) if urls else 'any'} of its authorizations", row["directory_url"]))
    for table, record_id, parent in database.broken_references():
        findings.append(
            Finding(ORPHAN_ROW, table, record_id, f"refers to a missing row of {parent}"))
    return findings


#: The tables ``acme-gateway check`` counts rows of.
COUNTED_TABLES = ("accounts", "orders", "authorizations", "challenges", "certificates",
                  "order_attempts", "renewal_windows")


@attrs.frozen
class StateCheck:
    """
    What ``acme-gateway check`` found in a state database.

    :ivar integrity: the engine's integrity check's lines (``["ok"]`` when
        the database is intact).
    :ivar findings: the store's own consistency findings (`Finding`).
    :ivar counts: rows per table, for the summary (-1: unreadable).
    """

    integrity: Tuple[str, ...]
    findings: Tuple[Finding, ...]
    counts: Dict[str, int]

    @property
    def clean(self) -> bool:
        return self.integrity == ("ok",) and not self.findings


def check_database(database: Database, integrity: Tuple[str, ...], now: float,
                   unreadable: Type[BaseException]) -> StateCheck:
    """
    The consistency part of ``acme-gateway check``, after the engine's own
    integrity check: findings as of ``now``, and rows per table.

    :param unreadable: the engine's error for rows it cannot read (a
        damaged file); reported, not raised.
    """
    try:
        findings = tuple(inconsistencies_in(database, now))
    except unreadable as error:
        findings = (Finding(ORPHAN_ROW, "-", "-", f"cannot read the rows: {error}"),)
    counts = {}
    for table in COUNTED_TABLES:
        try:
            row = database.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = 0 if row is None else int(row[0])
        except unreadable:
            counts[table] = -1
    return StateCheck(integrity, findings, counts)
