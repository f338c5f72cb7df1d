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
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gateway.store.interface import IStore
from gateway.store.memory import ID_BYTES
from gateway.store.records import (
    Account,
    Authorization,
    Certificate,
    Challenge,
    ClientVisit,
    Conflict,
    DuplicateAccount,
    Issuer,
    LegacyClient,
    NotFound,
    Order,
    StoreError,
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

log = Logger()

#: How long a statement waits for a lock held by another process (an
#: operator's ``sqlite3`` shell, a backup) before failing, in milliseconds.
BUSY_TIMEOUT_MS = 5000

#: The schema version this code writes, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 2

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

#: Statements that bring a database from version N-1 to N, keyed by N.  A new
#: schema version adds an entry here and bumps `SCHEMA_VERSION`.
MIGRATIONS: Dict[int, Sequence[str]] = {1: _SCHEMA_1, 2: _SCHEMA_2}

_TABLES = {
    Account: "accounts",
    Order: "orders",
    Authorization: "authorizations",
    Challenge: "challenges",
    Certificate: "certificates",
    Issuer: "issuers",
    LegacyClient: "clients",
}

# Tuples and dicts are stored as JSON text, booleans as INTEGER, bytes as BLOB.
_JSON_FIELDS = frozenset(
    {"public_jwk", "contact", "identifiers", "issuer_ids", "thumbprints", "names"}
)
_BOOL_FIELDS = frozenset({"wildcard"})


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


def _connect(path: str) -> sqlite3.Connection:
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
    except BaseException:
        connection.close()
        raise
    return connection


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
    _closing: bool = attrs.field(default=False, init=False)
    _closed: Optional[defer.Deferred] = attrs.field(default=None, init=False)
    _close_waiters: List[defer.Deferred] = attrs.field(factory=list, init=False)
    _shutdown_trigger: Any = attrs.field(default=None, init=False)

    @classmethod
    def open(cls, path: "str | os.PathLike[str]", reactor: Any = None,
             close_on_shutdown: bool = True) -> defer.Deferred:
        """
        Open (creating and migrating as needed) the database at ``path``.

        :param path: the database file, created with mode 0600 if absent;
            ``":memory:"`` for a throwaway database.
        :param reactor: the reactor results are delivered on, whose clock
            timestamps new accounts; the global one by default.  If it is an
            `IReactorCore`, the store closes itself before it shuts down,
            unless ``close_on_shutdown`` is false (an owner that must finish
            requests in flight first closes it itself).
        :return: a Deferred firing with the `SQLiteStore`.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        path = os.fspath(path)
        pool = ThreadPool(minthreads=1, maxthreads=1, name=f"acme-gateway store {path}")
        pool.start()

        def opened(connection: sqlite3.Connection) -> "SQLiteStore":
            store = cls(reactor, pool, connection)
            if close_on_shutdown and IReactorCore.providedBy(reactor):
                store._shutdown_trigger = reactor.addSystemEventTrigger(
                    "before", "shutdown", store._close_for_shutdown
                )
            return store

        def failed(failure: Any) -> Any:
            pool.stop()
            return failure

        return deferToThreadPool(reactor, pool, _connect, path).addCallbacks(
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

    # -- Accounts --

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

        def work() -> Account:
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
            if self._exists("accounts", "thumbprint = ?", thumbprint):
                raise DuplicateAccount(
                    f"thumbprint {thumbprint!r} is already registered"
                )
            row = _encode(account)
            del row["id"]
            cursor = self._connection.execute(
                f"INSERT INTO accounts ({', '.join(row)})"
                f" VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
            return attrs.evolve(account, id=cursor.lastrowid)

        return self._write(work)

    def account_by_id(self, id: int) -> defer.Deferred:
        return self._call(self._one, Account, "id = ?", id)

    def account_by_thumbprint(self, thumbprint: str) -> defer.Deferred:
        return self._call(self._one, Account, "thumbprint = ?", thumbprint)

    def update_account(self, id: int, /, **changes: Any) -> defer.Deferred:
        def work() -> Account:
            account = self._changed(Account, id, changes)
            if self._exists(
                "accounts", "thumbprint = ? AND id != ?", account.thumbprint, id
            ):
                raise DuplicateAccount(
                    f"thumbprint {account.thumbprint!r} is already registered"
                )
            self._replace(account)
            return account

        return self._write(work)

    def list_accounts(self) -> defer.Deferred:
        def work() -> List[Account]:
            rows = self._connection.execute("SELECT * FROM accounts ORDER BY id")
            return [_decode(Account, row) for row in rows]

        return self._call(work)

    # -- Orders --

    def add_order(self, order: Order) -> defer.Deferred:
        def work() -> Order:
            self._check_new(order, Order)
            self._need_account(order.account_id)
            self._insert(order)
            return order

        return self._write(work)

    def order_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Order, "id = ?", id)

    def update_order(self, id: str, /, **changes: Any) -> defer.Deferred:
        def work() -> Order:
            order = self._changed(Order, id, changes)
            self._replace(order)
            return order

        return self._write(work)

    def find_orders(
        self,
        account_id: int,
        identifiers: Iterable[str],
        statuses: Optional[Iterable[str]] = None,
    ) -> defer.Deferred:
        def work() -> List[Order]:
            wanted = _json(normalize_identifiers(identifiers))
            clause, params = self._status_clause(statuses)
            return newest_first(
                self._rows(
                    Order,
                    "account_id = ? AND identifiers = ?" + clause,
                    account_id,
                    wanted,
                    *params,
                )
            )

        return self._call(work)

    # -- Authorizations --

    def add_authorization(self, authorization: Authorization) -> defer.Deferred:
        def work() -> Authorization:
            self._check_new(authorization, Authorization)
            self._check_authorization(authorization)
            self._insert(authorization)
            return authorization

        return self._write(work)

    def authorization_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Authorization, "id = ?", id)

    def authorization_by_upstream_url(self, account_id: int, url: str) -> defer.Deferred:
        def work() -> Optional[Authorization]:
            matches = newest_first(
                self._rows(
                    Authorization, "account_id = ? AND upstream_url = ?", account_id, url
                )
            )
            return matches[0] if matches else None

        return self._call(work)

    def update_authorization(self, id: str, /, **changes: Any) -> defer.Deferred:
        def work() -> Authorization:
            authorization = self._changed(Authorization, id, changes)
            self._check_authorization(authorization)
            self._replace(authorization)
            return authorization

        return self._write(work)

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
            return newest_first(
                self._rows(
                    Authorization,
                    "account_id = ? AND identifier = ? AND wildcard = ?" + clause,
                    account_id,
                    normalize_identifier(identifier),
                    int(bool(wildcard)),
                    *params,
                )
            )

        return self._call(work)

    def order_times_since(self, account_id: int, since: str) -> defer.Deferred:
        moment = timestamp_instant(since)

        def work() -> List[str]:
            rows = self._rows(Order, "account_id = ?", account_id)
            found = [order.created_at for _, order in rows
                     if timestamp_instant(order.created_at) >= moment]
            return sorted(found, key=timestamp_instant)

        return self._call(work)

    def authorizations_with_status(
        self, status: str, account_id: Optional[int] = None, created_before: Optional[str] = None
    ) -> defer.Deferred:
        moment = timestamp_instant(created_before) if created_before else None

        def work() -> List[Authorization]:
            if account_id is None:
                rows = self._rows(Authorization, "status = ?", status)
            else:
                rows = self._rows(Authorization, "status = ? AND account_id = ?", status, account_id)
            found = [
                authz for _, authz in rows
                if moment is None or timestamp_instant(authz.created_at) < moment
            ]
            return sorted(found, key=lambda a: timestamp_instant(a.created_at))

        return self._call(work)

    # -- Challenges --

    def add_challenge(self, challenge: Challenge) -> defer.Deferred:
        def work() -> Challenge:
            self._check_new(challenge, Challenge)
            self._check_challenge(challenge)
            self._insert(challenge)
            return challenge

        return self._write(work)

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
        def work() -> Challenge:
            challenge = self._changed(Challenge, id, changes)
            self._check_challenge(challenge)
            self._replace(challenge)
            return challenge

        return self._write(work)

    # -- Certificates --

    def add_certificate(self, certificate: Certificate) -> defer.Deferred:
        def work() -> Certificate:
            self._check_new(certificate, Certificate)
            self._check_certificate(certificate)
            self._insert(certificate)
            return certificate

        return self._write(work)

    def certificate_by_id(self, id: str) -> defer.Deferred:
        return self._call(self._one, Certificate, "id = ?", id)

    def certificate_by_serial(self, serial: str) -> defer.Deferred:
        return self._call(self._one, Certificate, "serial = ?", serial)

    def update_certificate(self, id: str, /, **changes: Any) -> defer.Deferred:
        def work() -> Certificate:
            certificate = self._changed(Certificate, id, changes)
            self._check_certificate(certificate)
            self._replace(certificate)
            return certificate

        return self._write(work)

    def certificates_for_account(self, account_id: int) -> defer.Deferred:
        def work() -> List[Certificate]:
            return newest_first(
                self._rows(Certificate, "account_id = ?", account_id),
                attribute="issued_at",
            )

        return self._call(work)

    # -- Issuers --

    def add_issuer(self, der: bytes) -> defer.Deferred:
        def work() -> Issuer:
            issuer = Issuer(id=issuer_id(der), der=der)
            stored = self._one(Issuer, "id = ?", issuer.id)
            if stored is None:
                self._insert(issuer)
                return issuer
            if stored.der != der:
                raise Conflict(f"issuer id {issuer.id!r} already holds another DER")
            return stored

        return self._write(work)

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
            rows = self._connection.execute(
                "SELECT expires FROM authorizations WHERE status = ?", (status,)
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
