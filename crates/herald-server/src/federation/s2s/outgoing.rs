//! Outgoing s2s: the task that owns one (local, remote) connection — resolve, connect,
//! TLS (STARTTLS, or direct TLS per XEP-0368), authenticate (SASL EXTERNAL, else dialback),
//! then write the queued stanzas until idle — and the short-lived dialback verification
//! connection the receiving-server role needs (XEP-0220 §2.1.2).
//!
//! Streams we open are one-way (RFC 6120 §2.5): anything but dialback answers and stream
//! errors arriving on them is ignored. This module must not deliver stanzas locally.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use herald_proto::ns;
use herald_proto::stream::{StreamEvent, StreamNs};
use herald_proto::Element;
use herald_transport::resolve::{self, Target};
use herald_xep::dialback::{self, Verdict};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::S2sError;
use crate::transport::conn::{self, Conn, ConnError, Io};
use crate::Shared;
use herald_transport::s2s_limits::Slot;

/// A stream that is encrypted and whose features we have read.
struct Negotiated {
    conn: Conn,
    features: Element,
    stream_id: String,
    /// The peer's certificate is valid for the remote domain.
    cert_ok: bool,
}

/// Runs one outgoing connection until it fails, idles out or the server stops. `rx` is the
/// pair's queue: it fills while the connection is being set up.
pub(super) async fn run(
    shared: Arc<Shared>,
    key: (String, String),
    id: u64,
    mut rx: crate::routing::msg::BoundedRx,
    slot: Slot,
) {
    let (local, remote) = (&key.0, &key.1);
    let s2s = &shared.s2s;
    let deadline = Instant::now() + shared.cfg.s2s.connect_timeout.0;
    let setup = async {
        let mut n = connect(&shared, local, remote, deadline).await?;
        authenticate(&shared, &mut n, local, remote, deadline).await?;
        Ok::<_, S2sError>(n.conn)
    };
    let result = tokio::time::timeout_at(deadline, setup).await;
    // The setup is over either way: its slot goes back before anything else waits.
    drop(slot);
    let mut conn = match result {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return give_up(&shared, &key, id, rx, e).await,
        Err(_) => return give_up(&shared, &key, id, rx, S2sError::Timeout).await,
    };
    s2s.setup_result(remote, None);
    s2s.metrics
        .outgoing_established
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!("s2s connection established");
    let idle = shared.cfg.s2s.idle_timeout.0;
    let mut last = Instant::now();
    let mut shutdown = shared.shutdown_signal();
    let mut unsent: Vec<Element> = Vec::new();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(el) => {
                    if let Err(e) = conn.send(&el).await {
                        tracing::info!(error = %e, "s2s write failed");
                        unsent.push(el);
                        break;
                    }
                    last = Instant::now();
                }
                None => break,
            },
            r = conn.read_some() => {
                if let Err(e) = r {
                    tracing::info!(error = %e, "s2s connection lost");
                    break;
                }
                if !drain_incoming(&mut conn) {
                    break;
                }
                conn.shrink();
            }
            _ = tokio::time::sleep_until(last + idle) => {
                tracing::info!("closing idle s2s connection");
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    // Unregister first, under the map's lock: from here on new stanzas open a new connection,
    // so whatever is still queued here can be handed to it.
    s2s.remove_if(&key, id);
    rx.close();
    while let Ok(el) = rx.try_recv() {
        unsent.push(el);
    }
    conn.close().await;
    if *shared.shutdown_signal().borrow() {
        return;
    }
    for el in unsent {
        super::send(&shared, el).await;
    }
}

/// Reads what the peer sent on our outgoing stream; false when the stream is over.
fn drain_incoming(conn: &mut Conn) -> bool {
    loop {
        match conn.buffered_event() {
            Ok(Some(StreamEvent::Stanza(el))) => {
                if let Some(e) = conn::peer_stream_error(&el) {
                    tracing::info!(condition = e.condition.as_str(), "peer sent a stream error");
                    return false;
                }
                tracing::debug!(name = el.name(), "ignoring element on an outgoing stream");
            }
            Ok(Some(StreamEvent::End)) => return false,
            Ok(Some(StreamEvent::Header(_))) => return false,
            Ok(None) => return true,
            Err(e) => {
                tracing::info!(error = %e, "bad XML from peer");
                return false;
            }
        }
    }
}

/// The connection could not be set up: every queued stanza is bounced.
async fn give_up(
    shared: &Arc<Shared>,
    key: &(String, String),
    id: u64,
    mut rx: crate::routing::msg::BoundedRx,
    e: S2sError,
) {
    shared
        .s2s
        .metrics
        .outgoing_failed
        .fetch_add(1, Ordering::Relaxed);
    log_failure(&e);
    let cond = e.condition();
    // Remembered before the entry goes, so a stanza arriving in between bounces at once
    // instead of starting a new attempt (`failure_backoff`).
    shared.s2s.setup_result(&key.1, Some(cond));
    shared.s2s.remove_if(key, id);
    rx.close();
    while let Ok(el) = rx.try_recv() {
        super::bounce(shared.clone(), el, cond).await;
    }
}

