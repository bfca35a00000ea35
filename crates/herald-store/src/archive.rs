//! The message archive (XEP-0313) with RSM paging (XEP-0059), archiving preferences and
//! retention.
//!
//! Order is chronological by timestamp, ties broken by insertion order, so paging by id is a
//! total order even when many messages share a microsecond. This module must not decide what
//! gets archived (message types, preferences) nor parse stanzas: the server's MAM module does.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};

use crate::error::{Result, StoreError};
use crate::sqlite::{to_usize, Store};
use crate::usage::{self, Table, Usage};

/// One archived stanza of one user's archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// XEP-0359 stanza-id, unique per user; the RSM paging handle.
    pub id: String,
    /// Bare JID of the peer.
    pub with: String,
    /// Unix microseconds.
    pub timestamp: i64,
    /// The stanza as archived.
    pub stanza_xml: String,
}

/// Filters and paging of one MAM query; all filters combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// A bare JID matches the peer's bare JID; a full JID (with '/') matches exactly the full
    /// JID stored at archiving time (XEP-0313 §4.1.1).
    pub with: Option<String>,
    /// Only messages at or after this instant (unix micros).
    pub start: Option<i64>,
    /// Only messages at or before this instant (unix micros).
    pub end: Option<i64>,
    /// RSM `<after/>`: the page following this id.
    pub after_id: Option<String>,
    /// RSM `<before/>`: the page preceding this id; `Some("")` (empty `<before/>`) is the
    /// last page.
    pub before_id: Option<String>,
    /// Only these ids (XEP-0313 `ids` field).
    pub ids: Option<Vec<String>>,
    /// Page size (RSM `<max/>`); 0 returns no items, only `count`.
    pub max: usize,
    /// Count the matches (RSM `<count/>`) only if there are at most this many: counting is a
    /// walk over every match, so an exact count of a large archive on every page would make
    /// a page's cost grow with the archive. Beyond it `count` is `None` (XEP-0059 §2.6 lets
    /// the server leave it out). 0 never counts.
    pub count_limit: usize,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    /// Chronological, whichever direction was paged.
    pub items: Vec<ArchivedMessage>,
    /// XEP-0313 `<fin complete='true'/>`: nothing more in the paging direction (forward for
    /// `after`/no cursor, backward for `before`).
    pub complete: bool,
    /// Total matching the filters, ignoring the paging cursors (RSM `<count/>`); `None` when
    /// there are more than the query's `count_limit`.
    pub count: Option<usize>,
}

/// Archiving preferences (XEP-0313 `<prefs/>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MamPrefs {
    /// `"always"`, `"roster"` or `"never"`; `None` = the server's default.
    pub default: Option<String>,
    /// JIDs always archived, sorted.
    pub always: Vec<String>,
    /// JIDs never archived, sorted.
    pub never: Vec<String>,
}

/// Per-user message archives.
pub trait ArchiveStore {
    /// Archives one message for `user`; `with_full` is the peer's full JID (empty = same as
    /// `msg.with`). [`StoreError::AlreadyExists`] if the id is already in the user's archive.
    fn archive(&self, user: &str, msg: &ArchivedMessage, with_full: &str) -> Result<()>;
    /// Archives `(user, message, with_full)` items in one transaction (group commit): all or
    /// nothing, [`StoreError::AlreadyExists`] if any id is taken.
    fn archive_batch(&self, items: &[(String, ArchivedMessage, String)]) -> Result<()>;
    /// One page of `user`'s archive; an unknown `after_id`/`before_id` is
    /// [`StoreError::NotFound`] (XEP-0313: item-not-found).
    fn query_archive(&self, user: &str, q: &ArchiveQuery) -> Result<ArchivePage>;
    /// The user's preferences (defaults if never set).
    fn mam_prefs(&self, user: &str) -> Result<MamPrefs>;
    /// Replaces the user's preferences; [`StoreError::Invalid`] for an unknown default mode.
    fn set_mam_prefs(&self, user: &str, prefs: &MamPrefs) -> Result<()>;
    /// Every account that ever stored preferences (all others have the defaults: the server
    /// reads this once at start instead of one lookup per account on its first message).
    fn accounts_with_mam_prefs(&self) -> Result<Vec<String>>;
    /// Deletes archived messages (all users) older than `timestamp` (unix micros), the
    /// oldest first and at most `limit` of them in one transaction; how many went. Retention
    /// calls it until fewer than `limit` go, so the writer is never held for long.
    fn purge_archive_before(&self, timestamp: i64, limit: usize) -> Result<usize>;
    /// How many messages the user's archive holds and their bytes (kept with every write,
    /// so this is one lookup).
    fn archive_usage(&self, user: &str) -> Result<Usage>;
}

