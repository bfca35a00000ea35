//! All push state of the server as one pure state machine.
//!
//! The server reports what happens (a registration enabled, an ack overdue, a session
//! hibernated, a stanza queued, archived or stored offline, an app server reply, time
//! passing) and gets back [`Action`]s: publishes to send, session deadlines to change,
//! registrations and counters to persist. The decision table in RULES.md §1 is implemented
//! here row by row; each entry point cites its row.
//!
//! Must not: do I/O, read a clock, spawn, or hold unbounded memory: dedup memory, in-flight
//! publishes and retries all have configured bounds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use minidom::Element;

use crate::classify::{Importance, Summary};
use crate::notification::build_publish;

/// The server's id for a session (live or hibernated).
pub type SessionId = u64;
/// Server-assigned unique id of a routed stanza, the same on every path that sees it
/// (SM queue, hibernation, offline storage, archive).
pub type StanzaId = u64;

/// Identifies a registration: XEP-0357 §5 (app server JID, node).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegKey {
    /// The app server JID.
    pub jid: String,
    /// The pubsub node on the app server.
    pub node: String,
}

/// One push registration as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// (app server JID, node).
    pub key: RegKey,
    /// The client's `<x xmlns='jabber:x:data'>` publish-options form.
    pub publish_options: Option<Element>,
    /// When it was enabled, unix seconds.
    pub enabled_at: i64,
    /// The resource that enabled it.
    pub resource: Option<String>,
    /// `xml:lang` of the enable request.
    pub lang: Option<String>,
    /// Consecutive non-`wait` errors from the app server.
    pub error_count: u32,
}

/// Push options (`[push]` in the server configuration).
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// `from` of publishes: the server's domain.
    pub domain: String,
    /// Put the real body into `last-message-body`.
    pub with_body: bool,
    /// Put the sender's bare JID into `last-message-sender`.
    pub with_sender: bool,
    /// Placeholder body for important stanzas when `with_body` is off; empty = none.
    pub important_body: String,
    /// Non-`wait` errors after which a registration is removed.
    pub max_errors: u32,
    /// Registrations per user; the oldest is evicted beyond this.
    pub max_devices: usize,
    /// The normal hibernation timeout of the server (XEP-0198 resumption window).
    pub hibernation_timeout: Duration,
    /// How long a push-enabled hibernated session stays resumable before its first
    /// important push.
    pub max_hibernation_timeout: Duration,
    /// At most one important and one unimportant queued-stanza push per window.
    pub coalesce_window: Duration,
    /// How long to wait for the app server's reply to a publish.
    pub reply_timeout: Duration,
    /// Send one more push shortly before a push-enabled hibernated session expires.
    pub wake_before_expiry: bool,
    /// How long before expiry that push goes out (clamped to half the running timeout).
    pub wake_margin: Duration,
    /// Total attempts of one publish on `wait` errors or reply timeouts.
    pub max_attempts: u32,
    /// Delay before the first retry, doubled for each further attempt.
    pub retry_backoff: Duration,
    /// Stanza ids remembered per registration to never push one stanza twice.
    pub dedup_per_registration: usize,
    /// Publishes in flight or waiting for a retry; beyond this new publishes are dropped.
    pub max_pending: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            domain: "localhost".to_owned(),
            with_body: false,
            with_sender: false,
            important_body: "New Message!".to_owned(),
            max_errors: 16,
            max_devices: 5,
            hibernation_timeout: Duration::from_secs(600),
            max_hibernation_timeout: Duration::from_secs(72 * 3600),
            coalesce_window: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(30),
            wake_before_expiry: true,
            wake_margin: Duration::from_secs(60),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(5),
            dedup_per_registration: 1024,
            max_pending: 10_000,
        }
    }
}

/// What the engine needs to know about a routed stanza.
#[derive(Clone, Debug)]
pub struct StanzaInfo {
    /// The server's id of the stanza (the dedup key).
    pub id: StanzaId,
    /// From [`crate::classify::Classifier::classify`].
    pub importance: Importance,
    /// From [`crate::classify::summarize`].
    pub summary: Summary,
}

/// The app server's answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `<iq type='result'/>`.
    Result,
    /// `<iq type='error'/>`; `wait` is true for `<error type='wait'>`.
    Error {
        /// The error type was `wait` (temporary: retried, not counted).
        wait: bool,
        /// The defined condition, e.g. `item-not-found`.
        condition: String,
    },
}

