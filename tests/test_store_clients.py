"""
The store's migration report rows, operational queries and schema
migration (inline on ``:memory:`` and in its thread on a file), and a
database written by an older schema migrated in place.
"""

from __future__ import annotations

import sqlite3

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from gateway.store import ClientVisit, StoreError
from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION
from gateway.store.sqlite import SQLiteDatabase, SQLiteStore
from tests.test_store import STORE_KINDS, open_kind
from gateway.store.records import MAX_NAMES, MAX_THUMBPRINTS, MAX_USER_AGENT, Authorization, Order
from gateway.store.sqlite import read_clients

T0 = "2026-11-28T17:00:00Z"
T1 = "2026-11-28T17:05:00Z"
T2 = "2026-11-28T17:10:00Z"
UA = "CertbotACMEClient/1.32.0 (certbot; Debian) Authenticator/standalone"


@pytest_twisted.async_yield_fixture(params=STORE_KINDS)
async def store(request, tmp_path):
    """
    A fresh store, inline on ``:memory:``, in its thread on a file, or on
    PostgreSQL, closed after the test.
    """
    opened = await open_kind(request, request.param,
                             ":memory:" if request.param == "inline"
                             else str(tmp_path / "state.sqlite3"))
    yield opened
    await opened.close()


@pytest_twisted.ensureDeferred
async def test_visits_make_one_row_per_client(store):
    """
    Visits from one address and User-Agent accumulate in one row: counts,
    first and last seen, account thumbprints (latest last), names (sorted,
    lower-cased), certificates and the latest failure.
    """
    await store.record_client(ClientVisit(UA, "192.0.2.7", T0, "tp-1", ("b.example.test",)))
    await store.record_client(ClientVisit(UA, "192.0.2.7", T1, "tp-2", ("A.example.test",),
                                          failure="new-cert 403 urn:acme:error:unauthorized: no"))
    row = await store.record_client(ClientVisit(UA, "192.0.2.7", T2, "tp-1", (), certificate=True))
    assert row.first_seen == T0 and row.last_seen == T2
    assert row.successes == 2 and row.failures == 1 and row.certificates == 1
    assert row.thumbprints == ("tp-2", "tp-1")
    assert row.names == ("a.example.test", "b.example.test")
    assert row.last_success == T2 and row.last_failure == T1
    assert row.last_failure_reason == "new-cert 403 urn:acme:error:unauthorized: no"
    assert await store.list_clients() == [row]


@pytest_twisted.ensureDeferred
async def test_clients_are_listed_most_recent_first(store):
    """
    Another address or another User-Agent is another client; the list is
    ordered by last seen, newest first.
    """
    await store.record_client(ClientVisit(UA, "192.0.2.7", T0, "tp-1"))
    await store.record_client(ClientVisit("dehydrated/0.7.0", "192.0.2.7", T2, "tp-2"))
    await store.record_client(ClientVisit(UA, "192.0.2.8", T1, "tp-3"))
    listed = await store.list_clients()
    assert [(c.user_agent, c.address) for c in listed] == [
        ("dehydrated/0.7.0", "192.0.2.7"), (UA, "192.0.2.8"), (UA, "192.0.2.7")]


@pytest_twisted.ensureDeferred
async def test_rows_stay_small(store):
    """
    A client that sends a huge User-Agent, thousands of names or many keys
    keeps a bounded row.
    """
    for i in range(MAX_THUMBPRINTS + 5):
        await store.record_client(ClientVisit("x" * 5000, "192.0.2.9", T0, f"tp-{i}",
                                              tuple(f"n{i}-{j}.example.test" for j in range(30))))
    (row,) = await store.list_clients()
    assert len(row.user_agent) == MAX_USER_AGENT
    assert len(row.names) == MAX_NAMES
    assert len(row.thumbprints) == MAX_THUMBPRINTS
    assert row.thumbprints[-1] == f"tp-{MAX_THUMBPRINTS + 4}"


