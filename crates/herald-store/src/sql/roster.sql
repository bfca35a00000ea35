-- Role: roster (RFC 6121 §2), roster versions (XEP-0237) and pending inbound
-- subscription requests (RFC 6121 §3.1.3).
CREATE TABLE roster_items (
    account       TEXT NOT NULL,
    jid           TEXT NOT NULL,
    name          TEXT,
    subscription  TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask           INTEGER NOT NULL DEFAULT 0,  -- 1 = pending-out ("ask='subscribe'")
    PRIMARY KEY (account, jid)
) WITHOUT ROWID;

-- Groups keep the order the client gave them (position), without duplicates.
CREATE TABLE roster_groups (
    account   TEXT NOT NULL,
    jid       TEXT NOT NULL,
    name      TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (account, jid, name)
) WITHOUT ROWID;

-- Absent row = version 0 (empty, never-changed roster).
CREATE TABLE roster_versions (
    account  TEXT PRIMARY KEY NOT NULL,
    version  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE subscription_requests (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    from_jid    TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    UNIQUE (account, from_jid)
);
