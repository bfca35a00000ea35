//! Push registrations (XEP-0357) with their delivery statistics, so error counts survive a
//! restart.
//!
//! This module must not apply the push rules (device limits, eviction, auto-disable at
//! `max_errors`): `herald-push` decides, this module records.

use rusqlite::{params, Row};

use crate::error::{Result, StoreError};
use crate::sqlite::Store;

/// One `<enable/>` of one user, identified by `(user, jid, node)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    /// The account (bare JID).
    pub user: String,
    /// The app server JID.
    pub jid: String,
    /// The pubsub node on the app server.
    pub node: String,
    /// The client's publish-options data form, serialized.
    pub publish_options_xml: Option<String>,
    /// When it was enabled (unit chosen by the caller; ordering only).
    pub enabled_at: i64,
    /// The resource that enabled it.
    pub resource: Option<String>,
    /// The enabling session's `xml:lang`.
    pub lang: Option<String>,
    /// Consecutive counted errors from the app server.
    pub error_count: u32,
    /// When the last push was sent.
    pub last_push: Option<i64>,
    /// Outcome of the last push, free text for the admin (`herald push list`).
    pub last_result: Option<String>,
}

/// One registration's delivery statistics, as [`PushStore::update_push_stats`] records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushStatsUpdate {
    /// The account (bare JID).
    pub user: String,
    /// The app server JID.
    pub jid: String,
    /// The pubsub node on the app server.
    pub node: String,
    /// Consecutive counted errors from the app server.
    pub error_count: u32,
    /// When the last push was sent; `None` keeps the stored one.
    pub last_push: Option<i64>,
    /// Outcome of the last push.
    pub last_result: Option<String>,
}

/// A registration that was removed, kept for a while so an operator can see why a device
/// stopped getting pushes (`herald push list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRemoval {
    /// The account (bare JID).
    pub user: String,
    /// The app server JID.
    pub jid: String,
    /// The pubsub node on the app server.
    pub node: String,
    /// When it was removed, unix seconds.
    pub removed_at: i64,
    /// Why, free text for the admin.
    pub reason: String,
    /// The registration's last result at its removal.
    pub last_result: Option<String>,
    /// Its consecutive counted errors at its removal.
    pub error_count: u32,
}

/// Why and when registrations are removed ([`PushStore::remove_push_registrations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalNote<'a> {
    /// Unix seconds.
    pub removed_at: i64,
    /// Free text for the admin.
    pub reason: &'a str,
    /// The app server error that caused the removal, when its statistics were never stored
    /// (the removal is what it changed): recorded as the last result and counted as one
    /// more error.
    pub failed_with: Option<&'a str>,
}

/// Removals kept per account at most (the oldest go first): a client that enables and
/// disables in a loop must not grow the table without bound before the retention purge.
pub const MAX_REMOVALS_PER_USER: usize = 32;

/// Durable push registrations.
pub trait PushStore {
    /// The user's registrations, oldest enabled first.
    fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>>;
    /// Inserts or wholly replaces the registration with the same `(user, jid, node)`.
    fn upsert_push_registration(&self, reg: &PushRegistration) -> Result<()>;
    /// Removes one registration; whether it existed.
    fn delete_push_registration(&self, user: &str, jid: &str, node: &str) -> Result<bool>;
    /// Removes every registration of the user with that app server JID; how many.
    fn delete_push_registrations_by_jid(&self, user: &str, jid: &str) -> Result<usize>;
    /// Records delivery statistics (`last_push` None keeps the stored one, so a failed
    /// publish needs no read first); [`StoreError::NotFound`] if the registration is gone.
    fn update_push_stats(
        &self,
        user: &str,
        jid: &str,
        node: &str,
        error_count: u32,
        last_push: Option<i64>,
        last_result: Option<&str>,
    ) -> Result<()>;
    /// Records many registrations' statistics in one transaction (the server batches them:
    /// one commit per burst of app server replies, not one per reply), applied in order.
    /// Registrations that are gone are skipped; returns how many rows were updated.
    fn update_push_stats_batch(&self, items: &[PushStatsUpdate]) -> Result<usize>;
    /// Every user with at least one registration, sorted.
    fn users_with_push(&self) -> Result<Vec<String>>;
    /// Removes the user's registrations with app server `jid` (only `node` when given) and
    /// records each one removed, in the same transaction, with its statistics at that moment
    /// (see [`RemovalNote`]). Returns how many were removed; nothing is recorded for none.
    fn remove_push_registrations(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
        note: &RemovalNote<'_>,
    ) -> Result<usize>;
    /// Records a removal (keeping at most [`MAX_REMOVALS_PER_USER`] for its user).
    fn record_push_removal(&self, removal: &PushRemoval) -> Result<()>;
    /// The user's recorded removals, newest first.
    fn removed_push_registrations(&self, user: &str) -> Result<Vec<PushRemoval>>;
    /// Forgets removals recorded before `removed_at` (unix seconds); how many.
    fn purge_push_removals_before(&self, removed_at: i64) -> Result<usize>;
}

const UPDATE_STATS: &str = "UPDATE push_registrations
     SET error_count = ?4, last_push = COALESCE(?5, last_push), last_result = ?6
     WHERE account = ?1 AND jid = ?2 AND node = ?3";

const INSERT_REMOVAL: &str = "INSERT INTO push_removals
     (account, jid, node, removed_at, reason, last_result, error_count)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Keeps the newest [`MAX_REMOVALS_PER_USER`] removals of `user`.
