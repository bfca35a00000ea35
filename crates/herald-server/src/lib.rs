//! The Herald runtime: listeners, session tasks, the router and the feature modules.
//! Protocol rules that can be pure live in herald-proto, herald-session and herald-push;
//! payload parsing (and dialback keys) in herald-xep; the configuration file in
//! herald-config; bytes on the wire, certificates and s2s name resolution in
//! herald-transport; this crate wires them to sockets, timers and the store.
//!
//! ## Layout, in the order a stanza flows
//!
//! | folder | modules | owns |
//! |---|---|---|
//! | `lib.rs` | [`Shared`], [`Running`], [`start`], [`standard_hooks`] | start, stop, the state every task shares, which handler runs for which hook |
//! | [`transport`] | `listener`; `conn`, `tls_io`, `tls`, `inbox` re-exported from herald-transport | accept loops, bytes, TLS |
//! | [`c2s`] | accept loop, `negotiate` (drives `herald_session::negotiate`'s machine, legacy SASL and SASL2), `fast` (XEP-0484 tokens in the store for it), `session` (the task of one bound session; `session::sm` for XEP-0198 with answers from `herald_session::sm_nonza`, `session::csi`, `session::backlog`), `persist` (sessions across restarts) | a client's stream from first byte to last |
//! | [`routing`] | `routing` (where a stanza goes, RFC 6121 §8), `router` (who is online), `msg` (the messages between tasks), `hooks` (typed events and their handler lists), `durable` (durable-before-acked tickets) | getting a stanza to the right task, knowing no feature |
//! | [`features`] | `message`, `presence`, `roster`, `blocking`, `carbons`, `mam`, `offline`, `push` (the `herald push test` bookkeeping is `herald_push::diag`), `pep` (XEP-0163), `vcard`, `avatar` (XEP-0398 PEP avatar ↔ vCard photo, above `pep` and `vcard`), `private` (with XEP-0048 bookmarks as XEP-0402 items), `bookmarks` (XEP-0411: the XEP-0048 PEP node as a view of the XEP-0402 one, above `avatar`), `mds` (XEP-0490 server assist, above `pep`), `register` (XEP-0077: password change, removal, registration before login), `iq` (the IQ table, disco with the features served beyond it, ping, version, time), `muc` (the XEP-0045 service; rules in `herald_muc`), `ctx` (what a handler sees of a session) | what the server does with stanzas |
//! | [`federation`] | `s2s`, `component` | other servers and external components |
//! | [`cluster`] | heartbeat and node loss, the registry writer and mirror, per-node delivery streams, resumption hand-off, shared state | cluster mode (`[cluster]`): several nodes on one PostgreSQL and one Redis; the pure decisions are `herald_cluster`'s |
//! | [`admin`] | `admin_socket`, `accounts` | operators' commands on the running server (the CLI side is `herald::admin`) |
//! | [`http`] | the HTTP listeners and routes, `upload` (XEP-0363 PUT/GET, expiry), `metrics` (`/metrics`, `/health`), `invite` (the `/invite/TOKEN` landing page; its form registers through `features::register::create`), `websocket` (RFC 7395 upgrades handed to `c2s::run`, XEP-0156 host-meta) | HTTP clients; the slot and TURN IQs are lines of the IQ table (`features::iq::upload`, `features::iq::extdisco`) |
//!
//! The module graph has no circle (`tests/layout.rs` checks it): the leaf modules
//! (`routing::msg`, `routing::hooks`, `routing::durable`, `features::ctx`) name no feature or
//! session; `routing` hands stanzas to features only through the hooks registered in
//! [`standard_hooks`]; features see a session only as a `SessionCtx` and ask it for what
//! they need done (`ctx::Effect`); the session task calls the features, never the reverse.
//! Store access goes through [`Shared::db`] on the role a module names (`herald_store::roles`).
//!
//! ## Adding a feature
//!
//! - An IQ: a handler in a feature module and one line in `features::iq::table::TABLE`
//!   (type, namespace, element, target, handler, disco features); disco#info follows.
//! - Reacting to stanzas routing delivers, or to what other features report (archived, stored
//!   offline, sessions starting and ending): a handler registered in [`standard_hooks`].
//! - Helpers and payload XML belong in herald-xep, rules in the pure crates.
//! - An IQ served only when configured: also a line in `features::iq::table::SWITCHED`.
//! - An HTTP service: a route in [`http::router`].

pub mod admin;
pub mod c2s;
pub mod cluster;
pub use herald_config as config;
pub mod features;
pub mod federation;
pub mod http;
pub use herald_store::group_commit;
pub mod routing;
pub mod transport;
pub use herald_xep as xep;
pub use herald_xep::stanza;

