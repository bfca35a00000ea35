-- Role: offline messages, version 2. Per account: how many messages wait and their bytes
-- (the stanza's UTF-8 length), changed in the same transaction as every insert and delete,
-- so storing one checks the bounds with one row lookup instead of counting the user's rows.
CREATE TABLE offline_usage (
    account   TEXT PRIMARY KEY NOT NULL,
    messages  INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO offline_usage (account, messages, bytes)
    SELECT account, COUNT(*), SUM(length(CAST(stanza_xml AS BLOB)))
    FROM offline_messages GROUP BY account;
