//! Invites (XEP-0401 account creation, redeemed over XEP-0445 in-band registration): what
//! `herald invite create` made, found by the SHA-256 of its token.
//!
//! This module must not make or hash tokens (the caller gives the hash) nor decide who may
//! register: it stores, finds usable invites, counts uses and bounds how many are kept.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{Result, StoreError};
use crate::sqlite::{to_usize, Store};

/// One invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// Public handle (`herald invite list`, `revoke`).
    pub id: String,
    /// The one account name (bare JID) it may register; None: any.
    pub for_user: Option<String>,
    /// When it was made, ms since the epoch.
    pub created: i64,
    /// When it stops working, ms since the epoch; None: never.
    pub expires: Option<i64>,
    /// Registrations it still allows.
    pub uses_left: u32,
}

impl Invite {
    /// Whether it still allows a registration at `now` (ms).
    pub fn usable(&self, now: i64) -> bool {
        self.uses_left > 0 && self.expires.is_none_or(|e| now < e)
    }
}

/// Stored invites.
pub trait InviteStore {
    /// Stores `invite` under `token_hash`. Invites no longer usable at `now` are deleted
    /// first; if `max` usable ones remain, [`StoreError::QuotaExceeded`] and nothing is
    /// stored. [`StoreError::AlreadyExists`] for a taken id or hash.
    fn create_invite(&self, token_hash: &[u8], invite: &Invite, max: usize, now: i64)
        -> Result<()>;
    /// The invite whose token hashes to `token_hash`, if usable at `now`.
    fn usable_invite(&self, token_hash: &[u8], now: i64) -> Result<Option<Invite>>;
    /// The invite whose token hashes to `token_hash`, usable or not (the invite page tells
    /// an expired or used-up invite from an unknown token).
    fn invite_by_token(&self, token_hash: &[u8]) -> Result<Option<Invite>>;
    /// Takes one use of invite `id` if it is usable at `now`; false (nothing changed) if
    /// it is not, or does not exist.
    fn use_invite(&self, id: &str, now: i64) -> Result<bool>;
    /// Every stored invite (usable or not), oldest first.
    fn invites(&self) -> Result<Vec<Invite>>;
    /// Deletes invite `id`; [`StoreError::NotFound`] if there is none.
    fn revoke_invite(&self, id: &str) -> Result<()>;
}

const COLUMNS: &str = "id, for_user, created, expires, uses_left";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Invite> {
    Ok(Invite {
        id: r.get(0)?,
        for_user: r.get(1)?,
        created: r.get(2)?,
        expires: r.get(3)?,
        uses_left: r.get(4)?,
    })
}

impl InviteStore for Store {
    fn create_invite(&self, token_hash: &[u8], inv: &Invite, max: usize, now: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM invites WHERE uses_left <= 0 OR (expires IS NOT NULL AND expires <= ?1)",
            )?
            .execute([now])?;
            let n: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM invites")?
                .query_row([], |r| r.get(0))?;
            if to_usize(n)? >= max {
                return Err(StoreError::QuotaExceeded);
            }
            let taken = tx
                .prepare_cached("SELECT 1 FROM invites WHERE id = ?1 OR token_hash = ?2")?
                .exists(params![inv.id, token_hash])?;
            if taken {
                return Err(StoreError::AlreadyExists);
            }
            tx.prepare_cached(
                "INSERT INTO invites (id, token_hash, for_user, created, expires, uses_left)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                inv.id,
                token_hash,
                inv.for_user,
                inv.created,
                inv.expires,
                inv.uses_left
            ])?;
            Ok(())
        })
    }

    fn usable_invite(&self, token_hash: &[u8], now: i64) -> Result<Option<Invite>> {
        self.read(|tx| {
            let inv = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM invites WHERE token_hash = ?1"
                ))?
                .query_row([token_hash], from_row)
                .optional()?;
            Ok(inv.filter(|i| i.usable(now)))
        })
    }

    fn invite_by_token(&self, token_hash: &[u8]) -> Result<Option<Invite>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM invites WHERE token_hash = ?1"
                ))?
                .query_row([token_hash], from_row)
                .optional()?)
        })
    }

    fn use_invite(&self, id: &str, now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE invites SET uses_left = uses_left - 1
                     WHERE id = ?1 AND uses_left > 0 AND (expires IS NULL OR expires > ?2)",
                )?
                .execute(params![id, now])?;
            Ok(n == 1)
        })
    }

    fn invites(&self) -> Result<Vec<Invite>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invites ORDER BY created, id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn revoke_invite(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM invites WHERE id = ?1")?
                .execute([id])?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }
}
