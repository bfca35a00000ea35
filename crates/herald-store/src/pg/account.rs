//! Accounts on PostgreSQL: SCRAM verifiers per bare JID, and account removal across roles.

use postgres::{Row, Transaction};

use super::{to_u32, PgStore};
use crate::account::{AccountStore, Credentials, ScramRecord};
use crate::error::{Result, StoreError};
use crate::sqlite::{now_millis, USER_TABLES};

const INSERT: &str = "INSERT INTO accounts (account,
        sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
        sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (account) DO NOTHING";

fn insert(tx: &mut Transaction<'_>, user: &str, c: &Credentials, now: i64) -> Result<bool> {
    let n = tx.execute(
        INSERT,
        &[
            &user,
            &c.sha1.salt,
            &i64::from(c.sha1.iterations),
            &c.sha1.stored_key,
            &c.sha1.server_key,
            &c.sha256.salt,
            &i64::from(c.sha256.iterations),
            &c.sha256.stored_key,
            &c.sha256.server_key,
            &now,
        ],
    )?;
    Ok(n == 1)
}

fn credentials_from_row(r: &Row) -> Result<Credentials> {
    Ok(Credentials {
        sha1: ScramRecord {
            salt: r.try_get(0)?,
            iterations: to_u32(r.try_get(1)?)?,
            stored_key: r.try_get(2)?,
            server_key: r.try_get(3)?,
        },
        sha256: ScramRecord {
            salt: r.try_get(4)?,
            iterations: to_u32(r.try_get(5)?)?,
            stored_key: r.try_get(6)?,
            server_key: r.try_get(7)?,
        },
    })
}

impl AccountStore for PgStore {
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
            tx.query_opt(
                "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                        sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key
                 FROM accounts WHERE account = $1",
                &[&user],
            )?
            .as_ref()
            .map(credentials_from_row)
            .transpose()
        })
    }

    fn set_credentials(&self, user: &str, c: &Credentials) -> Result<()> {
        self.write(|tx| {
            // XEP-0484 §6: a new password ends every FAST token, in the same transaction.
            tx.execute("DELETE FROM fast_tokens WHERE account = $1", &[&user])?;
            let n = tx.execute(
                "UPDATE accounts SET
                    sha1_salt = $2, sha1_iterations = $3, sha1_stored_key = $4,
                    sha1_server_key = $5, sha256_salt = $6, sha256_iterations = $7,
                    sha256_stored_key = $8, sha256_server_key = $9
                 WHERE account = $1",
                &[
                    &user,
                    &c.sha1.salt,
                    &i64::from(c.sha1.iterations),
                    &c.sha1.stored_key,
                    &c.sha1.server_key,
                    &c.sha256.salt,
                    &i64::from(c.sha256.iterations),
                    &c.sha256.stored_key,
                    &c.sha256.server_key,
                ],
            )?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }

    fn delete_account(&self, user: &str) -> Result<()> {
        self.write(|tx| {
            // The row lock makes a concurrent removal of the same account wait, then find
            // nothing.
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM accounts WHERE account = $1 FOR UPDATE",
                    &[&user],
                )?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound);
            }
            for table in USER_TABLES {
                tx.execute(&format!("DELETE FROM {table} WHERE account = $1"), &[&user])?;
            }
            Ok(())
        })
    }

    fn account_exists(&self, user: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .query_opt("SELECT 1 FROM accounts WHERE account = $1", &[&user])?
                .is_some())
        })
    }

    fn list_accounts(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query("SELECT account FROM accounts ORDER BY account", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }
}