use admin::{accounts, admin_socket};
use c2s::{persist, session};
use features::{blocking, iq, mam, message, muc, pep, presence, push};
use federation::{component, s2s};
use routing::{hooks, msg, router};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use herald_proto::stream::Limits;
use herald_store::histogram::Histogram;
use herald_store::{roles, Backend, Role, SharedBackend, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

/// Every hook's handlers, in the order they run. A feature that acts on stanzas routing
/// delivers adds its handler here; nothing else registers hooks.
pub fn standard_hooks() -> hooks::Hooks {
    hooks::Hooks {
        message_to_local: vec![message::to_local],
        presence_to_local: vec![blocking::presence_in, pep::presence_in, presence::to_local],
        iq_to_local: vec![iq::to_local],
        to_server: vec![pep::to_server, iq::to_server],
        to_remote: vec![s2s::to_remote],
        archived: vec![push::on_archived],
        stored_offline: vec![push::on_stored_offline],
        delivery_failed: vec![push::on_delivery_failed],
        session_started: vec![push::on_session_started],
        session_hibernated: vec![push::on_session_hibernated],
        session_resumed: vec![push::on_session_resumed],
        session_ended: vec![push::on_session_ended],
        to_muc: vec![muc::to_muc],
        pep_published: vec![push::on_pep_published],
    }
}

/// Counters an operator looks at.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Failed SASL authentications.
    pub auth_failures: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Stanzas refused because a session's inbox was full.
    pub inbox_full: AtomicU64,
    /// Times a client went over its inbound rate (`[limits] c2s_*`) and reading paused.
    pub c2s_throttled: AtomicU64,
    /// WebSocket (RFC 7395) connections open now (a gauge; the rest of
    /// `herald_connections` is TCP).
    pub websocket_open: AtomicU64,
    /// Stanzas handed to routing.
    pub stanzas_routed: AtomicU64,
    /// Messages stored offline.
    pub offline_stored: AtomicU64,
    /// Offline messages delivered (deleted once the client had them).
    pub offline_delivered: AtomicU64,
    /// Push publishes sent (retries included).
    pub push_publishes: AtomicU64,
    /// From the event that made a push go out (a message archived, stored offline or queued
    /// for a sleeping session) to its publish being routed: the push task's queue and work.
    pub push_event_to_publish: Histogram,
    /// From a publish being routed to the app server's answer (answers only; timeouts are
    /// counted by outcome).
    pub push_publish_to_reply: Histogram,
    /// Registrations removed after too many errors.
    pub push_removed_errors: AtomicU64,
    /// Registrations evicted by `max_devices`.
    pub push_removed_evicted: AtomicU64,
    /// Registrations disabled by their client.
    pub push_removed_disabled: AtomicU64,
    /// Store calls' durations, per role.
    pub store: StoreLatency,
}

/// How long store calls take, one histogram per role (`herald_store::roles`), so an operator
/// sees which data is slow. Bounded: one entry per role type the code names.
#[derive(Default, Debug)]
pub struct StoreLatency {
    by_role: std::sync::RwLock<std::collections::BTreeMap<&'static str, Arc<Histogram>>>,
}

impl StoreLatency {
    /// The histogram of role `R`, made on its first call.
    pub fn of<R: ?Sized>(&self) -> Arc<Histogram> {
        let name = role_name::<R>();
        if let Some(h) = self
            .by_role
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return h.clone();
        }
        self.by_role
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default()
            .clone()
    }

    /// Every role called so far, by name.
    pub fn all(&self) -> Vec<(&'static str, Arc<Histogram>)> {
        self.by_role
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// A role's trait name (`AccountStore`, `Backend` for `roles::All`) from its type,
/// `dyn herald_store::account::AccountStore + Send + Sync`: roles are trait objects, so the
/// name is there without a list to keep in step with the roles.
fn role_name<R: ?Sized>() -> &'static str {
    let full = std::any::type_name::<R>();
    let t = full.strip_prefix("dyn ").unwrap_or(full);
    let t = t.split(" + ").next().unwrap_or(t);
    t.rsplit("::").next().unwrap_or(t)
}

