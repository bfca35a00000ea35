//! Copying a SQLite installation into an empty PostgreSQL store (`herald migrate`).
//!
//! Table by table, row by row, every column as stored: SCRAM keys, roster versions, archive
//! order (`seq`), offline ids, push statistics, PEP items, saved sessions — so the server
//! started on PostgreSQL is the one that stopped on SQLite. Both schemas have the same tables
//! and columns (a test checks it); SQLite's implicit `rowid` of the push tables becomes their
//! `seq`. Everything is written in one PostgreSQL transaction: a failed copy leaves the
//! target empty, to be run again. The source is read in one SQLite read transaction, so it
//! may be copied while a server still runs on it, but what that server writes afterwards is
//! not copied: stop it first.

use std::path::Path;

use postgres::types::{ToSql, Type};
use rusqlite::types::Value;

use super::PgStore;
use crate::error::{Result, StoreError};
use crate::sqlite::{Store, DATABASE_FILE};

/// One table's rows in the source and, after the copy, in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedTable {
    /// The table.
    pub table: String,
    /// Rows in the SQLite source.
    pub source: u64,
    /// Rows in PostgreSQL after the commit, counted anew.
    pub target: u64,
}

/// Tables whose SQLite rowid is their order (PostgreSQL gives them a `seq` column).
const ROWID_AS_SEQ: &[&str] = &["push_registrations", "push_removals"];

/// Identity columns, whose sequences must continue after the copied values.
const IDENTITIES: &[(&str, &str)] = &[
    ("subscription_requests", "seq"),
    ("offline_messages", "id"),
    ("archive", "seq"),
    ("push_registrations", "seq"),
    ("push_removals", "seq"),
    ("sm_queue", "pos"),
];

/// The SQLite tables to copy, in creation order.
pub(crate) fn sqlite_tables(conn: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table'
         AND name NOT LIKE 'sqlite_%' AND name <> 'schema_version' ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// The columns of a SQLite table, in order.
pub(crate) fn sqlite_columns(conn: &rusqlite::Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| r.get(1))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// A SQLite value as the parameter PostgreSQL's column type takes.
fn param(v: Value, ty: &Type, table: &str, column: &str) -> Result<Box<dyn ToSql + Sync>> {
    let bad = || {
        StoreError::Corrupt(format!(
            "{table}.{column}: a value that does not fit PostgreSQL's {ty}"
        ))
    };
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (Value::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
        (Value::Integer(i), t) if *t == Type::BOOL => Box::new(i != 0),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (Value::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (Value::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        _ => return Err(bad()),
    })
}

/// The database file of `path`: the file itself, or `herald.sqlite3` in a data directory.
pub fn sqlite_file(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        path.join(DATABASE_FILE)
    } else {
        path.to_path_buf()
    }
}

impl PgStore {
    /// Copies every row of the SQLite database at `path` (its data directory or the file)
    /// into this store, which must hold no account yet. `progress(table, rows done, rows of
    /// the table)` is called as rows go; returns the counts of both sides per table.
    pub fn copy_from_sqlite(
        &self,
        path: &Path,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<Vec<CopiedTable>> {
        let file = sqlite_file(path);
        if !file.is_file() {
            return Err(StoreError::Invalid(format!(
                "no SQLite database at {}",
                file.display()
            )));
        }
        // Brings an older installation's schema up to date first (the copy expects the
        // latest one, like the PostgreSQL side).
        let dir = file.parent().unwrap_or(Path::new("."));
        drop(Store::open(dir)?);
        let mut src = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let snapshot = src.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let tables = sqlite_tables(&snapshot)?;

        let mut counts = Vec::new();
        // Blocks on the synchronous client directly: call it off any async runtime (the CLI).
        (|| -> Result<()> {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let existing: i64 = tx
                .query_one("SELECT COUNT(*) FROM accounts", &[])?
                .try_get(0)?;
            if existing > 0 {
                return Err(StoreError::Invalid(format!(
                    "the PostgreSQL store already has {existing} accounts: copy into an empty one"
                )));
            }
            for table in &tables {
                let mut columns = sqlite_columns(&snapshot, table)?;
                let mut select = columns.join(", ");
                if ROWID_AS_SEQ.contains(&table.as_str()) {
                    select = format!("rowid, {select}");
                    columns.insert(0, "seq".into());
                }
                let total: i64 =
                    snapshot
                        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
                let total = u64::try_from(total).unwrap_or(0);
                let placeholders: Vec<String> =
                    (1..=columns.len()).map(|i| format!("${i}")).collect();
                let insert = tx.prepare(&format!(
                    "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
                    columns.join(", "),
                    placeholders.join(", ")
                ))?;
                let types = insert.params().to_vec();
                let mut stmt = snapshot.prepare(&format!("SELECT {select} FROM {table}"))?;
                let mut rows = stmt.query([])?;
                let mut done = 0u64;
                progress(table, 0, total);
                while let Some(row) = rows.next()? {
                    let mut params = Vec::with_capacity(columns.len());
                    for (i, ty) in types.iter().enumerate() {
                        let v: Value = row.get(i)?;
                        params.push(param(v, ty, table, &columns[i])?);
                    }
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref()).collect();
                    tx.execute(&insert, &refs)?;
                    done += 1;
                    if done.is_multiple_of(1000) {
                        progress(table, done, total);
                    }
                }
                progress(table, done, total);
                counts.push((table.clone(), done));
            }
            for (table, column) in IDENTITIES {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                       COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                    ),
                    &[],
                )?;
            }
            tx.commit()?;
            Ok(())
        })()?;

        // Counted again after the commit, by a fresh transaction: the verification.
        let mut out = Vec::with_capacity(counts.len());
        for (table, source) in counts {
            let target: i64 = self.read(|tx| {
                Ok(tx
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
                    .try_get(0)?)
            })?;
            out.push(CopiedTable {
                table,
                source,
                target: u64::try_from(target).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

/// Every table `copy_from_sqlite` copies, with its SQLite columns (for the schema test).
#[cfg(test)]
pub(crate) fn tables_for_test(conn: &rusqlite::Connection) -> Vec<(String, Vec<String>)> {
    sqlite_tables(conn)
        .unwrap()
        .into_iter()
        .map(|t| {
            let cols = sqlite_columns(conn, &t).unwrap();
            (t, cols)
        })
        .collect()
}
