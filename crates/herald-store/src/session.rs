//! XEP-0198 sessions that outlive the process: a hibernated session (resumption id, account,
//! resource, both h counters, expiry, unacknowledged queue, and an opaque record of the rest
//! that only the server reads) is written when it hibernates, its queue is appended to while
//! it sleeps, and it is deleted when it resumes or ends. Tombstones keep the last h of ended
//! sessions. Server flags record facts about the previous run ("the last stop was clean").
//!
//! This module must not interpret the stanzas or the `state` record.

use rusqlite::{params, OptionalExtension};

use crate::error::Result;
use crate::sqlite::{now_millis, Store};

/// One saved session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmSessionRecord {
    /// The resumption id (XEP-0198 `previd`).
    pub id: String,
    /// The account (bare JID).
    pub account: String,
    /// The bound resource.
    pub resource: String,
    /// Stanzas handled from the client, mod 2^32.
    pub inbound_h: u32,
    /// Stanzas sent to the client, mod 2^32 (the last queued stanza's number).
    pub outbound_h: u32,
    /// When hibernation ends, unix millis.
    pub expires_at: i64,
    /// The server's own record of everything else (opaque here).
    pub state: String,
}

/// One unacknowledged stanza of a saved session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmQueued {
    /// The stanza as the server serialized it.
    pub stanza_xml: String,
    /// When it was queued, unix micros.
    pub queued_at: i64,
    /// The offline message row it was read from, if any.
    pub offline_id: Option<i64>,
}

/// A saved session with its queue, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSession {
    /// The session.
    pub record: SmSessionRecord,
    /// Its unacknowledged stanzas, oldest first.
    pub queue: Vec<SmQueued>,
}

/// Storage of sessions, tombstones and server flags.
pub trait SessionStore {
    /// Writes sessions with their whole queues, replacing what was saved under the same ids,
    /// in one transaction.
    fn save_sm_sessions(&self, sessions: &[SavedSession]) -> Result<()>;
    /// Appends stanzas to a saved session's queue and sets its outbound h. Ok(false), writing
    /// nothing, when no session is saved under `id`.
    fn append_sm_queue(&self, id: &str, items: &[SmQueued], outbound_h: u32) -> Result<bool>;
    /// Deletes a saved session and its queue (nothing if absent).
    fn delete_sm_session(&self, id: &str) -> Result<()>;
    /// Every saved session with its queue.
    fn sm_sessions(&self) -> Result<Vec<SavedSession>>;
    /// The saved session `id` with its queue, if saved (cluster mode: a session another
    /// node saved for this one to resume).
    fn sm_session(&self, id: &str) -> Result<Option<SavedSession>>;
    /// Deletes every saved session of `account` (with queues); how many.
    fn delete_account_sm_sessions(&self, account: &str) -> Result<usize>;
    /// Remembers the last h of session `id` of `account`, ended at `ended_at` (unix millis).
    fn save_tombstones(&self, items: &[(String, String, u32, i64)]) -> Result<()>;
    /// Takes (reads and deletes) the tombstone of `id` of `account`: (h, ended_at).
    fn take_tombstone(&self, account: &str, id: &str) -> Result<Option<(u32, i64)>>;
    /// Tombstones ended at or after `since` (unix millis): (account, id, h, ended_at). Older
    /// ones are deleted.
    fn tombstones_since(&self, since: i64) -> Result<Vec<(String, String, u32, i64)>>;
    /// Deletes tombstones ended before `before` (unix millis); how many.
    fn purge_tombstones_before(&self, before: i64) -> Result<usize>;
    /// Sets (Some) or clears (None) a server flag.
    fn set_flag(&self, name: &str, value: Option<&str>) -> Result<()>;
    /// Reads and clears a server flag.
    fn take_flag(&self, name: &str) -> Result<Option<String>>;
}

fn u32_col(v: i64) -> u32 {
    // Written from u32; anything else is a damaged file, and 0 is the safe reading of h.
    u32::try_from(v).unwrap_or(0)
}

impl SessionStore for Store {
    fn save_sm_sessions(&self, sessions: &[SavedSession]) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        self.write(|tx| {
            let mut del_q = tx.prepare_cached("DELETE FROM sm_queue WHERE session_id = ?1")?;
            let mut put = tx.prepare_cached(
                "INSERT INTO sm_sessions
                   (id, account, resource, inbound_h, outbound_h, expires_at, state, saved_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET account = excluded.account,
                   resource = excluded.resource, inbound_h = excluded.inbound_h,
                   outbound_h = excluded.outbound_h, expires_at = excluded.expires_at,
                   state = excluded.state, saved_at = excluded.saved_at",
            )?;
            let mut q = tx.prepare_cached(
                "INSERT INTO sm_queue (session_id, account, stanza_xml, queued_at, offline_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for s in sessions {
                let r = &s.record;
                del_q.execute([&r.id])?;
                put.execute(params![
                    r.id,
                    r.account,
                    r.resource,
                    r.inbound_h,
                    r.outbound_h,
                    r.expires_at,
                    r.state,
                    now
                ])?;
                for item in &s.queue {
                    q.execute(params![
                        r.id,
                        r.account,
                        item.stanza_xml,
                        item.queued_at,
                        item.offline_id
                    ])?;
                }
            }
            Ok(())
        })
    }

