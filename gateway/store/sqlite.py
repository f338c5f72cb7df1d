"""
The production `IStore`: one SQLite file, written durably.

Legacy clients keep the URLs the gateway gave them, so the mapping behind
those URLs has to survive restarts and crashes; an issued certificate in
particular exists nowhere else the gateway can rely on.  Hence
``synchronous=FULL`` in WAL mode, and every write committed in its own
transaction before its Deferred fires.

SQLite calls block, and the reactor thread must never block.  So a store owns
a `ThreadPool` of exactly one thread, creates its single connection *in* that
thread, and runs every statement there through `deferToThreadPool`.  One thread
also serialises all access: there are no concurrent transactions to reason
about, and calls run in the order they were made.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gateway.crashpoints import crash_point
from gateway.store.interface import IStore
from gateway.store.memory import ID_BYTES
from gateway.store.records import (
    ATTEMPT_OPEN,
    ATTEMPT_REFUSED,
    ORPHAN_ROW,
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
    origin_of,
    timestamp_instant,
)

log = Logger()

#: How long a statement waits for a lock held by another process (an
#: operator's ``sqlite3`` shell, a backup) before failing, in milliseconds.
BUSY_TIMEOUT_MS = 5000

#: The schema version this code writes, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 3

# Version 1.  Every table but ``issuers`` carries the owning account_id
# (``accounts.id`` is it for accounts); issuers are public and shared.  The
# composite foreign keys (parent id, account_id) make the database itself
# refuse a child that points at another account's parent.
_SCHEMA_1 = (
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thumbprint TEXT NOT NULL UNIQUE,
        public_jwk TEXT NOT NULL,
        upstream_url TEXT,
        contact TEXT NOT NULL,
        agreement TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        initial_ip TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        identifiers TEXT NOT NULL,
        status TEXT NOT NULL,
        finalize_url TEXT NOT NULL,
        expires TEXT,
        certificate_url TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (id, account_id)
    )
    """,
    "CREATE INDEX orders_by_identifiers ON orders (account_id, identifiers)",
    """
    CREATE TABLE authorizations (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        order_id TEXT,
        upstream_url TEXT NOT NULL,
        identifier TEXT NOT NULL,
        wildcard INTEGER NOT NULL CHECK (wildcard IN (0, 1)),
        status TEXT NOT NULL,
        expires TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (id, account_id),
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id)
    )
    """,
    "CREATE INDEX authorizations_by_order ON authorizations (order_id)",
    """
    CREATE INDEX authorizations_by_upstream_url
        ON authorizations (account_id, upstream_url)
    """,
    """
    CREATE INDEX authorizations_by_identifier
        ON authorizations (account_id, identifier, wildcard)
    """,
    """
    CREATE TABLE challenges (
        id TEXT PRIMARY KEY,
        authorization_id TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        type TEXT NOT NULL,
        token TEXT NOT NULL,
        status TEXT NOT NULL,
        FOREIGN KEY (authorization_id, account_id)
            REFERENCES authorizations (id, account_id)
    )
    """,
    """
    CREATE INDEX challenges_by_authorization
        ON challenges (authorization_id)
    """,
    """
    CREATE TABLE issuers (
        id TEXT PRIMARY KEY,
        der BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        order_id TEXT,
        serial TEXT NOT NULL UNIQUE,
        leaf_der BLOB NOT NULL,
        issuer_ids TEXT NOT NULL,
        upstream_url TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT,
        revocation_reason INTEGER,
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id)
    )
    """,
    "CREATE INDEX certificates_by_account ON certificates (account_id)",
)

# Version 2: the migration report, one row per legacy client (source
# address and User-Agent), upserted on every v1 request; and a one-row table
# the readiness probe writes to, to prove that state can still be committed.
_SCHEMA_2 = (
    """
    CREATE TABLE clients (
        address TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        thumbprints TEXT NOT NULL,
        names TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        successes INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        certificates INTEGER NOT NULL,
        last_success TEXT,
        last_failure TEXT,
        last_failure_reason TEXT,
        PRIMARY KEY (address, user_agent)
    )
    """,
    """
    CREATE TABLE probes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    )
    """,
)

