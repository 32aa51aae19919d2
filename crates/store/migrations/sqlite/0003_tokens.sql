-- API tokens. Only a MAC of each token's secret is stored (HMAC-SHA256 under a provider key).
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    roles       TEXT NOT NULL,
    patterns    TEXT NOT NULL,
    mac         BLOB NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT
);
