-- Role: private (XEP-0049 private XML storage). One serialized element per account, element
-- name and namespace, as the owner set it.
CREATE TABLE private_items (
    account  TEXT NOT NULL,
    name     TEXT NOT NULL,
    ns       TEXT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (account, ns, name)
) WITHOUT ROWID;
