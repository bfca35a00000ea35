//! One bench connection: TCP (optionally STARTTLS with a verifier that accepts any
//! certificate), stream negotiation, SASL, resource binding, and the few stream-management
//! duties a live client has (answering `<r/>`, counting inbound stanzas).
//! It must not measure or decide anything about a scenario; it only speaks the protocol.

use crate::error::{snippet, BenchError, Result};
use crate::scram::{plain_initial, random_nonce, SaltCache, ScramClient};
use crate::xml::{self, Event, Framer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How the bench secures the c2s stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum TlsMode {
    /// Plain TCP (the server must not require encryption).
    None,
    /// RFC 6120 §5 STARTTLS; any certificate is accepted.
    Starttls,
}

/// SASL mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum AuthMech {
    /// RFC 5802 SCRAM-SHA-1.
    ScramSha1,
    /// RFC 4616 PLAIN.
    Plain,
}

/// Everything needed to log a bench user in; shared by all connections of a run.
pub struct Target {
    /// Server address.
    pub host: String,
    /// c2s port.
    pub port: u16,
    /// c2s ports of several nodes of one cluster on `host`; empty: `port` only. See
    /// [`Target::port_for`].
    pub ports: Vec<u16>,
    /// XMPP domain of the users.
    pub domain: String,
    /// Users are `{prefix}{n}@{domain}`.
    pub user_prefix: String,
    /// Shared password of all bench users.
    pub password: String,
    /// Transport security.
    pub tls: TlsMode,
    /// SASL mechanism.
    pub auth: AuthMech,
    /// Salted-password cache for SCRAM.
    pub cache: SaltCache,
    /// TLS client setup, built once.
    pub connector: TlsConnector,
    /// Deadline for each negotiation step.
    pub step_timeout: Duration,
    /// RFC 7395: connect to this `ws://` URL instead of the c2s port (`None`: TCP).
    pub websocket: Option<String>,
    /// Local address to connect from (`None`: the system's choice). `hostile` sends its
    /// floods from a second loopback address so per-address limits can tell them apart.
    pub source: Option<std::net::IpAddr>,
}

impl Target {
    /// A TCP connection to the server, from `source` if set, within `step_timeout`.
    pub async fn connect(&self) -> Result<TcpStream> {
        self.connect_port(self.port).await
    }

    /// The c2s port bench user `n` connects to: `port`, or with several `ports` (cluster
    /// nodes) the (n mod count)-th, so consecutive users — a `messages` pair's sender and
    /// receiver — are on different nodes and each of their messages crosses the cluster.
    pub fn port_for(&self, n: u64) -> u16 {
        match self.ports.len() as u64 {
            0 => self.port,
            k => self
                .ports
                .get((n % k) as usize)
                .copied()
                .unwrap_or(self.port),
        }
    }

