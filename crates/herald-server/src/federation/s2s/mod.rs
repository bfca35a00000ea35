//! Server-to-server federation (RFC 6120 on `jabber:server`): outgoing connections, one per
//! (local domain, remote domain) pair, set up on demand with stanzas queued meanwhile; the
//! incoming listeners (STARTTLS and XEP-0368 direct TLS); authentication by SASL EXTERNAL
//! on PKIX certificates or by Server Dialback (XEP-0220). The pure parts live elsewhere:
//! certificates and trust in `herald_transport::s2s_verify`, name resolution in
//! `herald_transport::resolve`, dialback keys and elements in `herald_xep::dialback`.
//!
//! Entry point for the router: [`send`] for a stanza whose `to` domain is remote. Stanzas
//! received from peers enter [`crate::routing::route`] only after their addresses are checked
//! against what the stream authenticated. This module must not hold delivery rules: what
//! happens to a stanza once it is local is the router's business.

pub mod incoming;
pub mod outgoing;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use herald_config::Config;
use herald_proto::error::StanzaErrorCondition;
use herald_proto::Element;
use herald_transport::resolve::{self, TokioResolver};
use herald_transport::s2s_limits::{FailedDomains, Over, Slots};
use herald_transport::s2s_verify as verify;
use tokio::sync::mpsc::error::TrySendError;

use crate::routing::hooks::{Fut, ToRemote};
use crate::routing::{self, Dest};
use crate::{stanza, Shared};

pub use herald_transport::s2s_error::S2sError;

/// Counters for operators and tests.
#[derive(Default, Debug)]
pub struct S2sMetrics {
    /// Incoming connections open now (authenticated or not).
    pub incoming_open: AtomicU64,
    /// Outgoing connections authenticated (any method).
    pub outgoing_established: AtomicU64,
    /// Outgoing connections that failed before authentication.
    pub outgoing_failed: AtomicU64,
    /// Outgoing streams we authenticated with SASL EXTERNAL.
    pub outgoing_sasl_external: AtomicU64,
    /// Outgoing streams we authenticated with dialback.
    pub outgoing_dialback: AtomicU64,
    /// Incoming streams the peer authenticated with SASL EXTERNAL.
    pub incoming_sasl_external: AtomicU64,
    /// Incoming domain pairs accepted by dialback (callback or valid certificate).
    pub incoming_dialback: AtomicU64,
    /// Incoming dialback requests refused (the authoritative server said invalid).
    pub incoming_dialback_refused: AtomicU64,
    /// db:verify questions we answered as the authoritative server.
    pub verify_answered: AtomicU64,
    /// Stanzas bounced because `max_outgoing_setups` (or the sender's share) was reached.
    pub setups_refused: AtomicU64,
    /// Stanzas bounced at once because their domain failed within `failure_backoff`.
    pub failed_domain_bounces: AtomicU64,
    /// Resolved addresses not tried because they are not public (no static route).
    pub refused_addresses: AtomicU64,
    /// Dialback requests answered with a dialback error because too many verifications
    /// were in progress.
    pub dialback_busy: AtomicU64,
}

struct OutEntry {
    id: u64,
    tx: crate::routing::msg::BoundedTx,
}

/// s2s state shared by every task.
pub struct S2s {
    trust: verify::Trust,
    tls: verify::TlsConfigs,
    secret: [u8; 32],
    resolver: Option<TokioResolver>,
    outgoing: Mutex<HashMap<(String, String), OutEntry>>,
    next_conn: AtomicU64,
    /// Outgoing setups in progress (`max_outgoing_setups`, per local user
    /// `max_outgoing_setups_per_user`); a slot is held from the first stanza until the
    /// connection is authenticated or given up.
    setups: Slots,
    /// Dialback verifications in progress (`max_dialback_verifications_total`; per incoming
    /// stream, keyed by its connection number, `max_dialback_verifications`).
    pub(crate) verifications: Slots,
    /// Remote domains whose setup failed within `failure_backoff`.
    failed: Mutex<FailedDomains>,
    /// Outgoing connections ended so far (set up or failed), for whoever waits on it.
    ended: tokio::sync::watch::Sender<u64>,
    /// Counters.
    pub metrics: S2sMetrics,
}

