"""
``acme-gateway migrate-state --from FILE --to URI``: an SQLite state copied
into PostgreSQL (`gateway.store.transfer`), run as the command an operator
runs, against the suite's throwaway cluster; then ``report`` and ``check``
read the PostgreSQL state.
"""

from __future__ import annotations

import os
import subprocess

import pytest_twisted
from twisted.internet import reactor

from gateway.store import ClientVisit, Insert, OrderAttempt
from gateway.store.postgresql import PostgreSQLStore, StateURI
from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NONCE_KEY_NAME
from tests.support.gateway_process import _child_env, gateway_command
from tests.test_store import T1, populate


def acme_gateway(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*gateway_command(), *args], env={**_child_env(), **(env or {})},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def sqlite_state(path: str) -> dict:
    """
    A state with one record of every kind, a second account, a report row,
    an orphaned certificate's flag, an order attempt and the nonce key.
    """
    store = await SQLiteStore.open(path, reactor)
    try:
        records = await populate(store)
        second = await store.create_account("tp-2", {"kty": "EC", "crv": "P-256", "x": "b",
                                                     "y": "c"})
        records["second"] = second
        await store.update_certificate(records["certificate"].id, orphaned=True)
        await store.record_client(ClientVisit(user_agent="CertbotACMEClient/1.32.0",
                                              address="192.0.2.7", at=T1, thumbprint="tp-1",
                                              names=("example.com",), certificate=True))
        attempt = OrderAttempt(id=store.new_id(), account_id=second.id,
                               identifiers=["lost.example.com"], created_at=T1)
        await store.write([Insert(attempt)])
        records["attempt"] = attempt
        records["nonce_key"] = await store.secret(NONCE_KEY_NAME)
        return records
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_migrate_state_copies_everything_into_postgresql(tmp_path, postgres_state):
    """
    Every record comes across with its id, links and values; account ids
    are kept (a new account gets the next id); the nonce key too (nonces a
    client holds stay good); the password, given through the environment,
    is printed nowhere.  Then ``report`` and ``check`` read the new state.
    """
    cluster, database = postgres_state
    path = str(tmp_path / "state.sqlite3")
    records = await sqlite_state(path)
    env = {"ACME_GATEWAY_STATE_PASSWORD": cluster.password}
    moved = acme_gateway("migrate-state", "--from", path, "--to", cluster.uri(database), env=env)
    assert moved.returncode == 0, moved.stderr
    assert "2 accounts" in moved.stdout and "1 certificates" in moved.stdout
    assert cluster.password not in moved.stdout + moved.stderr

    store = await PostgreSQLStore.open(StateURI.parse(cluster.uri(database), cluster.password),
                                       reactor)
    try:
        accounts = await store.list_accounts()
        assert [a.id for a in accounts] == [records["account"].id, records["second"].id]
        assert accounts[0] == records["account"]
        assert await store.order_by_id(records["order"].id) == records["order"]
        assert await store.authorization_by_id(records["authorization"].id) \
            == records["authorization"]
        assert await store.challenge_by_id(records["challenge"].id) == records["challenge"]
        certificate = await store.certificate_by_id(records["certificate"].id)
        assert certificate.leaf_der == records["certificate"].leaf_der and certificate.orphaned
        assert (await store.issuer_by_id(records["issuer"].id)).der == records["issuer"].der
        (client,) = await store.list_clients()
        assert client.successes == 1 and client.certificates == 1
        assert [a.id for a in await store.open_order_attempts()] == [records["attempt"].id]
        assert await store.secret(NONCE_KEY_NAME) == records["nonce_key"]
        third = await store.create_account("tp-3", {"kty": "EC", "crv": "P-256", "x": "d",
                                                    "y": "e"})
        assert third.id == records["second"].id + 1
    finally:
        await store.close()

    report = acme_gateway("report", "--json", "--state", cluster.uri(database), env=env)
    assert report.returncode == 0, report.stderr
    assert "CertbotACMEClient/1.32.0" in report.stdout and "03ab" in report.stdout
    checked = acme_gateway("check", "--state", cluster.uri(database), env=env)
    # The attempt whose order was never stored is what check reports.
    assert checked.returncode == 1
    assert "lost.example.com" in checked.stdout
    assert cluster.password not in checked.stdout + checked.stderr


@pytest_twisted.ensureDeferred
async def test_migrate_state_refuses_a_database_that_holds_a_state(tmp_path, postgres_state):
    """
    A copy never merges two states: into a database that holds one, nothing
    is written and the exit status is 1.
    """
    cluster, database = postgres_state
    path = str(tmp_path / "state.sqlite3")
    await sqlite_state(path)
    env = {"ACME_GATEWAY_STATE_PASSWORD": cluster.password}
    assert acme_gateway("migrate-state", "--from", path, "--to", cluster.uri(database),
                        env=env).returncode == 0
    again = acme_gateway("migrate-state", "--from", path, "--to", cluster.uri(database), env=env)
    assert again.returncode == 1
    assert "already holds a gateway state" in again.stderr
    assert cluster.psql("SELECT count(*) FROM accounts", database).strip() == "2"


def test_migrate_state_with_a_wrong_password_says_so_without_it(tmp_path, postgres_state):
    """
    A wrong password (in the URI here) fails with PostgreSQL's reason, the
    URI shown without the password, and exit status 1; a password file
    works where the environment is not set.
    """
    cluster, database = postgres_state
    path = str(tmp_path / "state.sqlite3")
    SQLiteStore.inline(path).close()
    wrong = "not-the-Password-123"
    failed = acme_gateway("migrate-state", "--from", path, "--to",
                          f"postgresql://gateway:{wrong}@127.0.0.1:{cluster.port}/{database}")
    assert failed.returncode == 1
    assert "password authentication failed" in failed.stderr
    assert f"postgresql://gateway@127.0.0.1:{cluster.port}/{database}" in failed.stderr
    assert wrong not in failed.stdout + failed.stderr
    password_file = tmp_path / "password"
    password_file.write_text(cluster.password + "\n")
    os.chmod(password_file, 0o600)
    moved = acme_gateway("migrate-state", "--from", path, "--to", cluster.uri(database),
                         "--state-password-file", str(password_file))
    assert moved.returncode == 0, moved.stderr


def test_migrate_state_copies_every_table_of_the_schema(tmp_path):
    """
    `gateway.store.transfer.TABLES` names every table the schema makes:
    a migration step that adds a table must add it there, or
    ``migrate-state`` would leave its rows behind.
    """
    from gateway.store.schema import migrate
    from gateway.store.sqlite import connect
    from gateway.store.transfer import TABLES

    database = connect(str(tmp_path / "state.sqlite3"))
    try:
        migrate(database)
        tables = {row[0] for row in database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    finally:
        database.close()
    assert tables == set(TABLES)
