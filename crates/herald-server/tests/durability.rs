//! Nothing lost (issue 11): offline delivery that respects the XEP-0198 queue and deletes a
//! stored message only once the client has it, a graceful shutdown that keeps every unacked
//! stanza, and hibernated sessions that survive a restart.
//!
//! Barriers are pings and the client's own reads; where a server timer or task must act,
//! the test polls the server's state, bounded by `WAIT`.

mod common;

use std::time::Duration;

use common::*;
use herald_proto::Element;

const SM: &str = "urn:xmpp:sm:3";

fn body(el: &Element) -> Option<String> {
    child(el, "body").map(|b| b.text())
}

fn offline_count(s: &TestServer, user: &str) -> usize {
    s.running.shared.store.offline_count(user).unwrap()
}

/// Alice sends `n` chat messages with bodies `prefix1..=prefixN` to bob, then a ping barrier.
async fn send_many(a: &mut RawClient, to: &str, prefix: &str, n: usize) {
    let mut batch = String::new();
    for i in 1..=n {
        batch.push_str(&format!(
            "<message to='{to}' type='chat' id='{prefix}{i}'><body>{prefix}{i}</body></message>"
        ));
        if batch.len() > 16_384 {
            a.send(&batch).await;
            batch.clear();
        }
    }
    a.send(&batch).await;
    let got = a.sync("sent").await;
    assert!(
        got.iter().all(|e| e.attr("type") != Some("error")),
        "{:?}",
        got.iter().map(xml).collect::<Vec<_>>()
    );
}

/// An XEP-0198 client: counts the stanzas it handles and answers `<r/>`.
struct SmReader {
    h: u32,
    /// Answer `<r/>` (false: read but never acknowledge).
    ack: bool,
}

impl SmReader {
    /// Reads until `n` messages with a body have arrived; returns their bodies in order.
    async fn messages(&mut self, c: &mut RawClient, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            let el = c.element().await;
            if el.is("r", SM) {
                if self.ack {
                    c.send(&format!("<a xmlns='{SM}' h='{}'/>", self.h)).await;
                }
                continue;
            }
            if el.has_ns(SM) {
                continue;
            }
            self.h = self.h.wrapping_add(1);
            if el.name() == "message" {
                if let Some(b) = body(&el) {
                    got.push(b);
                }
            }
        }
        got
    }

    /// Acknowledges everything handled so far.
    async fn ack_all(&self, c: &mut RawClient) {
        c.send(&format!("<a xmlns='{SM}' h='{}'/>", self.h)).await;
    }
}

/// Logs `user` in with stream management (`resume` as asked) and initial presence.
async fn online_sm(s: &TestServer, user: &str, res: &str, resume: bool) -> (RawClient, String) {
    let mut c = RawClient::login(s.c2s(), user, "pw", res).await;
    c.send(&format!("<enable xmlns='{SM}' resume='{resume}'/>"))
        .await;
    let e = c.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    let id = e.attr("id").unwrap_or_default().to_string();
    c.send("<presence/>").await;
    (c, id)
}

/// Waits until every session of `user` is hibernated.
async fn hibernated(s: &TestServer, user: &str) {
    let shared = s.running.shared.clone();
    wait_until("hibernated", || {
        let r = shared.router.resources(user);
        !r.is_empty() && r.iter().all(|e| e.hibernated)
    })
    .await;
}