impl S2s {
    /// Loads certificates and the trust store; a bad `ca_file` or certificate is an error here,
    /// at start.
    pub fn new(cfg: &Config) -> Result<S2s, S2sError> {
        for (domain, target) in &cfg.s2s.routes {
            if resolve::parse_route(target).is_none() {
                return Err(S2sError::Config {
                    key: format!("s2s.routes.{domain:?}"),
                    reason: format!("{target:?}: write \"host:port\" or \"tls://host:port\""),
                });
            }
        }
        let trust = verify::Trust::new(cfg.s2s.ca_file.as_deref())?;
        let tls = verify::TlsConfigs::new(cfg)?;
        // XEP-0185 §2: a random secret per process is enough; keys only live as long as
        // the streams they authenticate.
        let secret: [u8; 32] = rand::random();
        let resolver = resolve::system_resolver();
        Ok(S2s {
            trust,
            tls,
            secret,
            resolver,
            outgoing: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            setups: Slots::new(
                cfg.s2s.max_outgoing_setups,
                cfg.s2s.max_outgoing_setups_per_user,
            ),
            verifications: Slots::new(
                cfg.s2s.max_dialback_verifications_total,
                cfg.s2s.max_dialback_verifications,
            ),
            failed: Mutex::new(FailedDomains::new(
                cfg.s2s.failure_backoff.0,
                cfg.s2s.max_failed_domains,
            )),
            ended: tokio::sync::watch::channel(0).0,
            metrics: S2sMetrics::default(),
        })
    }

    /// The (local, remote) pairs that have an outgoing connection (set up or in progress).
    pub fn outgoing_pairs(&self) -> Vec<(String, String)> {
        let m = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.keys().cloned().collect();
        v.sort();
        v
    }

    /// Counts outgoing connections as they end (idle, failed, lost): lets tests and the
    /// admin side wait for an event instead of polling.
    pub fn ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Dialback verifications in progress, all incoming streams together.
    pub fn verifications_in_progress(&self) -> usize {
        self.verifications.in_use()
    }

    /// A number unique to this process, for connections and streams.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, FailedDomains> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The condition to bounce with when `remote` failed within `failure_backoff`.
    pub(crate) fn recently_failed(&self, remote: &str) -> Option<StanzaErrorCondition> {
        self.failed().check(remote, std::time::Instant::now())
    }

    /// Remembers (or forgets) that setting up a connection to `remote` failed.
    pub(crate) fn setup_result(&self, remote: &str, failure: Option<StanzaErrorCondition>) {
        match failure {
            Some(cond) => self
                .failed()
                .record(remote, cond, std::time::Instant::now()),
            None => self.failed().forget(remote),
        }
    }

    fn remove_if(&self, key: &(String, String), id: u64) {
        let mut m = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(key).is_some_and(|e| e.id == id) {
            m.remove(key);
        }
        drop(m);
        self.ended.send_modify(|n| *n += 1);
    }
}

/// Whether this server answers for `domain` (a local domain or a configured component).
pub fn servable(shared: &Shared, domain: &str) -> bool {
    routing::dest(shared, domain) != Dest::Remote
}

/// Sends a stanza to a remote domain: on its pair's connection, opened on first use. On
/// failure the sender gets an error stanza.
pub async fn send(shared: &Arc<Shared>, el: Element) {
    if let Err((el, cond)) = enqueue(shared, el) {
        bounce(shared.clone(), el, cond).await;
    }
}

/// The `to_remote` hook: stanzas for other domains go out over federation.
pub fn to_remote(shared: &Arc<Shared>, ev: ToRemote) -> Fut<'_, Option<ToRemote>> {
    Box::pin(async move {
        send(shared, ev.el).await;
        None
    })
}

/// The router's bounce, boxed as a `Send` future: the s2s paths call back into the router,
/// and naming the type here keeps the compiler from chasing that cycle.
pub(crate) fn bounce(
    shared: Arc<Shared>,
    el: Element,
    cond: StanzaErrorCondition,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move { routing::bounce(&shared, &el, cond).await })
}

