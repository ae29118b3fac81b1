-- Refresh tokens by `jti`. A refresh spends its token and stores the successor in the same
-- family; presenting a spent token again revokes the family.
CREATE TABLE refresh_tokens (
    jti        uuid PRIMARY KEY,
    family     uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Seconds since the Unix epoch, as in the token's `exp`.
    expires_at bigint NOT NULL,
    spent      boolean NOT NULL DEFAULT false,
    revoked    boolean NOT NULL DEFAULT false
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
