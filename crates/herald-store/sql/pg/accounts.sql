-- Role: accounts (PostgreSQL). Same contract as src/sql/accounts.sql: only SCRAM verifiers.
CREATE TABLE accounts (
    account             TEXT PRIMARY KEY,
    sha1_salt           BYTEA NOT NULL,
    sha1_iterations     BIGINT NOT NULL,
    sha1_stored_key     BYTEA NOT NULL,
    sha1_server_key     BYTEA NOT NULL,
    sha256_salt         BYTEA NOT NULL,
    sha256_iterations   BIGINT NOT NULL,
    sha256_stored_key   BYTEA NOT NULL,
    sha256_server_key   BYTEA NOT NULL,
    created_at          BIGINT NOT NULL  -- unix millis
);
