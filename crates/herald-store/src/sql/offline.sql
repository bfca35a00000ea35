-- Role: offline messages (XEP-0160). AUTOINCREMENT so an id is never reused: the server
-- deletes by id after delivery, and a reused id could delete a message stored meanwhile.
CREATE TABLE offline_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    stanza_xml  TEXT NOT NULL,
    stored_at   INTEGER NOT NULL  -- unix millis
);
CREATE INDEX offline_messages_by_account ON offline_messages (account, id);
