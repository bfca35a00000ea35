//! Incoming s2s: the listeners (STARTTLS and XEP-0368 direct TLS) and one task per stream —
//! TLS first (required), then SASL EXTERNAL for a peer whose certificate is valid for the
//! domain in its header, or dialback requests (checked by calling the peer's authoritative
//! server back), and dialback verification questions answered as the authoritative server.
//!
//! Stanzas are accepted only for (from-domain, to-domain) pairs the stream authenticated
//! (RFC 6120 §4.9.3.9 invalid-from, §4.9.3.6 host-unknown) and then handed to the router.
//! This module must not deliver anything itself.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use herald_proto::error::{StreamError, StreamErrorCondition};
use herald_proto::ns;
use herald_proto::stream::{StreamEvent, StreamNs};
use herald_proto::Element;
use herald_transport::s2s_limits::Over;
use herald_xep::dialback::{self, Verdict};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::servable;
use crate::transport::conn::{self, Conn, ConnError, Io};
use crate::{routing, stanza, Shared};

/// Accepts s2s connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, direct_tls: bool) {
    let kind = if direct_tls { "s2s_direct_tls" } else { "s2s" };
    let refuse_ns = (!direct_tls).then_some(StreamNs::Server);
    crate::transport::listener::accept_loop(
        shared,
        listener,
        kind,
        refuse_ns,
        move |shared, tcp, peer, slot| async move {
            // The stream runs in this task: its slot is held until it ends.
            let _slot = slot;
            connection(shared, tcp, peer, direct_tls).await
        },
    )
    .await
}

fn serr(c: StreamErrorCondition, t: &str) -> ConnError {
    ConnError::Stream(StreamError::new(c, Some(t.to_string())))
}

/// What one incoming stream has established so far (survives TLS and SASL restarts).
struct State {
    /// The local domain the peer addressed in its header.
    local: String,
    /// The domain the peer claims in its header.
    peer_domain: Option<String>,
    /// Our current stream id (dialback keys are bound to it).
    stream_id: String,
    /// SASL completed on this stream.
    sasl_done: bool,
    /// Authenticated (remote domain, local domain) pairs, lowercase.
    authed: HashSet<(String, String)>,
    /// Dialback verdicts from the callback tasks: (remote, local, verdict).
    verdicts_tx: mpsc::Sender<(String, String, Verdict)>,
    verdicts_rx: mpsc::Receiver<(String, String, Verdict)>,
    /// Pairs with a callback in progress (a second request for one is ignored).
    pending: HashSet<(String, String)>,
    /// This connection's key in the verification slots (`max_dialback_verifications`).
    slot_key: String,
    /// Before anything is authenticated the stream must progress by this instant.
    negotiation_deadline: Instant,
}

enum Next {
    /// `<proceed/>` was sent: upgrade and go on.
    StartTls,
    /// The peer closed the stream.
    Done,
}

/// Counts an incoming connection as open for as long as its task holds it, however it ends.
struct OpenGuard<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> OpenGuard<'a> {
    fn new(c: &'a std::sync::atomic::AtomicU64) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenGuard(c)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let s2s = &shared.s2s;
    let _open = OpenGuard::new(&s2s.metrics.incoming_open);
    // Twice the connect timeout leaves room for a dialback callback to the peer.
    let negotiation = shared.cfg.s2s.connect_timeout.0 * 2;
    let acceptor = conn::acceptor(&s2s.tls.server);
    let mut conn = Conn::new(
        Io::Plain(tcp),
        peer,
        shared.limits.clone(),
        StreamNs::Server,
        shared.domain(),
    );
    if direct_tls {
        let deadline = Instant::now() + negotiation;
        let Some(c) = handshake(conn, &acceptor, deadline).await else {
            return;
        };
        conn = c;
    }
    let (verdicts_tx, verdicts_rx) = mpsc::channel(16);
    let mut st = State {
        local: shared.domain().to_string(),
        peer_domain: None,
        stream_id: conn::new_stream_id(),
        sasl_done: false,
        authed: HashSet::new(),
        verdicts_tx,
        verdicts_rx,
        pending: HashSet::new(),
        slot_key: s2s.next_id().to_string(),
        negotiation_deadline: Instant::now() + negotiation,
    };
    loop {
        match serve(&shared, &mut conn, &mut st).await {
            Ok(Next::StartTls) => {
                let Some(c) = handshake(conn, &acceptor, st.negotiation_deadline).await else {
                    return;
                };
                conn = c;
            }
            Ok(Next::Done) => {
                conn.close().await;
                return;
            }
            Err(ConnError::Stream(e)) => {
                tracing::info!(condition = e.condition.as_str(), "s2s stream error");
                let from = st.local.clone();
                conn.fail(&from, &e).await;
                return;
            }
            Err(ConnError::Timeout) => {
                let from = st.local.clone();
                let e = StreamError::new(StreamErrorCondition::ConnectionTimeout, None);
                conn.fail(&from, &e).await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "s2s stream ended");
                return;
            }
        }
    }
}