/// The operator must be able to tell why a domain is unreachable from one line.
fn log_failure(e: &S2sError) {
    match e {
        S2sError::CertRejected(_) => tracing::warn!(
            error = %e,
            "s2s connection failed: the peer's certificate is not valid for its domain (trust it with [s2s] ca_file, or accept any with [s2s] insecure_outgoing)"
        ),
        S2sError::NotGlobal(_) => tracing::warn!(
            error = %e,
            "s2s connection refused: the domain resolves only to non-public addresses"
        ),
        _ => tracing::info!(error = %e, "s2s connection failed"),
    }
}

/// Resolves `remote` and tries each target until one gives an encrypted stream, then applies
/// the certificate policy to it.
async fn connect(
    shared: &Arc<Shared>,
    local: &str,
    remote: &str,
    deadline: Instant,
) -> Result<Negotiated, S2sError> {
    let pol = &shared.cfg.s2s;
    let resolver = shared.s2s.resolver.as_ref();
    let targets = resolve::targets(&pol.routes, resolver, remote).await;
    // A static route is the operator's word; anything else found must be a public address,
    // or a user could make us connect into our own network.
    let routed = pol.routes.keys().any(|d| d.eq_ignore_ascii_case(remote));
    let mut last = S2sError::Unreachable(remote.to_string());
    for t in targets {
        for addr in resolve::addrs(resolver, &t).await {
            if !routed && !resolve::is_global(addr.ip()) {
                tracing::debug!(%addr, "not a public address; skipped");
                shared
                    .s2s
                    .metrics
                    .refused_addresses
                    .fetch_add(1, Ordering::Relaxed);
                last = S2sError::NotGlobal(format!("{remote} at {addr}"));
                continue;
            }
            match try_target(shared, local, remote, &t, addr, deadline).await {
                // RFC 6125 on the receiving server's certificate: dialback authenticates only
                // us to it, so without a valid certificate we would not know who we talk to.
                Ok(n) if !n.cert_ok && !pol.insecure_outgoing => {
                    return Err(S2sError::CertRejected(remote.to_string()))
                }
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "s2s target failed");
                    if matches!(e, S2sError::Timeout) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
    }
    Err(last)
}

async fn try_target(
    shared: &Arc<Shared>,
    local: &str,
    remote: &str,
    t: &Target,
    addr: std::net::SocketAddr,
    deadline: Instant,
) -> Result<Negotiated, S2sError> {
    let s2s = &shared.s2s;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(S2sError::Unreachable(format!("{remote} at {addr}: {e}"))),
        Err(_) => return Err(S2sError::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(remote.to_string())
        .map_err(|e| S2sError::Unreachable(format!("{remote}: {e}")))?;
    let mut conn = Conn::new(
        Io::Plain(tcp),
        addr,
        shared.limits.clone(),
        StreamNs::Server,
        local,
    );
    if t.direct_tls {
        // XEP-0368 §3: direct TLS announces itself by ALPN.
        let config = s2s.tls.client_for(local, true);
        conn = handshake(conn, config, name.clone(), deadline).await?;
    }
    loop {
        let (stream_id, features) = open_stream(&mut conn, local, remote, deadline).await?;
        if conn.is_tls() {
            let cert_ok = s2s.trust.valid_for(conn.peer_certificates(), remote);
            return Ok(Negotiated {
                conn,
                features,
                stream_id,
                cert_ok,
            });
        }
        // RFC 6120 §5.3.1: we require TLS on every s2s stream.
        if features.get_child("starttls", ns::TLS).is_none() {
            return Err(S2sError::NoTls);
        }
        conn.send(&Element::bare("starttls", ns::TLS)).await?;
        let answer = conn.next_element_until(deadline).await?;
        if answer.name() != "proceed" || answer.ns() != ns::TLS {
            return Err(S2sError::Tls("the peer refused STARTTLS".into()));
        }
        let config = s2s.tls.client_for(local, false);
        conn = handshake(conn, config, name.clone(), deadline).await?;
    }
}

/// Our TLS handshake as the client, at once (direct TLS) or after `<proceed/>`.
async fn handshake(
    conn: Conn,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    deadline: Instant,
) -> Result<Conn, S2sError> {
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout_at(deadline, conn.start_tls_client(&connector, name)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(S2sError::Tls(e.to_string())),
        Err(_) => Err(S2sError::Timeout),
    }
}

/// Sends our header, reads the peer's and its features; returns (stream id, features).
async fn open_stream(
    conn: &mut Conn,
    local: &str,
    remote: &str,
    deadline: Instant,
) -> Result<(String, Element), S2sError> {
    conn.send_s2s_header(local, Some(remote), None).await?;
    let header = match conn.next_event_until(deadline).await? {
        StreamEvent::Header(h) => h,
        StreamEvent::End => return Err(S2sError::Stream("closed".into())),
        StreamEvent::Stanza(el) => {
            return Err(match conn::peer_stream_error(&el) {
                Some(e) => S2sError::from(ConnError::Stream(e)),
                None => S2sError::Stream("element before the stream header".into()),
            })
        }
    };
    if header.ns != Some(StreamNs::Server) {
        return Err(S2sError::Stream(
            "the peer's stream is not jabber:server".into(),
        ));
    }
    let stream_id = header.id.unwrap_or_default();
    let features = conn.next_element_until(deadline).await?;
    if features.name() != "features" || features.ns() != ns::STREAM {
        return Err(S2sError::Stream("expected stream features".into()));
    }
    Ok((stream_id, features))
}

/// Authenticates `local` to the peer: SASL EXTERNAL when the peer offers it (it then trusts
/// our certificate), else dialback if allowed.
async fn authenticate(
    shared: &Arc<Shared>,
    n: &mut Negotiated,
    local: &str,
    remote: &str,
    deadline: Instant,
) -> Result<(), S2sError> {
    let pol = &shared.cfg.s2s;
    let s2s = &shared.s2s;
    let external_offered = n
        .features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| {
            m.children()
                .any(|c| c.name() == "mechanism" && c.text().trim() == "EXTERNAL")
        });
    if external_offered {
        // XEP-0178 §3: the authorization identity is our domain.
        let mut auth = crate::stanza::new("auth", ns::SASL, &[("mechanism", "EXTERNAL")]);
        auth.append_text(base64::engine::general_purpose::STANDARD.encode(local));
        n.conn.send(&auth).await?;
        let answer = n.conn.next_element_until(deadline).await?;
        if answer.name() == "success" && answer.ns() == ns::SASL {
            // RFC 6120 §6.4.6: restart the stream after SASL success.
            n.conn.restart();
            let (id, features) = open_stream(&mut n.conn, local, remote, deadline).await?;
            n.stream_id = id;
            n.features = features;
            s2s.metrics
                .outgoing_sasl_external
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        tracing::info!("SASL EXTERNAL refused; trying dialback");
    }
    if !pol.allow_dialback {
        return Err(S2sError::AuthRefused(
            "the peer does not accept our certificate and dialback is off".into(),
        ));
    }
    // XEP-0220 §2.1.1: send the key bound to the receiving server's stream id.
    let key = dialback::key(&s2s.secret, remote, local, &n.stream_id);
    n.conn
        .send(&dialback::result_request(local, remote, &key))
        .await?;
    loop {
        let el = n.conn.next_element_until(deadline).await?;
        if el.name() != "result" || el.ns() != ns::DIALBACK {
            continue;
        }
        if !el
            .attr("from")
            .is_some_and(|f| f.eq_ignore_ascii_case(remote))
            || !el.attr("to").is_some_and(|t| t.eq_ignore_ascii_case(local))
        {
            continue;
        }
        return match dialback::verdict_of(&el) {
            Verdict::Valid => {
                s2s.metrics
                    .outgoing_dialback
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            v => Err(S2sError::AuthRefused(format!(
                "dialback answered {}",
                v.as_str()
            ))),
        };
    }
}

/// Receiving-server role (XEP-0220 §2.1.2): asks `remote`'s authoritative server whether
/// `key` is the one it gave for our stream `stream_id`. Never fails: unreachable is `Error`.
pub(super) async fn verify(
    shared: &Arc<Shared>,
    local: &str,
    remote: &str,
    stream_id: &str,
    key: &str,
) -> Verdict {
    if let Some(cond) = shared.s2s.recently_failed(remote) {
        tracing::info!(%remote, condition = cond.as_str(), "dialback verification skipped: the domain failed recently");
        return Verdict::Error;
    }
    let deadline = Instant::now() + shared.cfg.s2s.connect_timeout.0;
    let ask = async {
        let mut n = connect(shared, local, remote, deadline).await?;
        n.conn
            .send(&dialback::verify_request(local, remote, stream_id, key))
            .await?;
        let verdict = loop {
            let el = n.conn.next_element_until(deadline).await?;
            if el.name() == "verify"
                && el.ns() == ns::DIALBACK
                && el.attr("id") == Some(stream_id)
                && el
                    .attr("from")
                    .is_some_and(|f| f.eq_ignore_ascii_case(remote))
            {
                break dialback::verdict_of(&el);
            }
        };
        n.conn.close().await;
        Ok::<_, S2sError>(verdict)
    };
    let e = match tokio::time::timeout_at(deadline, ask).await {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(_) => S2sError::Timeout,
    };
    tracing::info!(%remote, error = %e, "dialback verification failed");
    log_failure(&e);
    shared.s2s.setup_result(remote, Some(e.condition()));
    Verdict::Error
}
