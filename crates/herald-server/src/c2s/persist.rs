//! Sessions that outlive the process (issue 11: "no message lost").
//!
//! - A resumable session that hibernates is saved at once (resumption id, JID, both h
//!   counters, deadline, unacknowledged queue), and every stanza queued while it sleeps is
//!   written through after the event that queued it; resuming or ending it deletes the copy.
//! - A clean shutdown (`Running::stop`) saves every resumable session the same way, with
//!   what only the running process knew (presence, carbons, push attachment and counts), and
//!   records that the stop was clean. Live ones are cut like a lost connection, so their
//!   clients resume once the server is back.
//! - At start, after a clean stop every saved session is restored, hibernating: a phone that
//!   slept through an upgrade resumes with `<resumed/>` and gets its queue exactly once, and
//!   nobody is woken. After a crash (no clean record) the saved sessions are not restored —
//!   what they knew last may be older than what their clients saw — but nothing in them is
//!   lost: each becomes a tombstone (so `<resume/>` gets `<failed h='…'/>` with the right
//!   `h`), its queue goes to offline storage (messages already in the user's archive are left
//!   to MAM), and each of their users with push registrations gets one push, paced at
//!   `push.restart_wake_rate`, so the phones reconnect and catch up.
//! - Tombstones are saved when a session ends and loaded at start.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_proto::jid::FullJid;
use herald_proto::Element;
use herald_push::engine::SessionPush;
use herald_push::saved::SavedPush;
use herald_store::roles;
use herald_store::{SavedSession, SmQueued, SmSessionRecord};
use serde::{Deserialize, Serialize};

use crate::routing::msg::PushEvent;
use crate::routing::msg::{Origin, Routed};
use crate::stanza;
use crate::Shared;

/// The server flag a clean stop leaves behind.
pub const CLEAN_STOP: &str = "clean_stop";

/// Now, unix milliseconds.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the store keeps of a session besides its counters and queue (serialized as JSON in
/// the record's `state`; every field has a default so older records still read).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedState {
    /// Had sent available presence.
    pub available: bool,
    /// Its presence priority.
    pub priority: i8,
    /// Its last available presence (XML), to answer probes.
    pub presence: Option<String>,
    /// Asked for the roster (gets roster pushes).
    pub interested: bool,
    /// XEP-0280 enabled.
    pub carbons: bool,
    /// Directed presence recipients.
    pub directed: Vec<String>,
    /// Its push attachment (XEP-0357), if any.
    pub push: Option<SavedPush>,
}

impl SavedState {
    /// As stored.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// From the store; a damaged record reads as defaults (the session still resumes).
    pub fn decode(s: &str) -> SavedState {
        serde_json::from_str(s).unwrap_or_default()
    }

    /// The push attachment for the engine.
    pub fn push_state(&self) -> SessionPush {
        self.push
            .as_ref()
            .map(SavedPush::to_session)
            .unwrap_or_default()
    }
}

/// A queued stanza as the store keeps it (`None` if it does not serialize, which a parsed
/// element always does).
pub fn queued(o: &Routed) -> Option<SmQueued> {
    Some(SmQueued {
        stanza_xml: stanza::to_xml(&o.el)?,
        queued_at: o.at,
        offline_id: o.origin.offline_row(),
    })
}

/// A stored queue entry back as a stanza of this process (a fresh routing id, or the
/// offline row's id).
fn unqueued(shared: &Shared, q: &SmQueued) -> Option<Routed> {
    let el = match Element::from_str(&q.stanza_xml) {
        Ok(el) => el,
        Err(e) => {
            tracing::error!(error = %e, "unreadable saved stanza dropped");
            return None;
        }
    };
    let origin = match q.offline_id {
        Some(row) => Origin::Offline(row),
        None => Origin::Routed(shared.next_id()),
    };
    let mut o = Routed::from_origin(origin, el);
    o.at = q.queued_at;
    Some(o)
}

/// A saved session ready to run again.
pub struct Restored {
    /// As stored.
    pub record: SmSessionRecord,
    /// Its queue, oldest first.
    pub queue: Vec<Routed>,
    /// What else it had.
    pub state: SavedState,
    /// Its JID.
    pub jid: FullJid,
}

/// What start-up did with the saved sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Restored, hibernating (after a clean stop).
    pub restored: usize,
    /// Turned into tombstones and offline messages (after a crash, or unusable).
    pub recovered: usize,
    /// Users to wake (after a crash).
    pub to_wake: usize,
}

/// Starts a restored session in a task of its own (the session module's); gives it back
/// when it cannot run (e.g. its resource is taken).
pub type Restore = fn(Arc<Shared>, Box<Restored>) -> Result<(), Box<Restored>>;

