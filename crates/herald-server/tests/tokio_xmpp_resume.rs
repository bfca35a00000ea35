//! XEP-0198 resumption with tokio-xmpp, a client we did not write: its stanza stream enables
//! stream management with resumption by itself, reconnects by itself when the transport
//! dies and tries `<resume/>` first. These tests kill that transport under it and check
//! what its user sees: on a live hibernated session, `Online { resumed: true }` and exactly
//! the stanzas sent meanwhile, once, in order; after hibernation expired, a fresh session
//! (`resumed: false`) that gets them from offline storage, once. In the other direction,
//! the server's `<resumed h/>` must let the client resend exactly what the server never got.
//!
//! Between the client and the server's c2s port sits `Proxy`, a plaintext TCP relay the test
//! controls: `kill` drops every relayed connection pair (the transport dies on both sides)
//! and closes a gate so the client's automatic reconnect waits until `open`; `hold` makes
//! a path silently stop delivering (bytes read, never passed on) before the kill; it keeps
//! a transcript of each connection, so the test can read the XEP-0198 nonzas on the wire
//! (ids, h counters, `<resumed/>` vs `<failed/>`) without the client's cooperation.
//! Plaintext keeps the transcript readable; TLS is covered by tests/tokio_xmpp.rs.

mod common;
#[path = "common/txmpp.rs"]
mod txmpp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use herald_server::config::Dur;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};
use txmpp::*;

const DELAY: &str = "urn:xmpp:delay";
/// Messages sent while the client is cut off, per round.
const N: usize = 5;

// ---- The relay ----

/// Bytes one relayed connection carried, each direction recorded before it is forwarded
/// (so whatever a client has seen is already in the transcript).
#[derive(Clone, Debug, Default)]
struct Transcript {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Transcript {
    fn to_server(&self) -> String {
        String::from_utf8_lossy(&self.to_server).into_owned()
    }

    fn to_client(&self) -> String {
        String::from_utf8_lossy(&self.to_client).into_owned()
    }
}

#[derive(Clone, Copy)]
enum Dir {
    ToServer,
    ToClient,
}

struct ProxyInner {
    upstream: Mutex<SocketAddr>,
    /// Whether accepted connections are relayed (false: they wait).
    gate: watch::Sender<bool>,
    /// Per direction (to server, to client): whether bytes read are passed on (false: they
    /// are held, like a network path that silently stopped delivering).
    flow: watch::Sender<(bool, bool)>,
    /// One transcript per accepted connection, in accept order.
    wire: watch::Sender<Vec<Transcript>>,
    /// Relay tasks of the connections accepted so far.
    live: Mutex<Vec<JoinHandle<()>>>,
}

struct Proxy {
    addr: SocketAddr,
    inner: Arc<ProxyInner>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(ProxyInner {
            upstream: Mutex::new(upstream),
            gate: watch::channel(true).0,
            flow: watch::channel((true, true)).0,
            wire: watch::channel(Vec::new()).0,
            live: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone()));
        Proxy {
            addr,
            inner,
            accept,
        }
    }

    /// The transport dies: every relayed pair is dropped on both sides, and new connections
    /// wait for `open`.
    async fn kill(&self) {
        self.inner.gate.send_replace(false);
        let live = std::mem::take(&mut *self.inner.live.lock().unwrap());
        for task in live {
            task.abort();
            // Once the task is gone, both of its sockets are closed.
            let _ = task.await;
        }
    }

    /// New connections wait for `open` (the ones relayed go on).
    fn close_gate(&self) {
        self.inner.gate.send_replace(false);
    }

    /// Relays new connections to another server address (a restarted server).
    fn set_upstream(&self, addr: SocketAddr) {
        *self.inner.upstream.lock().unwrap() = addr;
    }

    /// Lets waiting and future connections through.
    fn open(&self) {
        self.inner.flow.send_replace((true, true));
        self.inner.gate.send_replace(true);
    }

    /// Stops passing bytes on: to the client, and also to the server when `both`. What is
    /// held is lost at the next `kill`.
    fn hold(&self, both: bool) {
        self.inner.flow.send_replace((!both, false));
    }

    fn wire(&self) -> Vec<Transcript> {
        self.inner.wire.borrow().clone()
    }

