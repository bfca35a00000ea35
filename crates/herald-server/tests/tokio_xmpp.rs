//! Client flows with tokio-xmpp, a client library we did not write: SCRAM over STARTTLS and
//! over direct TLS (XEP-0368), with the server's self-signed certificate as the client's only
//! trust root, and message exchange between two users.
//!
//! tokio-xmpp's own connectors build their rustls root store from webpki/native roots only, so
//! these tests plug in `TestConnector`, a `ServerConnector` that does the same STARTTLS or
//! direct-TLS dance with a root store holding just the test certificate. It also records the
//! plaintext the client wrote inside TLS, so a test can assert which SASL mechanism was used.
//! Everything after the TLS handshake (SASL, bind, stanzas) is tokio-xmpp's own code. With
//! `binding`, it hands tokio-xmpp the `tls-exporter` data of the connection as tokio-xmpp's
//! own rustls connector does on TLS 1.3, and tokio-xmpp (the `sasl` crate) then uses
//! SCRAM-*-PLUS.

mod common;
#[path = "common/txmpp.rs"]
mod txmpp;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::*;
use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::AuthError;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::sasl::DefinedCondition;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    initiate_stream, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement,
};
use tokio_xmpp::{Client, Event, Stanza};
use txmpp::*;

/// What the client wrote inside TLS, shared with the test.
#[derive(Clone, Debug, Default)]
struct Wire(Arc<Mutex<Vec<u8>>>);

impl Wire {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A transparent stream that copies every byte written into a `Wire`.
struct Recorder<S> {
    inner: S,
    wire: Wire,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.0.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// RFC 6120 §5: plaintext stream, `<starttls/>`, then TLS.
    StartTls,
    /// XEP-0368: TLS from the first byte.
    DirectTls,
}

#[derive(Clone, Debug)]
struct TestConnector {
    addr: SocketAddr,
    mode: Mode,
    tls: Arc<rustls::ClientConfig>,
    wire: Wire,
    /// Give tokio-xmpp the connection's `tls-exporter` data (else no channel binding).
    binding: bool,
}

fn io_err(e: impl std::fmt::Display) -> tokio_xmpp::Error {
    io::Error::other(e.to_string()).into()
}

impl TestConnector {
    async fn handshake(
        &self,
        tcp: TcpStream,
        domain: &str,
    ) -> Result<Recorder<TlsStream<TcpStream>>, tokio_xmpp::Error> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned()).map_err(io_err)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        Ok(Recorder {
            inner: tls,
            wire: self.wire.clone(),
        })
    }
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

impl ServerConnector for TestConnector {
    type Stream = BufStream<Recorder<TlsStream<TcpStream>>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let domain = jid.domain().as_str();
        let tcp = TcpStream::connect(self.addr).await?;
        let tcp = match self.mode {
            Mode::DirectTls => tcp,
            Mode::StartTls => {
                let plain =
                    initiate_stream(BufStream::new(tcp), ns, header(domain), timeouts).await?;
                let (features, mut plain): (_, XmppStream<BufStream<TcpStream>>) =
                    plain.recv_features().await?;
                assert!(features.can_starttls(), "server did not offer STARTTLS");
                plain
                    .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                        starttls::Request,
                    )))
                    .await?;
                loop {
                    match plain
                        .next()
                        .await
                        .map(|v| v.and_then(|v| v.into_read_error()))
                    {
                        Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                        Some(Ok(other)) => {
                            return Err(io_err(format!("expected <proceed/>, got {other:?}")))
                        }
                        Some(Err(ReadError::SoftTimeout)) => {}
                        Some(Err(e)) => return Err(io_err(format!("{e:?}"))),
                        None => return Err(tokio_xmpp::Error::Disconnected),
                    }
                }
                plain.into_inner().into_inner()
            }
        };
        let tls = self.handshake(tcp, domain).await?;
        // As tokio-xmpp's rustls connector does (RFC 9266, TLS 1.3). Without it, a client
        // without channel-binding support: gs2 flag "n" and the mechanisms without -PLUS,
        // which with a binding the sasl crate would not use at all.
        let cb = if self.binding {
            let data = tls
                .inner
                .get_ref()
                .1
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .map_err(io_err)?;
            ChannelBinding::TlsExporter(data)
        } else {
            ChannelBinding::None
        };
        let stream = initiate_stream(BufStream::new(tls), ns, header(domain), timeouts).await?;
        Ok((stream, cb))
    }
}

