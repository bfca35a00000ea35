-- Role: push registrations, version 2. Registrations the server removed (app server errors,
-- eviction, a client's disable, an operator), with why and when, so `herald push list` can
-- say what happened to a device that stopped getting pushes. Kept for push.removed_retention
-- (purged hourly) and at most a few per account.
CREATE TABLE push_removals (
    account      TEXT NOT NULL,
    jid          TEXT NOT NULL,
    node         TEXT NOT NULL,
    removed_at   INTEGER NOT NULL,   -- unix seconds
    reason       TEXT NOT NULL,
    last_result  TEXT,               -- the registration's last result when it was removed
    error_count  INTEGER NOT NULL
);
CREATE INDEX push_removals_by_account ON push_removals (account, removed_at);
CREATE INDEX push_removals_by_age ON push_removals (removed_at);
