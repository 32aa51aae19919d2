-- An API token may expire (tokens create --ttl): the second since the epoch from which it is
-- refused, or NULL for a token that lives until revoked.
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
