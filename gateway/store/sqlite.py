"""
The SQLite engine: the gateway's state in one file, written durably.

What is SQLite's own lives here, behind `gateway.store.engine.Database`:
the file made private before SQLite opens it, the connection's settings
(WAL; ``synchronous=FULL`` for a durable transaction — an issued
certificate must survive a power failure — and ``NORMAL`` for the rest, whose
commits the next durable one syncs with it — or, on a file, every commit
``NORMAL`` and the durable ones of a batch of work synced together by one
fsync of the log before any of their results is delivered (`defer_syncs`);
foreign keys, a busy timeout), ``BEGIN IMMEDIATE`` for write transactions,
``PRAGMA user_version`` for the schema version, ``rowid`` for insertion
order, ``lastrowid`` for new account ids, ``PRAGMA foreign_key_check`` and
``PRAGMA integrity_check``, and named locks across the processes of one
host (``--workers``) as POSIX record locks on a file beside the database,
which the kernel releases when their process dies; on the same file, the
writers of those processes take turns (`SQLiteDatabase._take_turn`).  The store itself is
`gateway.store.sql.SQLStore`.

`SQLiteStore.open` runs the store in a thread of its own (the reactor never
waits for SQLite); `SQLiteStore.inline` runs it in the calling thread, for
unit tests, usually on ``":memory:"``.  The read-only functions at the end
serve the command line (``acme-gateway check`` and ``report``), beside a
running gateway.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

from twisted.internet import defer
from twisted.logger import Logger

from gateway.store.engine import Runner
from gateway.store.records import Certificate, LegacyClient, RenewalWindow, StoreError
from gateway.store.runners import InlineRunner, ThreadRunner
from gateway.store.schema import SCHEMA_VERSION, migrate
from gateway.store.sql import (
    SQLStore,
    StateCheck,
    check_database,
    current_certificates_in,
    list_clients_in,
    renewal_windows_in,
    orphaned_certificates_in,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "SCHEMA_VERSION",
    "SQLiteDatabase",
    "SQLiteStore",
    "StateCheck",
    "check_state",
    "read_clients",
    "read_inventory",
    "read_orphaned_certificates",
]

log = Logger()

T = TypeVar("T")

#: How long a statement waits for a lock held by another process (an
#: operator's ``sqlite3`` shell, a backup) before failing, in milliseconds.
BUSY_TIMEOUT_MS = 5000

#: The byte of the lock file that stands for the writer's turn: past every
#: named lock's byte (`_lock_offset` gives at most 2**62 - 1).
WRITER_TURN_OFFSET = 2 ** 62
#: A waiting writer looks again after 0.1 ms, then 0.2, 0.4, 0.8, and every
#: 1 ms from then on.
TURN_POLL_MIN_SECONDS = 0.0001
TURN_POLL_MAX_SECONDS = 0.001


class SQLiteDatabase:
    """
    One SQLite connection, as `gateway.store.sql.SQLStore` uses it.
    """

    column_types: Mapping[str, str] = {
        "serial_key": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "bytes": "BLOB",
        # Every SQLite table has its insertion order already: rowid.
        "row_order": "",
    }
    row_order = "rowid"
    # A non-blocking lockf on a file of its own: a system call, no SQLite.
    locks_never_wait = True

    def __init__(self, connection: sqlite3.Connection, lock_path: Optional[str] = None,
                 path: Optional[str] = None) -> None:
        self.connection = connection
        self._lock_path = lock_path
        self._lock_file: Optional[int] = None
        self._held: Dict[int, int] = {}
        #: The connection's ``synchronous`` setting now (FULL when opened).
        self._synchronous = "FULL"
        #: The database file, when its syncs are grouped (`defer_syncs`).
        self._path = path
        self._syncs_deferred = False
        #: Whether a durable commit waits for the next `_sync`.
        self._unsynced = False
        #: The lock file as the store's thread uses it, for the writer's turn
        #: (a descriptor of its own: ``_lock_file`` is the reactor thread's).
        self._writer_file: Optional[int] = None
        #: How many times a write transaction found another process's turn
        #: and waited (for tests and the benchmark's probes).
        self.turn_waits = 0
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.connection.execute(statement, tuple(parameters))

    def transaction(self, work: Callable[[], T], durable: bool = True) -> T:
        # In WAL mode FULL syncs the log at the commit — and with it every
        # commit before, which NORMAL left to the next checkpoint: one fsync
        # covers the durable transaction and the ones that need not be.
        # (The setting cannot change inside a transaction.)
        synchronous = "FULL" if durable and not self._syncs_deferred else "NORMAL"
        if synchronous != self._synchronous:
            self.connection.execute(f"PRAGMA synchronous = {synchronous}")
            self._synchronous = synchronous
        # BEGIN IMMEDIATE takes the write lock up front, so the checks
        # ``work`` makes before writing cannot be invalidated by another
        # process (a --workers sibling waits up to BUSY_TIMEOUT_MS).
        # The writer's turn is taken on the lock file first (`_take_turn`),
        # so the sibling's BEGIN finds SQLite's lock free and never sleeps
        # in SQLite's busy handler.
        turn = self._take_turn()
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self.connection.execute("COMMIT")
            except BaseException:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                raise
        finally:
            if turn is not None:
                fcntl.lockf(turn, fcntl.LOCK_UN, 1, WRITER_TURN_OFFSET)
        if durable and self._syncs_deferred:
            self._unsynced = True
        return result

    def _take_turn(self) -> Optional[int]:
        """
        Wait for the writer's turn among the processes on this database (a
        record lock on the lock file, held for one write transaction), in
        steps of at most `TURN_POLL_MAX_SECONDS`; give up waiting after the
        busy timeout and let ``BEGIN IMMEDIATE`` wait on its own.

        Why: SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms and more
        between tries, while a sibling worker holds its write lock for under
        a millisecond; at 32 clients on ``--workers 2`` one ``BEGIN`` in 40
        waited 5-9 ms (p99) and up to 188 ms (issue 15, fifth round), every
        call of that worker queued behind it.  A waiter here looks again
        within `TURN_POLL_MAX_SECONDS` of the release.

        Only whole processes take turns (record locks are a process's): one
        process's store runs its transactions one at a time already, in its
        thread.  Returns the descriptor the turn is held on, to let it go;
        ``None`` when there is no lock file (``":memory:"``) or the turn was
        not had in time (the transaction goes ahead on SQLite's own lock, as
        it did before).
        """
        if self._lock_path is None:
            return None
        if self._writer_file is None:
            self._writer_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        writer_file = self._writer_file
        deadline = None
        pause = TURN_POLL_MIN_SECONDS
        while True:
            try:
                fcntl.lockf(writer_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1,
                            WRITER_TURN_OFFSET)
            except OSError:
                now = self._clock()
                if deadline is None:
                    deadline = now + BUSY_TIMEOUT_MS / 1000
                elif now >= deadline:
                    return None
                self.turn_waits += 1
                self._sleep(pause)
                pause = min(pause * 2, TURN_POLL_MAX_SECONDS)
                continue
            return writer_file

    def defer_syncs(self) -> Optional[Callable[[], None]]:
        if self._path is None:
            return None
        self._syncs_deferred = True
        return self._sync

    def _sync(self) -> None:
        """
        Make every commit so far durable, if a durable one waits: one fsync
        of the write-ahead log, as ``synchronous=FULL`` makes at each
        commit (what an earlier checkpoint moved to the database file, the
        checkpoint synced).
        """
        if not self._unsynced:
            return
        assert self._path is not None
        try:
            fd = os.open(self._path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            # No log: every commit is in the database file.
            fd = os.open(self._path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._unsynced = False

    def try_lock(self, name: str) -> bool:
        # Runs in the reactor thread (``locks_never_wait``): LOCK_NB never
        # waits, and only the reactor thread touches ``_held`` and the lock
        # file until `close` (which the store calls once it takes no more
        # calls).
        if self._lock_path is None:
            # ":memory:" is this process's alone.
            return True
        offset = _lock_offset(name)
        if offset in self._held:
            self._held[offset] += 1
            return True
        if self._lock_file is None:
            self._lock_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            return False
        self._held[offset] = 1
        return True

    def unlock(self, name: str) -> None:
        if self._lock_path is None:
            return
        offset = _lock_offset(name)
        count = self._held.get(offset, 0)
        if count > 1:
            self._held[offset] = count - 1
        elif count == 1:
            del self._held[offset]
            assert self._lock_file is not None
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN, 1, offset)

    def insert_returning_id(self, table: str, row: Mapping[str, Any]) -> int:
        cursor = self.connection.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
            tuple(row.values()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def restart_ids(self, table: str) -> None:
        # AUTOINCREMENT's counter (sqlite_sequence) follows inserted ids.
        pass

    def schema_version(self) -> int:
        return int(self.connection.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.connection.execute(f"PRAGMA user_version = {int(version)}")

    def broken_references(self) -> List[Tuple[str, str, str]]:
        found = []
        for table, rowid, parent, _ in self.connection.execute(
                "PRAGMA foreign_key_check").fetchall():
            row = self.connection.execute(
                f"SELECT id FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            found.append((table, str(row[0] if row else rowid), parent))
        return found

    def close(self) -> None:
        self.connection.close()
        if self._writer_file is not None:
            os.close(self._writer_file)
            self._writer_file = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
            self._held.clear()


def _lock_offset(name: str) -> int:
    """
    The byte of the lock file that stands for the lock ``name``: a 62-bit
    hash, so that two names share a byte (and a lock) practically never.
    """
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(),
                          "big") >> 2


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


def connect(path: str) -> SQLiteDatabase:
    """
    Open and set up a connection to the database at ``path`` (``":memory:"``
    for a throwaway one, which starts as a copy of `_migrated_template`).
    Runs in the store's runner.
    """
    if path != ":memory:":
        _create_private(path)
    # isolation_level=None: the module starts no transactions by itself;
    # SQLiteDatabase.transaction does.  check_same_thread=False is safe
    # because only the store's runner ever uses the connection.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = use_wal(connection)
        if path != ":memory:" and mode.lower() != "wal":
            raise StoreError(f"cannot use WAL journal mode on {path} (got {mode})")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        if path == ":memory:":
            with _template_lock:
                _migrated_template().backup(connection)
    except BaseException:
        connection.close()
        raise
    if path == ":memory:":
        return SQLiteDatabase(connection)
    # The file's absolute name, for its syncs: a later chdir must not move them.
    return SQLiteDatabase(connection, path + ".locks", os.path.abspath(path))


def use_wal(connection: sqlite3.Connection, timeout: float = BUSY_TIMEOUT_MS / 1000,
            clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> str:
    """
    Switch ``connection``'s database to WAL and return the journal mode it
    then has.

    Processes that open a new database at once (the workers of
    ``--workers`` on a fresh ``--state``) all ask for the switch, which
    needs the file to themselves.  SQLite answers ``SQLITE_BUSY`` at once, without
    its busy handler, to all but one of those that hold a read lock when
    they ask (waiting could deadlock them), so the busy timeout does not
    cover this: the switch is retried here, with a short back-off, until
    ``timeout`` seconds have passed.
    """
    deadline = clock() + timeout
    delay = 0.001
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or clock() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 2, 0.05)


_template: List[sqlite3.Connection] = []
_template_lock = threading.Lock()


def _migrated_template() -> sqlite3.Connection:
    """
    An empty ``:memory:`` database brought to `SCHEMA_VERSION` by the
    migrations, once per process.  Unit tests open a throwaway store for
    nearly every test; copying this one's pages (with its schema version)
    is some twenty times faster than running every migration again.  Call
    with `_template_lock` held.
    """
    if not _template:
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        migrate(SQLiteDatabase(connection))
        _template.append(connection)
    return _template[0]


class SQLiteStore(SQLStore):
    """
    The store on SQLite.  Make one with `open` (or `inline`).
    """

    @classmethod
    def open(cls, path: "str | os.PathLike[str]", reactor: Any = None,
             close_on_shutdown: bool = True, upstream: Optional[str] = None,
             runner: Optional[Runner] = None) -> defer.Deferred["SQLiteStore"]:
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
        :param runner: where the SQL runs; by default a thread of the
            store's own (`gateway.store.runners.ThreadRunner`).
        :return: a Deferred firing with the `SQLiteStore`.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        path = os.fspath(path)
        if runner is None:
            runner = ThreadRunner(reactor, name=f"acme-gateway store {path}")
        return cls._open(lambda: connect(path), runner, reactor, close_on_shutdown, upstream)

    @classmethod
    def inline(cls, path: "str | os.PathLike[str]" = ":memory:", clock: Any = None,
               upstream: Optional[str] = None) -> "SQLiteStore":
        """
        A store whose SQL runs in the calling thread, each Deferred fired
        when its method returns: for unit tests, which then need no running
        reactor and no thread.  Never for the reactor thread of a gateway.

        :param clock: what timestamps new accounts (``seconds()``, a
            ``twisted.internet.task.Clock`` in tests); the system clock by
            default.
        :raises StoreError: as `open` fails.
        """
        opened = cls.open(path, _WallClock() if clock is None else clock,
                          upstream=upstream, runner=InlineRunner())
        outcome: List[Any] = []
        opened.addBoth(outcome.append)
        (result,) = outcome
        if isinstance(result, SQLiteStore):
            return result
        result.raiseException()
        raise AssertionError("unreachable")


class _WallClock:
    """
    The system clock, for an inline store made without one.
    """

    def seconds(self) -> float:
        return time.time()


# --- Read-only views for the command line ------------------------------------------


def _read_only(path: str) -> sqlite3.Connection:
    """
    A connection that never writes (no migration, no WAL checkpoint), so
    the command line can read beside a serving gateway or a copy of its
    volume.

    :raises StoreError: when the file is missing, or cannot be opened.
    """
    if not os.path.isfile(path):
        raise StoreError(f"no gateway state at {path}")
    try:
        connection = sqlite3.connect(
            f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True
        )
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from None
    connection.row_factory = sqlite3.Row
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


def check_state(path: "str | os.PathLike[str]") -> StateCheck:
    """
    Check the database at ``path`` without writing anything: SQLite's
    ``PRAGMA integrity_check``, then the store's consistency check (partial
    and orphaned rows, orders whose answer was lost; partial authorizations
    and orders past their expiry are dead at the CA too, and not reported).
    Safe beside a running gateway, which may have a write in flight (an
    open order attempt is normal then).

    Synchronous: for the command line.

    :raises StoreError: when the file is missing, or not a database.
    """
    path = os.fspath(path)
    connection = _read_only(path)
    try:
        try:
            integrity = tuple(row[0] for row in connection.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as error:
            return StateCheck((f"not a readable SQLite database: {error}",), (), {})
        database = SQLiteDatabase(connection)
        version = database.schema_version()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, this gateway checks version "
                f"{SCHEMA_VERSION}: start the gateway on it once to migrate it")
        return check_database(database, integrity, time.time(), sqlite3.DatabaseError)
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
    connection = _read_only(path)
    try:
        database = SQLiteDatabase(connection)
        if database.schema_version() < 3:
            return []
        thumbprints = {row["id"]: row["thumbprint"]
                       for row in database.execute("SELECT id, thumbprint FROM accounts")}
        return [(c, thumbprints.get(c.account_id, "")) for c in orphaned_certificates_in(database)]
    except sqlite3.Error as error:
        raise StoreError(f"cannot read {path}: {error}") from None
    finally:
        connection.close()


def read_inventory(path: "str | os.PathLike[str]"
                   ) -> Tuple[List[Certificate], List[RenewalWindow], Dict[int, str]]:
    """
    The renewal inventory of the database at ``path`` (`gateway.store.
    interface.IStore.current_certificates`), the suggested renewal windows,
    and each account's key thumbprint by id, read without writing
    anything, for ``acme-gateway report``.  Synchronous.
    """
    path = os.fspath(path)
    connection = _read_only(path)
    try:
        database = SQLiteDatabase(connection)
        if database.schema_version() < 5:
            return [], [], {}
        thumbprints = {row["id"]: row["thumbprint"]
                       for row in database.execute("SELECT id, thumbprint FROM accounts")}
        return current_certificates_in(database), renewal_windows_in(database), thumbprints
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
    connection = _read_only(path)
    try:
        database = SQLiteDatabase(connection)
        if database.schema_version() < 2:
            # A gateway older than the report has recorded nobody yet.
            return []
        return list_clients_in(database)
    except sqlite3.Error as error:
        raise StoreError(f"cannot read {path}: {error}") from None
    finally:
        connection.close()
