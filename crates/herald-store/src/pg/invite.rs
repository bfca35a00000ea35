//! Registration invites (XEP-0401/XEP-0445) on PostgreSQL, kept as token hashes.

use postgres::Row;

use super::{lock, to_u32, to_usize, PgStore};
use crate::error::{Result, StoreError};
use crate::invite::{Invite, InviteStore};

const COLUMNS: &str = "id, for_user, created, expires, uses_left";

fn from_row(r: &Row) -> Result<Invite> {
    Ok(Invite {
        id: r.try_get(0)?,
        for_user: r.try_get(1)?,
        created: r.try_get(2)?,
        expires: r.try_get(3)?,
        uses_left: to_u32(r.try_get(4)?)?,
    })
}

impl InviteStore for PgStore {
    fn create_invite(&self, token_hash: &[u8], inv: &Invite, max: usize, now: i64) -> Result<()> {
        self.write(|tx| {
            // The server-wide bound is counted under one lock for all invites.
            lock(tx, "invites", "")?;
            tx.execute(
                "DELETE FROM invites WHERE uses_left <= 0 OR (expires IS NOT NULL AND expires <= $1)",
                &[&now],
            )?;
            let n: i64 = tx
                .query_one("SELECT COUNT(*) FROM invites", &[])?
                .try_get(0)?;
            if to_usize(n)? >= max {
                return Err(StoreError::QuotaExceeded);
            }
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM invites WHERE id = $1 OR token_hash = $2",
                    &[&inv.id, &token_hash],
                )?
                .is_some();
            if taken {
                return Err(StoreError::AlreadyExists);
            }
            tx.execute(
                "INSERT INTO invites (id, token_hash, for_user, created, expires, uses_left)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &inv.id,
                    &token_hash,
                    &inv.for_user,
                    &inv.created,
                    &inv.expires,
                    &i64::from(inv.uses_left),
                ],
            )?;
            Ok(())
        })
    }

    fn usable_invite(&self, token_hash: &[u8], now: i64) -> Result<Option<Invite>> {
        Ok(self.invite_by_token(token_hash)?.filter(|i| i.usable(now)))
    }

    fn invite_by_token(&self, token_hash: &[u8]) -> Result<Option<Invite>> {
        self.read(|tx| {
            tx.query_opt(
                &format!("SELECT {COLUMNS} FROM invites WHERE token_hash = $1"),
                &[&token_hash],
            )?
            .as_ref()
            .map(from_row)
            .transpose()
        })
    }

    fn use_invite(&self, id: &str, now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE invites SET uses_left = uses_left - 1
                 WHERE id = $1 AND uses_left > 0 AND (expires IS NULL OR expires > $2)",
                &[&id, &now],
            )?;
            Ok(n == 1)
        })
    }

    fn invites(&self) -> Result<Vec<Invite>> {
        self.read(|tx| {
            tx.query(
                &format!("SELECT {COLUMNS} FROM invites ORDER BY created, id COLLATE \"C\""),
                &[],
            )?
            .iter()
            .map(from_row)
            .collect()
        })
    }

    fn revoke_invite(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM invites WHERE id = $1", &[&id])? == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }
}