/// State every task shares. Each field says who writes it and why it exists.
pub struct Shared {
    /// The configuration. Written once at start; read everywhere.
    pub cfg: Config,
    /// What routing hands stanzas for local accounts, the server and other domains to,
    /// registered once at start ([`standard_hooks`]); read by routing.
    pub hooks: hooks::Hooks,
    /// Who is online: bound resources, their presence flags, hibernation, components.
    /// Written by session tasks (bind, presence, hibernate, end) and component tasks; read by
    /// routing.
    pub router: router::Router,
    /// Cluster mode (`[cluster]`): this node's Redis membership; unset on a single node.
    pub cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    /// Persistent data (accounts, rosters, archive, offline, push, saved sessions). Written
    /// and read through `db`/`db_read` (blocking pool) and the archive writer.
    pub store: SharedBackend,
    /// TLS for c2s. Built at start; used by the c2s listener and STARTTLS.
    pub tls: Arc<rustls::ServerConfig>,
    /// Decoder limits from the configuration, for every connection's parser.
    pub limits: Limits,
    /// Failed-authentication records per account and peer address (c2s negotiation).
    pub auth_throttle: std::sync::Mutex<herald_session::throttle::Records>,
    /// Counters an operator looks at. Incremented by sessions and negotiation.
    pub metrics: Metrics,
    /// Open connections (all, per IP address, unauthenticated c2s per address) against
    /// `[limits]`. Counted by guards the accept loop and c2s negotiation hold.
    pub conns: transport::limits::ConnCounts,
    /// Events for the push task, the only owner of the push engine. Sent by sessions, the
    /// archive, offline storage and the admin socket.
    pub push: msg::PushHandle,
    /// Batched archive writes (group commit). Used by `mam::archive`; flushed at stop.
    pub archive: group_commit::ArchiveWriter,
    /// Whether the store's filesystem is below `[store] min_free_bytes`. Checked at start and
    /// every few seconds by a task of its own; read before every archive and offline write.
    pub space: herald_store::space::FreeSpace,
    /// Archive writes stamped but not yet committed, per user, so a MAM query waits for
    /// what was acknowledged before it. Written by `mam`.
    pub archive_inflight: mam::InFlight,
    /// Archive queries admitted (per account and in all) and the permits for their readers.
    /// Taken and given back by `mam` around each query.
    pub mam_queries: mam::Queries,
    /// Archive preferences per user (a cache in front of the store). Written by MAM prefs
    /// IQs; read for every archived message.
    pub mam_prefs: herald_store::cache::UserCache<herald_store::MamPrefs>,
    /// Blocklists per user (a cache in front of the store). Written by blocking IQs; read
    /// for every routed stanza.
    pub blocklists: herald_store::cache::UserCache<xep::blocking::Blocklist>,
    /// Avatar hashes (XEP-0153) per user, from their stored vCard (a cache in front of the
    /// store). Written by vCard sets; read for every available presence a user sends.
    pub avatars: herald_store::cache::UserCache<xep::vcard::Avatar>,
    /// Server-to-server federation: outgoing connections and verified incoming domains.
    /// Written by the s2s tasks.
    pub s2s: s2s::S2s,
    /// PEP notification recipients per account and verified XEP-0115 caps. Written by the
    /// `pep` feature from presence and caps answers; read when an account publishes.
    pub pep: pep::Pep,
    /// Accounts removed and sessions being ended by admin commands. Written by the admin
    /// socket; read by login and storage so nothing is stored for a removed account.
    pub accounts: accounts::AccountChanges,
    /// Accounts registered in band per peer address (`[registration] max_per_ip`). Written
    /// and read by `features::register` before login.
    pub registrations: std::sync::Mutex<herald_session::registrations::Registrations>,
    /// XEP-0198 resumption ids of resumable sessions. Written by sessions (enable, end);
    /// read by negotiation for `<resume/>`.
    resumable: std::sync::Mutex<std::collections::HashMap<String, msg::Resumable>>,
    /// The last `h` of sessions that ended, for `<failed h/>` on a late `<resume/>`.
    /// Written by sessions as they end and by crash recovery; read by negotiation.
    tombstones: std::sync::Mutex<herald_session::sm::Tombstones>,
    /// Session tasks running (live or hibernated), for a shutdown to wait on. Counted by
    /// `Session` creation and `Drop`.
    sessions_live: AtomicUsize,
    /// Woken when `sessions_live` changes (the shutdown waits on it).
    sessions_changed: tokio::sync::Notify,
    /// Sessions saved for the next start by a stop. Written by sessions as they park.
    pub(crate) saved_at_stop: AtomicUsize,
    /// Which session is delivering each user's offline store (see `offline::claim`), so one
    /// resource at a time gets the backlog. Written by sessions.
    pub(crate) offline_claims: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// The HTTP listeners' state: upload key and directory, uploads running, counters.
    /// Made at start; written by the HTTP handlers.
    pub http: http::HttpState,
    /// The XEP-0484 FAST token key (`data_dir/fast.key`, 32 bytes; empty with FAST off):
    /// tokens are derived from it and a stored salt. Read once at start.
    pub fast_key: Vec<u8>,
    /// Source of process-unique ids (sessions, stanzas).
    next_id: AtomicU64,
    /// Becomes true when the server stops; listeners and tasks watch it.
    shutdown: watch::Receiver<bool>,
    /// The group chat service's domain (`[muc] domain`, lower case), None when off. Written
    /// once at start; read by routing for every stanza to another domain.
    pub muc_domain: Option<String>,
    /// The server's XEP-0115 `<c/>` for c2s stream features, hashed from its disco#info on
    /// first use: that answer depends only on the configuration, so no login hashes it again.
    pub server_caps: std::sync::OnceLock<Option<herald_proto::Element>>,
    /// The group chat rooms. Loaded at start (persistent rooms), changed by `muc`.
    pub muc: muc::Service,
}

