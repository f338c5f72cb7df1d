-- A gateway state at schema version 3, written by the gateway before issue 17 (commit cb5e8cb,
-- the last without issuer links) and dumped with sqlite3's iterdump; see README.md here.
BEGIN TRANSACTION;
CREATE TABLE accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        thumbprint TEXT NOT NULL UNIQUE,
        public_jwk TEXT NOT NULL,
        upstream_url TEXT,
        contact TEXT NOT NULL,
        agreement TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        initial_ip TEXT NOT NULL
    , upstream_directory TEXT);
INSERT INTO "accounts" VALUES(1,'tp-old','{"crv":"P-256","kty":"EC","x":"eA","y":"eQ"}','https://ca-a.test/acct/1','["mailto:old@example.test"]',NULL,'valid','2026-12-02T23:35:49Z','127.0.0.1','https://ca-a.test/dir');
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
        updated_at TEXT NOT NULL, directory_url TEXT,
        UNIQUE (id, account_id),
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id)
    );
INSERT INTO "authorizations" VALUES('authz-1',1,'order-1','https://ca-a.test/authz/1','old.example',0,'valid','2026-12-05T17:00:00Z','2026-11-28T17:00:00Z','2026-11-28T17:01:00Z','https://ca-a.test/dir');
CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        order_id TEXT,
        serial TEXT NOT NULL UNIQUE,
        leaf_der BLOB NOT NULL,
        issuer_ids TEXT NOT NULL,
        upstream_url TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT,
        revocation_reason INTEGER, directory_url TEXT, orphaned INTEGER NOT NULL DEFAULT 0,
        FOREIGN KEY (order_id, account_id) REFERENCES orders (id, account_id)
    );
INSERT INTO "certificates" VALUES('cert-1',1,'order-1','1f',X'6C65616620444552','["a775ef3b418e10224d885cdced571ab9","e7716eac6d2aab1e1b1afa599a86ebfb"]','https://ca-a.test/cert/1','2026-11-28T17:02:00Z',NULL,NULL,'https://ca-a.test/dir',0);
CREATE TABLE challenges (
        id TEXT PRIMARY KEY,
        authorization_id TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        type TEXT NOT NULL,
        token TEXT NOT NULL,
        status TEXT NOT NULL,
        FOREIGN KEY (authorization_id, account_id)
            REFERENCES authorizations (id, account_id)
    );
INSERT INTO "challenges" VALUES('chall-1','authz-1',1,'https://ca-a.test/chall/1','http-01','tok','valid');
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
        PRIMARY KEY (address, user_agent)
    );
INSERT INTO "clients" VALUES('127.0.0.1','certbot/1.32.0','["tp-old"]','["old.example"]','2026-11-28T17:02:00Z','2026-11-28T17:02:00Z',1,0,1,'2026-11-28T17:02:00Z',NULL,NULL);
CREATE TABLE issuers (
        id TEXT PRIMARY KEY,
        der BLOB NOT NULL
    );
INSERT INTO "issuers" VALUES('a775ef3b418e10224d885cdced571ab9',X'696E7465726D65646961746520444552');
INSERT INTO "issuers" VALUES('e7716eac6d2aab1e1b1afa599a86ebfb',X'726F6F7420444552');
CREATE TABLE order_attempts (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        identifiers TEXT NOT NULL,
        created_at TEXT NOT NULL,
        directory_url TEXT,
        status TEXT NOT NULL
    );
INSERT INTO "order_attempts" VALUES('attempt-1',1,'["lost.example"]','2026-11-28T17:03:00Z','https://ca-a.test/dir','open');
CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        upstream_url TEXT NOT NULL,
        identifiers TEXT NOT NULL,
        status TEXT NOT NULL,
        finalize_url TEXT NOT NULL,
        expires TEXT,
        certificate_url TEXT,
        created_at TEXT NOT NULL, authorization_urls TEXT NOT NULL DEFAULT '[]', directory_url TEXT,
        UNIQUE (id, account_id)
    );
INSERT INTO "orders" VALUES('order-1',1,'https://ca-a.test/order/1','["old.example"]','valid','https://ca-a.test/finalize/1','2026-12-05T17:00:00Z','https://ca-a.test/cert/1','2026-11-28T17:00:00Z','["https://ca-a.test/authz/1"]','https://ca-a.test/dir');
CREATE TABLE probes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    );
INSERT INTO "probes" VALUES(1,'2026-12-02T23:35:49Z');
CREATE INDEX orders_by_identifiers ON orders (account_id, identifiers);
CREATE INDEX authorizations_by_order ON authorizations (order_id);
CREATE INDEX authorizations_by_upstream_url
        ON authorizations (account_id, upstream_url)
    ;
CREATE INDEX authorizations_by_identifier
        ON authorizations (account_id, identifier, wildcard)
    ;
CREATE INDEX challenges_by_authorization
        ON challenges (authorization_id)
    ;
CREATE INDEX certificates_by_account ON certificates (account_id);
CREATE INDEX order_attempts_by_status ON order_attempts (status, directory_url);
CREATE INDEX authorizations_by_status ON authorizations (status, directory_url);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('accounts',1);
COMMIT;
PRAGMA user_version = 3;
