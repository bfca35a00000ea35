-- Role: vcard (XEP-0054, PostgreSQL): one vCard per account with its XEP-0153 photo hash.
CREATE TABLE vcards (
    account     TEXT PRIMARY KEY,
    xml         TEXT NOT NULL,
    photo_hash  TEXT
);
