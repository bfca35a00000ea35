//! One XML stream over one socket: plain TCP, TLS we accepted or TLS we initiated (s2s), or
//! a WebSocket (RFC 7395, c2s only); the sans-IO decoder fed from it, and writes in the
//! stream's namespace. c2s, components and both s2s directions use it. Knows nothing of
//! sessions, routing or who the peer claims to be.
//!
//! A WebSocket stream is the same [`Conn`] to its users: the decoder takes one message at a
//! time ([`herald_proto::framing::FramedDecoder`]) and what is written is split into
//! messages ([`herald_proto::framing::Framer`]), so the session code runs unchanged over it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream};
use herald_proto::error::{StreamError, StreamErrorCondition};
use herald_proto::framing::{FramedDecoder, Framer, OutFrame};
use herald_proto::stream::{self, Decoder, Limits, StreamEvent, StreamNs};
use herald_proto::{ns, Element};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket per call; the buffer exists only while reading.
const READ_CHUNK: usize = 4096;
/// A peer that does not drain its socket for this long is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, before or after TLS.
pub enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS we accepted (c2s, components, incoming s2s): our own unbuffered stream, so an
    /// idle connection keeps no TLS buffers (see `tls_io`).
    Tls(Box<crate::tls_io::TlsStream>),
    /// TLS we initiated (outgoing s2s).
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A WebSocket (RFC 7395). Not a byte stream: [`Conn`] reads and writes it by message,
    /// and its `AsyncRead`/`AsyncWrite` refuse.
    WebSocket(Box<WsIo>),
}

/// What a WebSocket delivered, as [`Conn`] needs it (ping and pong are the library's).
#[derive(Debug)]
pub enum WsIn {
    /// A text message.
    Text(Vec<u8>),
    /// A binary message (RFC 7395 §3.2: not allowed).
    Binary,
    /// A message over the library's size limit.
    TooLarge,
}

/// What [`Conn`] sends on a WebSocket.
#[derive(Debug)]
pub enum WsOut {
    /// One complete element.
    Text(String),
    /// A ping, where a TCP stream would send a whitespace keepalive.
    Ping,
    /// The closing handshake, with its status code (RFC 6455 §7.4.1).
    Close(u16),
}

/// A WebSocket from whichever library served the upgrade (herald-server adapts axum's):
/// messages in, messages out; the stream ends when the peer closes.
pub trait WsLink:
    Stream<Item = io::Result<WsIn>> + Sink<WsOut, Error = io::Error> + Send + Unpin
{
}

impl<T> WsLink for T where
    T: Stream<Item = io::Result<WsIn>> + Sink<WsOut, Error = io::Error> + Send + Unpin
{
}

/// A WebSocket under a stream, and the splitting of our writes into its messages.
pub struct WsIo {
    /// In a mutex only to be `Sync` (sessions are shared by reference across awaits, and
    /// upgraded HTTP connections are not `Sync`); reached with `get_mut`, never locked.
    link: std::sync::Mutex<Box<dyn WsLink>>,
    framer: Framer,
    /// A binary message arrived (the close says so with its status code).
    binary: bool,
}

/// The `transport` label of a stream over a WebSocket.
pub const TRANSPORT_WEBSOCKET: &str = "websocket";