# Version 3: every row of an upstream object records the CA it lives at
# (the directory URL), so a gateway restarted with another --upstream never
# uses the old CA's accounts, orders or authorizations; an order lists its
# authorizations' URLs; a certificate may be an orphan (issued for a key no
# client waits for); and each newOrder is recorded before it is sent
# (order_attempts), so an order whose answer was lost is still known.
_SCHEMA_3 = (
    "ALTER TABLE accounts ADD COLUMN upstream_directory TEXT",
    "ALTER TABLE orders ADD COLUMN authorization_urls TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE orders ADD COLUMN directory_url TEXT",
    "ALTER TABLE authorizations ADD COLUMN directory_url TEXT",
    "ALTER TABLE certificates ADD COLUMN directory_url TEXT",
    "ALTER TABLE certificates ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0",
    """
    CREATE TABLE order_attempts (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        identifiers TEXT NOT NULL,
        created_at TEXT NOT NULL,
        directory_url TEXT,
        status TEXT NOT NULL
    )
    """,
    "CREATE INDEX order_attempts_by_status ON order_attempts (status, directory_url)",
    "CREATE INDEX authorizations_by_status ON authorizations (status, directory_url)",
)

#: Statements that bring a database from version N-1 to N, keyed by N.  A new
#: schema version adds an entry here and bumps `SCHEMA_VERSION`.
MIGRATIONS: Dict[int, Sequence[str]] = {1: _SCHEMA_1, 2: _SCHEMA_2, 3: _SCHEMA_3}

_TABLES = {
    Account: "accounts",
    Order: "orders",
    Authorization: "authorizations",
    Challenge: "challenges",
    Certificate: "certificates",
    Issuer: "issuers",
    LegacyClient: "clients",
    OrderAttempt: "order_attempts",
}

# Tuples and dicts are stored as JSON text, booleans as INTEGER, bytes as BLOB.
_JSON_FIELDS = frozenset(
    {"public_jwk", "contact", "identifiers", "issuer_ids", "thumbprints", "names",
     "authorization_urls"}
)
_BOOL_FIELDS = frozenset({"wildcard", "orphaned"})


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


def _decode(record_type: type, row: sqlite3.Row) -> Any:
    """
    The record stored in a row.  Runs in the store's worker thread, like
    everything that touches the connection.
    """
    values = {}
    for field in attrs.fields(record_type):
        value = row[field.name]
        if field.name in _JSON_FIELDS:
            value = json.loads(value)
        elif field.name in _BOOL_FIELDS:
            value = bool(value)
        values[field.name] = value
    return record_type(**values)


def _create_private(path: str) -> None:
    """
    Create the database file readable and writable by its owner only, before
    SQLite opens it: it holds account metadata.  SQLite gives the ``-wal``
    and ``-shm`` files the mode of the database file.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warn(
                "Gateway state file {path} is accessible by other users"
                " (mode {mode:04o}); it should be 0600.",
                path=path,
                mode=mode,
            )
    else:
        os.close(fd)


def _in_transaction(connection: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    """
    Run ``work`` in a write transaction, committed before returning.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so the checks ``work``
    makes before writing cannot be invalidated by another process.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


def _migrate(connection: sqlite3.Connection) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, newer than this"
            f" gateway's {SCHEMA_VERSION}"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):

        def step(target: int = target) -> None:
            for statement in MIGRATIONS[target]:
                connection.execute(statement)
            # Part of the same transaction: a crash mid-migration leaves the
            # old version and the old schema.
            connection.execute(f"PRAGMA user_version = {int(target)}")

        _in_transaction(connection, step)


def _claim_legacy_rows(connection: sqlite3.Connection, upstream: str) -> None:
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
            connection.execute(
                f"UPDATE {table} SET directory_url = ? WHERE directory_url IS NULL AND {match}",
                (upstream, origin, like),
            )
        connection.execute(
            f"UPDATE accounts SET upstream_directory = ?"
            f" WHERE upstream_directory IS NULL AND upstream_url IS NOT NULL AND {match}",
            (upstream, origin, like),
        )

    _in_transaction(connection, claim)


def _connect(path: str, upstream: Optional[str] = None) -> sqlite3.Connection:
    """
    Open and prepare the connection.  Runs in the store's worker thread.
    """
    if path != ":memory:":
        _create_private(path)
    # isolation_level=None: the module starts no transactions by itself;
    # _in_transaction does.  check_same_thread=False is safe because only the
    # store's single worker thread ever uses the connection.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if path != ":memory:" and mode.lower() != "wal":
            raise StoreError(f"cannot use WAL journal mode on {path} (got {mode})")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        _migrate(connection)
        if upstream is not None:
            _claim_legacy_rows(connection, upstream)
    except BaseException:
        connection.close()
        raise
    return connection


