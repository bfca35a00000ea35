-- Role: private (XEP-0049, PostgreSQL): one element per account, name and namespace.
CREATE TABLE private_items (
    account  TEXT NOT NULL,
    name     TEXT NOT NULL,
    ns       TEXT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (account, ns, name)
);
