"""
The PostgreSQL engine: one state for several gateway processes and replicas.

A fleet of legacy machines behind a load balancer needs several gateway
processes, on several hosts, sharing one state; PostgreSQL is the engine
operators already run for that.  What is PostgreSQL's own lives here,
behind `gateway.store.engine.Database`; the store itself is the same
`gateway.store.sql.SQLStore` as on SQLite.

- **Driver.**  psycopg 3, its synchronous API, in the store's own worker
  thread (`gateway.store.runners.ThreadRunner`) exactly as SQLite runs: the
  store's SQL is written once, synchronously, and the runner keeps it off
  the reactor.  psycopg's asyncio API would need an asyncio loop bridged to
  Twisted for no gain — one connection runs one statement at a time either
  way.
- **Write transactions exclude each other**, across replicas: each takes a
  transaction-level advisory lock first (``pg_advisory_xact_lock``), so a
  write transaction checks and writes as if alone, as SQLite's ``BEGIN
  IMMEDIATE`` does — the rate-limit budget's count-then-insert, a visit's
  read-merge-write and each migration step are exact with no race.  Reads
  take no lock.
- **Named locks** (`try_lock`) are session advisory locks of the store's
  connection: PostgreSQL releases them the moment that connection ends, so
  a replica killed with ``kill -9`` holds nothing the others wait for.
- **Non-durable commits** (``durable=False``: used nonces) set
  ``synchronous_commit = off`` for that transaction only.
- The schema version is a one-row table, insertion order a ``row_seq``
  identity column, new account ids ``RETURNING id``.

The password never appears in what the gateway prints: `StateURI` keeps it
apart from the URI it shows (from the URI itself, ``ACME_GATEWAY_STATE_PASSWORD``
or ``--state-password-file``), and errors are scrubbed of it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

import attrs
from twisted.internet import defer

from gateway.store.engine import Runner
from gateway.store.records import StoreError
from gateway.store.runners import ThreadRunner
from gateway.store.sql import SQLStore

T = TypeVar("T")

#: The URI schemes that name a PostgreSQL state (libpq's two spellings).
SCHEMES = ("postgresql://", "postgres://")

#: The environment variable a state password may come from.
PASSWORD_VARIABLE = "ACME_GATEWAY_STATE_PASSWORD"

#: The key of the advisory lock every write transaction takes first.
WRITE_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"acme-gateway write", digest_size=8).digest(),
                                "big", signed=True)

#: Seconds to wait for a connection before giving up.
CONNECT_TIMEOUT_SECONDS = 10


def is_postgresql(state: str) -> bool:
    """
    Whether ``--state`` names a PostgreSQL database rather than a file.
    """
    return state.startswith(SCHEMES)


@attrs.frozen
class StateURI:
    """
    A PostgreSQL ``--state``: the URI without its password (safe to show),
    and the password apart.

    :ivar shown: ``postgresql://USER@HOST[:PORT]/DB[?…]``, never with a
        password.
    """

    shown: str
    password: Optional[str] = attrs.field(default=None, repr=False)

    @classmethod
    def parse(cls, state: str, password: Optional[str] = None) -> "StateURI":
        """
        Split ``state``'s password off.  A ``password`` given apart (the
        environment, a file) wins over one in the URI.

        :raises ValueError: naming what is wrong, without the password.
        """
        if not is_postgresql(state):
            raise ValueError("expected a postgresql://USER[:PASSWORD]@HOST[:PORT]/DB URI")
        parts = urllib.parse.urlsplit(state)
        in_uri = urllib.parse.unquote(parts.password) if parts.password is not None else None
        netloc = parts.netloc.rpartition("@")
        userinfo, host = (netloc[0], netloc[2]) if netloc[1] else ("", netloc[2])
        user = userinfo.partition(":")[0]
        shown = urllib.parse.urlunsplit(
            (parts.scheme, f"{user}@{host}" if user else host, parts.path, parts.query, ""))
        if not parts.path.strip("/"):
            raise ValueError(f"{shown}: name the database, as in postgresql://USER@HOST/DB")
        return cls(shown, password if password is not None else in_uri)

    def scrub(self, text: str) -> str:
        """
        ``text`` with every occurrence of the password replaced.
        """
        if self.password:
            text = text.replace(self.password, "***")
            quoted = urllib.parse.quote(self.password, safe="")
            if quoted != self.password:
                text = text.replace(quoted, "***")
        return text


def state_password(password_file: Optional[str], environ: Mapping[str, str]) -> Optional[str]:
    """
    The state password from ``--state-password-file`` (its first line), else
    from ``ACME_GATEWAY_STATE_PASSWORD``, else `None`.

    :raises OSError: when the file cannot be read.
    """
    if password_file:
        with open(password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return environ.get(PASSWORD_VARIABLE) or None


class _Row:
    """
    A result row readable by column name or position, like ``sqlite3.Row``.
    """

    __slots__ = ("_names", "_values")

    def __init__(self, names: Dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: "str | int") -> Any:
        if isinstance(key, int):
            return self._values[key]
        return self._values[self._names[key]]

    def keys(self) -> List[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names: Dict[str, int] = {}
    for index, column in enumerate(cursor.description or ()):
        names.setdefault(column.name, index)
    return lambda values: _Row(names, values)


_converted: Dict[str, str] = {}


def to_pyformat(statement: str) -> str:
    """
    A statement written with ``?`` placeholders as psycopg takes it: ``%s``
    for each ``?`` and ``%%`` for each ``%``, outside quoted literals.
    """
    converted = _converted.get(statement)
    if converted is not None:
        return converted
    out = []
    quote: Optional[str] = None
    for char in statement:
        if quote is not None:
            if char == quote:
                quote = None
            out.append("%%" if char == "%" else char)
        elif char in ("'", '"'):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    converted = "".join(out)
    if len(_converted) < 4096:
        _converted[statement] = converted
    return converted


class PostgreSQLDatabase:
    """
    One PostgreSQL connection, as `gateway.store.sql.SQLStore` uses it.
    """

    column_types: Mapping[str, str] = {
        "serial_key": "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "bytes": "BYTEA",
        "row_order": ",\n        row_seq BIGINT GENERATED ALWAYS AS IDENTITY",
    }
    row_order = "row_seq"
    # Advisory locks are statements on the connection: run in the runner.
    locks_never_wait = False

    def __init__(self, uri: StateURI, connection: Any) -> None:
        self.uri = uri
        self.connection = connection
        self._held: Dict[int, int] = {}

    def _live(self) -> Any:
        """
        The connection, made again if the last one was lost (PostgreSQL
        restarted, a failover, an idle timeout): the statement that met the
        loss failed, the next one works.  The named locks of the lost
        session are gone with it, as PostgreSQL released them.
        """
        if self.connection.closed:
            self.connection = _connection(self.uri)
            self._held.clear()
        return self.connection

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> Any:
        cursor = self._live().cursor()
        cursor.execute(to_pyformat(statement), tuple(parameters))
        return cursor

    def transaction(self, work: Callable[[], T], durable: bool = True) -> T:
        connection = self._live()
        connection.execute("BEGIN")
        try:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            if not durable:
                connection.execute("SET LOCAL synchronous_commit = off")
            result = work()
            connection.execute("COMMIT")
        except BaseException:
            if not connection.closed:
                connection.execute("ROLLBACK")
            raise
        return result

    def insert_returning_id(self, table: str, row: Mapping[str, Any]) -> int:
        cursor = self.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"
            " RETURNING id",
            tuple(row.values()),
        )
        found = cursor.fetchone()
        assert found is not None
        return int(found[0])

    def restart_ids(self, table: str) -> None:
        self.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}")

    def schema_version(self) -> int:
        # pg_class read with the statement's snapshot, not to_regclass(),
        # whose catalog cache may not yet show a table another replica's
        # migration created while this one waited for the write lock.
        exists = self.execute(
            "SELECT count(*) FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'gateway_schema' AND n.nspname = current_schema()").fetchone()
        if not exists or not exists[0]:
            return 0
        row = self.execute("SELECT version FROM gateway_schema").fetchone()
        return 0 if row is None else int(row[0])

    def set_schema_version(self, version: int) -> None:
        self.execute(
            "CREATE TABLE IF NOT EXISTS gateway_schema"
            " (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL)")
        self.execute(
            "INSERT INTO gateway_schema (one, version) VALUES (1, ?)"
            " ON CONFLICT (one) DO UPDATE SET version = excluded.version", (int(version),))

    def broken_references(self) -> List[Tuple[str, str, str]]:
        # PostgreSQL checks every foreign key on every write; only an
        # operator who disabled triggers could leave a broken reference.
        return []

    def try_lock(self, name: str) -> bool:
        key = lock_key(name)
        if key in self._held:
            self._held[key] += 1
            return True
        row = self.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
        if not row or not row[0]:
            return False
        self._held[key] = 1
        return True

    def unlock(self, name: str) -> None:
        key = lock_key(name)
        count = self._held.get(key, 0)
        if count > 1:
            self._held[key] = count - 1
        elif count == 1:
            del self._held[key]
            self.execute("SELECT pg_advisory_unlock(?)", (key,))

    def defer_syncs(self) -> Optional[Callable[[], None]]:
        # The server syncs each commit; one WAL flush covers every session
        # committing at the time.
        return None

    def close(self) -> None:
        self.connection.close()


def lock_key(name: str) -> int:
    """
    The advisory lock key of a named lock (a signed 64-bit hash; the write
    lock's key is another).
    """
    key = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(),
                         "big", signed=True)
    return key if key != WRITE_LOCK_KEY else key ^ 1


def connect(uri: StateURI) -> PostgreSQLDatabase:
    """
    Connect to the database ``uri`` names (autocommit: the store begins its
    own transactions).  Runs in the store's runner.

    :raises StoreError: why not, without the password.
    """
    return PostgreSQLDatabase(uri, _connection(uri))


def _connection(uri: StateURI) -> Any:
    import psycopg

    try:
        return psycopg.connect(
            uri.shown, password=uri.password, autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="acme-gateway",
            row_factory=_row_factory)
    except psycopg.Error as error:
        raise StoreError(uri.scrub(f"cannot connect to {uri.shown}: {error}".strip())) from None


class PostgreSQLStore(SQLStore):
    """
    The store on PostgreSQL.  Make one with `open`.
    """

    @classmethod
    def open(cls, uri: StateURI, reactor: Any = None, close_on_shutdown: bool = True,
             upstream: Optional[str] = None,
             runner: Optional[Runner] = None) -> defer.Deferred["PostgreSQLStore"]:
        """
        Connect to ``uri``, migrate the schema (once, whichever replica
        starts first), and make the store.  See
        `gateway.store.sqlite.SQLiteStore.open` for the other arguments.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        if runner is None:
            runner = ThreadRunner(reactor, name=f"acme-gateway store {uri.shown}")

        def failed(failure: Any) -> Any:
            import psycopg

            error = failure.value
            if isinstance(error, psycopg.Error):
                raise StoreError(uri.scrub(f"{uri.shown}: {error}".strip()))
            return failure

        opened: defer.Deferred[PostgreSQLStore] = cls._open(
            lambda: connect(uri), runner, reactor, close_on_shutdown, upstream)
        return opened.addErrback(failed)


def open_uri(state: str, environ: Optional[Mapping[str, str]] = None,
             password_file: Optional[str] = None) -> StateURI:
    """
    The `StateURI` of a ``--state`` value, with its password from the file,
    the environment or the URI.
    """
    return StateURI.parse(
        state, state_password(password_file, os.environ if environ is None else environ))


# --- Reads for the command line (``report``, ``check``) -----------------------------


def _connect_for_reading(state: str, environ: Mapping[str, str]) -> Tuple[StateURI,
                                                                          PostgreSQLDatabase]:
    uri = StateURI.parse(state, state_password(None, environ))
    return uri, connect(uri)


def read_report(state: str, environ: Mapping[str, str]) -> Tuple[List[Any], List[Tuple[Any, str]]]:
    """
    The migration report's clients, and the orphaned certificates with
    their account thumbprints, of the PostgreSQL state ``state``; reads
    only, beside running replicas.

    :raises StoreError: without the password.
    """
    from gateway.store.sql import list_clients_in, orphaned_certificates_in

    uri, database = _connect_for_reading(state, environ)
    try:
        thumbprints = {row["id"]: row["thumbprint"]
                       for row in database.execute("SELECT id, thumbprint FROM accounts")}
        orphans = [(c, thumbprints.get(c.account_id, ""))
                   for c in orphaned_certificates_in(database)]
        return list_clients_in(database), orphans
    except Exception as error:
        raise StoreError(uri.scrub(f"cannot read {uri.shown}: {error}")) from None
    finally:
        database.close()


def read_inventory_uri(state: str, environ: Mapping[str, str]
                       ) -> Tuple[List[Any], List[Any], Dict[int, str]]:
    """
    The renewal inventory of the PostgreSQL state ``state`` (as
    `gateway.store.sqlite.read_inventory` reads an SQLite file): the
    current certificates, the suggested renewal windows and each account's
    key thumbprint by id; reads only, beside running replicas.

    :raises StoreError: without the password.
    """
    from gateway.store.sql import current_certificates_in, renewal_windows_in

    uri, database = _connect_for_reading(state, environ)
    try:
        thumbprints = {row["id"]: row["thumbprint"]
                       for row in database.execute("SELECT id, thumbprint FROM accounts")}
        return current_certificates_in(database), renewal_windows_in(database), thumbprints
    except Exception as error:
        raise StoreError(uri.scrub(f"cannot read {uri.shown}: {error}")) from None
    finally:
        database.close()


def check_uri(state: str, environ: Mapping[str, str]) -> Any:
    """
    ``acme-gateway check`` of a PostgreSQL state: the store's consistency
    check (PostgreSQL keeps its own pages and references whole).
    """
    import time

    import psycopg

    from gateway.store.schema import SCHEMA_VERSION
    from gateway.store.sql import check_database

    uri, database = _connect_for_reading(state, environ)
    try:
        version = database.schema_version()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{uri.shown} has schema version {version}, this gateway checks version "
                f"{SCHEMA_VERSION}: start the gateway on it once to migrate it")
        return check_database(database, ("ok",), time.time(), psycopg.Error)
    finally:
        database.close()
