//! Accounts: SCRAM credentials per bare JID, and account removal across every role.
//!
//! Only verifiers are stored (RFC 5802 §3, RFC 7677): salt, iteration count, StoredKey and
//! ServerKey for SHA-1 and SHA-256. This module must not derive keys or see passwords; that is
//! `herald-proto`'s job.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{Result, StoreError};
use crate::sqlite::{now_millis, Store, USER_TABLES};

/// One SCRAM verifier set (RFC 5802 §3) for one hash function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramRecord {
    /// The salt given to clients.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count given to clients.
    pub iterations: u32,
    /// H(ClientKey), checks the client proof.
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key"), signs the server's final message.
    pub server_key: Vec<u8>,
}

/// Verifiers for both mechanisms Herald offers (SCRAM-SHA-1 and SCRAM-SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// SCRAM-SHA-1 verifiers.
    pub sha1: ScramRecord,
    /// SCRAM-SHA-256 verifiers.
    pub sha256: ScramRecord,
}

/// Local accounts, keyed by bare JID `"user@domain"`.
pub trait AccountStore {
    /// Creates an account; [`StoreError::AlreadyExists`] if it exists.
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<()>;
    /// Creates many accounts in one transaction, skipping existing ones; returns how many
    /// were created.
    fn create_accounts_bulk(&self, accounts: &[(String, Credentials)]) -> Result<usize>;
    /// The account's credentials, `None` if there is no such account.
    fn credentials(&self, user: &str) -> Result<Option<Credentials>>;
    /// Replaces the credentials (password change) and deletes the account's XEP-0484 FAST
    /// tokens; [`StoreError::NotFound`] if no account.
    fn set_credentials(&self, user: &str, creds: &Credentials) -> Result<()>;
    /// Deletes the account and every row the user owns in every role (roster, requests,
    /// offline messages, blocklist, archive and prefs, push registrations), in one
    /// transaction; [`StoreError::NotFound`] if no account.
    fn delete_account(&self, user: &str) -> Result<()>;
    /// Whether the account exists.
    fn account_exists(&self, user: &str) -> Result<bool>;
    /// Every account, sorted.
    fn list_accounts(&self) -> Result<Vec<String>>;
}

const INSERT: &str = "INSERT INTO accounts (account,
        sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
        sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (account) DO NOTHING";

fn insert(tx: &rusqlite::Transaction<'_>, user: &str, c: &Credentials, now: i64) -> Result<bool> {
    let n = tx.prepare_cached(INSERT)?.execute(params![
        user,
        c.sha1.salt,
        c.sha1.iterations,
        c.sha1.stored_key,
        c.sha1.server_key,
        c.sha256.salt,
        c.sha256.iterations,
        c.sha256.stored_key,
        c.sha256.server_key,
        now
    ])?;
    Ok(n == 1)
}

fn credentials_from_row(r: &Row<'_>) -> rusqlite::Result<Credentials> {
    Ok(Credentials {
        sha1: ScramRecord {
            salt: r.get(0)?,
            iterations: r.get(1)?,
            stored_key: r.get(2)?,
            server_key: r.get(3)?,
        },
        sha256: ScramRecord {
            salt: r.get(4)?,
            iterations: r.get(5)?,
            stored_key: r.get(6)?,
            server_key: r.get(7)?,
        },
    })
}

impl AccountStore for Store {
    fn create_account(&self, user: &str, creds: &Credentials) -> Result<()> {
        let now = now_millis();
        self.write(|tx| {
            if insert(tx, user, creds, now)? {
                Ok(())
            } else {
                Err(StoreError::AlreadyExists)
            }
        })
    }

    fn create_accounts_bulk(&self, accounts: &[(String, Credentials)]) -> Result<usize> {
        let now = now_millis();
        // One transaction: one commit for 100k accounts instead of 100k.
        self.write(|tx| {
            let mut created = 0;
            for (user, creds) in accounts {
                if insert(tx, user, creds, now)? {
                    created += 1;
                }
            }
            Ok(created)
        })
    }

    fn credentials(&self, user: &str) -> Result<Option<Credentials>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                        sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key
                 FROM accounts WHERE account = ?1",
            )?;
            Ok(stmt.query_row([user], credentials_from_row).optional()?)
        })
    }

    fn set_credentials(&self, user: &str, c: &Credentials) -> Result<()> {
        self.write(|tx| {
            // XEP-0484 §6: a new password ends every FAST token, in the same transaction.
            tx.prepare_cached("DELETE FROM fast_tokens WHERE account = ?1")?
                .execute([user])?;
            let n = tx
                .prepare_cached(
                    "UPDATE accounts SET
                        sha1_salt = ?2, sha1_iterations = ?3, sha1_stored_key = ?4,
                        sha1_server_key = ?5, sha256_salt = ?6, sha256_iterations = ?7,
                        sha256_stored_key = ?8, sha256_server_key = ?9
                     WHERE account = ?1",
                )?
                .execute(params![
                    user,
                    c.sha1.salt,
                    c.sha1.iterations,
                    c.sha1.stored_key,
                    c.sha1.server_key,
                    c.sha256.salt,
                    c.sha256.iterations,
                    c.sha256.stored_key,
                    c.sha256.server_key,
                ])?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }

    fn delete_account(&self, user: &str) -> Result<()> {
        self.write(|tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM accounts WHERE account = ?1")?
                .exists([user])?;
            if !exists {
                return Err(StoreError::NotFound);
            }
            for table in USER_TABLES {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE account = ?1"))?
                    .execute([user])?;
            }
            Ok(())
        })
    }

    fn account_exists(&self, user: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT 1 FROM accounts WHERE account = ?1")?
                .exists([user])?)
        })
    }

    fn list_accounts(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached("SELECT account FROM accounts ORDER BY account")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }
}