    fn append_sm_queue(&self, id: &str, items: &[SmQueued], outbound_h: u32) -> Result<bool> {
        self.write(|tx| {
            let account: Option<String> = tx
                .prepare_cached("SELECT account FROM sm_sessions WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(account) = account else {
                return Ok(false);
            };
            let mut q = tx.prepare_cached(
                "INSERT INTO sm_queue (session_id, account, stanza_xml, queued_at, offline_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for item in items {
                q.execute(params![
                    id,
                    account,
                    item.stanza_xml,
                    item.queued_at,
                    item.offline_id
                ])?;
            }
            tx.prepare_cached("UPDATE sm_sessions SET outbound_h = ?2 WHERE id = ?1")?
                .execute(params![id, outbound_h])?;
            Ok(true)
        })
    }

    fn delete_sm_session(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM sm_queue WHERE session_id = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM sm_sessions WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        })
    }

    fn sm_session(&self, id: &str) -> Result<Option<SavedSession>> {
        self.read(|tx| {
            let record = tx
                .prepare_cached(
                    "SELECT id, account, resource, inbound_h, outbound_h, expires_at, state
                     FROM sm_sessions WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok(SmSessionRecord {
                        id: r.get(0)?,
                        account: r.get(1)?,
                        resource: r.get(2)?,
                        inbound_h: u32_col(r.get(3)?),
                        outbound_h: u32_col(r.get(4)?),
                        expires_at: r.get(5)?,
                        state: r.get(6)?,
                    })
                })
                .optional()?;
            let Some(record) = record else {
                return Ok(None);
            };
            let mut stmt = tx.prepare_cached(
                "SELECT stanza_xml, queued_at, offline_id FROM sm_queue
                 WHERE session_id = ?1 ORDER BY pos",
            )?;
            let queue = stmt
                .query_map([id], |r| {
                    Ok(SmQueued {
                        stanza_xml: r.get(0)?,
                        queued_at: r.get(1)?,
                        offline_id: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(SavedSession { record, queue }))
        })
    }

    fn sm_sessions(&self) -> Result<Vec<SavedSession>> {
        self.read(|tx| {
            let mut out: Vec<SavedSession> = Vec::new();
            let mut index = std::collections::HashMap::new();
            let mut stmt = tx.prepare_cached(
                "SELECT id, account, resource, inbound_h, outbound_h, expires_at, state
                 FROM sm_sessions ORDER BY saved_at, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(SmSessionRecord {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    resource: r.get(2)?,
                    inbound_h: u32_col(r.get(3)?),
                    outbound_h: u32_col(r.get(4)?),
                    expires_at: r.get(5)?,
                    state: r.get(6)?,
                })
            })?;
            for rec in rows {
                let record = rec?;
                index.insert(record.id.clone(), out.len());
                out.push(SavedSession {
                    record,
                    queue: Vec::new(),
                });
            }
            let mut stmt = tx.prepare_cached(
                "SELECT session_id, stanza_xml, queued_at, offline_id FROM sm_queue ORDER BY pos",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let sid: String = r.get(0)?;
                if let Some(&i) = index.get(&sid) {
                    out[i].queue.push(SmQueued {
                        stanza_xml: r.get(1)?,
                        queued_at: r.get(2)?,
                        offline_id: r.get(3)?,
                    });
                }
            }
            Ok(out)
        })
    }

    fn delete_account_sm_sessions(&self, account: &str) -> Result<usize> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM sm_queue WHERE account = ?1")?
                .execute([account])?;
            let n = tx
                .prepare_cached("DELETE FROM sm_sessions WHERE account = ?1")?
                .execute([account])?;
            tx.prepare_cached("DELETE FROM sm_tombstones WHERE account = ?1")?
                .execute([account])?;
            Ok(n)
        })
    }

    fn save_tombstones(&self, items: &[(String, String, u32, i64)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sm_tombstones (account, id, h, ended_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, id) DO UPDATE SET h = excluded.h,
                   ended_at = excluded.ended_at",
            )?;
            for (account, id, h, at) in items {
                stmt.execute(params![account, id, h, at])?;
            }
            Ok(())
        })
    }

    fn take_tombstone(&self, account: &str, id: &str) -> Result<Option<(u32, i64)>> {
        self.write(|tx| {
            let t: Option<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT h, ended_at FROM sm_tombstones WHERE account = ?1 AND id = ?2",
                )?
                .query_row([account, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if t.is_some() {
                tx.prepare_cached("DELETE FROM sm_tombstones WHERE account = ?1 AND id = ?2")?
                    .execute([account, id])?;
            }
            Ok(t.map(|(h, at)| (u32_col(h), at)))
        })
    }

    fn tombstones_since(&self, since: i64) -> Result<Vec<(String, String, u32, i64)>> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM sm_tombstones WHERE ended_at < ?1")?
                .execute([since])?;
            let mut stmt = tx.prepare_cached(
                "SELECT account, id, h, ended_at FROM sm_tombstones ORDER BY ended_at",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, u32_col(r.get(2)?), r.get(3)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn purge_tombstones_before(&self, before: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM sm_tombstones WHERE ended_at < ?1")?
                .execute([before])?)
        })
    }

    fn set_flag(&self, name: &str, value: Option<&str>) -> Result<()> {
        self.write(|tx| {
            match value {
                Some(v) => tx
                    .prepare_cached(
                        "INSERT INTO server_flags (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([name, v])?,
                None => tx
                    .prepare_cached("DELETE FROM server_flags WHERE name = ?1")?
                    .execute([name])?,
            };
            Ok(())
        })
    }

    fn take_flag(&self, name: &str) -> Result<Option<String>> {
        self.write(|tx| {
            let v: Option<String> = tx
                .prepare_cached("SELECT value FROM server_flags WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            tx.prepare_cached("DELETE FROM server_flags WHERE name = ?1")?
                .execute([name])?;
            Ok(v)
        })
    }
}
