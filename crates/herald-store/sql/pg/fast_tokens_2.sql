-- Role: fast_tokens, version 2 (PostgreSQL): the random salt of a server-derived token
-- (HMAC-SHA-256(server key, salt ‖ account ‖ client id ‖ mechanism)); `verifier` and
-- `responder` are empty for such rows. Rows without a salt keep working for HT-SHA-256-NONE.
ALTER TABLE fast_tokens ADD COLUMN salt BYTEA;