/// Inserts one row and counts it in the user's usage.
fn insert(tx: &Transaction<'_>, user: &str, msg: &ArchivedMessage, with_full: &str) -> Result<()> {
    insert_row(tx, user, msg, with_full)?;
    usage::add(
        tx,
        Table::Archive,
        user,
        1,
        usage::bytes_of(&msg.stanza_xml),
    )
}

/// Inserts one row; the caller counts it in the user's usage.
fn insert_row(
    tx: &Transaction<'_>,
    user: &str,
    msg: &ArchivedMessage,
    with_full: &str,
) -> Result<()> {
    let with_full = if with_full.is_empty() {
        msg.with.as_str()
    } else {
        with_full
    };
    let n = tx
        .prepare_cached(
            "INSERT INTO archive (account, stanza_id, with_bare, with_full, ts, stanza_xml)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (account, stanza_id) DO NOTHING",
        )?
        .execute(params![
            user,
            msg.id,
            msg.with,
            with_full,
            msg.timestamp,
            msg.stanza_xml
        ])?;
    if n == 0 {
        Err(StoreError::AlreadyExists)
    } else {
        Ok(())
    }
}

/// One retention batch: the oldest rows before `?1`, at most `?2`, with what each user's
/// usage loses. The index on `ts` gives them in order, so a batch never sorts the archive.
pub(crate) const PURGE: &str = "DELETE FROM archive WHERE seq IN
     (SELECT seq FROM archive WHERE ts < ?1 ORDER BY ts LIMIT ?2)
 RETURNING account, length(CAST(stanza_xml AS BLOB))";

