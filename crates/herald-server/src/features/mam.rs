//! XEP-0313 message archive glue: archiving for both parties (durable before the message is
//! passed on, so before the sender's ack), the "archived for user" event (push rule b), the
//! query and preferences IQs, and retention.

use std::str::FromStr;
use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::ns;
use herald_proto::Element;
use herald_store::roles;
use herald_store::{ArchivedMessage, MamPrefs, StoreError};

use crate::features::ctx::{Effect, SessionCtx};
use crate::routing::durable::{Deferred, DEFERRED, MAX_DEFERRED};
use crate::routing::hooks;
use crate::stanza;
use crate::xep::{delay, mam as xm};
use crate::Shared;

async fn prefs(shared: &Arc<Shared>, user: &str) -> Arc<MamPrefs> {
    if let Some(p) = shared.mam_prefs.get(user) {
        return p;
    }
    let u = user.to_string();
    // On the blocking pool: the always/never lists are as long as the user made them.
    match shared.db(move |s: &roles::Archive| s.mam_prefs(&u)).await {
        Ok(p) => shared.mam_prefs.put(user, p),
        Err(e) => {
            tracing::error!(error = %e, "archive preference lookup failed");
            Arc::new(MamPrefs::default())
        }
    }
}

async fn prefs_allow(shared: &Arc<Shared>, user: &str, peer_bare: &str) -> bool {
    let prefs = prefs(shared, user).await;
    let server_default = shared.cfg.mam.default.as_str();
    let mode = prefs.default.as_deref().unwrap_or(server_default);
    let in_roster = if mode == "roster"
        && !prefs
            .always
            .iter()
            .chain(&prefs.never)
            .any(|j| j == peer_bare)
    {
        let (u, p) = (user.to_string(), peer_bare.to_string());
        shared
            .db(move |s: &roles::Roster| s.roster_item(&u, &p))
            .await
            .map(|i| i.is_some())
            .unwrap_or(false)
    } else {
        false
    };
    xm::should_archive(&prefs, server_default, peer_bare, in_roster)
}

/// An archive write decided and stamped, not yet committed.
pub struct Pending {
    user: String,
    msg: ArchivedMessage,
    with_full: String,
    info: Option<herald_push::StanzaInfo>,
    _inflight: InFlightGuard,
}

/// Archive writes per user that are stamped (maybe already delivered) but not yet committed,
/// so a query sees every message its user has received (read-your-writes) even though
/// delivery no longer waits for the disk.
#[derive(Default)]
pub struct InFlight {
    map: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    done: tokio::sync::Notify,
}

