//! Test kit: a server on loopback ports chosen by the OS with a temporary data dir, and a raw
//! XML client that speaks bytes and reads back parsed elements (with herald-proto's decoder,
//! the same one the server trusts, so assertions are on structure, not on byte layout).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use herald_proto::stream::{Decoder, Limits, StreamEvent, StreamHeader};
use herald_proto::Element;
use herald_server::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let any: Option<SocketAddr> = Some("127.0.0.1:0".parse().unwrap());
    Config {
        data_dir: dir.join("data"),
        c2s: herald_server::config::C2sConfig {
            listen: any,
            direct_tls_listen: any,
            require_encryption: false,
            auth_failure_delay: herald_server::config::Dur(Duration::from_millis(10)),
            ..Default::default()
        },
        components: herald_server::config::ComponentsConfig {
            listen: any,
            component: vec![herald_server::config::ComponentEntry {
                domain: "push.localhost".into(),
                secret: "s3cret".into(),
            }],
        },
        // Tests must not depend on the free space of the machine they run on; the tests of
        // the check set it themselves.
        store: herald_server::config::StoreConfig {
            min_free_bytes: 0,
            ..Default::default()
        },
        // Many tests here flood on purpose (queue budgets, backlogs, quotas) or log in many
        // times and would only run slower under the inbound and connection rate limits; those have their own tests
        // (limits.rs), and the interop suite runs the server with the defaults.
        limits: herald_server::config::LimitsConfig {
            c2s_stanzas_per_second: 0,
            c2s_bytes_per_second: 0,
            connection_rate_per_ip: 0,
            ..Default::default()
        },
        // Off unless a test asks (`[http]` listens on a fixed port by default).
        http: herald_server::config::HttpConfig {
            listen: None,
            ..Default::default()
        },
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        f(&mut cfg);
        let running = herald_server::start(cfg).await.unwrap();
        TestServer { running, dir }
    }

    /// Stops the server and starts a new one on the same data directory and config.
    #[allow(dead_code)]
    pub async fn restart(self) -> TestServer {
        let cfg = self.running.shared.cfg.clone();
        let TestServer { running, dir } = self;
        running.stop().await;
        let running = herald_server::start(cfg).await.unwrap();
        TestServer { running, dir }
    }

    pub fn c2s(&self) -> SocketAddr {
        self.running.c2s_addr.unwrap()
    }

    pub fn component_addr(&self) -> SocketAddr {
        self.running.component_addr.unwrap()
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let cfg = &self.running.shared.cfg;
        let jid = herald::admin::account_jid(cfg, name).unwrap();
        herald::admin::add_user(&*self.running.shared.store, &jid, password).unwrap();
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    pub decoder: Decoder,
    pub header: Option<StreamHeader>,
    pub closed: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::over(stream)
    }

    /// Connects from the local address `src` (another loopback address: 127.0.0.2 is a
    /// different peer to the server's per-address limits).
    pub async fn connect_from(addr: SocketAddr, src: std::net::IpAddr) -> RawClient {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(src, 0)).unwrap();
        Self::over(sock.connect(addr).await.unwrap())
    }

    fn over(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            decoder: Decoder::new(Limits {
                max_stanza_bytes: 1 << 22,
                ..Limits::default()
            }),
            header: None,
            closed: false,
        }
    }

    pub async fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).await.unwrap();
    }

    pub async fn open(&mut self, to: &str) {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
        ))
        .await;
    }

    /// Next event from the server, or None at EOF. Panics after WAIT.
    pub async fn event(&mut self) -> Option<StreamEvent> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.decoder.next_event() {
                    Ok(Some(ev)) => return Some(ev),
                    Ok(None) => {}
                    Err(e) => panic!("server sent bad XML: {e:?}"),
                }
                let mut buf = [0u8; 4096];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        self.closed = true;
                        return None;
                    }
                    Ok(n) => self.decoder.feed(&buf[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for the server")
    }

    /// Next element, skipping the header (remembered). Panics on EOF or end.
    pub async fn element(&mut self) -> Element {
        loop {
            match self.event().await {
                Some(StreamEvent::Header(h)) => self.header = Some(h),
                Some(StreamEvent::Stanza(el)) => return el,
                other => panic!("expected an element, got {other:?}"),
            }
        }
    }

    /// Next element named `name`, skipping presence (self-presence, contacts' presence)
    /// unless presence is what is expected.
    pub async fn expect(&mut self, name: &str) -> Element {
        loop {
            let el = self.element().await;
            if el.name() == "presence" && name != "presence" {
                continue;
            }
            assert_eq!(el.name(), name, "got {}", String::from(&el));
            return el;
        }
    }

    /// The stream error condition the server ends with (reads until it).
    pub async fn stream_error(&mut self) -> String {
        loop {
            match self.event().await {
                Some(StreamEvent::Header(h)) => self.header = Some(h),
                Some(StreamEvent::Stanza(el)) if el.name() == "error" => {
                    let cond = el
                        .children()
                        .find(|c| {
                            c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text"
                        })
                        .map(|c| c.name().to_string())
                        .unwrap_or_default();
                    return cond;
                }
                Some(StreamEvent::Stanza(_)) => continue,
                other => panic!("expected a stream error, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes the stream or the socket.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.event().await {
                None | Some(StreamEvent::End) => return,
                Some(_) => continue,
            }
        }
    }

    /// Opens a stream and authenticates with PLAIN over plaintext, binds `resource`.
    pub async fn login(addr: SocketAddr, user: &str, password: &str, resource: &str) -> RawClient {
        let (mut c, _) = RawClient::authenticate(addr, user, password).await;
        c.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = c.expect("iq").await;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        c
    }
}

/// Polls `cond` until it holds, bounded by WAIT: only for a state a server task or timer
/// reaches without telling the client.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A chat message with a body (its id is the body).
pub async fn chat(c: &mut RawClient, to: &str, body: &str) {
    c.send(&format!(
        "<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
    ))
    .await;
}

/// `user` logged in as resource `a` on the primary host, available (a sender).
pub async fn login_available(s: &TestServer, user: &str) -> RawClient {
    let mut c = RawClient::login(s.c2s(), user, "pw", "a").await;
    c.send("<presence/>").await;
    c
}

pub fn xml(el: &Element) -> String {
    String::from(el)
}

pub fn child<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    el.children().find(|c| c.name() == name)
}

