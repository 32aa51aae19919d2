-- Hanzo KMS store, schema version 1 (PostgreSQL).
-- Keep in step with migrations/sqlite/0001_init.sql: only the binary column type differs.
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);

CREATE TABLE keys (
    name              TEXT PRIMARY KEY,
    purpose           TEXT NOT NULL,
    customer          TEXT NOT NULL,
    short_name        TEXT NOT NULL,
    algorithm         TEXT NOT NULL,
    origin            TEXT NOT NULL,
    provider          TEXT NOT NULL,
    state             TEXT NOT NULL,
    primary_version   BIGINT NOT NULL,
    rotation_period_s BIGINT,
    created_at        BIGINT NOT NULL,
    rotated_at        BIGINT NOT NULL,
    destroy_at        BIGINT
);
CREATE INDEX keys_customer ON keys (customer);

CREATE TABLE key_versions (
    key_name    TEXT NOT NULL REFERENCES keys (name),
    version     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    public_key  BYTEA,
    PRIMARY KEY (key_name, version)
);

-- Sealed or wrapped material, or an HSM reference: whatever the provider needs.
-- Destroying a version deletes its row here; the version row stays, marked destroyed.
CREATE TABLE key_material (
    key_name  TEXT NOT NULL,
    version   BIGINT NOT NULL,
    provider  TEXT NOT NULL,
    handle    BYTEA NOT NULL,
    PRIMARY KEY (key_name, version),
    FOREIGN KEY (key_name, version) REFERENCES key_versions (key_name, version)
);

-- The audit chain head: one row, updated in every write transaction. Taking it first
-- serialises writers, so the chain never forks (on PostgreSQL too).
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key_name    TEXT,
    key_version BIGINT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    peer        TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

-- Replay guard: a key never signs two different messages under one nonce.
CREATE TABLE used_nonces (
    key_name        TEXT NOT NULL,
    nonce           BYTEA NOT NULL,
    message_digest  BYTEA NOT NULL,
    signature       BYTEA,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (key_name, nonce)
);