    /// A TCP connection to `port` on the server's host, from `source` if set, within
    /// `step_timeout`.
    pub async fn connect_port(&self, port: u16) -> Result<TcpStream> {
        let fut = async {
            let Some(src) = self.source else {
                return TcpStream::connect((self.host.as_str(), port)).await;
            };
            let addr = tokio::net::lookup_host((self.host.as_str(), port))
                .await?
                .find(|a| a.is_ipv4() == src.is_ipv4())
                .ok_or_else(|| io::Error::other("no server address of the source's family"))?;
            let sock = if src.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.bind(std::net::SocketAddr::new(src, 0))?;
            sock.connect(addr).await
        };
        let tcp = tokio::time::timeout(self.step_timeout, fut)
            .await
            .map_err(|_| BenchError::Timeout("connect"))??;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// The localpart of bench user `n`.
    pub fn user(&self, n: u64) -> String {
        format!("{}{}", self.user_prefix, n)
    }

    /// The bare JID of bench user `n`.
    pub fn bare_jid(&self, n: u64) -> String {
        format!("{}{}@{}", self.user_prefix, n, self.domain)
    }
}

/// Builds the rustls connector with the ring provider and no certificate checks: the bench
/// measures servers with throwaway self-signed certificates on loopback.
pub fn tls_connector() -> Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The byte transport under the XML stream.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS after STARTTLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// RFC 7395 WebSocket, through the bridge task of [`crate::ws`].
    Ws(tokio::io::DuplexStream),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Ws(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Ws(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Ws(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Ws(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What to do after binding.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginOpts {
    /// Enable XEP-0198 with resumption before presence.
    pub sm: bool,
    /// Send initial presence.
    pub presence: bool,
}

/// A logged-in session.
pub struct Session {
    /// The stream transport.
    pub io: Transport,
    /// Framer over inbound bytes.
    pub framer: Framer,
    /// Full JID assigned at bind.
    pub jid: String,
    /// XEP-0198 is enabled on this stream.
    pub sm: bool,
    /// XEP-0198 resumption id (`<enabled id/>`), if the server offered resumption.
    pub sm_id: Option<String>,
    /// XEP-0198 §4: stanzas handled since enable, the `h` we report.
    pub h_in: u32,
    read_buf: Vec<u8>,
}

/// Inbound item after framing, owned so the framer may be refilled.
#[derive(Debug)]
pub enum Inbound {
    /// A top-level element's bytes.
    Element(Vec<u8>),
    /// The server closed the stream.
    Close,
}

const STREAM_NS: &str = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";

/// Writes and flushes: a TLS stream may keep records it could not write at once until the
/// next flush, which stalled bursts (126 of 300 push messages sat in the client for 15 s,
/// against both servers alike).
async fn put<S: AsyncWrite + Unpin + ?Sized>(io: &mut S, data: &[u8]) -> io::Result<()> {
    io.write_all(data).await?;
    io.flush().await
}

/// The opening stream header a client sends.
pub fn header(domain: &str) -> String {
    format!("<?xml version='1.0'?><stream:stream {STREAM_NS} to='{domain}' version='1.0'>")
}

/// Reads until the framer yields an event, with a deadline; generic over the stream so the
/// pre-TLS phase can use the bare socket.
async fn read_event<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
    stage: &'static str,
    timeout: Duration,
) -> Result<Inbound> {
    let fut = async {
        loop {
            if let Some(ev) = framer.next_event()? {
                return Ok(match ev {
                    Event::StreamOpen(_) => continue,
                    Event::Element(r) => Inbound::Element(framer.slice(r).to_vec()),
                    Event::StreamClose => Inbound::Close,
                });
            }
            let n = io.read(buf).await?;
            if n == 0 {
                return Err(BenchError::Closed);
            }
            framer.push(&buf[..n]);
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| BenchError::Timeout(stage))?
}

async fn expect_element<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
    stage: &'static str,
    timeout: Duration,
) -> Result<Vec<u8>> {
    match read_event(io, framer, buf, stage, timeout).await? {
        Inbound::Element(e) if xml::name(&e) == b"error" => Err(BenchError::Unexpected {
            stage,
            got: snippet(&e),
        }),
        Inbound::Element(e) => Ok(e),
        Inbound::Close => Err(BenchError::Closed),
    }
}

fn has_mechanism(features: &[u8], mech: &str) -> bool {
    let needle = format!("<mechanism>{mech}</mechanism>");
    features
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Connects and logs bench user `n` in: stream, optional STARTTLS, SASL, bind, then the
/// options in `opts`.
pub async fn login(t: &Target, n: u64, opts: LoginOpts) -> Result<Session> {
    authenticate(t, n).await?.bind(t, n, opts).await
}

/// A stream authenticated as one user, after the SASL restart: it may bind a resource or
/// resume a hibernated session (XEP-0198 §5).
pub struct Authed {
    io: Transport,
    framer: Framer,
    buf: Vec<u8>,
    /// Stream features offered after authentication.
    features: Vec<u8>,
}

/// How a `<resume/>` went.
pub enum Resumption {
    /// `<resumed h/>`: the old session goes on over this stream; `h` is the number of our
    /// stanzas the server handled (an acknowledgement).
    Resumed {
        /// The resumed session (its `h_in` continues from the `h` we sent).
        session: Session,
        /// The server's `h`.
        h: u32,
    },
    /// `<failed/>`: the stream is still authenticated and may bind; `h` is the server's count
    /// of our stanzas in the old session if it still knew it.
    Failed {
        /// The stream, ready for [`Authed::bind`].
        authed: Authed,
        /// `<failed h/>`, if given.
        h: Option<u32>,
    },
}

/// Connects, opens the stream and does STARTTLS if asked: the transport and the features
/// offered for authentication.
async fn open(t: &Target, port: u16) -> Result<(Transport, Framer, Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let mut io = match &t.websocket {
        None => Transport::Plain(t.connect_port(port).await?),
        Some(url) => {
            if t.tls != TlsMode::None {
                // The WebSocket's own TLS (wss://) would be the security; STARTTLS does not
                // exist over WebSocket (RFC 7395 §3.6).
                return Err(BenchError::NotOffered("STARTTLS over WebSocket"));
            }
            let (host, port) = crate::ws::endpoint(url)?;
            let tcp = tokio::time::timeout(t.step_timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| BenchError::Timeout("connect"))??;
            tcp.set_nodelay(true)?;
            let ws = tokio::time::timeout(t.step_timeout, crate::ws::connect(url, tcp, &t.domain))
                .await
                .map_err(|_| BenchError::Timeout("websocket upgrade"))??;
            Transport::Ws(ws)
        }
    };
    let mut framer = Framer::new();
    put(&mut io, header(&t.domain).as_bytes()).await?;
    let mut features =
        expect_element(&mut io, &mut framer, &mut buf, "features", t.step_timeout).await?;

    if t.tls == TlsMode::Starttls {
        if xml::find_child(&features, "starttls").is_none() {
            return Err(BenchError::NotOffered("STARTTLS"));
        }
        put(
            &mut io,
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        )
        .await?;
        let reply =
            expect_element(&mut io, &mut framer, &mut buf, "starttls", t.step_timeout).await?;
        if xml::name(&reply) != b"proceed" {
            return Err(BenchError::Unexpected {
                stage: "starttls",
                got: snippet(&reply),
            });
        }
        let Transport::Plain(tcp) = io else {
            return Err(BenchError::Tls("already TLS".into()));
        };
        let name =
            ServerName::try_from(t.domain.clone()).map_err(|e| BenchError::Tls(e.to_string()))?;
        let tls = tokio::time::timeout(t.step_timeout, t.connector.connect(name, tcp))
            .await
            .map_err(|_| BenchError::Timeout("tls handshake"))??;
        io = Transport::Tls(Box::new(tls));
        // RFC 6120 §5.4.3.3: a new stream after TLS.
        framer = Framer::new();
        put(&mut io, header(&t.domain).as_bytes()).await?;
        features =
            expect_element(&mut io, &mut framer, &mut buf, "features", t.step_timeout).await?;
    }

    Ok((io, framer, buf, features))
}

/// Connects and authenticates bench user `n`: stream, optional STARTTLS, SASL, and the
/// stream restart after it.
pub async fn authenticate(t: &Target, n: u64) -> Result<Authed> {
    let (mut io, mut framer, mut buf, features) = open(t, t.port_for(n)).await?;
    let user = t.user(n);
    match t.auth {
        AuthMech::Plain => {
            if !has_mechanism(&features, "PLAIN") {
                return Err(BenchError::NotOffered("PLAIN"));
            }
            let msg = format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                plain_initial(&user, &t.password)
            );
            put(&mut io, msg.as_bytes()).await?;
            let reply =
                expect_element(&mut io, &mut framer, &mut buf, "sasl", t.step_timeout).await?;
            if xml::name(&reply) != b"success" {
                return Err(BenchError::Auth(snippet(&reply)));
            }
        }
        AuthMech::ScramSha1 => {
            if !has_mechanism(&features, "SCRAM-SHA-1") {
                return Err(BenchError::NotOffered("SCRAM-SHA-1"));
            }
            let mut scram = ScramClient::new(&user, &random_nonce());
            let msg = format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
                B64.encode(scram.client_first())
            );
            put(&mut io, msg.as_bytes()).await?;
            let challenge =
                expect_element(&mut io, &mut framer, &mut buf, "sasl", t.step_timeout).await?;
            if xml::name(&challenge) != b"challenge" {
                return Err(BenchError::Auth(snippet(&challenge)));
            }
            let server_first = decode_sasl_text(&challenge)?;
            let fin = scram
                .client_final(&server_first, &t.password, &t.cache)
                .map_err(BenchError::Auth)?;
            let msg = format!(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                B64.encode(fin)
            );
            put(&mut io, msg.as_bytes()).await?;
            let outcome =
                expect_element(&mut io, &mut framer, &mut buf, "sasl", t.step_timeout).await?;
            if xml::name(&outcome) != b"success" {
                return Err(BenchError::Auth(snippet(&outcome)));
            }
            // RFC 6120 §6.4.6: additional data with success carries the server signature.
            let server_final = decode_sasl_text(&outcome)?;
            scram
                .verify_server_final(&server_final)
                .map_err(BenchError::Auth)?;
        }
    }

    // RFC 6120 §6.4.6: the stream restarts after SASL success.
    framer = Framer::new();
    put(&mut io, header(&t.domain).as_bytes()).await?;
    let features =
        expect_element(&mut io, &mut framer, &mut buf, "features", t.step_timeout).await?;
    Ok(Authed {
        io,
        framer,
        buf,
        features,
    })
}

impl Authed {
    /// Binds a resource, then does what `opts` asks (SM with resumption, initial presence).
    pub async fn bind(self, t: &Target, n: u64, opts: LoginOpts) -> Result<Session> {
        let Authed {
            mut io,
            mut framer,
            mut buf,
            features,
        } = self;
        if xml::find_child(&features, "bind").is_none() {
            return Err(BenchError::NotOffered("resource binding"));
        }
        let resource = format!("b{:08x}", rand::random::<u32>());
        let bind = format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        );
        put(&mut io, bind.as_bytes()).await?;
        let jid = loop {
            let e = expect_element(&mut io, &mut framer, &mut buf, "bind", t.step_timeout).await?;
            if xml::name(&e) == b"iq" && xml::attr(&e, "id") == Some(b"bind1") {
                if xml::attr(&e, "type") != Some(b"result") {
                    return Err(BenchError::Unexpected {
                        stage: "bind",
                        got: snippet(&e),
                    });
                }
                let jid = xml::find_child(&e, "jid")
                    .and_then(xml::text)
                    .map(|j| String::from_utf8_lossy(j).into_owned())
                    .unwrap_or_else(|| format!("{}/{}", t.bare_jid(n), resource));
                break jid;
            }
        };
        let mut s = Session {
            io,
            framer,
            jid,
            sm: false,
            sm_id: None,
            h_in: 0,
            read_buf: buf,
        };
        if opts.sm {
            if xml::find_child(&features, "sm").is_none() {
                return Err(BenchError::NotOffered("stream management (urn:xmpp:sm:3)"));
            }
            put(&mut s.io, b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await?;
            loop {
                let e = s.next_element(t.step_timeout, "sm enable").await?;
                match xml::name(&e) {
                    b"enabled" => {
                        s.sm_id =
                            xml::attr(&e, "id").map(|id| String::from_utf8_lossy(id).into_owned());
                        break;
                    }
                    b"failed" => {
                        return Err(BenchError::Unexpected {
                            stage: "sm enable",
                            got: snippet(&e),
                        })
                    }
                    _ => {}
                }
            }
            s.sm = true;
        }
        if opts.presence {
            put(&mut s.io, b"<presence/>").await?;
        }
        Ok(s)
    }

    /// XEP-0198 §5: asks to resume the hibernated session `previd` (full JID `jid`), reporting
    /// `h` stanzas handled from it.
    pub async fn resume(
        mut self,
        t: &Target,
        jid: &str,
        previd: &str,
        h: u32,
    ) -> Result<Resumption> {
        if xml::find_child(&self.features, "sm").is_none() {
            return Err(BenchError::NotOffered("stream management (urn:xmpp:sm:3)"));
        }
        let req = format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>");
        put(&mut self.io, req.as_bytes()).await?;
        loop {
            let e = expect_element(
                &mut self.io,
                &mut self.framer,
                &mut self.buf,
                "sm resume",
                t.step_timeout,
            )
            .await?;
            match xml::name(&e) {
                b"resumed" => {
                    let their_h = attr_u32(&e, "h").ok_or_else(|| BenchError::Unexpected {
                        stage: "sm resume",
                        got: snippet(&e),
                    })?;
                    let session = Session {
                        io: self.io,
                        framer: self.framer,
                        jid: jid.to_string(),
                        sm: true,
                        sm_id: Some(previd.to_string()),
                        h_in: h,
                        read_buf: self.buf,
                    };
                    return Ok(Resumption::Resumed {
                        session,
                        h: their_h,
                    });
                }
                b"failed" => {
                    let h = attr_u32(&e, "h");
                    return Ok(Resumption::Failed { authed: self, h });
                }
                _ => {}
            }
        }
    }
}

/// XEP-0388 SASL2 in one step (PLAIN or a FAST token, neither needs a challenge), with
/// `extra` children in `<authenticate/>` (user agent, Bind2, inline resume, FAST). Returns
/// the session, ready for stanzas (no stream restart after SASL2), and the `<success/>`.
pub async fn sasl2(
    t: &Target,
    mechanism: &str,
    initial: &[u8],
    extra: &str,
    jid: &str,
) -> Result<(Session, Vec<u8>)> {
    let (mut io, mut framer, mut buf, features) = open(t, t.port).await?;
    if xml::find_child(&features, "authentication").is_none() {
        return Err(BenchError::NotOffered("SASL2 (urn:xmpp:sasl:2)"));
    }
    let req = format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'><initial-response>{}</initial-response>{extra}</authenticate>",
        B64.encode(initial)
    );
    put(&mut io, req.as_bytes()).await?;
    let e = expect_element(&mut io, &mut framer, &mut buf, "sasl2", t.step_timeout).await?;
    if xml::name(&e) != b"success" {
        return Err(BenchError::Unexpected {
            stage: "sasl2",
            got: snippet(&e),
        });
    }
    let jid = xml::find_child(&e, "authorization-identifier")
        .and_then(xml::text)
        .map(|j| String::from_utf8_lossy(j).into_owned())
        .unwrap_or_else(|| jid.to_string());
    let session = Session {
        io,
        framer,
        jid,
        sm: false,
        sm_id: None,
        h_in: 0,
        read_buf: buf,
    };
    Ok((session, e))
}

/// A numeric attribute such as XEP-0198's `h`.
pub fn attr_u32(e: &[u8], name: &str) -> Option<u32> {
    std::str::from_utf8(xml::attr(e, name)?).ok()?.parse().ok()
}

fn decode_sasl_text(e: &[u8]) -> Result<String> {
    let text = xml::text(e).unwrap_or_default();
    let text =
        std::str::from_utf8(text).map_err(|_| BenchError::Auth("non-UTF-8 SASL data".into()))?;
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(String::new());
    }
    let raw = B64
        .decode(text)
        .map_err(|e| BenchError::Auth(format!("bad base64: {e}")))?;
    String::from_utf8(raw).map_err(|_| BenchError::Auth("non-UTF-8 SASL payload".into()))
}

impl Session {
    /// Reads the next inbound item with no deadline, doing the client's SM duties on the way:
    /// answering `<r/>` and counting stanzas for `h`. Cancel-safe between reads.
    pub async fn next(&mut self) -> Result<Inbound> {
        loop {
            if let Some(ev) = self.framer.next_event()? {
                match ev {
                    Event::StreamOpen(_) => continue,
                    Event::StreamClose => return Ok(Inbound::Close),
                    Event::Element(r) => {
                        let e = self.framer.slice(r);
                        let name = xml::name(e);
                        if self.sm {
                            if name == b"r" {
                                let a = format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.h_in);
                                put(&mut self.io, a.as_bytes()).await?;
                                continue;
                            }
                            if matches!(name, b"message" | b"presence" | b"iq") {
                                // XEP-0198 §4: h counts handled stanzas, modulo 2^32.
                                self.h_in = self.h_in.wrapping_add(1);
                            }
                        }
                        if name == b"iq" && xml::attr(e, "type") == Some(b"get") {
                            // Answer pings (XEP-0199) and anything else so the server never
                            // waits on the bench; an empty result is enough for load.
                            let reply = iq_result(e);
                            put(&mut self.io, reply.as_bytes()).await?;
                            continue;
                        }
                        return Ok(Inbound::Element(e.to_vec()));
                    }
                }
            }
            let n = self.io.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(BenchError::Closed);
            }
            self.framer.push(&self.read_buf[..n]);
        }
    }

    /// Like [`Session::next`], but an element is required within `timeout`.
    pub async fn next_element(
        &mut self,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Vec<u8>> {
        match tokio::time::timeout(timeout, self.next()).await {
            Err(_) => Err(BenchError::Timeout(stage)),
            Ok(Ok(Inbound::Element(e))) => Ok(e),
            Ok(Ok(Inbound::Close)) => Err(BenchError::Closed),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Waits for the IQ reply with `id`, skipping other traffic.
    pub async fn await_iq(
        &mut self,
        id: &str,
        timeout: Duration,
        stage: &'static str,
    ) -> Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next_element(left, stage).await?;
            if xml::name(&e) == b"iq" && xml::attr(&e, "id") == Some(id.as_bytes()) {
                if xml::attr(&e, "type") == Some(b"result") {
                    return Ok(e);
                }
                return Err(BenchError::Unexpected {
                    stage,
                    got: snippet(&e),
                });
            }
        }
    }

    /// Sends raw XML.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        put(&mut self.io, data).await?;
        Ok(())
    }

    /// Closes the stream cleanly (`</stream:stream>`), so the server ends the session
    /// instead of hibernating it.
    pub async fn close(mut self) {
        let _ = put(&mut self.io, b"</stream:stream>").await;
        let _ = self.io.shutdown().await;
    }

    /// Acknowledges everything received so far (XEP-0198 `<a/>`), so the server holds no
    /// unacked stanza that could itself trigger a push when the socket dies.
    pub async fn ack_all(&mut self) -> Result<()> {
        if self.sm {
            let a = format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.h_in);
            put(&mut self.io, a.as_bytes()).await?;
        }
        Ok(())
    }

    /// Drops the connection without closing the XML stream: for a server with XEP-0198
    /// resumption this starts hibernation.
    pub fn kill(self) {
        drop(self.io);
    }
}

