-- Role: push registrations (XEP-0357), keyed by (account, app server JID, node).
-- Error counts live here so they survive a restart (push issue, item 10).
CREATE TABLE push_registrations (
    account              TEXT NOT NULL,
    jid                  TEXT NOT NULL,
    node                 TEXT NOT NULL,
    publish_options_xml  TEXT,
    enabled_at           INTEGER NOT NULL,
    resource             TEXT,
    lang                 TEXT,
    error_count          INTEGER NOT NULL DEFAULT 0,
    last_push            INTEGER,
    last_result          TEXT,
    PRIMARY KEY (account, jid, node)
);