    /// Waits until the transcripts satisfy `pred`.
    async fn wait_wire(&self, what: &str, pred: impl FnMut(&Vec<Transcript>) -> bool) {
        let mut rx = self.inner.wire.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(pred))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what} on the wire"))
            .unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.inner.live.lock().unwrap().iter() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<ProxyInner>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut idx = 0;
        inner.wire.send_modify(|w| {
            idx = w.len();
            w.push(Transcript::default());
        });
        let task = tokio::spawn(relay(inner.clone(), idx, client));
        inner.live.lock().unwrap().push(task);
    }
}

async fn relay(inner: Arc<ProxyInner>, idx: usize, client: TcpStream) {
    let mut gate = inner.gate.subscribe();
    if gate.wait_for(|open| *open).await.is_err() {
        return;
    }
    let upstream = *inner.upstream.lock().unwrap();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pump(&inner, idx, cr, sw, Dir::ToServer),
        pump(&inner, idx, sr, cw, Dir::ToClient),
    );
}

async fn pump(
    inner: &ProxyInner,
    idx: usize,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Dir,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut flow = inner.flow.subscribe();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let passes = |f: &(bool, bool)| match dir {
            Dir::ToServer => f.0,
            Dir::ToClient => f.1,
        };
        if flow.wait_for(passes).await.is_err() {
            break;
        }
        inner.wire.send_modify(|w| match dir {
            Dir::ToServer => w[idx].to_server.extend_from_slice(&buf[..n]),
            Dir::ToClient => w[idx].to_client.extend_from_slice(&buf[..n]),
        });
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Half-close: the other direction may still be finishing (stream close handshake).
    let _ = to.shutdown().await;
}

// ---- Reading the transcript ----

/// Start tags `<name …>` in `text`, with their byte offsets.
fn start_tags<'a>(text: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let pat = format!("<{name}");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(&pat) {
        let at = from + i;
        let after = &text[at + pat.len()..];
        if after.starts_with([' ', '>', '/', '\t', '\r', '\n']) {
            let end = after.find('>').map_or(after.len(), |e| e + 1);
            out.push((at, &text[at..at + pat.len() + end]));
        }
        from = at + pat.len();
    }
    out
}

/// The first `<name …>` start tag.
fn first_tag<'a>(text: &'a str, name: &str) -> Option<(usize, &'a str)> {
    start_tags(text, name).into_iter().next()
}

/// An attribute's value in a start tag, whichever quote the writer used.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for q in ['\'', '"'] {
        let pat = format!(" {name}={q}");
        if let Some(i) = tag.find(&pat) {
            let v = &tag[i + pat.len()..];
            return v.find(q).map(|e| &v[..e]);
        }
    }
    None
}

fn attr_u32(tag: &str, name: &str) -> u32 {
    attr(tag, name)
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {tag}"))
}

/// Stanzas (message, presence, iq) in `text` after its first `<nonza …>` tag: what
/// XEP-0198 counts once stream management is on. Neither side nests these names here (no
/// carbons or forwards in these tests).
fn stanzas_after(text: &str, nonza: &str) -> u32 {
    let Some((start, _)) = first_tag(text, nonza) else {
        return 0;
    };
    let rest = &text[start..];
    ["message", "presence", "iq"]
        .iter()
        .map(|n| start_tags(rest, n).len() as u32)
        .sum()
}

// ---- The tokio-xmpp side ----

/// A tokio-xmpp client over plaintext TCP to `addr`, with its automatic reconnects.
fn client(jid: &str, password: &str, addr: SocketAddr) -> Client {
    Client::new_plaintext(
        Jid::new(jid).unwrap(),
        password.to_owned(),
        DnsConfig::addr(&addr.to_string()),
        Timeouts::tight(),
    )
}

/// Waits for the client's next `Online` event: (bound JID, resumed). A message with a body
/// before it fails the test (nothing may arrive outside a session).
async fn next_online(c: &mut Client) -> (FullJid, bool) {
    tokio::time::timeout(WAIT, async {
        loop {
            match c.next().await {
                Some(Event::Online {
                    bound_jid, resumed, ..
                }) => return (bound_jid.try_into_full().unwrap(), resumed),
                Some(Event::Stanza(Stanza::Message(m))) if !m.bodies.is_empty() => {
                    panic!("message before the stream was back: {m:?}")
                }
                Some(Event::Disconnected(e)) => panic!("disconnected: {e:?}"),
                Some(Event::Stanza(_)) => {}
                None => panic!("client ended"),
            }
        }
    })
    .await
    .expect("timed out waiting for the client to be online")
}

/// The XEP-0203 stamp's `from`, if the message carries one.
fn delay_from(m: &Message) -> Option<String> {
    m.payloads
        .iter()
        .find(|p| p.is("delay", DELAY))
        .map(|d| d.attr("from").unwrap_or_default().to_string())
}

