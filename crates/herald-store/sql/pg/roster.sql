-- Role: roster (PostgreSQL): items, groups in client order, versions, subscription requests.
CREATE TABLE roster_items (
    account       TEXT NOT NULL,
    jid           TEXT NOT NULL,
    name          TEXT,
    subscription  TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask           BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (account, jid)
);
CREATE TABLE roster_groups (
    account   TEXT NOT NULL,
    jid       TEXT NOT NULL,
    name      TEXT NOT NULL,
    position  BIGINT NOT NULL,
    PRIMARY KEY (account, jid, name)
);
CREATE TABLE roster_versions (
    account  TEXT PRIMARY KEY,
    version  BIGINT NOT NULL
);
-- seq is an identity: never reused, so a page cursor stays valid.
CREATE TABLE subscription_requests (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     TEXT NOT NULL,
    from_jid    TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    UNIQUE (account, from_jid)
);
CREATE INDEX subscription_requests_by_account ON subscription_requests (account, seq);