impl Shared {
    /// A process-unique id (sessions, stanzas).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The served domain.
    pub fn domain(&self) -> &str {
        &self.cfg.domain
    }

    /// Whether stamps (XEP-0359 stanza-ids, XEP-0203 delays) naming `domain` can only be
    /// ours: a served domain, or the group chat service, whose rooms stamp their messages.
    /// Such stamps are stripped from what clients, components and peers send.
    pub fn stamps_ours(&self, domain: &str) -> bool {
        self.cfg.is_local(domain)
            || self
                .muc_domain
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(domain))
    }

    /// Runs a blocking store call off the async threads, on the store in the role `R` the
    /// caller names (`|s: &roles::Roster| …`): a module reaches only the role it asks for.
    pub async fn db<R, T, F>(&self, f: F) -> Result<T, StoreError>
    where
        R: Role + ?Sized,
        T: Send + 'static,
        F: FnOnce(&R) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let latency = self.metrics.store.of::<R>();
        let timed = move || {
            let t = std::time::Instant::now();
            let r = f(R::of(&*store));
            latency.observe(t.elapsed());
            r
        };
        match tokio::task::spawn_blocking(timed).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Corrupt(format!("store task failed: {e}"))),
        }
    }

    /// The hibernated-or-live resumable session with this XEP-0198 id.
    pub fn resumable_get(&self, id: &str) -> Option<msg::Resumable> {
        self.resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// A new XEP-0198 resumption id; in cluster mode prefixed with this node's name
    /// ([`herald_cluster::sm_id_node`]).
    pub fn new_sm_id(&self) -> String {
        let id = herald_transport::conn::new_stream_id();
        match self.cluster.get() {
            Some(c) => format!("{}~{id}", c.node),
            None => id,
        }
    }

    /// The store flag a clean stop sets: one per node in cluster mode (the nodes share the
    /// database).
    pub fn clean_stop_flag(&self) -> String {
        match self.cluster.get() {
            Some(c) => format!("{}:{}", persist::CLEAN_STOP, c.node),
            None => persist::CLEAN_STOP.to_string(),
        }
    }

    /// Cluster mode: tells the other nodes that `user`'s cached `what` changed (they drop
    /// their copy); nothing on a single node.
    pub fn cluster_invalidate(&self, what: Cached, user: &str) {
        if let Some(c) = self.cluster.get() {
            cluster::invalidate(c, what, user);
        }
    }

    /// Cluster mode: hands a push rule b/c event (`kind`: `a` archived, `o` stored
    /// offline, `g` groupchat unrouted) to the node owning `user`'s push state; false when
    /// this node owns it (or on a single node).
    pub fn cluster_forward_push(
        &self,
        kind: char,
        user: &str,
        stanza: &herald_push::StanzaInfo,
    ) -> bool {
        cluster::forward_push(self, kind, user, stanza)
    }

    /// Registers a resumable session.
    pub fn resumable_insert(&self, id: String, r: msg::Resumable) {
        self.resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, r);
    }

    /// Forgets a resumable session.
    pub fn resumable_remove(&self, id: &str) {
        self.resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Forgets every resumable session of `bare`: a `<resume/>` naming one fails from now on
    /// (the sessions themselves are ended separately).
    pub fn resumable_forget_user(&self, bare: &str) {
        self.resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, r| r.bare != bare);
    }

    /// Remembers the last h of an ended session of `bare` (for `<failed h/>`), unless the
    /// account was removed.
    pub fn tombstone_insert(&self, id: &str, bare: &str, h: u32) {
        if self.account_gone(bare) {
            return;
        }
        self.tombstones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tombstone_key(id, bare), h, std::time::Instant::now());
    }

    /// The last h of `bare`'s ended session `id`, if remembered (another account learns
    /// nothing from presenting someone else's id).
    pub fn tombstone_take(&self, id: &str, bare: &str) -> Option<u32> {
        self.tombstones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&tombstone_key(id, bare), std::time::Instant::now())
    }

    /// Forgets the h of every ended session of `bare` (a removed account).
    pub fn tombstones_forget_user(&self, bare: &str) {
        let prefix = tombstone_key("", bare);
        self.tombstones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_where(|k| k.starts_with(&prefix));
    }

    /// Whether `bare` is an account an admin removed while the server runs (`herald user
    /// remove`): from the moment its sessions start ending, nothing is stored for it and its
    /// JID reaches no session. One created again under the same JID is a new account, with
    /// nothing cached of the old one. Costs one atomic load unless some account was removed.
    pub fn account_gone(&self, bare: &str) -> bool {
        match self.accounts.removal(bare) {
            None => false,
            Some(accounts::Removal::Ending) => true,
            Some(accounts::Removal::Deleted) => {
                match self.db_read(|s: &roles::Accounts| s.account_exists(bare)) {
                    Ok(false) => true,
                    Ok(true) => {
                        if self
                            .accounts
                            .unmark_removed(bare, accounts::Removal::Deleted)
                        {
                            self.mam_prefs.forget(bare);
                            self.blocklists.forget(bare);
                            self.avatars.forget(bare);
                        }
                        false
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "account lookup failed");
                        true
                    }
                }
            }
        }
    }

    /// Runs a short read on the calling thread. Point lookups on indexed keys are served from
    /// SQLite's page cache in microseconds, far less than the two thread switches a
    /// `spawn_blocking` hop costs (measured: context switches were 44 % of login CPU). Writes
    /// and scans still go through [`Shared::db`], and so does every read whose size a user
    /// or a peer controls (rosters, blocklists, subscription requests, offline pages, archive
    /// preferences, push registrations).
    ///
    /// Only these stay here, each one row of a fixed shape found by its key: whether an
    /// account exists (routing, [`Shared::account_gone`]), an account's SCRAM credentials
    /// (authentication), and the number of a user's offline messages (one indexed count,
    /// bounded by `[offline] max_per_user`).
    pub fn db_read<R: Role + ?Sized, T>(
        &self,
        f: impl FnOnce(&R) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let t = std::time::Instant::now();
        let r = f(R::of(&*self.store));
        self.metrics.store.of::<R>().observe(t.elapsed());
        r
    }

    /// A session task started.
    pub(crate) fn session_started(&self) {
        self.sessions_live.fetch_add(1, Ordering::AcqRel);
    }

    /// A session task ended.
    pub(crate) fn session_finished(&self) {
        self.sessions_live.fetch_sub(1, Ordering::AcqRel);
        self.sessions_changed.notify_waiters();
    }

    /// Session tasks still running.
    pub fn sessions_running(&self) -> usize {
        self.sessions_live.load(Ordering::Acquire)
    }

    /// Waits until no session task runs, or `limit` passed; true if none runs.
    async fn sessions_finished(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.sessions_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.sessions_running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.sessions_running() == 0;
            }
        }
    }

    /// Whether the server is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A tombstone loaded from the store (or made from a session that will not run again).
    pub(crate) fn tombstone_restore(&self, id: &str, bare: &str, h: u32, at: std::time::Instant) {
        self.tombstones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tombstone_key(id, bare), h, at);
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