// ---- The other side: a raw client straight to the server ----

fn raw_body(el: &herald_proto::Element) -> String {
    child(el, "body")
        .map(|b| b.text())
        .unwrap_or_else(|| panic!("no body: {}", xml(el)))
}

/// Polls `cond` until it holds, bounded by WAIT. Only for a server timer (hibernation
/// expiry), which has no event a test can await.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const BOB: &str = "bob@localhost/phone";

/// Starts a server (acks requested after every stanza, so both counters move), alice and
/// bob, the relay, and bob's tokio-xmpp client online and available through it. Returns
/// bob's XEP-0198 resumption id as the server announced it.
async fn setup(f: impl FnOnce(&mut herald_server::Config)) -> (TestServer, Proxy, Client, String) {
    let s = TestServer::start_with(|c| {
        c.stream_management.request_after = 1;
        f(c);
    })
    .await;
    s.add_user("alice", "pw-a");
    s.add_user("bob", "pw-b");
    let proxy = Proxy::start(s.c2s()).await;
    let mut bob = client(BOB, "pw-b", proxy.addr);
    let (jid, resumed) = next_online(&mut bob).await;
    assert_eq!(jid.to_string(), BOB);
    assert!(!resumed);
    let w = proxy.wire();
    assert_eq!(w.len(), 1);
    // tokio-xmpp asks for resumption on its own when the server offers XEP-0198.
    let to_server = w[0].to_server();
    let (_, enable) = first_tag(&to_server, "enable").expect("client sent no <enable/>");
    assert!(
        matches!(attr(enable, "resume"), Some("true" | "1")),
        "{enable}"
    );
    let to_client = w[0].to_client();
    let (_, enabled) = first_tag(&to_client, "enabled").expect("no <enabled/>");
    assert!(
        matches!(attr(enabled, "resume"), Some("true" | "1")),
        "{enabled}"
    );
    let id = attr(enabled, "id").expect("resumption id").to_string();
    assert!(s.running.shared.resumable_get(&id).is_some());
    available(&mut bob).await;
    (s, proxy, bob, id)
}

#[tokio::test]
async fn resumes_after_the_transport_dies_and_gets_each_queued_message_once() {
    let (s, proxy, mut bob, id) = setup(|_| {}).await;
    let mut alice = RawClient::login(s.c2s(), "alice", "pw-a", "laptop").await;
    chat(&mut alice, BOB, "before").await;
    assert_eq!(body(&next_message(&mut bob).await), "before");

    // Twice: the counters and the queue carry over from one resumption to the next.
    for round in 1..=2usize {
        proxy.kill().await;
        let sent: Vec<String> = (1..=N).map(|i| format!("r{round}-m{i}")).collect();
        for b in &sent {
            chat(&mut alice, BOB, b).await;
        }
        assert!(alice.sync(&format!("sent-{round}")).await.is_empty());
        // What each side has received on the streams so far, by the transcript.
        let w = proxy.wire();
        let client_got: u32 = w
            .iter()
            .map(|t| stanzas_after(&t.to_client(), "enabled"))
            .sum::<u32>()
            + w.iter()
                .map(|t| stanzas_after(&t.to_client(), "resumed"))
                .sum::<u32>();
        let server_got: u32 = w
            .iter()
            .map(|t| stanzas_after(&t.to_server(), "enable"))
            .sum::<u32>()
            + w.iter()
                .map(|t| stanzas_after(&t.to_server(), "resume"))
                .sum::<u32>();

        proxy.open();
        let (jid, resumed) = next_online(&mut bob).await;
        assert!(resumed, "round {round}: tokio-xmpp did not resume");
        assert_eq!(jid.to_string(), BOB);
        // Exactly what was sent while cut off, once, in order, stamped as queued earlier.
        for b in &sent {
            let m = next_message(&mut bob).await;
            assert_eq!(body(&m), b, "round {round}");
            assert_eq!(delay_from(&m).as_deref(), Some("localhost"), "{m:?}");
        }
        // The resumed session kept its presence: the bare JID reaches it, live and unstamped,
        // and nothing (neither "before" nor a retransmission) comes again ahead of it.
        let marker = format!("after-r{round}");
        chat(&mut alice, "bob@localhost", &marker).await;
        let m = next_message(&mut bob).await;
        assert_eq!(body(&m), marker);
        assert_eq!(delay_from(&m), None, "{m:?}");

        let w = proxy.wire();
        assert_eq!(w.len(), round + 1, "one reconnect per kill");
        let t = &w[round];
        let to_server = t.to_server();
        let (_, resume) = first_tag(&to_server, "resume").expect("client sent no <resume/>");
        assert_eq!(attr(resume, "previd"), Some(id.as_str()), "{resume}");
        assert_eq!(attr_u32(resume, "h"), client_got, "{resume}");
        let to_client = t.to_client();
        let (_, ok) = first_tag(&to_client, "resumed").expect("no <resumed/>");
        assert_eq!(attr(ok, "previd"), Some(id.as_str()), "{ok}");
        // The server's count of what bob sent survived the dead transports.
        assert_eq!(attr_u32(ok, "h"), server_got, "{ok}");
        assert!(!to_client.contains("<failed"), "{to_client}");
    }
    // Still one session, one resource: resumption never bound a second one.
    assert_eq!(s.running.shared.router.resources("bob@localhost").len(), 1);
    bob.send_end().await.unwrap();
}

