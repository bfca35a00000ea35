-- Role: accounts. One row per local account, keyed by its bare JID ("user@domain").
-- Only SCRAM verifiers are kept (RFC 5802 §3: salt, iteration count, StoredKey, ServerKey),
-- never the password or anything password-equivalent.
CREATE TABLE accounts (
    account             TEXT PRIMARY KEY NOT NULL,
    sha1_salt           BLOB NOT NULL,
    sha1_iterations     INTEGER NOT NULL,
    sha1_stored_key     BLOB NOT NULL,
    sha1_server_key     BLOB NOT NULL,
    sha256_salt         BLOB NOT NULL,
    sha256_iterations   INTEGER NOT NULL,
    sha256_stored_key   BLOB NOT NULL,
    sha256_server_key   BLOB NOT NULL,
    created_at          INTEGER NOT NULL  -- unix millis
) WITHOUT ROWID;