#: The crash point after a row of each kind, when more of its logical step
#: follows in the same `SQLiteStore.write` (`gateway.crashpoints`).
_ROW_POINTS = {
    Account: "account-row",
    Order: "order-row",
    Authorization: "authorization-row",
    Challenge: "challenge-row",
    Certificate: "certificate-row",
    Issuer: "issuer-row",
    OrderAttempt: "order-attempt-row",
}


@implementer(IStore)
@attrs.define(eq=False)
class SQLiteStore:
    """
    Gateway state in an SQLite file.  Make one with `SQLiteStore.open`.

    Every method but `new_id` returns a Deferred and runs its SQL in the
    store's worker thread; see `IStore` for the contract.
    """

    _reactor: Any
    _pool: ThreadPool
    _connection: sqlite3.Connection
    #: The directory URL of the CA the store is bound to (`IStore.upstream`).
    upstream: Optional[str] = None
    _closing: bool = attrs.field(default=False, init=False)
    _closed: Optional[defer.Deferred] = attrs.field(default=None, init=False)
    _close_waiters: List[defer.Deferred] = attrs.field(factory=list, init=False)
    _shutdown_trigger: Any = attrs.field(default=None, init=False)

    @classmethod
    def open(cls, path: "str | os.PathLike[str]", reactor: Any = None,
             close_on_shutdown: bool = True, upstream: Optional[str] = None) -> defer.Deferred:
        """
        Open (creating and migrating as needed) the database at ``path``.

        :param path: the database file, created with mode 0600 if absent;
            ``":memory:"`` for a throwaway database.
        :param reactor: the reactor results are delivered on, whose clock
            timestamps new accounts; the global one by default.  If it is an
            `IReactorCore`, the store closes itself before it shuts down,
            unless ``close_on_shutdown`` is false (an owner that must finish
            requests in flight first closes it itself).
        :param upstream: the directory URL of the CA to bind the store to
            (see `IStore`), or `None` for every row of every CA.
        :return: a Deferred firing with the `SQLiteStore`.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        path = os.fspath(path)
        pool = ThreadPool(minthreads=1, maxthreads=1, name=f"acme-gateway store {path}")
        pool.start()

        def opened(connection: sqlite3.Connection) -> "SQLiteStore":
            store = cls(reactor, pool, connection, upstream)
            if close_on_shutdown and IReactorCore.providedBy(reactor):
                store._shutdown_trigger = reactor.addSystemEventTrigger(
                    "before", "shutdown", store._close_for_shutdown
                )
            return store

        def failed(failure: Any) -> Any:
            pool.stop()
            return failure

        return deferToThreadPool(reactor, pool, _connect, path, upstream).addCallbacks(
            opened, failed
        )

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        if self._closing:
            return defer.fail(StoreError("the store is closed"))
        return deferToThreadPool(self._reactor, self._pool, function, *args, **kwargs)

    def _write(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        return self._call(
            lambda: _in_transaction(self._connection, lambda: work(*args, **kwargs))
        )

    def new_id(self) -> str:
        return secrets.token_urlsafe(ID_BYTES)

    def write(self, operations: Iterable[Any]) -> defer.Deferred:
        operations = list(operations)
        for operation in operations:
            if not isinstance(operation, (Insert, Update)):
                return defer.fail(TypeError(f"expected an Insert or Update, not {operation!r}"))

        def work() -> list:
            results = []
            for index, operation in enumerate(operations):
                results.append(self._apply(operation))
                if index + 1 < len(operations):
                    # Inside the transaction: a crash here must leave nothing.
                    kind = (type(operation.record) if isinstance(operation, Insert)
                            else operation.record_type)
                    crash_point(_ROW_POINTS.get(kind, "row"))
            return results

        return self._write(work)

    # -- Helpers; these run in the worker thread --

    def _one(self, record_type: type, where: str, *params: Any) -> Any:
        row = self._connection.execute(
            f"SELECT * FROM {_TABLES[record_type]} WHERE {where}", params
        ).fetchone()
        return None if row is None else _decode(record_type, row)

    def _rows(self, record_type: type, where: str, *params: Any) -> List[Tuple[int, Any]]:
        """
        Matching records with their rowid, in insertion order.
        """
        rows = self._connection.execute(
            f"SELECT rowid AS _seq, * FROM {_TABLES[record_type]} WHERE {where}"
            " ORDER BY rowid",
            params,
        ).fetchall()
        return [(row["_seq"], _decode(record_type, row)) for row in rows]

    def _exists(self, table: str, where: str, *params: Any) -> bool:
        return (
            self._connection.execute(
                f"SELECT 1 FROM {table} WHERE {where}", params
            ).fetchone()
            is not None
        )

    def _scoped(self, where: str, params: Sequence[Any]) -> Tuple[str, Tuple[Any, ...]]:
        """
        ``where`` limited to the bound CA's rows.
        """
        if self.upstream is None:
            return where, tuple(params)
        return f"({where}) AND directory_url = ?", (*params, self.upstream)

    def _stamped(self, record: Any) -> Any:
        if self.upstream is not None and getattr(record, "directory_url", False) is None:
            return attrs.evolve(record, directory_url=self.upstream)
        return record

    def _insert(self, record: Any) -> None:
        row = _encode(record)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._connection.execute(
            f"INSERT INTO {_TABLES[type(record)]} ({columns}) VALUES ({marks})",
            tuple(row.values()),
        )

    def _replace(self, record: Any) -> None:
        row = _encode(record)
        del row["id"]
        assignments = ", ".join(f"{column} = ?" for column in row)
        self._connection.execute(
            f"UPDATE {_TABLES[type(record)]} SET {assignments} WHERE id = ?",
            (*row.values(), record.id),
        )

    def _check_new(self, record: Any, record_type: type) -> None:
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, not {record!r}")
        if self._exists(_TABLES[record_type], "id = ?", record.id):
            raise Conflict(f"{record_type.__name__} {record.id!r} already exists")

    def _changed(self, record_type: type, id: Any, changes: Dict[str, Any]) -> Any:
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

    def _check_authorization(self, authorization: Authorization) -> None:
        self._need_account(authorization.account_id)
        self._need_order(authorization.order_id, authorization.account_id)

    def _check_challenge(self, challenge: Challenge) -> None:
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

    def _check_certificate(self, certificate: Certificate) -> None:
        self._need_account(certificate.account_id)
        self._need_order(certificate.order_id, certificate.account_id)
        for id in certificate.issuer_ids:
            if not self._exists("issuers", "id = ?", id):
                raise NotFound(f"no issuer {id!r}")
        if self._exists(
            "certificates", "serial = ? AND id != ?", certificate.serial, certificate.id
        ):
            raise Conflict(f"serial {certificate.serial!r} is already stored")

    @staticmethod
    def _status_clause(statuses: Optional[Iterable[str]]) -> Tuple[str, Tuple[str, ...]]:
        wanted = normalize_statuses(statuses)
        if wanted is None:
            return "", ()
        if not wanted:
            return " AND 0", ()
        ordered = tuple(sorted(wanted))
        return f" AND status IN ({', '.join('?' for _ in ordered)})", ordered

    # -- Writes: every add_* and update_* is one operation of `write` --

    def _apply(self, operation: Any) -> Any:
        if isinstance(operation, Insert):
            record = operation.record
            if isinstance(record, Account):
                return self._insert_account(record)
            if isinstance(record, Issuer):
                return self._insert_issuer(record.der)
            for record_type, check in self._INSERT_CHECKS.items():
                if isinstance(record, record_type):
                    record = self._stamped(record)
                    self._check_new(record, record_type)
                    check(self, record)
                    self._insert(record)
                    return record
            raise TypeError(f"cannot insert {record!r}")
        if operation.record_type is Account:
            return self._update_account(operation.id, dict(operation.changes))
        check = self._UPDATE_CHECKS.get(operation.record_type)
        if check is None:
            raise TypeError(f"cannot update a {operation.record_type!r}")
        record = self._changed(operation.record_type, operation.id, dict(operation.changes))
        check(self, record)
        self._replace(record)
        return record

    def _insert_as(self, record_type: type, record: Any) -> Any:
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, not {record!r}")
        return self._apply(Insert(record))

    def _check_order(self, order: Order) -> None:
        self._need_account(order.account_id)

    def _check_attempt(self, attempt: OrderAttempt) -> None:
        self._need_account(attempt.account_id)

    def _no_check(self, record: Any) -> None:
        return None

    _INSERT_CHECKS = {
        Order: _check_order,
        Authorization: _check_authorization,
        Challenge: _check_challenge,
        Certificate: _check_certificate,
        OrderAttempt: _check_attempt,
    }
    _UPDATE_CHECKS = {
        Order: _no_check,
        Authorization: _check_authorization,
        Challenge: _check_challenge,
        Certificate: _check_certificate,
        OrderAttempt: _no_check,
    }

    # -- Accounts --

    def _account(self, where: str, *params: Any) -> Optional[Account]:
        """
        The account as the bound CA sees it: its ``upstream_url`` only when
        recorded at that CA.
        """
        row = self._connection.execute(
            f"SELECT * FROM accounts WHERE {where}", params
        ).fetchone()
        return None if row is None else self._presented(row)

    def _presented(self, row: sqlite3.Row) -> Account:
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
        cursor = self._connection.execute(
            f"INSERT INTO accounts ({', '.join(row)})"
            f" VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
        return attrs.evolve(account, id=cursor.lastrowid)

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
            self._connection.execute(
                f"UPDATE accounts SET {', '.join(f'{c} = ?' for c in row)} WHERE id = ?",
                (*row.values(), id),
            )
        return account

    def create_account(
        self,
        thumbprint: str,
        public_jwk: dict,
        contact: Iterable[str] = (),
        agreement: Optional[str] = None,
        initial_ip: str = "",
        upstream_url: Optional[str] = None,
        status: str = "valid",
    ) -> defer.Deferred:
        created_at = format_timestamp(self._reactor.seconds())
        try:
            # Validate with a provisional id; SQLite assigns the real one.
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
        return self._write(self._insert_account, account)

    def account_by_id(self, id: int) -> defer.Deferred:
        return self._call(self._account, "id = ?", id)

    def account_by_thumbprint(self, thumbprint: str) -> defer.Deferred:
        return self._call(self._account, "thumbprint = ?", thumbprint)

    def update_account(self, id: int, /, **changes: Any) -> defer.Deferred:
        return self._write(self._update_account, id, changes)

    def list_accounts(self) -> defer.Deferred:
        def work() -> List[Account]:
            rows = self._connection.execute("SELECT * FROM accounts ORDER BY id")
            return [self._presented(row) for row in rows]

        return self._call(work)

    # -- Orders --

    def add_order(self, order: Order) -> defer.Deferred:
        return self._write(self._insert_as, Order, order)

    def order_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Order, "id = ?", id)

    def update_order(self, id: str, /, **changes: Any) -> defer.Deferred:
        return self._write(self._apply, Update(Order, id, changes))

    def find_orders(
        self,
        account_id: int,
        identifiers: Iterable[str],
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred:
        def work() -> List[Order]:
            wanted = _json(normalize_identifiers(identifiers))
            clause, params = self._status_clause(statuses)
            where, values = self._scoped(
                "account_id = ? AND identifiers = ?" + clause, (account_id, wanted, *params))
            return newest_first(self._rows(Order, where, *values))

        return self._call(work)

    # -- Authorizations --

    def add_authorization(self, authorization: Authorization) -> defer.Deferred:
        return self._write(self._insert_as, Authorization, authorization)

    def authorization_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Authorization, "id = ?", id)

    def authorization_by_upstream_url(self, account_id: int, url: str) -> defer.Deferred:
        def work() -> Optional[Authorization]:
            where, values = self._scoped("account_id = ? AND upstream_url = ?", (account_id, url))
            matches = newest_first(self._rows(Authorization, where, *values))
            return matches[0] if matches else None

        return self._call(work)

    def update_authorization(self, id: str, /, **changes: Any) -> defer.Deferred:
        return self._write(self._apply, Update(Authorization, id, changes))

    def authorizations_for_order(self, order_id: str) -> defer.Deferred:
        def work() -> List[Authorization]:
            return [a for _, a in self._rows(Authorization, "order_id = ?", order_id)]

        return self._call(work)

    def find_authorizations(
        self,
        account_id: int,
        identifier: str,
        wildcard: bool,
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred:
        def work() -> List[Authorization]:
            clause, params = self._status_clause(statuses)
            where, values = self._scoped(
                "account_id = ? AND identifier = ? AND wildcard = ?" + clause,
                (account_id, normalize_identifier(identifier), int(bool(wildcard)), *params),
            )
            return newest_first(self._rows(Authorization, where, *values))

        return self._call(work)

    def order_times_since(self, account_id: int, since: str) -> defer.Deferred:
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
    ) -> defer.Deferred:
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

    def open_order_attempts(self) -> defer.Deferred:
        def work() -> List[OrderAttempt]:
            where, values = self._scoped(
                "status = ? AND id NOT IN (SELECT id FROM orders)", (ATTEMPT_OPEN,))
            found = [attempt for _, attempt in self._rows(OrderAttempt, where, *values)]
            return sorted(found, key=lambda a: timestamp_instant(a.created_at))

        return self._call(work)

    # -- Challenges --

    def add_challenge(self, challenge: Challenge) -> defer.Deferred:
        return self._write(self._insert_as, Challenge, challenge)

    def challenge_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Challenge, "id = ?", id)

    def challenges_for_authorization(self, authorization_id: str) -> defer.Deferred:
        def work() -> List[Challenge]:
            return [
                c
                for _, c in self._rows(
                    Challenge, "authorization_id = ?", authorization_id
                )
            ]

        return self._call(work)

    def update_challenge(self, id: str, /, **changes: Any) -> defer.Deferred:
        return self._write(self._apply, Update(Challenge, id, changes))

    # -- Certificates --

    def add_certificate(self, certificate: Certificate) -> defer.Deferred:
        return self._write(self._insert_as, Certificate, certificate)

    def certificate_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Certificate, "id = ?", id)

    def certificate_by_serial(self, serial: str) -> defer.Deferred:
        return self._call(self._one, Certificate, "serial = ?", serial)

    def update_certificate(self, id: str, /, **changes: Any) -> defer.Deferred:
        return self._write(self._apply, Update(Certificate, id, changes))

    def certificates_for_account(self, account_id: int) -> defer.Deferred:
        def work() -> List[Certificate]:
            return newest_first(
                self._rows(Certificate, "account_id = ?", account_id),
                attribute="issued_at",
            )

        return self._call(work)

    def orphaned_certificates(self) -> defer.Deferred:
        return self._call(_orphaned_certificates, self._connection)

    # -- Issuers --

    def _insert_issuer(self, der: bytes) -> Issuer:
        issuer = Issuer(id=issuer_id(der), der=der)
        stored = self._one(Issuer, "id = ?", issuer.id)
        if stored is None:
            self._insert(issuer)
            return issuer
        if stored.der != der:
            raise Conflict(f"issuer id {issuer.id!r} already holds another DER")
        return stored

    def add_issuer(self, der: bytes) -> defer.Deferred:
        return self._write(self._insert_issuer, der)

    def issuer_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Issuer, "id = ?", id)

    # -- The migration report --

    def record_client(self, visit: ClientVisit) -> defer.Deferred:
        return self.record_clients([visit]).addCallback(lambda clients: clients[0])

    def record_clients(self, visits) -> defer.Deferred:
        visits = list(visits)
        for visit in visits:
            if not isinstance(visit, ClientVisit):
                return defer.fail(TypeError(f"expected a ClientVisit, not {visit!r}"))

        def work() -> list:
            clients = []
            for visit in visits:
                row = self._connection.execute(
                    "SELECT * FROM clients WHERE address = ? AND user_agent = ?",
                    (visit.address, visit.user_agent),
                ).fetchone()
                client = merge_visit(None if row is None else _decode(LegacyClient, row), visit)
                values = _encode(client)
                self._connection.execute(
                    f"INSERT OR REPLACE INTO clients ({', '.join(values)})"
                    f" VALUES ({', '.join('?' for _ in values)})",
                    tuple(values.values()),
                )
                clients.append(client)
            return clients

        return self._write(work)

    def list_clients(self) -> defer.Deferred:
        return self._call(_list_clients, self._connection)

    # -- Operations --

    def count_authorizations(self, status: str, unexpired_at: Optional[str] = None) -> defer.Deferred:
        def work() -> int:
            where, values = self._scoped("status = ?", (status,))
            rows = self._connection.execute(
                f"SELECT expires FROM authorizations WHERE {where}", values
            ).fetchall()
            if unexpired_at is None:
                return len(rows)
            limit = timestamp_instant(unexpired_at)
            # Upstream expiries are spelled as the CA spells them, so they are
            # compared as instants here rather than as strings in SQL.
            return sum(
                1 for (expires,) in rows
                if expires is None or timestamp_instant(expires) > limit
            )

        return self._call(work)

    def inconsistencies(self) -> defer.Deferred:
        return self._call(_inconsistencies, self._connection, self._reactor.seconds())

    def check_writable(self) -> defer.Deferred:
        checked_at = format_timestamp(self._reactor.seconds())

        def work() -> None:
            self._connection.execute(
                "INSERT OR REPLACE INTO probes (id, checked_at) VALUES (1, ?)", (checked_at,)
            )

        return self._write(work)

    # -- Closing --

    def _close_for_shutdown(self) -> defer.Deferred:
        # The trigger is firing, so it must not be removed again in close().
        self._shutdown_trigger = None
        return self.close()

    def close(self) -> defer.Deferred:
        """
        Close the connection after every call already made, then stop the
        worker thread.  Later calls fail with `StoreError`.
        """
        if self._closing:
            waiter: defer.Deferred = defer.Deferred()
            if self._closed is not None and self._closed.called:
                waiter.callback(None)
            else:
                self._close_waiters.append(waiter)
            return waiter
        self._closing = True
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None

        def stop(result: Any) -> Any:
            # The worker has just finished the close job and is idle, so
            # joining it here does not hold up the reactor.
            self._pool.stop()
            for waiter in self._close_waiters:
                waiter.callback(None)
            del self._close_waiters[:]
            return result

        self._closed = deferToThreadPool(
            self._reactor, self._pool, self._connection.close
        ).addBoth(stop)
        return self._closed


def _list_clients(connection: sqlite3.Connection) -> List[LegacyClient]:
    rows = connection.execute("SELECT rowid AS _seq, * FROM clients").fetchall()
    return newest_first(
        ((row["_seq"], _decode(LegacyClient, row)) for row in rows), attribute="last_seen"
    )


def _orphaned_certificates(connection: sqlite3.Connection) -> List[Certificate]:
    rows = connection.execute(
        "SELECT rowid AS _seq, * FROM certificates WHERE orphaned = 1").fetchall()
    return newest_first(
        ((row["_seq"], _decode(Certificate, row)) for row in rows), attribute="issued_at"
    )


def _unexpired(expires: Optional[str], now: float) -> bool:
    return expires is None or timestamp_instant(expires).timestamp() > now


def _inconsistencies(connection: sqlite3.Connection, now: float) -> List[Finding]:
    """
    `IStore.inconsistencies` in SQL, for the store and for ``acme-gateway
    check`` (which reads a file the gateway may be using).
    """
    findings = []
    for row in connection.execute(
        "SELECT id, identifiers, created_at, directory_url FROM order_attempts"
        " WHERE status = ? AND id NOT IN (SELECT id FROM orders) ORDER BY rowid", (ATTEMPT_OPEN,)
    ):
        findings.append(Finding(
            UNSTORED_ORDER, "order_attempts", row["id"],
            f"newOrder for {', '.join(json.loads(row['identifiers']))} sent at "
            f"{row['created_at']}, its order never stored", row["directory_url"]))
    for row in connection.execute(
        "SELECT id, identifier, expires, directory_url FROM authorizations a"
        " WHERE status = 'pending'"
        " AND NOT EXISTS (SELECT 1 FROM challenges c WHERE c.authorization_id = a.id)"
        " ORDER BY rowid"
    ):
        if not _unexpired(row["expires"], now):
            continue
        findings.append(Finding(
            PARTIAL_AUTHORIZATION, "authorizations", row["id"],
            f"pending authorization for {row['identifier']} without challenges",
            row["directory_url"]))
    for row in connection.execute(
        "SELECT id, account_id, identifiers, authorization_urls, expires, directory_url"
        " FROM orders WHERE status IN ('pending', 'ready') ORDER BY rowid"
    ):
        if not _unexpired(row["expires"], now):
            continue
        urls = json.loads(row["authorization_urls"])
        if urls:
            missing = [url for url in urls if connection.execute(
                "SELECT 1 FROM authorizations WHERE account_id = ? AND upstream_url = ?",
                (row["account_id"], url)).fetchone() is None]
        else:
            linked = connection.execute(
                "SELECT 1 FROM authorizations WHERE order_id = ?", (row["id"],)).fetchone()
            missing = [] if linked else ["(unknown)"]
        if missing:
            findings.append(Finding(
                PARTIAL_ORDER, "orders", row["id"],
                f"order for {', '.join(json.loads(row['identifiers']))} without "
                f"{len(missing) if urls else 'any'} of its authorizations", row["directory_url"]))
    for table, rowid, parent, _ in connection.execute("PRAGMA foreign_key_check").fetchall():
        found = connection.execute(f"SELECT id FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        findings.append(Finding(
            ORPHAN_ROW, table, str(found[0] if found else rowid),
            f"refers to a missing row of {parent}"))
    return findings


@attrs.frozen
class StateCheck:
    """
    What ``acme-gateway check`` found in a state file.

    :ivar integrity: ``PRAGMA integrity_check``'s lines (``["ok"]`` when the
        file is intact).
    :ivar findings: the store's own consistency findings (`Finding`).
    :ivar counts: rows per table, for the summary.
    """

    integrity: Tuple[str, ...]
    findings: Tuple[Finding, ...]
    counts: Dict[str, int]

    @property
    def clean(self) -> bool:
        return self.integrity == ("ok",) and not self.findings


def check_state(path: "str | os.PathLike[str]") -> StateCheck:
    """
    Check the database at ``path`` without writing anything: SQLite's
    ``PRAGMA integrity_check``, then the store's consistency check (partial
    and orphaned rows, orders whose answer was lost; partial authorizations
    and orders past their expiry are dead at the CA too, and not reported).  Safe beside a running
    gateway, which may have a write in flight (an open order attempt is
    normal then).

    Synchronous: for the command line.

    :raises StoreError: when the file is missing, or not a database.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no gateway state at {path}")
    try:
        connection = sqlite3.connect(
            f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True
        )
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from None
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            integrity = tuple(row[0] for row in connection.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as error:
            return StateCheck((f"not a readable SQLite database: {error}",), (), {})
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, this gateway checks version "
                f"{SCHEMA_VERSION}: start the gateway on it once to migrate it")
        try:
            findings = tuple(_inconsistencies(connection, time.time()))
        except sqlite3.DatabaseError as error:
            findings = (Finding(ORPHAN_ROW, "-", "-", f"cannot read the rows: {error}"),)
        counts = {}
        for table in ("accounts", "orders", "authorizations", "challenges", "certificates",
                      "order_attempts"):
            try:
                counts[table] = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.DatabaseError:
                counts[table] = -1
        return StateCheck(integrity, findings, counts)
    except sqlite3.OperationalError as error:
        raise StoreError(f"cannot read {path}: {error}") from None
    finally:
        connection.close()


