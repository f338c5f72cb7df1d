"""
Several processes on one state (``--workers``, replicas on one PostgreSQL):
what the store gives them to stay correct together, tested with stores in
their own threads on a real reactor — several stores on one PostgreSQL
database are several sessions, as several replicas are — and with real
processes where the kernel is the arbiter (SQLite's lock file).

- the rate-limit budget is exact under concurrent requests, in one process
  (the race the single-process gateway had) and across replicas;
- named locks exclude other processes, and die with their holder;
- a sweep runs in one process at a time;
- migrations apply once when several processes open a new database at once;
- write transactions exclude each other across sessions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from gateway.status import Status
from gateway.store import OrderAttempt
from gateway.store.postgresql import PostgreSQLStore, StateURI
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.sqlite import SQLiteStore
from gateway.translate.budget import Budget, BudgetLimits
from gateway.translate.errors import RateLimited
from gateway.translate.memory import NameLocks
from tests.support.stack import REPO_ROOT
from tests.test_store import JWK, open_kind

NOW = "2026-12-01T00:00:00Z"


async def _account(store, thumbprint="tp-budget"):
    return await store.create_account(thumbprint, JWK, initial_ip="127.0.0.1")


async def _reserve_all(budgets, account_id, count):
    """
    ``count`` reservations at once, spread over ``budgets``; how many were
    admitted and how many refused.
    """
    async def one(index):
        budget = budgets[index % len(budgets)]
        attempt = OrderAttempt(id=f"attempt-{index}", account_id=account_id,
                               identifiers=[f"n{index}.example.test"],
                               created_at=_now())
        try:
            await budget.reserve(attempt)
            return True
        except RateLimited:
            return False

    outcomes = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(one(i)) for i in range(count)], consumeErrors=True)
    return outcomes.count(True), outcomes.count(False)


def _now():
    from gateway.store.records import format_timestamp

    return format_timestamp(reactor.seconds())


@pytest.mark.parametrize("kind", ["thread", "postgresql"])
@pytest_twisted.ensureDeferred
async def test_twelve_parallel_orders_under_a_limit_of_three(kind, request, tmp_path):
    """
    Twelve ``newOrder`` reservations at once for one account under
    ``--order-limit 3``: exactly three are admitted.  (Checked, then
    recorded, with the store's thread in between, 8–10 used to get
    through.)
    """
    store = await open_kind(request, kind, str(tmp_path / "state.sqlite3"))
    try:
        account = await _account(store)
        budget = Budget(store, reactor, BudgetLimits(orders=3, pending_authorizations=100))
        admitted, refused = await _reserve_all([budget], account.id, 12)
        assert (admitted, refused) == (3, 9)
        spend = await store.spend(account.id, "2000-01-01T00:00:00Z")
        assert len(spend.order_times) == 3
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["thread", "postgresql"])
@pytest_twisted.ensureDeferred
async def test_orders_in_flight_count_as_pending(kind, request, tmp_path):
    """
    A ``newOrder`` sent and not yet answered may add a pending
    authorization per name: with two pending allowed, two single-name
    orders in flight leave no room for a third.
    """
    store = await open_kind(request, kind, str(tmp_path / "state.sqlite3"))
    try:
        account = await _account(store)
        budget = Budget(store, reactor, BudgetLimits(orders=100, pending_authorizations=2))
        assert await _reserve_all([budget], account.id, 5) == (2, 3)
        spend = await store.spend(account.id, "2000-01-01T00:00:00Z")
        assert spend.names_in_flight == 2 and spend.pending == ()
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_budget_is_exact_across_replicas(postgres_state):
    """
    Three replicas (three stores, three sessions, three lock sets) on one
    PostgreSQL database reserve twelve orders at once for one account
    under a limit of four: exactly four are admitted between them.
    """
    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    stores = [await PostgreSQLStore.open(uri, reactor) for _ in range(3)]
    try:
        account = await _account(stores[0])
        budgets = [Budget(s, reactor, BudgetLimits(orders=4, pending_authorizations=100)) for s in stores]
        assert await _reserve_all(budgets, account.id, 12) == (4, 8)
    finally:
        for store in stores:
            await store.close()


@pytest_twisted.ensureDeferred
async def test_named_locks_exclude_replicas_and_die_with_them(postgres_state):
    """
    A named lock one replica holds, another cannot take — until the holder
    gives it back, or its connection ends (a replica killed with ``kill
    -9``: PostgreSQL frees its session's locks at once).
    """
    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    first, second = [await PostgreSQLStore.open(uri, reactor) for _ in range(2)]
    try:
        assert await first.try_lock("order:1:example.test") is True
        assert await first.try_lock("order:1:example.test") is True  # counted
        assert await second.try_lock("order:1:example.test") is False
        assert await second.try_lock("order:1:other.test") is True
        await first.unlock("order:1:example.test")
        assert await second.try_lock("order:1:example.test") is False
        await first.unlock("order:1:example.test")
        assert await second.try_lock("order:1:example.test") is True
        assert await first.try_lock("account:tp") is True
        # The holder's session ends without unlocking.
        backend = await first._call(lambda: first._database.execute(
            "SELECT pg_backend_pid()").fetchone()[0])
        cluster.psql(f"SELECT pg_terminate_backend({backend})", database)
        assert await second.try_lock("account:tp") is True
    finally:
        await second.close()
        try:
            await first.close()
        except Exception:
            pass


@pytest_twisted.ensureDeferred
async def test_a_waiting_request_gets_the_lock_when_the_other_replica_lets_go(postgres_state):
    """
    `NameLocks` waits for a name another replica holds (trying again, ever
    more slowly) and gets it as soon as that replica releases it.
    """
    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    first, second = [await PostgreSQLStore.open(uri, reactor) for _ in range(2)]
    try:
        holder = NameLocks(first, reactor).lock_for("authz:1:example.test")
        waiter = NameLocks(second, reactor).lock_for("authz:1:example.test")
        await holder.acquire()
        waiting = waiter.acquire()
        await task.deferLater(reactor, 0.3, lambda: None)
        assert not waiting.called
        holder.release()
        await waiting
        assert waiter.locked
        waiter.release()
    finally:
        await first.close()
        await second.close()


@pytest_twisted.ensureDeferred
async def test_a_sweep_runs_in_one_replica_at_a_time(postgres_state):
    """
    While one replica sweeps, the others skip their turn; the next turn
    after it is anyone's.
    """
    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    stores = [await PostgreSQLStore.open(uri, reactor) for _ in range(3)]
    try:
        locks = [NameLocks(s, reactor) for s in stores]
        running = defer.Deferred()
        ran = []

        async def long_sweep():
            ran.append("first")
            await running
            return "swept"

        async def other_sweep():
            ran.append("other")
            return "swept"

        first = defer.Deferred.fromCoroutine(locks[0].alone("sweeps", long_sweep))
        await task.deferLater(reactor, 0.1, lambda: None)
        assert await locks[1].alone("sweeps", other_sweep) is None
        assert await locks[2].alone("sweeps", other_sweep) is None
        assert await locks[0].alone("sweeps", other_sweep) is None  # this process: also busy
        running.callback(None)
        assert await first == "swept"
        assert await locks[2].alone("sweeps", other_sweep) == "swept"
        assert ran == ["first", "other"]
    finally:
        for store in stores:
            await store.close()


@pytest_twisted.ensureDeferred
async def test_migrations_apply_once_when_replicas_start_together(postgres_cluster):
    """
    Five replicas opening one new database at the same moment: every one
    opens it, each migration ran once (no replica failed on a table another
    had just created), and all see the current version.
    """
    database = postgres_cluster.create_database()
    uri = StateURI.parse(postgres_cluster.uri(database), postgres_cluster.password)
    opened = await defer.gatherResults(
        [PostgreSQLStore.open(uri, reactor) for _ in range(5)], consumeErrors=True)
    try:
        versions = [await s._call(s._database.schema_version) for s in opened]
        assert versions == [SCHEMA_VERSION] * 5
        tables = postgres_cluster.psql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            database).strip()
        # accounts, orders, authorizations, challenges, issuers, certificates,
        # renewal_windows, clients, probes, order_attempts, secrets, used_nonces,
        # http01_answers,
        # gateway_schema
        assert tables == "14"
    finally:
        for store in opened:
            await store.close()


@pytest_twisted.ensureDeferred
async def test_visits_from_every_replica_add_up(postgres_state):
    """
    The migration report's read-merge-write of a client's row excludes the
    other replicas' (each write transaction holds the database's write
    lock): 3 replicas × 20 visits of one client count 60.
    """
    from gateway.store import ClientVisit

    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    stores = [await PostgreSQLStore.open(uri, reactor) for _ in range(3)]
    try:
        # Signed visits: only those may add a row (issue 18).
        visit = ClientVisit(address="192.0.2.1", user_agent="CertbotACMEClient/1.32.0", at=NOW,
                            thumbprint="tp-1")
        await defer.gatherResults(
            [s.record_client(visit) for s in stores for _ in range(20)], consumeErrors=True)
        (client,) = await stores[0].list_clients()
        assert client.successes == 60
    finally:
        for store in stores:
            await store.close()


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from gateway.store.sqlite import connect
    database = connect(sys.argv[1])
    assert database.try_lock("order:1:example.test")
    print("held", flush=True)
    time.sleep(600)
""")