/// A server whose SM queue holds 40 (30 for stored messages), with 100 messages stored for
/// bob by alice.
async fn hundred_stored() -> TestServer {
    let s = two_users(|c| {
        c.offline.max_per_user = 1000;
        c.stream_management.max_queue = 40;
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 100).await;
    s
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

async fn two_users(f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.mam.default = "never".into();
        f(c);
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

#[tokio::test]
async fn a_backlog_larger_than_the_sm_queue_reaches_the_client_completely_once_in_order() {
    // 1,000 stored, a queue of 500: the old server closed the stream at 500 unacked.
    let s = two_users(|c| c.offline.max_per_user = 1000).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 1000).await;
    assert_eq!(offline_count(&s, "bob@localhost"), 1000);

    let (mut b, _) = online_sm(&s, "bob", "phone", false).await;
    let mut r = SmReader { h: 0, ack: true };
    assert_eq!(r.messages(&mut b, 1000).await, expected("m", 1000));
    r.ack_all(&mut b).await;
    // Once, and nothing after them; every row left the store once acknowledged.
    let rest = b.sync("end").await;
    assert!(
        rest.iter().all(|e| e.name() != "message"),
        "{:?}",
        rest.iter().map(xml).collect::<Vec<_>>()
    );
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
}

#[tokio::test]
async fn a_full_inbox_at_login_drops_nothing() {
    // An inbox of 2 stanzas, and alice floods bob while he comes online: the offline backlog
    // does not travel through the inbox, so it cannot be refused.
    let s = two_users(|c| c.limits.session_inbox = 2).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 300).await;
    let (mut b, _) = online_sm(&s, "bob", "phone", false).await;
    let mut flood = String::new();
    for i in 0..200 {
        flood.push_str(&format!(
            "<message to='bob@localhost/phone' type='chat'><body>live{i}</body></message>"
        ));
    }
    a.send(&flood).await;
    let mut r = SmReader { h: 0, ack: true };
    let mut stored = Vec::new();
    while stored.len() < 300 {
        for m in r.messages(&mut b, 1).await {
            if m.starts_with('m') {
                stored.push(m);
            }
        }
    }
    assert_eq!(stored, expected("m", 300));
    r.ack_all(&mut b).await;
    b.sync("end").await;
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
}

#[tokio::test]
async fn without_sm_rows_are_deleted_once_written_and_unacked_ones_stay() {
    let s = two_users(|c| c.offline.max_per_user = 1000).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 250).await;
    // With SM, never acknowledging: everything written stays stored.
    let (mut b, _) = online_sm(&s, "bob", "phone", false).await;
    let mut r = SmReader { h: 0, ack: false };
    assert_eq!(r.messages(&mut b, 250).await, expected("m", 250));
    assert_eq!(offline_count(&s, "bob@localhost"), 250);
    b.kill(true);
    // Without SM: written is delivered.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    b.send("<presence/>").await;
    let mut r = SmReader { h: 0, ack: false };
    assert_eq!(r.messages(&mut b, 250).await, expected("m", 250));
    b.sync("end").await;
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
}

