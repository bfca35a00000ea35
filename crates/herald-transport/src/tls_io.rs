//! Server-side TLS over TCP with rustls's unbuffered API, so that an idle connection holds no
//! TLS buffer at all. rustls's buffered `ServerConnection` (what tokio-rustls wraps) keeps a
//! 4 KiB receive buffer for the connection's whole life, which on an idle XMPP session is most
//! of its memory. Here the buffers are ours: received TLS bytes are kept only while a record
//! is incomplete, decrypted data only until the reader takes it, encrypted data only until the
//! socket takes it; each is freed when empty.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use herald_proto::sasl::ChannelBindings;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time (on the stack, then appended to `incoming`).
const READ_CHUNK: usize = 4096;
/// Most received TLS bytes held unprocessed: a handshake message may span records up to
/// 64 KiB (rustls's own limit), a record is at most ~18 KiB; beyond, the peer is misbehaving.
const MAX_INCOMING: usize = 96 * 1024;
/// Most encrypted bytes queued behind a socket the peer does not read before we stop reading
/// it: reading makes rustls queue records of its own (key update answers, alerts), and a peer
/// that sends those requests but never reads must not grow `outgoing` without bound.
const MAX_OUTGOING: usize = 64 * 1024;

/// Accepts TLS connections with one server configuration.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
    /// Whether accepted streams carry their channel-binding data (c2s, for SCRAM-*-PLUS).
    channel_binding: bool,
}

impl Acceptor {
    /// An acceptor for `config`.
    pub fn new(config: Arc<ServerConfig>) -> Acceptor {
        Acceptor {
            config,
            channel_binding: false,
        }
    }

    /// An acceptor whose streams carry their channel-binding data
    /// ([`TlsStream::take_channel_bindings`]).
    pub fn with_channel_binding(config: Arc<ServerConfig>) -> Acceptor {
        Acceptor {
            config,
            channel_binding: true,
        }
    }

    /// Runs the server side of the handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        // With channel binding, this handshake gets its own copy of the configuration that
        // records what the binding needs (see `channel_binding`).
        let capture = self
            .channel_binding
            .then(|| Arc::new(crate::channel_binding::Capture::default()));
        let config = match &capture {
            Some(c) => Arc::new(c.config_for(&self.config)),
            None => self.config.clone(),
        };
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            eof: false,
            close_sent: false,
            channel_bindings: None,
        };
        loop {
            match s.step(None)? {
                Step::Again => {}
                // rustls allows writing before the client's Finished (TLS 1.3); the handshake
                // is over, and the client's certificate known, only once that has arrived.
                Step::Writable | Step::Wrote if !s.conn.is_handshaking() => {
                    poll_fn(|cx| s.poll_flush_out(cx)).await?;
                    if let Some(c) = capture {
                        s.channel_bindings = Some(Box::new(c.bindings(&s.conn)));
                    }
                    return Ok(s);
                }
                Step::Writable | Step::Wrote | Step::NeedRead => {
                    // The peer waits for what we have queued before it sends more.
                    poll_fn(|cx| s.poll_flush_out(cx)).await?;
                    poll_fn(|cx| s.poll_fill(cx)).await?;
                    if s.eof {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Step::PeerClosed | Step::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }
}

/// A server-side TLS stream (see the module doc).
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not yet processed.
    incoming: Vec<u8>,
    /// Decrypted application data the reader has not taken yet, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted records not yet written to the socket, from `out_pos`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// The peer closed (close_notify or end of the TCP stream).
    eof: bool,
    close_sent: bool,
    /// The channel-binding data, until negotiation takes it (boxed: most of a connection's
    /// life it is gone, and streams of other acceptors never have it).
    channel_bindings: Option<Box<ChannelBindings>>,
}

/// What one pass over the received records came to.
enum Step {
    /// Something was done (data decrypted, a handshake record queued): go on.
    Again,
    /// The handshake needs more bytes from the peer.
    NeedRead,
    /// Application data may be written; nothing else is pending.
    Writable,
    /// The requested write was encrypted into `outgoing`.
    Wrote,
    /// The peer sent close_notify (reported once).
    PeerClosed,
    /// Both sides sent close_notify: nothing more can be written.
    Closed,
}

/// A write to make when rustls allows it.
enum Write<'a> {
    Data(&'a [u8]),
    CloseNotify,
}

impl TlsStream {
    /// The certificate chain the client presented (end entity first); empty if none.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        self.conn.peer_certificates().unwrap_or_default()
    }

    /// The connection's channel-binding data (empty unless its acceptor was made
    /// [`Acceptor::with_channel_binding`]); a second call gets it empty.
    pub fn take_channel_bindings(&mut self) -> ChannelBindings {
        self.channel_bindings.take().map(|b| *b).unwrap_or_default()
    }

    /// One call into rustls over the received bytes; `write` is encrypted if rustls is ready
    /// for application data.
    fn step(&mut self, write: Option<Write<'_>>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } =
            self.conn.process_tls_records(&mut self.incoming);
        let step = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(tls_error)?;
                    discard += rec.discard;
                    self.plain.extend_from_slice(rec.payload);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut e) => {
                encode_into(&mut self.outgoing, |buf| match e.encode(buf) {
                    Ok(n) => Ok(n),
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        Err(Some(required_size))
                    }
                    Err(EncodeError::AlreadyEncoded) => Err(None),
                })?;
                Step::Again
            }
            // Our `outgoing` is the transmit queue: whoever reads or writes next flushes it.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::NeedRead,
            ConnectionState::WriteTraffic(mut w) => match write {
                None => Step::Writable,
                Some(Write::Data(data)) => {
                    encode_into(&mut self.outgoing, |buf| {
                        encrypt_result(w.encrypt(data, buf))
                    })?;
                    Step::Wrote
                }
                Some(Write::CloseNotify) => {
                    encode_into(&mut self.outgoing, |buf| {
                        encrypt_result(w.queue_close_notify(buf))
                    })?;
                    Step::Wrote
                }
            },
            ConnectionState::PeerClosed => {
                self.eof = true;
                Step::PeerClosed
            }
            ConnectionState::Closed => {
                self.eof = true;
                Step::Closed
            }
            // Early data is not enabled in our configuration; anything else is new to us.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected TLS connection state",
                ))
            }
        };
        self.incoming.drain(..discard.min(self.incoming.len()));
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(step)
    }

    /// Reads once from the socket into `incoming`; sets `eof` at the end of the TCP stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.incoming.len() > MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record or handshake message too large",
            )));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let mut tmp = [0u8; READ_CHUNK];
            match self.tcp.try_read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    self.incoming.extend_from_slice(&tmp[..n]);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes `outgoing` to the socket; frees it once all is written.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.outgoing = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Processes received records until application data or the peer's close is there, or
    /// more bytes are needed.
    fn poll_plain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.plain_pos < self.plain.len() || self.eof {
                return Poll::Ready(Ok(()));
            }
            match self.step(None)? {
                Step::Again | Step::Wrote | Step::PeerClosed | Step::Closed => {}
                Step::NeedRead | Step::Writable => {
                    // Records rustls queued while reading (session tickets, key update
                    // answers, alerts) go out when the socket takes them; reading waits on
                    // writing only once `MAX_OUTGOING` is queued.
                    match self.poll_flush_out(cx) {
                        Poll::Ready(r) => r?,
                        Poll::Pending if self.outgoing.len() - self.out_pos > MAX_OUTGOING => {
                            return Poll::Pending
                        }
                        Poll::Pending => {}
                    }
                    ready!(self.poll_fill(cx))?;
                }
            }
        }
    }
}

