//! One s2s XML stream over one socket: plain TCP, TLS accepted (incoming) or TLS initiated
//! (outgoing), herald-proto's decoder fed from it, writes in `jabber:server`. Unlike
//! [`crate::conn::Conn`] it keeps the peer's certificate chain, which s2s authentication needs.
//! Knows nothing of routing or of who the peer claims to be.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use herald_proto::error::StreamError;
use herald_proto::ns;
use herald_proto::stream::{self, Decoder, Limits, StreamEvent, StreamNs};
use herald_proto::Element;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::conn::ConnError;

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 4096;
/// A peer that does not drain its socket for this long is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket, before or after TLS.
pub enum S2sIo {
    /// Plain TCP (before STARTTLS).
    Plain(TcpStream),
    /// TLS that we accepted (incoming stream).
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS that we initiated (outgoing stream).
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for S2sIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            S2sIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            S2sIo::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            S2sIo::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for S2sIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            S2sIo::Plain(s) => Pin::new(s).poll_write(cx, b),
            S2sIo::Server(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            S2sIo::Client(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            S2sIo::Plain(s) => Pin::new(s).poll_flush(cx),
            S2sIo::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            S2sIo::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            S2sIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            S2sIo::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            S2sIo::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An XML stream on an s2s socket.
pub struct S2sConn {
    io: S2sIo,
    decoder: Decoder,
    /// The peer's address.
    pub peer: SocketAddr,
    /// True once our `<stream:stream>` has been written.
    pub header_sent: bool,
}

impl S2sConn {
    /// Wraps a socket.
    pub fn new(io: S2sIo, peer: SocketAddr, limits: Limits) -> S2sConn {
        S2sConn {
            io,
            decoder: Decoder::new(limits),
            peer,
            header_sent: false,
        }
    }

    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self.io, S2sIo::Plain(_))
    }

    /// The certificate chain the peer presented in the TLS handshake (end entity first).
    pub fn peer_certs(&self) -> Vec<CertificateDer<'static>> {
        let certs = match &self.io {
            S2sIo::Plain(_) => None,
            S2sIo::Server(s) => s.get_ref().1.peer_certificates(),
            S2sIo::Client(s) => s.get_ref().1.peer_certificates(),
        };
        certs.map(|c| c.to_vec()).unwrap_or_default()
    }

    fn take_plain(self) -> Result<(TcpStream, Decoder, SocketAddr), ConnError> {
        match self.io {
            S2sIo::Plain(t) => Ok((t, self.decoder, self.peer)),
            _ => Err(ConnError::Stream(StreamError::new(
                herald_proto::error::StreamErrorCondition::PolicyViolation,
                Some("TLS is already established".to_string()),
            ))),
        }
    }

    /// Accepts TLS on a plain socket (after we sent `<proceed/>`), restarting the stream.
    pub async fn accept_tls(
        self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> Result<S2sConn, ConnError> {
        let (tcp, mut decoder, peer) = self.take_plain()?;
        let tls = acceptor.accept(tcp).await?;
        decoder.reset();
        Ok(S2sConn {
            io: S2sIo::Server(Box::new(tls)),
            decoder,
            peer,
            header_sent: false,
        })
    }

    /// Starts TLS on a plain socket (after the peer's `<proceed/>`), restarting the stream.
    pub async fn connect_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<S2sConn, ConnError> {
        let (tcp, mut decoder, peer) = self.take_plain()?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        decoder.reset();
        Ok(S2sConn {
            io: S2sIo::Client(Box::new(tls)),
            decoder,
            peer,
            header_sent: false,
        })
    }

    /// Restarts the stream (RFC 6120 §6.4.6: after SASL success).
    pub fn restart(&mut self) {
        self.decoder.reset();
        self.header_sent = false;
    }

    /// The next decoded event that is already buffered, without reading.
    pub fn buffered_event(&mut self) -> Result<Option<StreamEvent>, ConnError> {
        self.decoder.next_event().map_err(ConnError::Stream)
    }

    /// Reads once from the socket into the decoder. Cancel-safe: used inside `select!`.
    pub async fn read_some(&mut self) -> Result<(), ConnError> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = self.io.read(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        self.decoder.feed(&buf[..n]);
        Ok(())
    }

    /// Releases decoder buffers while idle.
    pub fn shrink(&mut self) {
        if self.decoder.is_idle() {
            self.decoder.shrink();
        }
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

    /// Waits for the next top-level element until `deadline`; a header or the stream end is
    /// an error here (used during negotiation, where only elements are expected).
    pub async fn next_element_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Element, ConnError> {
        match self.next_event_until(deadline).await? {
            StreamEvent::Stanza(el) => {
                if el.name() == "error" && el.ns() == ns::STREAM {
                    return Err(ConnError::Stream(peer_stream_error(&el)));
                }
                Ok(el)
            }
            StreamEvent::End => Err(ConnError::Closed),
            StreamEvent::Header(_) => Err(ConnError::Stream(StreamError::new(
                herald_proto::error::StreamErrorCondition::NotWellFormed,
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

    /// Writes one element in `jabber:server`.
    pub async fn send(&mut self, el: &Element) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(256);
        stream::encode(el, StreamNs::Server, &mut out);
        self.write_raw(&out).await
    }

    /// Writes `<stream:features>` with the children of `features`.
    pub async fn send_features(&mut self, features: &Element) -> Result<(), ConnError> {
        let mut out = b"<stream:features>".to_vec();
        for c in features.children() {
            stream::encode(c, StreamNs::Server, &mut out);
        }
        out.extend_from_slice(b"</stream:features>");
        self.write_raw(&out).await
    }

    /// Writes our stream header; the `db` prefix is declared (XEP-0220 §2.1.1: it signals
    /// dialback support to servers that predate the stream feature).
    pub async fn send_header(
        &mut self,
        from: &str,
        to: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), ConnError> {
        let h = stream::header_xml(
            StreamNs::Server,
            Some(from),
            to,
            id,
            true,
            None,
            &[("db", ns::DIALBACK)],
        );
        self.header_sent = true;
        self.write_raw(h.as_bytes()).await
    }

    /// Sends a stream error and closes the stream (RFC 6120 §4.9: a header first if none).
    pub async fn fail(&mut self, from: &str, err: &StreamError) {
        let mut out = String::new();
        if !self.header_sent {
            out.push_str(&stream::header_xml(
                StreamNs::Server,
                Some(from),
                None,
                Some(&crate::conn::new_stream_id()),
                true,
                None,
                &[("db", ns::DIALBACK)],
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
}

/// The condition of a `<stream:error/>` the peer sent.
pub fn peer_stream_error(el: &Element) -> StreamError {
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
        .and_then(|c| herald_proto::error::StreamErrorCondition::parse(c.name()))
        .unwrap_or(herald_proto::error::StreamErrorCondition::UndefinedCondition);
    StreamError::new(cond, Some("sent by the peer".to_string()))
}