fn tombstone_key(id: &str, bare: &str) -> String {
    format!("{bare} {id}")
}

/// A started server.
pub struct Running {
    /// The shared state (tests inspect it).
    pub shared: Arc<Shared>,
    /// Bound c2s STARTTLS address.
    pub c2s_addr: Option<SocketAddr>,
    /// Bound direct TLS address.
    pub direct_tls_addr: Option<SocketAddr>,
    /// Bound component address.
    pub component_addr: Option<SocketAddr>,
    /// Bound s2s (STARTTLS) address.
    pub s2s_addr: Option<SocketAddr>,
    /// Bound s2s direct TLS (XEP-0368) address.
    pub s2s_direct_tls_addr: Option<SocketAddr>,
    /// Bound HTTPS address.
    pub http_addr: Option<SocketAddr>,
    /// Bound plain HTTP address.
    pub http_plain_addr: Option<SocketAddr>,
    /// What start-up did with the sessions saved by the previous run.
    pub loaded: persist::Loaded,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    push_task: Option<tokio::task::JoinHandle<()>>,
    /// Cluster mode's tasks: they run until the node has left (its sessions are saved and
    /// written to the registry), so a long stop is not taken for a lost node.
    cluster_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// A graceful stop: stops accepting; saves every resumable session for the next start
    /// (its client sees a lost connection and resumes later) and ends the others with
    /// `system-shutdown`, storing offline what they had not delivered; waits for that, at
    /// most `shutdown_timeout`; drains the archive writer and the push statistics; records
    /// that the stop was clean (so the next start restores the saved sessions).
    pub async fn stop(self) {
        let Running {
            shared,
            shutdown,
            tasks,
            push_task,
            cluster_tasks,
            ..
        } = self;
        for t in &tasks {
            t.abort();
        }
        let _ = shutdown.send(true);
        let limit = shared.cfg.shutdown_timeout.0;
        if !shared.sessions_finished(limit).await {
            tracing::warn!(
                left = shared.sessions_running(),
                "shutdown_timeout passed with sessions still running"
            );
        }
        shared.archive.flush().await;
        // The sessions are saved or gone: no more beats (one after `leave` would bring the
        // node back to the others' eyes for a lease), then leave.
        for t in &cluster_tasks {
            t.abort();
        }
        if let Some(c) = shared.cluster.get() {
            c.leave(&shared).await;
        }
        shared.push.stop().await;
        if let Some(t) = push_task {
            let _ = t.await;
        }
        let flag = shared.clean_stop_flag();
        match shared
            .db(move |s: &roles::Sessions| {
                herald_store::SessionStore::set_flag(s, &flag, Some("1"))
            })
            .await
        {
            Ok(()) => tracing::info!(
                saved_sessions = shared.saved_at_stop.load(Ordering::Relaxed),
                "stopped cleanly"
            ),
            Err(e) => tracing::error!(error = %e, "could not record the clean stop"),
        }
    }
}