fn not_a_byte_stream() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "a WebSocket is read by message")
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::WebSocket(_) => Poll::Ready(Err(not_a_byte_stream())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, b),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Io::Client(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Io::WebSocket(_) => Poll::Ready(Err(not_a_byte_stream())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::WebSocket(_) => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::WebSocket(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer closed the TCP connection (or reset it).
    #[error("connection closed")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the XML stream rules.
    #[error("stream error: {0:?}")]
    Stream(StreamError),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
}

/// The decoder of a byte stream, or of a WebSocket's messages.
// The TCP decoder stays inline, as it was before WebSocket (no allocation, no indirection on
// the common path); the framed one, bigger and rarer, is boxed so TCP connections do not grow.
#[allow(clippy::large_enum_variant)]
enum Dec {
    Stream(Decoder),
    Framed(Box<FramedDecoder>),
}

impl Dec {
    fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        match self {
            Dec::Stream(d) => d.next_event(),
            Dec::Framed(d) => d.next_event(),
        }
    }
    fn reset(&mut self) {
        match self {
            Dec::Stream(d) => d.reset(),
            Dec::Framed(d) => d.reset(),
        }
    }
    fn reset_with(&mut self, limits: Limits) {
        match self {
            Dec::Stream(d) => d.reset_with(limits),
            Dec::Framed(d) => d.reset_with(limits),
        }
    }
    fn set_limits(&mut self, limits: Limits) {
        match self {
            Dec::Stream(d) => d.set_limits(limits),
            Dec::Framed(d) => d.set_limits(limits),
        }
    }
    fn is_idle(&self) -> bool {
        match self {
            Dec::Stream(d) => d.is_idle(),
            Dec::Framed(d) => d.is_idle(),
        }
    }
    fn shrink(&mut self) {
        match self {
            Dec::Stream(d) => d.shrink(),
            Dec::Framed(d) => d.shrink(),
        }
    }
}

/// An XML stream on a socket.
pub struct Conn {
    io: Io,
    decoder: Dec,
    /// Namespace of stanzas written on this stream.
    pub ns: StreamNs,
    /// The peer's address.
    pub peer: SocketAddr,
    /// True once `<stream:stream>` has been written by us (errors then need no header).
    pub header_sent: bool,
    /// The local domain this stream is for (from its header; the primary domain until then).
    pub domain: String,
    /// What carries the stream, for `/metrics` labels: [`TRANSPORT_TCP`] unless the
    /// listener that made it says otherwise (WebSocket).
    pub transport: &'static str,
    /// Whatever the owner counts this connection with (a slot of a connection limit): kept
    /// for as long as the connection lives, across TLS upgrades and hand-overs, and dropped
    /// with it.
    slot: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The `transport` label of a stream over TCP (with or without TLS).
pub const TRANSPORT_TCP: &str = "tcp";

impl Conn {
    /// Wraps a socket.
    pub fn new(io: Io, peer: SocketAddr, limits: Limits, ns: StreamNs, domain: &str) -> Conn {
        Conn {
            io,
            decoder: Dec::Stream(Decoder::new(limits)),
            ns,
            peer,
            header_sent: false,
            domain: domain.to_string(),
            transport: TRANSPORT_TCP,
            slot: None,
        }
    }

    /// A c2s stream over an upgraded WebSocket (RFC 7395).
    pub fn websocket(
        link: Box<dyn WsLink>,
        peer: SocketAddr,
        limits: Limits,
        domain: &str,
    ) -> Conn {
        Conn {
            io: Io::WebSocket(Box::new(WsIo {
                link: std::sync::Mutex::new(link),
                framer: Framer::new(StreamNs::Client),
                binary: false,
            })),
            decoder: Dec::Framed(Box::new(FramedDecoder::new(limits, StreamNs::Client))),
            ns: StreamNs::Client,
            peer,
            header_sent: false,
            domain: domain.to_string(),
            transport: TRANSPORT_WEBSOCKET,
            slot: None,
        }
    }

    /// Keeps `slot` until this connection is dropped (see the field).
    pub fn hold(&mut self, slot: impl std::any::Any + Send + Sync) {
        self.slot = Some(Box::new(slot));
    }

    /// Whether the transport is encrypted. A WebSocket counts as encrypted: on the HTTPS
    /// listener it is, and the plain HTTP listener exists for a reverse proxy that terminates
    /// TLS in front of it (the operator's choice); STARTTLS has no place in RFC 7395 either.
    pub fn is_tls(&self) -> bool {
        !matches!(self.io, Io::Plain(_))
    }

    /// The certificate chain the peer presented in the TLS handshake (end entity first);
    /// empty on plain TCP or when the peer sent none. s2s authentication judges it.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        let certs = match &self.io {
            Io::Plain(_) | Io::WebSocket(_) => None,
            Io::Tls(s) => Some(s.peer_certificates()),
            Io::Client(s) => s.get_ref().1.peer_certificates(),
        };
        certs.unwrap_or_default()
    }

    /// The channel-binding data of a TLS connection we accepted with
    /// [`crate::tls_io::Acceptor::with_channel_binding`] (empty otherwise, and on a second
    /// call: negotiation takes it once, nothing else needs it).
    pub fn take_channel_bindings(&mut self) -> herald_proto::sasl::ChannelBindings {
        match &mut self.io {
            Io::Tls(s) => s.take_channel_bindings(),
            Io::Plain(_) | Io::Client(_) | Io::WebSocket(_) => Default::default(),
        }
    }

    /// Upgrades a plain socket to TLS as the server (after we sent `<proceed/>`, or at once
    /// for direct TLS), restarting the stream.
    pub async fn start_tls(self, acceptor: &crate::tls_io::Acceptor) -> Result<Conn, ConnError> {
        self.upgrade(|tcp| async move { Ok(Io::Tls(Box::new(acceptor.accept(tcp).await?))) })
            .await
    }

    /// Upgrades a plain socket to TLS as the client (after the peer's `<proceed/>`, or at
    /// once for direct TLS), restarting the stream.
    pub async fn start_tls_client(
        self,
        connector: &tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
    ) -> Result<Conn, ConnError> {
        self.upgrade(|tcp| async move {
            Ok(Io::Client(Box::new(
                connector.connect(server_name, tcp).await?,
            )))
        })
        .await
    }

    async fn upgrade<F, Fut>(self, handshake: F) -> Result<Conn, ConnError>
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = io::Result<Io>>,
    {
        let Conn {
            io,
            decoder,
            ns,
            peer,
            domain,
            transport,
            slot,
            ..
        } = self;
        let Io::Plain(tcp) = io else {
            return Err(ConnError::Stream(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                Some("TLS is already established".to_string()),
            )));
        };
        let io = handshake(tcp).await?;
        let Dec::Stream(mut decoder) = decoder else {
            return Err(ConnError::Stream(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                Some("no TLS over a WebSocket".to_string()),
            )));
        };
        decoder.reset();
        Ok(Conn {
            io,
            decoder: Dec::Stream(decoder),
            ns,
            peer,
            header_sent: false,
            domain,
            transport,
            slot,
        })
    }

    /// Restarts the stream (RFC 6120 §6.4.6: after SASL success).
    pub fn restart(&mut self) {
        self.decoder.reset();
        self.header_sent = false;
    }

    /// Restarts the stream under new decoder limits (c2s: after SASL success the
    /// pre-authentication limits give way to the normal ones).
    pub fn restart_with(&mut self, limits: Limits) {
        self.decoder.reset_with(limits);
        self.header_sent = false;
    }

    /// New decoder limits without a restart (c2s: after a SASL2 success, XEP-0388).
    pub fn set_limits(&mut self, limits: Limits) {
        self.decoder.set_limits(limits);
    }

    /// The next decoded event that is already buffered, without reading.
    pub fn buffered_event(&mut self) -> Result<Option<StreamEvent>, ConnError> {
        self.decoder.next_event().map_err(ConnError::Stream)
    }

    /// Reads once from the socket into the decoder. Cancel-safe: used inside `select!`.
    ///
    /// The read buffer lives on the stack of a single poll, never in the future: an idle
    /// session waiting here holds no buffer at all (the goal: a few KiB per idle session).
    pub async fn read_some(&mut self) -> Result<(), ConnError> {
        let Conn { io, decoder, .. } = self;
        let (decoder, io) = match (decoder, io) {
            (Dec::Framed(d), Io::WebSocket(ws)) => return read_message(d, ws).await,
            (Dec::Stream(d), io) => (d, io),
            (Dec::Framed(_), _) => return Err(ConnError::Io(not_a_byte_stream())),
        };
        let n = std::future::poll_fn(|cx| {
            let mut tmp = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    decoder.feed(filled);
                    Poll::Ready(Ok(filled.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    /// Releases buffers the decoder no longer needs (idle sessions must stay small).
    pub fn shrink(&mut self) {
        if self.decoder.is_idle() {
            self.decoder.shrink();
        }
    }

    /// Waits for the next event, reading as needed, for at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<StreamEvent, ConnError> {
        self.next_event_until(tokio::time::Instant::now() + timeout)
            .await
    }

    /// Waits for the next event, reading as needed, until `deadline`.
    pub async fn next_event_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<StreamEvent, ConnError> {
        loop {
            if let Some(ev) = self.buffered_event()? {
                return Ok(ev);
            }
            match tokio::time::timeout_at(deadline, self.read_some()).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnError::Timeout),
            }
        }
    }

    /// Waits for the next top-level element until `deadline`; a header, the stream's end or
    /// a `<stream:error/>` from the peer is an error here (for negotiation steps, where only
    /// an element can come next).
    pub async fn next_element_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Element, ConnError> {
        match self.next_event_until(deadline).await? {
            StreamEvent::Stanza(el) => match peer_stream_error(&el) {
                Some(e) => Err(ConnError::Stream(e)),
                None => Ok(el),
            },
            StreamEvent::End => Err(ConnError::Closed),
            StreamEvent::Header(_) => Err(ConnError::Stream(StreamError::new(
                StreamErrorCondition::NotWellFormed,
                Some("unexpected stream header".to_string()),
            ))),
        }
    }

    /// Writes raw bytes (on a WebSocket: the messages they make).
    pub async fn write_raw(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if let Io::WebSocket(ws) = &mut self.io {
            return match tokio::time::timeout(WRITE_TIMEOUT, ws.write(data)).await {
                Ok(r) => Ok(r?),
                Err(_) => Err(ConnError::Timeout),
            };
        }
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(data).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// Writes one element in this stream's namespace.
    pub async fn send(&mut self, el: &Element) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(256);
        stream::encode(el, self.ns, &mut out);
        self.write_raw(&out).await
    }

    /// Writes several elements in one write.
    pub async fn send_all<'a, I: IntoIterator<Item = &'a Element>>(
        &mut self,
        els: I,
    ) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(512);
        for el in els {
            stream::encode(el, self.ns, &mut out);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.write_raw(&out).await
    }

    /// Writes `<stream:features>` with the children of `features` (prefixed like the header).
    pub async fn send_features(&mut self, features: &Element) -> Result<(), ConnError> {
        let mut out = Vec::new();
        push_features(&mut out, self.ns, features);
        self.write_raw(&out).await
    }

    /// Writes our stream header and its features in one write: the peer needs both before it
    /// can go on, and a login opens three streams (a write is a syscall and a wakeup).
    pub async fn send_header_and_features(
        &mut self,
        from: &str,
        to: Option<&str>,
        id: &str,
        features: &Element,
    ) -> Result<(), ConnError> {
        let h = stream::header_xml(self.ns, Some(from), to, Some(id), true, Some("en"), &[]);
        let mut out = h.into_bytes();
        push_features(&mut out, self.ns, features);
        self.header_sent = true;
        self.write_raw(&out).await
    }

    /// Writes our stream header as s2s does: no `xml:lang`, the prefixes this namespace's
    /// headers carry, and `id` None where we open the stream (RFC 6120 §4.7.3: the receiving
    /// entity assigns it).
    pub async fn send_s2s_header(
        &mut self,
        from: &str,
        to: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), ConnError> {
        let h = stream::header_xml(
            self.ns,
            Some(from),
            to,
            id,
            true,
            None,
            header_prefixes(self.ns),
        );
        self.header_sent = true;
        self.write_raw(h.as_bytes()).await
    }

    /// Sends a stream error and closes the stream (RFC 6120 §4.9: a header first if none was sent).
    pub async fn fail(&mut self, from: &str, err: &StreamError) {
        let mut out = String::new();
        if !self.header_sent {
            out.push_str(&stream::header_xml(
                self.ns,
                Some(from),
                None,
                Some(&new_stream_id()),
                true,
                None,
                header_prefixes(self.ns),
            ));
        }
        out.push_str(&err.to_xml());
        let _ = self.write_raw(out.as_bytes()).await;
        self.close().await;
    }

    /// Closes the stream cleanly.
    pub async fn close(&mut self) {
        if let Io::WebSocket(ws) = &mut self.io {
            // RFC 7395 §3.6: `<close/>`, then the WebSocket's own closing handshake.
            let code = ws.close_code();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = ws.write(stream::STREAM_CLOSE.as_bytes()).await;
                let _ = ws.link().send(WsOut::Close(code)).await;
                let _ = ws.link().close().await;
            })
            .await;
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.io.write_all(stream::STREAM_CLOSE.as_bytes()).await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// Closes the socket without writing (the stream was already closed).
    pub async fn shutdown(&mut self) {
        if let Io::WebSocket(ws) = &mut self.io {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.link().close()).await;
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }
}

impl WsIo {
    fn link(&mut self) -> &mut Box<dyn WsLink> {
        self.link
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends the messages `data` (our stream's bytes) makes, in one flush.
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut frames = Vec::new();
        self.framer.push(data, &mut frames);
        if frames.is_empty() {
            return Ok(());
        }
        for f in frames {
            let m = match f {
                OutFrame::Text(t) => WsOut::Text(t),
                OutFrame::Keepalive => WsOut::Ping,
            };
            self.link().feed(m).await?;
        }
        self.link().flush().await
    }

    /// The WebSocket status that goes with the close: 1003 after a binary message, else
    /// normal (a stream error, if any, was already said in XMPP).
    fn close_code(&self) -> u16 {
        if self.binary {
            1003
        } else {
            1000
        }
    }
}

/// Waits for one WebSocket message and hands it to the decoder; a message that breaks the
/// framing rules becomes the decoder's (sticky) stream error, which the next event returns
/// like any decoding error.
async fn read_message(decoder: &mut FramedDecoder, ws: &mut WsIo) -> Result<(), ConnError> {
    use futures_util::StreamExt;
    // `next` on a Stream loses nothing when cancelled: cancel-safe, as `read_some` must be.
    match ws.link().next().await {
        None => Err(ConnError::Closed),
        Some(Err(e)) => Err(ConnError::Io(e)),
        Some(Ok(WsIn::Text(t))) => {
            // The error is kept by the decoder and returned by the next event.
            let _ = decoder.feed_message(&t);
            Ok(())
        }
        Some(Ok(WsIn::Binary)) => {
            ws.binary = true;
            // RFC 7395 §3.2: text messages only; RFC 6120 §4.9.3.22 names a stream that is
            // not UTF-8 text.
            decoder.fail_with(StreamError::new(
                StreamErrorCondition::UnsupportedEncoding,
                Some("binary WebSocket messages are not allowed".to_string()),
            ));
            Ok(())
        }
        Some(Ok(WsIn::TooLarge)) => {
            decoder.fail_with(StreamError::new(
                StreamErrorCondition::PolicyViolation,
                Some("WebSocket message too large".to_string()),
            ));
            Ok(())
        }
    }
}

/// Appends `<stream:features>` with the children of `features` (prefixed like the header) to
/// `out`, for a caller that writes it together with other elements.
pub fn push_features(out: &mut Vec<u8>, ns: StreamNs, features: &Element) {
    out.extend_from_slice(b"<stream:features>");
    for c in features.children() {
        stream::encode(c, ns, out);
    }
    out.extend_from_slice(b"</stream:features>");
}

/// Prefixes our headers declare besides `stream` (also in the header an error forces).
fn header_prefixes(stream_ns: StreamNs) -> &'static [(&'static str, &'static str)] {
    match stream_ns {
        // XEP-0220 §2.1.1: declaring `db` signals dialback support to servers that predate
        // the stream feature.
        StreamNs::Server => &[("db", ns::DIALBACK)],
        _ => &[],
    }
}

/// The `<stream:error/>` the peer sent, if `el` is one (its condition; text is ours).
pub fn peer_stream_error(el: &Element) -> Option<StreamError> {
    if el.name() != "error" || el.ns() != ns::STREAM {
        return None;
    }
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
        .and_then(|c| StreamErrorCondition::parse(c.name()))
        .unwrap_or(StreamErrorCondition::UndefinedCondition);
    Some(StreamError::new(cond, Some("sent by the peer".to_string())))
}

/// A fresh random stream id.
pub fn new_stream_id() -> String {
    use rand::Rng;
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

/// The acceptor for `tls`.
pub fn acceptor(tls: &Arc<rustls::ServerConfig>) -> crate::tls_io::Acceptor {
    crate::tls_io::Acceptor::new(tls.clone())
}

/// An acceptor for c2s: its streams carry their channel-binding data when `channel_binding`.
pub fn c2s_acceptor(
    tls: &Arc<rustls::ServerConfig>,
    channel_binding: bool,
) -> crate::tls_io::Acceptor {
    if channel_binding {
        crate::tls_io::Acceptor::with_channel_binding(tls.clone())
    } else {
        crate::tls_io::Acceptor::new(tls.clone())
    }
}
