//! The c2s listeners (STARTTLS port and XEP-0368 direct TLS port): accept, spawn one task per
//! connection, negotiate, then hand over to the session task.

pub mod negotiate;
pub mod persist;
pub mod session;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use herald_proto::stream::StreamNs;
use tokio::net::{TcpListener, TcpStream};

use crate::transport::conn::{self, Conn, Io};
use crate::Shared;

/// Accepts connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, direct_tls: bool) {
    let kind = if direct_tls { "c2s-direct-tls" } else { "c2s" };
    crate::transport::listener::accept_loop(shared, listener, kind, move |shared, tcp, peer| {
        connection(shared, tcp, peer, direct_tls)
    })
    .await
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let io = if direct_tls {
        let acceptor = conn::acceptor(&shared.tls);
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
    let conn = Conn::new(
        io,
        peer,
        shared.cfg.preauth_stream_limits(),
        StreamNs::Client,
        shared.domain(),
    );
    // Boxed: a task's future keeps the size of its largest state for its whole life, and
    // negotiation's (SASL, TLS) is large; an idle session must stay small.
    let outcome = Box::pin(negotiate::negotiate(&shared, conn)).await;
    session::start(shared, outcome).await;
}