/// A per-account cache that changed (cluster mode: the other nodes drop their copy).
#[derive(Clone, Copy, Debug)]
pub enum Cached {
    /// The blocklist (XEP-0191).
    Blocklist,
    /// The archive preferences (XEP-0313).
    MamPrefs,
    /// The avatar hash (vCard).
    Avatar,
    /// The account was removed.
    Removed,
}

/// Opens the store, prepares TLS, binds the listeners and starts accepting.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    if cfg.store.is_postgres() {
        let options = cfg.store.pg_options();
        let store = tokio::task::spawn_blocking(move || herald_store::PgStore::open(&options))
            .await
            .context("store task")?
            // Not the URL: it may hold a password.
            .context("opening the PostgreSQL store ([store] url)")?;
        return start_with_store(cfg, store).await;
    }
    let data_dir = cfg.data_dir.clone();
    let mut options = cfg.store.options();
    options.mam_readers = cfg.mam.readers;
    let store = tokio::task::spawn_blocking(move || Store::open_with(&data_dir, &options))
        .await
        .context("store task")?
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    start_with_store(cfg, store).await
}

/// Like [`start`] with an already opened store (any backend).
pub async fn start_with_store(cfg: Config, store: impl Backend) -> anyhow::Result<Running> {
    // Before anything binds: Redis must answer, or the node would serve a cluster it is
    // not part of.
    let cluster = match &cfg.cluster {
        Some(_) => Some(cluster::Cluster::connect(&cfg).await?),
        None => None,
    };
    herald_transport::fd::raise_fd_limit(cfg.limits.max_connections);
    let store: SharedBackend = Arc::new(store);
    let tls = herald_transport::tls::server_config(&cfg)?;
    let limits = cfg.stream_limits();
    let auth_throttle =
        std::sync::Mutex::new(herald_session::throttle::Records::new(cfg.auth_throttle()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let c2s_l = bind(cfg.c2s.listen, "c2s.listen").await?;
    let dtls_l = bind(cfg.c2s.direct_tls_listen, "c2s.direct_tls_listen").await?;
    let comp_l = bind(cfg.components.listen, "components.listen").await?;
    let s2s_l = bind(cfg.s2s.listen, "s2s.listen").await?;
    let s2s_dtls_l = bind(cfg.s2s.direct_tls_listen, "s2s.direct_tls_listen").await?;
    let http_l = bind(cfg.http.listen, "http.listen").await?;
    let http_plain_l = bind(cfg.http.plain_listen, "http.plain_listen").await?;
    let http_addr = http_l.as_ref().map(|l| l.local_addr()).transpose()?;
    let http_state = http::HttpState::new(&cfg, http_addr)?;
    let s2s = s2s::S2s::new(&cfg)?;
    let fast_key = if cfg.fast.enabled {
        herald_transport::secret_file::load_or_create(&cfg.data_dir.join("fast.key"), 32, false)
            .context("the FAST token key ([fast])")?
    } else {
        Vec::new()
    };
    let admin_l = admin_socket::bind(&cfg)?;
    let (push, push_rx) = msg::channel(&cfg.csi.important);
    let tombstones =
        herald_session::sm::Tombstones::new(100_000, cfg.stream_management.tombstone_ttl.0);
    let conns = transport::limits::ConnCounts::new(
        cfg.limits.max_connections,
        cfg.limits.max_connections_per_ip,
        cfg.limits.max_unauthenticated_per_ip,
    )
    .with_rate(transport::limits::ConnectRate {
        per_second: cfg.limits.connection_rate_per_ip,
        burst: cfg.limits.connection_burst_per_ip,
    });
    let cfg_muc_domain = cfg.muc_domain();
    let muc_service = muc::Service::new(&cfg);
    let shared = Arc::new(Shared {
        server_caps: std::sync::OnceLock::new(),
        push,
        archive: group_commit::ArchiveWriter::start(store.clone(), cfg.mam.commit_delay.0),
        space: free_space(&cfg),
        archive_inflight: mam::InFlight::default(),
        mam_queries: mam::Queries::new(&cfg.mam),
        mam_prefs: herald_store::cache::UserCache::new(100_000),
        blocklists: herald_store::cache::UserCache::new(100_000),
        avatars: herald_store::cache::UserCache::new(100_000),
        s2s,
        fast_key,
        pep: Default::default(),
        accounts: Default::default(),
        registrations: std::sync::Mutex::new(herald_session::registrations::Registrations::new(
            cfg.registration.max_per_ip,
            cfg.registration.per_ip_window.0,
            cfg.registration.max_tracked_ips,
        )),
        resumable: Default::default(),
        tombstones: std::sync::Mutex::new(tombstones),
        offline_claims: Default::default(),
        sessions_live: AtomicUsize::new(0),
        sessions_changed: tokio::sync::Notify::new(),
        saved_at_stop: AtomicUsize::new(0),
        cfg,
        router: router::Router::default(),
        cluster: Default::default(),
        hooks: standard_hooks(),
        store,
        tls,
        limits,
        auth_throttle,
        metrics: Metrics::default(),
        conns,
        http: http_state,
        next_id: AtomicU64::new(1),
        shutdown: shutdown_rx,
        muc_domain: cfg_muc_domain,
        muc: muc_service,
    });
    // Most accounts never set archive preferences or block anyone: knowing which did, the
    // others cost no store lookup when their first message arrives.
    match shared.store.accounts_with_mam_prefs() {
        Ok(a) => shared.mam_prefs.know_stored(a),
        Err(e) => tracing::warn!(error = %e, "archive preferences will be read per account"),
    }
    match shared.store.accounts_with_blocklist() {
        Ok(a) => shared.blocklists.know_stored(a),
        Err(e) => tracing::warn!(error = %e, "blocklists will be read per account"),
    }
    match shared.store.accounts_with_vcard() {
        Ok(a) => shared.avatars.know_stored(a),
        Err(e) => tracing::warn!(error = %e, "avatar hashes will be read per account"),
    }
    let mut running = Running {
        shared: shared.clone(),
        c2s_addr: None,
        direct_tls_addr: None,
        component_addr: None,
        s2s_addr: None,
        s2s_direct_tls_addr: None,
        http_addr,
        http_plain_addr: None,
        loaded: persist::Loaded::default(),
        shutdown: shutdown_tx,
        tasks: Vec::new(),
        push_task: Some(tokio::spawn(push::run(shared.clone(), push_rx))),
        cluster_tasks: Vec::new(),
    };
    if let Some(c) = cluster {
        // Joined before the saved sessions are restored, so their binds reach the registry
        // and this node's mirror is filled before the first client arrives.
        shared.router.track_changes();
        c.set_restore(session::Session::restore);
        c.join(&shared)
            .await
            .context("joining the cluster (Redis, [cluster])")?;
        running.cluster_tasks = cluster::start(&shared, &c);
        tracing::info!(node = %c.node, "cluster node joined");
        let _ = shared.cluster.set(c);
    }
    // Before anything is accepted: a client resuming at once must find its session.
    let t = std::time::Instant::now();
    let to_wake;
    (running.loaded, to_wake) = persist::load(&shared, session::Session::restore)
        .await
        .context("loading the sessions saved by the previous run")?;
    if running.loaded != persist::Loaded::default() {
        tracing::info!(
            restored = running.loaded.restored,
            recovered = running.loaded.recovered,
            woken = running.loaded.to_wake,
            ms = t.elapsed().as_millis() as u64,
            "sessions of the previous run"
        );
    }
    let rooms = muc::load(&shared)
        .await
        .context("loading the saved group chat rooms")?;
    if rooms > 0 {
        tracing::info!(rooms, "group chat rooms loaded");
    }
    running
        .tasks
        .push(tokio::spawn(mam::retention(shared.clone())));
    shared.space.check();
    let s = shared.clone();
    running.tasks.push(tokio::spawn(async move {
        s.space.watch(std::time::Duration::from_secs(5)).await
    }));
    running
        .tasks
        .push(tokio::spawn(admin_socket::run(shared.clone(), admin_l)));
    if let Some(l) = c2s_l {
        running.c2s_addr = Some(l.local_addr()?);
        tracing::info!(addr = %l.local_addr()?, "c2s (STARTTLS) listening");
        running
            .tasks
            .push(tokio::spawn(c2s::accept_loop(shared.clone(), l, false)));
    }
    if let Some(l) = dtls_l {
        running.direct_tls_addr = Some(l.local_addr()?);
        tracing::info!(addr = %l.local_addr()?, "c2s (direct TLS) listening");
        running
            .tasks
            .push(tokio::spawn(c2s::accept_loop(shared.clone(), l, true)));
    }
    if let Some(l) = comp_l {
        running.component_addr = Some(l.local_addr()?);
        tracing::info!(addr = %l.local_addr()?, "components listening");
        running
            .tasks
            .push(tokio::spawn(component::accept_loop(shared.clone(), l)));
    }
    (running.s2s_addr, running.s2s_direct_tls_addr) =
        s2s::start_listeners(&shared, &mut running.tasks, (s2s_l, s2s_dtls_l)).await?;
    if let Some(l) = http_l {
        tracing::info!(addr = %l.local_addr()?, "http (TLS) listening");
        let tls = http::tls_config(&shared);
        running.tasks.push(tokio::spawn(http::accept_loop(
            shared.clone(),
            l,
            Some(tls),
        )));
    }
    if let Some(l) = http_plain_l {
        if !l.local_addr()?.ip().is_loopback() {
            // Plain HTTP is for a reverse proxy on this machine: upload URLs and their
            // signatures would cross the network in the clear.
            tracing::warn!(addr = %l.local_addr()?, "http.plain_listen is not a loopback address");
        }
        running.http_plain_addr = Some(l.local_addr()?);
        tracing::info!(addr = %l.local_addr()?, "http (plain) listening");
        running
            .tasks
            .push(tokio::spawn(http::accept_loop(shared.clone(), l, None)));
    }
    if shared.cfg.upload.enabled && (http_addr.is_some() || running.http_plain_addr.is_some()) {
        running
            .tasks
            .push(tokio::spawn(http::upload::expire(shared.clone())));
    }
    if !to_wake.is_empty() {
        running
            .tasks
            .push(tokio::spawn(persist::wake_paced(shared.clone(), to_wake)));
    }
    Ok(running)
}

/// The free-space watch of the data directory, where the database lives (none when the check
/// is off or the directory does not exist: a store given to `start_with_store`).
fn free_space(cfg: &Config) -> herald_store::space::FreeSpace {
    // On PostgreSQL the database is not in the data directory: its server watches its disk.
    let dir = Some(cfg.data_dir.as_path())
        .filter(|d| cfg.store.min_free_bytes > 0 && !cfg.store.is_postgres() && d.is_dir());
    herald_store::space::FreeSpace::new(dir, cfg.store.min_free_bytes)
}

async fn bind(addr: Option<SocketAddr>, key: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        None => Ok(None),
        Some(a) => Ok(Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("{key}: cannot listen on {a}"))?,
        )),
    }
}

#[cfg(test)]
mod store_latency_tests {
    use super::*;

    #[test]
    fn roles_are_named_by_their_trait() {
        assert_eq!(role_name::<roles::Accounts>(), "AccountStore");
        assert_eq!(role_name::<roles::Archive>(), "ArchiveStore");
        assert_eq!(role_name::<roles::All>(), "Backend");
        let l = StoreLatency::default();
        l.of::<roles::Push>()
            .observe(std::time::Duration::from_micros(7));
        l.of::<roles::Push>()
            .observe(std::time::Duration::from_micros(9));
        let all = l.all();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0, all[0].1.snapshot().count), ("PushStore", 2));
    }
}
