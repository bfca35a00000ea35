-- Role: uploads (XEP-0363). One row per completed upload; the file itself lives under
-- data_dir/upload, named by the id. The owner column is `owner`, not `account`: files were
-- shared with others, so an account's removal leaves them until they expire.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    filename      TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_by_time ON uploads (created_at);
-- Each owner's running totals, changed in the transaction of every insert and delete, so a
-- quota check is one lookup.
CREATE TABLE upload_usage (
    owner  TEXT PRIMARY KEY,
    files  INTEGER NOT NULL,
    bytes  INTEGER NOT NULL
) WITHOUT ROWID;
