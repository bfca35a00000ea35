-- Role: fast_tokens (XEP-0484 FAST). Per account and client id (XEP-0388 user-agent id) the
-- newest token (current = 1) and the previous one (current = 0), valid until the client has
-- used the newest. Never the token itself: the hash of its initiator message (`verifier`) and
-- the server's final message (`responder`), both fixed functions of the token for
-- HT-SHA-256-NONE.
CREATE TABLE fast_tokens (
    account    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    current    INTEGER NOT NULL,
    mechanism  TEXT NOT NULL,
    verifier   BLOB NOT NULL,
    responder  BLOB NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (account, client_id, current)
) WITHOUT ROWID;
CREATE INDEX fast_tokens_expiry ON fast_tokens (expires_at);
