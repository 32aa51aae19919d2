-- An attestation is paid for by at most one settlement; the primary key enforces it across nodes.
CREATE TABLE consumed_attestations (
    attestation_digest  BYTEA PRIMARY KEY,
    settlement_key      TEXT NOT NULL,
    settlement_digest   BYTEA NOT NULL,
    created_at          BIGINT NOT NULL
);
