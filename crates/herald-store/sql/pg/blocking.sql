-- Role: blocking (XEP-0191, PostgreSQL). Exact JIDs as the client gave them.
CREATE TABLE blocklist (
    account  TEXT NOT NULL,
    jid      TEXT NOT NULL,
    PRIMARY KEY (account, jid)
);
