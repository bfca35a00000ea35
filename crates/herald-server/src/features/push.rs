//! Push glue (XEP-0357): one task owns herald-push's pure `Engine`, receives the events the
//! sessions, the offline store and the archive fire, and carries out the engine's actions —
//! publishes through the router, hibernation deadlines to session tasks, and persistence.
//! Every rule lives in herald-push; nothing here decides whether to push. It also runs
//! `herald push test` (`herald_push::diag::PushTests` keeps the runs; this task sends each
//! finished run's answer on the requester's [`TestReply`] oneshot).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_proto::Element;
use herald_push::diag::{PushTests, BUSY};
use herald_push::engine::{Action, Engine, RegKey, Registration, Removal, SessionId};
use herald_store::push_stats::PushStatsWriter;
use herald_store::roles;
use herald_store::{PushRegistration, PushStatsUpdate, RemovalNote, StoreError};
use tokio::sync::mpsc;

use crate::routing::msg::{PushEvent, PushStats, RoomMember, SessionMsg, SessionTx, TestReply};
use crate::{routing, routing::hooks, Shared};

// Observers (registered in `standard_hooks`): what the server reports, as events for the
// push task. Nothing here decides anything; the engine does.

/// Rule b.
pub fn on_archived(shared: &Shared, ev: hooks::Archived) {
    if shared.cluster_forward_push('a', &ev.user, &ev.stanza) {
        return;
    }
    shared.push.send(PushEvent::Archived {
        user: ev.user,
        stanza: ev.stanza,
    });
}

/// XEP-0490: `user` published a displayed marker for `chat` pointing at the message with
/// archive id `stanza_id` (a `<stanza-id by=user>`). The push rules compare times, so the
/// marker becomes "displayed up to" the server time just before the chat's next archived
/// message (or now, when the marked message is the chat's latest): a message's push time is
/// taken when it is queued, a little after its archive stamp, so the marked message itself
/// must be covered too. A marker whose message is not in the user's archive (another
/// entity's stanza-id, or one already purged) is left to the clients (RULES.md §14).
pub async fn on_displayed(shared: &Arc<Shared>, user: &str, chat: &str, stanza_id: &str) {
    let q = herald_store::ArchiveQuery {
        with: Some(chat.to_owned()),
        after_id: Some(stanza_id.to_owned()),
        max: 1,
        ..Default::default()
    };
    // A client with the chat open marks a message displayed as soon as it arrives, which
    // can be before the archive's group commit wrote it: wait for the writes queued so far.
    shared.archive.flush().await;
    let owner = user.to_owned();
    let page = shared
        .db(move |s: &roles::Archive| s.query_archive(&owner, &q))
        .await;
    let upto = match page {
        Ok(p) => match p.items.first() {
            Some(next) => next.timestamp.saturating_sub(1),
            None => herald_xep::delay::now_micros(),
        },
        Err(StoreError::NotFound) => return,
        Err(e) => {
            tracing::warn!(error = %e, user, "displayed marker lookup failed");
            return;
        }
    };
    shared.push.send(PushEvent::Displayed {
        user: user.to_owned(),
        chat: chat.to_owned(),
        upto,
    });
    if let Some(c) = shared.cluster.get() {
        c.share_state(format!("d\n{user}\n{chat}\n{upto}"));
    }
}

/// XEP-0490: an item of the account's `urn:xmpp:mds:displayed:0` node is a displayed marker;
/// it counts for push only when its stanza-id is the account's own archive's (`by` = the
/// account), the only ids [`on_displayed`] can resolve. Other nodes pass through.
pub fn on_pep_published(
    shared: &Arc<Shared>,
    ev: hooks::PepPublished,
) -> hooks::Fut<'_, Option<hooks::PepPublished>> {
    Box::pin(async move {
        if ev.node != herald_proto::ns::MDS {
            return Some(ev);
        }
        if let Some(d) = herald_xep::mds::displayed(&ev.id, &ev.payload) {
            if d.by == ev.user {
                on_displayed(shared, &ev.user, &d.chat, &d.stanza_id).await;
            }
        }
        Some(ev)
    })
}

