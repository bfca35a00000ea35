//! The message archive (XEP-0313) with RSM paging on PostgreSQL: the same queries as the
//! SQLite module, chronological by timestamp with ties in insertion order (`seq`).

use std::collections::BTreeMap;

use postgres::types::ToSql;
use postgres::Transaction;

use super::usage;
use super::{limit, to_usize, PgStore};
use crate::archive::{ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, MamPrefs};
use crate::error::{Result, StoreError};
use crate::usage::{bytes_of, Table, Usage};

type Params = Vec<Box<dyn ToSql + Sync>>;

/// Inserts one row; the caller counts it in the user's usage.
fn insert_row(
    tx: &mut Transaction<'_>,
    user: &str,
    msg: &ArchivedMessage,
    with_full: &str,
) -> Result<()> {
    let with_full = if with_full.is_empty() {
        msg.with.as_str()
    } else {
        with_full
    };
    let n = tx.execute(
        "INSERT INTO archive (account, stanza_id, with_bare, with_full, ts, stanza_xml)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account, stanza_id) DO NOTHING",
        &[
            &user,
            &msg.id,
            &msg.with,
            &with_full,
            &msg.timestamp,
            &msg.stanza_xml,
        ],
    )?;
    if n == 0 {
        Err(StoreError::AlreadyExists)
    } else {
        Ok(())
    }
}

/// Adds each user's messages and bytes to their usage, in account order: two transactions
/// updating the same users lock their rows in the same order and cannot deadlock.
fn add_usage(tx: &mut Transaction<'_>, per_user: BTreeMap<&str, (i64, i64)>) -> Result<()> {
    for (user, (messages, bytes)) in per_user {
        usage::add(tx, Table::Archive, user, messages, bytes)?;
    }
    Ok(())
}

/// Position `(ts, seq)` of an RSM cursor id in the user's archive.
fn cursor(tx: &mut Transaction<'_>, user: &str, id: &str) -> Result<(i64, i64)> {
    let r = tx
        .query_opt(
            "SELECT ts, seq FROM archive WHERE account = $1 AND stanza_id = $2",
            &[&user, &id],
        )?
        .ok_or(StoreError::NotFound)?;
    Ok((r.try_get(0)?, r.try_get(1)?))
}

/// Builds a statement's text and parameters together, numbering the placeholders.
struct Query {
    sql: String,
    params: Params,
}

