//! All push state of the server as one pure state machine.
//!
//! The server reports what happens (a registration enabled, an ack overdue, a session
//! hibernated, a stanza queued, archived or stored offline, an app server reply, time
//! passing) and gets back [`Action`]s: publishes to send, session deadlines to change,
//! registrations and counters to persist. The rules in crates/herald-push/RULES.md are implemented
//! here situation by situation; each entry point cites its rule.
//!
//! Must not: do I/O, read a clock, spawn, or hold unbounded memory: dedup memory, in-flight
//! publishes and retries all have configured bounds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use minidom::Element;

use crate::classify::{bare_jid, Importance, Summary};
use crate::notification::{build_publish, Notice, Priority};

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
    /// Publishes in flight or waiting for a retry, all users together (global, from the
    /// primary host's configuration).
    pub max_pending: usize,
    /// A user's share of `max_pending`: beyond it that user's new pushes wait (one per
    /// registration, with the latest count) until one of their publishes is answered.
    pub max_pending_per_user: usize,
    /// An app server's share of `max_pending` (counted by the app server's domain), so a
    /// dead app server cannot hold the budget of users of the others (global).
    pub max_pending_per_app_server: usize,
    /// How long the state of a user with no session and nothing pending is kept before it
    /// is evicted (global). It holds the dedup memory that keeps a stanza from being pushed
    /// again when it moves from an expired session to offline storage.
    pub idle_user_ttl: Duration,
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
            max_pending_per_user: 100,
            max_pending_per_app_server: 5_000,
            idle_user_ttl: Duration::from_secs(600),
        }
    }
}

/// What the engine needs to know about a routed stanza (serializable: in cluster mode the
/// node that routed it hands it to the node that owns the user's push state).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StanzaInfo {
    /// The server's id of the stanza (the dedup key).
    pub id: StanzaId,
    /// From [`crate::classify::Classifier::classify`].
    pub importance: Importance,
    /// From [`crate::classify::summarize`].
    pub summary: Summary,
    /// The device of the session it is queued for caused it itself (the reflection of its
    /// own presence, the answer to its own IQ, the bounce of its own message: see
    /// [`crate::classify::caused_by`]), or it is a PEP notification
    /// ([`crate::classify::is_pep_event`]). Either way it must not wake the device: never
    /// pushed.
    pub own: bool,
    /// When it reached the server, unix microseconds (0: unknown). Compared with the
    /// user's XEP-0490 displayed markers (RULES.md §14): a stanza of a chat displayed up to
    /// this time or later is not pushed.
    pub at: i64,
}

/// A groupchat message a room broadcast, as rule d needs it ([`Engine::room_message`]).
#[derive(Clone, Copy, Debug)]
pub struct RoomMessage<'a> {
    /// The room's bare JID.
    pub room: &'a str,
    /// The room is members-only (XEP-0492's default setting depends on it).
    pub members_only: bool,
    /// The sender's real bare JID.
    pub sender: &'a str,
    /// The message as the room broadcast it.
    pub message: &'a Element,
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
        /// Why it was removed (for `herald push list`).
        reason: Removal,
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

/// How the publishes so far ended, one count per attempt (for `/metrics`). Each publish
/// attempt ends exactly once as `result`, `wait`, `cancel` or `timeout`, except those
/// forgotten with their registration or a resumed session; `dropped` counts the pushes given
/// up after `max_attempts` attempts (the device was never woken by them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// `<iq type='result'/>`.
    pub result: u64,
    /// An error the engine retries without counting it ([`Reply::Error`] with `wait`).
    pub wait: u64,
    /// An error counted against the registration (any other error).
    pub cancel: u64,
    /// No answer within `reply_timeout`.
    pub timeout: u64,
    /// Pushes given up: their last attempt timed out or got a `wait` error.
    pub dropped: u64,
}

/// Why the engine removed a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The client disabled it (XEP-0357 §6) or an operator removed it.
    Disabled,
    /// A newer registration of the user pushed it out (`max_devices`).
    Evicted,
    /// The app server answered `max_errors` errors in a row; the last condition.
    Errors(String),
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Removal::Disabled => f.write_str("disabled"),
            Removal::Evicted => f.write_str("evicted (max_devices)"),
            Removal::Errors(c) => write!(f, "app server errors (last: {c})"),
        }
    }
}

/// A hibernated session's push state, carried across a server restart (the session itself
/// is saved by the server and restored hibernating).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// The coalescing window opened by the last leading push.
    window: Option<Window>,
    /// A push that did not fit the user's or app server's share of `max_pending`: sent,
    /// with the count of that moment, when a slot frees (at most one per registration).
    owed: Option<Content>,
    /// The important stanzas counted in `message_count` whose chat and time are known,
    /// oldest first, at most `dedup_per_registration`: a displayed marker takes its chat's
    /// out of the count (RULES.md §14).
    unread: VecDeque<(String, i64)>,
}