/// At start, before the listeners accept: loads tombstones and the saved sessions, restores
/// them after a clean stop, recovers them after a crash (see the module documentation).
/// Returns the users to wake once the listeners run ([`wake_paced`]).
pub async fn load(shared: &Arc<Shared>, restore: Restore) -> anyhow::Result<(Loaded, Vec<String>)> {
    let ttl = shared.cfg.stream_management.tombstone_ttl.0;
    let now_ms = unix_millis();
    let since = now_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let flag = shared.clean_stop_flag();
    let (clean, mut saved, tombs) = shared
        .db(move |s: &roles::Sessions| {
            let clean = s.take_flag(&flag)?.is_some();
            Ok((clean, s.sm_sessions()?, s.tombstones_since(since)?))
        })
        .await?;
    // Cluster mode: the other nodes' saved sessions are theirs (hibernating there now, or
    // adopted when a node is lost); ids from before cluster mode have no node and are
    // taken by the first node that starts. A session of this node that another node
    // adopted while this one was down (see `adopt`) runs there: it is that node's now.
    if let Some(c) = shared.cluster.get() {
        saved.retain(|s| herald_cluster::sm_id_node(&s.record.id).is_none_or(|n| n == c.node));
        let keys: Vec<(&str, &str)> = saved
            .iter()
            .map(|s| (s.record.account.as_str(), s.record.resource.as_str()))
            .collect();
        let held = c.held_elsewhere(&keys).await;
        saved = saved
            .into_iter()
            .zip(held)
            .filter_map(|(s, held)| (!held).then_some(s))
            .collect();
    }
    let now = Instant::now();
    for (account, id, h, at) in tombs {
        let age = Duration::from_millis(u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0));
        shared.tombstone_restore(&id, &account, h, now.checked_sub(age).unwrap_or(now));
    }
    let mut loaded = Loaded::default();
    let mut wake = BTreeSet::new();
    let mut ended = Ended::default();
    for s in saved {
        if clean {
            if run_again(shared, s, restore, &mut ended).await {
                loaded.restored += 1;
                // The push task's queue is bounded: let it catch up now and then.
                if loaded.restored % 1000 == 0 {
                    shared.push.stats().await;
                }
            } else {
                loaded.recovered += 1;
            }
            continue;
        }
        let SavedSession { record, queue } = s;
        wake.insert(record.account.clone());
        ended.add(shared, &record, requeue(shared, &queue)).await;
        loaded.recovered += 1;
    }
    ended.record(shared).await?;
    loaded.to_wake = wake.len();
    Ok((loaded, wake.into_iter().collect()))
}

/// Cluster mode: XEP-0198 resumption of `previd` (of `user`), hibernated on another node:
/// that node saves the session and lets it go, and this one restores it from the store,
/// hibernated, for the resumption to find. True when it runs here now. A session that
/// cannot run here (its resource is taken) is recovered as after a crash: a tombstone, and
/// its queue handed on.
pub async fn take_over(shared: &Arc<Shared>, user: &str, previd: &str) -> bool {
    let Some(c) = shared.cluster.get() else {
        return false;
    };
    let Some(restore) = c.restore() else {
        return false;
    };
    if !c.hand_off(shared, user, previd).await {
        return false;
    }
    // Adopted here while looking for its node (that node was lost).
    if shared.resumable_get(previd).is_some() {
        return true;
    }
    let id = previd.to_string();
    let saved = match shared
        .db(move |s: &roles::Sessions| s.sm_session(&id))
        .await
    {
        Ok(Some(s)) if s.record.account == user => s,
        Ok(_) => return false,
        Err(e) => {
            tracing::error!(error = %e, "reading the handed-over session failed");
            return false;
        }
    };
    let mut ended = Ended::default();
    let runs = run_again(shared, saved, restore, &mut ended).await;
    if let Err(e) = ended.record(shared).await {
        tracing::error!(error = %e, "recording the handed-over session's end failed");
    }
    runs
}

/// Cluster mode: `node` was lost; its hibernated sessions, saved in the store, run on this
/// node from now on (hibernated, with what is left of their time), so their clients can
/// resume (on any node: the others hand the resumption here) and are pushed. A session that
/// cannot run here is recovered as after a crash. How many were restored.
pub async fn adopt(shared: &Arc<Shared>, node: &str, restore: Restore) -> usize {
    let prefix = format!("{node}~");
    let saved = match shared.db(move |s: &roles::Sessions| s.sm_sessions()).await {
        Ok(all) => all
            .into_iter()
            .filter(|s| s.record.id.starts_with(&prefix))
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, node, "reading the lost node's saved sessions failed");
            return 0;
        }
    };
    let mut restored = 0;
    let mut ended = Ended::default();
    let now = unix_millis();
    for s in saved {
        if s.record.expires_at <= now {
            ended
                .add(shared, &s.record, requeue(shared, &s.queue))
                .await;
        } else if run_again(shared, s, restore, &mut ended).await {
            restored += 1;
        }
    }
    if let Err(e) = ended.record(shared).await {
        tracing::error!(error = %e, "recording the lost node's ended sessions failed");
    }
    restored
}

