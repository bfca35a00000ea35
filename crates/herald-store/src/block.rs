//! Blocklists (XEP-0191): the JIDs each user has blocked, exactly as given.
//!
//! This module must not match JIDs (a blocked domain covers its users, a bare JID its
//! resources): XEP-0191 defers to XEP-0016's JID matching rules, which the server
//! applies; `is_blocked` is an exact lookup.

use rusqlite::params;

use crate::error::{Result, StoreError};
use crate::sqlite::{to_usize, Store};

/// Per-user blocklists.
pub trait BlockStore {
    /// The blocked JIDs, sorted.
    fn blocklist(&self, user: &str) -> Result<Vec<String>>;
    /// Adds JIDs (already blocked ones are fine). [`crate::StoreError::QuotaExceeded`], with
    /// nothing written, if the list would grow beyond `max` JIDs (re-adding listed ones never
    /// fails, even on a list longer than `max`).
    fn block(&self, user: &str, jids: &[String], max: usize) -> Result<()>;
    /// Removes JIDs (ones not blocked are fine).
    fn unblock(&self, user: &str, jids: &[String]) -> Result<()>;
    /// Empties the blocklist.
    fn unblock_all(&self, user: &str) -> Result<()>;
    /// Whether exactly `jid` is in the blocklist.
    fn is_blocked(&self, user: &str, jid: &str) -> Result<bool>;
    /// Every account with a non-empty blocklist (the others need not be asked: the server
    /// reads this once at start instead of one lookup per account on its first message).
    fn accounts_with_blocklist(&self) -> Result<Vec<String>>;
}

impl BlockStore for Store {
    fn accounts_with_blocklist(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT DISTINCT account FROM blocklist")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn blocklist(&self, user: &str) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt =
                tx.prepare_cached("SELECT jid FROM blocklist WHERE account = ?1 ORDER BY jid")?;
            let rows = stmt.query_map([user], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn block(&self, user: &str, jids: &[String], max: usize) -> Result<()> {
        self.write(|tx| {
            let len = |tx: &rusqlite::Transaction<'_>| -> Result<usize> {
                let n: i64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM blocklist WHERE account = ?1")?
                    .query_row([user], |r| r.get(0))?;
                to_usize(n)
            };
            let before = len(tx)?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO blocklist (account, jid) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            for jid in jids {
                stmt.execute(params![user, jid])?;
            }
            // Counted in the write transaction (concurrent blocks cannot pass together); the
            // error rolls the inserts back.
            let after = len(tx)?;
            if after > before && after > max {
                return Err(StoreError::QuotaExceeded);
            }
            Ok(())
        })
    }

    fn unblock(&self, user: &str, jids: &[String]) -> Result<()> {
        self.write(|tx| {
            let mut stmt =
                tx.prepare_cached("DELETE FROM blocklist WHERE account = ?1 AND jid = ?2")?;
            for jid in jids {
                stmt.execute(params![user, jid])?;
            }
            Ok(())
        })
    }

    fn unblock_all(&self, user: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM blocklist WHERE account = ?1")?
                .execute([user])?;
            Ok(())
        })
    }

    fn is_blocked(&self, user: &str, jid: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT 1 FROM blocklist WHERE account = ?1 AND jid = ?2")?
                .exists(params![user, jid])?)
        })
    }
}
