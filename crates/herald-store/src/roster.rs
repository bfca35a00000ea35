//! Roster items (RFC 6121 §2), the roster version (XEP-0237) and pending inbound subscription
//! requests (RFC 6121 §3.1.3).
//!
//! The store keeps the state the subscription state machine produces; it must not run that
//! state machine, validate JIDs or enforce roster limits (the server's roster module does).

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::{Result, StoreError};
use crate::sqlite::{to_usize, Store};

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Neither side sees the other's presence.
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both see each other's presence.
    Both,
}

impl Subscription {
    /// The attribute value: `none`, `to`, `from` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses an attribute value; `None` for anything else (including `remove`, which is a
    /// request, not a state).
    pub fn parse(s: &str) -> Option<Subscription> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contact in a user's roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID (or a bare domain).
    pub jid: String,
    /// The user-assigned handle.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// Pending-out: the user asked to subscribe and the contact has not answered.
    pub ask: bool,
    /// Groups in the order given; duplicates are dropped when stored.
    pub groups: Vec<String>,
}

/// Rosters and pending inbound subscription requests, per user.
pub trait RosterStore {
    /// `(version, items sorted by jid)`; version 0 for an empty, never-changed roster.
    fn roster(&self, user: &str) -> Result<(u64, Vec<RosterItem>)>;
    /// The items with their subscription state only (`name` None, no groups), sorted by
    /// jid: what presence broadcasts and probes need, without reading every group.
    fn roster_subscriptions(&self, user: &str) -> Result<Vec<RosterItem>>;
    /// One item, `None` if the contact is not in the roster.
    fn roster_item(&self, user: &str, jid: &str) -> Result<Option<RosterItem>>;
    /// Inserts or replaces the item; bumps and returns the roster version.
    fn set_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64>;
    /// Removes the item ([`StoreError::NotFound`] if absent); bumps and returns the version.
    fn remove_roster_item(&self, user: &str, jid: &str) -> Result<u64>;
    /// Number of items (for the roster size limit).
    fn roster_len(&self, user: &str) -> Result<usize>;
    /// Stores an inbound subscription request to redeliver at next login, replacing an
    /// existing one from the same JID (it keeps its place in the order).
    /// [`StoreError::QuotaExceeded`] if `max` requests from other JIDs are already pending.
    fn add_subscription_request(
        &self,
        user: &str,
        from: &str,
        stanza_xml: &str,
        max: usize,
    ) -> Result<()>;
    /// Forgets the request from `from`; whether there was one.
    fn remove_subscription_request(&self, user: &str, from: &str) -> Result<bool>;
    /// Pending requests `(from, stanza_xml)`, oldest first.
    fn subscription_requests(&self, user: &str) -> Result<Vec<(String, String)>>;
    /// At most `limit` pending requests `(position, from, stanza_xml)` after position
    /// `after` (0 for the first page), oldest first: the next page starts after the last
    /// position returned.
    fn subscription_requests_page(
        &self,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>>;
    /// Whether a request from `from` is pending.
    fn has_subscription_request(&self, user: &str, from: &str) -> Result<bool>;
}

fn bump_version(tx: &Transaction<'_>, user: &str) -> Result<u64> {
    let v: i64 = tx
        .prepare_cached(
            "INSERT INTO roster_versions (account, version) VALUES (?1, 1)
             ON CONFLICT (account) DO UPDATE SET version = version + 1
             RETURNING version",
        )?
        .query_row([user], |r| r.get(0))?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("roster version {v}")))
}

fn parse_subscription(s: &str) -> Result<Subscription> {
    Subscription::parse(s).ok_or_else(|| StoreError::Corrupt(format!("roster subscription {s:?}")))
}

