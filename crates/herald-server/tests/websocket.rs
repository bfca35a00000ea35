//! XMPP over WebSocket (RFC 7395) as a web client sees it, through a real WebSocket client
//! (tokio-tungstenite) on the plain HTTP listener: the framing (`<open/>`, one standalone
//! element per message, `<close/>`), SASL and the restart, a message with a TCP user both
//! ways, XEP-0198 resumption after the socket drops, the refusals (no `xmpp` subprotocol,
//! connection limits), the stream errors for binary, incomplete and oversized messages,
//! XEP-0156 host-meta, and `/metrics` by transport.

mod common;
#[path = "common/http.rs"]
mod http;

use std::net::SocketAddr;

use base64::Engine as _;
use common::*;
use futures::{SinkExt, StreamExt};
use herald_proto::Element;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

async fn server(f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        f(c)
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

fn ws_addr(s: &TestServer) -> SocketAddr {
    s.running.http_plain_addr.unwrap()
}

/// What the server closed with: a WebSocket close frame's code, or None when the socket
/// just ended.
#[derive(Debug, PartialEq)]
enum End {
    Close(Option<u16>),
    Eof,
}

struct Ws {
    ws: WebSocketStream<TcpStream>,
    /// Stanzas received (XEP-0198 counts them for `h`).
    stanzas: u32,
}

/// The handshake with `protocol` offered (None: no subprotocol header); the HTTP status of
/// a refusal as Err.
async fn connect(addr: SocketAddr, protocol: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/xmpp-websocket")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("xmpp"),
                "RFC 7395 §3.1: the server selects the subprotocol"
            );
            Ok(Ws { ws, stanzas: 0 })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

impl Ws {
    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next message as an element: it must parse on its own (RFC 7395 §3.3.3:
    /// every message is a standalone document, namespaces declared). Panics at the end.
    async fn recv(&mut self) -> Element {
        match self.next().await {
            Ok(el) => {
                if ["message", "presence", "iq"].contains(&el.name()) {
                    self.stanzas += 1;
                }
                el
            }
            Err(end) => panic!("expected a message, got {end:?}"),
        }
    }

    async fn next(&mut self) -> Result<Element, End> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Ok(t
                        .as_str()
                        .parse::<Element>()
                        .unwrap_or_else(|e| panic!("not a standalone element: {t}: {e}")));
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(End::Close(f.map(|f| u16::from(f.code))));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                None | Some(Err(_)) => return Err(End::Eof),
            }
        }
    }

    /// The next element that is not presence or `<r/>`.
    async fn expect(&mut self, name: &str) -> Element {
        loop {
            let el = self.recv().await;
            // Presence and the server's ack requests are not what these tests wait for.
            if el.name() == "presence" && name != "presence" || el.name() == "r" && name != "r" {
                continue;
            }
            assert_eq!(el.name(), name, "got {}", String::from(&el));
            return el;
        }
    }

    /// `<open/>` and the features after it.
    async fn open(&mut self) -> Element {
        self.send(OPEN).await;
        let open = self.recv().await;
        assert!(open.is("open", FRAMING), "{}", String::from(&open));
        assert_eq!(open.attr("from"), Some("localhost"));
        assert_eq!(open.attr("version"), Some("1.0"));
        assert!(open.attr("id").is_some());
        let f = self.recv().await;
        assert!(
            f.is("features", "http://etherx.jabber.org/streams"),
            "{}",
            String::from(&f)
        );
        f
    }

    /// Opens, authenticates with PLAIN and restarts; the features after authentication.
    async fn authenticate(addr: SocketAddr, user: &str) -> (Ws, Element) {
        let mut c = connect(addr, Some("xmpp")).await.unwrap();
        let f = c.open().await;
        // No STARTTLS over WebSocket (RFC 7395 §3.2); PLAIN, as the transport counts as
        // secured (TLS on the HTTPS listener, a terminating proxy on the plain one).
        assert!(child(&f, "starttls").is_none(), "{}", String::from(&f));
        let mechs = child(&f, "mechanisms").expect("mechanisms");
        assert!(mechs.children().any(|m| m.text() == "PLAIN"));
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        let s = c.recv().await;
        assert!(
            s.is("success", "urn:ietf:params:xml:ns:xmpp-sasl"),
            "{}",
            String::from(&s)
        );
        let f = c.open().await;
        (c, f)
    }

    async fn bind(&mut self, resource: &str) {
        self.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = self.expect("iq").await;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        let jid = r
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|b| b.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .map(|j| j.text());
        assert_eq!(
            jid.as_deref(),
            Some(&*format!("alice@localhost/{resource}"))
        );
    }

    /// The stream error condition the server ends with, then how the WebSocket ended.
    async fn stream_error(&mut self) -> (String, End) {
        loop {
            let el = self.recv().await;
            if !el.is("error", "http://etherx.jabber.org/streams") {
                continue;
            }
            let cond = el
                .children()
                .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text")
                .map(|c| c.name().to_string())
                .unwrap_or_default();
            let close = self.recv().await;
            assert!(close.is("close", FRAMING), "{}", String::from(&close));
            let end = self.next().await.expect_err("nothing after <close/>");
            return (cond, end);
        }
    }
}

