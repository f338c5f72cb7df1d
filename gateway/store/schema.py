"""
The gateway's database schema, as a list of numbered migrations.

A database records the number of the last migration applied to it; opening
it applies the later ones, each in its own transaction together with the new
number, so each applies exactly once and a crash mid-migration leaves the
previous version whole.  A new version of the schema is one more
`Migration` at the end of `MIGRATIONS`; a migration already released is
never edited.

Several processes may open one database at once (``--workers``, replicas
on one PostgreSQL): each step re-reads the version inside its own write
transaction, which excludes every other writer, so a step another process
has just applied is skipped, never applied twice.

The statements are SQL that both SQLite and PostgreSQL run, except for a few spellings each engine chooses
(`gateway.store.engine.Database.column_types`), written as ``{name}``:

``{serial_key}``
    an integer primary key the database assigns, counting up and never
    reused (account ids, in v1 URLs);
``{bytes}``
    a column of raw bytes (certificates in DER);
``{row_order}``
    what a table needs, at the end of its columns, for its rows to be read
    in insertion order (`gateway.store.engine.Database.row_order`): nothing in
    SQLite, whose ``rowid`` is that order.

Why each table and column exists is said at the migration that adds it.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping, Optional, Tuple

import attrs

from gateway.store.engine import Database
from gateway.store.records import StoreError


@attrs.frozen
class Migration:
    """
    One step of the schema.

    :ivar version: the schema version the step brings a database to (the
        previous step's plus one).
    :ivar statements: SQL run in order, with ``{name}`` spellings (see the
        module docstring).
    :ivar backfill: fills what the statements added from rows already
        stored, after them and in the same transaction; `None` when there is
        nothing to fill.
    """

    version: int
    statements: Tuple[str, ...]
    backfill: Optional[Callable[[Database], None]] = None

    def sql(self, column_types: Mapping[str, str]) -> Tuple[str, ...]:
        """
        The statements as an engine with these ``column_types`` runs them.
        """
        return tuple(statement.format_map(column_types) for statement in self.statements)


# Version 1.  Every table but ``issuers`` carries the owning account_id
# (``accounts.id`` is it for accounts); issuers are public and shared.  The
# composite foreign keys (parent id, account_id) make the database itself
# refuse a child that points at another account's parent.
_VERSION_1 = Migration(1, (
    """
    CREATE TABLE accounts (
        id {serial_key},
        thumbprint TEXT NOT NULL UNIQUE,
        public_jwk TEXT NOT NULL,
        upstream_url TEXT,
        contact TEXT NOT NULL,
        agreement TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        initial_ip TEXT NOT NULL{row_order}
    )
    """,
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        identifiers TEXT NOT NULL,
        status TEXT NOT NULL,
        finalize_url TEXT NOT NULL,
        expires TEXT,
        certificate_url TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (id, account_id){row_order}
    )
    """,
    "CREATE INDEX orders_by_identifiers ON orders (account_id, identifiers)",
    """
    CREATE TABLE authorizations (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        order_id TEXT,
        upstream_url TEXT NOT NULL,
        identifier TEXT NOT NULL,
        wildcard INTEGER NOT NULL CHECK (wildcard IN (0, 1)),
        status TEXT NOT NULL,
        expires TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (id, account_id),
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id){row_order}
    )
    """,
    "CREATE INDEX authorizations_by_order ON authorizations (order_id)",
    """
    CREATE INDEX authorizations_by_upstream_url
        ON authorizations (account_id, upstream_url)
    """,
    """
    CREATE INDEX authorizations_by_identifier
        ON authorizations (account_id, identifier, wildcard)
    """,
    """
    CREATE TABLE challenges (
        id TEXT PRIMARY KEY,
        authorization_id TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        type TEXT NOT NULL,
        token TEXT NOT NULL,
        status TEXT NOT NULL,
        FOREIGN KEY (authorization_id, account_id)
            REFERENCES authorizations (id, account_id){row_order}
    )
    """,
    """
    CREATE INDEX challenges_by_authorization
        ON challenges (authorization_id)
    """,
    """
    CREATE TABLE issuers (
        id TEXT PRIMARY KEY,
        der {bytes} NOT NULL{row_order}
    )
    """,
    """
    CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        order_id TEXT,
        serial TEXT NOT NULL UNIQUE,
        leaf_der {bytes} NOT NULL,
        issuer_ids TEXT NOT NULL,
        upstream_url TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT,
        revocation_reason INTEGER,
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id){row_order}
    )
    """,
    "CREATE INDEX certificates_by_account ON certificates (account_id)",
))