/// What the server must do after an engine call.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this `<iq type='set'>` (from = domain, to = `key.jid`) through the router and
    /// pass its reply (or nothing) back to [`Engine::reply`] by `iq_id`.
    Publish {
        /// The IQ's id, unique per engine.
        iq_id: String,
        /// The local user the push is for.
        user: String,
        /// The registration pushed to.
        key: RegKey,
        /// The publish IQ.
        iq: Element,
    },
    /// The hibernated session's resumption deadline is now `at` (extended hibernation or
    /// its fallback; `at` may be in the past: expire the session at once).
    SetSessionExpiry {
        /// The hibernated session.
        session: SessionId,
        /// The new deadline.
        at: Instant,
    },
    /// Persist (upsert) this registration.
    SaveRegistration {
        /// Owner.
        user: String,
        /// The registration.
        reg: Registration,
    },
    /// Persist the removal of this registration (eviction, disable, `max_errors`).
    DeleteRegistration {
        /// Owner.
        user: String,
        /// The removed registration.
        key: RegKey,
    },
    /// Persist the registration's counters so they survive a restart.
    SaveStats {
        /// Owner.
        user: String,
        /// The registration.
        key: RegKey,
        /// The error count to store.
        error_count: u32,
        /// `Some(unix secs)` of a successful push to store; `None` leaves the stored
        /// value unchanged.
        last_push: Option<i64>,
        /// `"ok"`, `"timeout"`, `"wait"` or the error condition; `None` leaves it unchanged.
        last_result: Option<String>,
    },
}

/// A hibernated session's push state, carried across a server restart (the session itself
/// is saved by the server and restored hibernating).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPush {
    /// The registrations attached to the session, with their `message-count`.
    pub regs: Vec<(RegKey, u32)>,
    /// A qualifying push already went out in this hibernation: the normal timeout runs (no
    /// extended hibernation any more).
    pub first_push: bool,
}

/// Bounded memory of stanza ids already pushed (or covered) for one registration.
#[derive(Debug, Default)]
struct Dedup {
    order: VecDeque<StanzaId>,
    set: HashSet<StanzaId>,
}

impl Dedup {
    /// Records `id`; false when it was already there (the stanza must not be pushed).
    fn insert(&mut self, id: StanzaId, cap: usize) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if cap == 0 {
            return true;
        }
        while self.order.len() >= cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id);
        self.set.insert(id);
        true
    }
}

#[derive(Debug)]
struct RegState {
    reg: Registration,
    /// Tie-breaker for eviction among equal `enabled_at`: order of arrival.
    seq: u64,
    /// The live or hibernated session that enabled it.
    session: Option<SessionId>,
    message_count: u32,
    last_push: Option<i64>,
    dedup: Dedup,
    /// End of the open coalescing window for important / unimportant pushes.
    window_important: Option<Instant>,
    window_unimportant: Option<Instant>,
}

impl RegState {
    fn new(reg: Registration, seq: u64) -> Self {
        RegState {
            reg,
            seq,
            session: None,
            message_count: 0,
            last_push: None,
            dedup: Dedup::default(),
            window_important: None,
            window_unimportant: None,
        }
    }

    fn reset_awake(&mut self) {
        self.message_count = 0;
        self.window_important = None;
        self.window_unimportant = None;
    }
}

type TimerKey = (Instant, u64);

#[derive(Debug)]
struct Hibernation {
    started: Instant,
    /// The deadline we set, and from when it was counted (for clamping the wake margin).
    expiry: Option<(Instant, Instant)>,
    first_push: bool,
    woke_for: Option<Instant>,
    wake_timer: Option<TimerKey>,
}

#[derive(Debug)]
enum Mode {
    Live,
    /// The client left an `<r/>` unanswered; `woken` is when a qualifying push first went
    /// out during this episode (it counts as the first push if the session then hibernates).
    AckOverdue {
        woken: Option<Instant>,
    },
    Hibernated(Hibernation),
}

#[derive(Debug)]
struct SessionState {
    user: String,
    regs: Vec<RegKey>,
    mode: Mode,
}

/// What one publish says; kept to re-send it on retry.
#[derive(Clone, Debug)]
struct Content {
    count: u32,
    sender: Option<String>,
    body: Option<String>,
}

/// One publish attempt: awaiting its reply (in `pending`, timer = reply timeout) or its
/// retry (in `retries`, timer = backoff).
#[derive(Debug)]
struct Attempt {
    user: String,
    key: RegKey,
    content: Content,
    attempt: u32,
    timer: TimerKey,
}

#[derive(Debug)]
enum Timer {
    Reply(String),
    Retry(u64),
    Wake(SessionId),
}

/// How a stanza reaches a registration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Rule a, stanza queued while hibernated or ack overdue: coalesced.
    Queued,
    /// Rules b and c: pushed at once, not coalesced.
    Direct,
}

