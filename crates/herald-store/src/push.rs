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
}

const UPDATE_STATS: &str = "UPDATE push_registrations
     SET error_count = ?4, last_push = COALESCE(?5, last_push), last_result = ?6
     WHERE account = ?1 AND jid = ?2 AND node = ?3";

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
}