# Version 2: the migration report, one row per legacy client (source
# address and User-Agent), upserted on every v1 request; and a one-row table
# the readiness probe writes to, to prove that state can still be committed.
_VERSION_2 = Migration(2, (
    """
    CREATE TABLE clients (
        address TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        thumbprints TEXT NOT NULL,
        names TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        successes INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        certificates INTEGER NOT NULL,
        last_success TEXT,
        last_failure TEXT,
        last_failure_reason TEXT,
        PRIMARY KEY (address, user_agent){row_order}
    )
    """,
    """
    CREATE TABLE probes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    )
    """,
))

# Version 3: every row of an upstream object records the CA it lives at
# (the directory URL), so a gateway restarted with another --upstream never
# uses the old CA's accounts, orders or authorizations; an order lists its
# authorizations' URLs; a certificate may be an orphan (issued for a key no
# client waits for); and each newOrder is recorded before it is sent
# (order_attempts), so an order whose answer was lost is still known.
_VERSION_3 = Migration(3, (
    "ALTER TABLE accounts ADD COLUMN upstream_directory TEXT",
    "ALTER TABLE orders ADD COLUMN authorization_urls TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE orders ADD COLUMN directory_url TEXT",
    "ALTER TABLE authorizations ADD COLUMN directory_url TEXT",
    "ALTER TABLE certificates ADD COLUMN directory_url TEXT",
    "ALTER TABLE certificates ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0",
    """
    CREATE TABLE order_attempts (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        identifiers TEXT NOT NULL,
        created_at TEXT NOT NULL,
        directory_url TEXT,
        status TEXT NOT NULL{row_order}
    )
    """,
    "CREATE INDEX order_attempts_by_status ON order_attempts (status, directory_url)",
    "CREATE INDEX authorizations_by_status ON authorizations (status, directory_url)",
))


def _issuer_parents_from_certificates(database: Database) -> None:
    """
    Fill ``issuers.parent_id`` from the chains of the certificates stored
    so far: each issuer's parent is the issuer after it in a chain, the
    latest certificate's chain winning, as when each chain is stored.
    """
    rows = database.execute(
        f"SELECT issuer_ids FROM certificates ORDER BY {database.row_order}").fetchall()
    for row in rows:
        chain = json.loads(row["issuer_ids"])
        for issuer, parent in zip(chain, chain[1:]):
            database.execute("UPDATE issuers SET parent_id = ? WHERE id = ?", (parent, issuer))


# Version 4: each issuer records the issuer above it in the chain it was
# last seen in, for the ``Link: rel="up"`` of ``/acme/issuer-cert/<id>``,
# which a restart used to lose (it lived in memory).
_VERSION_4 = Migration(
    4, ("ALTER TABLE issuers ADD COLUMN parent_id TEXT",),
    backfill=_issuer_parents_from_certificates,
)

def _inventory_from_certificates(database: Database) -> None:
    """
    Fill the inventory columns of the certificates stored so far from
    their DER (`gateway.store.leaf.leaf_facts`); a leaf that does not
    parse keeps them empty.
    """
    from gateway.store.leaf import leaf_facts

    for row in database.execute("SELECT id, leaf_der FROM certificates").fetchall():
        try:
            facts = leaf_facts(bytes(row["leaf_der"]))
        except ValueError:
            continue
        database.execute(
            "UPDATE certificates SET names = ?, authority_key_id = ?, not_before = ?,"
            " not_after = ? WHERE id = ?",
            (json.dumps(list(facts.names), separators=(",", ":")), facts.authority_key_id,
             facts.not_before, facts.not_after, row["id"]))