impl RawClient {
    /// Connects, authenticates with PLAIN and restarts the stream; returns the client and the
    /// post-authentication features. Nothing is bound yet: XEP-0198 `<resume/>` goes here.
    pub async fn authenticate(
        addr: SocketAddr,
        user: &str,
        password: &str,
    ) -> (RawClient, Element) {
        let mut c = RawClient::connect(addr).await;
        c.open("localhost").await;
        let f = c.expect("features").await;
        assert!(
            f.children().any(|m| m.name() == "mechanisms"),
            "{}",
            String::from(&f)
        );
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        let s = c.element().await;
        assert_eq!(s.name(), "success", "{}", String::from(&s));
        c.decoder.reset();
        c.open("localhost").await;
        let f = c.expect("features").await;
        (c, f)
    }

    /// Binds `resource` on an authenticated stream; returns the bind result.
    pub async fn bind(&mut self, resource: &str) -> Element {
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = self.expect("iq").await;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        r
    }

    /// Pings the server with `id` and returns every element that arrived before the result:
    /// a barrier (the server handles a client's stanzas in order).
    pub async fn sync(&mut self, id: &str) -> Vec<Element> {
        self.send(&format!(
            "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        let mut before = Vec::new();
        loop {
            let el = self.element().await;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                assert_eq!(el.attr("type"), Some("result"), "{}", String::from(&el));
                return before;
            }
            before.push(el);
        }
    }

    /// Ends the transport without a stream close: a reset (RST) when `reset`, else a bare FIN.
    pub fn kill(self, reset: bool) {
        if reset {
            let _ = self.stream.set_zero_linger();
        }
        drop(self);
    }
}

// ---- Fake XEP-0357 app server (a XEP-0114 component on push.localhost) ----

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The component domain the test configuration declares.
pub const APP_DOMAIN: &str = "push.localhost";

/// How the fake app server answers a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppReply {
    /// `<iq type='result'/>`.
    Result,
    /// `<iq type='error'><error type=typ><condition/></error></iq>` (typ: wait, cancel, …).
    Error {
        typ: &'static str,
        condition: &'static str,
    },
    /// No answer at all.
    Silent,
}

impl AppReply {
    pub fn wait() -> AppReply {
        AppReply::Error {
            typ: "wait",
            condition: "resource-constraint",
        }
    }

