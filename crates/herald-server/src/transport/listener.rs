//! The accept loop every TCP listener shares: one task per connection, a span per
//! connection, back-off instead of spinning when accept fails (e.g. out of file descriptors),
//! and an end at shutdown. Every connection is counted against `[limits]` (see
//! [`super::limits`]) for as long as its task runs; one beyond a limit is refused with
//! `policy-violation` without disturbing the others.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use herald_proto::error::{StreamError, StreamErrorCondition};
use herald_proto::stream::StreamNs;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::conn::{Conn, Io};
use super::limits::{OpenGuard, Refused};
use crate::Shared;

/// Accepts connections on `listener` until shutdown, running `handle` for each in its own
/// task inside a span named after `kind`, with the connection's slot of the limits, which
/// the handler keeps as long as the connection lives (`Conn::hold`). `refuse_ns` is the stream namespace a refused
/// connection's header and error are written in (None: a TLS port, where a refusal just
/// closes the socket rather than pay for a handshake).
pub async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: &'static str,
    refuse_ns: Option<StreamNs>,
    handle: F,
) where
    F: Fn(Arc<Shared>, TcpStream, SocketAddr, OpenGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let guard = match shared.conns.open_at(peer.ip(), std::time::Instant::now()) {
                        Ok(g) => g,
                        Err(why) => {
                            log_refused(&shared, kind, &peer, why);
                            // Over the connection rate the socket is just closed: writing a
                            // stream error to each would cost the task the limit saves.
                            if let (Some(ns), false) = (refuse_ns, why == Refused::RatePerIp) {
                                tokio::spawn(refuse(shared.clone(), tcp, peer, ns, why));
                            }
                            continue;
                        }
                    };
                    // Only for a connection that is kept: a refused one costs no more syscalls
                    // than its accept and close.
                    let _ = tcp.set_nodelay(true);
                    // `tls` is filled in when a stream upgrades (STARTTLS) or starts encrypted,
                    // `jid` when a c2s session binds.
                    let span = tracing::info_span!(
                        "conn",
                        kind,
                        %peer,
                        tls = tracing::field::Empty,
                        jid = tracing::field::Empty
                    );
                    tokio::spawn(handle(shared.clone(), tcp, peer, guard).instrument(span));
                }
                Err(e) => {
                    tracing::warn!(kind, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Logs a refused connection, at most one line a second whatever the flood (with the count
/// of refusals not logged since), so a flood of connections is not also a flood of log lines.
pub fn log_refused(shared: &Shared, kind: &str, peer: &SocketAddr, why: Refused) {
    if let Some(unlogged) = shared.conns.log_refusal(std::time::Instant::now()) {
        tracing::info!(kind, %peer, reason = why.text(), unlogged, "connection refused");
    }
}

/// Writes a stream header and a `policy-violation` error (with why) on a connection over a
/// limit, then closes it; a peer that does not read is given up on after a second.
pub async fn refuse(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    ns: StreamNs,
    why: Refused,
) {
    let domain = shared.domain().to_string();
    let mut conn = Conn::new(Io::Plain(tcp), peer, shared.limits.clone(), ns, &domain);
    let e = StreamError::new(
        StreamErrorCondition::PolicyViolation,
        Some(why.text().to_string()),
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.fail(&domain, &e)).await;
}
