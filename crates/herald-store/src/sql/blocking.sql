-- Role: blocking (XEP-0191). Exact JIDs as the client gave them; matching a domain or bare
-- JID against a full JID is the server's business.
CREATE TABLE blocklist (
    account  TEXT NOT NULL,
    jid      TEXT NOT NULL,
    PRIMARY KEY (account, jid)
) WITHOUT ROWID;