    pub fn cancel() -> AppReply {
        AppReply::Error {
            typ: "cancel",
            condition: "item-not-found",
        }
    }
}

/// One publish the fake app server received.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The IQ id.
    pub id: String,
    /// The IQ's `from` (the server's domain).
    pub from: String,
    /// The IQ's `to` (the registration's app server JID).
    pub to: String,
    /// `<publish node=…>`.
    pub node: String,
    /// The `urn:xmpp:push:summary` form's fields (FORM_TYPE included), var → value.
    pub fields: BTreeMap<String, String>,
    /// The `<x/>` inside `<publish-options>`, when there is one.
    pub publish_options: Option<Element>,
    /// How the fake answered it.
    pub answered: AppReply,
    /// The whole IQ.
    pub iq: Element,
}

impl Publish {
    pub fn field(&self, var: &str) -> Option<&str> {
        self.fields.get(var).map(String::as_str)
    }

    /// `message-count` as a number.
    pub fn count(&self) -> u32 {
        self.field("message-count")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("publish without a message-count: {}", xml(&self.iq)))
    }

    pub fn body(&self) -> Option<&str> {
        self.field("last-message-body")
    }

    pub fn sender(&self) -> Option<&str> {
        self.field("last-message-sender")
    }

    /// The Tigase priority hint (`high`/`low`) inside `<notification/>`.
    pub fn priority(&self) -> Option<String> {
        self.iq
            .get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
            .and_then(|p| p.get_child("item", "http://jabber.org/protocol/pubsub"))
            .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
            .and_then(|n| n.get_child("priority", "tigase:push:priority:0"))
            .map(|p| p.text())
    }
}

/// The next element that is not an XEP-0198 `<r/>` (which the device leaves unanswered).
pub async fn next_unrequested(c: &mut RawClient) -> Element {
    loop {
        let el = c.element().await;
        if !el.is("r", "urn:xmpp:sm:3") {
            return el;
        }
    }
}

/// A phone app's login on `domain`, in the order such apps use: bind, XEP-0198 with
/// resumption (with `sm`), push enabled to the fake app server with `node`.
pub async fn push_phone(
    s: &TestServer,
    domain: &str,
    user: &str,
    node: &str,
    sm: bool,
) -> RawClient {
    let mut c = RawClient::login_to(s.c2s(), domain, user, "pw", "phone").await;
    if sm {
        c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        assert_eq!(next_unrequested(&mut c).await.name(), "enabled");
    }
    c.send(&format!(
        "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='{node}'/></iq>"
    ))
    .await;
    let r = next_unrequested(&mut c).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    c
}

/// A server with accounts alice, bob and carol (password `pw`) and the fake app server.
pub async fn push_server(f: impl FnOnce(&mut Config)) -> (TestServer, FakeAppServer) {
    let s = TestServer::start_with(f).await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    let app = FakeAppServer::connect(&s).await;
    (s, app)
}

/// A `jabber:x:data` form's fields, var → first value.
pub fn form_fields(x: &Element) -> BTreeMap<String, String> {
    x.children()
        .filter(|f| f.name() == "field")
        .filter_map(|f| {
            let var = f.attr("var")?.to_string();
            let value = f
                .children()
                .find(|v| v.name() == "value")
                .map(|v| v.text())
                .unwrap_or_default();
            Some((var, value))
        })
        .collect()
}

fn parse_publish(iq: &Element, answered: AppReply) -> Option<Publish> {
    if iq.name() != "iq" || iq.attr("type") != Some("set") {
        return None;
    }
    let pubsub = iq
        .children()
        .find(|c| c.is("pubsub", "http://jabber.org/protocol/pubsub"))?;
    let publish = pubsub.children().find(|c| c.name() == "publish")?;
    let notification = publish
        .children()
        .find(|c| c.name() == "item")?
        .children()
        .find(|c| c.is("notification", "urn:xmpp:push:0"))?;
    let fields = notification
        .children()
        .find(|c| c.is("x", "jabber:x:data"))
        .map(form_fields)
        .unwrap_or_default();
    let publish_options = pubsub
        .children()
        .find(|c| c.name() == "publish-options")
        .and_then(|po| po.children().find(|c| c.is("x", "jabber:x:data")).cloned());
    Some(Publish {
        id: iq.attr("id").unwrap_or_default().to_string(),
        from: iq.attr("from").unwrap_or_default().to_string(),
        to: iq.attr("to").unwrap_or_default().to_string(),
        node: publish.attr("node").unwrap_or_default().to_string(),
        fields,
        publish_options,
        answered,
        iq: iq.clone(),
    })
}

