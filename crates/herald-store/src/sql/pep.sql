-- Role: PEP (XEP-0163). Each account's nodes with their configuration (opaque text the
-- server writes and reads) and their items (payload XML) in publish order (`seq`, per node).
CREATE TABLE pep_nodes (
    account  TEXT NOT NULL,
    node     TEXT NOT NULL,
    config   TEXT NOT NULL,
    PRIMARY KEY (account, node)
) WITHOUT ROWID;
CREATE TABLE pep_items (
    account  TEXT NOT NULL,
    node     TEXT NOT NULL,
    id       TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (account, node, id)
) WITHOUT ROWID;
CREATE INDEX pep_items_by_seq ON pep_items (account, node, seq);
