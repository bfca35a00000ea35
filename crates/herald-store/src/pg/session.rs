//! XEP-0198 sessions that outlive the process, tombstones and server flags, on PostgreSQL.

use std::collections::HashMap;

use super::PgStore;
use crate::error::Result;
use crate::session::{SavedSession, SessionStore, SmQueued, SmSessionRecord};
use crate::sqlite::now_millis;

fn u32_col(v: i64) -> u32 {
    // Written from u32; anything else is a damaged row, and 0 is the safe reading of h.
    u32::try_from(v).unwrap_or(0)
}

const INSERT_QUEUED: &str =
    "INSERT INTO sm_queue (session_id, account, stanza_xml, queued_at, offline_id)
     VALUES ($1, $2, $3, $4, $5)";

impl SessionStore for PgStore {
    fn save_sm_sessions(&self, sessions: &[SavedSession]) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        self.write(|tx| {
            for s in sessions {
                let r = &s.record;
                tx.execute("DELETE FROM sm_queue WHERE session_id = $1", &[&r.id])?;
                tx.execute(
                    "INSERT INTO sm_sessions
                       (id, account, resource, inbound_h, outbound_h, expires_at, state, saved_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO UPDATE SET account = excluded.account,
                       resource = excluded.resource, inbound_h = excluded.inbound_h,
                       outbound_h = excluded.outbound_h, expires_at = excluded.expires_at,
                       state = excluded.state, saved_at = excluded.saved_at",
                    &[
                        &r.id,
                        &r.account,
                        &r.resource,
                        &i64::from(r.inbound_h),
                        &i64::from(r.outbound_h),
                        &r.expires_at,
                        &r.state,
                        &now,
                    ],
                )?;
                for item in &s.queue {
                    tx.execute(
                        INSERT_QUEUED,
                        &[
                            &r.id,
                            &r.account,
                            &item.stanza_xml,
                            &item.queued_at,
                            &item.offline_id,
                        ],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn append_sm_queue(&self, id: &str, items: &[SmQueued], outbound_h: u32) -> Result<bool> {
        self.write(|tx| {
            // The row lock orders appends to one session and a concurrent delete.
            let Some(row) = tx.query_opt(
                "SELECT account FROM sm_sessions WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            else {
                return Ok(false);
            };
            let account: String = row.try_get(0)?;
            for item in items {
                tx.execute(
                    INSERT_QUEUED,
                    &[
                        &id,
                        &account,
                        &item.stanza_xml,
                        &item.queued_at,
                        &item.offline_id,
                    ],
                )?;
            }
            tx.execute(
                "UPDATE sm_sessions SET outbound_h = $2 WHERE id = $1",
                &[&id, &i64::from(outbound_h)],
            )?;
            Ok(true)
        })
    }

    fn delete_sm_session(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sm_sessions WHERE id = $1", &[&id])?;
            tx.execute("DELETE FROM sm_queue WHERE session_id = $1", &[&id])?;
            Ok(())
        })
    }

    fn sm_session(&self, id: &str) -> Result<Option<SavedSession>> {
        self.read(|tx| {
            let Some(r) = tx.query_opt(
                "SELECT id, account, resource, inbound_h, outbound_h, expires_at, state
                 FROM sm_sessions WHERE id = $1",
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let record = SmSessionRecord {
                id: r.try_get(0)?,
                account: r.try_get(1)?,
                resource: r.try_get(2)?,
                inbound_h: u32_col(r.try_get(3)?),
                outbound_h: u32_col(r.try_get(4)?),
                expires_at: r.try_get(5)?,
                state: r.try_get(6)?,
            };
            let mut queue = Vec::new();
            for r in tx.query(
                "SELECT stanza_xml, queued_at, offline_id FROM sm_queue
                 WHERE session_id = $1 ORDER BY pos",
                &[&id],
            )? {
                queue.push(SmQueued {
                    stanza_xml: r.try_get(0)?,
                    queued_at: r.try_get(1)?,
                    offline_id: r.try_get(2)?,
                });
            }
            Ok(Some(SavedSession { record, queue }))
        })
    }

    fn sm_sessions(&self) -> Result<Vec<SavedSession>> {
        self.read(|tx| {
            let mut out: Vec<SavedSession> = Vec::new();
            let mut index = HashMap::new();
            for r in tx.query(
                "SELECT id, account, resource, inbound_h, outbound_h, expires_at, state
                 FROM sm_sessions ORDER BY saved_at, id COLLATE \"C\"",
                &[],
            )? {
                let record = SmSessionRecord {
                    id: r.try_get(0)?,
                    account: r.try_get(1)?,
                    resource: r.try_get(2)?,
                    inbound_h: u32_col(r.try_get(3)?),
                    outbound_h: u32_col(r.try_get(4)?),
                    expires_at: r.try_get(5)?,
                    state: r.try_get(6)?,
                };
                index.insert(record.id.clone(), out.len());
                out.push(SavedSession {
                    record,
                    queue: Vec::new(),
                });
            }
            for r in tx.query(
                "SELECT session_id, stanza_xml, queued_at, offline_id FROM sm_queue ORDER BY pos",
                &[],
            )? {
                let sid: String = r.try_get(0)?;
                if let Some(&i) = index.get(&sid) {
                    out[i].queue.push(SmQueued {
                        stanza_xml: r.try_get(1)?,
                        queued_at: r.try_get(2)?,
                        offline_id: r.try_get(3)?,
                    });
                }
            }
            Ok(out)
        })
    }

    fn delete_account_sm_sessions(&self, account: &str) -> Result<usize> {
        self.write(|tx| {
            tx.execute("DELETE FROM sm_queue WHERE account = $1", &[&account])?;
            let n = tx.execute("DELETE FROM sm_sessions WHERE account = $1", &[&account])?;
            tx.execute("DELETE FROM sm_tombstones WHERE account = $1", &[&account])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn save_tombstones(&self, items: &[(String, String, u32, i64)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for (account, id, h, at) in items {
                tx.execute(
                    "INSERT INTO sm_tombstones (account, id, h, ended_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (account, id) DO UPDATE SET h = excluded.h,
                       ended_at = excluded.ended_at",
                    &[account, id, &i64::from(*h), at],
                )?;
            }
            Ok(())
        })
    }

    fn take_tombstone(&self, account: &str, id: &str) -> Result<Option<(u32, i64)>> {
        self.write(|tx| {
            // One statement: two takers cannot both get it.
            tx.query_opt(
                "DELETE FROM sm_tombstones WHERE account = $1 AND id = $2 RETURNING h, ended_at",
                &[&account, &id],
            )?
            .map(|r| Ok((u32_col(r.try_get(0)?), r.try_get(1)?)))
            .transpose()
        })
    }

    fn tombstones_since(&self, since: i64) -> Result<Vec<(String, String, u32, i64)>> {
        self.write(|tx| {
            tx.execute("DELETE FROM sm_tombstones WHERE ended_at < $1", &[&since])?;
            tx.query(
                "SELECT account, id, h, ended_at FROM sm_tombstones ORDER BY ended_at",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    u32_col(r.try_get(2)?),
                    r.try_get(3)?,
                ))
            })
            .collect()
        })
    }

    fn purge_tombstones_before(&self, before: i64) -> Result<usize> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM sm_tombstones WHERE ended_at < $1", &[&before])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn set_flag(&self, name: &str, value: Option<&str>) -> Result<()> {
        self.write(|tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO server_flags (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    &[&name, &v],
                )?,
                None => tx.execute("DELETE FROM server_flags WHERE name = $1", &[&name])?,
            };
            Ok(())
        })
    }

    fn take_flag(&self, name: &str) -> Result<Option<String>> {
        self.write(|tx| {
            tx.query_opt(
                "DELETE FROM server_flags WHERE name = $1 RETURNING value",
                &[&name],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
        })
    }
}
