-- Role: message archive (XEP-0313, PostgreSQL). seq (an identity) breaks timestamp ties in
-- insertion order, so paging is a total order.
CREATE TABLE archive (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     TEXT NOT NULL,
    stanza_id   TEXT NOT NULL,
    with_bare   TEXT NOT NULL,
    with_full   TEXT NOT NULL,
    ts          BIGINT NOT NULL, -- unix micros
    stanza_xml  TEXT NOT NULL
);
CREATE UNIQUE INDEX archive_by_id ON archive (account, stanza_id);
CREATE INDEX archive_by_time ON archive (account, ts, seq);
CREATE INDEX archive_by_with ON archive (account, with_bare, ts, seq);
CREATE INDEX archive_by_with_full ON archive (account, with_full, ts, seq);
-- Retention deletes by age across all accounts.
CREATE INDEX archive_by_age ON archive (ts);
CREATE TABLE archive_usage (
    account   TEXT PRIMARY KEY,
    messages  BIGINT NOT NULL,
    bytes     BIGINT NOT NULL
);
CREATE TABLE mam_prefs (
    account       TEXT PRIMARY KEY,
    default_mode  TEXT CHECK (default_mode IN ('always', 'roster', 'never'))
);
CREATE TABLE mam_prefs_jids (
    account  TEXT NOT NULL,
    list     TEXT NOT NULL CHECK (list IN ('always', 'never')),
    jid      TEXT NOT NULL,
    PRIMARY KEY (account, list, jid)
);
