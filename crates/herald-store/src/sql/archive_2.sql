-- A full-JID `with` filter (XEP-0313 §4.1.1) is served by its own index, so a page costs the
-- same whatever the rest of that peer's history (other resources) holds.
CREATE INDEX archive_by_with_full ON archive (account, with_full, ts);