@pytest_twisted.ensureDeferred
async def test_bad_visits_are_refused(store):
    """
    A visit that is not a `ClientVisit` fails through the Deferred.
    """
    with pytest.raises(TypeError):
        await store.record_client({"user_agent": UA})


@pytest_twisted.ensureDeferred
async def test_count_pending_authorizations(store):
    """
    Authorizations are counted by status; with ``unexpired_at``, pending
    ones the CA has let expire no longer count (unknown expiry still does).
    """
    account = await store.create_account("tp-1", {"kty": "EC"})
    order = Order(id=store.new_id(), account_id=account.id, upstream_url="https://ca.test/o/1",
                  identifiers=("a.example.test",), status="pending",
                  finalize_url="https://ca.test/f/1", expires=None, certificate_url=None,
                  created_at=T0)
    await store.add_order(order)
    for index, (status, expires) in enumerate(
        [("pending", "2026-11-28T18:00:00.123456789Z"), ("pending", "2026-11-28T16:00:00Z"),
         ("pending", None), ("valid", "2026-12-28T16:00:00Z")]
    ):
        await store.add_authorization(Authorization(
            id=store.new_id(), account_id=account.id, order_id=order.id,
            upstream_url=f"https://ca.test/a/{index}", identifier="a.example.test",
            wildcard=False, status=status, expires=expires, created_at=T0, updated_at=T0))
    assert await store.count_authorizations("pending") == 3
    assert await store.count_authorizations("pending", unexpired_at=T1) == 2
    assert await store.count_authorizations("valid", unexpired_at=T1) == 1


@pytest_twisted.ensureDeferred
async def test_check_writable(store):
    """
    An open store commits the probe write; a closed one fails it.
    """
    assert await store.check_writable() is None
    assert await store.check_writable() is None
    await store.close()
    with pytest.raises(StoreError):
        await store.check_writable()


def _version_1_database(path: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].sql(SQLiteDatabase.column_types):
        connection.execute(statement)
    connection.execute(
        "INSERT INTO accounts (thumbprint, public_jwk, upstream_url, contact, agreement, status,"
        " created_at, initial_ip) VALUES ('tp-old', '{}', NULL, '[]', NULL, 'valid', ?, '')", (T0,))
    connection.execute("PRAGMA user_version = 1")
    connection.close()


@pytest_twisted.ensureDeferred
async def test_version_1_database_is_migrated(tmp_path):
    """
    A database written by the previous schema gains the report's tables
    when opened, keeps its accounts, and records clients.
    """
    path = str(tmp_path / "old.sqlite3")
    _version_1_database(path)
    assert read_clients(path) == [], "the report reads an unmigrated database as empty"
    store = await SQLiteStore.open(path, reactor)
    try:
        assert (await store.account_by_thumbprint("tp-old")).id == 1
        await store.record_client(ClientVisit(UA, "127.0.0.1", T0))
        version = await store._call(store._database.schema_version)
        assert version == SCHEMA_VERSION == 7
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_report_reads_beside_a_running_store(tmp_path):
    """
    ``read_clients`` reads an open gateway's database (WAL) without writing,
    and sees every committed visit.
    """
    path = str(tmp_path / "state.sqlite3")
    store = await SQLiteStore.open(path, reactor)
    try:
        await store.record_client(ClientVisit(UA, "127.0.0.1", T0, "tp-1", ("a.example.test",)))
        (row,) = read_clients(path)
        assert row.user_agent == UA and row.thumbprints == ("tp-1",)
    finally:
        await store.close()


def test_report_of_a_missing_file_says_so(tmp_path):
    """
    A state path that does not exist is an error naming it, not an empty
    report (a typo must not read as "every client migrated").
    """
    with pytest.raises(StoreError, match="no gateway state"):
        read_clients(str(tmp_path / "typo.sqlite3"))
