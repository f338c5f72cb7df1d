"""
Durable gateway state: which v1 URL maps to which upstream URL, and which
account owns it (MAPPING.md §3.1).

Code that needs state depends on `IStore` and the records here; importing
them loads no database engine and no thread pool.  One store implements
`IStore`, in SQL (`gateway.store.sql`); an engine module opens it:
`gateway.store.sqlite` (a file in production, ``:memory:`` with an inline
runner in unit tests) or `gateway.store.postgresql` (a
``postgresql://`` URI: several processes and replicas on one state).
`open_store` picks the engine for a ``--state`` value, and imports it only
then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from gateway.store.interface import IStore
from gateway.store.records import (
    Account,
    AttemptStatus,
    Authorization,
    AuthorizationRead,
    Certificate,
    Challenge,
    ClientVisit,
    Conflict,
    DuplicateAccount,
    Finding,
    Insert,
    Issuer,
    LegacyClient,
    NameReads,
    NotFound,
    Operation,
    Order,
    OrderAttempt,
    Record,
    RenewalWindow,
    Spend,
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
    "AuthorizationRead",
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
    "NameReads",
    "NotFound",
    "Operation",
    "Order",
    "OrderAttempt",
    "Record",
    "RenewalWindow",
    "Spend",
    "StoreError",
    "Update",
    "issuer_id",
    "open_store",
]


def is_shared_state(state: str) -> bool:
    """
    Whether ``--state`` names a PostgreSQL database (``postgresql://…``)
    rather than an SQLite file.
    """
    return state.startswith(("postgresql://", "postgres://"))


def open_store(state: str, reactor: Any, close_on_shutdown: bool = True,
               upstream: Optional[str] = None,
               password: Optional[str] = None) -> "Deferred[SQLStore]":
    """
    Open the store ``--state`` names, created and migrated as needed: a
    ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`` URI (``password``, when
    given, wins over the URI's), else an SQLite file.  See
    `gateway.store.sqlite.SQLiteStore.open` for the other arguments.

    :raises ValueError: for a PostgreSQL URI without a database name.
    """
    if is_shared_state(state):
        from gateway.store.postgresql import PostgreSQLStore, StateURI

        shared: "Deferred[Any]" = PostgreSQLStore.open(
            StateURI.parse(state, password), reactor=reactor,
            close_on_shutdown=close_on_shutdown, upstream=upstream)
        return shared
    from gateway.store.sqlite import SQLiteStore

    opened: "Deferred[Any]" = SQLiteStore.open(
        state, reactor=reactor, close_on_shutdown=close_on_shutdown, upstream=upstream)
    return opened