/// Coalescing (RULES.md §6): a leading push goes out at
/// once and opens a window; important stanzas inside it are covered and owed one catch-up
/// push at its end, which opens the next window. So at most two pushes per window.
#[derive(Debug)]
struct Window {
    end: Instant,
    /// The leading push was important (an unimportant stanza never adds a push then).
    important: bool,
    /// The leading push was an incoming call (a second call waits for the catch-up).
    urgent: bool,
    /// What the catch-up push says (its count is taken when it goes out).
    catch_up: Option<Content>,
    /// The chat and time of the stanza the catch-up shows, so a displayed marker that
    /// covers it can take its body out (RULES.md §14).
    catch_up_src: Option<(String, i64)>,
    /// The catch-up timer, armed by the first covered important stanza.
    timer: Option<TimerKey>,
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
            window: None,
            owed: None,
            unread: VecDeque::new(),
        }
    }

    /// Counts an important stanza pushed or covered, remembering its chat and time for
    /// displayed markers (at most `cap`; older ones then stay counted).
    fn count_unread(&mut self, stanza: &StanzaInfo, cap: usize) {
        self.message_count = self.message_count.saturating_add(1);
        if let (Some(chat), true) = (stanza.summary.sender.as_ref(), stanza.at > 0) {
            if self.unread.len() >= cap {
                self.unread.pop_front();
            }
            if cap > 0 {
                self.unread.push_back((chat.clone(), stanza.at));
            }
        }
    }

    /// The device is connected again: counts start over, nothing covered or owed is sent.
    /// Returns the catch-up timer to cancel.
    fn reset_awake(&mut self) -> Option<TimerKey> {
        self.message_count = 0;
        self.unread.clear();
        self.owed = None;
        self.window.take().and_then(|w| w.timer)
    }
}

type TimerKey = (Instant, u64);

/// The chat and time of a stanza a push shows (for displayed markers).
fn source(stanza: &StanzaInfo) -> Option<(String, i64)> {
    let chat = stanza.summary.sender.clone()?;
    (stanza.at > 0).then_some((chat, stanza.at))
}

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
type Content = Notice;

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
    CatchUp(String, RegKey),
    Sweep,
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
    /// Per-host overrides of `cfg` (virtual hosts), by domain.
    hosts: HashMap<String, PushConfig>,
    /// Publishes in flight or waiting for a retry, per user and per app server domain.
    pending_by_user: HashMap<String, usize>,
    pending_by_app: HashMap<String, usize>,
    /// Registrations with an owed push, oldest first (each at most once).
    owed: VecDeque<(String, RegKey)>,
    /// When each loaded user last had something happen (for eviction).
    touched: HashMap<String, Instant>,
    /// The eviction sweep's timer.
    sweep: Option<TimerKey>,
    /// Per loaded user, each chat's XEP-0490 displayed marker (RULES.md §14).
    displayed: HashMap<String, Displayed>,
    /// How publishes ended so far.
    outcomes: Outcomes,
}

/// How many chats' displayed markers the engine keeps per user; beyond it the chat
/// displayed longest ago is forgotten (its stanzas may then push once more).
pub const MAX_DISPLAYED_CHATS: usize = 256;

/// One user's displayed markers: chat JID → displayed up to (unix microseconds).
#[derive(Debug, Default)]
struct Displayed {
    chats: HashMap<String, i64>,
}

