//! XEP-0363 uploads: which files exist, whose they are and how much each owner keeps. The
//! bytes are files on disk, which the server writes and deletes; this role only records them,
//! so quotas and expiry survive restarts. Quota checks are one lookup of the owner's running
//! total, updated in the transaction of every insert and delete.

use rusqlite::{params, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::sqlite::Store;

/// One stored upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The slot id (names the file on disk).
    pub id: String,
    /// Who uploaded it (bare JID).
    pub owner: String,
    /// The file name of its URL.
    pub filename: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content type.
    pub content_type: String,
    /// When it was completed, Unix seconds.
    pub created_at: i64,
}

/// The uploads role.
pub trait UploadStore {
    /// Records a completed upload. [`StoreError::QuotaExceeded`] (nothing written) if the
    /// owner's bytes would exceed `quota`; [`StoreError::AlreadyExists`] if the id is taken.
    fn upload_add(&self, u: &Upload, quota: u64) -> Result<()>;
    /// The upload with this id.
    fn upload_get(&self, id: &str) -> Result<Option<Upload>>;
    /// The bytes `owner` keeps.
    fn upload_usage(&self, owner: &str) -> Result<u64>;
    /// Up to `limit` uploads completed before `before` (Unix seconds), oldest first.
    fn uploads_older_than(&self, before: i64, limit: usize) -> Result<Vec<Upload>>;
    /// Forgets an upload; whether it existed.
    fn upload_remove(&self, id: &str) -> Result<bool>;
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative size {n}")))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("size {n} too large")))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, String, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn upload(t: (String, String, String, i64, String, i64)) -> Result<Upload> {
    Ok(Upload {
        id: t.0,
        owner: t.1,
        filename: t.2,
        size: to_u64(t.3)?,
        content_type: t.4,
        created_at: t.5,
    })
}

const COLUMNS: &str = "id, owner, filename, size, content_type, created_at";

impl UploadStore for Store {
    fn upload_add(&self, u: &Upload, quota: u64) -> Result<()> {
        let size = to_i64(u.size)?;
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        self.write(|tx| {
            let used: i64 = tx
                .prepare_cached("SELECT bytes FROM upload_usage WHERE owner = ?1")?
                .query_row([&u.owner], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if used.saturating_add(size) > quota {
                return Err(StoreError::QuotaExceeded);
            }
            let n = tx
                .prepare_cached(
                    "INSERT INTO uploads (id, owner, filename, size, content_type, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    u.id,
                    u.owner,
                    u.filename,
                    size,
                    u.content_type,
                    u.created_at
                ])?;
            if n == 0 {
                return Err(StoreError::AlreadyExists);
            }
            tx.prepare_cached(
                "INSERT INTO upload_usage (owner, files, bytes) VALUES (?1, 1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET files = files + 1, bytes = bytes + ?2",
            )?
            .execute(params![u.owner, size])?;
            Ok(())
        })
    }

    fn upload_get(&self, id: &str) -> Result<Option<Upload>> {
        let t = self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"))?
                .query_row([id], row)
                .optional()?)
        })?;
        t.map(upload).transpose()
    }

    fn upload_usage(&self, owner: &str) -> Result<u64> {
        let n: Option<i64> = self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT bytes FROM upload_usage WHERE owner = ?1")?
                .query_row([owner], |r| r.get(0))
                .optional()?)
        })?;
        to_u64(n.unwrap_or(0))
    }

    fn uploads_older_than(&self, before: i64, limit: usize) -> Result<Vec<Upload>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM uploads WHERE created_at < ?1 ORDER BY created_at LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![before, limit], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        rows.into_iter().map(upload).collect()
    }

    fn upload_remove(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            let found: Option<(String, i64)> = tx
                .prepare_cached("SELECT owner, size FROM uploads WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((owner, size)) = found else {
                return Ok(false);
            };
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute([id])?;
            tx.prepare_cached(
                "UPDATE upload_usage SET files = files - 1, bytes = bytes - ?2 WHERE owner = ?1",
            )?
            .execute(params![owner, size])?;
            tx.prepare_cached("DELETE FROM upload_usage WHERE owner = ?1 AND files <= 0")?
                .execute([&owner])?;
            Ok(true)
        })
    }
}
