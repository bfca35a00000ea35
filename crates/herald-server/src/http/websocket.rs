//! XMPP over WebSocket (RFC 7395) on [`WEBSOCKET_PATH`], and its XEP-0156 discovery
//! (`/.well-known/host-meta`, `/.well-known/host-meta.json`).
//!
//! The upgrade is axum's (tungstenite frames, answers pings, enforces the message size);
//! what runs over it is the c2s connection of every other transport: a [`Conn`] made with
//! [`Conn::websocket`] goes through the same negotiation and session (`c2s::run`), so SASL,
//! SASL2, XEP-0198 resumption and push work as on TCP. The upgraded connection counts
//! against `[limits]` like a TCP c2s connection (an over-limit upgrade is refused with 503
//! before it happens) and leaves the HTTP connection count.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, Stream};
use herald_proto::framing::SUBPROTOCOL;
use herald_transport::conn::{WsIn, WsOut};
pub use herald_xep::hostmeta::WEBSOCKET_PATH;
use tracing::Instrument;

use crate::transport::conn::Conn;
use crate::Shared;

/// Bytes tungstenite reads at once, and gathers before a write: it keeps buffers this large
/// per connection for its whole life (its default, 128 KiB, would dwarf an idle session).
const READ_BUFFER: usize = 4096;

/// Slack over the largest stanza for a message: a message over the stanza limit but within
/// this still reaches the decoder, which names the limit it broke.
const MESSAGE_SLACK: usize = 4096;

/// `GET /xmpp-websocket`: the upgrade. Refused (400) without the `xmpp` subprotocol
/// (RFC 7395 §3.1), and (503) when the connection would pass a `[limits]` connection limit.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return (
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol \"xmpp\" is required (RFC 7395)\n",
        )
            .into_response();
    }
    // Counted from here like an accepted TCP connection (global and per address), and as
    // unauthenticated until negotiation ends.
    let slot = match shared.conns.open_at(peer.ip(), std::time::Instant::now()) {
        Ok(g) => g,
        Err(why) => return refused(&shared, &peer, why),
    };
    let unauthenticated = match shared.conns.unauthenticated(peer.ip()) {
        Ok(g) => g,
        Err(why) => return refused(&shared, &peer, why),
    };
    let l = shared.cfg.stream_limits();
    let max_message = l.max_stanza_bytes.saturating_add(MESSAGE_SLACK);
    let span = tracing::info_span!(
        "conn",
        kind = "c2s-websocket",
        %peer,
        tls = tracing::field::Empty,
        jid = tracing::field::Empty
    );
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        // Messages of one write are gathered up to this before a socket write, and the
        // session flushes after each write: a batch of small stanzas costs one or a few
        // writes. tungstenite keeps the buffer's capacity, so it stays small.
        .write_buffer_size(READ_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            async move {
                shared
                    .metrics
                    .websocket_open
                    .fetch_add(1, Ordering::Relaxed);
                let open = OpenWs(shared.clone());
                let mut conn = Conn::websocket(
                    Box::new(Link(socket)),
                    peer,
                    shared.cfg.preauth_stream_limits(),
                    shared.domain(),
                );
                conn.hold((slot, open));
                crate::c2s::run(shared, conn, unauthenticated).await;
            }
            .instrument(span)
        })
}

fn refused(shared: &Shared, peer: &SocketAddr, why: crate::transport::limits::Refused) -> Response {
    crate::transport::listener::log_refused(shared, "websocket", peer, why);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "10")],
        format!("{}\n", why.text()),
    )
        .into_response()
}

/// Counts an open WebSocket connection for `/metrics` until dropped with the connection.
struct OpenWs(Arc<Shared>);

impl Drop for OpenWs {
    fn drop(&mut self) {
        self.0
            .metrics
            .websocket_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// axum's WebSocket as the transport crate's [`herald_transport::conn::WsLink`].
struct Link(WebSocket);

fn io_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Stream for Link {
    type Item = io::Result<WsIn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let m = match ready!(Pin::new(&mut self.0).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(None),
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    let e = e.into_inner();
                    let too_large = matches!(
                        e.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
                        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                    );
                    return Poll::Ready(Some(if too_large {
                        Ok(WsIn::TooLarge)
                    } else {
                        Err(io::Error::other(e))
                    }));
                }
            };
            return Poll::Ready(Some(Ok(match m {
                Message::Text(t) => WsIn::Text(t.as_str().as_bytes().to_vec()),
                Message::Binary(_) => WsIn::Binary,
                // Answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return Poll::Ready(None),
            })));
        }
    }
}

impl Sink<WsOut> for Link {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsOut) -> io::Result<()> {
        let m = match item {
            WsOut::Text(t) => Message::Text(t.into()),
            WsOut::Ping => Message::Ping(Default::default()),
            WsOut::Close(code) => Message::Close(Some(CloseFrame {
                code,
                reason: Default::default(),
            })),
        };
        Pin::new(&mut self.0).start_send(m).map_err(io_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(io_error)
    }
}

/// The WebSocket URL host-meta lists, None when WebSocket is off or there is no base URL.
fn websocket_url(shared: &Shared) -> Option<String> {
    if !shared.cfg.http.websocket {
        return None;
    }
    shared
        .http
        .base_url
        .as_deref()
        .and_then(herald_xep::hostmeta::websocket_url)
}

/// `GET /.well-known/host-meta` (XEP-0156, XRD). Readable from any origin: web clients
/// fetch it from another site.
pub async fn host_meta(State(shared): State<Arc<Shared>>) -> Response {
    let body = herald_xep::hostmeta::xrd(websocket_url(&shared).as_deref());
    (
        [
            (header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// `GET /.well-known/host-meta.json` (XEP-0156, JRD).
pub async fn host_meta_json(State(shared): State<Arc<Shared>>) -> Response {
    let body = herald_xep::hostmeta::json(websocket_url(&shared).as_deref());
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}