/// Items of `user` (only `jid` if given), groups attached, sorted by jid.
fn load_items(tx: &Transaction<'_>, user: &str, jid: Option<&str>) -> Result<Vec<RosterItem>> {
    // `?2 IS NULL` lets one cached statement serve both the whole roster and one item.
    let mut stmt = tx.prepare_cached(
        "SELECT jid, name, subscription, ask FROM roster_items
         WHERE account = ?1 AND (?2 IS NULL OR jid = ?2) ORDER BY jid",
    )?;
    let rows = stmt.query_map(params![user, jid], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (jid, name, sub, ask) = row?;
        items.push(RosterItem {
            jid,
            name,
            subscription: parse_subscription(&sub)?,
            ask,
            groups: Vec::new(),
        });
    }
    let mut stmt = tx.prepare_cached(
        "SELECT jid, name FROM roster_groups
         WHERE account = ?1 AND (?2 IS NULL OR jid = ?2) ORDER BY jid, position",
    )?;
    let groups = stmt.query_map(params![user, jid], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    // Both lists are sorted by jid: merge them in one pass.
    let mut i = 0;
    for g in groups {
        let (jid, group) = g?;
        while i < items.len() && items[i].jid < jid {
            i += 1;
        }
        if let Some(item) = items.get_mut(i).filter(|it| it.jid == jid) {
            item.groups.push(group);
        }
    }
    Ok(items)
}

impl RosterStore for Store {
    fn roster(&self, user: &str) -> Result<(u64, Vec<RosterItem>)> {
        self.read(|tx| {
            let v: Option<i64> = tx
                .prepare_cached("SELECT version FROM roster_versions WHERE account = ?1")?
                .query_row([user], |r| r.get(0))
                .optional()?;
            let v = v.unwrap_or(0);
            let v = u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v}")))?;
            Ok((v, load_items(tx, user, None)?))
        })
    }

    fn roster_subscriptions(&self, user: &str) -> Result<Vec<RosterItem>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT jid, subscription, ask FROM roster_items WHERE account = ?1 ORDER BY jid",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            let mut items = Vec::new();
            for row in rows {
                let (jid, sub, ask) = row?;
                items.push(RosterItem {
                    jid,
                    name: None,
                    subscription: parse_subscription(&sub)?,
                    ask,
                    groups: Vec::new(),
                });
            }
            Ok(items)
        })
    }

    fn roster_item(&self, user: &str, jid: &str) -> Result<Option<RosterItem>> {
        self.read(|tx| Ok(load_items(tx, user, Some(jid))?.into_iter().next()))
    }

    fn set_roster_item(&self, user: &str, item: &RosterItem) -> Result<u64> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO roster_items (account, jid, name, subscription, ask)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, jid) DO UPDATE SET
                    name = excluded.name, subscription = excluded.subscription,
                    ask = excluded.ask",
            )?
            .execute(params![
                user,
                item.jid,
                item.name,
                item.subscription.as_str(),
                item.ask
            ])?;
            tx.prepare_cached("DELETE FROM roster_groups WHERE account = ?1 AND jid = ?2")?
                .execute(params![user, item.jid])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO roster_groups (account, jid, name, position) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )?;
            for (pos, group) in item.groups.iter().enumerate() {
                insert.execute(params![user, item.jid, group, pos])?;
            }
            bump_version(tx, user)
        })
    }

    fn remove_roster_item(&self, user: &str, jid: &str) -> Result<u64> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM roster_items WHERE account = ?1 AND jid = ?2")?
                .execute(params![user, jid])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.prepare_cached("DELETE FROM roster_groups WHERE account = ?1 AND jid = ?2")?
                .execute(params![user, jid])?;
            bump_version(tx, user)
        })
    }

    fn roster_len(&self, user: &str) -> Result<usize> {
        self.read(|tx| {
            let n: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM roster_items WHERE account = ?1")?
                .query_row([user], |r| r.get(0))?;
            to_usize(n)
        })
    }

    fn add_subscription_request(
        &self,
        user: &str,
        from: &str,
        stanza_xml: &str,
        max: usize,
    ) -> Result<()> {
        self.write(|tx| {
            // Checked in the write transaction, so concurrent requests cannot pass it together.
            let (pending, known): (i64, bool) = tx
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(from_jid = ?2), 0) > 0
                     FROM subscription_requests WHERE account = ?1",
                )?
                .query_row(params![user, from], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if !known && to_usize(pending)? >= max {
                return Err(StoreError::QuotaExceeded);
            }
            tx.prepare_cached(
                "INSERT INTO subscription_requests (account, from_jid, stanza_xml)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, from_jid) DO UPDATE SET stanza_xml = excluded.stanza_xml",
            )?
            .execute(params![user, from, stanza_xml])?;
            Ok(())
        })
    }

    fn remove_subscription_request(&self, user: &str, from: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "DELETE FROM subscription_requests WHERE account = ?1 AND from_jid = ?2",
                )?
                .execute(params![user, from])?;
            Ok(n > 0)
        })
    }

    fn subscription_requests(&self, user: &str) -> Result<Vec<(String, String)>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT from_jid, stanza_xml FROM subscription_requests
                 WHERE account = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn subscription_requests_page(
        &self,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, from_jid, stanza_xml FROM subscription_requests
                 WHERE account = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user, after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn has_subscription_request(&self, user: &str, from: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT 1 FROM subscription_requests WHERE account = ?1 AND from_jid = ?2",
                )?
                .exists(params![user, from])?)
        })
    }
}
