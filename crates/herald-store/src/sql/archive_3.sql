-- Role: message archive, version 3. Per account: how many messages its archive holds and
-- their bytes (the stanza's UTF-8 length), changed in the same transaction as every insert
-- and delete, so a quota check reads one row instead of summing the user's archive.
CREATE TABLE archive_usage (
    account   TEXT PRIMARY KEY NOT NULL,
    messages  INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO archive_usage (account, messages, bytes)
    SELECT account, COUNT(*), SUM(length(CAST(stanza_xml AS BLOB))) FROM archive GROUP BY account;
