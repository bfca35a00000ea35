-- Role: invites (XEP-0401/XEP-0445, PostgreSQL). Tokens only as their SHA-256.
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    for_user    TEXT,
    created     BIGINT NOT NULL,   -- ms since the epoch
    expires     BIGINT,            -- ms since the epoch; NULL: never
    uses_left   BIGINT NOT NULL
);
