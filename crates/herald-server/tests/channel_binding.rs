//! SCRAM-*-PLUS with channel binding (RFC 5802 §6) and its XEP-0440 advertisement, through
//! real TLS connections (STARTTLS and direct TLS, TLS 1.3 and 1.2) that trust the server's
//! self-signed certificate. The client computes the binding data from its own side of the
//! connection: `tls-exporter` with rustls's exporter (RFC 9266), `tls-server-end-point` as the
//! SHA-256 of the certificate it received (the test certificate is ECDSA P-256 with SHA-256,
//! RFC 5929 §4.1). The SCRAM messages are the `sasl` crate's (xmpp-rs), except for
//! `tls-server-end-point`, which that crate does not know: there the test assembles the
//! messages itself on the crate's hash primitives.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use herald_proto::stream::{Decoder, Limits, StreamEvent};
use herald_proto::Element;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism as _;
use sasl::common::scram::{ScramProvider, Sha256};
use sasl::common::{ChannelBinding, Password};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// Reads the next element (or header) from `io`, feeding `d`.
async fn next_event<S: AsyncRead + Unpin>(io: &mut S, d: &mut Decoder) -> StreamEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ev) = d.next_event().expect("the server's XML") {
                return ev;
            }
            let mut buf = [0u8; 4096];
            let n = io.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            d.feed(&buf[..n]);
        }
    })
    .await
    .expect("timed out waiting for the server")
}