/// Position `(ts, seq)` of an RSM cursor id in the user's archive.
fn cursor(tx: &Transaction<'_>, user: &str, id: &str) -> Result<(i64, i64)> {
    tx.prepare_cached("SELECT ts, seq FROM archive WHERE account = ?1 AND stanza_id = ?2")?
        .query_row(params![user, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// The query counting the matches of the filters (RSM `<count/>`), cursors ignored, up to
/// one more than `q.count_limit`: it stops there, so it reads at most that many index entries
/// whatever the archive's size.
pub(crate) fn count_query(user: &str, q: &ArchiveQuery) -> (String, Vec<Value>) {
    let (inner, mut args) = select(user, q, q.start, q.end, "1", " LIMIT ?");
    args.push(Value::Integer(
        i64::try_from(q.count_limit.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    (format!("SELECT COUNT(*) FROM ({inner})"), args)
}

/// The query of one page: the filters, the cursors' positions `(ts, seq)`, the direction,
/// and one row more than `max`.
pub(crate) fn page_query(
    user: &str,
    q: &ArchiveQuery,
    after: Option<(i64, i64)>,
    before: Option<(i64, i64)>,
    backward: bool,
) -> (String, Vec<Value>) {
    // The cursors narrow the time range, merged with start/end so that each bound appears
    // once: the planner then weighs the indexes correctly.
    let lower = max_opt(q.start, after.map(|(ts, _)| ts));
    let upper = min_opt(q.end, before.map(|(ts, _)| ts));
    let mut tail = String::new();
    let mut tail_args = Vec::new();
    // `ts >= x AND (ts > x OR seq > s)` is `(ts, seq) > (x, s)`, written so that the
    // timestamp range of an index applies.
    if let Some((ts, seq)) = after {
        tail.push_str(" AND (ts > ? OR seq > ?)");
        tail_args.extend([Value::Integer(ts), Value::Integer(seq)]);
    }
    if let Some((ts, seq)) = before {
        tail.push_str(" AND (ts < ? OR seq < ?)");
        tail_args.extend([Value::Integer(ts), Value::Integer(seq)]);
    }
    let dir = if backward { "DESC" } else { "ASC" };
    tail.push_str(&format!(" ORDER BY ts {dir}, seq {dir} LIMIT ?"));
    // One row beyond the page tells whether more exist in the paging direction.
    tail_args.push(Value::Integer(
        i64::try_from(q.max.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    let (sql, mut args) = select(
        user,
        q,
        lower,
        upper,
        "stanza_id, with_bare, ts, stanza_xml",
        &tail,
    );
    args.extend(tail_args);
    (sql, args)
}

/// `SELECT {columns} FROM archive WHERE <the query's filters> {tail}` and its parameters,
/// with the time range given separately (the caller may narrow it by a cursor).
fn select(
    user: &str,
    q: &ArchiveQuery,
    lower: Option<i64>,
    upper: Option<i64>,
    columns: &str,
    tail: &str,
) -> (String, Vec<Value>) {
    // A few ids are found fastest by id; left alone, the planner prefers walking the
    // user's whole archive in time order to avoid sorting the handful of results.
    let index = if q.ids.is_some() {
        " INDEXED BY archive_by_id"
    } else {
        ""
    };
    let mut sql = format!("SELECT {columns} FROM archive{index} WHERE account = ?");
    let mut args = vec![Value::Text(user.to_owned())];
    if let Some(with) = &q.with {
        match with.split_once('/') {
            // XEP-0313 §4.1.1: a full JID matches exactly, served by the (account,
            // with_full, ts) index: through the bare JID's index a page would walk every
            // message of the peer's other resources.
            Some(_) => {
                sql.push_str(" AND with_full = ?");
                args.push(Value::Text(with.clone()));
            }
            None => {
                sql.push_str(" AND with_bare = ?");
                args.push(Value::Text(with.clone()));
            }
        }
    }
    if let Some(lower) = lower {
        sql.push_str(" AND ts >= ?");
        args.push(Value::Integer(lower));
    }
    if let Some(upper) = upper {
        sql.push_str(" AND ts <= ?");
        args.push(Value::Integer(upper));
    }
    if let Some(ids) = &q.ids {
        if ids.is_empty() {
            sql.push_str(" AND 0");
        } else {
            sql.push_str(" AND stanza_id IN (?");
            sql.push_str(&",?".repeat(ids.len() - 1));
            sql.push(')');
            args.extend(ids.iter().map(|id| Value::Text(id.clone())));
        }
    }
    sql.push_str(tail);
    (sql, args)
}

/// With an id list the SQL text varies with its length: such statements are not cached, so
/// they cannot evict the fixed ones.
fn prepare<'a>(tx: &'a Transaction<'_>, sql: &str, cache: bool) -> Result<Stmt<'a>> {
    Ok(if cache {
        Stmt::Cached(tx.prepare_cached(sql)?)
    } else {
        Stmt::Plain(tx.prepare(sql)?)
    })
}

enum Stmt<'a> {
    Cached(rusqlite::CachedStatement<'a>),
    Plain(rusqlite::Statement<'a>),
}

impl<'a> std::ops::Deref for Stmt<'a> {
    type Target = rusqlite::Statement<'a>;
    fn deref(&self) -> &Self::Target {
        match self {
            Stmt::Cached(s) => s,
            Stmt::Plain(s) => s,
        }
    }
}

impl std::ops::DerefMut for Stmt<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Stmt::Cached(s) => s,
            Stmt::Plain(s) => s,
        }
    }
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

impl ArchiveStore for Store {
    fn archive(&self, user: &str, msg: &ArchivedMessage, with_full: &str) -> Result<()> {
        self.write(|tx| insert(tx, user, msg, with_full))
    }

    fn archive_batch(&self, items: &[(String, ArchivedMessage, String)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            // One usage update per user of the batch, not one per message.
            let mut added: std::collections::HashMap<&str, (i64, i64)> = Default::default();
            for (user, msg, with_full) in items {
                insert_row(tx, user, msg, with_full)?;
                let a = added.entry(user).or_default();
                a.0 += 1;
                a.1 += usage::bytes_of(&msg.stanza_xml);
            }
            for (user, (messages, bytes)) in added {
                usage::add(tx, Table::Archive, user, messages, bytes)?;
            }
            Ok(())
        })
    }

    fn query_archive(&self, user: &str, q: &ArchiveQuery) -> Result<ArchivePage> {
        self.read_mam(|tx| {
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

            let (sql, args) = page_query(user, q, after, before, backward);
            let mut stmt = prepare(tx, &sql, q.ids.is_none())?;
            let rows = stmt.query_map(params_from_iter(&args), |r| {
                Ok(ArchivedMessage {
                    id: r.get(0)?,
                    with: r.get(1)?,
                    timestamp: r.get(2)?,
                    stanza_xml: r.get(3)?,
                })
            })?;
            let mut items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
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
                let (sql, args) = count_query(user, q);
                let n: i64 = prepare(tx, &sql, q.ids.is_none())?
                    .query_row(params_from_iter(&args), |r| r.get(0))?;
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
                .prepare_cached("SELECT default_mode FROM mam_prefs WHERE account = ?1")?
                .query_row([user], |r| r.get(0))
                .optional()?
                .flatten();
            let mut prefs = MamPrefs {
                default,
                ..MamPrefs::default()
            };
            let mut stmt = tx.prepare_cached(
                "SELECT list, jid FROM mam_prefs_jids WHERE account = ?1 ORDER BY list, jid",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (list, jid) = row?;
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
            let mut stmt = tx.prepare(
                "SELECT account FROM mam_prefs UNION SELECT account FROM mam_prefs_jids",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
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
            tx.prepare_cached(
                "INSERT INTO mam_prefs (account, default_mode) VALUES (?1, ?2)
                 ON CONFLICT (account) DO UPDATE SET default_mode = excluded.default_mode",
            )?
            .execute(params![user, prefs.default])?;
            tx.prepare_cached("DELETE FROM mam_prefs_jids WHERE account = ?1")?
                .execute([user])?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO mam_prefs_jids (account, list, jid) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            for jid in &prefs.always {
                stmt.execute(params![user, "always", jid])?;
            }
            for jid in &prefs.never {
                stmt.execute(params![user, "never", jid])?;
            }
            Ok(())
        })
    }

    fn purge_archive_before(&self, timestamp: i64, limit: usize) -> Result<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            // Each user's total goes down with the rows, in the same transaction.
            let mut gone: std::collections::HashMap<String, (i64, i64)> = Default::default();
            let mut stmt = tx.prepare_cached(PURGE)?;
            let rows = stmt.query_map(params![timestamp, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut n = 0;
            for row in rows {
                let (account, bytes) = row?;
                let e = gone.entry(account).or_default();
                e.0 += 1;
                e.1 += bytes;
                n += 1;
            }
            drop(stmt);
            for (account, (messages, bytes)) in gone {
                usage::add(tx, Table::Archive, &account, -messages, -bytes)?;
            }
            Ok(n)
        })
    }

    fn archive_usage(&self, user: &str) -> Result<Usage> {
        self.read(|tx| usage::read(tx, Table::Archive, user))
    }
}