/// The push engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: PushConfig,
    users: HashMap<String, BTreeMap<RegKey, RegState>>,
    sessions: HashMap<SessionId, SessionState>,
    pending: HashMap<String, Attempt>,
    retries: HashMap<u64, Attempt>,
    timers: BTreeMap<TimerKey, Timer>,
    seq: u64,
    id_prefix: String,
}

impl Engine {
    /// An engine with no users loaded.
    pub fn new(cfg: PushConfig) -> Self {
        Engine {
            cfg,
            users: HashMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            retries: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            id_prefix: "push".to_owned(),
        }
    }

    /// Prefix of generated publish ids (`<prefix>-<n>`). Set a random one at start-up so
    /// a late reply to a publish of a previous run cannot match a new id.
    pub fn set_id_prefix(&mut self, prefix: impl Into<String>) {
        self.id_prefix = prefix.into();
    }

    /// The configuration.
    pub fn config(&self) -> &PushConfig {
        &self.cfg
    }

    /// Whether [`Engine::load_user`] (or an enable) happened for `user`.
    pub fn is_loaded(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Registrations of `user` as read from the store. Existing runtime state of a key
    /// already known (attachment, dedup, count) is kept.
    pub fn load_user(&mut self, user: &str, mut regs: Vec<Registration>) {
        regs.sort_by_key(|r| r.enabled_at);
        let mut seqs = Vec::with_capacity(regs.len());
        for _ in &regs {
            seqs.push(self.next_seq());
        }
        let map = self.users.entry(user.to_owned()).or_default();
        for (reg, seq) in regs.into_iter().zip(seqs) {
            match map.get_mut(&reg.key) {
                Some(state) => state.reg = reg,
                None => {
                    map.insert(reg.key.clone(), RegState::new(reg, seq));
                }
            }
        }
    }

    /// The user's registrations with their current error counts, ordered by key.
    pub fn registrations(&self, user: &str) -> Vec<Registration> {
        self.users
            .get(user)
            .map(|m| m.values().map(|s| s.reg.clone()).collect())
            .unwrap_or_default()
    }

    /// The current `message-count` of a registration (what its next push would add to).
    pub fn message_count(&self, user: &str, key: &RegKey) -> Option<u32> {
        self.users
            .get(user)
            .and_then(|m| m.get(key))
            .map(|s| s.message_count)
    }

    /// XEP-0357 §5 enable: stores `reg` (replacing the same key), evicts the oldest
    /// registrations beyond `max_devices`, and attaches it to `session`.
    pub fn enable(
        &mut self,
        user: &str,
        session: SessionId,
        reg: Registration,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let key = reg.key.clone();
        // Re-enabling the same identifier replaces it, but keeps its dedup memory: the
        // stanzas already pushed to that device must still not be pushed twice.
        let old = self.users.get_mut(user).and_then(|m| m.remove(&key));
        let old_dedup = match old {
            Some(old) => {
                if let Some(sid) = old.session {
                    if sid != session {
                        self.detach_from_session(sid, &key, now, &mut out);
                    }
                }
                Some(old.dedup)
            }
            None => None,
        };
        // Eviction: the oldest `enabled_at` goes first (Prosody's cache does the same).
        let limit = self.cfg.max_devices.max(1);
        loop {
            let victim = match self.users.get(user) {
                Some(m) if m.len() >= limit => m
                    .values()
                    .min_by_key(|s| (s.reg.enabled_at, s.seq))
                    .map(|s| s.reg.key.clone()),
                _ => None,
            };
            match victim {
                Some(victim) => self.remove_registration(user, &victim, now, &mut out),
                None => break,
            }
        }
        let seq = self.next_seq();
        let mut state = RegState::new(reg.clone(), seq);
        if let Some(dedup) = old_dedup {
            state.dedup = dedup;
        }
        state.session = Some(session);
        self.users
            .entry(user.to_owned())
            .or_default()
            .insert(key.clone(), state);
        let sess = self
            .sessions
            .entry(session)
            .or_insert_with(|| SessionState {
                user: user.to_owned(),
                regs: Vec::new(),
                mode: Mode::Live,
            });
        if !sess.regs.contains(&key) {
            sess.regs.push(key);
        }
        out.push(Action::SaveRegistration {
            user: user.to_owned(),
            reg,
        });
        out
    }

    /// XEP-0357 §6 disable: removes every registration with app server `jid` (only the one
    /// with `node` when given) and detaches them from sessions.
    pub fn disable(
        &mut self,
        user: &str,
        jid: &str,
        node: Option<&str>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let victims: Vec<RegKey> = self
            .users
            .get(user)
            .map(|m| {
                m.keys()
                    .filter(|k| k.jid == jid && node.is_none_or(|n| k.node == n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in victims {
            self.remove_registration(user, &key, now, &mut out);
        }
        out
    }

    /// A session of `user` bound `resource` (a login): the device is connected, so the
    /// `message-count` of registrations enabled from that resource starts again at 0.
    pub fn session_started(
        &mut self,
        user: &str,
        session: SessionId,
        resource: &str,
        _now: Instant,
    ) {
        let sess = self
            .sessions
            .entry(session)
            .or_insert_with(|| SessionState {
                user: user.to_owned(),
                regs: Vec::new(),
                mode: Mode::Live,
            });
        sess.user = user.to_owned();
        sess.mode = Mode::Live;
        if let Some(map) = self.users.get_mut(user) {
            for state in map.values_mut() {
                if state.reg.resource.as_deref() == Some(resource) {
                    state.reset_awake();
                }
            }
        }
    }

    /// The session is gone (logout, or hibernation expired): its registrations become
    /// unattached (rule b applies to them from now on) and its timers are cancelled.
    pub fn session_ended(&mut self, session: SessionId, _now: Instant) -> Vec<Action> {
        if let Some(sess) = self.sessions.remove(&session) {
            if let Mode::Hibernated(h) = &sess.mode {
                if let Some(t) = h.wake_timer {
                    self.timers.remove(&t);
                }
            }
            if let Some(map) = self.users.get_mut(&sess.user) {
                for key in &sess.regs {
                    if let Some(state) = map.get_mut(key) {
                        if state.session == Some(session) {
                            state.session = None;
                        }
                    }
                }
            }
        }
        Vec::new()
    }

    /// Rule a, "`<r/>` unanswered for `max_ack_delay`": one push for the unacked queue to
    /// the session's registration(s). Until [`Engine::acked`] the session counts as sleeping.
    pub fn ack_delayed(
        &mut self,
        session: SessionId,
        unacked: &[StanzaInfo],
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(sess) = self.sessions.get_mut(&session) else {
            return out;
        };
        if matches!(sess.mode, Mode::Live) {
            sess.mode = Mode::AckOverdue { woken: None };
        }
        self.push_batch(session, unacked, now, &mut out);
        out
    }

    /// The overdue ack arrived: the device is awake and has the stanzas it acked.
    pub fn acked(&mut self, session: SessionId, _now: Instant) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        if !matches!(sess.mode, Mode::AckOverdue { .. }) {
            return;
        }
        sess.mode = Mode::Live;
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        if let Some(map) = self.users.get_mut(&user) {
            for key in &regs {
                if let Some(state) = map.get_mut(key) {
                    state.reset_awake();
                }
            }
        }
    }

    /// Rule a, "connection dies, session hibernates": one push at once for the stanzas not
    /// already pushed, and the extended hibernation deadline for a push-enabled session.
    pub fn hibernation_started(
        &mut self,
        session: SessionId,
        unacked: &[StanzaInfo],
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(sess) = self.sessions.get_mut(&session) else {
            return out;
        };
        if let Mode::Hibernated(h) = &sess.mode {
            if let Some(t) = h.wake_timer {
                self.timers.remove(&t);
            }
        }
        // A qualifying push already sent while the ack was overdue woke the device: the
        // normal timeout runs from it, not the extended one.
        let woken = match sess.mode {
            Mode::AckOverdue { woken } => woken,
            _ => None,
        };
        let timeout = self.cfg.hibernation_timeout;
        sess.mode = Mode::Hibernated(Hibernation {
            started: now,
            expiry: woken.map(|t| (t + timeout, t)),
            first_push: woken.is_some(),
            woke_for: None,
            wake_timer: None,
        });
        if sess.regs.is_empty() {
            return out;
        }
        if let Some(t) = woken {
            out.push(Action::SetSessionExpiry {
                session,
                at: t + timeout,
            });
            self.schedule_wake(session);
        }
        self.push_batch(session, unacked, now, &mut out);
        // If the batch held an important stanza the normal timeout already runs from it
        // (set by `note_push`); otherwise the session may sleep up to the extended limit.
        let extend = match self.sessions.get_mut(&session).map(|s| &mut s.mode) {
            Some(Mode::Hibernated(h)) if !h.first_push => {
                let at = now + self.cfg.max_hibernation_timeout;
                h.expiry = Some((at, now));
                Some(at)
            }
            _ => None,
        };
        if let Some(at) = extend {
            out.push(Action::SetSessionExpiry { session, at });
            self.schedule_wake(session);
        }
        out
    }

    /// Rule a, "stanza queued while hibernated" (or while the ack is overdue): pushed,
    /// coalesced per registration.
    pub fn stanza_queued(
        &mut self,
        session: SessionId,
        stanza: &StanzaInfo,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(sess) = self.sessions.get(&session) else {
            return out;
        };
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        for key in regs {
            if let Some(imp) = self.push_one(&user, &key, stanza, Path::Queued, now, &mut out) {
                self.note_push(session, imp, now, &mut out);
            }
        }
        out
    }

    /// Rule a, "session resumed": nothing more is pushed for it; retries waiting for its
    /// registrations are cancelled and their `message-count` starts again.
    pub fn resumed(&mut self, session: SessionId, _now: Instant) -> Vec<Action> {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return Vec::new();
        };
        if let Mode::Hibernated(h) = &sess.mode {
            if let Some(t) = h.wake_timer {
                self.timers.remove(&t);
            }
        }
        sess.mode = Mode::Live;
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        if let Some(map) = self.users.get_mut(&user) {
            for key in &regs {
                if let Some(state) = map.get_mut(key) {
                    state.reset_awake();
                }
            }
        }
        for key in &regs {
            self.drop_retries(&user, key);
        }
        Vec::new()
    }

    /// The push state of a hibernated session, to save it across a restart. None when the
    /// session is unknown or not hibernated.
    pub fn session_push(&self, session: SessionId) -> Option<SessionPush> {
        let sess = self.sessions.get(&session)?;
        let Mode::Hibernated(h) = &sess.mode else {
            return None;
        };
        let map = self.users.get(&sess.user);
        let regs = sess
            .regs
            .iter()
            .filter_map(|k| {
                map.and_then(|m| m.get(k))
                    .map(|s| (k.clone(), s.message_count))
            })
            .collect();
        Some(SessionPush {
            regs,
            first_push: h.first_push,
        })
    }

    /// A hibernated session restored after a restart (the user's registrations are loaded):
    /// its registrations are attached again with their counts, it sleeps until `expiry` (the
    /// deadline it had), and the wake-before-expiry push is armed. Nothing is pushed now: the
    /// device was told before the restart. Registrations removed meanwhile are left out.
    pub fn restore_session(
        &mut self,
        user: &str,
        session: SessionId,
        push: SessionPush,
        expiry: Instant,
        now: Instant,
    ) {
        let mut regs = Vec::new();
        if let Some(map) = self.users.get_mut(user) {
            for (key, count) in push.regs {
                if let Some(state) = map.get_mut(&key) {
                    state.session = Some(session);
                    state.message_count = count;
                    regs.push(key);
                }
            }
        }
        self.sessions.insert(
            session,
            SessionState {
                user: user.to_owned(),
                regs,
                mode: Mode::Hibernated(Hibernation {
                    started: now,
                    expiry: Some((expiry, now)),
                    first_push: push.first_push,
                    woke_for: None,
                    wake_timer: None,
                }),
            },
        );
        self.schedule_wake(session);
    }

    /// Whether a registration is attached to this session.
    pub fn has_push(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| !s.regs.is_empty())
    }

    /// Rule b: a message archived for `user` (the user is its recipient) is pushed to the
    /// registrations with no live or hibernated session (rule a covers the others). An
    /// urgent stanza goes to every registration at once: incoming calls must ring.
    pub fn archived_for(&mut self, user: &str, stanza: &StanzaInfo, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let urgent = stanza.importance == Importance::Urgent;
        let targets: Vec<(RegKey, Option<SessionId>)> = self
            .users
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|s| urgent || s.session.is_none())
                    .map(|s| (s.reg.key.clone(), s.session))
                    .collect()
            })
            .unwrap_or_default();
        self.push_direct(user, targets, stanza, now, &mut out);
        out
    }

    /// Rule c: a message stored offline (or a groupchat message to the bare JID with no
    /// session online) is pushed to every registration of `user`.
    pub fn stored_offline(&mut self, user: &str, stanza: &StanzaInfo, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let targets: Vec<(RegKey, Option<SessionId>)> = self
            .users
            .get(user)
            .map(|m| m.values().map(|s| (s.reg.key.clone(), s.session)).collect())
            .unwrap_or_default();
        self.push_direct(user, targets, stanza, now, &mut out);
        out
    }

    /// Admin ping: a push without a stanza (count unchanged, no body) to every registration.
    pub fn ping(&mut self, user: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let targets: Vec<(RegKey, u32)> = self
            .users
            .get(user)
            .map(|m| {
                m.values()
                    .map(|s| (s.reg.key.clone(), s.message_count))
                    .collect()
            })
            .unwrap_or_default();
        for (key, count) in targets {
            let content = Content {
                count,
                sender: None,
                body: None,
            };
            self.publish(user, &key, content, 1, now, &mut out);
        }
        out
    }

    /// The app server answered publish `iq_id`. Unknown ids are ignored.
    pub fn reply(
        &mut self,
        iq_id: &str,
        reply: Reply,
        now: Instant,
        unix_secs: i64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(p) = self.pending.remove(iq_id) else {
            return out;
        };
        self.timers.remove(&p.timer);
        match reply {
            Reply::Result => {
                if let Some(state) = self.reg_mut(&p.user, &p.key) {
                    state.reg.error_count = 0;
                    state.last_push = Some(unix_secs);
                    out.push(Action::SaveStats {
                        user: p.user,
                        key: p.key,
                        error_count: 0,
                        last_push: Some(unix_secs),
                        last_result: Some("ok".to_owned()),
                    });
                }
            }
            // XEP-0357 leaves error handling to the server; a `wait` error is temporary
            // (RFC 6120 §8.3.2), so it is retried and not held against the registration.
            Reply::Error { wait: true, .. } => self.retry_or_drop(p, "wait", now, &mut out),
            Reply::Error {
                wait: false,
                condition,
            } => {
                let max = self.cfg.max_errors;
                let Some(state) = self.reg_mut(&p.user, &p.key) else {
                    return out;
                };
                state.reg.error_count = state.reg.error_count.saturating_add(1);
                let count = state.reg.error_count;
                if count >= max {
                    self.remove_registration(&p.user, &p.key, now, &mut out);
                } else {
                    out.push(Action::SaveStats {
                        user: p.user,
                        key: p.key,
                        error_count: count,
                        last_push: None,
                        last_result: Some(condition),
                    });
                }
            }
        }
        out
    }

    /// Fires every timer due at `now`: reply timeouts, retries, wake-before-expiry pushes.
    pub fn poll(&mut self, now: Instant, _unix_secs: i64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            match timer {
                Timer::Reply(iq_id) => {
                    if let Some(p) = self.pending.remove(&iq_id) {
                        self.retry_or_drop(p, "timeout", now, &mut out);
                    }
                }
                Timer::Retry(id) => {
                    if let Some(r) = self.retries.remove(&id) {
                        self.publish(&r.user, &r.key, r.content, r.attempt, now, &mut out);
                    }
                }
                Timer::Wake(session) => self.wake(session, now, &mut out),
            }
        }
        out
    }

    /// When [`Engine::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|k| k.0)
    }

    /// The registration an in-flight publish was sent to, so the caller can check that a
    /// reply comes from its app server before passing it to [`Engine::reply`].
    pub fn pending_key(&self, iq_id: &str) -> Option<&RegKey> {
        self.pending.get(iq_id).map(|p| &p.key)
    }

    /// Publishes awaiting a reply or waiting to be retried.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.retries.len()
    }

    // ---- internals ----

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn reg_mut(&mut self, user: &str, key: &RegKey) -> Option<&mut RegState> {
        self.users.get_mut(user).and_then(|m| m.get_mut(key))
    }

    fn schedule(&mut self, at: Instant, timer: Timer) -> TimerKey {
        let key = (at, self.next_seq());
        self.timers.insert(key, timer);
        key
    }

    /// What a push for `stanza` says, given the registration's count after counting it.
    fn content_for(&self, count: u32, stanza: &StanzaInfo) -> Content {
        let sender = if self.cfg.with_sender {
            stanza.summary.sender.clone()
        } else {
            None
        };
        let real_body = stanza
            .summary
            .body
            .clone()
            .filter(|b| self.cfg.with_body && !b.is_empty());
        let body = real_body.or_else(|| {
            (stanza.importance.is_important() && !self.cfg.important_body.is_empty())
                .then(|| self.cfg.important_body.clone())
        });
        Content {
            count,
            sender,
            body,
        }
    }

    /// A push that ends the extended hibernation: an important one, or any one when
    /// important pushes are not told apart (`important_body` empty).
    fn qualifies(&self, importance: Importance) -> bool {
        importance.is_important() || self.cfg.important_body.is_empty()
    }

    /// One push per registration of `session` for the stanzas of `batch` it has not seen.
    fn push_batch(
        &mut self,
        session: SessionId,
        batch: &[StanzaInfo],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(sess) = self.sessions.get(&session) else {
            return;
        };
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        let cap = self.cfg.dedup_per_registration;
        let window = self.cfg.coalesce_window;
        let mut best: Option<Importance> = None;
        for key in regs {
            let Some(state) = self.reg_mut(&user, &key) else {
                continue;
            };
            // The push shows the latest important stanza, else the latest one.
            let mut pick: Option<&StanzaInfo> = None;
            for stanza in batch {
                if !state.dedup.insert(stanza.id, cap) {
                    continue;
                }
                if stanza.importance.is_important() {
                    state.message_count = state.message_count.saturating_add(1);
                }
                if pick.is_none_or(|p| {
                    stanza.importance.is_important() || !p.importance.is_important()
                }) {
                    pick = Some(stanza);
                }
            }
            let Some(pick) = pick else {
                continue;
            };
            // The batch push opens the window of its class, so a burst right behind it is
            // covered like any burst.
            if pick.importance.is_important() {
                state.window_important = Some(now + window);
            } else {
                state.window_unimportant = Some(now + window);
            }
            let count = state.message_count;
            let content = self.content_for(count, pick);
            self.publish(&user, &key, content, 1, now, out);
            best = best.max(Some(pick.importance));
        }
        if let Some(imp) = best {
            self.note_push(session, imp, now, out);
        }
    }

    /// Pushes (or covers) one stanza for one registration. Returns the importance when a
    /// push was decided.
    fn push_one(
        &mut self,
        user: &str,
        key: &RegKey,
        stanza: &StanzaInfo,
        path: Path,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<Importance> {
        let cap = self.cfg.dedup_per_registration;
        let window = self.cfg.coalesce_window;
        let state = self.reg_mut(user, key)?;
        // Never twice: whatever path saw this stanza first has pushed or covered it.
        if !state.dedup.insert(stanza.id, cap) {
            return None;
        }
        let important = stanza.importance.is_important();
        if important {
            state.message_count = state.message_count.saturating_add(1);
        }
        if path == Path::Queued {
            let slot = if important {
                &mut state.window_important
            } else {
                &mut state.window_unimportant
            };
            // Coalescing: the first push of a class opens a window that covers the rest
            // of the burst. An incoming call is never covered: it must ring now.
            let open = slot.is_some_and(|end| end > now);
            if open && stanza.importance != Importance::Urgent {
                return None;
            }
            *slot = Some(now + window);
        }
        let count = state.message_count;
        let content = self.content_for(count, stanza);
        self.publish(user, key, content, 1, now, out);
        Some(stanza.importance)
    }

    fn push_direct(
        &mut self,
        user: &str,
        targets: Vec<(RegKey, Option<SessionId>)>,
        stanza: &StanzaInfo,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        for (key, session) in targets {
            if let Some(imp) = self.push_one(user, &key, stanza, Path::Direct, now, out) {
                if let Some(sid) = session {
                    self.note_push(sid, imp, now, out);
                }
            }
        }
    }

    /// After a push to a hibernated session's registration: the first qualifying push ends
    /// the extended hibernation; the normal timeout runs from it.
    fn note_push(
        &mut self,
        session: SessionId,
        importance: Importance,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.qualifies(importance) {
            return;
        }
        let timeout = self.cfg.hibernation_timeout;
        let mode = self.sessions.get_mut(&session).map(|s| &mut s.mode);
        if let Some(Mode::AckOverdue { woken }) = mode {
            woken.get_or_insert(now);
            return;
        }
        let Some(Mode::Hibernated(h)) = mode else {
            return;
        };
        if h.first_push {
            return;
        }
        h.first_push = true;
        let at = now + timeout;
        h.expiry = Some((at, now));
        out.push(Action::SetSessionExpiry { session, at });
        self.schedule_wake(session);
    }

    /// Arms the wake-before-expiry push for the session's current deadline.
    fn schedule_wake(&mut self, session: SessionId) {
        let enabled = self.cfg.wake_before_expiry;
        let margin = self.cfg.wake_margin;
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let has_regs = !sess.regs.is_empty();
        let Mode::Hibernated(h) = &mut sess.mode else {
            return;
        };
        let old = h.wake_timer.take();
        let at = match h.expiry {
            Some((expiry, base)) if enabled && has_regs && h.woke_for != Some(expiry) => {
                // Clamped so a short timeout does not wake the device right after it slept.
                let margin = margin.min(expiry.saturating_duration_since(base) / 2);
                Some(expiry.checked_sub(margin).unwrap_or(expiry))
            }
            _ => None,
        };
        if let Some(t) = old {
            self.timers.remove(&t);
        }
        if let Some(at) = at {
            let key = self.schedule(at, Timer::Wake(session));
            if let Some(Mode::Hibernated(h)) = self.sessions.get_mut(&session).map(|s| &mut s.mode)
            {
                h.wake_timer = Some(key);
            }
        }
    }

    fn wake(&mut self, session: SessionId, now: Instant, out: &mut Vec<Action>) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let Mode::Hibernated(h) = &mut sess.mode else {
            return;
        };
        h.wake_timer = None;
        let Some((expiry, _)) = h.expiry else {
            return;
        };
        // Once per deadline: a later deadline (after the first important push) earns
        // its own wake-up.
        if h.woke_for == Some(expiry) {
            return;
        }
        h.woke_for = Some(expiry);
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        for key in regs {
            let Some(count) = self
                .users
                .get(&user)
                .and_then(|m| m.get(&key))
                .map(|s| s.message_count)
            else {
                continue;
            };
            let content = Content {
                count,
                sender: None,
                body: None,
            };
            self.publish(&user, &key, content, 1, now, out);
        }
    }

    /// Emits a publish and tracks it, unless too many are in flight.
    fn publish(
        &mut self,
        user: &str,
        key: &RegKey,
        content: Content,
        attempt: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // Bounded: a silent or slow app server must not grow memory without limit.
        if self.pending.len() + self.retries.len() >= self.cfg.max_pending {
            return;
        }
        let n = self.next_seq();
        let Some(state) = self.users.get(user).and_then(|m| m.get(key)) else {
            return;
        };
        let iq_id = format!("{}-{n}", self.id_prefix);
        let iq = build_publish(
            &self.cfg.domain,
            &iq_id,
            key,
            content.count,
            content.sender.as_deref(),
            content.body.as_deref(),
            state.reg.publish_options.as_ref(),
        );
        let timer = self.schedule(now + self.cfg.reply_timeout, Timer::Reply(iq_id.clone()));
        self.pending.insert(
            iq_id.clone(),
            Attempt {
                user: user.to_owned(),
                key: key.clone(),
                content,
                attempt,
                timer,
            },
        );
        out.push(Action::Publish {
            iq_id,
            user: user.to_owned(),
            key: key.clone(),
            iq,
        });
    }

    /// A `wait` error or a timeout: retry with exponential backoff, or give up.
    fn retry_or_drop(&mut self, p: Attempt, why: &str, now: Instant, out: &mut Vec<Action>) {
        let exists = self
            .users
            .get(&p.user)
            .is_some_and(|m| m.contains_key(&p.key));
        if !exists {
            return;
        }
        if p.attempt < self.cfg.max_attempts {
            let shift = p.attempt.saturating_sub(1).min(16);
            let delay = self.cfg.retry_backoff.saturating_mul(1u32 << shift);
            let id = self.next_seq();
            let timer = self.schedule(now + delay, Timer::Retry(id));
            self.retries.insert(
                id,
                Attempt {
                    attempt: p.attempt + 1,
                    timer,
                    ..p
                },
            );
        } else {
            let error_count = self
                .users
                .get(&p.user)
                .and_then(|m| m.get(&p.key))
                .map_or(0, |s| s.reg.error_count);
            out.push(Action::SaveStats {
                user: p.user,
                key: p.key,
                error_count,
                last_push: None,
                last_result: Some(why.to_owned()),
            });
        }
    }

    fn drop_retries(&mut self, user: &str, key: &RegKey) {
        let timers = &mut self.timers;
        self.retries.retain(|_, r| {
            let drop = r.user == user && &r.key == key;
            if drop {
                timers.remove(&r.timer);
            }
            !drop
        });
    }

    fn drop_pending(&mut self, user: &str, key: &RegKey) {
        let timers = &mut self.timers;
        self.pending.retain(|_, p| {
            let drop = p.user == user && &p.key == key;
            if drop {
                timers.remove(&p.timer);
            }
            !drop
        });
    }

    /// Removes a registration everywhere: store, its session, in-flight publishes, retries.
    fn remove_registration(
        &mut self,
        user: &str,
        key: &RegKey,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(state) = self.users.get_mut(user).and_then(|m| m.remove(key)) else {
            return;
        };
        out.push(Action::DeleteRegistration {
            user: user.to_owned(),
            key: key.clone(),
        });
        if let Some(sid) = state.session {
            self.detach_from_session(sid, key, now, out);
        }
        self.drop_retries(user, key);
        self.drop_pending(user, key);
    }

    /// Detaches `key` from `session`; a hibernated session left without push falls back to
    /// the normal timeout counted from its hibernation start.
    fn detach_from_session(
        &mut self,
        session: SessionId,
        key: &RegKey,
        _now: Instant,
        out: &mut Vec<Action>,
    ) {
        let timeout = self.cfg.hibernation_timeout;
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        sess.regs.retain(|k| k != key);
        if !sess.regs.is_empty() {
            return;
        }
        if let Mode::Hibernated(h) = &mut sess.mode {
            if let Some(t) = h.wake_timer.take() {
                self.timers.remove(&t);
            }
            if h.expiry.is_some() {
                h.expiry = None;
                out.push(Action::SetSessionExpiry {
                    session,
                    at: h.started + timeout,
                });
            }
        }
    }
}