async fn element<S: AsyncRead + Unpin>(io: &mut S, d: &mut Decoder) -> Element {
    loop {
        match next_event(io, d).await {
            StreamEvent::Stanza(el) => return el,
            StreamEvent::Header(_) => {}
            StreamEvent::End => panic!("the stream ended"),
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, s: &str) {
    io.write_all(s.as_bytes()).await.unwrap();
}

#[derive(Clone, Copy, PartialEq)]
enum Via {
    StartTls,
    DirectTls,
}

/// A client on a TLS stream, after the encrypted stream's features.
struct Client {
    tls: TlsStream<TcpStream>,
    d: Decoder,
    features: Element,
}

fn tls_config(s: &TestServer, tls12: bool) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(s.running.shared.cfg.data_dir.join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    Arc::new(
        rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Client {
    async fn connect(s: &TestServer, via: Via, tls12: bool) -> Client {
        Self::connect_with(s, via, tls_config(s, tls12)).await
    }

    /// With `config` (whose session cache lets a second connection resume).
    async fn connect_with(s: &TestServer, via: Via, config: Arc<rustls::ClientConfig>) -> Client {
        let addr = match via {
            Via::StartTls => s.c2s(),
            Via::DirectTls => s.running.direct_tls_addr.unwrap(),
        };
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut d = Decoder::new(Limits::default());
        if via == Via::StartTls {
            send(&mut tcp, HEADER).await;
            let f = element(&mut tcp, &mut d).await;
            assert!(f
                .get_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
                .is_some());
            // Never -PLUS in the clear: there is nothing to bind to.
            assert!(
                !xml(&f).contains("PLUS") && !xml(&f).contains("sasl-cb"),
                "{}",
                xml(&f)
            );
            send(
                &mut tcp,
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            )
            .await;
            assert_eq!(element(&mut tcp, &mut d).await.name(), "proceed");
            d.reset();
        }
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        send(&mut tls, HEADER).await;
        let features = element(&mut tls, &mut d).await;
        Client { tls, d, features }
    }

    async fn element(&mut self) -> Element {
        element(&mut self.tls, &mut self.d).await
    }

    async fn send(&mut self, s: &str) {
        send(&mut self.tls, s).await
    }

    /// RFC 9266 from our side of the connection.
    fn exporter(&self) -> Vec<u8> {
        self.tls
            .get_ref()
            .1
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap()
    }

    /// RFC 5929 §4.1 from the certificate we received (ECDSA with SHA-256: SHA-256).
    fn end_point(&self) -> Vec<u8> {
        let certs = self.tls.get_ref().1.peer_certificates().unwrap();
        Sha256::hash(certs[0].as_ref())
    }

    /// The advertised mechanisms, in order.
    fn mechanisms(&self) -> Vec<String> {
        self.features
            .get_child("mechanisms", SASL)
            .map(|m| m.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// The XEP-0440 channel-binding types advertised.
    fn cb_types(&self) -> Option<Vec<String>> {
        let cb = self
            .features
            .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")?;
        Some(
            cb.children()
                .map(|c| c.attr("type").unwrap_or_default().to_string())
                .collect(),
        )
    }

    async fn auth(&mut self, mechanism: &str, initial: &[u8]) {
        let el = format!(
            "<auth xmlns='{SASL}' mechanism='{mechanism}'>{}</auth>",
            B64.encode(initial)
        );
        self.send(&el).await;
    }

    async fn respond(&mut self, data: &[u8]) {
        self.send(&format!(
            "<response xmlns='{SASL}'>{}</response>",
            B64.encode(data)
        ))
        .await;
    }

    /// Runs the `sasl` crate's SCRAM-SHA-256 (-PLUS with a binding) to the server's answer
    /// to the last message: `<success/>` (its `v=` checked by the crate) or `<failure/>`.
    async fn scram(&mut self, user: &str, password: &str, binding: ChannelBinding) -> Element {
        let mut m = Scram::<Sha256>::new(user, password.to_string(), binding).unwrap();
        let name = m.name().to_string();
        let initial = m.initial();
        self.auth(&name, &initial).await;
        let challenge = self.element().await;
        if challenge.name() != "challenge" {
            return challenge;
        }
        let data = B64.decode(challenge.text()).unwrap();
        let response = m.response(&data).unwrap();
        self.respond(&response).await;
        let answer = self.element().await;
        if answer.name() == "success" {
            m.success(&B64.decode(answer.text()).unwrap())
                .expect("the server proved it knows the password");
        }
        answer
    }

    /// SCRAM-SHA-256-PLUS with `p=tls-server-end-point` (`cb_data` after the gs2 header in
    /// `c=`), the messages assembled here on the `sasl` crate's primitives.
    async fn scram_end_point(&mut self, user: &str, password: &str, cb_data: &[u8]) -> Element {
        let gs2 = "p=tls-server-end-point,,";
        let bare = format!("n={user},r=cnonce-end-point");
        self.auth("SCRAM-SHA-256-PLUS", format!("{gs2}{bare}").as_bytes())
            .await;
        let challenge = self.element().await;
        assert_eq!(challenge.name(), "challenge", "{}", xml(&challenge));
        let first = String::from_utf8(B64.decode(challenge.text()).unwrap()).unwrap();
        let attr = |k: &str| {
            first
                .split(',')
                .find_map(|a| a.strip_prefix(k))
                .unwrap()
                .to_string()
        };
        let (nonce, salt, iters) = (attr("r="), attr("s="), attr("i="));
        let salted = Sha256::derive(
            &Password::Plain(password.to_string()),
            &B64.decode(salt).unwrap(),
            iters.parse().unwrap(),
        )
        .unwrap();
        let client_key = Sha256::hmac(b"Client Key", &salted).unwrap();
        let stored_key = Sha256::hash(&client_key);
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{bare},{first},{without_proof}");
        let signature = Sha256::hmac(auth_message.as_bytes(), &stored_key).unwrap();
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.respond(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())
            .await;
        let answer = self.element().await;
        if answer.name() == "success" {
            // The server proves the password too (RFC 5802 §3 ServerSignature).
            let server_key = Sha256::hmac(b"Server Key", &salted).unwrap();
            let v = Sha256::hmac(auth_message.as_bytes(), &server_key).unwrap();
            let got = B64.decode(answer.text()).unwrap();
            assert_eq!(got, format!("v={}", B64.encode(v)).into_bytes());
        }
        answer
    }

    /// After `<success/>`: restart the stream and bind, as a logged-in client.
    async fn bind(&mut self) -> Element {
        self.d.reset();
        self.send(HEADER).await;
        let f = self.element().await;
        assert!(f
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .is_some());
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>cb</resource></bind></iq>",
        )
        .await;
        self.element().await
    }
}

fn condition(failure: &Element) -> String {
    assert_eq!(failure.name(), "failure", "{}", xml(failure));
    failure
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}

async fn server() -> TestServer {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("alice", "pw-a");
    s
}

#[tokio::test]
async fn features_offer_plus_first_and_the_binding_types() {
    let s = server().await;
    for via in [Via::StartTls, Via::DirectTls] {
        let c = Client::connect(&s, via, false).await;
        assert_eq!(
            c.mechanisms(),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        assert_eq!(
            c.cb_types().unwrap(),
            ["tls-exporter", "tls-server-end-point"]
        );
    }
    // TLS 1.2: tls-exporter is undefined without the extended master secret (RFC 9266 §3),
    // so only tls-server-end-point.
    let c = Client::connect(&s, Via::DirectTls, true).await;
    assert_eq!(c.mechanisms()[0], "SCRAM-SHA-256-PLUS");
    assert_eq!(c.cb_types().unwrap(), ["tls-server-end-point"]);
}

#[tokio::test]
async fn scram_sha256_plus_with_tls_exporter_logs_in() {
    let s = server().await;
    for via in [Via::StartTls, Via::DirectTls] {
        let mut c = Client::connect(&s, via, false).await;
        let cb = ChannelBinding::TlsExporter(c.exporter());
        let answer = c.scram("alice", "pw-a", cb).await;
        assert_eq!(answer.name(), "success", "{}", xml(&answer));
        let bound = c.bind().await;
        assert_eq!(bound.attr("type"), Some("result"), "{}", xml(&bound));
    }
    assert_eq!(
        s.running
            .shared
            .metrics
            .auth_failures
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn scram_sha256_plus_with_tls_server_end_point_logs_in() {
    let s = server().await;
    for (via, tls12) in [
        (Via::StartTls, false),
        (Via::DirectTls, false),
        (Via::DirectTls, true),
    ] {
        let mut c = Client::connect(&s, via, tls12).await;
        let cb = c.end_point();
        let answer = c.scram_end_point("alice", "pw-a", &cb).await;
        assert_eq!(answer.name(), "success", "{}", xml(&answer));
        let bound = c.bind().await;
        assert_eq!(bound.attr("type"), Some("result"), "{}", xml(&bound));
    }
}

#[tokio::test]
async fn binding_data_of_another_connection_is_not_authorized() {
    let s = server().await;
    // What a man in the middle would forward: the data of his own TLS connection.
    let other = Client::connect(&s, Via::DirectTls, false).await;
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    let answer = c
        .scram(
            "alice",
            "pw-a",
            ChannelBinding::TlsExporter(other.exporter()),
        )
        .await;
    assert_eq!(condition(&answer), "not-authorized");
    let answer = c.scram_end_point("alice", "pw-a", &[0u8; 32]).await;
    assert_eq!(condition(&answer), "not-authorized");
    // Counted as failed authentications, like wrong passwords.
    assert_eq!(
        s.running
            .shared
            .metrics
            .auth_failures
            .load(Ordering::Relaxed),
        2
    );
    // The right data on the same stream then works.
    let cb = ChannelBinding::TlsExporter(c.exporter());
    assert_eq!(c.scram("alice", "pw-a", cb).await.name(), "success");
}

#[tokio::test]
async fn y_flag_where_plus_is_offered_is_refused() {
    let s = server().await;
    let mut c = Client::connect(&s, Via::StartTls, false).await;
    // "y": the client binds but believes we cannot — someone stripped -PLUS on the way.
    let answer = c.scram("alice", "pw-a", ChannelBinding::Unsupported).await;
    assert_eq!(condition(&answer), "not-authorized");
    // "n" (a client without channel binding) is fine.
    let answer = c.scram("alice", "pw-a", ChannelBinding::None).await;
    assert_eq!(answer.name(), "success", "{}", xml(&answer));
}

#[tokio::test]
async fn unsupported_binding_types_are_refused() {
    let s = server().await;
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    // tls-unique does not exist in TLS 1.3 and is never offered.
    let answer = c
        .scram("alice", "pw-a", ChannelBinding::TlsUnique(vec![1; 12]))
        .await;
    assert_eq!(condition(&answer), "malformed-request");
    // tls-exporter over TLS 1.2 is not offered either.
    let mut c = Client::connect(&s, Via::DirectTls, true).await;
    let answer = c
        .scram("alice", "pw-a", ChannelBinding::TlsExporter(vec![1; 32]))
        .await;
    assert_eq!(condition(&answer), "malformed-request");
}

#[tokio::test]
async fn channel_binding_off_offers_no_plus() {
    let s = TestServer::start_with(|c| {
        c.c2s.require_encryption = true;
        c.c2s.channel_binding = false;
    })
    .await;
    s.add_user("alice", "pw-a");
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    assert_eq!(c.mechanisms(), ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    assert_eq!(c.cb_types(), None);
    let cb = ChannelBinding::TlsExporter(c.exporter());
    assert_eq!(
        condition(&c.scram("alice", "pw-a", cb).await),
        "invalid-mechanism"
    );
    // "y" is then the truth: the server does not bind.
    let answer = c.scram("alice", "pw-a", ChannelBinding::Unsupported).await;
    assert_eq!(answer.name(), "success", "{}", xml(&answer));
}

#[tokio::test]
async fn a_resumed_tls_session_binds_with_both_types() {
    let s = server().await;
    let config = tls_config(&s, false);
    let first = Client::connect_with(&s, Via::DirectTls, config.clone()).await;
    assert_eq!(
        first.tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // The first connection's session ticket arrived with its features: this one resumes.
    // No Certificate message is sent, but the certificate of the session is the one the
    // server presents for this name (certificates change only at a start, and sessions do
    // not outlive the process), as the client remembers it.
    for binding in ["tls-exporter", "tls-server-end-point"] {
        let mut c = Client::connect_with(&s, Via::DirectTls, config.clone()).await;
        assert_eq!(
            c.tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        assert_eq!(
            c.cb_types().unwrap(),
            ["tls-exporter", "tls-server-end-point"]
        );
        let answer = if binding == "tls-exporter" {
            let cb = ChannelBinding::TlsExporter(c.exporter());
            c.scram("alice", "pw-a", cb).await
        } else {
            let cb = c.end_point();
            c.scram_end_point("alice", "pw-a", &cb).await
        };
        assert_eq!(answer.name(), "success", "{binding}: {}", xml(&answer));
    }
}

// ---- XEP-0484 FAST with channel binding (HT-SHA-256-EXPR / -ENDP) --------------------------

const SASL2: &str = "urn:xmpp:sasl:2";
const FAST: &str = "urn:xmpp:fast:0";
const PHONE: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

fn agent() -> String {
    format!("<user-agent id='{PHONE}'><software>herald tests</software></user-agent>")
}

impl Client {
    /// The FAST mechanisms offered inside SASL2's `<inline/>`.
    fn fast_mechanisms(&self) -> Vec<String> {
        self.features
            .get_child("authentication", SASL2)
            .and_then(|a| a.get_child("inline", SASL2))
            .and_then(|i| i.get_child("fast", FAST))
            .map(|f| f.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// The channel-binding data `mechanism` includes, from our side of the connection.
    fn ht_cb(&self, mechanism: &str) -> Vec<u8> {
        match mechanism {
            ht::SHA256_EXPR => self.exporter(),
            ht::SHA256_ENDP => self.end_point(),
            _ => Vec::new(),
        }
    }

    /// SASL2 PLAIN asking for a token for `mechanism`; returns the token.
    async fn request_token(&mut self, mechanism: &str) -> String {
        self.send(&format!(
            "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{}<request-token xmlns='{FAST}' mechanism='{mechanism}'/></authenticate>",
            B64.encode(b"\0alice\0pw-a"),
            agent()
        ))
        .await;
        let ok = self.element().await;
        assert_eq!(ok.name(), "success", "{}", xml(&ok));
        ok.get_child("token", FAST)
            .and_then(|t| t.attr("token"))
            .unwrap_or_else(|| panic!("no token: {}", xml(&ok)))
            .to_string()
    }

    /// `<authenticate/>` with `mechanism` and `proof` as the initiator message.
    async fn ht_auth(&mut self, mechanism: &str, proof: &[u8]) -> Element {
        let mut msg = b"alice\0".to_vec();
        msg.extend_from_slice(proof);
        self.send(&format!(
            "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'><initial-response>{}</initial-response>{}</authenticate>",
            B64.encode(&msg),
            agent()
        ))
        .await;
        self.element().await
    }
}

use herald_proto::sasl::ht;

#[tokio::test]
async fn fast_offers_the_channel_bindings_of_the_connection() {
    let s = server().await;
    for via in [Via::StartTls, Via::DirectTls] {
        let c = Client::connect(&s, via, false).await;
        assert_eq!(
            c.fast_mechanisms(),
            ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"]
        );
    }
    // TLS 1.2: no tls-exporter here (as for SCRAM-*-PLUS), so no -EXPR; never -UNIQ.
    let c = Client::connect(&s, Via::DirectTls, true).await;
    assert_eq!(c.fast_mechanisms(), ["HT-SHA-256-ENDP", "HT-SHA-256-NONE"]);
}

#[tokio::test]
async fn fast_expr_and_endp_tokens_log_in_bound_to_the_connection() {
    let s = server().await;
    for mechanism in [ht::SHA256_EXPR, ht::SHA256_ENDP] {
        let mut c = Client::connect(&s, Via::DirectTls, false).await;
        let token = c.request_token(mechanism).await;
        // Reconnect with the token and this new connection's binding.
        let mut c = Client::connect(&s, Via::DirectTls, false).await;
        let cb = c.ht_cb(mechanism);
        let ok = c
            .ht_auth(mechanism, &ht::initiator(token.as_bytes(), &cb))
            .await;
        assert_eq!(ok.name(), "success", "{mechanism}: {}", xml(&ok));
        // The server proves it knows the token and sees the same channel.
        let data = ok.get_child("additional-data", SASL2).unwrap();
        assert_eq!(
            B64.decode(data.text()).unwrap(),
            ht::responder_cb(token.as_bytes(), &cb),
            "{mechanism}"
        );
        assert!(ok.get_child("authorization-identifier", SASL2).is_some());
        // The same token over -NONE (a downgrade): refused.
        let mut c = Client::connect(&s, Via::DirectTls, false).await;
        let answer = c
            .ht_auth(ht::SHA256_NONE, &ht::initiator(token.as_bytes(), b""))
            .await;
        assert_eq!(condition(&answer), "not-authorized", "{mechanism}");
        // A wrong token.
        let mut c = Client::connect(&s, Via::DirectTls, false).await;
        let cb = c.ht_cb(mechanism);
        let answer = c
            .ht_auth(mechanism, &ht::initiator(b"not-the-token", &cb))
            .await;
        assert_eq!(condition(&answer), "not-authorized", "{mechanism}");
    }
    // The store keeps a salt, not the token.
    let rows = s
        .running
        .shared
        .store
        .fast_tokens("alice@localhost", PHONE)
        .unwrap();
    assert!(rows
        .iter()
        .all(|r| r.salt.as_ref().is_some_and(|s| s.len() == 16)
            && r.verifier.is_empty()
            && r.responder.is_empty()));
}

#[tokio::test]
async fn an_expr_proof_replayed_on_another_connection_is_not_authorized() {
    let s = server().await;
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    let token = c.request_token(ht::SHA256_EXPR).await;
    // The first connection's initiator message, as an attacker who saw it would replay it.
    let first = Client::connect(&s, Via::DirectTls, false).await;
    let proof = ht::initiator(token.as_bytes(), &first.exporter());
    let mut other = Client::connect(&s, Via::DirectTls, false).await;
    assert_ne!(other.exporter(), first.exporter());
    assert_eq!(
        condition(&other.ht_auth(ht::SHA256_EXPR, &proof).await),
        "not-authorized"
    );
    // On its own connection the message works.
    let mut first = first;
    let ok = first.ht_auth(ht::SHA256_EXPR, &proof).await;
    assert_eq!(ok.name(), "success", "{}", xml(&ok));
}

#[tokio::test]
async fn an_expired_or_removed_accounts_expr_token_fails() {
    let s = server().await;
    let shared = &s.running.shared;
    // An expired token, derived as the server derives it.
    let salt = vec![5u8; 16];
    let now = herald_server::xep::delay::now_micros() / 1000;
    shared
        .store
        .issue_fast_token(
            "alice@localhost",
            &herald_store::FastTokenRecord {
                client_id: PHONE.into(),
                mechanism: ht::SHA256_EXPR.into(),
                verifier: Vec::new(),
                responder: Vec::new(),
                salt: Some(salt.clone()),
                issued_at: now - 20_000,
                expires_at: now - 10_000,
                current: true,
            },
            16,
        )
        .unwrap();
    let token = ht::derive_token(
        &shared.fast_key,
        &salt,
        "alice@localhost",
        PHONE,
        ht::SHA256_EXPR,
    );
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    let cb = c.exporter();
    let answer = c
        .ht_auth(ht::SHA256_EXPR, &ht::initiator(token.as_bytes(), &cb))
        .await;
    assert_eq!(condition(&answer), "credentials-expired");

    // A valid token of an account that is then removed.
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    let token = c.request_token(ht::SHA256_EXPR).await;
    let (cfg, store) = (shared.cfg.clone(), shared.store.clone());
    tokio::task::spawn_blocking(move || {
        let jid = herald::admin::account_jid(&cfg, "alice").unwrap();
        herald::admin::remove_account(&cfg, &*store, &jid)
    })
    .await
    .unwrap()
    .unwrap();
    let mut c = Client::connect(&s, Via::DirectTls, false).await;
    let cb = c.exporter();
    let answer = c
        .ht_auth(ht::SHA256_EXPR, &ht::initiator(token.as_bytes(), &cb))
        .await;
    assert_eq!(condition(&answer), "not-authorized");
}
