-- Role: push registrations (XEP-0357, PostgreSQL), keyed by (account, app server JID, node),
-- with their error counts; and removed registrations with why and when (push_removals).
-- seq gives insertion order where SQLite used the rowid.
CREATE TABLE push_registrations (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY,
    account              TEXT NOT NULL,
    jid                  TEXT NOT NULL,
    node                 TEXT NOT NULL,
    publish_options_xml  TEXT,
    enabled_at           BIGINT NOT NULL,
    resource             TEXT,
    lang                 TEXT,
    error_count          BIGINT NOT NULL DEFAULT 0,
    last_push            BIGINT,
    last_result          TEXT,
    PRIMARY KEY (account, jid, node)
);
CREATE TABLE push_removals (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account      TEXT NOT NULL,
    jid          TEXT NOT NULL,
    node         TEXT NOT NULL,
    removed_at   BIGINT NOT NULL,   -- unix seconds
    reason       TEXT NOT NULL,
    last_result  TEXT,
    error_count  BIGINT NOT NULL
);
CREATE INDEX push_removals_by_account ON push_removals (account, removed_at);
CREATE INDEX push_removals_by_age ON push_removals (removed_at);
