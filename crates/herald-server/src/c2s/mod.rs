//! The c2s listeners (STARTTLS port and XEP-0368 direct TLS port): accept, spawn one task per
//! connection, negotiate, then hand over to the session task. WebSocket connections
//! (`http::websocket`) join at `run`.

pub mod fast;
pub mod negotiate;
pub mod persist;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use herald_proto::stream::StreamNs;
use tokio::net::{TcpListener, TcpStream};

use crate::transport::conn::{self, Conn, Io};
use crate::transport::limits::{OpenGuard, UnauthGuard};
use crate::transport::listener;
use crate::Shared;

/// Accepts connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, direct_tls: bool) {
    let kind = if direct_tls { "c2s-direct-tls" } else { "c2s" };
    let refuse_ns = (!direct_tls).then_some(StreamNs::Client);
    crate::transport::listener::accept_loop(
        shared,
        listener,
        kind,
        refuse_ns,
        move |shared, tcp, peer, slot| connection(shared, tcp, peer, slot, direct_tls),
    )
    .await
}

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OpenGuard,
    direct_tls: bool,
) {
    // Counted as unauthenticated from the first byte until negotiation ends: the TLS
    // handshake and SASL are what an address may not hold open `max_unauthenticated_per_ip`
    // times over.
    let unauthenticated = match shared.conns.unauthenticated(peer.ip()) {
        Ok(g) => g,
        Err(why) => {
            listener::log_refused(&shared, "c2s", &peer, why);
            if !direct_tls {
                listener::refuse(shared, tcp, peer, StreamNs::Client, why).await;
            }
            return;
        }
    };
    let io = if direct_tls {
        let acceptor = conn::c2s_acceptor(&shared.tls, shared.cfg.c2s.channel_binding);
        // Boxed: the handshake's state (1.3 KiB) must not stay in the task after it.
        let accept = Box::pin(tokio::time::timeout(
            shared.cfg.c2s.negotiation_timeout.0,
            acceptor.accept(tcp),
        ));
        match accept.await {
            Ok(Ok(tls)) => {
                tracing::Span::current().record("tls", true);
                Io::Tls(Box::new(tls))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Io::Plain(tcp)
    };
    // Until SASL succeeds the peer is unknown: the small pre-authentication limits apply
    // (`[limits] max_preauth_*`); the driver switches to the normal ones at the restart.
    let mut conn = Conn::new(
        io,
        peer,
        shared.cfg.preauth_stream_limits(),
        StreamNs::Client,
        shared.domain(),
    );
    // The session (or the hibernated one it resumes) keeps the slot with the connection.
    conn.hold(slot);
    run(shared, conn, unauthenticated).await;
}

/// Negotiates `conn` and runs its session: the same for every transport (TCP here,
/// WebSocket in `http::websocket`). `unauthenticated` is held until negotiation ends.
pub(crate) async fn run(shared: Arc<Shared>, conn: Conn, unauthenticated: UnauthGuard) {
    // Boxed: a task's future keeps the size of its largest state for its whole life, and
    // negotiation's (SASL, TLS) is large; an idle session must stay small.
    let outcome = Box::pin(negotiate::negotiate(&shared, conn)).await;
    drop(unauthenticated);
    session::start(shared, outcome).await;
}
