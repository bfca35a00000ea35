//! XEP-0484 FAST tokens: per account and client id, the newest token and the previous one
//! (rotation keeps the previous valid until the client has used the newest, XEP-0484 §5).
//!
//! Tokens are never stored: only the random salt the server derives a token from with its key,
//! or (tokens issued before salts, for HT-SHA-256-NONE) what checks them: a hash of the
//! client's initiator message and the server's final message, computed by the caller. This module must not generate or
//! check tokens, nor decide lifetimes: the caller passes the times.

use rusqlite::{params, OptionalExtension as _};

use crate::error::Result;
use crate::sqlite::{to_usize, Store};

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastTokenRecord {
    /// The XEP-0388 client id the token is bound to.
    pub client_id: String,
    /// The mechanism it is bound to.
    pub mechanism: String,
    /// What recognises a token without salt (a hash of its initiator message); empty with a
    /// salt.
    pub verifier: Vec<u8>,
    /// The server's final message for a token without salt; empty with a salt.
    pub responder: Vec<u8>,
    /// The random salt the server derives the token from (None: a token from before salts).
    pub salt: Option<Vec<u8>>,
    /// When it was issued (Unix milliseconds).
    pub issued_at: i64,
    /// When it expires (Unix milliseconds).
    pub expires_at: i64,
    /// The newest token of this client (false: the previous one).
    pub current: bool,
}

/// FAST tokens per account and client.
pub trait FastTokenStore {
    /// The tokens of `user`'s client `client_id`, the newest first (at most two).
    fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastTokenRecord>>;
    /// Stores `token` (its `current` is ignored) as the newest of its client: the newest so
    /// far becomes the previous, the previous one is deleted. Then, if more than
    /// `max_clients` of `user`'s clients hold tokens, the tokens of those issued longest ago
    /// are deleted.
    fn issue_fast_token(
        &self,
        user: &str,
        token: &FastTokenRecord,
        max_clients: usize,
    ) -> Result<()>;
    /// The client used its newest token: the previous one is deleted.
    fn retire_previous_fast_token(&self, user: &str, client_id: &str) -> Result<()>;
    /// Deletes the tokens of one client (it logged out); returns how many.
    fn delete_client_fast_tokens(&self, user: &str, client_id: &str) -> Result<usize>;
    /// Deletes every token of `user` (password change, `herald user logout-all`); returns how
    /// many.
    fn delete_user_fast_tokens(&self, user: &str) -> Result<usize>;
    /// Deletes the tokens that expired before `now` (Unix milliseconds); returns how many.
    fn purge_expired_fast_tokens(&self, now: i64) -> Result<usize>;
}

impl FastTokenStore for Store {
    fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastTokenRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT client_id, mechanism, verifier, responder, issued_at, expires_at, current,
                 salt FROM fast_tokens WHERE account = ?1 AND client_id = ?2 ORDER BY current DESC",
            )?;
            let rows = stmt.query_map([user, client_id], |r| {
                Ok(FastTokenRecord {
                    client_id: r.get(0)?,
                    mechanism: r.get(1)?,
                    verifier: r.get(2)?,
                    responder: r.get(3)?,
                    issued_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    current: r.get::<_, i64>(6)? != 0,
                    salt: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn issue_fast_token(&self, user: &str, t: &FastTokenRecord, max_clients: usize) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM fast_tokens WHERE account = ?1 AND client_id = ?2 AND current = 0",
            )?
            .execute([user, &t.client_id])?;
            tx.prepare_cached(
                "UPDATE fast_tokens SET current = 0
                 WHERE account = ?1 AND client_id = ?2 AND current = 1",
            )?
            .execute([user, &t.client_id])?;
            tx.prepare_cached(
                "INSERT INTO fast_tokens
                 (account, client_id, current, mechanism, verifier, responder, issued_at,
                  expires_at, salt)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                user,
                t.client_id,
                t.mechanism,
                t.verifier,
                t.responder,
                t.issued_at,
                t.expires_at,
                t.salt
            ])?;
            let clients: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(DISTINCT client_id) FROM fast_tokens WHERE account = ?1",
                )?
                .query_row([user], |r| r.get(0))?;
            let excess = to_usize(clients)?.saturating_sub(max_clients.max(1));
            for _ in 0..excess {
                let oldest: Option<String> = tx
                    .prepare_cached(
                        "SELECT client_id FROM fast_tokens WHERE account = ?1 AND client_id != ?2
                         GROUP BY client_id ORDER BY MAX(issued_at), client_id LIMIT 1",
                    )?
                    .query_row([user, &t.client_id], |r| r.get(0))
                    .optional()?;
                let Some(oldest) = oldest else { break };
                tx.prepare_cached("DELETE FROM fast_tokens WHERE account = ?1 AND client_id = ?2")?
                    .execute([user, &oldest])?;
            }
            Ok(())
        })
    }

    fn retire_previous_fast_token(&self, user: &str, client_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM fast_tokens WHERE account = ?1 AND client_id = ?2 AND current = 0",
            )?
            .execute([user, client_id])?;
            Ok(())
        })
    }

    fn delete_client_fast_tokens(&self, user: &str, client_id: &str) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM fast_tokens WHERE account = ?1 AND client_id = ?2")?
                .execute([user, client_id])?)
        })
    }

    fn delete_user_fast_tokens(&self, user: &str) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM fast_tokens WHERE account = ?1")?
                .execute([user])?)
        })
    }

    fn purge_expired_fast_tokens(&self, now: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM fast_tokens WHERE expires_at < ?1")?
                .execute([now])?)
        })
    }
}
