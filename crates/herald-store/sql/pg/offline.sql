-- Role: offline messages (PostgreSQL). Ids come from an identity, never reused: the server
-- deletes by id after delivery. offline_usage keeps each account's count and bytes, changed
-- in the transaction of every insert and delete.
CREATE TABLE offline_messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    stored_at   BIGINT NOT NULL  -- unix millis
);
CREATE INDEX offline_messages_by_account ON offline_messages (account, id);
CREATE TABLE offline_usage (
    account   TEXT PRIMARY KEY,
    messages  BIGINT NOT NULL,
    bytes     BIGINT NOT NULL
);