def read_orphaned_certificates(path: "str | os.PathLike[str]") -> List[Tuple[Certificate, str]]:
    """
    The orphaned certificates of the database at ``path``, each with its
    account's key thumbprint, read without writing anything, for
    ``acme-gateway report``.  Synchronous.
    """
    path = os.fspath(path)
    connection = sqlite3.connect(
        f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True
    )
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if connection.execute("PRAGMA user_version").fetchone()[0] < 3:
            return []
        thumbprints = dict(connection.execute("SELECT id, thumbprint FROM accounts").fetchall())
        return [(c, thumbprints.get(c.account_id, "")) for c in _orphaned_certificates(connection)]
    except sqlite3.Error as error:
        raise StoreError(f"cannot read {path}: {error}") from None
    finally:
        connection.close()


def read_clients(path: "str | os.PathLike[str]") -> List[LegacyClient]:
    """
    The migration report rows of the database at ``path``, read without
    writing anything (no migration, no WAL checkpoint), so that ``acme-gateway
    report`` can run beside a serving gateway, or on a copy of its volume.

    Synchronous: for the command line, never for the reactor thread.

    :raises StoreError: when the file is missing or is not a gateway database.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no gateway state at {path}")
    try:
        connection = sqlite3.connect(
            f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True
        )
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from None
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:
            # A gateway older than the report has recorded nobody yet.
            return []
        return _list_clients(connection)
    except sqlite3.Error as error:
        raise StoreError(f"cannot read {path}: {error}") from None
    finally:
        connection.close()