#[tokio::test]
async fn reconnect_after_expiry_gets_a_fresh_session_and_the_messages_from_offline_storage() {
    const EXPIRY: Duration = Duration::from_millis(300);
    let (s, proxy, mut bob, id) = setup(|c| {
        c.stream_management.hibernation_timeout = Dur(EXPIRY);
        // Unacked archived messages are left to MAM at expiry; without an archive every
        // one of them must come back from offline storage.
        c.mam.default = "never".into();
    })
    .await;
    let mut alice = RawClient::login(s.c2s(), "alice", "pw-a", "laptop").await;
    chat(&mut alice, BOB, "before").await;
    assert_eq!(body(&next_message(&mut bob).await), "before");
    // "before" must be acknowledged before the transport dies, or expiry would rightly
    // store it offline again: wait for bob's <a/> covering it, then a ping behind it.
    let got = stanzas_after(&proxy.wire()[0].to_client(), "enabled");
    proxy
        .wait_wire("bob's ack of 'before'", |w| {
            let to_server = String::from_utf8_lossy(&w[0].to_server).into_owned();
            start_tags(&to_server, "a")
                .iter()
                .any(|(_, a)| attr(a, "h").and_then(|h| h.parse::<u32>().ok()) >= Some(got))
        })
        .await;
    sync(&mut bob).await;
    let server_got = stanzas_after(&proxy.wire()[0].to_server(), "enable");

    proxy.kill().await;
    let sent: Vec<String> = (1..=N).map(|i| format!("m{i}")).collect();
    for b in &sent {
        chat(&mut alice, BOB, b).await;
    }
    assert!(alice.sync("sent").await.is_empty());
    let shared = s.running.shared.clone();
    eventually(
        "hibernation expired and the messages stored offline",
        || {
            shared.resumable_get(&id).is_none()
                && shared.store.offline_count("bob@localhost").unwrap() == N
        },
    )
    .await;

    proxy.open();
    let (jid, resumed) = next_online(&mut bob).await;
    assert!(!resumed, "resumed a session that had expired");
    assert_eq!(jid.to_string(), BOB);
    let w = proxy.wire();
    assert_eq!(w.len(), 2, "one reconnect");
    let to_server = w[1].to_server();
    let (_, resume) = first_tag(&to_server, "resume").expect("client tried no <resume/>");
    assert_eq!(attr(resume, "previd"), Some(id.as_str()), "{resume}");
    let to_client = w[1].to_client();
    let (_, failed) = first_tag(&to_client, "failed").expect("no <failed/>");
    // Like Prosody's smacks_h store: the expired session's last h is still known.
    assert_eq!(attr_u32(failed, "h"), server_got, "{failed}");
    assert!(to_client.contains("item-not-found"), "{to_client}");
    assert!(!to_client.contains("<resumed"), "{to_client}");
    // tokio-xmpp bound afresh and enabled stream management again, with a new id.
    let (_, enabled) = first_tag(&to_client, "enabled").expect("no <enabled/> after bind");
    assert_ne!(attr(enabled, "id"), Some(id.as_str()), "{enabled}");

    // Offline messages come with the initial presence of the new session: each once, in
    // order, stamped; "before" (acknowledged) does not come back.
    available(&mut bob).await;
    for b in &sent {
        let m = next_message(&mut bob).await;
        assert_eq!(body(&m), b);
        assert_eq!(delay_from(&m).as_deref(), Some("localhost"), "{m:?}");
    }
    chat(&mut alice, BOB, "live").await;
    let m = next_message(&mut bob).await;
    assert_eq!(body(&m), "live");
    assert_eq!(delay_from(&m), None, "{m:?}");
    // The rows leave the store once tokio-xmpp has acknowledged them.
    eventually("offline rows deleted once acked", || {
        shared.store.offline_count("bob@localhost").unwrap() == 0
    })
    .await;
    bob.send_end().await.unwrap();
}

