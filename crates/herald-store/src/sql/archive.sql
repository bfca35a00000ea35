-- Role: message archive (XEP-0313) and its preferences.
-- seq (the rowid) breaks timestamp ties in insertion order, so paging is a total order.
CREATE TABLE archive (
    seq         INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    stanza_id   TEXT NOT NULL,    -- XEP-0359 stanza-id, unique per account
    with_bare   TEXT NOT NULL,
    with_full   TEXT NOT NULL,
    ts          INTEGER NOT NULL, -- unix micros
    stanza_xml  TEXT NOT NULL
);
CREATE UNIQUE INDEX archive_by_id ON archive (account, stanza_id);
CREATE INDEX archive_by_time ON archive (account, ts);
CREATE INDEX archive_by_with ON archive (account, with_bare, ts);
-- Retention deletes by age across all accounts.
CREATE INDEX archive_by_age ON archive (ts);

CREATE TABLE mam_prefs (
    account       TEXT PRIMARY KEY NOT NULL,
    default_mode  TEXT CHECK (default_mode IN ('always', 'roster', 'never'))  -- NULL = server default
) WITHOUT ROWID;

CREATE TABLE mam_prefs_jids (
    account  TEXT NOT NULL,
    list     TEXT NOT NULL CHECK (list IN ('always', 'never')),
    jid      TEXT NOT NULL,
    PRIMARY KEY (account, list, jid)
) WITHOUT ROWID;