/// The TLS handshake, at once (XEP-0368 direct TLS) or after `<proceed/>`; None ends the
/// connection.
async fn handshake(
    conn: Conn,
    acceptor: &crate::transport::tls_io::Acceptor,
    deadline: Instant,
) -> Option<Conn> {
    match tokio::time::timeout_at(deadline, conn.start_tls(acceptor)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

async fn serve(shared: &Arc<Shared>, conn: &mut Conn, st: &mut State) -> Result<Next, ConnError> {
    let idle = shared.cfg.s2s.idle_timeout.0;
    let mut shutdown = shared.shutdown_signal();
    let mut last = Instant::now();
    loop {
        let deadline = if st.authed.is_empty() {
            st.negotiation_deadline.min(last + idle)
        } else {
            last + idle
        };
        tokio::select! {
            v = st.verdicts_rx.recv() => {
                if let Some((remote, local, verdict)) = v {
                    dialback_verdict(shared, conn, st, remote, local, verdict).await?;
                }
            }
            r = tokio::time::timeout_at(deadline, conn.read_some()) => {
                match r {
                    Ok(r) => r?,
                    Err(_) => return Err(ConnError::Timeout),
                }
                last = Instant::now();
                while let Some(ev) = conn.buffered_event()? {
                    match ev {
                        StreamEvent::Header(h) => on_header(shared, conn, st, h).await?,
                        StreamEvent::End => return Ok(Next::Done),
                        StreamEvent::Stanza(el) => {
                            if let Some(next) = on_element(shared, conn, st, el).await? {
                                return Ok(next);
                            }
                        }
                    }
                }
                conn.shrink();
            }
            _ = shutdown.changed() => {
                return Err(ConnError::Stream(StreamError::new(StreamErrorCondition::SystemShutdown, None)));
            }
        }
    }
}

async fn on_header(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    st: &mut State,
    h: herald_proto::stream::StreamHeader,
) -> Result<(), ConnError> {
    if h.ns != Some(StreamNs::Server) {
        return Err(serr(
            StreamErrorCondition::InvalidNamespace,
            "expected jabber:server",
        ));
    }
    if let Some(to) = &h.to {
        // RFC 6120 §4.9.3.6: a domain we do not serve.
        if !servable(shared, to) {
            return Err(serr(StreamErrorCondition::HostUnknown, "not served here"));
        }
        st.local = to.to_ascii_lowercase();
    }
    st.peer_domain = h.from.as_ref().map(|f| f.to_ascii_lowercase());
    // RFC 6120 §4.7.3: a fresh id for every stream header we send (dialback binds to it).
    st.stream_id = conn::new_stream_id();
    let local = st.local.clone();
    let id = st.stream_id.clone();
    conn.send_s2s_header(&local, h.from.as_deref(), Some(&id))
        .await?;
    let features = features(shared, conn, st);
    conn.send_features(&features).await
}

fn features(shared: &Arc<Shared>, conn: &Conn, st: &State) -> Element {
    let mut f = Element::bare("features", ns::STREAM);
    if !conn.is_tls() {
        // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
        let mut tls = Element::bare("starttls", ns::TLS);
        tls.append_child(Element::bare("required", ns::TLS));
        f.append_child(tls);
        return f;
    }
    let cert_ok = st
        .peer_domain
        .as_deref()
        .is_some_and(|d| shared.s2s.trust.valid_for(conn.peer_certificates(), d));
    if !st.sasl_done && cert_ok {
        // XEP-0178 §3: offer EXTERNAL only when the certificate is valid for the peer.
        let mut m = Element::bare("mechanisms", ns::SASL);
        m.append_child(stanza::text("mechanism", ns::SASL, "EXTERNAL"));
        f.append_child(m);
    }
    if shared.cfg.s2s.allow_dialback || cert_ok {
        let mut d = Element::bare("dialback", dialback::FEATURE_NS);
        d.append_child(Element::bare("errors", dialback::FEATURE_NS));
        f.append_child(d);
    }
    f
}

/// Handles one top-level element; Some(next) when the stream must change hands.
async fn on_element(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    st: &mut State,
    el: Element,
) -> Result<Option<Next>, ConnError> {
    if let Some(e) = conn::peer_stream_error(&el) {
        tracing::info!(condition = e.condition.as_str(), "peer sent a stream error");
        return Ok(Some(Next::Done));
    }
    if el.ns() == ns::TLS && el.name() == "starttls" {
        if conn.is_tls() {
            return Err(serr(
                StreamErrorCondition::PolicyViolation,
                "TLS is already established",
            ));
        }
        conn.send(&Element::bare("proceed", ns::TLS)).await?;
        return Ok(Some(Next::StartTls));
    }
    if !conn.is_tls() {
        return Err(serr(
            StreamErrorCondition::PolicyViolation,
            "STARTTLS is required",
        ));
    }
    if el.ns() == ns::SASL && el.name() == "auth" {
        sasl_external(shared, conn, st, &el).await?;
        return Ok(None);
    }
    if el.ns() == ns::DIALBACK {
        match (el.name(), el.attr("type")) {
            ("result", None) => dialback_request(shared, conn, st, &el).await?,
            ("verify", None) => verify_question(shared, conn, &el).await?,
            _ => tracing::debug!(
                name = el.name(),
                "ignoring dialback answer on incoming stream"
            ),
        }
        return Ok(None);
    }
    if stanza::kind(&el).is_none() {
        return Err(serr(
            StreamErrorCondition::UnsupportedStanzaType,
            "only message, presence, iq, dialback and TLS/SASL negotiation",
        ));
    }
    if st.authed.is_empty() {
        return Err(serr(
            StreamErrorCondition::NotAuthorized,
            "authenticate first",
        ));
    }
    // RFC 6120 §8.1.1.2 and §8.1.2.2: s2s stanzas carry both addresses.
    let (Ok(Some(from)), Ok(Some(to))) = (stanza::from(&el), stanza::to(&el)) else {
        return Err(serr(
            StreamErrorCondition::ImproperAddressing,
            "stanzas need valid 'from' and 'to'",
        ));
    };
    let fd = from.domain().as_str().to_ascii_lowercase();
    let td = to.domain().as_str().to_ascii_lowercase();
    // RFC 6120 §4.9.3.9: the sender's domain must be one this stream authenticated.
    if !st.authed.iter().any(|(r, _)| *r == fd) {
        return Err(serr(
            StreamErrorCondition::InvalidFrom,
            "'from' is not a domain this stream authenticated",
        ));
    }
    if !servable(shared, &td) || !st.authed.contains(&(fd, td)) {
        return Err(serr(
            StreamErrorCondition::HostUnknown,
            "'to' is not a domain authenticated on this stream",
        ));
    }
    // XEP-0359 §3, XEP-0203: a peer cannot pass off stamps as ours.
    let mut el = el;
    stanza::strip_spoofed(&mut el, |d| shared.stamps_ours(d));
    routing::route(shared, el).await;
    Ok(None)
}

async fn sasl_external(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    st: &mut State,
    el: &Element,
) -> Result<(), ConnError> {
    let failure = |cond: &str| {
        let mut f = Element::bare("failure", ns::SASL);
        f.append_child(Element::bare(cond, ns::SASL));
        f
    };
    if st.sasl_done {
        return Err(serr(
            StreamErrorCondition::PolicyViolation,
            "already authenticated",
        ));
    }
    if el.attr("mechanism") != Some("EXTERNAL") {
        return conn.send(&failure("invalid-mechanism")).await;
    }
    // XEP-0178 §3: the authzid is the peer's domain, or empty ("=") for the header's.
    let text = el.text();
    let text = text.trim();
    let claimed = if text.is_empty() || text == "=" {
        st.peer_domain.clone()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.to_ascii_lowercase())
    };
    let ok_domain = claimed.filter(|d| {
        st.peer_domain.as_deref().is_none_or(|p| p == d)
            && !servable(shared, d)
            && shared.s2s.trust.valid_for(conn.peer_certificates(), d)
    });
    let Some(domain) = ok_domain else {
        tracing::info!("SASL EXTERNAL refused");
        return conn.send(&failure("not-authorized")).await;
    };
    conn.send(&Element::bare("success", ns::SASL)).await?;
    tracing::info!(peer = %domain, "s2s peer authenticated by certificate");
    shared
        .s2s
        .metrics
        .incoming_sasl_external
        .fetch_add(1, Ordering::Relaxed);
    st.sasl_done = true;
    st.authed.insert((domain, st.local.clone()));
    // RFC 6120 §6.4.6: the peer restarts the stream.
    conn.restart();
    Ok(())
}

/// XEP-0220 §2.1.2: `<db:result from=R to=L>key</db:result>` on our stream.
async fn dialback_request(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    st: &mut State,
    el: &Element,
) -> Result<(), ConnError> {
    let (Some(remote), Some(local)) = (el.attr("from"), el.attr("to")) else {
        return Err(serr(
            StreamErrorCondition::ImproperAddressing,
            "db:result needs 'from' and 'to'",
        ));
    };
    let remote = remote.to_ascii_lowercase();
    let local = local.to_ascii_lowercase();
    // XEP-0220 §2.4: a domain we do not serve is an error answer, not a stream error.
    if !servable(shared, &local) {
        return conn
            .send(&dialback::result_not_served(&local, &remote))
            .await;
    }
    let valid_domain = herald_proto::address::bare(&remote)
        .ok()
        .is_some_and(|j| j.node().is_none());
    if !valid_domain || servable(shared, &remote) {
        // Nobody outside may speak for our own domains.
        return conn
            .send(&dialback::result_answer(&local, &remote, Verdict::Invalid))
            .await;
    }
    let key = (remote.clone(), local.clone());
    if st.authed.contains(&key) {
        return conn
            .send(&dialback::result_answer(&local, &remote, Verdict::Valid))
            .await;
    }
    if shared
        .s2s
        .trust
        .valid_for(conn.peer_certificates(), &remote)
    {
        // XEP-0344 §2.4: a certificate valid for the domain makes the callback unnecessary.
        return dialback_verdict(shared, conn, st, remote, local, Verdict::Valid).await;
    }
    if !shared.cfg.s2s.allow_dialback {
        return conn
            .send(&dialback::result_answer(&local, &remote, Verdict::Invalid))
            .await;
    }
    if st.pending.contains(&key) {
        return Ok(());
    }
    // Each callback costs a DNS lookup and a connection, and anyone can ask before
    // authenticating: this stream's share and everybody's are capped.
    let slot = match shared.s2s.verifications.take(Some(&st.slot_key)) {
        Ok(slot) => slot,
        Err(over) => {
            let which = match over {
                Over::Total => "max_dialback_verifications_total",
                Over::PerKey => "max_dialback_verifications",
            };
            tracing::info!(peer = %remote, "dialback request refused: [s2s] {which} reached");
            shared
                .s2s
                .metrics
                .dialback_busy
                .fetch_add(1, Ordering::Relaxed);
            return conn.send(&dialback::result_busy(&local, &remote)).await;
        }
    };
    st.pending.insert(key);
    let given = el.text();
    let stream_id = st.stream_id.clone();
    let tx = st.verdicts_tx.clone();
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let v =
                super::outgoing::verify(&shared, &local, &remote, &stream_id, given.trim()).await;
            drop(slot);
            let _ = tx.send((remote, local, v)).await;
        }
        .in_current_span(),
    );
    Ok(())
}

