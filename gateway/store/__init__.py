"""
Durable gateway state: which v1 URL maps to which upstream URL, and which
account owns it (MAPPING.md §3.1).

Code that needs state depends on `IStore`; production opens a `SQLiteStore`,
unit tests use a `MemoryStore`.  Both behave identically.
"""

from gateway.store.interface import IStore
from gateway.store.memory import MemoryStore
from gateway.store.records import (
    Account,
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
    Order,
    OrderAttempt,
    StoreError,
    Update,
    issuer_id,
)
from gateway.store.sqlite import SQLiteStore

__all__ = [
    "Account",
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
    "MemoryStore",
    "NotFound",
    "Order",
    "OrderAttempt",
    "SQLiteStore",
    "StoreError",
    "Update",
    "issuer_id",
]