/// Rule c.
pub fn on_stored_offline(shared: &Shared, ev: hooks::StoredOffline) {
    if shared.cluster_forward_push('o', &ev.user, &ev.stanza) {
        return;
    }
    shared.push.send(PushEvent::StoredOffline {
        user: ev.user,
        stanza: ev.stanza,
    });
}

/// The groupchat twin of rule c.
pub fn on_delivery_failed(shared: &Shared, ev: hooks::DeliveryFailed) {
    if shared.cluster_forward_push('g', &ev.user, &ev.stanza) {
        return;
    }
    shared.push.send(PushEvent::GroupchatUnrouted {
        user: ev.user,
        stanza: ev.stanza,
    });
}

/// Rule d (RULES.md §4a): the room `room` broadcast `message` (from the occupant whose real
/// bare JID is `sender`) and `members` (local members) have no session joined in it, so
/// nothing else tells their phones. The XEP-0402 bookmarks of the room of those who have a
/// push registration are read (one store call for all of them; a bookmark changed a moment
/// ago is read as it is now, so there is no cache to invalidate) and the push task decides
/// for each. Unimportant messages (subject changes, chat states) are not looked at: rule d
/// never pushes them.
pub async fn on_room_message(
    shared: &Arc<Shared>,
    room: &str,
    members_only: bool,
    sender: &str,
    message: &Element,
    members: Vec<String>,
) {
    if members.is_empty() {
        return;
    }
    let stanza = shared.push.info(shared.next_id(), message);
    if !stanza.importance.is_important() {
        return;
    }
    // Only members with a push registration can be woken; leaving the others out spares the
    // push task loading their (empty) registrations for every message.
    let with_push = shared
        .db(move |s: &roles::Push| {
            let mut keep = Vec::new();
            for m in members {
                if !s.push_registrations(&m)?.is_empty() {
                    keep.push(m);
                }
            }
            Ok(keep)
        })
        .await;
    let members = match with_push {
        Ok(m) if m.is_empty() => return,
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, room, "reading members' push registrations failed");
            return;
        }
    };
    let item = room.to_owned();
    let read = shared
        .db(move |s: &roles::Pep| {
            let node = herald_xep::bookmarks::NODE;
            Ok(members
                .into_iter()
                .map(|m| {
                    // A bookmark that cannot be read counts as none: the member is not woken
                    // (the room's archive still has the message).
                    let xml = s
                        .pep_items(&m, node, std::slice::from_ref(&item), Some(1))
                        .ok()
                        .and_then(|v| v.into_iter().next())
                        .map(|i| i.xml);
                    (m, xml)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let read = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, room, "reading members' bookmarks failed");
            return;
        }
    };
    let members = read
        .into_iter()
        .map(|(bare, xml)| {
            let prefs = xml
                .and_then(|x| Element::from_str(&x).ok())
                .and_then(|c| herald_push::groupchat::bookmark_prefs(&c));
            let bookmarked = prefs.is_some();
            let (nick, setting) = prefs.unwrap_or_default();
            RoomMember {
                bare,
                bookmarked,
                nick,
                setting,
            }
        })
        .collect();
    shared.push.send(PushEvent::RoomMessage {
        room: room.to_owned(),
        members_only,
        sender: sender.to_owned(),
        message: message.clone(),
        stanza,
        members,
    });
}

/// Resets the counts of the device's registrations.
pub fn on_session_started(shared: &Shared, ev: hooks::SessionStarted) {
    shared.push.send(PushEvent::SessionStarted {
        user: ev.user,
        session: ev.session,
        resource: ev.resource,
        tx: ev.tx,
        by_client_id: ev.by_client_id,
    });
}

/// Rule a: the connection died.
pub fn on_session_hibernated(shared: &Shared, ev: hooks::SessionHibernated) {
    shared.push.send(PushEvent::HibernationStarted {
        session: ev.session,
        unacked: ev.unacked,
    });
}

/// Rule a: pushes stop.
pub fn on_session_resumed(shared: &Shared, ev: hooks::SessionResumed) {
    shared.push.send(PushEvent::Resumed {
        session: ev.session,
    });
}

/// The engine forgets the session.
pub fn on_session_ended(shared: &Shared, ev: hooks::SessionEnded) {
    shared.push.send(PushEvent::SessionEnded {
        session: ev.session,
    });
}

/// The recorded reason of a registration the client disabled (XEP-0357 §6).
pub const DISABLED_BY_CLIENT: &str = "disabled by the client";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Converts a stored registration.
pub fn from_store(r: &PushRegistration) -> Registration {
    Registration {
        key: RegKey {
            jid: r.jid.clone(),
            node: r.node.clone(),
        },
        publish_options: r
            .publish_options_xml
            .as_deref()
            .and_then(|x| Element::from_str(x).ok()),
        enabled_at: r.enabled_at,
        resource: r.resource.clone(),
        lang: r.lang.clone(),
        error_count: r.error_count,
    }
}

fn to_store(user: &str, r: &Registration) -> PushRegistration {
    PushRegistration {
        user: user.to_string(),
        jid: r.key.jid.clone(),
        node: r.key.node.clone(),
        publish_options_xml: r.publish_options.as_ref().map(String::from),
        enabled_at: r.enabled_at,
        resource: r.resource.clone(),
        lang: r.lang.clone(),
        error_count: r.error_count,
        last_push: None,
        last_result: None,
    }
}

/// The push task, supervised: if it panics the error is logged and it starts again with a
/// fresh engine on the same event channel (registrations load again from the store as users'
/// events arrive; what the old engine held in memory — pending retries, the sessions it
/// knew — is lost). It ends when the task ends normally (`Stop`, channel closed).
pub async fn run(shared: Arc<Shared>, rx: mpsc::UnboundedReceiver<PushEvent>) {
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    supervise("push task", RESTART_DELAY, || {
        tokio::spawn(run_engine(shared.clone(), rx.clone()))
    })
    .await;
}

/// Pause before restarting a task that panicked.
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs the task `spawn` starts until it ends other than by panicking, starting it again
/// (after `delay`) each time it panics. How many runs panicked.
async fn supervise(
    what: &'static str,
    delay: std::time::Duration,
    mut spawn: impl FnMut() -> tokio::task::JoinHandle<()>,
) -> u32 {
    let mut panics = 0u32;
    loop {
        match spawn().await {
            Err(e) if e.is_panic() => {
                panics = panics.saturating_add(1);
                tracing::error!(task = what, panics, "task panicked; restarting it");
                tokio::time::sleep(delay).await;
            }
            _ => return panics,
        }
    }
}

/// One run of the push task; holds the event channel while it runs (a run that panicked
/// releases it for the next).
async fn run_engine(
    shared: Arc<Shared>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<PushEvent>>>,
) {
    let mut rx = rx.lock_owned().await;
    let mut engine = Engine::new(shared.cfg.push_engine());
    for (domain, c) in shared.cfg.host_push_engines() {
        engine.set_host_config(&domain, c);
    }
    engine.set_id_prefix(shared.push.id_prefix().to_string());
    let mut sessions: HashMap<SessionId, (String, SessionTx)> = HashMap::new();
    let mut stats = PushStatsWriter::new(shared.store.clone());
    let mut tests = PushTests::<TestReply>::default();
    let mut timing = Timing::default();
    // Not stopped by the shutdown signal: sessions ask it for their push state while they
    // are saved; `Running::stop` sends `Stop` once they are done.
    loop {
        // Test publishes time out with the engine's own reply timer (same instant).
        let deadline = match (engine.next_deadline(), tests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(tokio::time::Instant::from_std);
        let flush_at = stats.due();
        let ev = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    shared.push.received(&ev);
                    Some(ev)
                }
                None => return,
            },
            _ = async { match flush_at { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                stats.flush().await;
                continue;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => None,
        };
        let now = Instant::now();
        timing.origin = ev.as_ref().and_then(PushEvent::stanza_at);
        let answering = match &ev {
            Some(PushEvent::Reply { iq_id, .. }) if engine.pending_key(iq_id).is_some() => {
                Some(iq_id.clone())
            }
            _ => None,
        };
        let actions = match ev {
            None => {
                let actions = engine.poll(now, unix_now());
                for (reply, answer) in tests.expire(now) {
                    let _ = reply.send(answer);
                }
                actions
            }
            Some(PushEvent::Stop { reply }) => {
                stats.sync().await;
                let _ = reply.send(());
                return;
            }
            Some(ev) => {
                handle(
                    &shared,
                    &mut engine,
                    &mut sessions,
                    &mut stats,
                    &mut tests,
                    ev,
                    now,
                )
                .await
            }
        };
        // The engine took the answer (it came from the app server the publish went to): the
        // publish is no longer pending.
        if let Some(id) = answering.filter(|id| engine.pending_key(id).is_none()) {
            if let Some(t) = timing.sent.remove(&id) {
                shared
                    .metrics
                    .push_publish_to_reply
                    .observe(now.saturating_duration_since(t));
            }
        }
        execute(&shared, &sessions, &mut stats, &mut timing, actions).await;
        timing.forget_unanswered(&engine);
    }
}

/// What the push latency histograms need between events: when each publish in flight was
/// routed, and when the event being handled reached the push path.
#[derive(Default)]
struct Timing {
    /// Publish id → when it was routed. Ids the engine no longer waits for (timed out,
    /// dropped with their registration) are forgotten by [`Timing::forget_unanswered`].
    sent: HashMap<String, Instant>,
    /// The current event's stanza time (unix micros), for publishes it causes.
    origin: Option<i64>,
}

impl Timing {
    /// Bounds `sent` by the engine's own bound on publishes in flight: when it holds clearly
    /// more ids than the engine waits for, the others are dropped (amortised: rarely a scan).
    fn forget_unanswered(&mut self, engine: &Engine) {
        if self.sent.len() > 2 * engine.pending_len() + 64 {
            self.sent.retain(|id, _| engine.pending_key(id).is_some());
        }
    }
}

async fn ensure_loaded(
    shared: &Arc<Shared>,
    engine: &mut Engine,
    stats: &mut PushStatsWriter,
    user: &str,
) {
    if engine.is_loaded(user) {
        return;
    }
    stats.sync_for(user).await;
    let u = user.to_string();
    // On the blocking pool: each registration carries its client's publish-options form.
    match shared
        .db(move |s: &roles::Push| s.push_registrations(&u))
        .await
    {
        Ok(regs) => engine.load_user(user, regs.iter().map(from_store).collect()),
        Err(e) => tracing::error!(error = %e, %user, "loading push registrations failed"),
    }
}

async fn handle(
    shared: &Arc<Shared>,
    engine: &mut Engine,
    sessions: &mut HashMap<SessionId, (String, SessionTx)>,
    stats: &mut PushStatsWriter,
    tests: &mut PushTests<TestReply>,
    ev: PushEvent,
    now: Instant,
) -> Vec<Action> {
    match ev {
        PushEvent::SessionStarted {
            user,
            session,
            resource,
            tx,
            by_client_id,
        } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.session_started(&user, session, &resource, now);
            // RULES.md §15: the device is back under its client id; its registrations
            // follow it without a new <enable/>.
            let actions = if by_client_id {
                engine.reattach_device(&user, session, &resource, now)
            } else {
                Vec::new()
            };
            sessions.insert(session, (user, tx));
            actions
        }
        PushEvent::SessionEnded { session } => {
            sessions.remove(&session);
            engine.session_ended(session, now)
        }
        PushEvent::Enable {
            user,
            session,
            reg,
            reply,
        } => {
            ensure_loaded(shared, engine, stats, &user).await;
            // Store first: a failure must change nothing (XEP-0357 via the rule).
            stats.sync().await;
            let rec = to_store(&user, &reg);
            match shared
                .db(move |s: &roles::Push| s.upsert_push_registration(&rec))
                .await
            {
                Ok(()) => {
                    let key = reg.key.clone();
                    let actions = engine.enable(&user, session, reg, now);
                    // The evictions this enable causes are durable before the client hears
                    // "result" (what it is told must match the store); the registration
                    // itself is stored already.
                    let actions = actions
                        .into_iter()
                        .filter(|a| {
                            !matches!(a, Action::SaveRegistration { reg, .. } if reg.key == key)
                        })
                        .collect();
                    // Registrations and removals only, no publish: nothing to time.
                    execute(shared, sessions, stats, &mut Timing::default(), actions).await;
                    announce(shared, &user);
                    let _ = reply.send(Ok(()));
                    Vec::new()
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    Vec::new()
                }
            }
        }
        PushEvent::Disable {
            user,
            jid,
            node,
            reply,
        } => {
            ensure_loaded(shared, engine, stats, &user).await;
            stats.sync().await;
            let (u, j, n) = (user.clone(), jid.clone(), node.clone());
            let note = RemovalNote {
                removed_at: unix_now(),
                reason: DISABLED_BY_CLIENT,
                failed_with: None,
            };
            // Recorded for `herald push list` with who removed it; the engine's own removal
            // that follows finds nothing left to delete or record.
            let stored = shared
                .db(move |s: &roles::Push| {
                    s.remove_push_registrations(&u, &j, n.as_deref(), &note)
                        .map(|_| ())
                })
                .await;
            match stored {
                Ok(()) => {
                    let actions = engine.disable(&user, &jid, node.as_deref(), now);
                    execute(shared, sessions, stats, &mut Timing::default(), actions).await;
                    announce(shared, &user);
                    let _ = reply.send(Ok(()));
                    Vec::new()
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    Vec::new()
                }
            }
        }
        PushEvent::Detach {
            user,
            jid,
            node,
            reply,
        } => {
            ensure_loaded(shared, engine, stats, &user).await;
            let actions = engine.disable(&user, &jid, node.as_deref(), now);
            announce(shared, &user);
            let _ = reply.send(());
            actions
        }
        PushEvent::AckDelayed { session, unacked } => engine.ack_delayed(session, &unacked, now),
        PushEvent::Acked { session } => {
            engine.acked(session, now);
            Vec::new()
        }
        PushEvent::HibernationStarted { session, unacked } => {
            engine.hibernation_started(session, &unacked, now)
        }
        PushEvent::StanzaQueued { session, stanza } => engine.stanza_queued(session, &stanza, now),
        PushEvent::Resumed { session } => engine.resumed(session, now),
        PushEvent::Archived { user, stanza } => {
            ensure_loaded(shared, engine, stats, &user).await;
            // Cluster mode: the user's sessions on other nodes (their nodes apply rule a).
            let elsewhere: Vec<String> = shared
                .router
                .resources(&user)
                .into_iter()
                .filter(|r| !r.tx.is_local())
                .map(|r| r.resource)
                .collect();
            engine.archived_for_in_cluster(&user, &stanza, &elsewhere, now)
        }
        PushEvent::Reload { user } => {
            if engine.is_loaded(&user) {
                let u = user.clone();
                match shared
                    .db(move |s: &roles::Push| s.push_registrations(&u))
                    .await
                {
                    Ok(regs) => engine.reload_user(&user, regs.iter().map(from_store).collect()),
                    Err(e) => {
                        tracing::error!(error = %e, %user, "reloading push registrations failed")
                    }
                }
            }
            Vec::new()
        }
        PushEvent::StoredOffline { user, stanza } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.stored_offline(&user, &stanza, now)
        }
        PushEvent::Displayed { user, chat, upto } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.displayed(&user, &chat, upto, now)
        }
        PushEvent::GroupchatUnrouted { user, stanza } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.groupchat_unrouted(&user, &stanza, now)
        }
        PushEvent::RoomMessage {
            room,
            members_only,
            sender,
            message,
            stanza,
            members,
        } => {
            let msg = herald_push::RoomMessage {
                room: &room,
                members_only,
                sender: &sender,
                message: &message,
            };
            let mut out = Vec::new();
            for m in &members {
                ensure_loaded(shared, engine, stats, &m.bare).await;
                let member = herald_push::groupchat::Member {
                    bare: &m.bare,
                    nick: m.nick.as_deref(),
                    // The room named only members with no session in it.
                    joined: false,
                    bookmarked: m.bookmarked,
                    setting: m.setting,
                };
                out.extend(engine.room_message(&member, &msg, &stanza, now).1);
            }
            out
        }
        PushEvent::Test {
            user,
            jid,
            node,
            reply,
        } => {
            if tests.is_full() {
                let _ = reply.send(Err(BUSY.into()));
                return Vec::new();
            }
            ensure_loaded(shared, engine, stats, &user).await;
            let actions = engine.test_push(&user, jid.as_deref(), node.as_deref(), now);
            let timeout = engine.config_for(&user).reply_timeout;
            if let Some((reply, answer)) = tests.start(&actions, reply, now, timeout) {
                let _ = reply.send(answer);
            }
            actions
        }
        PushEvent::Ping { user, reply } => {
            ensure_loaded(shared, engine, stats, &user).await;
            let actions = engine.ping(&user, now);
            let _ = reply.send(
                actions
                    .iter()
                    .filter(|a| matches!(a, Action::Publish { .. }))
                    .count(),
            );
            actions
        }
        PushEvent::SessionPush { session, reply } => {
            let _ = reply.send(engine.session_push(session).filter(|p| !p.regs.is_empty()));
            Vec::new()
        }
        PushEvent::Restore {
            user,
            session,
            tx,
            push,
            expiry,
        } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.restore_session(&user, session, push, expiry, now);
            sessions.insert(session, (user, tx));
            Vec::new()
        }
        PushEvent::Wake { user } => {
            ensure_loaded(shared, engine, stats, &user).await;
            engine.ping(&user, now)
        }
        PushEvent::Stop { reply } => {
            // Handled by the loop; here only if nested.
            let _ = reply.send(());
            Vec::new()
        }
        PushEvent::Stats { reply } => {
            // A barrier for what the store shows too: the statistics so far are written.
            stats.sync().await;
            let _ = reply.send(PushStats {
                pending: engine.pending_len(),
                outcomes: engine.outcomes(),
            });
            Vec::new()
        }
        PushEvent::Reply {
            iq_id,
            from,
            reply,
            error_type,
        } => {
            // RFC 6120 §8.2.3: the answer comes from the entity the request went to. Anyone
            // else who learnt a publish id (ids are sequential, and a user's own app server
            // sees them) could otherwise reset, or run up to removal, another user's
            // registration.
            let genuine = engine
                .pending_key(&iq_id)
                .is_some_and(|k| herald_push::reply::answers_for(&from, &k.jid));
            if !genuine {
                tracing::debug!(%iq_id, %from, "push reply from the wrong entity ignored");
                return Vec::new();
            }
            if let Some((to, answer)) = tests.answered(&iq_id, &reply, error_type, now) {
                let _ = to.send(answer);
            }
            engine.reply(&iq_id, reply, now, unix_now())
        }
    }
}

