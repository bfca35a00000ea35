//! Offline messages (XEP-0160) on PostgreSQL, bounded per user by count and bytes.

use super::usage;
use super::{limit, lock, PgStore};
use crate::error::{Result, StoreError};
use crate::offline::{OfflineMessage, OfflineStore};
use crate::sqlite::now_millis;
use crate::usage::{bytes_of, Table, Usage};

fn row(r: &postgres::Row) -> Result<OfflineMessage> {
    Ok(OfflineMessage {
        id: r.try_get(0)?,
        stanza_xml: r.try_get(1)?,
        stored_at: r.try_get(2)?,
    })
}

impl OfflineStore for PgStore {
    fn store_offline(
        &self,
        user: &str,
        stanza_xml: &str,
        max_per_user: usize,
        max_bytes: u64,
    ) -> Result<i64> {
        let now = now_millis();
        let bytes = bytes_of(stanza_xml);
        self.write(|tx| {
            // Check and insert under the user's lock, so concurrent senders cannot overshoot.
            lock(tx, "offline", user)?;
            let used = usage::read(tx, Table::Offline, user)?;
            let count = usize::try_from(used.messages).unwrap_or(usize::MAX);
            let would_hold = used.bytes.saturating_add(bytes.unsigned_abs());
            if count >= max_per_user || would_hold > max_bytes {
                return Err(StoreError::QuotaExceeded);
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO offline_messages (account, stanza_xml, stored_at)
                     VALUES ($1, $2, $3) RETURNING id",
                    &[&user, &stanza_xml, &now],
                )?
                .try_get(0)?;
            usage::add(tx, Table::Offline, user, 1, bytes)?;
            Ok(id)
        })
    }

    fn offline_messages(&self, user: &str) -> Result<Vec<OfflineMessage>> {
        self.read(|tx| {
            tx.query(
                "SELECT id, stanza_xml, stored_at FROM offline_messages
                 WHERE account = $1 ORDER BY id",
                &[&user],
            )?
            .iter()
            .map(row)
            .collect()
        })
    }

    fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            lock(tx, "offline", user)?;
            let gone = tx.query(
                "DELETE FROM offline_messages WHERE account = $1 AND id = ANY($2)
                 RETURNING octet_length(stanza_xml)::BIGINT",
                &[&user, &ids],
            )?;
            let mut bytes = 0i64;
            for r in &gone {
                bytes += r.try_get::<_, i64>(0)?;
            }
            let n = gone.len();
            usage::add(tx, Table::Offline, user, -super::limit(n), -bytes)?;
            Ok(n)
        })
    }

    fn offline_page(&self, user: &str, after: i64, max: usize) -> Result<Vec<OfflineMessage>> {
        self.read(|tx| {
            tx.query(
                "SELECT id, stanza_xml, stored_at FROM offline_messages
                 WHERE account = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&user, &after, &limit(max)],
            )?
            .iter()
            .map(row)
            .collect()
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
