//! The accept loop every TCP listener shares: one task per connection, a span per
//! connection, back-off instead of spinning when accept fails (e.g. out of file descriptors),
//! and an end at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::Shared;

/// Accepts connections on `listener` until shutdown, running `handle` for each in its own
/// task inside a span named after `kind`.
pub async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: &'static str,
    handle: F,
) where
    F: Fn(Arc<Shared>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
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
                    tokio::spawn(handle(shared.clone(), tcp, peer).instrument(span));
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
