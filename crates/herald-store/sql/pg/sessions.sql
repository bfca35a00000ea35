-- Role: sessions (PostgreSQL): hibernated XEP-0198 sessions with their queues, tombstones
-- (the last h of ended sessions) and server flags.
CREATE TABLE sm_sessions (
    id          TEXT PRIMARY KEY,
    account     TEXT NOT NULL,
    resource    TEXT NOT NULL,
    inbound_h   BIGINT NOT NULL,
    outbound_h  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,   -- unix millis
    state       TEXT NOT NULL,
    saved_at    BIGINT NOT NULL    -- unix millis
);
CREATE INDEX sm_sessions_by_account ON sm_sessions (account);
CREATE TABLE sm_queue (
    pos         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  TEXT NOT NULL,
    account     TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    queued_at   BIGINT NOT NULL,   -- unix micros
    offline_id  BIGINT
);
CREATE INDEX sm_queue_by_session ON sm_queue (session_id, pos);
CREATE INDEX sm_queue_by_account ON sm_queue (account);
CREATE TABLE sm_tombstones (
    account     TEXT NOT NULL,
    id          TEXT NOT NULL,
    h           BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,   -- unix millis
    PRIMARY KEY (account, id)
);
CREATE INDEX sm_tombstones_by_age ON sm_tombstones (ended_at);
CREATE TABLE server_flags (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