def test_sqlite_locks_exclude_other_processes_and_die_with_them(tmp_path):
    """
    On SQLite (``--workers``), a named lock is a record lock on a file
    beside the database: another process cannot take it while its holder
    lives, and takes it once the holder is killed with SIGKILL.
    """
    from gateway.store.sqlite import connect

    path = str(tmp_path / "state.sqlite3")
    SQLiteStore.inline(path).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, path], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        database = connect(path)
        try:
            assert database.try_lock("order:1:example.test") is False
            assert database.try_lock("order:1:other.test") is True
            holder.kill()
            holder.wait(30)
            assert database.try_lock("order:1:example.test") is True
            assert oct(os.stat(path + ".locks").st_mode & 0o777) == "0o600"
        finally:
            database.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest_twisted.ensureDeferred
async def test_write_transactions_exclude_each_other_across_sessions(postgres_state):
    """
    Two sessions each read a counter and write it back plus one, fifty
    times at once: with the write lock no increment is lost.
    """
    cluster, database = postgres_state
    uri = StateURI.parse(cluster.uri(database), cluster.password)
    stores = [await PostgreSQLStore.open(uri, reactor) for _ in range(2)]
    try:
        await stores[0]._write(lambda: stores[0]._database.execute(
            "INSERT INTO secrets (name, value) VALUES ('counter', ?)", (b"0",)))

        def increment(store):
            def work():
                row = store._database.execute(
                    "SELECT value FROM secrets WHERE name = 'counter'").fetchone()
                value = int(bytes(row["value"])) + 1
                store._database.execute("UPDATE secrets SET value = ? WHERE name = 'counter'",
                                        (str(value).encode(),))
            return store._write(work)

        await defer.gatherResults([increment(s) for _ in range(50) for s in stores],
                                  consumeErrors=True)
        value = await stores[0]._call(lambda: stores[0]._database.execute(
            "SELECT value FROM secrets WHERE name = 'counter'").fetchone()["value"])
        assert int(bytes(value)) == 100
    finally:
        for store in stores:
            await store.close()


@pytest_twisted.ensureDeferred
async def test_a_lost_connection_is_made_again(postgres_state):
    """
    PostgreSQL ends the store's session (a restart, a failover): the call
    that meets the loss fails, and the next one connects again and works.
    """
    cluster, database = postgres_state
    store = await PostgreSQLStore.open(
        StateURI.parse(cluster.uri(database), cluster.password), reactor)
    try:
        await _account(store)
        backend = await store._call(lambda: store._database.execute(
            "SELECT pg_backend_pid()").fetchone()[0])
        cluster.psql(f"SELECT pg_terminate_backend({backend})", database)
        try:
            await store.list_accounts()
        except Exception:
            pass
        assert [a.thumbprint for a in await store.list_accounts()] == ["tp-budget"]
        await store.check_writable()
    finally:
        await store.close()
