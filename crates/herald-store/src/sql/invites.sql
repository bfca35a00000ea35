-- Role: invites (XEP-0401/XEP-0445 registration tokens). A token is kept only as its
-- SHA-256: the database alone gives no usable token. `id` is the public handle operators
-- list and revoke by.
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    token_hash  BLOB NOT NULL UNIQUE,
    for_user    TEXT,               -- the one account name it registers; NULL: any
    created     INTEGER NOT NULL,   -- ms since the epoch
    expires     INTEGER,            -- ms since the epoch; NULL: never
    uses_left   INTEGER NOT NULL
);