# Version 5: the renewal inventory.  Each certificate keeps what planning
# its renewal needs (its names, its issuer's key id and serial for ARI,
# its validity, its profile) and, when `acme-gateway adopt` imported it
# from a client's files, where from; an order records the certificate
# whose renewal it was planned for, the ARI ``replaces`` it carried and
# the profile the CA gave it; and the CA's suggested renewal window of
# each certificate (ARI, RFC 9773) is kept in renewal_windows.
_VERSION_5 = Migration(5, (
    "ALTER TABLE certificates ADD COLUMN names TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE certificates ADD COLUMN authority_key_id TEXT",
    "ALTER TABLE certificates ADD COLUMN not_before TEXT",
    "ALTER TABLE certificates ADD COLUMN not_after TEXT",
    "ALTER TABLE certificates ADD COLUMN profile TEXT",
    "ALTER TABLE certificates ADD COLUMN adopted_from TEXT",
    "ALTER TABLE orders ADD COLUMN planned_for TEXT",
    "ALTER TABLE orders ADD COLUMN replaces TEXT",
    "ALTER TABLE orders ADD COLUMN profile TEXT",
    "CREATE INDEX orders_by_plan ON orders (account_id, planned_for)",
    """
    CREATE TABLE renewal_windows (
        id TEXT PRIMARY KEY REFERENCES certificates (id),
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        cert_id TEXT NOT NULL,
        window_start TEXT,
        window_end TEXT,
        first_start TEXT,
        explanation_url TEXT,
        checked_at TEXT,
        next_check_at TEXT,
        opened_early INTEGER NOT NULL DEFAULT 0 CHECK (opened_early IN (0, 1)),
        error TEXT,
        directory_url TEXT{row_order}
    )
    """,
), backfill=_inventory_from_certificates)


# Version 6: a challenge the gateway judges itself (tls-sni-01, for v1
# installers that answer nothing else) keeps the outcome of its check: why
# it failed (JSON: code, detail, status) and Boulder's validation record
# (JSON list); a v1 client reads both in the challenge, also after a restart.
_VERSION_6 = Migration(6, (
    "ALTER TABLE challenges ADD COLUMN error TEXT",
    "ALTER TABLE challenges ADD COLUMN validation_record TEXT",
))

# Version 7: what several gateway processes on one database share beyond
# the records.  ``secrets`` holds keys every process must agree on (the one
# that authenticates the v1 nonces any process issues); ``used_nonces`` holds
# each redeemed v1 nonce until it would have expired anyway, so that a nonce
# is accepted exactly once whichever process it reaches; ``http01_answers``
# holds the key authorizations being validated, so that whichever process
# the CA's HTTP-01 request reaches answers it.
_VERSION_7 = Migration(7, (
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value {bytes} NOT NULL
    )
    """,
    """
    CREATE TABLE used_nonces (
        nonce TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )
    """,
    "CREATE INDEX used_nonces_by_expiry ON used_nonces (expires_at)",
    """
    CREATE TABLE http01_answers (
        token TEXT PRIMARY KEY,
        key_authorization TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )
    """,
))

#: Every step, in order: `MIGRATIONS[n - 1]` brings a database to version n.
MIGRATIONS: Tuple[Migration, ...] = (_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4, _VERSION_5,
                                   _VERSION_6, _VERSION_7)

#: The schema version this code reads and writes.
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrate(database: Database) -> int:
    """
    Bring ``database`` to `SCHEMA_VERSION`, one migration per transaction.

    :return: the version the database had before.
    :raises gateway.store.records.StoreError: when the database is newer
        than this code.
    """
    before = database.schema_version()
    if before > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {before}, newer than this"
            f" gateway's {SCHEMA_VERSION}"
        )
    for migration in MIGRATIONS[before:]:

        def step(migration: Migration = migration) -> None:
            if database.schema_version() >= migration.version:
                # Another process applied it since ``before`` was read.
                return
            for statement in migration.sql(database.column_types):
                database.execute(statement)
            if migration.backfill is not None:
                migration.backfill(database)
            # In the same transaction: a crash mid-migration leaves the
            # old version and the old schema.
            database.set_schema_version(migration.version)

        database.transaction(step)
    return before
