"""
Which commits are durable (synced before the write returns) and which are
left to the next durable one: a write that only mirrors the CA's state — an
authorization's status, its challenges, an order's status, the report's
visits — is not synced on its own; accounts, orders, certificates and
issuers are.  (`gateway.store.sql` ``_reconciled``; WAL mode syncs every
earlier commit with a durable one.)

Durable commits are grouped (issue 15): the store's thread commits them
without waiting for the disk and makes the whole batch of work it ran
durable with one fsync of the write-ahead log before it delivers any of
the batch's results (`gateway.store.runners`).  Counted here as fsyncs.
"""

import os
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor

import gateway.store.sqlite as sqlite_module
from gateway.store import ClientVisit, Insert, Update
from gateway.store.sqlite import SQLiteStore
from tests.test_store import (
    T1, make_account, make_authorization, make_certificate, make_challenge, make_order,
)


@pytest.fixture
def fsyncs(monkeypatch):
    """
    The files the SQLite engine fsyncs, as their names, in order.
    """
    synced = []
    original = os.fsync

    def recording(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return original(fd)

    monkeypatch.setattr(sqlite_module.os, "fsync", recording)
    return synced


@pytest_twisted.ensureDeferred
async def test_only_writes_the_ca_can_restore_are_not_synced(tmp_path, fsyncs):
    store = SQLiteStore.inline(str(tmp_path / "state.sqlite3"))

    async def synced(write):
        before = len(fsyncs)
        await write()
        return fsyncs[before:]

    try:
        account = await make_account(store)
        assert fsyncs == ["state.sqlite3-wal"]
        order = make_order(store, account, ("a.example",))
        assert await synced(lambda: store.add_order(order)) == ["state.sqlite3-wal"]
        authorization = make_authorization(store, account, order, "a.example")
        assert await synced(lambda: store.write([Insert(authorization),
                                                 Insert(make_challenge(store, authorization))])) == []
        assert await synced(lambda: store.update_authorization(
            authorization.id, status="valid", updated_at=T1)) == []
        assert await synced(lambda: store.update_order(order.id, status="valid")) == []
        assert await synced(lambda: store.record_clients([ClientVisit(
            thumbprint="tp-1", user_agent="CertbotACMEClient/0.31.0", at=T1,
            address="127.0.0.1")])) == []
        assert await synced(lambda: store.use_nonce("n-1", 2_000_000_000)) == []
        # A write mixing both is durable.
        assert await synced(lambda: store.write([
            Update(type(authorization), authorization.id, {"status": "valid"}),
            Insert(make_certificate(store, account, order))])) == ["state.sqlite3-wal"]
        assert await synced(lambda: store.update_authorization(
            authorization.id, status="valid", updated_at=T1)) == []
        assert await synced(lambda: store.add_certificate(
            make_certificate(store, account, order, serial="04cd"))) == ["state.sqlite3-wal"]
        # Reads sync nothing.
        assert await synced(lambda: store.certificate_by_serial("04cd")) == []
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_durable_writes_queued_together_share_one_fsync(tmp_path, fsyncs):
    """
    Ten certificates written while the store's thread is busy are committed
    one after another and synced once — before any of their Deferreds
    fires.  (Each was synced on its own: ten fsyncs, the store's thread
    waiting for the disk each time, every other call queued behind.)
    """
    store = await SQLiteStore.open(str(tmp_path / "state.sqlite3"), reactor)
    try:
        account = await make_account(store)
        order = await store.add_order(make_order(store, account, ("a.example",)))
        busy, release = threading.Event(), threading.Event()

        def hold():
            busy.set()
            release.wait(30)

        held = store._runner.run(hold)
        assert busy.wait(30)
        del fsyncs[:]
        seen_at_callback = []
        writes = []
        for index in range(10):
            write = store.add_certificate(
                make_certificate(store, account, order, serial=f"{index + 1:04x}"))
            write.addCallback(lambda _: seen_at_callback.append(len(fsyncs)))
            writes.append(write)
        release.set()
        await held
        for write in writes:
            await write
        assert fsyncs == ["state.sqlite3-wal"]
        assert seen_at_callback == [1] * 10
        # …and SQLite did not sync each commit itself (synchronous=NORMAL).
        assert await store._runner.run(lambda: store._database.connection.execute(
            "PRAGMA synchronous").fetchone()[0]) == 1
        assert len(await store.certificates_for_account(account.id)) == 10
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_sync_fails_the_writes_it_covered(tmp_path, monkeypatch):
    """
    When the disk refuses the sync, the writes of the batch fail (their
    callers must not report them stored); the store goes on.
    """
    store = SQLiteStore.inline(str(tmp_path / "state.sqlite3"))
    try:
        account = await make_account(store)

        def refuse(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(sqlite_module.os, "fsync", refuse)
        failed = store.add_order(make_order(store, account, ("a.example",)))
        with pytest.raises(OSError):
            await failed
        monkeypatch.undo()
        assert await store.add_order(make_order(store, account, ("b.example",)))
    finally:
        await store.close()