/// An empty `result` for an inbound IQ, addressed back to its sender.
pub fn iq_result(iq: &[u8]) -> String {
    let id = xml::attr(iq, "id").unwrap_or_default();
    let id = String::from_utf8_lossy(id);
    let mut s = format!("<iq type='result' id='{id}'");
    if let Some(from) = xml::attr(iq, "from") {
        s.push_str(&format!(" to='{}'", String::from_utf8_lossy(from)));
    }
    if let Some(to) = xml::attr(iq, "to") {
        s.push_str(&format!(" from='{}'", String::from_utf8_lossy(to)));
    }
    s.push_str("/>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq_result_swaps_addresses() {
        let r = iq_result(b"<iq type='get' id='p1' from='localhost' to='u@localhost/r'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert_eq!(
            r,
            "<iq type='result' id='p1' to='localhost' from='u@localhost/r'/>"
        );
    }

    #[test]
    fn mechanism_lookup() {
        let f = b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
        assert!(has_mechanism(f, "PLAIN"));
        assert!(has_mechanism(f, "SCRAM-SHA-1"));
        assert!(!has_mechanism(f, "SCRAM-SHA-256"));
    }

    #[test]
    fn sasl_payload_decoding() {
        assert_eq!(decode_sasl_text(b"<success xmlns='x'/>").unwrap(), "");
        assert_eq!(
            decode_sasl_text(b"<challenge xmlns='x'>cj1hYmM=</challenge>").unwrap(),
            "r=abc"
        );
    }
}
