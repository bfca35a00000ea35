-- Role: uploads (XEP-0363, PostgreSQL): completed uploads and each owner's totals.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    filename      TEXT NOT NULL,
    size          BIGINT NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX uploads_by_time ON uploads (created_at);
CREATE TABLE upload_usage (
    owner  TEXT PRIMARY KEY,
    files  BIGINT NOT NULL,
    bytes  BIGINT NOT NULL
);
