-- Role: muc (XEP-0045 rooms). Persistent rooms only: their configuration (with subject and
-- occupant-id secret) as text the server writes and reads, and their affiliations. Room
-- messages live in `archive`, under the room's bare JID as `account`.
CREATE TABLE muc_rooms (
    room     TEXT PRIMARY KEY NOT NULL,
    config   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE muc_affiliations (
    room         TEXT NOT NULL,
    jid          TEXT NOT NULL,
    affiliation  TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    PRIMARY KEY (room, jid)
) WITHOUT ROWID;