#[tokio::test]
async fn a_resumed_session_acks_what_it_had_and_gets_the_rest() {
    let s = hundred_stored().await;
    let (mut b, id) = online_sm(&s, "bob", "phone", true).await;
    // The queue has room for 30 (a quarter stays free): 30 arrive, unacked.
    let mut r = SmReader { h: 0, ack: false };
    let first = r.messages(&mut b, 30).await;
    assert_eq!(first, expected("m", 30));
    let h = r.h;
    b.kill(true);
    hibernated(&s, "bob@localhost").await;
    // Resume acknowledging all 30: their rows go, and the other 70 follow.
    let (mut b, f) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    assert!(f.get_child("sm", SM).is_some());
    b.send(&format!("<resume xmlns='{SM}' previd='{id}' h='{h}'/>"))
        .await;
    let resumed = b.element().await;
    assert!(resumed.is("resumed", SM), "{}", xml(&resumed));
    let mut r = SmReader { h: r.h, ack: true };
    assert_eq!(
        r.messages(&mut b, 70).await,
        (31..=100).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    r.ack_all(&mut b).await;
    b.sync("end").await;
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
}

#[tokio::test]
async fn the_backlog_goes_to_one_resource_and_passes_on_when_it_leaves() {
    let s = hundred_stored().await;
    // The phone takes the store and stalls (never acks): 30 written, none deleted.
    let (mut phone, _) = online_sm(&s, "bob", "phone", false).await;
    let mut rp = SmReader { h: 0, ack: false };
    assert_eq!(rp.messages(&mut phone, 30).await, expected("m", 30));
    // A desktop comes online meanwhile: the store is the phone's, nothing doubles.
    let (mut desk, _) = online_sm(&s, "bob", "desk", false).await;
    let before = desk.sync("d1").await;
    assert!(before.iter().all(|e| e.name() != "message"));
    // What the desktop handled so far: those stanzas and the ping's result.
    let handled = before.iter().filter(|e| !e.has_ns(SM)).count() as u32 + 1;
    // The phone leaves: the desktop gets all 100 (the phone's 30 were never acked).
    phone.send("</stream:stream>").await;
    let mut rd = SmReader {
        h: handled,
        ack: true,
    };
    assert_eq!(rd.messages(&mut desk, 100).await, expected("m", 100));
    rd.ack_all(&mut desk).await;
    desk.sync("d2").await;
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
    // Nothing was stored again on the phone's way out.
    assert_eq!(offline_count(&s, "bob@localhost"), 0);
}

#[tokio::test]
async fn pending_subscription_requests_follow_the_queue_too() {
    let s = TestServer::start_with(|c| c.stream_management.max_queue = 20).await;
    s.add_user("bob", "pw");
    for i in 0..60 {
        let u = format!("fan{i}");
        s.add_user(&u, "pw");
        let mut f = RawClient::login(s.c2s(), &u, "pw", "r").await;
        f.send("<presence to='bob@localhost' type='subscribe'/>")
            .await;
        f.sync("s").await;
    }
    let (mut b, _) = online_sm(&s, "bob", "phone", false).await;
    let mut got = std::collections::BTreeSet::new();
    let mut h = 0u32;
    while got.len() < 60 {
        let el = b.element().await;
        if el.is("r", SM) {
            b.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
            continue;
        }
        if el.has_ns(SM) {
            continue;
        }
        h += 1;
        if el.name() == "presence" && el.attr("type") == Some("subscribe") {
            got.insert(el.attr("from").unwrap_or_default().to_string());
        }
    }
    // The stream is still up (no queue overflow).
    b.sync("alive").await;
    assert!(!b.closed);
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown, restart and crash
// ---------------------------------------------------------------------------------------

fn quiet_sm(c: &mut herald_server::Config) {
    // No server-initiated <r/>: a client's h is exactly what the test read.
    c.stream_management.request_after = 100_000;
    c.stream_management.request_idle = herald_server::config::Dur(Duration::from_secs(3600));
}

/// `n` accounts `{prefix}0..` with password "pw" (one shared salt: fast).
fn bulk(s: &TestServer, prefix: &str, n: usize) {
    let shared = &s.running.shared;
    herald::admin::add_bulk(&*shared.store, &shared.cfg, prefix, n, "pw", |_| {}).unwrap();
}

/// `<resume/>` on a new connection; returns the client and the server's answer.
async fn resume(s: &TestServer, user: &str, previd: &str, h: u32) -> (RawClient, Element) {
    let (mut c, f) = RawClient::authenticate(s.c2s(), user, "pw").await;
    assert!(f.get_child("sm", SM).is_some(), "{}", xml(&f));
    c.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"))
        .await;
    let answer = c.element().await;
    (c, answer)
}

/// Reads until the ping `id` is answered; returns the bodies of the messages before it.
async fn bodies_until_sync(c: &mut RawClient, id: &str) -> Vec<String> {
    c.sync(id).await.iter().filter_map(body).collect()
}

#[tokio::test]
async fn a_clean_restart_keeps_every_unacked_stanza_of_live_and_hibernated_sessions() {
    const N: usize = 50;
    let s = TestServer::start_with(|c| {
        c.mam.default = "never".into();
        quiet_sm(c);
    })
    .await;
    s.add_user("alice", "pw");
    bulk(&s, "live", N);
    bulk(&s, "sleep", N);
    bulk(&s, "plain", 1);
    let mut ids = Vec::new();
    let mut live = Vec::new();
    for i in 0..N {
        let (c, id) = online_sm(&s, &format!("live{i}"), "phone", true).await;
        live.push(c);
        ids.push((format!("live{i}"), id));
    }
    for i in 0..N {
        let (mut c, id) = online_sm(&s, &format!("sleep{i}"), "phone", true).await;
        c.sync("up").await;
        c.kill(true);
        ids.push((format!("sleep{i}"), id));
    }
    // A client without stream management, inactive: CSI holds what is not urgent.
    let mut plain = RawClient::login(s.c2s(), "plain0", "pw", "desk").await;
    plain.send("<presence/>").await;
    plain.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    plain.sync("inactive").await;
    let shared = s.running.shared.clone();
    wait_until("all hibernated", || {
        (0..N).all(|i| {
            shared
                .router
                .resources(&format!("sleep{i}@localhost"))
                .iter()
                .all(|e| e.hibernated)
        })
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    for (user, _) in &ids {
        for k in 1..=3 {
            a.send(&format!(
                "<message to='{user}@localhost/phone' type='chat'><body>{user}-{k}</body></message>"
            ))
            .await;
        }
    }
    a.send("<message to='plain0@localhost/desk' type='chat'><received xmlns='urn:xmpp:receipts' id='r1'/></message>")
        .await;
    a.sync("sent").await;
    // The live clients read their messages and never acknowledge them.
    for (i, c) in live.iter_mut().enumerate() {
        let got = bodies_until_sync(c, "read").await;
        assert_eq!(got.len(), 3, "live{i}: {got:?}");
    }

    let s = s.restart().await;
    assert_eq!(s.running.loaded.restored, 2 * N);
    assert_eq!(s.running.loaded.to_wake, 0);
    // Every resumable session comes back and gets exactly what it had not acknowledged.
    for (user, id) in &ids {
        let (mut c, answer) = resume(&s, user, id, 0).await;
        assert!(answer.is("resumed", SM), "{user}: {}", xml(&answer));
        let got = bodies_until_sync(&mut c, "after").await;
        let want: Vec<String> = (1..=3).map(|k| format!("{user}-{k}")).collect();
        assert_eq!(got, want, "{user}");
    }
    // What CSI held for the plain client was stored offline.
    let mut p = RawClient::login(s.c2s(), "plain0", "pw", "desk").await;
    p.send("<presence/>").await;
    let got = p.sync("back").await;
    assert!(
        got.iter().any(
            |e| e.name() == "message" && e.get_child("received", "urn:xmpp:receipts").is_some()
        ),
        "{:?}",
        got.iter().map(xml).collect::<Vec<_>>()
    );
    // Nothing was stored for the resumable ones.
    assert_eq!(offline_count(&s, "live0@localhost"), 0);
    assert_eq!(offline_count(&s, "sleep0@localhost"), 0);
}

#[tokio::test]
async fn a_restored_session_keeps_its_push_attachment_and_nobody_is_woken() {
    let s = TestServer::start_with(quiet_sm).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut app = FakeAppServer::connect(&s).await;
    let (mut b, id) = online_sm(&s, "bob", "phone", true).await;
    b.send(&format!(
        "<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='n1'/></iq>"
    ))
    .await;
    let got = b.sync("enabled").await;
    assert!(got
        .iter()
        .any(|e| e.attr("id") == Some("en") && e.attr("type") == Some("result")));
    b.kill(true);
    hibernated(&s, "bob@localhost").await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    a.send("<message to='bob@localhost/phone' type='chat'><body>one</body></message>")
        .await;
    a.sync("s1").await;
    // The hibernation push (its unacked echoes, count 0), then one for the message.
    let counts: Vec<u32> = app.settle(&s).await.iter().map(|p| p.count()).collect();
    assert_eq!(counts.last(), Some(&1), "{counts:?}");

    let s = s.restart().await;
    assert_eq!(
        s.running.loaded,
        herald_server::c2s::persist::Loaded {
            restored: 1,
            ..Default::default()
        }
    );
    let mut app = FakeAppServer::connect(&s).await;
    app.assert_quiet(&s).await;
    // Still asleep and still push-enabled: the next message pushes, counting on.
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    a.send("<message to='bob@localhost/phone' type='chat'><body>two</body></message>")
        .await;
    a.sync("s2").await;
    assert_eq!(app.next().await.count(), 2);
    let (mut b, answer) = resume(&s, "bob", &id, 1).await;
    assert!(answer.is("resumed", SM), "{}", xml(&answer));
    // h=1 acknowledged the presence echo; both messages come again, once.
    assert_eq!(bodies_until_sync(&mut b, "x").await, ["one", "two"]);
}

/// A server in a runtime of its own, so a test can make it vanish like a killed process:
/// no shutdown code runs, only what the store has survives.
struct Crashable {
    rt: tokio::runtime::Runtime,
    server: TestServer,
}

impl Crashable {
    async fn start(f: impl FnOnce(&mut herald_server::Config) + Send + 'static) -> Crashable {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        f(&mut cfg);
        let running = rt
            .spawn(async move { herald_server::start(cfg).await.unwrap() })
            .await
            .unwrap();
        Crashable {
            rt,
            server: TestServer { running, dir },
        }
    }

    /// Kills it; starts a new server (in the test's runtime) on the same data.
    async fn crash_and_restart(self) -> TestServer {
        let Crashable { rt, server } = self;
        let TestServer { running, dir } = server;
        let cfg = running.shared.cfg.clone();
        drop(running);
        rt.shutdown_background();
        let running = herald_server::start(cfg).await.unwrap();
        TestServer { running, dir }
    }
}

#[tokio::test]
async fn after_a_crash_sleeping_phones_are_woken_once_each_no_faster_than_the_rate() {
    const N: usize = 500;
    const RATE: u32 = 250;
    let c = Crashable::start(|c| {
        quiet_sm(c);
        c.push.restart_wake_rate = RATE;
    })
    .await;
    let s = &c.server;
    bulk(s, "u", N);
    let mut ids = Vec::new();
    for i in 0..N {
        let user = format!("u{i}");
        let (mut b, id) = online_sm(s, &user, "phone", true).await;
        b.send(&format!(
            "<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='{user}'/></iq>"
        ))
        .await;
        b.sync("enabled").await;
        b.kill(true);
        ids.push((user, id));
    }
    let shared = s.running.shared.clone();
    wait_until("all saved", || {
        herald_store::SessionStore::sm_sessions(&*shared.store)
            .map(|v| v.len() == N)
            .unwrap_or(false)
    })
    .await;
    drop(shared);

    let s = c.crash_and_restart().await;
    assert_eq!(s.running.loaded.restored, 0);
    assert_eq!(s.running.loaded.to_wake, N);
    let started = std::time::Instant::now();
    let mut app = FakeAppServer::connect(&s).await;
    let mut woken = std::collections::BTreeSet::new();
    while woken.len() < N {
        let p = app.next().await;
        assert!(woken.insert(p.node.clone()), "{} woken twice", p.node);
        assert_eq!(p.body(), None, "a wake push says nothing");
    }
    // The wake pushes are paced: N of them take at least (N - 1) / RATE seconds.
    let min = Duration::from_secs_f64((N - 1) as f64 / f64::from(RATE));
    assert!(
        started.elapsed() >= min,
        "{:?} < {min:?}",
        started.elapsed()
    );
    app.assert_quiet(&s).await;
    // The lost sessions answer <resume/> with their last h (they handled enable and ping).
    let (_, answer) = resume(&s, &ids[0].0, &ids[0].1, 0).await;
    assert!(answer.is("failed", SM), "{}", xml(&answer));
    assert_eq!(answer.attr("h"), Some("3"), "{}", xml(&answer));
}

#[tokio::test]
async fn a_crash_in_the_middle_of_offline_delivery_redelivers_the_rest() {
    let c = Crashable::start(|c| {
        c.mam.default = "never".into();
        c.offline.max_per_user = 1000;
    })
    .await;
    let s = &c.server;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 400).await;
    // Bob gets half of them and acknowledges nothing; then the server dies.
    let (mut b, _) = online_sm(s, "bob", "phone", false).await;
    let mut r = SmReader { h: 0, ack: false };
    assert_eq!(r.messages(&mut b, 200).await, expected("m", 200));
    let s = c.crash_and_restart().await;
    assert_eq!(offline_count(&s, "bob@localhost"), 400);
    let (mut b, _) = online_sm(&s, "bob", "phone", false).await;
    let mut r = SmReader { h: 0, ack: true };
    assert_eq!(r.messages(&mut b, 400).await, expected("m", 400));
    r.ack_all(&mut b).await;
    b.sync("done").await;
    wait_until("rows deleted", || offline_count(&s, "bob@localhost") == 0).await;
}

#[tokio::test]
async fn after_a_crash_a_sleeping_sessions_queue_is_stored_offline_without_mam() {
    let c = Crashable::start(|c| {
        c.mam.default = "never".into();
        quiet_sm(c);
    })
    .await;
    let s = &c.server;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let (mut b, id) = online_sm(s, "bob", "phone", true).await;
    b.sync("up").await;
    b.kill(true);
    hibernated(s, "bob@localhost").await;
    // Alice uses stream management: once the server acknowledges her messages they must
    // survive a crash, though nothing archives them.
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    a.send(&format!("<enable xmlns='{SM}'/>")).await;
    assert!(a.element().await.is("enabled", SM));
    for k in 1..=5 {
        a.send(&format!(
            "<message to='bob@localhost/phone' type='chat'><body>q{k}</body></message>"
        ))
        .await;
    }
    a.send(&format!("<r xmlns='{SM}'/>")).await;
    let ack = loop {
        let el = a.element().await;
        if el.is("a", SM) {
            break el;
        }
    };
    assert_eq!(ack.attr("h"), Some("5"), "{}", xml(&ack));
    // The crash comes right after the ack.
    let s = c.crash_and_restart().await;
    assert_eq!(s.running.loaded.recovered, 1);
    let (mut b, answer) = resume(&s, "bob", &id, 0).await;
    assert!(answer.is("failed", SM), "{}", xml(&answer));
    // It had handled its presence and the ping.
    assert_eq!(answer.attr("h"), Some("2"));
    // The stream goes on to bind; initial presence delivers the kept messages.
    b.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    b.expect("iq").await;
    b.send("<presence/>").await;
    assert_eq!(
        bodies_until_sync(&mut b, "got").await,
        ["q1", "q2", "q3", "q4", "q5"]
    );
}

/// `[store] durability` reaches the store the server opens.
#[tokio::test]
async fn the_configured_durability_reaches_the_store() {
    use herald_server::config;
    for (durability, synchronous) in [("normal", 1), ("full", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = herald_server::Config {
            data_dir: dir.path().join("data"),
            store: config::StoreConfig {
                durability: durability.into(),
                ..Default::default()
            },
            c2s: config::C2sConfig {
                listen: None,
                direct_tls_listen: None,
                ..Default::default()
            },
            components: config::ComponentsConfig {
                listen: None,
                ..Default::default()
            },
            http: config::HttpConfig {
                listen: None,
                ..Default::default()
            },
            ..herald_server::Config::default()
        };
        let running = herald_server::start(cfg).await.unwrap();
        assert_eq!(
            (&*running.shared.store as &dyn std::any::Any)
                .downcast_ref::<herald_store::Store>()
                .expect("the SQLite backend")
                .synchronous()
                .unwrap(),
            synchronous,
            "{durability}"
        );
        running.stop().await;
    }
}
