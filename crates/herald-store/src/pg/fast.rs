//! XEP-0484 FAST tokens on PostgreSQL: per account and client id, the newest token and the
//! previous one, as the salt the server derives a token from (or, for older tokens, hashes).

use super::{lock, to_usize, PgStore};
use crate::error::Result;
use crate::fast::{FastTokenRecord, FastTokenStore};

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl FastTokenStore for PgStore {
    fn fast_tokens(&self, user: &str, client_id: &str) -> Result<Vec<FastTokenRecord>> {
        self.read(|tx| {
            tx.query(
                "SELECT client_id, mechanism, verifier, responder, issued_at, expires_at, current,
                 salt FROM fast_tokens WHERE account = $1 AND client_id = $2 ORDER BY current DESC",
                &[&user, &client_id],
            )?
            .iter()
            .map(|r| {
                Ok(FastTokenRecord {
                    client_id: r.try_get(0)?,
                    mechanism: r.try_get(1)?,
                    verifier: r.try_get(2)?,
                    responder: r.try_get(3)?,
                    issued_at: r.try_get(4)?,
                    expires_at: r.try_get(5)?,
                    current: r.try_get(6)?,
                    salt: r.try_get(7)?,
                })
            })
            .collect()
        })
    }

    fn issue_fast_token(&self, user: &str, t: &FastTokenRecord, max_clients: usize) -> Result<()> {
        self.write(|tx| {
            // Rotation and the per-account bound are read-then-write: one issuer at a time.
            lock(tx, "fast_tokens", user)?;
            tx.execute(
                "DELETE FROM fast_tokens WHERE account = $1 AND client_id = $2 AND NOT current",
                &[&user, &t.client_id],
            )?;
            tx.execute(
                "UPDATE fast_tokens SET current = FALSE
                 WHERE account = $1 AND client_id = $2 AND current",
                &[&user, &t.client_id],
            )?;
            tx.execute(
                "INSERT INTO fast_tokens
                 (account, client_id, current, mechanism, verifier, responder, issued_at,
                  expires_at, salt)
                 VALUES ($1, $2, TRUE, $3, $4, $5, $6, $7, $8)",
                &[
                    &user,
                    &t.client_id,
                    &t.mechanism,
                    &t.verifier,
                    &t.responder,
                    &t.issued_at,
                    &t.expires_at,
                    &t.salt,
                ],
            )?;
            let clients: i64 = tx
                .query_one(
                    "SELECT COUNT(DISTINCT client_id) FROM fast_tokens WHERE account = $1",
                    &[&user],
                )?
                .try_get(0)?;
            let excess = to_usize(clients)?.saturating_sub(max_clients.max(1));
            for _ in 0..excess {
                // The clients issued longest ago go first.
                let Some(oldest) = tx.query_opt(
                    "SELECT client_id FROM fast_tokens WHERE account = $1 AND client_id <> $2
                     GROUP BY client_id ORDER BY MAX(issued_at), client_id COLLATE \"C\" LIMIT 1",
                    &[&user, &t.client_id],
                )?
                else {
                    break;
                };
                let oldest: String = oldest.try_get(0)?;
                tx.execute(
                    "DELETE FROM fast_tokens WHERE account = $1 AND client_id = $2",
                    &[&user, &oldest],
                )?;
            }
            Ok(())
        })
    }

    fn retire_previous_fast_token(&self, user: &str, client_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM fast_tokens WHERE account = $1 AND client_id = $2 AND NOT current",
                &[&user, &client_id],
            )?;
            Ok(())
        })
    }

    fn delete_client_fast_tokens(&self, user: &str, client_id: &str) -> Result<usize> {
        self.write(|tx| {
            Ok(count(tx.execute(
                "DELETE FROM fast_tokens WHERE account = $1 AND client_id = $2",
                &[&user, &client_id],
            )?))
        })
    }

    fn delete_user_fast_tokens(&self, user: &str) -> Result<usize> {
        self.write(|tx| {
            Ok(count(tx.execute(
                "DELETE FROM fast_tokens WHERE account = $1",
                &[&user],
            )?))
        })
    }

    fn purge_expired_fast_tokens(&self, now: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(count(tx.execute(
                "DELETE FROM fast_tokens WHERE expires_at < $1",
                &[&now],
            )?))
        })
    }
}
