//! XEP-0114 external components: the listener, the handshake (checked in constant time), and
//! the component's stream — stanzas to its domain (or any JID under it) go to it, and it may
//! send as any JID of its domain.

use std::net::SocketAddr;
use std::sync::Arc;

use herald_proto::error::{StreamError, StreamErrorCondition};
use herald_proto::stream::{StreamEvent, StreamNs};
use herald_proto::Element;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};

use crate::transport::conn::{self, Conn, ConnError, Io};
use crate::{routing, stanza, Shared};

/// Accepts component connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    crate::transport::listener::accept_loop(
        shared,
        listener,
        "component",
        Some(StreamNs::Component),
        |shared, tcp, peer, slot| async move {
            // The component's stream runs in this task: its slot is held until it ends.
            let _slot = slot;
            connection(shared, tcp, peer).await
        },
    )
    .await
}

fn serr(c: StreamErrorCondition, t: &str) -> StreamError {
    StreamError::new(c, Some(t.to_string()))
}

use crate::xep::component as xc;
pub use crate::xep::component::handshake_digest;

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let mut c = Conn::new(
        Io::Plain(tcp),
        peer,
        shared.limits.clone(),
        StreamNs::Component,
        shared.domain(),
    );
    let timeout = shared.cfg.c2s.negotiation_timeout.0;
    let domain = match handshake(&shared, &mut c, timeout).await {
        Ok(d) => d,
        Err(ConnError::Stream(e)) => {
            tracing::info!(condition = e.condition.as_str(), "component refused");
            let from = shared.domain().to_string();
            c.fail(&from, &e).await;
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "component connection lost");
            return;
        }
    };
    let (tx, rx) = crate::routing::msg::bounded_queue(
        shared.cfg.limits.session_inbox.max(1024),
        shared.cfg.limits.component_queue_bytes,
    );
    if !shared.router.attach_component(&domain, tx.clone()) {
        let e = serr(
            StreamErrorCondition::Conflict,
            "this component is already connected",
        );
        c.fail(&domain, &e).await;
        return;
    }
    // Cluster mode: one node serves a component domain at a time; the others route to it.
    if let Some(cl) = shared.cluster.get() {
        match cl.claim_component(&domain).await {
            Ok(true) => {}
            Ok(false) => {
                shared.router.detach_component(&domain, &tx);
                let e = serr(
                    StreamErrorCondition::Conflict,
                    "this component is already connected to another node of the cluster",
                );
                c.fail(&domain, &e).await;
                return;
            }
            Err(err) => {
                shared.router.detach_component(&domain, &tx);
                tracing::warn!(%domain, error = %err, "cluster: could not register the component");
                let e = serr(
                    StreamErrorCondition::InternalServerError,
                    "the cluster registry is unavailable",
                );
                c.fail(&domain, &e).await;
                return;
            }
        }
    }
    tracing::info!(%domain, "component connected");
    let r = run(&shared, &mut c, &domain, rx).await;
    shared.router.detach_component(&domain, &tx);
    if let Some(cl) = shared.cluster.get() {
        cl.release_component(&domain).await;
    }
    match r {
        Err(ConnError::Stream(e)) => c.fail(&domain, &e).await,
        Err(e) => tracing::info!(%domain, error = %e, "component disconnected"),
        Ok(()) => c.close().await,
    }
}