/// A rustls client config whose only root is the server's self-signed certificate.
fn trust_test_cert(s: &TestServer) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(s.running.shared.cfg.data_dir.join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    assert!(!roots.is_empty());
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn connector(s: &TestServer, mode: Mode) -> TestConnector {
    let addr = match mode {
        Mode::StartTls => s.c2s(),
        Mode::DirectTls => s.running.direct_tls_addr.unwrap(),
    };
    TestConnector {
        addr,
        mode,
        tls: trust_test_cert(s),
        wire: Wire::default(),
        binding: false,
    }
}

/// A connector that gives tokio-xmpp the connection's channel-binding data.
fn binding_connector(s: &TestServer, mode: Mode) -> TestConnector {
    TestConnector {
        binding: true,
        ..connector(s, mode)
    }
}

/// Starts a tokio-xmpp client and waits until it is bound.
async fn online(jid: &str, password: &str, conn: TestConnector) -> (Client, FullJid) {
    let mut c = Client::new_with_connector(
        Jid::new(jid).unwrap(),
        password.to_owned(),
        conn,
        Timeouts::tight(),
    );
    let bound = tokio::time::timeout(WAIT, async {
        loop {
            match c.next().await {
                Some(Event::Online { bound_jid, .. }) => return bound_jid,
                Some(Event::Disconnected(e)) => panic!("{jid} could not log in: {e:?}"),
                Some(Event::Stanza(_)) => {}
                None => panic!("{jid}: client ended before it was online"),
            }
        }
    })
    .await
    .expect("timed out logging in");
    (c, bound.try_into_full().unwrap())
}

fn chat(to: Jid, body: &str) -> Stanza {
    Message::chat(to)
        .with_body(Lang::default(), body.to_owned())
        .into()
}

#[tokio::test]
async fn scram_over_starttls_then_messages_to_full_and_bare_jids() {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("alice", "pw-a");
    s.add_user("bob", "pw-b");
    let alice_conn = connector(&s, Mode::StartTls);
    let alice_wire = alice_conn.wire.clone();
    let (mut alice, alice_jid) = online("alice@localhost/phone", "pw-a", alice_conn).await;
    let (mut bob, bob_jid) =
        online("bob@localhost/desk", "pw-b", connector(&s, Mode::StartTls)).await;
    assert_eq!(alice_jid.to_string(), "alice@localhost/phone");
    assert_eq!(bob_jid.to_string(), "bob@localhost/desk");
    // tokio-xmpp picks the strongest mechanism offered; the server must offer and accept it.
    let sent = alice_wire.text();
    assert!(sent.contains("SCRAM-SHA-256"), "alice's SASL: {sent}");
    assert!(!sent.contains("PLAIN"), "alice's SASL: {sent}");

    available(&mut alice).await;
    available(&mut bob).await;

    alice
        .send_stanza(chat(bob_jid.clone().into(), "hello full bob"))
        .await
        .unwrap();
    let m = next_message(&mut bob).await;
    assert_eq!(body(&m), "hello full bob");
    assert_eq!(m.from, Some(alice_jid.clone().into()));
    assert_eq!(m.type_, MessageType::Chat);

    let alice_bare: BareJid = alice_jid.to_bare();
    bob.send_stanza(chat(alice_bare.clone().into(), "hello bare alice"))
        .await
        .unwrap();
    let m = next_message(&mut alice).await;
    assert_eq!(body(&m), "hello bare alice");
    assert_eq!(m.from, Some(bob_jid.clone().into()));

    alice.send_end().await.unwrap();
    bob.send_end().await.unwrap();
}

#[tokio::test]
async fn direct_tls_login_and_message_exchange_with_a_starttls_user() {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("carol", "pw-c");
    s.add_user("dave", "pw-d");
    let carol_conn = connector(&s, Mode::DirectTls);
    let carol_wire = carol_conn.wire.clone();
    let (mut carol, carol_jid) = online("carol@localhost/tablet", "pw-c", carol_conn).await;
    let (mut dave, dave_jid) =
        online("dave@localhost/pc", "pw-d", connector(&s, Mode::StartTls)).await;
    let sent = carol_wire.text();
    // Direct TLS: the first plaintext inside TLS is the stream header, no STARTTLS.
    assert!(!sent.contains("starttls"), "carol's stream: {sent}");
    assert!(sent.contains("SCRAM-SHA-256"), "carol's SASL: {sent}");

    available(&mut carol).await;
    available(&mut dave).await;
    carol
        .send_stanza(chat(dave_jid.clone().into(), "over direct tls"))
        .await
        .unwrap();
    let m = next_message(&mut dave).await;
    assert_eq!(body(&m), "over direct tls");
    assert_eq!(m.from, Some(carol_jid.clone().into()));
    dave.send_stanza(chat(carol_jid.clone().into(), "and back"))
        .await
        .unwrap();
    let m = next_message(&mut carol).await;
    assert_eq!(body(&m), "and back");
    assert_eq!(m.from, Some(dave_jid.into()));

    carol.send_end().await.unwrap();
    dave.send_end().await.unwrap();
}

/// Runs tokio-xmpp's SASL exchange alone (no bind) with only `mechanism` allowed.
async fn sasl_only(
    conn: TestConnector,
    user: &str,
    password: &str,
    mechanism: &str,
) -> Result<(), tokio_xmpp::Error> {
    let jid = Jid::new(&format!("{user}@localhost")).unwrap();
    let (pending, cb) = conn
        .connect(&jid, "jabber:client", Timeouts::tight())
        .await?;
    let (features, stream): (_, XmppStream<_>) = pending.recv_features().await?;
    assert!(
        features.sasl_mechanisms.contains(mechanism),
        "server offers {:?}",
        features.sasl_mechanisms
    );
    let creds = Credentials::default()
        .with_username(user)
        .with_password(password)
        .with_channel_binding(cb);
    let only: BTreeSet<String> = [mechanism.to_owned()].into();
    tokio_xmpp::client_login(stream, only, creds).await?;
    Ok(())
}

#[tokio::test]
async fn each_scram_mechanism_accepts_the_password_and_rejects_a_wrong_one() {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("erin", "correct horse");
    for mode in [Mode::StartTls, Mode::DirectTls] {
        for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
            tokio::time::timeout(
                WAIT,
                sasl_only(connector(&s, mode), "erin", "correct horse", mech),
            )
            .await
            .expect("timed out")
            .unwrap_or_else(|e| panic!("{mode:?} {mech}: {e:?}"));
            let wrong =
                tokio::time::timeout(WAIT, sasl_only(connector(&s, mode), "erin", "wrong", mech))
                    .await
                    .expect("timed out");
            match wrong {
                Err(tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))) => {}
                other => panic!("{mode:?} {mech} with a wrong password: {other:?}"),
            }
        }
    }
}