#[derive(Debug)]
enum AppEvent {
    Publish(Box<Publish>),
    Marker(u64),
}

#[derive(Debug)]
struct AppReplies {
    /// Answers used first, one per publish, in order.
    queue: VecDeque<AppReply>,
    /// Per node.
    by_node: BTreeMap<String, AppReply>,
    default: AppReply,
}

impl AppReplies {
    fn next(&mut self, node: &str) -> AppReply {
        if let Some(r) = self.queue.pop_front() {
            return r;
        }
        self.by_node
            .get(node)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }
}

/// A XEP-0357 app server: a component on [`APP_DOMAIN`] that records every publish and
/// answers as configured (result by default).
pub struct FakeAppServer {
    events: mpsc::UnboundedReceiver<AppEvent>,
    out: mpsc::UnboundedSender<String>,
    replies: Arc<Mutex<AppReplies>>,
    marker: u64,
}

impl FakeAppServer {
    /// Connects to the server's component port and completes the XEP-0114 handshake.
    pub async fn connect(s: &TestServer) -> FakeAppServer {
        let mut comp = RawClient::connect(s.component_addr()).await;
        comp.send(&format!("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{APP_DOMAIN}'>")).await;
        let id = match comp.event().await {
            Some(StreamEvent::Header(h)) => h.id.unwrap(),
            other => panic!("{other:?}"),
        };
        let digest = herald_server::federation::component::handshake_digest(&id, "s3cret");
        comp.send(&format!("<handshake>{digest}</handshake>")).await;
        assert_eq!(comp.element().await.name(), "handshake");
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (out, out_rx) = mpsc::unbounded_channel();
        let replies = Arc::new(Mutex::new(AppReplies {
            queue: VecDeque::new(),
            by_node: BTreeMap::new(),
            default: AppReply::Result,
        }));
        tokio::spawn(app_task(comp, ev_tx, out_rx, replies.clone()));
        FakeAppServer {
            events,
            out,
            replies,
            marker: 0,
        }
    }

    /// The answer to every publish from now on (unless queued or per node).
    pub fn set_reply(&self, r: AppReply) {
        self.replies.lock().unwrap().default = r;
    }

    /// The answer to publishes to `node`.
    pub fn set_reply_for(&self, node: &str, r: AppReply) {
        self.replies
            .lock()
            .unwrap()
            .by_node
            .insert(node.to_string(), r);
    }

    /// Answers for the next publishes, in order, before anything else applies.
    pub fn queue_replies(&self, rs: impl IntoIterator<Item = AppReply>) {
        self.replies.lock().unwrap().queue.extend(rs);
    }

    /// Writes raw XML on the component stream (e.g. a late answer to a silent publish).
    pub fn send_raw(&self, xml: &str) {
        self.out.send(xml.to_string()).unwrap();
    }

    /// The next publish (panics after WAIT).
    pub async fn next(&mut self) -> Publish {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(AppEvent::Publish(p)) => return *p,
                    Some(AppEvent::Marker(_)) => continue,
                    None => panic!("the fake app server's stream ended"),
                }
            }
        })
        .await
        .expect("timed out waiting for a publish")
    }

    /// Round trip through the server's component router: returns the publishes that arrived
    /// before it. Everything the server routed to us before this call, and every reply we
    /// sent before it, has been routed when it returns.
    async fn round_trip(&mut self) -> Vec<Publish> {
        self.marker += 1;
        let m = self.marker;
        self.out
            .send(format!(
                "<message from='marker@{APP_DOMAIN}' to='marker@{APP_DOMAIN}' id='marker-{m}'/>"
            ))
            .unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(AppEvent::Publish(p)) => seen.push(*p),
                    Some(AppEvent::Marker(n)) if n == m => return,
                    Some(AppEvent::Marker(_)) => continue,
                    None => panic!("the fake app server's stream ended"),
                }
            }
        })
        .await
        .expect("timed out waiting for our marker");
        seen
    }

    /// Lets the server catch up: our replies reach the push task, the push task handles
    /// every event queued so far, and the publishes that caused reach us. Returns those
    /// publishes (the ones not yet taken with `next`).
    pub async fn settle(&mut self, s: &TestServer) -> Vec<Publish> {
        let mut seen = self.round_trip().await;
        s.running
            .shared
            .push
            .stats()
            .await
            .expect("push task running");
        seen.extend(self.round_trip().await);
        seen
    }

    /// Asserts that nothing more was published (see `settle`).
    pub async fn assert_quiet(&mut self, s: &TestServer) {
        let extra = self.settle(s).await;
        assert!(
            extra.is_empty(),
            "unexpected publishes: {:#?}",
            extra
                .iter()
                .map(|p| (&p.node, &p.fields))
                .collect::<Vec<_>>()
        );
    }
}

