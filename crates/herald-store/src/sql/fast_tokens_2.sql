-- Role: fast_tokens, version 2: tokens derived by the server. A token issued from now on is
-- HMAC-SHA-256(server key, salt ‖ account ‖ client id ‖ mechanism), so the server can compute
-- HT-SHA-256-EXPR/-ENDP messages, which include per-connection channel-binding data; only the
-- random `salt` is kept (`verifier` and `responder` are empty for such rows). Rows from version
-- 1 have no salt and stay valid for HT-SHA-256-NONE through their hashed messages.
ALTER TABLE fast_tokens ADD COLUMN salt BLOB;
