-- Role: PEP (XEP-0163, PostgreSQL): nodes with their configuration and items in publish
-- order (seq, per node).
CREATE TABLE pep_nodes (
    account  TEXT NOT NULL,
    node     TEXT NOT NULL,
    config   TEXT NOT NULL,
    PRIMARY KEY (account, node)
);
CREATE TABLE pep_items (
    account  TEXT NOT NULL,
    node     TEXT NOT NULL,
    id       TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (account, node, id)
);
CREATE INDEX pep_items_by_seq ON pep_items (account, node, seq);
