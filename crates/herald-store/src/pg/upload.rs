//! XEP-0363 uploads and their owners' totals on PostgreSQL.

use postgres::Row;

use super::{limit, lock, PgStore};
use crate::error::{Result, StoreError};
use crate::upload::{Upload, UploadStore};

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative size {n}")))
}

const COLUMNS: &str = "id, owner, filename, size, content_type, created_at";

fn upload(r: &Row) -> Result<Upload> {
    Ok(Upload {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        filename: r.try_get(2)?,
        size: to_u64(r.try_get(3)?)?,
        content_type: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

impl UploadStore for PgStore {
    fn upload_add(&self, u: &Upload, quota: u64) -> Result<()> {
        let size = i64::try_from(u.size)
            .map_err(|_| StoreError::Invalid(format!("size {} too large", u.size)))?;
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        self.write(|tx| {
            lock(tx, "uploads", &u.owner)?;
            let used: i64 = tx
                .query_opt(
                    "SELECT bytes FROM upload_usage WHERE owner = $1",
                    &[&u.owner],
                )?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0);
            if used.saturating_add(size) > quota {
                return Err(StoreError::QuotaExceeded);
            }
            let n = tx.execute(
                "INSERT INTO uploads (id, owner, filename, size, content_type, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &u.id,
                    &u.owner,
                    &u.filename,
                    &size,
                    &u.content_type,
                    &u.created_at,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::AlreadyExists);
            }
            tx.execute(
                "INSERT INTO upload_usage AS u (owner, files, bytes) VALUES ($1, 1, $2)
                 ON CONFLICT (owner) DO UPDATE SET files = u.files + 1, bytes = u.bytes + $2",
                &[&u.owner, &size],
            )?;
            Ok(())
        })
    }

    fn upload_get(&self, id: &str) -> Result<Option<Upload>> {
        self.read(|tx| {
            tx.query_opt(
                &format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(upload)
            .transpose()
        })
    }

    fn upload_usage(&self, owner: &str) -> Result<u64> {
        let n: Option<i64> = self.read(|tx| {
            tx.query_opt("SELECT bytes FROM upload_usage WHERE owner = $1", &[&owner])?
                .map(|r| Ok(r.try_get(0)?))
                .transpose()
        })?;
        to_u64(n.unwrap_or(0))
    }

    fn uploads_older_than(&self, before: i64, max: usize) -> Result<Vec<Upload>> {
        self.read(|tx| {
            tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM uploads WHERE created_at < $1
                     ORDER BY created_at LIMIT $2"
                ),
                &[&before, &limit(max)],
            )?
            .iter()
            .map(upload)
            .collect()
        })
    }

    fn upload_remove(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            let Some(r) = tx.query_opt(
                "DELETE FROM uploads WHERE id = $1 RETURNING owner, size",
                &[&id],
            )?
            else {
                return Ok(false);
            };
            let owner: String = r.try_get(0)?;
            let size: i64 = r.try_get(1)?;
            tx.execute(
                "UPDATE upload_usage SET files = files - 1, bytes = bytes - $2 WHERE owner = $1",
                &[&owner, &size],
            )?;
            tx.execute(
                "DELETE FROM upload_usage WHERE owner = $1 AND files <= 0",
                &[&owner],
            )?;
            Ok(true)
        })
    }
}
