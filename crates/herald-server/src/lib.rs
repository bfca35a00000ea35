//! The Herald runtime: configuration, listeners, TLS, session tasks, the router and the
//! feature modules. Protocol rules that can be pure live in herald-proto, herald-session and
//! herald-push; this crate wires them to sockets, timers and the store.

pub mod admin;
pub mod admin_socket;
pub mod blocking;
pub mod c2s;
pub mod cache;
pub mod component;
pub mod config;
pub mod conn;
pub mod group_commit;
pub mod inbox;
pub mod iq;
pub mod listener;
pub mod mam;
pub mod message;
pub mod negotiate;
pub mod offline;
pub mod presence;
pub mod push;
pub mod roster;
pub mod router;
pub mod routing;
pub mod s2s;
pub mod session;
pub mod stanza;
pub mod tls;
pub mod tls_io;
pub mod xep;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use herald_proto::stream::Limits;
use herald_store::{ArchiveStore, BlockStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

/// Counters an operator looks at.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Failed SASL authentications.
    pub auth_failures: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Stanzas refused because a session's inbox was full.
    pub inbox_full: AtomicU64,
}

/// State every task shares.
pub struct Shared {
    /// The configuration.
    pub cfg: Config,
    /// Who is online.
    pub router: router::Router,
    /// Persistent data.
    pub store: Store,
    /// TLS for c2s.
    pub tls: Arc<rustls::ServerConfig>,
    /// Decoder limits from the configuration.
    pub limits: Limits,
    /// Counters.
    pub metrics: Metrics,
    /// Events for the push task.
    pub push: push::PushHandle,
    /// Batched archive writes.
    pub archive: group_commit::ArchiveWriter,
    /// Archive writes stamped but not yet committed, per user.
    pub archive_inflight: mam::InFlight,
    /// Archive preferences per user.
    pub mam_prefs: cache::UserCache<herald_store::MamPrefs>,
    /// Blocklists per user.
    pub blocklists: cache::UserCache<Vec<String>>,
    /// Server-to-server federation.
    pub s2s: s2s::S2s,
    resumable: std::sync::Mutex<std::collections::HashMap<String, session::Resumable>>,
    tombstones: std::sync::Mutex<herald_session::sm::Tombstones>,
    next_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
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

    /// Runs a blocking store call off the async threads.
    pub async fn db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Corrupt(format!("store task failed: {e}"))),
        }
    }

    /// The hibernated-or-live resumable session with this XEP-0198 id.
    pub fn resumable_get(&self, id: &str) -> Option<session::Resumable> {
        self.resumable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Registers a resumable session.
    pub fn resumable_insert(&self, id: String, r: session::Resumable) {
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

    /// Remembers the last h of an ended session of `bare` (for `<failed h/>`).
    pub fn tombstone_insert(&self, id: &str, bare: &str, h: u32) {
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

    /// Runs a short read on the calling thread. Point lookups on indexed keys are served from
    /// SQLite's page cache in microseconds, far less than the two thread switches a
    /// `spawn_blocking` hop costs (measured: context switches were 44 % of login CPU). Writes
    /// and scans still go through [`Shared::db`].
    pub fn db_read<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.store)
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
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, ends every session with `system-shutdown`, and waits briefly.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for s in self.shared.router.all_sessions() {
            let _ = s.tx.send_control(router::SessionMsg::Kick(
                herald_proto::error::StreamError::new(
                    herald_proto::error::StreamErrorCondition::SystemShutdown,
                    None,
                ),
            ));
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Opens the store, prepares TLS, binds the listeners and starts accepting.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let data_dir = cfg.data_dir.clone();
    let options = cfg.store.options();
    let store = tokio::task::spawn_blocking(move || Store::open_with(&data_dir, &options))
        .await
        .context("store task")?
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    start_with_store(cfg, store).await
}

/// Like [`start`] with an already opened store.
pub async fn start_with_store(cfg: Config, store: Store) -> anyhow::Result<Running> {
    let tls = tls::server_config(&cfg)?;
    let limits = Limits {
        max_stanza_bytes: cfg.limits.max_stanza_bytes,
        max_depth: cfg.limits.max_depth,
        max_attributes: cfg.limits.max_attributes,
        max_header_bytes: cfg.limits.max_header_bytes,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let c2s_l = bind(cfg.c2s.listen, "c2s.listen").await?;
    let dtls_l = bind(cfg.c2s.direct_tls_listen, "c2s.direct_tls_listen").await?;
    let comp_l = bind(cfg.components.listen, "components.listen").await?;
    let s2s_l = bind(cfg.s2s.listen, "s2s.listen").await?;
    let s2s_dtls_l = bind(cfg.s2s.direct_tls_listen, "s2s.direct_tls_listen").await?;
    let s2s = s2s::S2s::new(&cfg)?;
    let (push, push_rx) = push::channel(&cfg);
    let tombstones =
        herald_session::sm::Tombstones::new(100_000, cfg.stream_management.tombstone_ttl.0);
    let shared = Arc::new(Shared {
        push,
        archive: group_commit::ArchiveWriter::start(store.clone(), cfg.mam.commit_delay.0),
        archive_inflight: mam::InFlight::default(),
        mam_prefs: cache::UserCache::new(100_000),
        blocklists: cache::UserCache::new(100_000),
        s2s,
        resumable: Default::default(),
        tombstones: std::sync::Mutex::new(tombstones),
        cfg,
        router: router::Router::default(),
        store,
        tls,
        limits,
        metrics: Metrics::default(),
        next_id: AtomicU64::new(1),
        shutdown: shutdown_rx,
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
    let mut running = Running {
        shared: shared.clone(),
        c2s_addr: None,
        direct_tls_addr: None,
        component_addr: None,
        s2s_addr: None,
        s2s_direct_tls_addr: None,
        shutdown: shutdown_tx,
        tasks: Vec::new(),
    };
    running
        .tasks
        .push(tokio::spawn(push::run(shared.clone(), push_rx)));
    running
        .tasks
        .push(tokio::spawn(mam::retention(shared.clone())));
    running
        .tasks
        .push(tokio::spawn(admin_socket::run(shared.clone())));
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
    Ok(running)
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
mod tests {
    use super::*;

    /// `[store] durability` reaches the store the server opens.
    #[tokio::test]
    async fn the_configured_durability_reaches_the_store() {
        for (durability, synchronous) in [("normal", 1), ("full", 2)] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = Config {
                data_dir: dir.path().join("data"),
                store: config::StoreConfig {
                    durability: durability.into(),
                },
                c2s: config::C2sConfig {
                    listen: None,
                    direct_tls_listen: None,
                    ..Default::default()
                },
                components: config::ComponentsConfig {
                    listen: None,
                    ..Default::default()
                },
                ..Config::default()
            };
            let running = start(cfg).await.unwrap();
            assert_eq!(
                running.shared.store.synchronous().unwrap(),
                synchronous,
                "{durability}"
            );
            running.stop().await;
        }
    }
}
