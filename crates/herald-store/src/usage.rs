//! Per-user storage accounting shared by the archive and offline roles: how many messages a
//! user keeps in a role and their bytes, one row per user in the role's `*_usage` table.
//!
//! Every insert and delete of a role's messages changes the user's row in the same
//! transaction, so the totals are exact at every commit and a quota check is one primary-key
//! lookup, never a scan of the user's messages. Bytes are the stanza's UTF-8 length.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::{Result, StoreError};

/// What one user keeps in one role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Messages stored.
    pub messages: u64,
    /// Their bytes (the serialized stanzas' UTF-8 length).
    pub bytes: u64,
}

/// The accounting table of a role.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Table {
    Archive,
    Offline,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Archive => "archive_usage",
            Table::Offline => "offline_usage",
        }
    }
}

/// The bytes a stanza counts for.
pub(crate) fn bytes_of(stanza_xml: &str) -> i64 {
    i64::try_from(stanza_xml.len()).unwrap_or(i64::MAX)
}

/// `user`'s usage in `table` (zero without a row).
pub(crate) fn read(tx: &Transaction<'_>, table: Table, user: &str) -> Result<Usage> {
    let row: Option<(i64, i64)> = tx
        .prepare_cached(&format!(
            "SELECT messages, bytes FROM {} WHERE account = ?1",
            table.name()
        ))?
        .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (messages, bytes) = row.unwrap_or((0, 0));
    let count =
        |n: i64| u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative usage {n}")));
    Ok(Usage {
        messages: count(messages)?,
        bytes: count(bytes)?,
    })
}

/// Adds `messages` and `bytes` (negative for deletes) to `user`'s row in `table`; a user
/// left with nothing loses the row, so the table holds only users who keep something.
pub(crate) fn add(
    tx: &Transaction<'_>,
    table: Table,
    user: &str,
    messages: i64,
    bytes: i64,
) -> Result<()> {
    if messages == 0 && bytes == 0 {
        return Ok(());
    }
    let t = table.name();
    tx.prepare_cached(&format!(
        "INSERT INTO {t} (account, messages, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE
         SET messages = messages + excluded.messages, bytes = bytes + excluded.bytes"
    ))?
    .execute(params![user, messages, bytes])?;
    if messages < 0 {
        tx.prepare_cached(&format!(
            "DELETE FROM {t} WHERE account = ?1 AND messages <= 0"
        ))?
        .execute([user])?;
    }
    Ok(())
}
