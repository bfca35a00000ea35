//! Per-user storage accounting of the archive and offline roles on PostgreSQL: the same rows
//! as `crate::usage`, changed in the transaction of every insert and delete.

use postgres::Transaction;

use crate::error::{Result, StoreError};
use crate::usage::{Table, Usage};

fn name(table: Table) -> &'static str {
    match table {
        Table::Archive => "archive_usage",
        Table::Offline => "offline_usage",
    }
}

/// `user`'s usage in `table` (zero without a row).
pub(crate) fn read(tx: &mut Transaction<'_>, table: Table, user: &str) -> Result<Usage> {
    let row = tx.query_opt(
        &format!(
            "SELECT messages, bytes FROM {} WHERE account = $1",
            name(table)
        ),
        &[&user],
    )?;
    let (messages, bytes): (i64, i64) = match row {
        Some(r) => (r.try_get(0)?, r.try_get(1)?),
        None => (0, 0),
    };
    let count =
        |n: i64| u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative usage {n}")));
    Ok(Usage {
        messages: count(messages)?,
        bytes: count(bytes)?,
    })
}

/// Adds `messages` and `bytes` (negative for deletes) to `user`'s row; a user left with
/// nothing loses the row.
pub(crate) fn add(
    tx: &mut Transaction<'_>,
    table: Table,
    user: &str,
    messages: i64,
    bytes: i64,
) -> Result<()> {
    if messages == 0 && bytes == 0 {
        return Ok(());
    }
    let t = name(table);
    tx.execute(
        &format!(
            "INSERT INTO {t} AS u (account, messages, bytes) VALUES ($1, $2, $3)
             ON CONFLICT (account) DO UPDATE
             SET messages = u.messages + excluded.messages, bytes = u.bytes + excluded.bytes"
        ),
        &[&user, &messages, &bytes],
    )?;
    if messages < 0 {
        tx.execute(
            &format!("DELETE FROM {t} WHERE account = $1 AND messages <= 0"),
            &[&user],
        )?;
    }
    Ok(())
}