impl Query {
    fn new(sql: &str) -> Query {
        Query {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// Appends `text` with its `{}` replaced by the next placeholder bound to `value`.
    fn bind(&mut self, text: &str, value: impl ToSql + Sync + 'static) {
        self.params.push(Box::new(value));
        self.sql
            .push_str(&text.replacen("{}", &format!("${}", self.params.len()), 1));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }
}

/// `SELECT {columns} FROM archive WHERE <the query's filters>`, the time range given
/// separately (the caller may narrow it by a cursor).
fn select(
    user: &str,
    q: &ArchiveQuery,
    lower: Option<i64>,
    upper: Option<i64>,
    columns: &str,
) -> Query {
    let mut query = Query::new(&format!("SELECT {columns} FROM archive WHERE"));
    query.bind(" account = {}", user.to_owned());
    if let Some(with) = &q.with {
        // XEP-0313 §4.1.1: a full JID matches exactly, a bare JID the peer's bare JID.
        if with.contains('/') {
            query.bind(" AND with_full = {}", with.clone());
        } else {
            query.bind(" AND with_bare = {}", with.clone());
        }
    }
    if let Some(lower) = lower {
        query.bind(" AND ts >= {}", lower);
    }
    if let Some(upper) = upper {
        query.bind(" AND ts <= {}", upper);
    }
    if let Some(ids) = &q.ids {
        query.bind(" AND stanza_id = ANY({})", ids.clone());
    }
    query
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

const MODES: &[&str] = &["always", "roster", "never"];

impl ArchiveStore for PgStore {
    fn archive(&self, user: &str, msg: &ArchivedMessage, with_full: &str) -> Result<()> {
        self.write(|tx| {
            insert_row(tx, user, msg, with_full)?;
            usage::add(tx, Table::Archive, user, 1, bytes_of(&msg.stanza_xml))
        })
    }

    fn archive_batch(&self, items: &[(String, ArchivedMessage, String)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            // One usage update per user of the batch, not one per message.
            let mut added: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
            for (user, msg, with_full) in items {
                insert_row(tx, user, msg, with_full)?;
                let e = added.entry(user.as_str()).or_default();
                e.0 += 1;
                e.1 += bytes_of(&msg.stanza_xml);
            }
            add_usage(tx, added)
        })
    }

    fn query_archive(&self, user: &str, q: &ArchiveQuery) -> Result<ArchivePage> {
        self.read(|tx| {
            // XEP-0313: an unknown RSM id is item-not-found, not an empty page.
            let after = q
                .after_id
                .as_deref()
                .map(|id| cursor(tx, user, id))
                .transpose()?;
            let (backward, before) = match q.before_id.as_deref() {
                None => (false, None),
                Some("") => (true, None),
                Some(id) => (true, Some(cursor(tx, user, id)?)),
            };
            let lower = max_opt(q.start, after.map(|(ts, _)| ts));
            let upper = min_opt(q.end, before.map(|(ts, _)| ts));
            let mut page = select(
                user,
                q,
                lower,
                upper,
                "stanza_id, with_bare, ts, stanza_xml",
            );
            if let Some((ts, seq)) = after {
                page.bind(" AND (ts, seq) > ({}", ts);
                page.bind(", {})", seq);
            }
            if let Some((ts, seq)) = before {
                page.bind(" AND (ts, seq) < ({}", ts);
                page.bind(", {})", seq);
            }
            let dir = if backward { "DESC" } else { "ASC" };
            // One row beyond the page tells whether more exist in the paging direction.
            page.bind(
                &format!(" ORDER BY ts {dir}, seq {dir} LIMIT {{}}"),
                limit(q.max.saturating_add(1)),
            );
            let rows = tx.query(&page.sql, &page.params())?;
            let mut items = rows
                .iter()
                .map(|r| {
                    Ok(ArchivedMessage {
                        id: r.try_get(0)?,
                        with: r.try_get(1)?,
                        timestamp: r.try_get(2)?,
                        stanza_xml: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let complete = items.len() <= q.max;
            items.truncate(q.max);
            if backward {
                items.reverse();
            }
            let count = if after.is_none() && before.is_none() && complete {
                // Without a cursor a complete page is every match: counted already.
                Some(items.len()).filter(|n| *n <= q.count_limit)
            } else if q.count_limit == 0 {
                None
            } else {
                // Stops one beyond the limit, so it reads at most that many index entries.
                let mut inner = select(user, q, q.start, q.end, "1");
                inner.bind(" LIMIT {}", limit(q.count_limit.saturating_add(1)));
                let sql = format!("SELECT COUNT(*) FROM ({}) AS matches", inner.sql);
                let n: i64 = tx.query_one(&sql, &inner.params())?.try_get(0)?;
                Some(to_usize(n)?).filter(|n| *n <= q.count_limit)
            };
            Ok(ArchivePage {
                items,
                complete,
                count,
            })
        })
    }

    fn mam_prefs(&self, user: &str) -> Result<MamPrefs> {
        self.read(|tx| {
            let default: Option<String> = tx
                .query_opt(
                    "SELECT default_mode FROM mam_prefs WHERE account = $1",
                    &[&user],
                )?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten();
            let mut prefs = MamPrefs {
                default,
                ..MamPrefs::default()
            };
            let rows = tx.query(
                "SELECT list, jid FROM mam_prefs_jids WHERE account = $1
                 ORDER BY list, jid COLLATE \"C\"",
                &[&user],
            )?;
            for r in &rows {
                let list: String = r.try_get(0)?;
                let jid: String = r.try_get(1)?;
                match list.as_str() {
                    "always" => prefs.always.push(jid),
                    "never" => prefs.never.push(jid),
                    other => return Err(StoreError::Corrupt(format!("MAM prefs list {other:?}"))),
                }
            }
            Ok(prefs)
        })
    }

    fn accounts_with_mam_prefs(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query(
                "SELECT account FROM mam_prefs UNION SELECT account FROM mam_prefs_jids",
                &[],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
    }

    fn set_mam_prefs(&self, user: &str, prefs: &MamPrefs) -> Result<()> {
        if let Some(mode) = &prefs.default {
            // XEP-0313 prefs: the default attribute is one of always, roster, never.
            if !MODES.contains(&mode.as_str()) {
                return Err(StoreError::Invalid(format!("MAM default {mode:?}")));
            }
        }
        self.write(|tx| {
            tx.execute(
                "INSERT INTO mam_prefs (account, default_mode) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE SET default_mode = excluded.default_mode",
                &[&user, &prefs.default],
            )?;
            tx.execute("DELETE FROM mam_prefs_jids WHERE account = $1", &[&user])?;
            for (list, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
                for jid in jids {
                    tx.execute(
                        "INSERT INTO mam_prefs_jids (account, list, jid) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&user, &list, jid],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn purge_archive_before(&self, timestamp: i64, max: usize) -> Result<usize> {
        self.write(|tx| {
            // The oldest rows first (the index on ts gives them in order); each user's total
            // goes down with them, in the same transaction.
            let rows = tx.query(
                "DELETE FROM archive WHERE seq IN
                     (SELECT seq FROM archive WHERE ts < $1 ORDER BY ts LIMIT $2)
                 RETURNING account, octet_length(stanza_xml)::BIGINT",
                &[&timestamp, &limit(max)],
            )?;
            let mut gone: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for r in &rows {
                let e = gone.entry(r.try_get(0)?).or_default();
                e.0 -= 1;
                e.1 -= r.try_get::<_, i64>(1)?;
            }
            add_usage(tx, gone.iter().map(|(u, v)| (u.as_str(), *v)).collect())?;
            Ok(rows.len())
        })
    }

    fn archive_usage(&self, user: &str) -> Result<Usage> {
        self.read(|tx| usage::read(tx, Table::Archive, user))
    }
}