fn enqueue(shared: &Arc<Shared>, el: Element) -> Result<(), (Element, StanzaErrorCondition)> {
    let remote = match stanza::to(&el) {
        Ok(Some(to)) => to.domain().as_str().to_ascii_lowercase(),
        _ => return Err((el, StanzaErrorCondition::JidMalformed)),
    };
    let (local, user) = match stanza::from(&el) {
        Ok(Some(f)) if servable(shared, f.domain().as_str()) => (
            f.domain().as_str().to_ascii_lowercase(),
            // A local user's share of the setups; the server's and components' own stanzas
            // (no localpart) count only against the global cap.
            f.node().map(|_| f.to_bare().to_string()),
        ),
        _ => {
            // Never relay for others: only stanzas from our own domains leave over s2s.
            tracing::warn!(to = %remote, "dropping an s2s stanza whose sender is not local");
            return Ok(());
        }
    };
    let key = (local, remote);
    let s2s = &shared.s2s;
    let mut map = s2s.outgoing.lock().unwrap_or_else(|e| e.into_inner());
    let el = match map.get(&key) {
        Some(entry) => match entry.tx.try_send(el) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(el)) => {
                // `[s2s] max_queue` and `[limits] s2s_queue_bytes` bound what waits for
                // one remote domain.
                return Err((el, StanzaErrorCondition::ResourceConstraint));
            }
            Err(TrySendError::Closed(el)) => el,
        },
        None => el,
    };
    // A new connection would be set up: not for a domain that just failed, and not beyond
    // the caps (a stanza for a domain already being set up was queued above).
    if let Some(cond) = s2s.recently_failed(&key.1) {
        s2s.metrics
            .failed_domain_bounces
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(remote = %key.1, "domain failed recently; bouncing without a new attempt");
        return Err((el, cond));
    }
    let slot = match s2s.setups.take(user.as_deref()) {
        Ok(slot) => slot,
        Err(over) => {
            s2s.metrics.setups_refused.fetch_add(1, Ordering::Relaxed);
            let which = match over {
                Over::Total => "max_outgoing_setups",
                Over::PerKey => "max_outgoing_setups_per_user",
            };
            tracing::info!(remote = %key.1, user = ?user, "s2s setup refused: [s2s] {which} reached");
            return Err((el, StanzaErrorCondition::ResourceConstraint));
        }
    };
    let (tx, rx) = crate::routing::msg::bounded_queue(
        shared.cfg.s2s.max_queue,
        shared.cfg.limits.s2s_queue_bytes,
    );
    if let Err(e) = tx.try_send(el) {
        let el = match e {
            TrySendError::Full(el) | TrySendError::Closed(el) => el,
        };
        return Err((el, StanzaErrorCondition::InternalServerError));
    }
    let id = s2s.next_id();
    map.insert(key.clone(), OutEntry { id, tx });
    drop(map);
    let span = tracing::info_span!("s2s_out", local = %key.0, remote = %key.1);
    tokio::spawn(tracing::Instrument::instrument(
        outgoing::run(shared.clone(), key, id, rx, slot),
        span,
    ));
    Ok(())
}

/// Binds and starts the incoming listeners; returns (STARTTLS, direct TLS) bound addresses.
pub async fn start_listeners(
    shared: &Arc<Shared>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    listeners: (
        Option<tokio::net::TcpListener>,
        Option<tokio::net::TcpListener>,
    ),
) -> std::io::Result<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
    let mut start = |l: Option<tokio::net::TcpListener>, direct_tls: bool| {
        let Some(l) = l else {
            return Ok(None);
        };
        let a = l.local_addr()?;
        let kind = if direct_tls { "direct TLS" } else { "STARTTLS" };
        tracing::info!(addr = %a, "s2s ({kind}) listening");
        tasks.push(tokio::spawn(incoming::accept_loop(
            shared.clone(),
            l,
            direct_tls,
        )));
        Ok::<_, std::io::Error>(Some(a))
    };
    Ok((start(listeners.0, false)?, start(listeners.1, true)?))
}
