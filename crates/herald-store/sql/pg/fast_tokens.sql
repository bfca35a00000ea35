-- Role: fast_tokens (XEP-0484, PostgreSQL): per account and client id the newest token
-- (current) and the previous one, as hashes only.
CREATE TABLE fast_tokens (
    account    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    current    BOOLEAN NOT NULL,
    mechanism  TEXT NOT NULL,
    verifier   BYTEA NOT NULL,
    responder  BYTEA NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (account, client_id, current)
);
CREATE INDEX fast_tokens_expiry ON fast_tokens (expires_at);