fn body(m: &Element) -> Option<String> {
    m.get_child("body", "jabber:client").map(|b| b.text())
}

#[tokio::test]
async fn login_and_messages_between_a_websocket_and_a_tcp_user() {
    let s = server(|_| {}).await;
    let (mut a, f) = Ws::authenticate(ws_addr(&s), "alice").await;
    assert!(child(&f, "bind").is_some(), "{}", String::from(&f));
    assert!(child(&f, "sm").is_some(), "{}", String::from(&f));
    a.bind("web").await;
    a.send("<presence xmlns='jabber:client'/>").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "pc").await;
    b.send("<presence/>").await;

    // TCP → WebSocket: a message, standalone with its namespace.
    b.send("<message to='alice@localhost/web' type='chat' id='m1'><body>hi web</body></message>")
        .await;
    let m = a.expect("message").await;
    assert_eq!(m.ns(), "jabber:client");
    assert_eq!(m.attr("from"), Some("bob@localhost/pc"));
    assert_eq!(body(&m).as_deref(), Some("hi web"));

    // WebSocket → TCP, one stanza without its `xmlns` (the stream's default applies, as on
    // TCP).
    a.send("<message to='bob@localhost/pc' type='chat' id='m2'><body>hi tcp</body></message>")
        .await;
    let m = b.expect("message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"));
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text()),
        Some("hi tcp".into())
    );

    // The session is counted as a WebSocket one, and the upgraded connection left the HTTP
    // count (only the scrape's own is left).
    let r = http::request_plain(ws_addr(&s), "GET", "/metrics").await;
    let text = String::from_utf8(r.body).unwrap();
    for line in [
        "herald_http_connections 1",
        "herald_sessions{state=\"live\",transport=\"websocket\"} 1",
        "herald_sessions{state=\"live\",transport=\"tcp\"} 1",
        "herald_connections{transport=\"websocket\"} 1",
        "herald_connections{transport=\"tcp\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    // XEP-0198 `<r/>` is answered as on TCP.
    a.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    a.expect("enabled").await;
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a.expect("a").await;
    assert_eq!(ack.ns(), "urn:xmpp:sm:3");

    // `<close/>` is answered with `<close/>`, then the WebSocket closes normally.
    a.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    let c = a.recv().await;
    assert!(c.is("close", FRAMING), "{}", String::from(&c));
    assert_eq!(
        a.next().await.unwrap_err(),
        End::Close(Some(u16::from(CloseCode::Normal)))
    );
    let shared = s.running.shared.clone();
    wait_until("websocket session gone", || {
        shared.router.resources("alice@localhost").is_empty()
    })
    .await;
    let r = http::request_plain(ws_addr(&s), "GET", "/metrics").await;
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "herald_connections{transport=\"websocket\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_dropped_websocket_session_resumes_and_gets_what_was_sent_meanwhile() {
    let s = server(|_| {}).await;
    let (mut a, _) = Ws::authenticate(ws_addr(&s), "alice").await;
    a.bind("web").await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = a.expect("enabled").await;
    let id = enabled.attr("id").expect("resumption id").to_string();
    let counted_from = a.stanzas;
    a.send("<presence xmlns='jabber:client'/>").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "pc").await;
    b.send("<message to='alice@localhost/web' id='before'><body>one</body></message>")
        .await;
    assert_eq!(body(&a.expect("message").await).as_deref(), Some("one"));
    a.send("<iq xmlns='jabber:client' type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.expect("iq").await;
    let h = a.stanzas - counted_from;
    // The socket drops without a close (a phone losing its network).
    drop(a);
    let shared = s.running.shared.clone();
    wait_until("session hibernated", || {
        shared
            .router
            .resources("alice@localhost")
            .iter()
            .any(|r| r.resource == "web" && r.hibernated)
    })
    .await;
    b.send("<message to='alice@localhost/web' id='during'><body>two</body></message>")
        .await;
    b.sync("sent").await;

    let (mut a, f) = Ws::authenticate(ws_addr(&s), "alice").await;
    assert!(child(&f, "sm").is_some());
    a.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='{h}' previd='{id}'/>"
    ))
    .await;
    let resumed = a.expect("resumed").await;
    assert_eq!(resumed.attr("previd"), Some(&*id));
    let m = a.expect("message").await;
    assert_eq!(m.attr("id"), Some("during"));
    assert_eq!(body(&m).as_deref(), Some("two"));
    // Live again, over the WebSocket.
    b.send("<message to='alice@localhost/web' id='after'><body>three</body></message>")
        .await;
    assert_eq!(body(&a.expect("message").await).as_deref(), Some("three"));
    assert!(shared
        .router
        .resources("alice@localhost")
        .iter()
        .any(|r| r.resource == "web" && !r.hibernated && r.transport == "websocket"));
}

