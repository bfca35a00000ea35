//! Rosters (RFC 6121 §2), roster versions (XEP-0237) and pending inbound subscription
//! requests on PostgreSQL. Text is ordered with `COLLATE "C"` (byte order, as SQLite and
//! Rust's `str` compare), whatever the database's default collation.

use postgres::Transaction;

use super::{limit, lock, to_usize, PgStore};
use crate::error::{Result, StoreError};
use crate::roster::{RosterItem, RosterStore, Subscription};

fn bump_version(tx: &mut Transaction<'_>, user: &str) -> Result<u64> {
    let v: i64 = tx
        .query_one(
            "INSERT INTO roster_versions AS v (account, version) VALUES ($1, 1)
             ON CONFLICT (account) DO UPDATE SET version = v.version + 1
             RETURNING version",
            &[&user],
        )?
        .try_get(0)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("roster version {v}")))
}

fn parse_subscription(s: &str) -> Result<Subscription> {
    Subscription::parse(s).ok_or_else(|| StoreError::Corrupt(format!("roster subscription {s:?}")))
}

/// Items of `user` (only `jid` if given), groups attached, sorted by jid.
fn load_items(tx: &mut Transaction<'_>, user: &str, jid: Option<&str>) -> Result<Vec<RosterItem>> {
    let rows = tx.query(
        "SELECT jid, name, subscription, ask FROM roster_items
         WHERE account = $1 AND ($2::TEXT IS NULL OR jid = $2) ORDER BY jid COLLATE \"C\"",
        &[&user, &jid],
    )?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let sub: String = r.try_get(2)?;
        items.push(RosterItem {
            jid: r.try_get(0)?,
            name: r.try_get(1)?,
            subscription: parse_subscription(&sub)?,
            ask: r.try_get(3)?,
            groups: Vec::new(),
        });
    }
    let groups = tx.query(
        "SELECT jid, name FROM roster_groups
         WHERE account = $1 AND ($2::TEXT IS NULL OR jid = $2)
         ORDER BY jid COLLATE \"C\", position",
        &[&user, &jid],
    )?;
    // Both lists are sorted by jid: merge them in one pass.
    let mut i = 0;
    for g in &groups {
        let jid: String = g.try_get(0)?;
        let group: String = g.try_get(1)?;
        while i < items.len() && items[i].jid < jid {
            i += 1;
        }
        if let Some(item) = items.get_mut(i).filter(|it| it.jid == jid) {
            item.groups.push(group);
        }
    }
    Ok(items)
}

impl RosterStore for PgStore {
    fn roster(&self, user: &str) -> Result<(u64, Vec<RosterItem>)> {
        self.read(|tx| {
            let v: i64 = tx
                .query_opt(
                    "SELECT version FROM roster_versions WHERE account = $1",
                    &[&user],
                )?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0);
            let v = u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v}")))?;
            Ok((v, load_items(tx, user, None)?))
        })
    }

    fn roster_subscriptions(&self, user: &str) -> Result<Vec<RosterItem>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT jid, subscription, ask FROM roster_items WHERE account = $1
                 ORDER BY jid COLLATE \"C\"",
                &[&user],
            )?;
            let mut items = Vec::with_capacity(rows.len());
            for r in &rows {
                let sub: String = r.try_get(1)?;
                items.push(RosterItem {
                    jid: r.try_get(0)?,
                    name: None,
                    subscription: parse_subscription(&sub)?,
                    ask: r.try_get(2)?,
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
            tx.execute(
                "INSERT INTO roster_items (account, jid, name, subscription, ask)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, jid) DO UPDATE SET
                    name = excluded.name, subscription = excluded.subscription,
                    ask = excluded.ask",
                &[
                    &user,
                    &item.jid,
                    &item.name,
                    &item.subscription.as_str(),
                    &item.ask,
                ],
            )?;
            tx.execute(
                "DELETE FROM roster_groups WHERE account = $1 AND jid = $2",
                &[&user, &item.jid],
            )?;
            for (pos, group) in item.groups.iter().enumerate() {
                tx.execute(
                    "INSERT INTO roster_groups (account, jid, name, position)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&user, &item.jid, group, &limit(pos)],
                )?;
            }
            bump_version(tx, user)
        })
    }

    fn remove_roster_item(&self, user: &str, jid: &str) -> Result<u64> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM roster_items WHERE account = $1 AND jid = $2",
                &[&user, &jid],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "DELETE FROM roster_groups WHERE account = $1 AND jid = $2",
                &[&user, &jid],
            )?;
            bump_version(tx, user)
        })
    }

    fn roster_len(&self, user: &str) -> Result<usize> {
        self.read(|tx| {
            let n: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM roster_items WHERE account = $1",
                    &[&user],
                )?
                .try_get(0)?;
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
            // Checked under the user's lock, so concurrent requests cannot pass it together.
            lock(tx, "subscription_requests", user)?;
            let r = tx.query_one(
                "SELECT COUNT(*), COALESCE(bool_or(from_jid = $2), FALSE)
                 FROM subscription_requests WHERE account = $1",
                &[&user, &from],
            )?;
            let pending: i64 = r.try_get(0)?;
            let known: bool = r.try_get(1)?;
            if !known && to_usize(pending)? >= max {
                return Err(StoreError::QuotaExceeded);
            }
            tx.execute(
                "INSERT INTO subscription_requests (account, from_jid, stanza_xml)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (account, from_jid) DO UPDATE SET stanza_xml = excluded.stanza_xml",
                &[&user, &from, &stanza_xml],
            )?;
            Ok(())
        })
    }

    fn remove_subscription_request(&self, user: &str, from: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM subscription_requests WHERE account = $1 AND from_jid = $2",
                &[&user, &from],
            )?;
            Ok(n > 0)
        })
    }

    fn subscription_requests(&self, user: &str) -> Result<Vec<(String, String)>> {
        self.read(|tx| {
            tx.query(
                "SELECT from_jid, stanza_xml FROM subscription_requests
                 WHERE account = $1 ORDER BY seq",
                &[&user],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn subscription_requests_page(
        &self,
        user: &str,
        after: i64,
        max: usize,
    ) -> Result<Vec<(i64, String, String)>> {
        self.read(|tx| {
            tx.query(
                "SELECT seq, from_jid, stanza_xml FROM subscription_requests
                 WHERE account = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&user, &after, &limit(max)],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
        })
    }

    fn has_subscription_request(&self, user: &str, from: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT 1 FROM subscription_requests WHERE account = $1 AND from_jid = $2",
                    &[&user, &from],
                )?
                .is_some())
        })
    }
}