async fn execute(
    shared: &Arc<Shared>,
    sessions: &HashMap<SessionId, (String, SessionTx)>,
    stats: &mut PushStatsWriter,
    timing: &mut Timing,
    actions: Vec<Action>,
) {
    for a in actions {
        match a {
            Action::Publish {
                iq_id,
                user,
                key,
                iq,
            } => {
                tracing::debug!(%iq_id, %user, app = %key.jid, node = %key.node, "push publish");
                count(&shared.metrics.push_publishes);
                timing.sent.insert(iq_id.clone(), Instant::now());
                if let Some(at) = timing.origin {
                    let waited = herald_xep::delay::now_micros().saturating_sub(at);
                    shared
                        .metrics
                        .push_event_to_publish
                        .observe_micros(u64::try_from(waited).unwrap_or(0));
                }
                // A local app-server component that is not connected: the fact goes to
                // herald-push, which says how it counts (reply::unreachable).
                let domain = key
                    .jid
                    .rsplit('@')
                    .next()
                    .unwrap_or(&key.jid)
                    .split('/')
                    .next()
                    .unwrap_or("");
                if let routing::Dest::Component(d) = routing::dest(shared, domain) {
                    let elsewhere = match shared.cluster.get() {
                        Some(c) if shared.router.component(&d).is_none() => {
                            c.component_link(&d).await.is_some()
                        }
                        _ => false,
                    };
                    if shared.router.component(&d).is_none() && !elsewhere {
                        let (reply, error_type) = herald_push::reply::unreachable();
                        shared.push.send(PushEvent::Reply {
                            iq_id,
                            from: key.jid.clone(),
                            reply,
                            error_type,
                        });
                        continue;
                    }
                }
                routing::route(shared, iq).await;
            }
            Action::SetSessionExpiry { session, at } => {
                if let Some((_, tx)) = sessions.get(&session) {
                    let _ = tx.send_control(SessionMsg::SetExpiry(at));
                }
            }
            Action::SaveRegistration { user, reg } => {
                stats.sync().await;
                let rec = to_store(&user, &reg);
                log_store(
                    shared
                        .db(move |s: &roles::Push| s.upsert_push_registration(&rec))
                        .await,
                );
            }
            Action::DeleteRegistration { user, key, reason } => {
                count(match reason {
                    Removal::Errors(_) => &shared.metrics.push_removed_errors,
                    Removal::Evicted => &shared.metrics.push_removed_evicted,
                    Removal::Disabled => &shared.metrics.push_removed_disabled,
                });
                tracing::info!(%user, app = %key.jid, node = %key.node, %reason, "push registration removed");
                stats.sync().await;
                // Recorded for `herald push list` in the same transaction, with the
                // statistics just synced. Registrations a client disabled or an operator
                // removed are gone from the store already (recorded there): nothing here.
                let why = reason.to_string();
                let announced = user.clone();
                let failed_with = match reason {
                    Removal::Errors(c) => Some(c),
                    Removal::Disabled | Removal::Evicted => None,
                };
                log_store(
                    shared
                        .db(move |s: &roles::Push| {
                            let note = RemovalNote {
                                removed_at: unix_now(),
                                reason: &why,
                                failed_with: failed_with.as_deref(),
                            };
                            s.remove_push_registrations(&user, &key.jid, Some(&key.node), &note)
                                .map(|_| ())
                        })
                        .await,
                );
                announce(shared, &announced);
            }
            Action::SaveStats {
                user,
                key,
                error_count,
                last_push,
                last_result,
            } => {
                stats
                    .add(PushStatsUpdate {
                        user,
                        jid: key.jid,
                        node: key.node,
                        error_count,
                        last_push,
                        last_result,
                    })
                    .await;
            }
        }
    }
}

/// Cluster mode: tells the other nodes `user`'s registrations changed in the store.
fn announce(shared: &Shared, user: &str) {
    if let Some(c) = shared.cluster.get() {
        c.push_changed(user);
    }
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn log_store(r: Result<(), StoreError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "push store write failed");
    }
}

#[cfg(test)]
mod supervise_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted_until_it_ends() {
        let runs = Arc::new(AtomicU32::new(0));
        let panics = supervise("test", std::time::Duration::ZERO, || {
            let runs = runs.clone();
            tokio::spawn(async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            })
        })
        .await;
        assert_eq!(panics, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_channel_survives_a_panicking_run() {
        let (tx, rx) = mpsc::unbounded_channel::<u32>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        for n in [1, 2, 3] {
            tx.send(n).unwrap();
        }
        drop(tx);
        supervise("test", std::time::Duration::ZERO, || {
            let rx = rx.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut rx = rx.lock_owned().await;
                while let Some(n) = rx.recv().await {
                    seen.lock().unwrap().push(n);
                    if n == 1 {
                        panic!("boom");
                    }
                }
            })
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
    }
}
