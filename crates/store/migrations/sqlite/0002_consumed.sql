-- An attestation is paid for by at most one settlement; the primary key enforces it across nodes.
CREATE TABLE consumed_attestations (
    attestation_digest  BLOB PRIMARY KEY,
    settlement_key      TEXT NOT NULL,
    settlement_digest   BLOB NOT NULL,
    created_at          BIGINT NOT NULL
);
