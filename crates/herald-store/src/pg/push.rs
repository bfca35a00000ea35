//! Push registrations (XEP-0357) with their statistics, and recorded removals, on PostgreSQL.

use postgres::{Row, Transaction};

use super::{lock, to_u32, PgStore};
use crate::error::{Result, StoreError};
use crate::push::{
    PushRegistration, PushRemoval, PushStatsUpdate, PushStore, RemovalNote, MAX_REMOVALS_PER_USER,
};

const UPDATE_STATS: &str = "UPDATE push_registrations
     SET error_count = $4, last_push = COALESCE($5, last_push), last_result = $6
     WHERE account = $1 AND jid = $2 AND node = $3";

/// Keeps the newest [`MAX_REMOVALS_PER_USER`] removals of `user`.
fn trim_removals(tx: &mut Transaction<'_>, user: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM push_removals WHERE account = $1 AND seq NOT IN (
             SELECT seq FROM push_removals WHERE account = $1
             ORDER BY removed_at DESC, seq DESC LIMIT $2)",
        &[&user, &(MAX_REMOVALS_PER_USER as i64)],
    )?;
    Ok(())
}

fn insert_removal(tx: &mut Transaction<'_>, r: &PushRemoval) -> Result<()> {
    // Inserting and trimming under the user's lock: two removals at once cannot both trim
    // against a list that misses the other's row.
    lock(tx, "push_removals", &r.user)?;
    tx.execute(
        "INSERT INTO push_removals
         (account, jid, node, removed_at, reason, last_result, error_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &r.user,
            &r.jid,
            &r.node,
            &r.removed_at,
            &r.reason,
            &r.last_result,
            &i64::from(r.error_count),
        ],
    )?;
    Ok(())
}

fn registration_from_row(r: &Row) -> Result<PushRegistration> {
    Ok(PushRegistration {
        user: r.try_get(0)?,
        jid: r.try_get(1)?,
        node: r.try_get(2)?,
        publish_options_xml: r.try_get(3)?,
        enabled_at: r.try_get(4)?,
        resource: r.try_get(5)?,
        lang: r.try_get(6)?,
        error_count: to_u32(r.try_get(7)?)?,
        last_push: r.try_get(8)?,
        last_result: r.try_get(9)?,
    })
}

fn update_stats(tx: &mut Transaction<'_>, u: &PushStatsUpdate) -> Result<u64> {
    Ok(tx.execute(
        UPDATE_STATS,
        &[
            &u.user,
            &u.jid,
            &u.node,
            &i64::from(u.error_count),
            &u.last_push,
            &u.last_result,
        ],
    )?)
}

impl PushStore for PgStore {
    fn push_registrations(&self, user: &str) -> Result<Vec<PushRegistration>> {
        self.read(|tx| {
            tx.query(
                "SELECT account, jid, node, publish_options_xml, enabled_at, resource, lang,
                        error_count, last_push, last_result
                 FROM push_registrations WHERE account = $1 ORDER BY enabled_at, seq",
                &[&user],
            )?
            .iter()
            .map(registration_from_row)
            .collect()
        })
    }

    fn upsert_push_registration(&self, reg: &PushRegistration) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO push_registrations (account, jid, node, publish_options_xml,
                    enabled_at, resource, lang, error_count, last_push, last_result)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (account, jid, node) DO UPDATE SET
                    publish_options_xml = excluded.publish_options_xml,
                    enabled_at = excluded.enabled_at, resource = excluded.resource,
                    lang = excluded.lang, error_count = excluded.error_count,
                    last_push = excluded.last_push, last_result = excluded.last_result",
                &[
                    &reg.user,
                    &reg.jid,
                    &reg.node,
                    &reg.publish_options_xml,
                    &reg.enabled_at,
                    &reg.resource,
                    &reg.lang,
                    &i64::from(reg.error_count),
                    &reg.last_push,
                    &reg.last_result,
                ],
            )?;
            Ok(())
        })
    }

    fn delete_push_registration(&self, user: &str, jid: &str, node: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM push_registrations WHERE account = $1 AND jid = $2 AND node = $3",
                &[&user, &jid, &node],
            )?;
            Ok(n > 0)
        })
    }

    fn delete_push_registrations_by_jid(&self, user: &str, jid: &str) -> Result<usize> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM push_registrations WHERE account = $1 AND jid = $2",
                &[&user, &jid],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
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
        let u = PushStatsUpdate {
            user: user.to_owned(),
            jid: jid.to_owned(),
            node: node.to_owned(),
            error_count,
            last_push,
            last_result: last_result.map(str::to_owned),
        };
        self.write(|tx| {
            if update_stats(tx, &u)? == 0 {
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
            let mut n = 0u64;
            for u in items {
                n += update_stats(tx, u)?;
            }
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn users_with_push(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query(
                "SELECT DISTINCT account COLLATE \"C\" AS a FROM push_registrations ORDER BY a",
                &[],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
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
            let rows = tx.query(
                "DELETE FROM push_registrations
                 WHERE account = $1 AND jid = $2 AND ($3::TEXT IS NULL OR node = $3)
                 RETURNING node, last_result, error_count",
                &[&user, &jid, &node],
            )?;
            for r in &rows {
                let node: String = r.try_get(0)?;
                let last_result: Option<String> = r.try_get(1)?;
                let error_count = to_u32(r.try_get(2)?)?;
                let (last_result, error_count) = match note.failed_with {
                    Some(e) => (Some(e.to_string()), error_count.saturating_add(1)),
                    None => (last_result, error_count),
                };
                insert_removal(
                    tx,
                    &PushRemoval {
                        user: user.to_string(),
                        jid: jid.to_string(),
                        node,
                        removed_at: note.removed_at,
                        reason: note.reason.to_string(),
                        last_result,
                        error_count,
                    },
                )?;
            }
            if !rows.is_empty() {
                trim_removals(tx, user)?;
            }
            Ok(rows.len())
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
            tx.query(
                "SELECT account, jid, node, removed_at, reason, last_result, error_count
                 FROM push_removals WHERE account = $1 ORDER BY removed_at DESC, seq DESC",
                &[&user],
            )?
            .iter()
            .map(|r| {
                Ok(PushRemoval {
                    user: r.try_get(0)?,
                    jid: r.try_get(1)?,
                    node: r.try_get(2)?,
                    removed_at: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    last_result: r.try_get(5)?,
                    error_count: to_u32(r.try_get(6)?)?,
                })
            })
            .collect()
        })
    }

    fn purge_push_removals_before(&self, removed_at: i64) -> Result<usize> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM push_removals WHERE removed_at < $1",
                &[&removed_at],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
