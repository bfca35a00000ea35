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
use herald_store::OfflineStore;

const SM: &str = "urn:xmpp:sm:3";

fn body(el: &Element) -> Option<String> {
    child(el, "body").map(|b| b.text())
}

fn offline_count(s: &TestServer, user: &str) -> usize {
    s.running.shared.store.offline_count(user).unwrap()
}

/// Polls `cond` until it holds, bounded by WAIT.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let s = two_users(|c| {
        c.offline.max_per_user = 1000;
        c.stream_management.max_queue = 40;
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 100).await;
    let (mut b, id) = online_sm(&s, "bob", "phone", true).await;
    // The queue has room for 30 (a quarter stays free): 30 arrive, unacked.
    let mut r = SmReader { h: 0, ack: false };
    let first = r.messages(&mut b, 30).await;
    assert_eq!(first, expected("m", 30));
    let h = r.h;
    b.kill(true);
    let shared = s.running.shared.clone();
    wait_until("hibernated", || {
        shared
            .router
            .resources("bob@localhost")
            .iter()
            .any(|e| e.hibernated)
    })
    .await;
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
    let s = two_users(|c| {
        c.offline.max_per_user = 1000;
        c.stream_management.max_queue = 40;
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "a").await;
    send_many(&mut a, "bob@localhost", "m", 100).await;
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
