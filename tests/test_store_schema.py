"""
The store's schema as numbered migrations (`gateway.store.schema`), a state
written by an older gateway brought up to date, and what importing the
records costs (no database engine, no thread pool).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from twisted.internet.task import Clock

import gateway.store.schema as schema_module
from gateway.store import Account, Certificate, Issuer, StoreError, issuer_id
from gateway.store.records import UNSTORED_ORDER
from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION, Migration
from gateway.store.sqlite import SQLiteDatabase, SQLiteStore, check_state

VECTORS = os.path.join(os.path.dirname(__file__), "vectors", "state")
CA_A = "https://ca-a.test/dir"


def fired(deferred):
    """
    The result of an inline store's Deferred, which has fired already.
    """
    outcome = []
    deferred.addBoth(outcome.append)
    (result,) = outcome
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def schema_of(path: str) -> list:
    """
    Every table, index and trigger of a database file, with its SQL.
    """
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    finally:
        connection.close()


def version_of(path: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA user_version").fetchone()[0]
    finally:
        connection.close()


def schema_3_state(path: str) -> None:
    """
    Load `tests/vectors/state/schema-3.sql` (written by the gateway before
    issuer links) into a file.
    """
    with open(os.path.join(VECTORS, "schema-3.sql"), encoding="utf-8") as dump:
        script = dump.read()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(script)
    connection.close()
    assert version_of(path) == 3


# --- Migrations as data -------------------------------------------------------------


def test_migrations_are_numbered_steps():
    """
    The schema is a list of steps numbered 1, 2, …; the current version is
    the last step's.
    """
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version == 7
    assert all(isinstance(m, Migration) and m.statements for m in MIGRATIONS)


def test_engine_spellings_are_filled_in():
    """
    A statement's ``{name}`` spellings are the engine's; SQLite's leave the
    SQL of the first schema as it always was.
    """
    (accounts, *_) = MIGRATIONS[0].sql(SQLiteDatabase.column_types)
    assert "id INTEGER PRIMARY KEY AUTOINCREMENT," in accounts
    assert "{" not in "".join(
        statement for m in MIGRATIONS for statement in m.sql(SQLiteDatabase.column_types))
    other = {"serial_key": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "bytes": "BYTEA",
             "row_order": ",\n        seq BIGINT GENERATED ALWAYS AS IDENTITY"}
    spelled = "".join(statement for m in MIGRATIONS for statement in m.sql(other))
    assert "BLOB" not in spelled and "AUTOINCREMENT" not in spelled
    assert spelled.count("seq BIGINT") == 9  # every table but probes


def test_fresh_file_and_memory_stores_have_the_same_schema(tmp_path):
    """
    A throwaway ``:memory:`` store (copied from a template migrated once)
    has exactly the schema and version of a file migrated step by step.
    """
    path = str(tmp_path / "fresh.sqlite3")
    fired(SQLiteStore.inline(path).close())
    memory = SQLiteStore.inline()
    try:
        database = memory._database
        rows = database.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        assert [tuple(row) for row in rows] == schema_of(path)
        assert database.schema_version() == version_of(path) == SCHEMA_VERSION
        assert database.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        fired(memory.close())


def test_schema_3_state_is_migrated(tmp_path):
    """
    A state written by the gateway before issuer links opens: it is brought
    to the current version with exactly a fresh database's schema, its rows
    read back as they were, and each issuer gets the parent its
    certificate's chain shows.  Opening it again applies nothing twice.
    """
    path = str(tmp_path / "old.sqlite3")
    schema_3_state(path)
    clock = Clock()
    store = SQLiteStore.inline(path, clock=clock, upstream=CA_A)
    try:
        account = fired(store.account_by_id(1))
        assert isinstance(account, Account)
        assert (account.thumbprint, account.upstream_url) == ("tp-old", "https://ca-a.test/acct/1")
        order = fired(store.order_by_id("order-1"))
        assert order.identifiers == ("old.example",) and order.directory_url == CA_A
        (authorization,) = fired(store.authorizations_for_order("order-1"))
        (challenge,) = fired(store.challenges_for_authorization(authorization.id))
        assert challenge.token == "tok"
        # version 6: a challenge of before has no outcome of a gateway check
        assert (challenge.error, challenge.validation_record) == (None, None)
        certificate = fired(store.certificate_by_serial("1f"))
        assert isinstance(certificate, Certificate) and certificate.leaf_der == b"leaf DER"
        intermediate, root = certificate.issuer_ids
        assert (intermediate, root) == (issuer_id(b"intermediate DER"), issuer_id(b"root DER"))
        assert fired(store.issuer_by_id(intermediate)) == Issuer(
            intermediate, b"intermediate DER", parent_id=root)
        assert fired(store.issuer_by_id(root)).parent_id is None
        (client,) = fired(store.list_clients())
        assert client.certificates == 1
        assert [a.id for a in fired(store.open_order_attempts())] == ["attempt-1"]
        assert fired(store.create_account("tp-new", {"kty": "EC"})).id == 2
    finally:
        fired(store.close())
    assert version_of(path) == SCHEMA_VERSION
    fresh = str(tmp_path / "fresh.sqlite3")
    fired(SQLiteStore.inline(fresh).close())
    assert schema_of(path) == schema_of(fresh)

    # Every migration already applied: a second run of version 4's
    # ALTER TABLE would fail (duplicate column).
    store = SQLiteStore.inline(path, clock=clock, upstream=CA_A)
    fired(store.close())
    checked = check_state(path)
    assert checked.integrity == ("ok",)
    assert [f.kind for f in checked.findings] == [UNSTORED_ORDER]


def test_a_failed_migration_leaves_the_previous_version(tmp_path, monkeypatch):
    """
    A migration that fails part-way (here its backfill) leaves the
    database at the version before, without the step's statements, and
    the store does not open; the next start tries the step again.
    """
    path = str(tmp_path / "state.sqlite3")
    fired(SQLiteStore.inline(path).close())

    def broken(database):
        raise RuntimeError("backfill failed")

    step = Migration(SCHEMA_VERSION + 1, ("CREATE TABLE later (id TEXT PRIMARY KEY)",), broken)
    monkeypatch.setattr(schema_module, "MIGRATIONS", (*MIGRATIONS, step))
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", step.version)
    with pytest.raises(RuntimeError, match="backfill failed"):
        SQLiteStore.inline(path)
    assert version_of(path) == SCHEMA_VERSION
    assert "later" not in [name for _, name, _, _ in schema_of(path)]

    fixed = Migration(step.version, step.statements)
    monkeypatch.setattr(schema_module, "MIGRATIONS", (*MIGRATIONS, fixed))
    fired(SQLiteStore.inline(path).close())
    assert version_of(path) == fixed.version
    assert "later" in [name for _, name, _, _ in schema_of(path)]


def test_a_newer_state_is_refused(tmp_path):
    """
    A state migrated by a newer gateway is refused, not misread.
    """
    path = str(tmp_path / "state.sqlite3")
    fired(SQLiteStore.inline(path).close())
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer than this gateway's"):
        SQLiteStore.inline(path)


# --- Importing the records -----------------------------------------------------------


def test_records_import_without_an_engine():
    """
    Records, operations, errors and the interface — and the v1 wire
    shapes, which use records — load no database engine and no thread
    pool.
    """
    code = (
        "import sys\n"
        "import gateway.v1.messages, gateway.store.records, gateway.store.interface\n"
        "from gateway.store import Insert, Update, Order, StoreError, IStore, open_store\n"
        "loaded = [m for m in ('sqlite3', '_sqlite3', 'twisted.python.threadpool',\n"
        "                      'gateway.store.sql', 'gateway.store.sqlite') if m in sys.modules]\n"
        "print('loaded:', ','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "loaded:"


def test_opening_a_store_loads_the_engine():
    """
    `gateway.store.open_store` loads SQLite when it opens a store (so the
    check above could fail).
    """
    opened = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from twisted.internet import defer, task\n"
        "from gateway.store import open_store\n"
        "async def main(reactor):\n"
        "    store = await open_store(':memory:', reactor)\n"
        "    print(type(store).__name__, 'sqlite3' in sys.modules)\n"
        "    await store.close()\n"
        "task.react(lambda reactor: defer.ensureDeferred(main(reactor)))\n"
    )], capture_output=True, text=True, check=True)
    assert opened.stdout.strip() == "SQLiteStore True"