async fn dialback_verdict(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    st: &mut State,
    remote: String,
    local: String,
    verdict: Verdict,
) -> Result<(), ConnError> {
    let key = (remote, local);
    st.pending.remove(&key);
    let (remote, local) = key;
    let m = &shared.s2s.metrics;
    match verdict {
        Verdict::Valid => {
            tracing::info!(peer = %remote, "s2s peer authenticated by dialback");
            m.incoming_dialback.fetch_add(1, Ordering::Relaxed);
            st.authed.insert((remote.clone(), local.clone()));
        }
        _ => {
            tracing::info!(peer = %remote, verdict = verdict.as_str(), "dialback refused");
            m.incoming_dialback_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    conn.send(&dialback::result_answer(&local, &remote, verdict))
        .await
}

/// XEP-0220 §2.2: as the authoritative server, says whether a key is ours.
async fn verify_question(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    el: &Element,
) -> Result<(), ConnError> {
    let (Some(receiving), Some(originating), Some(id)) =
        (el.attr("from"), el.attr("to"), el.attr("id"))
    else {
        return Err(serr(
            StreamErrorCondition::ImproperAddressing,
            "db:verify needs 'from', 'to' and 'id'",
        ));
    };
    let verdict = if !servable(shared, originating) {
        Verdict::Error
    } else if dialback::check(&shared.s2s.secret, receiving, originating, id, &el.text()) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    shared
        .s2s
        .metrics
        .verify_answered
        .fetch_add(1, Ordering::Relaxed);
    conn.send(&dialback::verify_answer(
        &originating.to_ascii_lowercase(),
        receiving,
        id,
        verdict,
    ))
    .await
}
