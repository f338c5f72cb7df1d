"""
What the SQL store needs of a database engine, and of whatever runs its
calls.

`gateway.store.sql.SQLStore` is written once, in SQL that both SQLite and
PostgreSQL run.  Everything else an engine decides — connecting, its
settings, how a write transaction starts and excludes other writers (other
processes and replicas included), how placeholders are spelled, how a new
integer id is read back, how a schema version is kept, how broken
references and a damaged file are found, and how named locks are held
across processes — sits behind `Database`, one implementation per engine
(`gateway.store.sqlite.SQLiteDatabase`,
`gateway.store.postgresql.PostgreSQLDatabase`).

Blocking calls never run on the reactor thread: the store hands each unit of
work to a `Runner` (`gateway.store.runners`): one worker thread in
production, the calling thread in unit tests.

This module holds only protocols, so that importing it costs nothing.
"""

from __future__ import annotations

from typing import (
    Any, Callable, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple, TypeVar,
)

from twisted.internet.defer import Deferred

T = TypeVar("T")


class Row(Protocol):
    """
    One result row, whose columns are read by name (or position).
    """

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> List[str]: ...


class Cursor(Protocol):
    """
    The result of `Database.execute`.
    """

    @property
    def rowcount(self) -> int:
        """
        Rows the last statement inserted or changed (an ``INSERT … ON
        CONFLICT DO NOTHING`` that inserted nothing: 0).
        """

    def fetchone(self) -> Optional[Row]: ...

    def fetchall(self) -> List[Row]: ...

    def __iter__(self) -> Iterator[Row]: ...


class Database(Protocol):
    """
    One open connection to a gateway database, used from one thread at a
    time (the store's runner).
    """

    #: How the engine spells the schema's ``{name}`` placeholders
    #: (`gateway.store.schema`).
    column_types: Mapping[str, str]

    #: A column expression that orders a table's rows by insertion (ties
    #: between records made in the same second; "insertion order" results).
    row_order: str

    #: Whether `try_lock` and `unlock` neither wait nor use the connection
    #: (SQLite's record locks on a file of their own), so that the store
    #: runs them in the calling thread: handing each to the runner's thread
    #: cost more than the lock itself — a v1 ``new-authz`` takes and gives
    #: back four named locks (issue 15).  `False`: they run in the runner,
    #: in order with the rest (PostgreSQL's advisory locks are statements).
    locks_never_wait: bool

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> Cursor:
        """
        Run one statement, with ``?`` for each parameter (the engine
        translates them to its own placeholders).
        """

    def transaction(self, work: Callable[[], T], durable: bool = True) -> T:
        """
        Run ``work`` in a write transaction, committed before returning and
        rolled back if it raises.  The transaction holds the write lock from
        its start — against every other connection, in this process or any
        other, on this host or another — so what ``work`` checks before
        writing cannot change under it, and write transactions are
        serialisable.

        :param durable: whether the commit must survive a power failure
            when it returns.  A commit that need not (``False``: rows whose
            loss is harmless, such as used nonces, or state the CA holds
            too, which the next read of it restores) survives a crash of
            the process all the same, and is made durable by the next
            durable commit; the database is consistent either way.
        """

    def insert_returning_id(self, table: str, row: Mapping[str, Any]) -> int:
        """
        Insert ``row`` into a table whose ``{serial_key}`` the database
        assigns; the id it assigned.
        """

    def restart_ids(self, table: str) -> None:
        """
        Make the next id ``insert_returning_id`` assigns in ``table`` larger
        than every id there (after rows were copied in with their ids).
        """

    def schema_version(self) -> int:
        """
        The last migration applied (0 for a new database).
        """

    def set_schema_version(self, version: int) -> None:
        """
        Record ``version`` as applied; called inside the migration's
        transaction.
        """

    def broken_references(self) -> List[Tuple[str, str, str]]:
        """
        Rows whose parent row is missing (which foreign keys should prevent,
        but an outside edit or a damaged file can leave), as ``(table, id,
        parent table)``.
        """

    def try_lock(self, name: str) -> bool:
        """
        Take the named lock for this process if no other process holds it
        (never waiting), held until `unlock` — or until this process dies,
        even by ``kill -9``: a lock must never outlive its holder.  Taking a
        lock this process holds already succeeds and is counted (the
        caller serialises its own users of a name).  Called from the
        reactor thread when `locks_never_wait`, else in the runner.
        """

    def unlock(self, name: str) -> None:
        """
        Give back one `try_lock` of ``name``.
        """

    def defer_syncs(self) -> Optional[Callable[[], None]]:
        """
        From now on, commit durable transactions without waiting for the
        disk, and return the call that makes every commit so far durable:
        the runner calls it after each batch of work, before any result of
        the batch is delivered (`Runner.sync_batches`), so one disk sync
        covers the batch's durable commits and no caller is told of a
        commit a power failure could take back.  `None`: the engine syncs
        each durable commit itself (a throwaway ``:memory:`` database;
        PostgreSQL, whose server groups concurrent commits on its own).
        Called once, in the runner.
        """

    def close(self) -> None:
        """
        Close the connection.
        """


class Runner(Protocol):
    """
    Runs the store's blocking work somewhere the reactor does not wait for.
    """

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        """
        Run ``work``; its result or exception, delivered in the reactor
        thread.  Calls run one at a time, in the order they were made.
        """

    def sync_batches(self, sync: Callable[[], None]) -> None:
        """
        Call ``sync`` after each batch of work (the calls queued together;
        each call alone when run inline), before delivering the batch's
        results; should it raise, every call of the batch that succeeded
        fails with its exception instead (see `Database.defer_syncs`).
        """

    def stop(self) -> None:
        """
        Release the runner's resources, once its last work has finished.
        """
