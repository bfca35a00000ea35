//! Push on virtual hosts end to end: a `[[hosts]]` entry's `[hosts.push]` table overrides
//! `[push]` for that host's users only, their notifications come from the host's own
//! domain, the app server's replies (addressed to that domain) reach the push task, and
//! every notification carries the Tigase priority hint that accounts advertise.
//!
//! Clients are raw XML over TCP; the app server is the fake component of `common`.

mod common;

use common::*;
use herald_server::config::{HostEntry, HostPushConfig};

/// The primary domain of the test configuration.
const PRIMARY: &str = "localhost";
/// The virtual host whose users get bodies and senders in their notifications.
const FULL: &str = "full.example";
const BOB: &str = "bob@localhost";
const DAVE: &str = "dave@full.example";
const PRIORITY_NS: &str = "tigase:push:priority:0";

/// Two hosts: the primary with `[push]` as configured by `f`, and `full.example` with
/// `with_body` and `with_sender` (and whatever `host` adds) in its `[hosts.push]`.
async fn server(
    f: impl FnOnce(&mut herald_server::Config),
    host: HostPushConfig,
) -> (TestServer, FakeAppServer) {
    let s = TestServer::start_with(|c| {
        c.hosts.push(HostEntry {
            domain: FULL.into(),
            cert: None,
            key: None,
            push: HostPushConfig {
                with_body: Some(true),
                with_sender: Some(true),
                ..host
            },
        });
        f(c);
    })
    .await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    s.add_user(DAVE, "pw");
    let app = FakeAppServer::connect(&s).await;
    (s, app)
}

/// `device`, then a clean logout: the user is offline, messages to them are stored offline.
async fn offline_device(s: &TestServer, domain: &str, user: &str, node: &str) {
    let mut c = push_phone(s, domain, user, node, false).await;
    c.send("</stream:stream>").await;
    c.expect_closed().await;
    let bare = format!("{user}@{domain}");
    let shared = s.running.shared.clone();
    wait_until("the user is offline", || !shared.router.is_online(&bare)).await;
}

/// `device` with XEP-0198, then the connection dies: the session hibernates.
async fn sleeping_device(s: &TestServer, domain: &str, user: &str, node: &str) {
    let c = push_phone(s, domain, user, node, true).await;
    c.kill(true);
    let bare = format!("{user}@{domain}");
    let shared = s.running.shared.clone();
    wait_until("the session hibernates", || {
        shared
            .router
            .resource(&bare, "phone")
            .is_some_and(|r| r.hibernated)
    })
    .await;
}

/// The next two publishes, sorted by node.
async fn two(app: &mut FakeAppServer) -> (Publish, Publish) {
    let mut v = vec![app.next().await, app.next().await];
    v.sort_by(|a, b| a.node.cmp(&b.node));
    let second = v.pop().unwrap();
    (v.pop().unwrap(), second)
}

/// Asserts the notifications of one message from alice to bob (primary, node "bob") and
/// dave (virtual host, node "dave").
fn assert_per_host(bob: &Publish, dave: &Publish, body: &str) {
    assert_eq!(bob.node, "bob");
    assert_eq!(bob.from, PRIMARY, "{}", xml(&bob.iq));
    assert_eq!(bob.body(), Some("New Message!"), "{}", xml(&bob.iq));
    assert_eq!(bob.sender(), None, "{}", xml(&bob.iq));
    assert_eq!(bob.count(), 1);
    assert_eq!(bob.priority().as_deref(), Some("high"), "{}", xml(&bob.iq));
    assert_eq!(dave.node, "dave");
    assert_eq!(dave.from, FULL, "{}", xml(&dave.iq));
    assert_eq!(dave.body(), Some(body), "{}", xml(&dave.iq));
    assert_eq!(dave.sender(), Some("alice@localhost"), "{}", xml(&dave.iq));
    assert_eq!(dave.count(), 1);
    assert_eq!(
        dave.priority().as_deref(),
        Some("high"),
        "{}",
        xml(&dave.iq)
    );
}

#[tokio::test]
async fn an_offline_users_notification_follows_their_hosts_push_options() {
    let (s, mut app) = server(|_| {}, HostPushConfig::default()).await;
    offline_device(&s, PRIMARY, "bob", "bob").await;
    offline_device(&s, FULL, "dave", "dave").await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hello bob").await;
    chat(&mut a, DAVE, "hello dave").await;
    let (bob, dave) = two(&mut app).await;
    assert_per_host(&bob, &dave, "hello dave");
    app.assert_quiet(&s).await;
    // Both answers (the virtual host's addressed to full.example) reached the push task.
    let stats = s.running.shared.push.stats().await.unwrap();
    assert_eq!(stats.pending, 0, "a reply did not reach the push task");
}

#[tokio::test]
async fn a_sleeping_phones_notification_follows_its_hosts_push_options() {
    let (s, mut app) = server(|_| {}, HostPushConfig::default()).await;
    sleeping_device(&s, PRIMARY, "bob", "bob").await;
    sleeping_device(&s, FULL, "dave", "dave").await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "wake up bob").await;
    chat(&mut a, DAVE, "wake up dave").await;
    let (bob, dave) = two(&mut app).await;
    assert_per_host(&bob, &dave, "wake up dave");
    app.assert_quiet(&s).await;
    let stats = s.running.shared.push.stats().await.unwrap();
    assert_eq!(stats.pending, 0, "a reply did not reach the push task");
}

#[tokio::test]
async fn an_app_server_error_addressed_to_a_virtual_host_counts_against_its_registration() {
    // The primary tolerates errors; the virtual host removes a registration at the first.
    let (s, mut app) = server(
        |c| c.push.max_errors = 16,
        HostPushConfig {
            max_errors: Some(1),
            ..Default::default()
        },
    )
    .await;
    app.set_reply(AppReply::cancel());
    offline_device(&s, PRIMARY, "bob", "bob").await;
    offline_device(&s, FULL, "dave", "dave").await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "one").await;
    chat(&mut a, DAVE, "one").await;
    let (bob, dave) = two(&mut app).await;
    assert_eq!((bob.from.as_str(), dave.from.as_str()), (PRIMARY, FULL));
    // The error to full.example reached the push task and the host's max_errors applied.
    app.assert_quiet(&s).await;
    let store = &*s.running.shared.store;
    assert!(store.push_registrations(DAVE).unwrap().is_empty());
    let kept = store.push_registrations(BOB).unwrap();
    assert_eq!(kept.len(), 1, "the primary's max_errors is 16");
    assert_eq!(kept[0].last_result.as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn accounts_on_every_host_advertise_the_priority_hint() {
    let (s, _app) = server(|_| {}, HostPushConfig::default()).await;
    let mut a = login_available(&s, "alice").await;
    for (id, to) in [("d1", BOB), ("d2", DAVE), ("d3", "alice@localhost")] {
        a.send(&format!(
            "<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
        let r = a
            .wait_for("the disco#info result", |el| el.attr("id") == Some(id))
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
        let q = r
            .get_child("query", "http://jabber.org/protocol/disco#info")
            .unwrap_or_else(|| panic!("no query: {}", xml(&r)));
        let features: Vec<_> = q
            .children()
            .filter(|f| f.name() == "feature")
            .filter_map(|f| f.attr("var"))
            .collect();
        assert!(features.contains(&PRIORITY_NS), "{to}: {features:?}");
        assert!(features.contains(&"urn:xmpp:push:0"), "{to}: {features:?}");
    }
}
