-- Role: sessions. XEP-0198 state that outlives the process: hibernated sessions (written when
-- they hibernate, appended to while they sleep, completed at a clean shutdown), the last h of
-- ended sessions (tombstones), and server-wide flags such as "the last stop was clean".
CREATE TABLE sm_sessions (
    id          TEXT PRIMARY KEY NOT NULL,  -- the resumption id
    account     TEXT NOT NULL,
    resource    TEXT NOT NULL,
    inbound_h   INTEGER NOT NULL,           -- stanzas handled from the client (mod 2^32)
    outbound_h  INTEGER NOT NULL,           -- stanzas sent to the client (mod 2^32)
    expires_at  INTEGER NOT NULL,           -- unix millis
    state       TEXT NOT NULL,              -- the server's own record of the rest
    saved_at    INTEGER NOT NULL            -- unix millis
);
CREATE INDEX sm_sessions_by_account ON sm_sessions (account);
-- The unacknowledged queue of each saved session, oldest first by pos.
CREATE TABLE sm_queue (
    pos         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    account     TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    queued_at   INTEGER NOT NULL,           -- unix micros
    offline_id  INTEGER                     -- the offline_messages row it was read from
);
CREATE INDEX sm_queue_by_session ON sm_queue (session_id, pos);
CREATE INDEX sm_queue_by_account ON sm_queue (account);
CREATE TABLE sm_tombstones (
    account     TEXT NOT NULL,
    id          TEXT NOT NULL,
    h           INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,           -- unix millis
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
CREATE INDEX sm_tombstones_by_age ON sm_tombstones (ended_at);
CREATE TABLE server_flags (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL
) WITHOUT ROWID;
