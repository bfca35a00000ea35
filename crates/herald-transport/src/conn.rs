//! One XML stream over one socket: plain TCP, TLS we accepted or TLS we initiated (s2s),
//! the sans-IO decoder fed from it, and writes in the stream's namespace. c2s, components and
//! both s2s directions use it. Knows nothing of sessions, routing or who the peer claims to be.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use herald_proto::error::{StreamError, StreamErrorCondition};
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
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, b),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Io::Client(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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

/// An XML stream on a socket.
pub struct Conn {
    io: Io,
    decoder: Decoder,
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
            decoder: Decoder::new(limits),
            ns,
            peer,
            header_sent: false,
            domain: domain.to_string(),
            transport: TRANSPORT_TCP,
            slot: None,
        }
    }

    /// Keeps `slot` until this connection is dropped (see the field).
    pub fn hold(&mut self, slot: impl std::any::Any + Send + Sync) {
        self.slot = Some(Box::new(slot));
    }

    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self.io, Io::Plain(_))
    }

    /// The certificate chain the peer presented in the TLS handshake (end entity first);
    /// empty on plain TCP or when the peer sent none. s2s authentication judges it.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        let certs = match &self.io {
            Io::Plain(_) => None,
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
            Io::Plain(_) | Io::Client(_) => Default::default(),
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
            mut decoder,
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
        decoder.reset();
        Ok(Conn {
            io,
            decoder,
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

    /// Writes raw bytes.
    pub async fn write_raw(&mut self, data: &[u8]) -> Result<(), ConnError> {
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
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.io.write_all(stream::STREAM_CLOSE.as_bytes()).await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// Closes the socket without writing (the stream was already closed).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
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
