"""
Which commits are durable (``synchronous=FULL``: synced before the write
returns) and which are left to the next durable one (``NORMAL``): a write
that only mirrors the CA's state — an authorization's status, its
challenges, an order's status, the report's visits — is not synced on its
own; accounts, orders, certificates and issuers are.  (`gateway.store.sql`
``_reconciled``; WAL mode syncs every earlier commit with a durable one.)
"""

import pytest_twisted

from gateway.store import ClientVisit, Insert, Update
from gateway.store.sqlite import SQLiteStore
from tests.test_store import (
    T1, make_account, make_authorization, make_certificate, make_challenge, make_order,
)

#: ``PRAGMA synchronous`` values.
NORMAL, FULL = 1, 2


def synchronous(store: SQLiteStore) -> int:
    """
    The setting the store's connection committed its last write with.
    """
    return int(store._database.connection.execute("PRAGMA synchronous").fetchone()[0])


@pytest_twisted.ensureDeferred
async def test_only_writes_the_ca_can_restore_skip_the_sync(tmp_path):
    store = SQLiteStore.inline(str(tmp_path / "state.sqlite3"))
    try:
        account = await make_account(store)
        assert synchronous(store) == FULL
        order = await store.add_order(make_order(store, account, ("a.example",)))
        assert synchronous(store) == FULL
        authorization = make_authorization(store, account, order, "a.example")
        await store.write([Insert(authorization), Insert(make_challenge(store, authorization))])
        assert synchronous(store) == NORMAL
        await store.update_authorization(authorization.id, status="valid", updated_at=T1)
        assert synchronous(store) == NORMAL
        await store.update_order(order.id, status="valid")
        assert synchronous(store) == NORMAL
        await store.record_clients([ClientVisit(
            thumbprint="tp-1", user_agent="CertbotACMEClient/0.31.0", at=T1,
            address="127.0.0.1")])
        assert synchronous(store) == NORMAL
        # A write mixing both is durable.
        await store.write([Update(type(authorization), authorization.id, {"status": "valid"}),
                           Insert(make_certificate(store, account, order))])
        assert synchronous(store) == FULL
        await store.update_authorization(authorization.id, status="valid", updated_at=T1)
        assert synchronous(store) == NORMAL
        await store.add_certificate(make_certificate(store, account, order, serial="04cd"))
        assert synchronous(store) == FULL
    finally:
        await store.close()