#[tokio::test]
async fn after_resumption_the_client_resends_only_what_the_server_never_got() {
    let (s, proxy, mut bob, _id) = setup(|_| {}).await;
    let mut alice = RawClient::login(s.c2s(), "alice", "pw-a", "laptop").await;
    let send = |body: &str| -> Stanza {
        Message::chat(Jid::new("alice@localhost/laptop").unwrap())
            .with_body(Lang::default(), body.to_owned())
            .into()
    };
    bob.send_stanza(send("b1")).await.unwrap();
    assert_eq!(raw_body(&alice.expect("message").await), "b1");
    // The server gets b2 but its <a/> never reaches bob; b3 never reaches the server.
    proxy.hold(false);
    bob.send_stanza(send("b2")).await.unwrap();
    assert_eq!(raw_body(&alice.expect("message").await), "b2");
    proxy.hold(true);
    // Written to the transport (or still in tokio-xmpp's buffer): lost with it either way.
    bob.send_stanza(send("b3")).await.unwrap();
    proxy.kill().await;
    proxy.open();
    let (_, resumed) = next_online(&mut bob).await;
    assert!(resumed, "tokio-xmpp did not resume");
    // <resumed h/> counts b2, so tokio-xmpp resends b3 alone; b4 follows it live.
    bob.send_stanza(send("b4")).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(raw_body(&alice.expect("message").await));
    }
    assert_eq!(got, ["b3", "b4"]);
    assert!(alice
        .sync("end")
        .await
        .iter()
        .all(|e| e.name() != "message"));
    let w = proxy.wire();
    let to_client = w[1].to_client();
    let (_, ok) = first_tag(&to_client, "resumed").expect("no <resumed/>");
    // presence, ping, b1, b2.
    assert_eq!(attr_u32(ok, "h"), 4, "{ok}");
    // b3 was held on the dead transport and went out again on the resumed one; b2 did not.
    assert!(!w[0].to_server().contains("<body>b3</body>"));
    let again = w[1].to_server();
    assert!(again.contains("<body>b3</body>"), "{again}");
    assert!(!again.contains("<body>b2</body>"), "{again}");
    bob.send_end().await.unwrap();
}

#[tokio::test]
async fn resumes_across_a_clean_server_restart() {
    // Issue 11: the server stops with tokio-xmpp connected. It must see a lost connection
    // (not a stream error or a stream close, after which a client starts afresh), reconnect
    // by itself, and resume the saved session on the new process with what was queued.
    let (s, proxy, mut bob, id) = setup(|_| {}).await;
    let mut alice = RawClient::login(s.c2s(), "alice", "pw-a", "laptop").await;
    chat(&mut alice, BOB, "before").await;
    assert_eq!(body(&next_message(&mut bob).await), "before");
    drop(alice);

    proxy.close_gate();
    let s = s.restart().await;
    assert_eq!(s.running.loaded.restored, 1);
    proxy.set_upstream(s.c2s());
    let mut alice = RawClient::login(s.c2s(), "alice", "pw-a", "laptop").await;
    chat(&mut alice, BOB, "during").await;
    assert!(alice.sync("sent").await.is_empty());
    // The server's side of the first connection ended without an error or a close.
    let first = proxy.wire()[0].to_client();
    assert!(!first.contains("stream:error"), "{first}");
    assert!(!first.contains("</stream:stream>"), "{first}");

    proxy.open();
    let (jid, resumed) = next_online(&mut bob).await;
    assert!(resumed, "tokio-xmpp did not resume across the restart");
    assert_eq!(jid.to_string(), BOB);
    let w = proxy.wire();
    let again = w[1].to_server();
    let (_, resume) = first_tag(&again, "resume").expect("no <resume/>");
    assert_eq!(attr(resume, "previd"), Some(id.as_str()), "{resume}");
    let m = next_message(&mut bob).await;
    assert_eq!(body(&m), "during");
    chat(&mut alice, BOB, "after").await;
    assert_eq!(body(&next_message(&mut bob).await), "after");
    bob.send_end().await.unwrap();
}
