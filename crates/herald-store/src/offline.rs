//! Offline messages (XEP-0160): stanzas kept for a user with no available resource, bounded
//! per user, deleted only once the client has them (acknowledged, or written without stream
//! management).
//!
//! This module must not decide which messages are stored (type, body, errors) nor add delay
//! stamps; it keeps the serialized stanza exactly as given.

use rusqlite::{params, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::sqlite::{now_millis, Store};
use crate::usage::{self, Table, Usage};

/// One stored offline message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Store-assigned id, increasing with storage order, never reused.
    pub id: i64,
    /// The stanza as the server serialized it.
    pub stanza_xml: String,
    /// When it was stored, unix milliseconds (for the XEP-0203 delay stamp).
    pub stored_at: i64,
}

/// Offline message storage, per user.
pub trait OfflineStore {
    /// Stores a message and returns its id; [`StoreError::QuotaExceeded`] (nothing stored)
    /// when the user already has `max_per_user` messages or this one would take the user's
    /// stored bytes beyond `max_bytes`.
    fn store_offline(
        &self,
        user: &str,
        stanza_xml: &str,
        max_per_user: usize,
        max_bytes: u64,
    ) -> Result<i64>;
    /// All the user's messages, oldest first.
    fn offline_messages(&self, user: &str) -> Result<Vec<OfflineMessage>>;
    /// Deletes the given ids of this user (ids of other users are ignored); how many went.
    fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<usize>;
    /// At most `limit` of the user's messages with an id above `after`, oldest first. Reading
    /// deletes nothing: a message leaves the store only once the client has it
    /// ([`OfflineStore::delete_offline`]), so a crash or a lost connection during delivery
    /// loses nothing.
    fn offline_page(&self, user: &str, after: i64, limit: usize) -> Result<Vec<OfflineMessage>>;
    /// How many messages the user has waiting.
    fn offline_count(&self, user: &str) -> Result<usize>;
    /// How many messages the user has waiting and their bytes (kept with every write, so
    /// this is one lookup).
    fn offline_usage(&self, user: &str) -> Result<Usage>;
}

/// An `id, stanza_xml, stored_at` row.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OfflineMessage> {
    Ok(OfflineMessage {
        id: r.get(0)?,
        stanza_xml: r.get(1)?,
        stored_at: r.get(2)?,
    })
}

impl OfflineStore for Store {
    fn store_offline(
        &self,
        user: &str,
        stanza_xml: &str,
        max_per_user: usize,
        max_bytes: u64,
    ) -> Result<i64> {
        let now = now_millis();
        let bytes = usage::bytes_of(stanza_xml);
        // Check and insert under the one write lock, so concurrent senders cannot overshoot.
        self.write(|tx| {
            let used = usage::read(tx, Table::Offline, user)?;
            let count = usize::try_from(used.messages).unwrap_or(usize::MAX);
            let would_hold = used.bytes.saturating_add(bytes.unsigned_abs());
            if count >= max_per_user || would_hold > max_bytes {
                // Over the bound the sender gets an error (issue #3: nothing is dropped
                // silently), so nothing may be stored or evicted here.
                return Err(StoreError::QuotaExceeded);
            }
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO offline_messages (account, stanza_xml, stored_at)
                     VALUES (?1, ?2, ?3) RETURNING id",
                )?
                .query_row(params![user, stanza_xml, now], |r| r.get(0))?;
            usage::add(tx, Table::Offline, user, 1, bytes)?;
            Ok(id)
        })
    }

    fn offline_messages(&self, user: &str) -> Result<Vec<OfflineMessage>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, stanza_xml, stored_at FROM offline_messages
                 WHERE account = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([user], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM offline_messages WHERE account = ?1 AND id = ?2
                 RETURNING length(CAST(stanza_xml AS BLOB))",
            )?;
            let (mut n, mut bytes) = (0usize, 0i64);
            for id in ids {
                if let Some(b) = stmt
                    .query_row(params![user, id], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    n += 1;
                    bytes += b;
                }
            }
            drop(stmt);
            let gone = i64::try_from(n).unwrap_or(i64::MAX);
            usage::add(tx, Table::Offline, user, -gone, -bytes)?;
            Ok(n)
        })
    }

    fn offline_page(&self, user: &str, after: i64, limit: usize) -> Result<Vec<OfflineMessage>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, stanza_xml, stored_at FROM offline_messages
                 WHERE account = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user, after, limit], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn offline_count(&self, user: &str) -> Result<usize> {
        let n = self.offline_usage(user)?.messages;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn offline_usage(&self, user: &str) -> Result<Usage> {
        self.read(|tx| usage::read(tx, Table::Offline, user))
    }
}