impl Displayed {
    /// Moves a chat's marker forward (never back); false when it did not move.
    fn advance(&mut self, chat: &str, upto: i64) -> bool {
        if let Some(t) = self.chats.get_mut(chat) {
            if *t >= upto {
                return false;
            }
            *t = upto;
            return true;
        }
        if self.chats.len() >= MAX_DISPLAYED_CHATS {
            if let Some(oldest) = self
                .chats
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(c, _)| c.clone())
            {
                self.chats.remove(&oldest);
            }
        }
        self.chats.insert(chat.to_owned(), upto);
        true
    }

    fn covers(&self, chat: &str, at: i64) -> bool {
        at > 0 && self.chats.get(chat).is_some_and(|t| at <= *t)
    }
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
            hosts: HashMap::new(),
            pending_by_user: HashMap::new(),
            pending_by_app: HashMap::new(),
            owed: VecDeque::new(),
            touched: HashMap::new(),
            sweep: None,
            displayed: HashMap::new(),
            outcomes: Outcomes::default(),
        }
    }

    /// A virtual host's own configuration: its users' pushes use it (sent from its
    /// `domain`, with its `with_body`, `with_sender`, `important_body` and limits). The
    /// global budget (`max_pending`, `max_pending_per_app_server`, `idle_user_ttl`) stays
    /// the primary configuration's.
    pub fn set_host_config(&mut self, domain: &str, cfg: PushConfig) {
        self.hosts.insert(domain.to_owned(), cfg);
    }

    /// The configuration that applies to `user` (a bare JID): its host's, else the primary.
    pub fn config_for(&self, user: &str) -> &PushConfig {
        let bare = bare_jid(user);
        let domain = bare.rsplit_once('@').map_or(bare, |(_, d)| d);
        self.hosts.get(domain).unwrap_or(&self.cfg)
    }

    /// Users whose state is loaded (evicted ones are loaded again on their next event).
    pub fn loaded_users(&self) -> usize {
        self.users.len()
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

    /// Cluster mode: `user`'s registrations as the store holds them now, after another node
    /// enabled, disabled or removed some. Those gone are dropped (and detached from their
    /// session here); the others are updated or added, keeping their push state (counts,
    /// dedup, coalescing window). A user not loaded is left alone (loaded on first use).
    pub fn reload_user(&mut self, user: &str, regs: Vec<Registration>) {
        let Some(map) = self.users.get_mut(user) else {
            return;
        };
        let keep: std::collections::HashSet<&RegKey> = regs.iter().map(|r| &r.key).collect();
        let gone: Vec<(RegKey, Option<SessionId>)> = map
            .iter()
            .filter(|(k, _)| !keep.contains(k))
            .map(|(k, st)| (k.clone(), st.session))
            .collect();
        for (key, session) in gone {
            map.remove(&key);
            if let Some(s) = session.and_then(|id| self.sessions.get_mut(&id)) {
                s.regs.retain(|k| k != &key);
            }
        }
        self.load_user(user, regs);
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
        self.touch(user, now);
        let key = reg.key.clone();
        // Re-enabling the same identifier replaces it, but keeps its dedup memory: the
        // stanzas already pushed to that device must still not be pushed twice.
        let old = self.users.get_mut(user).and_then(|m| m.remove(&key));
        let old_dedup = match old {
            Some(mut old) => {
                if let Some(sid) = old.session {
                    if sid != session {
                        self.detach_from_session(sid, &key, now, &mut out);
                    }
                }
                self.forget_window(user, &key, &mut old);
                Some(old.dedup)
            }
            None => None,
        };
        // Eviction: the oldest `enabled_at` goes first (Prosody's cache does the same).
        let limit = self.config_for(user).max_devices.max(1);
        loop {
            let victim = match self.users.get(user) {
                Some(m) if m.len() >= limit => m
                    .values()
                    .min_by_key(|s| (s.reg.enabled_at, s.seq))
                    .map(|s| s.reg.key.clone()),
                _ => None,
            };
            match victim {
                Some(victim) => {
                    self.remove_registration(user, &victim, Removal::Evicted, now, &mut out)
                }
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
        self.drain_owed(now, &mut out);
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
        self.touch(user, now);
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
            self.remove_registration(user, &key, Removal::Disabled, now, &mut out);
        }
        self.drain_owed(now, &mut out);
        out
    }

    /// A session of `user` bound `resource` (a login): the device is connected, so the
    /// `message-count` of registrations enabled from that resource starts again at 0.
    pub fn session_started(
        &mut self,
        user: &str,
        session: SessionId,
        resource: &str,
        now: Instant,
    ) {
        self.touch(user, now);
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
        let keys: Vec<RegKey> = self
            .users
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|s| s.reg.resource.as_deref() == Some(resource))
                    .map(|s| s.reg.key.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.awake(user, &keys);
    }

    /// A session of `user` bound through XEP-0386 Bind2 with the resource its XEP-0388 client
    /// id derives (the same device as before, RULES.md §15): the registrations that device
    /// enabled (`resource`) are attached to `session` as if it had enabled them again —
    /// taken from an older session that still holds them. Call after [`Engine::session_started`].
    pub fn reattach_device(
        &mut self,
        user: &str,
        session: SessionId,
        resource: &str,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.touch(user, now);
        let found: Vec<(RegKey, Option<SessionId>)> = self
            .users
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|s| s.reg.resource.as_deref() == Some(resource))
                    .map(|s| (s.reg.key.clone(), s.session))
                    .collect()
            })
            .unwrap_or_default();
        for (key, old) in found {
            if let Some(old) = old.filter(|&o| o != session) {
                self.detach_from_session(old, &key, now, &mut out);
            }
            if let Some(state) = self.users.get_mut(user).and_then(|m| m.get_mut(&key)) {
                state.session = Some(session);
            }
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
        }
        out
    }

    /// The session is gone (logout, or hibernation expired): its registrations become
    /// unattached (rule b applies to them from now on) and its timers are cancelled.
    pub fn session_ended(&mut self, session: SessionId, now: Instant) -> Vec<Action> {
        if let Some(sess) = self.sessions.remove(&session) {
            self.touch(&sess.user, now);
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
    pub fn acked(&mut self, session: SessionId, now: Instant) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        if !matches!(sess.mode, Mode::AckOverdue { .. }) {
            return;
        }
        sess.mode = Mode::Live;
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        self.touch(&user, now);
        self.awake(&user, &regs);
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
        let user = sess.user.clone();
        let cfg = self.config_for(&user);
        let (timeout, max_timeout) = (cfg.hibernation_timeout, cfg.max_hibernation_timeout);
        let Some(sess) = self.sessions.get_mut(&session) else {
            return out;
        };
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
        self.touch(&user, now);
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
                let at = now + max_timeout;
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
        if regs.is_empty() {
            return out;
        }
        self.touch(&user, now);
        for key in regs {
            if let Some(imp) = self.push_one(&user, &key, stanza, now, &mut out) {
                self.note_push(session, imp, now, &mut out);
            }
        }
        out
    }

    /// Rule a, "session resumed": nothing more is pushed for it; retries waiting for its
    /// registrations are cancelled and their `message-count` starts again.
    pub fn resumed(&mut self, session: SessionId, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(sess) = self.sessions.get_mut(&session) else {
            return out;
        };
        if let Mode::Hibernated(h) = &sess.mode {
            if let Some(t) = h.wake_timer {
                self.timers.remove(&t);
            }
        }
        sess.mode = Mode::Live;
        let (user, regs) = (sess.user.clone(), sess.regs.clone());
        self.touch(&user, now);
        self.awake(&user, &regs);
        for key in &regs {
            self.drop_retries(&user, key);
        }
        self.drain_owed(now, &mut out);
        out
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
        self.touch(user, now);
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
        self.archived_for_in_cluster(user, stanza, &[], now)
    }

    /// [`Engine::archived_for`] on one node of a cluster: `elsewhere` are the resources of
    /// `user`'s live or hibernated sessions on other nodes. A registration enabled by one of
    /// them is that session's (its node applies rule a), as one attached to a session here
    /// is, so rule b leaves it out.
    pub fn archived_for_in_cluster(
        &mut self,
        user: &str,
        stanza: &StanzaInfo,
        elsewhere: &[String],
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let urgent = stanza.importance == Importance::Urgent;
        let targets: Vec<(RegKey, Option<SessionId>)> = self
            .users
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|s| {
                        let remote = s
                            .reg
                            .resource
                            .as_ref()
                            .is_some_and(|r| elsewhere.contains(r));
                        urgent || (s.session.is_none() && !remote)
                    })
                    .map(|s| (s.reg.key.clone(), s.session))
                    .collect()
            })
            .unwrap_or_default();
        self.push_direct(user, targets, stanza, now, &mut out);
        out
    }

    /// Rule c: a message stored offline is pushed to every registration of `user`.
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

    /// A groupchat message to `user`'s bare JID found no session online (groupchat is
    /// never stored offline): treated like rule c, every registration is pushed, so the
    /// user learns the room is talking.
    pub fn groupchat_unrouted(
        &mut self,
        user: &str,
        stanza: &StanzaInfo,
        now: Instant,
    ) -> Vec<Action> {
        self.stored_offline(user, stanza, now)
    }

    /// Rule d (RULES.md §4a): the room `msg.room` broadcast a groupchat message and
    /// `member` (a local member of the room) has no session joined in it, so neither rule a
    /// nor the user's archive sees it. [`crate::groupchat::decide`] says whether it is
    /// pushed (joined, own message, unimportant, XEP-0492 setting, mention); if so, it goes
    /// to the registrations whose device is asleep (§1: no session, or a session that
    /// hibernates or leaves an ack overdue — such a session is not in the room, so its
    /// queue will never carry the message), coalesced (§6), counted and deduplicated (§7)
    /// like rule b's. `stanza.summary.sender` is the room's bare JID (the summary names the
    /// room). Returns the decision with the actions.
    pub fn room_message(
        &mut self,
        member: &crate::groupchat::Member<'_>,
        msg: &RoomMessage<'_>,
        stanza: &StanzaInfo,
        now: Instant,
    ) -> (crate::groupchat::Decision, Vec<Action>) {
        let mut out = Vec::new();
        let decision =
            crate::groupchat::decide(member, msg.room, msg.members_only, msg.sender, msg.message);
        if !matches!(decision, crate::groupchat::Decision::Push { .. }) {
            return (decision, out);
        }
        let user = member.bare;
        let keys: Vec<RegKey> = self
            .users
            .get(user)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let targets: Vec<(RegKey, Option<SessionId>)> = keys
            .into_iter()
            .filter(|k| self.asleep(user, k))
            .map(|k| {
                let session = self
                    .users
                    .get(user)
                    .and_then(|m| m.get(&k))
                    .and_then(|s| s.session);
                (k, session)
            })
            .collect();
        self.push_direct(user, targets, stanza, now, &mut out);
        (decision, out)
    }

    /// Admin ping: a push without a stanza (count unchanged, no body) to every registration.
    pub fn ping(&mut self, user: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.touch(user, now);
        for (key, count) in self.counts(user, None, None) {
            let content = Content {
                count,
                priority: Some(Priority::Low),
                ..Content::default()
            };
            self.publish(user, &key, content, now, &mut out);
        }
        out
    }

    /// `herald push test`: one publish (count unchanged, no body) to each registration of
    /// `user` (only those of app server `jid`, and `node`, when given), sent whatever the
    /// shares of `max_pending` and never retried, so its reply (or its absence) is the app
    /// server's first answer. The reply still counts like any other.
    pub fn test_push(
        &mut self,
        user: &str,
        jid: Option<&str>,
        node: Option<&str>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.touch(user, now);
        let last = self.config_for(user).max_attempts.max(1);
        for (key, count) in self.counts(user, jid, node) {
            let content = Content {
                count,
                priority: Some(Priority::Low),
                ..Content::default()
            };
            self.track(user, &key);
            self.emit(user, &key, content, last, now, &mut out);
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
        self.touch(&p.user, now);
        let o = &mut self.outcomes;
        match &reply {
            Reply::Result => o.result += 1,
            Reply::Error { wait: true, .. } => o.wait += 1,
            Reply::Error { wait: false, .. } => o.cancel += 1,
        }
        match reply {
            Reply::Result => {
                self.untrack(&p.user, &p.key);
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
                self.untrack(&p.user, &p.key);
                let max = self.config_for(&p.user).max_errors;
                if let Some(state) = self.reg_mut(&p.user, &p.key) {
                    state.reg.error_count = state.reg.error_count.saturating_add(1);
                    let count = state.reg.error_count;
                    if count >= max {
                        let why = Removal::Errors(condition);
                        self.remove_registration(&p.user, &p.key, why, now, &mut out);
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
        }
        self.drain_owed(now, &mut out);
        out
    }

    /// Fires every timer due at `now`: reply timeouts, retries, catch-up and
    /// wake-before-expiry pushes, the eviction sweep.
    pub fn poll(&mut self, now: Instant, _unix_secs: i64) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, timer) = entry.remove_entry();
            match timer {
                Timer::Reply(iq_id) => {
                    if let Some(p) = self.pending.remove(&iq_id) {
                        self.outcomes.timeout += 1;
                        self.retry_or_drop(p, "timeout", now, &mut out);
                    }
                }
                Timer::Retry(id) => {
                    if let Some(r) = self.retries.remove(&id) {
                        self.emit(&r.user, &r.key, r.content, r.attempt, now, &mut out);
                    }
                }
                Timer::Wake(session) => self.wake(session, now, &mut out),
                Timer::CatchUp(user, reg) => self.catch_up(&user, &reg, key, now, &mut out),
                Timer::Sweep => {
                    self.sweep = None;
                    self.evict_idle(now);
                }
            }
        }
        self.drain_owed(now, &mut out);
        out
    }

    /// When [`Engine::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|k| k.0)
    }

    /// The next timer that can send a push or change a session (all but the idle-user
    /// sweep): None means nothing more will happen without a new event.
    pub fn next_push_timer(&self) -> Option<Instant> {
        self.timers
            .iter()
            .find(|(_, t)| !matches!(t, Timer::Sweep))
            .map(|(k, _)| k.0)
    }

    /// The registration an in-flight publish was sent to, so the caller can check that a
    /// reply comes from its app server before passing it to [`Engine::reply`].
    pub fn pending_key(&self, iq_id: &str) -> Option<&RegKey> {
        self.pending.get(iq_id).map(|p| &p.key)
    }

    /// How the publishes so far ended.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes
    }

    /// Publishes awaiting a reply or waiting to be retried.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.retries.len()
    }

    /// Pushes waiting for a slot in their user's or app server's share.
    pub fn owed_len(&self) -> usize {
        self.owed.len()
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

    /// Something happened for `user`: its state is not idle; the eviction sweep runs.
    fn touch(&mut self, user: &str, now: Instant) {
        if !self.users.contains_key(user) {
            return;
        }
        self.touched.insert(user.to_owned(), now);
        if self.sweep.is_none() {
            let at = now + self.cfg.idle_user_ttl;
            self.sweep = Some(self.schedule(at, Timer::Sweep));
        }
    }

    /// Evicts users with no session, nothing pending, owed or about to be caught up, and
    /// nothing happening for `idle_user_ttl`. Their registrations are in the store; the
    /// server loads them again on the user's next event.
    fn evict_idle(&mut self, now: Instant) {
        let ttl = self.cfg.idle_user_ttl;
        let mut busy: HashSet<&str> = HashSet::new();
        busy.extend(self.sessions.values().map(|s| s.user.as_str()));
        busy.extend(self.pending_by_user.keys().map(String::as_str));
        busy.extend(self.owed.iter().map(|(u, _)| u.as_str()));
        let mut idle = Vec::new();
        let mut waiting = false;
        for (user, regs) in &self.users {
            let quiet = !busy.contains(user.as_str())
                && regs
                    .values()
                    .all(|s| s.window.as_ref().is_none_or(|w| w.timer.is_none()));
            if !quiet {
                // Busy users are looked at again after their next event (`touch`).
                continue;
            }
            match self.touched.get(user) {
                Some(t) if now.saturating_duration_since(*t) < ttl => waiting = true,
                _ => idle.push(user.clone()),
            }
        }
        for user in idle {
            self.users.remove(&user);
            self.touched.remove(&user);
            self.displayed.remove(&user);
        }
        if waiting {
            self.sweep = Some(self.schedule(now + ttl, Timer::Sweep));
        }
    }

    /// The registrations of `user` matching the filters, with their counts.
    fn counts(&self, user: &str, jid: Option<&str>, node: Option<&str>) -> Vec<(RegKey, u32)> {
        self.users
            .get(user)
            .map(|m| {
                m.values()
                    .filter(|s| {
                        jid.is_none_or(|j| s.reg.key.jid == j)
                            && node.is_none_or(|n| s.reg.key.node == n)
                    })
                    .map(|s| (s.reg.key.clone(), s.message_count))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The devices behind `keys` are connected: counts start over, nothing covered or
    /// owed is sent any more.
    fn awake(&mut self, user: &str, keys: &[RegKey]) {
        let mut timers = Vec::new();
        let mut owed = false;
        if let Some(map) = self.users.get_mut(user) {
            for key in keys {
                if let Some(state) = map.get_mut(key) {
                    owed |= state.owed.is_some();
                    timers.extend(state.reset_awake());
                }
            }
        }
        for t in timers {
            self.timers.remove(&t);
        }
        if owed {
            self.owed.retain(|(u, k)| !(u == user && keys.contains(k)));
        }
    }

    /// Forgets a (replaced or removed) registration's window and owed push.
    fn forget_window(&mut self, user: &str, key: &RegKey, state: &mut RegState) {
        if let Some(t) = state.window.take().and_then(|w| w.timer) {
            self.timers.remove(&t);
        }
        if state.owed.take().is_some() {
            self.owed.retain(|(u, k)| !(u == user && k == key));
        }
    }

    /// What a push for `stanza` says, given the registration's count after counting it.
    fn content_for(&self, user: &str, count: u32, stanza: &StanzaInfo) -> Content {
        let cfg = self.config_for(user);
        let sender = if cfg.with_sender {
            stanza.summary.sender.clone()
        } else {
            None
        };
        let real_body = stanza
            .summary
            .body
            .clone()
            .filter(|b| cfg.with_body && !b.is_empty());
        let important = stanza.importance.is_important();
        let body = real_body.or_else(|| {
            (important && !cfg.important_body.is_empty()).then(|| cfg.important_body.clone())
        });
        Content {
            count,
            sender,
            body,
            priority: Some(if important {
                Priority::High
            } else {
                Priority::Low
            }),
        }
    }

    /// A push that ends the extended hibernation: an important one, or any one when
    /// important pushes are not told apart (`important_body` empty).
    fn qualifies(&self, user: &str, importance: Importance) -> bool {
        importance.is_important() || self.config_for(user).important_body.is_empty()
    }

    /// One push per registration of `session` for the stanzas of `batch` it has not seen
    /// (coalesced like any push: inside an open window it becomes the catch-up).
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
        let cap = self.config_for(&user).dedup_per_registration;
        // What another device already displayed tells this one nothing new (RULES.md §14).
        let shown: Vec<bool> = batch.iter().map(|s| self.was_displayed(&user, s)).collect();
        let mut best: Option<Importance> = None;
        for key in regs {
            let Some(state) = self.reg_mut(&user, &key) else {
                continue;
            };
            // The push shows the latest important stanza, else the latest one. What the
            // device caused itself is skipped: it tells the device nothing new.
            let mut pick: Option<&StanzaInfo> = None;
            for (stanza, _) in batch.iter().zip(&shown).filter(|(s, d)| !s.own && !**d) {
                if !state.dedup.insert(stanza.id, cap) {
                    continue;
                }
                if stanza.importance.is_important() {
                    state.count_unread(stanza, cap);
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
            let count = state.message_count;
            let content = self.content_for(&user, count, pick);
            if self.offer(
                &user,
                &key,
                pick.importance,
                content,
                source(pick),
                now,
                out,
            ) {
                best = best.max(Some(pick.importance));
            }
        }
        if let Some(imp) = best {
            self.note_push(session, imp, now, out);
        }
    }

    /// Pushes (or covers) one stanza for one registration. Returns the importance when a
    /// push went out now.
    fn push_one(
        &mut self,
        user: &str,
        key: &RegKey,
        stanza: &StanzaInfo,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<Importance> {
        if stanza.own || self.was_displayed(user, stanza) {
            return None;
        }
        let cap = self.config_for(user).dedup_per_registration;
        let state = self.reg_mut(user, key)?;
        // Never twice: whatever path saw this stanza first has pushed or covered it.
        if !state.dedup.insert(stanza.id, cap) {
            return None;
        }
        if stanza.importance.is_important() {
            state.count_unread(stanza, cap);
        }
        let count = state.message_count;
        let content = self.content_for(user, count, stanza);
        self.offer(
            user,
            key,
            stanza.importance,
            content,
            source(stanza),
            now,
            out,
        )
        .then_some(stanza.importance)
    }

    /// Whether `user` displayed `stanza`'s chat up to it or later on some device.
    fn was_displayed(&self, user: &str, stanza: &StanzaInfo) -> bool {
        let Some(chat) = stanza.summary.sender.as_deref() else {
            return false;
        };
        self.displayed
            .get(user)
            .is_some_and(|d| d.covers(chat, stanza.at))
    }

    /// XEP-0490: `user` displayed `chat` up to `upto` (unix microseconds: the server's
    /// time of the marked message, or of the marker when it marks the chat's latest
    /// message) on some device. What that covers leaves every registration's
    /// `message-count`; a sleeping device whose count dropped gets one unimportant push
    /// with the new count, coalesced like any push, so its badge can clear (RULES.md §14).
    pub fn displayed(&mut self, user: &str, chat: &str, upto: i64, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self
            .displayed
            .entry(user.to_owned())
            .or_default()
            .advance(chat, upto)
        {
            return out;
        }
        self.touch(user, now);
        let keys: Vec<RegKey> = self
            .users
            .get(user)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            let asleep = self.asleep(user, &key);
            let Some(state) = self.reg_mut(user, &key) else {
                continue;
            };
            let before = state.unread.len();
            state.unread.retain(|(c, at)| !(c == chat && *at <= upto));
            let gone = before - state.unread.len();
            if gone == 0 {
                continue;
            }
            state.message_count = state
                .message_count
                .saturating_sub(u32::try_from(gone).unwrap_or(u32::MAX));
            if asleep {
                self.badge(user, &key, chat, upto, now, &mut out);
            }
        }
        out
    }

    /// A sleeping device's count dropped: one unimportant push with the new count. Inside
    /// an open window it rides on the catch-up (whose body is dropped if the marker covers
    /// the stanza it showed), else it goes out now and opens an unimportant window, so a
    /// user reading ten chats on the desktop wakes the phone at most twice per window.
    fn badge(
        &mut self,
        user: &str,
        key: &RegKey,
        chat: &str,
        upto: i64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let span = self.config_for(user).coalesce_window;
        let Some(state) = self.reg_mut(user, key) else {
            return;
        };
        let badge = Content {
            count: state.message_count,
            priority: Some(Priority::Low),
            ..Content::default()
        };
        let mut arm = None;
        match state.window.as_mut() {
            Some(w) if w.end > now => {
                let covered = w
                    .catch_up_src
                    .as_ref()
                    .is_some_and(|(c, at)| c == chat && *at <= upto);
                match w.catch_up.as_mut() {
                    Some(c) if !covered => c.count = badge.count,
                    _ => {
                        // Nothing pending, or what was pending is displayed now.
                        w.catch_up = Some(badge);
                        w.catch_up_src = None;
                    }
                }
                if w.timer.is_none() {
                    arm = Some(w.end);
                }
            }
            _ => {
                let cancel = state.window.take().and_then(|w| w.timer);
                state.window = Some(Window {
                    end: now + span,
                    important: false,
                    urgent: false,
                    catch_up: None,
                    catch_up_src: None,
                    timer: None,
                });
                if let Some(t) = cancel {
                    self.timers.remove(&t);
                }
                self.publish(user, key, badge, now, out);
                return;
            }
        }
        if let Some(at) = arm {
            let t = self.schedule(at, Timer::CatchUp(user.to_owned(), key.clone()));
            if let Some(w) = self.reg_mut(user, key).and_then(|s| s.window.as_mut()) {
                w.timer = Some(t);
            }
        }
    }

    /// Coalescing (see [`Window`]): whether a push for a stanza of `importance` goes out
    /// now (it then leads a new window) or is covered by the open window (an important one
    /// is owed the catch-up at the window's end). A push leads when no window is open, when
    /// it is the first important one after an unimportant leading push, or when it is the
    /// first incoming call of the window: a call rings now.
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        user: &str,
        key: &RegKey,
        importance: Importance,
        content: Content,
        src: Option<(String, i64)>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        let span = self.config_for(user).coalesce_window;
        let important = importance.is_important();
        let urgent = importance == Importance::Urgent;
        let Some(state) = self.reg_mut(user, key) else {
            return false;
        };
        let mut arm = None;
        let mut cancel = None;
        let lead = match state.window.as_mut() {
            Some(w) if w.end > now => {
                let lead = (urgent && !w.urgent) || (important && !w.important);
                if lead {
                    cancel = w.timer.take();
                } else if important {
                    w.catch_up = Some(content.clone());
                    w.catch_up_src = src;
                    if w.timer.is_none() {
                        arm = Some(w.end);
                    }
                }
                lead
            }
            Some(w) => {
                cancel = w.timer.take();
                true
            }
            None => true,
        };
        if lead {
            state.window = Some(Window {
                end: now + span,
                important,
                urgent,
                catch_up: None,
                catch_up_src: None,
                timer: None,
            });
        }
        if let Some(t) = cancel {
            self.timers.remove(&t);
        }
        if let Some(at) = arm {
            let t = self.schedule(at, Timer::CatchUp(user.to_owned(), key.clone()));
            if let Some(w) = self.reg_mut(user, key).and_then(|s| s.window.as_mut()) {
                w.timer = Some(t);
            }
        }
        if lead {
            self.publish(user, key, content, now, out);
        }
        lead
    }

    /// The window of a registration ended with important stanzas covered: one catch-up push
    /// with the count of now, if its device is still asleep. It leads the next window, so a
    /// flood yields one push per window.
    fn catch_up(
        &mut self,
        user: &str,
        key: &RegKey,
        timer: TimerKey,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let asleep = self.asleep(user, key);
        let span = self.config_for(user).coalesce_window;
        let Some(state) = self.reg_mut(user, key) else {
            return;
        };
        let Some(w) = state.window.as_mut() else {
            return;
        };
        if w.timer != Some(timer) {
            return;
        }
        w.timer = None;
        let Some(mut content) = w.catch_up.take() else {
            return;
        };
        if !asleep {
            return;
        }
        content.count = state.message_count;
        state.window = Some(Window {
            end: now + span,
            // A badge update (RULES.md §14) is unimportant: an important stanza after it
            // still goes out at once.
            important: content.priority != Some(Priority::Low),
            urgent: false,
            catch_up: None,
            catch_up_src: None,
            timer: None,
        });
        self.publish(user, key, content, now, out);
    }

    /// Whether the device behind a registration cannot be reading: no session, or its
    /// session hibernates or leaves an ack overdue.
    fn asleep(&self, user: &str, key: &RegKey) -> bool {
        let session = self
            .users
            .get(user)
            .and_then(|m| m.get(key))
            .and_then(|s| s.session);
        match session.and_then(|sid| self.sessions.get(&sid)) {
            None => true,
            Some(s) => !matches!(s.mode, Mode::Live),
        }
    }

    fn push_direct(
        &mut self,
        user: &str,
        targets: Vec<(RegKey, Option<SessionId>)>,
        stanza: &StanzaInfo,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !targets.is_empty() {
            self.touch(user, now);
        }
        for (key, session) in targets {
            if let Some(imp) = self.push_one(user, &key, stanza, now, out) {
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
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        if !self.qualifies(&user, importance) {
            return;
        }
        let timeout = self.config_for(&user).hibernation_timeout;
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
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        let cfg = self.config_for(&user);
        let (enabled, margin) = (cfg.wake_before_expiry, cfg.wake_margin);
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
                priority: Some(Priority::Low),
                ..Content::default()
            };
            self.publish(&user, &key, content, now, out);
        }
    }

    /// The app server's domain: its share of `max_pending` is counted by it.
    fn app_of(key: &RegKey) -> &str {
        let bare = bare_jid(&key.jid);
        bare.rsplit_once('@').map_or(bare, |(_, d)| d)
    }

    /// Whether a new publish for (user, key) fits the global budget and both shares.
    fn admits(&self, user: &str, key: &RegKey) -> bool {
        self.pending_len() < self.cfg.max_pending
            && self.pending_by_user.get(user).copied().unwrap_or(0)
                < self.config_for(user).max_pending_per_user
            && self
                .pending_by_app
                .get(Self::app_of(key))
                .copied()
                .unwrap_or(0)
                < self.cfg.max_pending_per_app_server
    }

    fn track(&mut self, user: &str, key: &RegKey) {
        *self.pending_by_user.entry(user.to_owned()).or_default() += 1;
        *self
            .pending_by_app
            .entry(Self::app_of(key).to_owned())
            .or_default() += 1;
    }

    /// A publish is finished (answered, given up or dropped): its slot is free.
    fn untrack(&mut self, user: &str, key: &RegKey) {
        if let Some(n) = self.pending_by_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_by_user.remove(user);
            }
        }
        let app = Self::app_of(key);
        if let Some(n) = self.pending_by_app.get_mut(app) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_by_app.remove(app);
            }
        }
    }

    /// A new push: sent now if it fits the budget, else owed to the registration (the
    /// latest one replaces an older owed push; its count is taken when it goes out).
    fn publish(
        &mut self,
        user: &str,
        key: &RegKey,
        content: Content,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.admits(user, key) {
            self.track(user, key);
            self.emit(user, key, content, 1, now, out);
            return;
        }
        let Some(state) = self.reg_mut(user, key) else {
            return;
        };
        // Bounded: one owed push per registration. A full share delays only this user's
        // (or this app server's) pushes; nobody else's.
        let queued = state.owed.replace(content).is_some();
        if !queued {
            self.owed.push_back((user.to_owned(), key.clone()));
        }
    }

    /// Sends owed pushes that now fit, oldest first. Bounded work per call; a push that
    /// still does not fit goes to the back.
    fn drain_owed(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut budget = self.owed.len().min(64);
        while budget > 0 && self.pending_len() < self.cfg.max_pending {
            budget -= 1;
            let Some((user, key)) = self.owed.pop_front() else {
                break;
            };
            let fits = self.admits(&user, &key);
            let Some(state) = self.reg_mut(&user, &key) else {
                continue;
            };
            if state.owed.is_none() {
                continue;
            }
            if !fits {
                self.owed.push_back((user, key));
                continue;
            }
            let count = state.message_count;
            let Some(mut content) = state.owed.take() else {
                continue;
            };
            content.count = count;
            self.track(&user, &key);
            self.emit(&user, &key, content, 1, now, out);
        }
    }

    /// Emits a publish (its slot already counted) and waits for its reply.
    fn emit(
        &mut self,
        user: &str,
        key: &RegKey,
        content: Content,
        attempt: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let n = self.next_seq();
        let cfg = self.config_for(user);
        let (domain, reply_timeout) = (cfg.domain.clone(), cfg.reply_timeout);
        let Some(state) = self.users.get(user).and_then(|m| m.get(key)) else {
            self.untrack(user, key);
            return;
        };
        let iq_id = format!("{}-{n}", self.id_prefix);
        let iq = build_publish(
            &domain,
            &iq_id,
            key,
            &content,
            state.reg.publish_options.as_ref(),
        );
        let timer = self.schedule(now + reply_timeout, Timer::Reply(iq_id.clone()));
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
            self.untrack(&p.user, &p.key);
            return;
        }
        let cfg = self.config_for(&p.user);
        let (max_attempts, backoff) = (cfg.max_attempts, cfg.retry_backoff);
        if p.attempt < max_attempts {
            let shift = p.attempt.saturating_sub(1).min(16);
            let delay = backoff.saturating_mul(1u32 << shift);
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
            self.outcomes.dropped += 1;
            self.untrack(&p.user, &p.key);
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
        let mut dropped = 0;
        self.retries.retain(|_, r| {
            let drop = r.user == user && &r.key == key;
            if drop {
                timers.remove(&r.timer);
                dropped += 1;
            }
            !drop
        });
        for _ in 0..dropped {
            self.untrack(user, key);
        }
    }

    fn drop_pending(&mut self, user: &str, key: &RegKey) {
        let timers = &mut self.timers;
        let mut dropped = 0;
        self.pending.retain(|_, p| {
            let drop = p.user == user && &p.key == key;
            if drop {
                timers.remove(&p.timer);
                dropped += 1;
            }
            !drop
        });
        for _ in 0..dropped {
            self.untrack(user, key);
        }
    }

    /// Removes a registration everywhere: store, its session, in-flight publishes, retries.
    fn remove_registration(
        &mut self,
        user: &str,
        key: &RegKey,
        reason: Removal,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(mut state) = self.users.get_mut(user).and_then(|m| m.remove(key)) else {
            return;
        };
        self.forget_window(user, key, &mut state);
        out.push(Action::DeleteRegistration {
            user: user.to_owned(),
            key: key.clone(),
            reason,
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
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            return;
        };
        let timeout = self.config_for(&user).hibernation_timeout;
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