/// A saved session's queue as stanzas to deliver again.
fn requeue(shared: &Arc<Shared>, queue: &[herald_store::SmQueued]) -> Vec<Routed> {
    queue.iter().filter_map(|q| unqueued(shared, q)).collect()
}

/// Runs a saved session again with `restore`, hibernated, as it was saved. One that cannot
/// run (no valid JID; refused: its resource is taken) ends instead ([`Ended`]). True when it
/// runs.
async fn run_again(
    shared: &Arc<Shared>,
    saved: SavedSession,
    restore: Restore,
    ended: &mut Ended,
) -> bool {
    let SavedSession { record, queue } = saved;
    let queue = requeue(shared, &queue);
    let Ok(jid) = FullJid::new(&format!("{}/{}", record.account, record.resource)) else {
        ended.add(shared, &record, queue).await;
        return false;
    };
    let state = SavedState::decode(&record.state);
    let r = Box::new(Restored {
        record,
        queue,
        state,
        jid,
    });
    match restore(shared.clone(), r) {
        Ok(()) => true,
        Err(r) => {
            ended.add(shared, &r.record, r.queue).await;
            false
        }
    }
}

/// Saved sessions that will not run again, recorded together once the caller is done:
/// their last h as tombstones, their rows deleted.
#[derive(Default)]
struct Ended {
    tombstones: Vec<(String, String, u32, i64)>,
    rows: Vec<String>,
}

impl Ended {
    /// Ends `record` now (see [`recover`]); its row goes at [`Ended::record`].
    async fn add(&mut self, shared: &Arc<Shared>, record: &SmSessionRecord, queue: Vec<Routed>) {
        recover(shared, record, queue, &mut self.tombstones).await;
        self.rows.push(record.id.clone());
    }

    /// Writes the tombstones and deletes the rows.
    async fn record(self, shared: &Arc<Shared>) -> Result<(), herald_store::StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let Ended { tombstones, rows } = self;
        shared
            .db(move |s: &roles::Sessions| {
                s.save_tombstones(&tombstones)?;
                for id in &rows {
                    s.delete_sm_session(id)?;
                }
                Ok(())
            })
            .await
    }
}

/// A saved session that will not run again: its last h becomes a tombstone and its queue is
/// handed on (offline storage, or nothing for messages the user's archive has).
async fn recover(
    shared: &Arc<Shared>,
    record: &SmSessionRecord,
    queue: Vec<Routed>,
    tombstones: &mut Vec<(String, String, u32, i64)>,
) {
    let now = Instant::now();
    shared.tombstone_restore(&record.id, &record.account, record.inbound_h, now);
    tombstones.push((
        record.account.clone(),
        record.id.clone(),
        record.inbound_h,
        unix_millis(),
    ));
    for o in queue {
        // Read from offline storage: the row is still there.
        if o.origin.offline_row().is_some() {
            continue;
        }
        crate::features::offline::keep(shared, &record.account, o).await;
    }
}

/// One unimportant push per user, `push.restart_wake_rate` per second at most: a restart
/// with many sleeping phones is not a thundering herd. Started once the listeners accept, so
/// a local app server (a component) can be connected for it.
pub async fn wake_paced(shared: Arc<Shared>, users: Vec<String>) {
    let rate = shared.cfg.push.restart_wake_rate.max(1);
    let every = Duration::from_secs(1) / rate;
    tracing::info!(
        users = users.len(),
        rate,
        "waking the devices of sessions lost in a crash"
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for user in users {
        tick.tick().await;
        if !shared.push.send_wait(PushEvent::Wake { user }).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_round_trips_and_damage_reads_as_defaults() {
        let s = SavedState {
            available: true,
            priority: -3,
            presence: Some("<presence xmlns='jabber:client'/>".into()),
            interested: true,
            carbons: true,
            directed: vec!["a@b".into()],
            push: Some(SavedPush {
                regs: vec![("push.x".into(), "n".into(), 4)],
                first_push: true,
            }),
        };
        let back = SavedState::decode(&s.encode());
        assert_eq!(back.priority, -3);
        assert_eq!(back.directed, ["a@b"]);
        let p = back.push_state();
        assert_eq!(p.regs[0].1, 4);
        assert!(p.first_push);
        let d = SavedState::decode("not json");
        assert!(!d.available);
        assert!(d.push_state().regs.is_empty());
        // Fields added later read as defaults from older records.
        assert!(SavedState::decode("{\"available\":true}").available);
    }
}