fn trim_removals(tx: &rusqlite::Transaction<'_>, user: &str) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM push_removals WHERE account = ?1 AND rowid NOT IN (
             SELECT rowid FROM push_removals WHERE account = ?1
             ORDER BY removed_at DESC, rowid DESC LIMIT ?2)",
    )?
    .execute(params![user, MAX_REMOVALS_PER_USER as i64])?;
    Ok(())
}

fn insert_removal(tx: &rusqlite::Transaction<'_>, r: &PushRemoval) -> Result<()> {
    tx.prepare_cached(INSERT_REMOVAL)?.execute(params![
        r.user,
        r.jid,
        r.node,
        r.removed_at,
        r.reason,
        r.last_result,
        r.error_count
    ])?;
    Ok(())
}

fn registration_from_row(r: &Row<'_>) -> rusqlite::Result<PushRegistration> {
    Ok(PushRegistration {
        user: r.get(0)?,
        jid: r.get(1)?,
        node: r.get(2)?,
        publish_options_xml: r.get(3)?,
        enabled_at: r.get(4)?,
        resource: r.get(5)?,
        lang: r.get(6)?,
        error_count: r.get(7)?,
        last_push: r.get(8)?,
        last_result: r.get(9)?,
    })
}

impl PushStore for Store {
    fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT account, jid, node, publish_options_xml, enabled_at, resource, lang,
                        error_count, last_push, last_result
                 FROM push_registrations WHERE account = ?1 ORDER BY enabled_at, rowid",
            )?;
            let rows = stmt.query_map([user], registration_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn upsert_push_registration(&self, reg: &PushRegistration) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO push_registrations (account, jid, node, publish_options_xml,
                    enabled_at, resource, lang, error_count, last_push, last_result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (account, jid, node) DO UPDATE SET
                    publish_options_xml = excluded.publish_options_xml,
                    enabled_at = excluded.enabled_at, resource = excluded.resource,
                    lang = excluded.lang, error_count = excluded.error_count,
                    last_push = excluded.last_push, last_result = excluded.last_result",
            )?
            .execute(params![
                reg.user,
                reg.jid,
                reg.node,
                reg.publish_options_xml,
                reg.enabled_at,
                reg.resource,
                reg.lang,
                reg.error_count,
                reg.last_push,
                reg.last_result
            ])?;
            Ok(())
        })
    }

    fn delete_push_registration(&self, user: &str, jid: &str, node: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "DELETE FROM push_registrations WHERE account = ?1 AND jid = ?2 AND node = ?3",
                )?
                .execute(params![user, jid, node])?;
            Ok(n > 0)
        })
    }

    fn delete_push_registrations_by_jid(&self, user: &str, jid: &str) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM push_registrations WHERE account = ?1 AND jid = ?2")?
                .execute(params![user, jid])?)
        })
    }

    fn update_push_stats(
        &self,
        user: &str,
        jid: &str,
        node: &str,
        error_count: u32,
        last_push: Option<i64>,
        last_result: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.prepare_cached(UPDATE_STATS)?.execute(params![
                user,
                jid,
                node,
                error_count,
                last_push,
                last_result
            ])?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
    }

    fn update_push_stats_batch(&self, items: &[PushStatsUpdate]) -> Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(UPDATE_STATS)?;
            let mut n = 0;
            for u in items {
                n += stmt.execute(params![
                    u.user,
                    u.jid,
                    u.node,
                    u.error_count,
                    u.last_push,
                    u.last_result
                ])?;
            }
            Ok(n)
        })
    }

    fn users_with_push(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT account FROM push_registrations ORDER BY account",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn remove_push_registrations(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
        note: &RemovalNote<'_>,
    ) -> Result<usize> {
        self.write(|tx| {
            let removed: Vec<(String, Option<String>, u32)> = {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM push_registrations
                     WHERE account = ?1 AND jid = ?2 AND (?3 IS NULL OR node = ?3)
                     RETURNING node, last_result, error_count",
                )?;
                let rows = stmt.query_map(params![user, jid, node], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (node, last_result, error_count) in &removed {
                let (last_result, error_count) = match note.failed_with {
                    Some(e) => (Some(e.to_string()), error_count.saturating_add(1)),
                    None => (last_result.clone(), *error_count),
                };
                insert_removal(
                    tx,
                    &PushRemoval {
                        user: user.to_string(),
                        jid: jid.to_string(),
                        node: node.clone(),
                        removed_at: note.removed_at,
                        reason: note.reason.to_string(),
                        last_result,
                        error_count,
                    },
                )?;
            }
            if !removed.is_empty() {
                trim_removals(tx, user)?;
            }
            Ok(removed.len())
        })
    }

    fn record_push_removal(&self, removal: &PushRemoval) -> Result<()> {
        self.write(|tx| {
            insert_removal(tx, removal)?;
            trim_removals(tx, &removal.user)
        })
    }

    fn removed_push_registrations(&self, user: &str) -> Result<Vec<PushRemoval>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT account, jid, node, removed_at, reason, last_result, error_count
                 FROM push_removals WHERE account = ?1 ORDER BY removed_at DESC, rowid DESC",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok(PushRemoval {
                    user: r.get(0)?,
                    jid: r.get(1)?,
                    node: r.get(2)?,
                    removed_at: r.get(3)?,
                    reason: r.get(4)?,
                    last_result: r.get(5)?,
                    error_count: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn purge_push_removals_before(&self, removed_at: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM push_removals WHERE removed_at < ?1")?
                .execute([removed_at])?)
        })
    }
}
