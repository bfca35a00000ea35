-- Role: muc (XEP-0045, PostgreSQL): persistent rooms' configuration and affiliations.
CREATE TABLE muc_rooms (
    room     TEXT PRIMARY KEY,
    config   TEXT NOT NULL
);
CREATE TABLE muc_affiliations (
    room         TEXT NOT NULL,
    jid          TEXT NOT NULL,
    affiliation  TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    PRIMARY KEY (room, jid)
);
