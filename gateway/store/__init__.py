"""
Durable gateway state: which v1 URL maps to which upstream URL, and which
account owns it (MAPPING.md §3.1).

Code that needs state depends on `IStore` and the records here; importing
them loads no database engine and no thread pool.  One store implements
`IStore`, in SQL (`gateway.store.sql`); an engine module opens it:
`gateway.store.sqlite` (a file in production, ``:memory:`` with an inline
runner in unit tests).  `open_store` picks the engine for a ``--state``
value, and imports it only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from gateway.store.interface import IStore
from gateway.store.records import (
    Account,
    AttemptStatus,
    Authorization,
    Certificate,
    Challenge,
    ClientVisit,
    Conflict,
    DuplicateAccount,
    Finding,
    Insert,
    Issuer,
    LegacyClient,
    NotFound,
    Operation,
    Order,
    OrderAttempt,
    Record,
    RenewalWindow,
    StoreError,
    Update,
    issuer_id,
)

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from gateway.store.sql import SQLStore

__all__ = [
    "Account",
    "AttemptStatus",
    "Authorization",
    "Certificate",
    "Challenge",
    "ClientVisit",
    "Conflict",
    "DuplicateAccount",
    "Finding",
    "IStore",
    "Insert",
    "Issuer",
    "LegacyClient",
    "NotFound",
    "Operation",
    "Order",
    "OrderAttempt",
    "Record",
    "RenewalWindow",
    "StoreError",
    "Update",
    "issuer_id",
    "open_store",
]


def open_store(state: str, reactor: Any, close_on_shutdown: bool = True,
               upstream: Optional[str] = None) -> "Deferred[SQLStore]":
    """
    Open the store ``--state`` names: an SQLite file (the only engine so
    far), created and migrated as needed.  See
    `gateway.store.sqlite.SQLiteStore.open` for the arguments.
    """
    from gateway.store.sqlite import SQLiteStore

    opened: "Deferred[Any]" = SQLiteStore.open(
        state, reactor=reactor, close_on_shutdown=close_on_shutdown, upstream=upstream)
    return opened