/// tokio-xmpp with channel binding picks SCRAM-SHA-256-PLUS with `p=tls-exporter` (the
/// server offers it first), over STARTTLS and direct TLS, and messages flow; each -PLUS
/// mechanism accepts the password and rejects a wrong one.
#[tokio::test]
async fn scram_plus_with_tls_exporter() {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("gina", "pw-g");
    s.add_user("hank", "pw-h");
    for mode in [Mode::StartTls, Mode::DirectTls] {
        for mech in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
            let conn = binding_connector(&s, mode);
            tokio::time::timeout(WAIT, sasl_only(conn, "gina", "pw-g", mech))
                .await
                .expect("timed out")
                .unwrap_or_else(|e| panic!("{mode:?} {mech}: {e:?}"));
            let conn = binding_connector(&s, mode);
            let wrong = tokio::time::timeout(WAIT, sasl_only(conn, "gina", "wrong", mech))
                .await
                .expect("timed out");
            match wrong {
                Err(tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))) => {}
                other => panic!("{mode:?} {mech} with a wrong password: {other:?}"),
            }
        }
    }

    let gina_conn = binding_connector(&s, Mode::StartTls);
    let gina_wire = gina_conn.wire.clone();
    let (mut gina, gina_jid) = online("gina@localhost/phone", "pw-g", gina_conn).await;
    let hank_conn = binding_connector(&s, Mode::DirectTls);
    let hank_wire = hank_conn.wire.clone();
    let (mut hank, hank_jid) = online("hank@localhost/desk", "pw-h", hank_conn).await;
    // The client-first message starts with the gs2 header "p=tls-exporter,,n=" (18 bytes, so
    // its base64 is a prefix of the payload's).
    use base64::Engine as _;
    let gs2 = base64::engine::general_purpose::STANDARD.encode("p=tls-exporter,,n=");
    for sent in [gina_wire.text(), hank_wire.text()] {
        assert!(sent.contains("SCRAM-SHA-256-PLUS"), "SASL: {sent}");
        assert!(sent.contains(&gs2), "SASL: {sent}");
    }
    available(&mut gina).await;
    available(&mut hank).await;
    gina.send_stanza(chat(hank_jid.clone().into(), "bound to the channel"))
        .await
        .unwrap();
    let m = next_message(&mut hank).await;
    assert_eq!(body(&m), "bound to the channel");
    assert_eq!(m.from, Some(gina_jid.into()));
    gina.send_end().await.unwrap();
    hank.send_end().await.unwrap();
}