#[tokio::test]
async fn the_handshake_requires_the_xmpp_subprotocol() {
    let s = server(|_| {}).await;
    assert_eq!(connect(ws_addr(&s), None).await.err(), Some(400));
    assert_eq!(connect(ws_addr(&s), Some("mqtt")).await.err(), Some(400));
    // Among others, it is chosen.
    let mut c = connect(ws_addr(&s), Some("mqtt, xmpp")).await.unwrap();
    c.open().await;
}

#[tokio::test]
async fn websocket_can_be_switched_off() {
    let s = server(|c| c.http.websocket = false).await;
    assert_eq!(connect(ws_addr(&s), Some("xmpp")).await.err(), Some(404));
    let r = http::request_plain(ws_addr(&s), "GET", "/.well-known/host-meta.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8(r.body).unwrap(), "{\"links\":[]}");
}

#[tokio::test]
async fn upgrades_count_against_the_c2s_connection_limits() {
    let s = server(|c| c.limits.max_connections_per_ip = 1).await;
    // A TCP connection holds the address's one slot: the upgrade is refused.
    let mut tcp = RawClient::connect(s.c2s()).await;
    tcp.open("localhost").await;
    tcp.expect("features").await;
    assert_eq!(connect(ws_addr(&s), Some("xmpp")).await.err(), Some(503));
    drop(tcp);
    let shared = s.running.shared.clone();
    wait_until("slot freed", || shared.conns.total() == 0).await;
    // And a WebSocket holds it against TCP.
    let mut ws = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
    ws.open().await;
    let mut tcp = RawClient::connect(s.c2s()).await;
    assert_eq!(tcp.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn a_binary_message_is_refused_with_a_stream_error() {
    let s = server(|_| {}).await;
    let mut c = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
    c.open().await;
    c.ws.send(Message::binary(b"<presence/>".to_vec()))
        .await
        .unwrap();
    let (cond, end) = c.stream_error().await;
    assert_eq!(cond, "unsupported-encoding");
    // RFC 6455 §7.4.1: 1003, data of a type it cannot accept.
    assert_eq!(end, End::Close(Some(1003)));
}

#[tokio::test]
async fn a_message_that_is_not_one_complete_element_is_not_well_formed() {
    let s = server(|_| {}).await;
    for bad in [
        "<message xmlns='jabber:client'>",
        "<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>",
        "<presence xmlns='jabber:client'",
    ] {
        let mut c = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
        c.open().await;
        c.send(bad).await;
        let (cond, end) = c.stream_error().await;
        assert_eq!(cond, "not-well-formed", "{bad}");
        assert_eq!(end, End::Close(Some(1000)), "{bad}");
    }
    // Before `<open/>`, the first element must be it.
    let mut c = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
    c.send("<presence xmlns='jabber:client'/>").await;
    let open = c.recv().await;
    assert!(open.is("open", FRAMING));
    let (cond, _) = c.stream_error().await;
    assert_eq!(cond, "invalid-namespace");
}

#[tokio::test]
async fn oversized_messages_are_a_policy_violation() {
    let s = server(|c| c.limits.max_stanza_bytes = 16_384).await;
    // Before authentication the pre-authentication limit applies (the decoder's).
    let mut c = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
    c.open().await;
    let big = format!(
        "<iq xmlns='jabber:client' type='get' id='x'><query xmlns='jabber:iq:version'>{}</query></iq>",
        "a".repeat(10_000)
    );
    c.send(&big).await;
    assert_eq!(c.stream_error().await.0, "policy-violation");
    // Beyond what the WebSocket library takes at all.
    let mut c = connect(ws_addr(&s), Some("xmpp")).await.unwrap();
    c.open().await;
    c.send(&"a".repeat(100_000)).await;
    assert_eq!(c.stream_error().await.0, "policy-violation");
}

#[tokio::test]
async fn host_meta_lists_the_websocket_endpoint_for_any_origin() {
    let s = server(|c| c.http.public_url = "https://chat.example:5443/".into()).await;
    let r = http::request_plain(ws_addr(&s), "GET", "/.well-known/host-meta").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("content-type"),
        Some("application/xrd+xml; charset=utf-8")
    );
    let xrd: Element = String::from_utf8(r.body).unwrap().parse().unwrap();
    assert!(xrd.is("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0"));
    let links: Vec<_> = xrd
        .children()
        .filter(|l| l.name() == "Link")
        .map(|l| (l.attr("rel").unwrap(), l.attr("href").unwrap()))
        .collect();
    assert_eq!(
        links,
        [(
            "urn:xmpp:alt-connections:websocket",
            "wss://chat.example:5443/xmpp-websocket"
        )]
    );

    let r = http::request_plain(ws_addr(&s), "GET", "/.well-known/host-meta.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"links": [{
            "rel": "urn:xmpp:alt-connections:websocket",
            "href": "wss://chat.example:5443/xmpp-websocket"
        }]})
    );

    // A plain public URL (a proxy without TLS, or a test) gives ws://.
    let s = server(|c| c.http.public_url = "http://127.0.0.1:8080".into()).await;
    let r = http::request_plain(ws_addr(&s), "GET", "/.well-known/host-meta.json").await;
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["links"][0]["href"], "ws://127.0.0.1:8080/xmpp-websocket");
}

#[tokio::test]
async fn a_websocket_session_resumes_over_tcp() {
    let s = server(|_| {}).await;
    let (mut a, _) = Ws::authenticate(ws_addr(&s), "alice").await;
    a.bind("web").await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let id = a.expect("enabled").await.attr("id").unwrap().to_string();
    drop(a);
    let shared = s.running.shared.clone();
    wait_until("session hibernated", || {
        shared
            .router
            .resources("alice@localhost")
            .iter()
            .any(|r| r.hibernated)
    })
    .await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "pc").await;
    b.send("<message to='alice@localhost/web' id='m'><body>over tcp</body></message>")
        .await;
    b.sync("sent").await;
    let (mut t, _) = RawClient::authenticate(s.c2s(), "alice", "pw").await;
    t.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='0' previd='{id}'/>"
    ))
    .await;
    t.expect("resumed").await;
    let m = t.expect("message").await;
    assert_eq!(m.attr("id"), Some("m"));
    // `/metrics` now counts it as a TCP session.
    assert!(shared
        .router
        .resources("alice@localhost")
        .iter()
        .any(|r| r.resource == "web" && !r.hibernated && r.transport == "tcp"));
}
