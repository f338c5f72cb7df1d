"""
Moving a state from one database to another: ``acme-gateway migrate-state
--from FILE --to URI`` (an SQLite file into PostgreSQL, when one gateway
becomes several replicas).

Every table is copied row by row, in insertion order (so the target's
insertion order, which "newest first" answers rely on, is the source's),
parents before children, in one write transaction on the target: a failure
leaves it as empty as it was.  The target must be empty — a copy never
merges two states.  Account ids are kept (they are in v1 URLs clients
stored), and the target's id counter is moved past them.  Both databases
are first brought to the current schema, exactly as the gateway would at
start-up.  The gateway must not be running on the source meanwhile.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from gateway.store.engine import Database
from gateway.store.records import StoreError
from gateway.store.schema import migrate

#: Every table of the schema, parents before children.
TABLES: Tuple[str, ...] = (
    "accounts", "orders", "authorizations", "challenges", "issuers", "certificates",
    "renewal_windows", "order_attempts", "clients", "probes", "secrets", "used_nonces",
    "http01_answers",
)


def _columns(database: Database, table: str) -> List[str]:
    cursor = database.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    row_keys = [column[0] for column in (getattr(cursor, "description", None) or ())]
    return [name for name in row_keys if name != "row_seq"]


def copy_state(source: Database, target: Database) -> Dict[str, int]:
    """
    Copy every row of ``source`` into the empty ``target``.

    :return: the rows copied, per table.
    :raises StoreError: when ``target`` already holds a state.
    """
    migrate(source)
    migrate(target)
    copied: Dict[str, int] = {}

    def work() -> None:
        for table in TABLES:
            row = target.execute(f"SELECT count(*) FROM {table}").fetchone()
            if row is not None and int(row[0]) and table != "secrets":
                raise StoreError(
                    f"the target already holds a gateway state ({table} has {int(row[0])} "
                    f"rows): migrate into an empty database")
        # A target that a gateway opened once has a nonce key of its own;
        # the source's replaces it, so that nonces issued before still work.
        target.execute("DELETE FROM secrets")
        for table in TABLES:
            columns = [c for c in _columns(source, table) if c in set(_columns(target, table))]
            names = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            count = 0
            for values in source.execute(
                    f"SELECT {names} FROM {table} ORDER BY {source.row_order}").fetchall():
                target.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                               tuple(values[i] for i in range(len(columns))))
                count += 1
            copied[table] = count
        target.restart_ids("accounts")

    target.transaction(work)
    return copied