impl InFlight {
    fn count(&self, user: &str) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// Waits (at most `limit`) until none of `user`'s archive writes is in flight.
    pub async fn wait_idle(&self, user: &str, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.done.notified();
                if self.count(user) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

/// Counts one in-flight write until dropped (committed, failed or abandoned alike).
struct InFlightGuard {
    shared: Arc<Shared>,
    user: String,
}

impl InFlightGuard {
    fn new(shared: &Arc<Shared>, user: &str) -> InFlightGuard {
        *shared
            .archive_inflight
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_string())
            .or_default() += 1;
        InFlightGuard {
            shared: shared.clone(),
            user: user.to_string(),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let f = &self.shared.archive_inflight;
        let mut m = f.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
        drop(m);
        f.done.notify_waiters();
    }
}

/// A message that would be archived while the store's filesystem is nearly full (`[store]
/// min_free_bytes`): it is refused, not passed on unarchived, since the archive may be the
/// only durable copy behind the sender's ack.
#[derive(Debug)]
pub struct LowSpace;

/// Whether `user`'s archive has room for `bytes` more (`[mam] max_bytes_per_user`). Over
/// it the message is not archived for `user`, and nothing archived is evicted: the user's
/// history is theirs to keep, and a quota that deleted it would let any sender erase it.
/// Checked before the message is stamped, so a stamped message is always written: writes
/// in flight may take the total a little past the quota, never lose a message.
fn archive_has_room(shared: &Arc<Shared>, user: &str, bytes: usize) -> bool {
    let used = match shared.db_read(|s: &roles::Archive| s.archive_usage(user)) {
        Ok(u) => u.bytes,
        Err(e) => {
            tracing::error!(error = %e, "archive usage lookup failed");
            return true;
        }
    };
    let room = used.saturating_add(bytes as u64) <= shared.cfg.mam.max_bytes_per_user;
    if !room {
        tracing::debug!(user, used, "archive quota reached: message not archived");
    }
    room
}

/// Decides whether `user` archives a message it received and, if so, stamps its XEP-0359
/// stanza-id. The write itself is [`commit`], after delivery: the recipient does not wait for
/// the disk, while the sender's session still awaits the commit before it reads (and acks)
/// anything else. Over the user's archive quota the message is neither stamped nor archived
/// (it is then kept as with MAM off: offline storage or a sleeping session's saved queue).
pub async fn stamp_incoming(
    shared: &Arc<Shared>,
    user: &str,
    routing_id: u64,
    el: &mut Element,
) -> Result<Option<Pending>, LowSpace> {
    if !xm::is_archivable(el) || shared.account_gone(user) {
        return Ok(None);
    }
    let Some(from) = stanza::from(el).ok().flatten() else {
        return Ok(None);
    };
    if !prefs_allow(shared, user, from.to_bare().as_str()).await {
        return Ok(None);
    }
    if shared.space.is_low() {
        return Err(LowSpace);
    }
    let id = xm::new_archive_id();
    xm::stamp_stanza_id(el, user, &id);
    let xml = match stanza::to_xml(el) {
        Some(x) if archive_has_room(shared, user, x.len()) => x,
        _ => {
            xm::unstamp_stanza_id(el, user);
            return Ok(None);
        }
    };
    Ok(Some(Pending {
        user: user.to_string(),
        msg: ArchivedMessage {
            id,
            with: from.to_bare().to_string(),
            timestamp: delay::now_micros(),
            stanza_xml: xml,
        },
        with_full: from.to_string(),
        info: Some(shared.push.info(routing_id, el)),
        _inflight: InFlightGuard::new(shared, user),
    }))
}

/// Decides whether `user` archives a message it sent (not over its archive quota: then the
/// message is only sent, as with MAM off).
pub async fn stamp_outgoing(
    shared: &Arc<Shared>,
    user: &str,
    to: &Jid,
    el: &Element,
) -> Result<Option<Pending>, LowSpace> {
    if !xm::is_archivable(el) || to.to_bare().as_str() == user || shared.account_gone(user) {
        return Ok(None);
    }
    if !prefs_allow(shared, user, to.to_bare().as_str()).await {
        return Ok(None);
    }
    if shared.space.is_low() {
        return Err(LowSpace);
    }
    let Some(xml) = stanza::to_xml(el) else {
        return Ok(None);
    };
    if !archive_has_room(shared, user, xml.len()) {
        return Ok(None);
    }
    Ok(Some(Pending {
        user: user.to_string(),
        msg: ArchivedMessage {
            id: xm::new_archive_id(),
            with: to.to_bare().to_string(),
            timestamp: delay::now_micros(),
            stanza_xml: xml,
        },
        with_full: to.to_string(),
        info: None,
        _inflight: InFlightGuard::new(shared, user),
    }))
}

/// Commits an archive write (group-committed with concurrent ones); a message archived for
/// its recipient then fires push rule b.
pub async fn commit(shared: &Arc<Shared>, p: Pending) {
    let Pending {
        user,
        msg,
        with_full,
        info,
        _inflight,
    } = p;
    // Still counted in flight here: an account removal either sees this write (and waits for
    // it before deleting the account's data) or is seen by this check.
    if shared.account_gone(&user) {
        return;
    }
    let (tx, committed) = tokio::sync::oneshot::channel();
    // The push event needs the account after the write consumed it: copied only then.
    let push = info.map(|i| (shared.clone(), user.clone(), i));
    let done: crate::group_commit::Done = Box::new(move |r| {
        match r {
            Ok(()) => {
                if let Some((shared, user, stanza)) = push {
                    hooks::notify(
                        &shared.hooks.archived,
                        &shared,
                        hooks::Archived { user, stanza },
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "archiving failed"),
        }
        // Committed: a query of this user's archive may now run (read-your-writes).
        drop(_inflight);
        let _ = tx.send(());
    });
    match DEFERRED.try_with(Deferred::clone) {
        Ok(d) => {
            // Bounded: a client that never asks for acks cannot pile up commits.
            while d.outstanding() >= MAX_DEFERRED {
                match d.pop_oldest() {
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => break,
                }
            }
            shared.archive.submit(user, msg, with_full, done).await;
            d.push(committed);
        }
        Err(_) => {
            shared.archive.submit(user, msg, with_full, done).await;
            let _ = committed.await;
        }
    }
}

/// Bounds on archive queries: the admission rules (per account, in all) and one permit per
/// archive reader connection, so at most that many queries occupy blocking threads while the
/// other admitted ones wait here, off the blocking pool.
pub struct Queries {
    admission: std::sync::Mutex<xm::Admission>,
    readers: tokio::sync::Semaphore,
}

impl Queries {
    /// Bounds from `[mam]`.
    pub fn new(cfg: &crate::config::MamConfig) -> Queries {
        Queries {
            admission: std::sync::Mutex::new(xm::Admission::new(
                cfg.max_concurrent_per_user,
                cfg.max_concurrent,
            )),
            readers: tokio::sync::Semaphore::new(cfg.readers.max(1)),
        }
    }

    /// Queries of `user` admitted and not yet answered.
    pub fn running(&self, user: &str) -> usize {
        self.lock().running(user)
    }

    /// The permits an admitted query takes to read (one per archive reader). Tests hold them
    /// to keep queries in flight.
    pub fn readers(&self) -> &tokio::sync::Semaphore {
        &self.readers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, xm::Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one query of `user` (also the group chat feature's room queries, counted
    /// against the asker).
    pub(crate) fn admit(&self, user: &str) -> Result<Admitted<'_>, xm::Refusal> {
        self.lock().admit(user)?;
        Ok(Admitted {
            queries: self,
            user: user.to_owned(),
        })
    }
}

/// One admitted query; released when dropped, answered or not (the session may end while it
/// waits).
pub(crate) struct Admitted<'a> {
    queries: &'a Queries,
    user: String,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.queries.lock().release(&self.user);
    }
}

fn err(el: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    stanza::error(el, cond, text).unwrap_or_else(|| stanza::iq_result(el, None))
}

/// A MAM IQ (query, form, prefs) from the session's client. Results are written to the
/// client before the returned `<fin/>`.
pub async fn handle_iq(session: &mut SessionCtx, el: &Element, payload: &Element) -> Element {
    let shared = session.shared.clone();
    let user = session.bare.clone();
    let pns = if payload.has_ns(ns::MAM1) {
        ns::MAM1
    } else {
        ns::MAM
    };
    if payload.name() == "prefs" {
        if stanza::typ(el) == "get" {
            let u = user.clone();
            return match shared.db(move |s: &roles::Archive| s.mam_prefs(&u)).await {
                Ok(p) => stanza::iq_result(
                    el,
                    Some(xm::prefs_element(pns, &p, &shared.cfg.mam.default)),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "reading archive preferences failed");
                    crate::features::ctx::store_failed(el, &e)
                }
            };
        }
        let prefs: MamPrefs = match xm::parse_prefs(payload) {
            Ok(p) => p,
            Err(c) => return err(el, c, None),
        };
        let (u, p) = (user.clone(), prefs.clone());
        let r = shared
            .db(move |s: &roles::Archive| s.set_mam_prefs(&u, &p))
            .await;
        shared.mam_prefs.invalidate(&user);
        shared.cluster_invalidate(crate::Cached::MamPrefs, &user);
        return match r {
            Ok(()) => stanza::iq_result(
                el,
                Some(xm::prefs_element(pns, &prefs, &shared.cfg.mam.default)),
            ),
            Err(e) => {
                tracing::error!(error = %e, "storing archive preferences failed");
                crate::features::ctx::store_failed(el, &e)
            }
        };
    }
    if payload.name() != "query" {
        return err(el, StanzaErrorCondition::ServiceUnavailable, None);
    }
    if stanza::typ(el) == "get" {
        return stanza::iq_result(el, Some(xm::query_form(pns)));
    }
    let limits = xm::QueryLimits {
        max_page: shared.cfg.mam.max_page,
        max_ids: shared.cfg.mam.max_ids,
        max_count: shared.cfg.mam.max_count,
    };
    let req = match xm::parse_query(payload, &limits) {
        Ok(r) => r,
        Err((c, text)) => return err(el, c, Some(&text)),
    };
    // Read-your-writes: what this user received or sent is committed before we look.
    shared
        .archive_inflight
        .wait_idle(&user, std::time::Duration::from_secs(5))
        .await;
    let _admitted = match shared.mam_queries.admit(&user) {
        Ok(a) => a,
        Err(refusal) => {
            return stanza::error_typed(
                el,
                StanzaErrorCondition::ResourceConstraint,
                ErrorType::Wait,
                Some(refusal.text()),
            )
            .unwrap_or_else(|| stanza::iq_result(el, None))
        }
    };
    // Never closed, so acquiring cannot fail; if it did, the query runs unthrottled.
    let _reader = shared.mam_queries.readers.acquire().await.ok();
    let (u, q) = (user.clone(), req.query.clone());
    let page = match shared
        .db(move |s: &roles::Archive| s.query_archive(&u, &q))
        .await
    {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            // XEP-0313 §4.1.3 / XEP-0059 §2.6: unknown paging id.
            return err(
                el,
                StanzaErrorCondition::ItemNotFound,
                Some("no such archive id"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "archive query failed");
            return crate::features::ctx::store_failed(el, &e);
        }
    };
    let to = session.jid.to_string();
    let mut items = page.items.clone();
    if req.flip {
        items.reverse();
    }
    let mut results = Vec::with_capacity(items.len());
    for m in &items {
        let Ok(original) = Element::from_str(&m.stanza_xml) else {
            tracing::error!(id = %m.id, "unreadable archived message skipped");
            continue;
        };
        results.push(xm::result_message(
            &to,
            req.queryid.as_deref(),
            req.ns,
            &m.id,
            m.timestamp,
            original,
        ));
    }
    session.effects.push(Effect::Write(results));
    let first = page.items.first().map(|m| m.id.as_str());
    let last = page.items.last().map(|m| m.id.as_str());
    stanza::iq_result(
        el,
        Some(xm::fin(req.ns, first, last, page.count, page.complete)),
    )
}

/// Deletes the archived messages older than `cutoff` in transactions of at most `[mam]
/// purge_batch` rows, letting the archive writer and everything else at the store in
/// between, so a year's worth of expired messages never holds the one writer for long.
async fn purge_archive(shared: &Arc<Shared>, cutoff: i64) -> usize {
    let batch = shared.cfg.mam.purge_batch;
    let mut deleted = 0;
    loop {
        match shared
            .db(move |s: &roles::Archive| s.purge_archive_before(cutoff, batch))
            .await
        {
            Ok(n) => {
                deleted += n;
                if n < batch {
                    return deleted;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "archive retention failed");
                return deleted;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes archived messages older than `[mam] max_age` and saved tombstones older than
/// `stream_management.tombstone_ttl`, once now and then hourly.
pub async fn retention(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let cutoff =
            delay::now_micros() - shared.cfg.mam.max_age.0.as_micros().min(i64::MAX as u128) as i64;
        let deleted = purge_archive(&shared, cutoff).await;
        if deleted > 0 {
            tracing::info!(deleted, "archive retention");
        }
        // Saved tombstones (XEP-0198 `h` of ended sessions) are only useful for their TTL.
        let ttl = shared.cfg.stream_management.tombstone_ttl.0;
        let before = (crate::xep::delay::now_micros() / 1000)
            .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        if let Err(e) = shared
            .db(move |s: &roles::Sessions| {
                herald_store::SessionStore::purge_tombstones_before(s, before)
            })
            .await
        {
            tracing::error!(error = %e, "purging saved tombstones failed");
        }
        // Removed push registrations are shown by `herald push list` for their retention.
        let keep = i64::try_from(shared.cfg.push.removed_retention.0.as_secs()).unwrap_or(i64::MAX);
        let before = ((crate::xep::delay::now_micros() / 1000) / 1000).saturating_sub(keep);
        if let Err(e) = shared
            .db(move |s: &roles::Push| {
                herald_store::PushStore::purge_push_removals_before(s, before)
            })
            .await
        {
            tracing::error!(error = %e, "purging removed push registrations failed");
        }
        // Expired XEP-0484 FAST tokens authenticate nobody any more. They are kept one more
        // token lifetime, so a client that comes back with one soon after its expiry still
        // hears `credentials-expired` (XEP-0484 §4) and falls back to its password, rather
        // than a `not-authorized` that counts as a guess.
        let life = i64::try_from(shared.cfg.fast.token_lifetime.0.as_millis()).unwrap_or(i64::MAX);
        let before = (crate::xep::delay::now_micros() / 1000).saturating_sub(life);
        if let Err(e) = shared
            .db(move |s: &roles::FastTokens| s.purge_expired_fast_tokens(before))
            .await
        {
            tracing::error!(error = %e, "purging expired FAST tokens failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