async fn app_task(
    mut comp: RawClient,
    events: mpsc::UnboundedSender<AppEvent>,
    mut out: mpsc::UnboundedReceiver<String>,
    replies: Arc<Mutex<AppReplies>>,
) {
    loop {
        loop {
            let el = match comp.decoder.next_event() {
                Ok(Some(StreamEvent::Stanza(el))) => el,
                Ok(Some(StreamEvent::Header(_))) => continue,
                Ok(Some(StreamEvent::End)) | Err(_) => return,
                Ok(None) => break,
            };
            if el.name() == "message" {
                if let Some(n) = el
                    .attr("id")
                    .and_then(|i| i.strip_prefix("marker-"))
                    .and_then(|n| n.parse().ok())
                {
                    let _ = events.send(AppEvent::Marker(n));
                }
                continue;
            }
            let node = parse_publish(&el, AppReply::Silent).map(|p| p.node);
            let Some(node) = node else { continue };
            let answer = replies.lock().unwrap().next(&node);
            let (id, from, to) = (
                el.attr("id").unwrap_or_default(),
                el.attr("from").unwrap_or_default(),
                el.attr("to").unwrap_or_default(),
            );
            // The answer goes out before the test sees the publish, so a test that reacts
            // to the publish finds the reply already on its way.
            let reply = match &answer {
                AppReply::Result => Some(format!(
                    "<iq type='result' id='{id}' from='{to}' to='{from}'/>"
                )),
                AppReply::Error { typ, condition } => Some(format!(
                    "<iq type='error' id='{id}' from='{to}' to='{from}'><error type='{typ}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                )),
                AppReply::Silent => None,
            };
            if let Some(r) = reply {
                if comp.stream.write_all(r.as_bytes()).await.is_err() {
                    return;
                }
            }
            if let Some(p) = parse_publish(&el, answer) {
                let _ = events.send(AppEvent::Publish(Box::new(p)));
            }
        }
        let mut buf = [0u8; 4096];
        tokio::select! {
            r = comp.stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => comp.decoder.feed(&buf[..n]),
            },
            m = out.recv() => match m {
                Some(m) => {
                    if comp.stream.write_all(m.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

impl RawClient {
    /// [`RawClient::login`] on a server whose domain is `domain` (virtual hosts, s2s tests).
    pub async fn login_to(
        addr: SocketAddr,
        domain: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.open(domain).await;
        c.expect("features").await;
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        let s = c.element().await;
        assert_eq!(s.name(), "success", "{}", String::from(&s));
        c.decoder.reset();
        c.open(domain).await;
        c.expect("features").await;
        c.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = c.expect("iq").await;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        c
    }

    /// Reads elements until one satisfies `pred` (others are skipped); panics after WAIT.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            match self.event().await {
                Some(StreamEvent::Header(h)) => self.header = Some(h),
                Some(StreamEvent::Stanza(el)) if pred(&el) => return el,
                Some(StreamEvent::Stanza(_)) => continue,
                other => panic!("waiting for {what}, got {other:?}"),
            }
        }
    }

    /// Connects a XEP-0114 component for `domain` with `secret`.
    pub async fn component(addr: SocketAddr, domain: &str, secret: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.send(&format!("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>")).await;
        let id = match c.event().await {
            Some(StreamEvent::Header(h)) => h.id.unwrap(),
            other => panic!("expected a header, got {other:?}"),
        };
        let digest = herald_server::federation::component::handshake_digest(&id, secret);
        c.send(&format!("<handshake>{digest}</handshake>")).await;
        let h = c.element().await;
        assert_eq!(h.name(), "handshake", "{}", String::from(&h));
        c
    }
}
