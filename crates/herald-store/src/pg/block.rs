//! Blocklists (XEP-0191) on PostgreSQL: exact JIDs per user.

use super::{lock, to_usize, PgStore};
use crate::block::BlockStore;
use crate::error::{Result, StoreError};

impl BlockStore for PgStore {
    fn accounts_with_blocklist(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query("SELECT DISTINCT account FROM blocklist", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn blocklist(&self, user: &str) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query(
                "SELECT jid FROM blocklist WHERE account = $1 ORDER BY jid",
                &[&user],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
    }

    fn block(&self, user: &str, jids: &[String], max: usize) -> Result<()> {
        self.write(|tx| {
            // The bound is checked after the inserts: concurrent blocks must not pass together.
            lock(tx, "blocklist", user)?;
            let len = |tx: &mut postgres::Transaction<'_>| -> Result<usize> {
                let n: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM blocklist WHERE account = $1",
                        &[&user],
                    )?
                    .try_get(0)?;
                to_usize(n)
            };
            let before = len(tx)?;
            for jid in jids {
                tx.execute(
                    "INSERT INTO blocklist (account, jid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&user, jid],
                )?;
            }
            let after = len(tx)?;
            if after > before && after > max {
                return Err(StoreError::QuotaExceeded);
            }
            Ok(())
        })
    }

    fn unblock(&self, user: &str, jids: &[String]) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM blocklist WHERE account = $1 AND jid = ANY($2)",
                &[&user, &jids],
            )?;
            Ok(())
        })
    }

    fn unblock_all(&self, user: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM blocklist WHERE account = $1", &[&user])?;
            Ok(())
        })
    }

    fn is_blocked(&self, user: &str, jid: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT 1 FROM blocklist WHERE account = $1 AND jid = $2",
                    &[&user, &jid],
                )?
                .is_some())
        })
    }
}