/// Appends what `f` writes to `out`, growing it to the size `f` asks for (Err(Some(n))).
fn encode_into(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = 1024;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need > room => room = need,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS record could not be encoded"));
            }
        }
    }
}

fn encrypt_result(r: Result<usize, EncryptError>) -> Result<usize, Option<usize>> {
    match r {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Err(Some(required_size))
        }
        Err(_) => Err(None),
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_plain(cx))?;
        let avail = &this.plain[this.plain_pos..];
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        this.plain_pos += n;
        if this.plain_pos == this.plain.len() {
            this.plain = Vec::new();
            this.plain_pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What is queued goes first: `outgoing` never holds more than one write.
        ready!(this.poll_flush_out(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.step(Some(Write::Data(data)))? {
                Step::Wrote => break,
                Step::Again => {}
                // After the handshake rustls stays writable once the peer closed.
                Step::PeerClosed => {}
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Step::NeedRead | Step::Writable => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "TLS handshake not complete",
                    )))
                }
            }
        }
        // Accepted once encrypted; the socket gets it now if it can, else at the next flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_flush_out(cx))?;
            // Until it is queued (or cannot be: closed already, or no handshake).
            while let Step::Again | Step::PeerClosed = this.step(Some(Write::CloseNotify))? {}
            this.close_sent = true;
        }
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        configs_with(versions, rustls::crypto::ring::default_provider()).0
    }

    /// Also returns the server's certificate.
    #[allow(clippy::type_complexity)]
    fn configs_with(
        versions: &[&'static rustls::SupportedProtocolVersion],
        provider: rustls::crypto::CryptoProvider,
    ) -> (
        (Arc<ServerConfig>, Arc<rustls::ClientConfig>),
        CertificateDer<'static>,
    ) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let provider = Arc::new(provider);
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ((Arc::new(server), Arc::new(client)), cert)
    }

    /// The server derives the same `tls-exporter` data as rustls's own exporter on the
    /// client side, for a suite of each hash length, and `tls-server-end-point` is the
    /// SHA-256 of its (ECDSA P-256 SHA-256) certificate; TLS 1.2 has no `tls-exporter`.
    #[tokio::test]
    async fn channel_bindings_match_the_client() {
        use rustls::crypto::ring::cipher_suite as cs;
        use sha2::Digest as _;
        for (versions, suite, exporter) in [
            (&rustls::version::TLS13, cs::TLS13_AES_128_GCM_SHA256, true),
            (&rustls::version::TLS13, cs::TLS13_AES_256_GCM_SHA384, true),
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                false,
            ),
        ] {
            let provider = rustls::crypto::CryptoProvider {
                cipher_suites: vec![suite],
                ..rustls::crypto::ring::default_provider()
            };
            let ((server, client), cert) = configs_with(&[versions], provider);
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let connect = async {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tokio_rustls::TlsConnector::from(client)
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .unwrap()
            };
            let accept = async {
                let (tcp, _) = l.accept().await.unwrap();
                Acceptor::with_channel_binding(server)
                    .accept(tcp)
                    .await
                    .unwrap()
            };
            let (mut s, c) = tokio::join!(accept, connect);
            let got = s.take_channel_bindings();
            let want = exporter.then(|| {
                c.get_ref()
                    .1
                    .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", Some(b""))
                    .unwrap()
                    .to_vec()
            });
            assert_eq!(got.tls_exporter, want, "{suite:?}");
            assert_eq!(
                got.tls_server_end_point,
                Some(sha2::Sha256::digest(&cert).to_vec())
            );
            // Taken once.
            assert!(s.take_channel_bindings().is_empty());
        }
        // Without channel binding, nothing is recorded.
        let (mut s, _c) = pair(&[&rustls::version::TLS13]).await;
        assert!(s.take_channel_bindings().is_empty());
    }

    /// A connected pair: our server stream and a tokio-rustls client.
    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (
        TlsStream,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        let (server, client) = configs(versions);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = l.accept().await.unwrap();
            Acceptor::new(server).accept(tcp).await.unwrap()
        };
        tokio::join!(accept, connect)
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    async fn round_trip(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let (mut s, mut c) = pair(versions).await;
        // Larger than a record (16 KiB) both ways, so records split and reassemble.
        let up = payload(100_000);
        let down = payload(70_000);
        let (u2, d2) = (up.clone(), down.clone());
        let client = async move {
            c.write_all(&u2).await.unwrap();
            c.flush().await.unwrap();
            let mut got = vec![0u8; d2.len()];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, d2);
            c.shutdown().await.unwrap();
            // Our close_notify arrives as the end of the stream.
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        };
        let server = async move {
            let mut got = vec![0u8; up.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, up);
            s.write_all(&down).await.unwrap();
            s.flush().await.unwrap();
            // The client's close_notify: end of stream, and nothing is buffered any more.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            assert_eq!(
                (
                    s.incoming.capacity(),
                    s.plain.capacity(),
                    s.outgoing.capacity()
                ),
                (0, 0, 0)
            );
            s.shutdown().await.unwrap();
        };
        tokio::join!(client, server);
    }

    #[tokio::test]
    async fn data_crosses_both_ways_over_tls13() {
        round_trip(&[&rustls::version::TLS13]).await;
    }

    #[tokio::test]
    async fn data_crosses_both_ways_over_tls12() {
        round_trip(&[&rustls::version::TLS12]).await;
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffers() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13]).await;
        c.write_all(b"<stream>").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"<stream/>").await.unwrap();
        s.flush().await.unwrap();
        let mut back = [0u8; 9];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"<stream/>");
        assert_eq!(
            (
                s.incoming.capacity(),
                s.plain.capacity(),
                s.outgoing.capacity()
            ),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_is_not_read_past_the_outgoing_limit() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13]).await;
        // The client never reads: fill the socket towards it, then queue more than the
        // limit behind it (as key update answers would).
        let junk = [0u8; 65536];
        while s.tcp.try_write(&junk).is_ok() {}
        s.outgoing = vec![0; MAX_OUTGOING + 1];
        c.write_all(b"more").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "read on although {} bytes wait",
            s.outgoing.len()
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_a_handshake_is_an_error() {
        let (server, _) = configs(&[&rustls::version::TLS13]);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stcp, _) = l.accept().await.unwrap();
        tcp.write_all(b"<?xml version='1.0'?><stream:stream>")
            .await
            .unwrap();
        let r = Acceptor::new(server).accept(stcp).await;
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
    }

    #[tokio::test]
    async fn a_peer_that_drops_the_socket_mid_handshake_is_eof() {
        let (server, _) = configs(&[&rustls::version::TLS13]);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stcp, _) = l.accept().await.unwrap();
        drop(tcp);
        let r = Acceptor::new(server).accept(stcp).await;
        assert_eq!(
            r.err().map(|e| e.kind()),
            Some(io::ErrorKind::UnexpectedEof)
        );
    }
}