async fn handshake(
    shared: &Arc<Shared>,
    c: &mut Conn,
    timeout: std::time::Duration,
) -> Result<String, ConnError> {
    let header = match c.next_event(timeout).await? {
        StreamEvent::Header(h) => h,
        _ => {
            return Err(ConnError::Stream(serr(
                StreamErrorCondition::NotWellFormed,
                "expected a stream header",
            )))
        }
    };
    if header.ns != Some(StreamNs::Component) {
        return Err(ConnError::Stream(serr(
            StreamErrorCondition::InvalidNamespace,
            "expected jabber:component:accept",
        )));
    }
    let to = header.to.unwrap_or_default();
    let Some(entry) = shared
        .cfg
        .components
        .component
        .iter()
        .find(|e| e.domain.eq_ignore_ascii_case(&to))
    else {
        return Err(ConnError::Stream(serr(
            StreamErrorCondition::HostUnknown,
            "no such component",
        )));
    };
    let id = conn::new_stream_id();
    let hdr = herald_proto::stream::header_xml(
        StreamNs::Component,
        Some(&entry.domain),
        None,
        Some(&id),
        false,
        None,
        &[],
    );
    c.header_sent = true;
    c.write_raw(hdr.as_bytes()).await?;
    let el = match c.next_event(timeout).await? {
        StreamEvent::Stanza(el) => el,
        StreamEvent::End => return Err(ConnError::Closed),
        StreamEvent::Header(_) => {
            return Err(ConnError::Stream(serr(
                StreamErrorCondition::NotWellFormed,
                "unexpected header",
            )))
        }
    };
    if el.name() != "handshake" {
        return Err(ConnError::Stream(serr(
            StreamErrorCondition::NotAuthorized,
            "handshake first",
        )));
    }
    let expected = handshake_digest(&id, &entry.secret);
    let given = el.text().trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        // Like a failed SASL authentication: answered only after `[c2s] auth_failure_delay`,
        // so guessing secrets is slow; then the stream is closed with `not-authorized`.
        tokio::time::sleep(shared.cfg.c2s.auth_failure_delay.0).await;
        return Err(ConnError::Stream(serr(
            StreamErrorCondition::NotAuthorized,
            "bad handshake",
        )));
    }
    c.write_raw(b"<handshake/>").await?;
    Ok(entry.domain.clone())
}

/// Whether the component of `domain` may send from `jid_domain` (RFC 6120 §8.1.2.1).
fn may_send_as(shared: &Shared, domain: &str, jid_domain: &str) -> bool {
    let others = shared
        .cfg
        .components
        .component
        .iter()
        .map(|c| c.domain.as_str());
    xc::may_send_as(domain, jid_domain, shared.cfg.is_local(jid_domain), others)
}

/// Most stanzas written to a component in one write.
const WRITE_BATCH: usize = 64;

async fn run(
    shared: &Arc<Shared>,
    c: &mut Conn,
    domain: &str,
    mut rx: crate::routing::msg::BoundedRx,
) -> Result<(), ConnError> {
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(el) => {
                    // What queued meanwhile goes out in the same write: a burst of push
                    // publishes costs a few syscalls, not one each.
                    let mut batch = vec![el];
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(el) => batch.push(el),
                            Err(_) => break,
                        }
                    }
                    c.send_all(&batch).await?
                }
                None => return Ok(()),
            },
            r = c.read_some() => {
                r?;
                while let Some(ev) = c.buffered_event()? {
                    match ev {
                        StreamEvent::Stanza(el) => on_stanza(shared, domain, el).await?,
                        StreamEvent::End => return Ok(()),
                        StreamEvent::Header(_) => {
                            return Err(ConnError::Stream(serr(StreamErrorCondition::NotWellFormed, "unexpected header")))
                        }
                    }
                }
                c.shrink();
            }
            _ = shutdown.changed() => {
                return Err(ConnError::Stream(StreamError::new(StreamErrorCondition::SystemShutdown, None)));
            }
        }
    }
}

async fn on_stanza(shared: &Arc<Shared>, domain: &str, mut el: Element) -> Result<(), ConnError> {
    if stanza::kind(&el).is_none() {
        return Err(ConnError::Stream(serr(
            StreamErrorCondition::UnsupportedStanzaType,
            "only message, presence and iq",
        )));
    }
    // XEP-0114: a component may send as any JID of its own domain, and only those — never
    // as a local host or as another configured component (whose domain may sit under ours).
    match stanza::from(&el) {
        Ok(Some(f)) if may_send_as(shared, domain, f.domain().as_str()) => {}
        // No 'from' (slixmpp's component ping, for one): it can only mean the component itself.
        Ok(None) => stanza::set(&mut el, "from", domain),
        _ => {
            return Err(ConnError::Stream(serr(
                StreamErrorCondition::InvalidFrom,
                "'from' must be a JID of the component's domain",
            )))
        }
    }
    // XEP-0359 §3, XEP-0203: a component cannot pass off stamps as ours.
    stanza::strip_spoofed(&mut el, |d| shared.stamps_ours(d));
    routing::route(shared, el).await;
    Ok(())
}
