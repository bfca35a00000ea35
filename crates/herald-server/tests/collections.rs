//! Per-user collections are bounded (issue 14): roster groups per item, the blocklist, and
//! stored subscription requests. Each bound gets its documented error and leaves the store as
//! it was, other users go on as before, a blocklist at its full size still matches exactly,
//! and pending requests of any number and size reach the user at login, bounded.
//!
//! Absence is checked without sleeping as in `im.rs`: a headline a client sends to its own
//! full JID goes through the same inbox as everything routed to it before, so it is a barrier
//! ([`barrier`]).

mod common;

use common::*;
use herald_proto::Element;

const ROSTER: &str = "jabber:iq:roster";
const BLOCKING: &str = "urn:xmpp:blocking";
const NICK: &str = "http://jabber.org/protocol/nick";

/// Sends an IQ and returns its reply; elements before it are dropped.
async fn iq(c: &mut RawClient, id: &str, typ: &str, payload: &str) -> Element {
    c.send(&format!("<iq type='{typ}' id='{id}'>{payload}</iq>"))
        .await;
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return el;
        }
    }
}

/// Everything that reached `full`'s session before a headline it sends itself.
async fn barrier(c: &mut RawClient, full: &str, id: &str) -> Vec<Element> {
    c.send(&format!("<message to='{full}' type='headline' id='{id}'/>"))
        .await;
    let mut got = Vec::new();
    loop {
        let el = c.element().await;
        if el.name() == "message" && el.attr("id") == Some(id) {
            return got;
        }
        got.push(el);
    }
}

/// The (condition, type) of an error reply.
fn error_of(e: &Element) -> (String, String) {
    let err = child(e, "error").unwrap_or_else(|| panic!("no error in {}", xml(e)));
    let cond = err
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    (cond, err.attr("type").unwrap_or_default().to_string())
}

fn block_iq(jids: &[String]) -> String {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    format!("<block xmlns='{BLOCKING}'>{items}</block>")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The next chat message, skipping presence, pushes and the like.
async fn next_chat(c: &mut RawClient) -> Element {
    loop {
        let el = c.element().await;
        if el.name() == "message" && el.attr("type") == Some("chat") {
            return el;
        }
    }
}

#[tokio::test]
async fn roster_groups_per_item_are_bounded() {
    let s = TestServer::start_with(|c| c.roster.max_groups_per_item = 3).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let groups = |n: usize| -> String { (0..n).map(|i| format!("<group>g{i}</group>")).collect() };
    let set = |n: usize| {
        format!(
            "<query xmlns='{ROSTER}'><item jid='carol@localhost'>{}</item></query>",
            groups(n)
        )
    };
    let r = iq(&mut a, "s1", "set", &set(3)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));

    // One group over the bound: not-acceptable (modify), like every field limit of RFC 6121
    // §2.3.3, and the stored item is the one before.
    let r = iq(&mut a, "s2", "set", &set(4)).await;
    assert_eq!(
        error_of(&r),
        ("not-acceptable".into(), "modify".into()),
        "{}",
        xml(&r)
    );
    let store = &s.running.shared.store;
    let (_, items) = store.roster("alice@localhost").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].groups, ["g0", "g1", "g2"]);
    let r = iq(&mut a, "g1", "get", &format!("<query xmlns='{ROSTER}'/>")).await;
    let q = child(&r, "query").unwrap();
    let item = q.children().next().unwrap();
    assert_eq!(item.children().filter(|g| g.name() == "group").count(), 3);

    // Bob's roster is his own: his sets go through, and alice's refusal changed nothing there.
    let r = iq(&mut b, "b1", "set", &set(3)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let (_, bobs) = store.roster("bob@localhost").unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].groups.len(), 3);
    // Alice's session goes on.
    assert!(a.sync("still-there").await.is_empty());
}

#[tokio::test]
async fn a_full_blocklist_refuses_new_jids_and_changes_nothing() {
    let s = TestServer::start_with(|c| c.blocking.max_items = 3).await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let store = &s.running.shared.store;
    let r = iq(
        &mut a,
        "b1",
        "set",
        &block_iq(&strings(&["a@x.test", "b@x.test"])),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    barrier(&mut a, "alice@localhost/r", "h1").await;

    // Two more would make four: resource-constraint (wait), nothing stored, nothing pushed.
    let r = iq(
        &mut a,
        "b2",
        "set",
        &block_iq(&strings(&["c@x.test", "carol@localhost"])),
    )
    .await;
    assert_eq!(
        error_of(&r),
        ("resource-constraint".into(), "wait".into()),
        "{}",
        xml(&r)
    );
    assert_eq!(
        store.blocklist("alice@localhost").unwrap(),
        ["a@x.test", "b@x.test"]
    );
    let got = barrier(&mut a, "alice@localhost/r", "h2").await;
    assert!(
        !got.iter().any(|e| child(e, "block").is_some()),
        "no push for a refused block: {:?}",
        got.iter().map(xml).collect::<Vec<_>>()
    );
    // Carol, whose block was refused, still reaches alice.
    let mut c = RawClient::login(s.c2s(), "carol", "pw", "r").await;
    chat(&mut c, "alice@localhost", "from-carol").await;
    assert_eq!(next_chat(&mut a).await.attr("id"), Some("from-carol"));

    // Up to the bound, and blocking a listed JID again, are fine.
    let r = iq(&mut a, "b3", "set", &block_iq(&strings(&["c@x.test"]))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = iq(&mut a, "b4", "set", &block_iq(&strings(&["a@x.test"]))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert_eq!(store.blocklist("alice@localhost").unwrap().len(), 3);

    // Bob's list is his own: he can fill it, and his messages still reach alice.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let r = iq(
        &mut b,
        "bb",
        "set",
        &block_iq(&strings(&["x@x.test", "y@x.test", "z@x.test"])),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    chat(&mut b, "alice@localhost", "from-bob").await;
    assert_eq!(next_chat(&mut a).await.attr("id"), Some("from-bob"));
}

#[tokio::test]
async fn a_blocklist_of_a_thousand_items_matches_jids_and_domains() {
    let s = TestServer::start().await;
    assert_eq!(s.running.shared.cfg.blocking.max_items, 1000);
    for u in ["alice", "bob", "carol", "dave"] {
        s.add_user(u, "pw");
    }
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let mut jids: Vec<String> = (0..996)
        .map(|i| format!("u{i}@junk{}.example", i % 10))
        .collect();
    // A bare JID, a full JID, a domain: XEP-0016 §2.1 matching for each.
    jids.extend(strings(&[
        "carol@localhost",
        "dave@localhost/evil",
        "spam.example",
        "localhost/bot",
    ]));
    assert_eq!(jids.len(), 1000);
    let r = iq(&mut a, "big", "set", &block_iq(&jids)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    barrier(&mut a, "alice@localhost/r", "h1").await;

    // A bare JID item covers every resource: carol's message bounces, alice sees nothing.
    let mut c = RawClient::login(s.c2s(), "carol", "pw", "phone").await;
    chat(&mut c, "alice@localhost", "from-carol").await;
    let e = c.expect("message").await;
    assert_eq!(error_of(&e).0, "service-unavailable", "{}", xml(&e));
    // A full JID item covers that resource only.
    let mut evil = RawClient::login(s.c2s(), "dave", "pw", "evil").await;
    chat(&mut evil, "alice@localhost", "from-evil").await;
    let e = evil.expect("message").await;
    assert_eq!(error_of(&e).0, "service-unavailable", "{}", xml(&e));
    let mut good = RawClient::login(s.c2s(), "dave", "pw", "good").await;
    chat(&mut good, "alice@localhost", "from-good").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    chat(&mut b, "alice@localhost", "from-bob").await;
    // The blocked ones were refused before these were sent: had they been delivered, they
    // would come first.
    assert_eq!(next_chat(&mut a).await.attr("id"), Some("from-good"));
    assert_eq!(next_chat(&mut a).await.attr("id"), Some("from-bob"));

    // A domain item covers every JID on it: alice's own message is refused with <blocked/>.
    a.send("<message to='someone@spam.example/x' type='chat' id='out'><body>hi</body></message>")
        .await;
    let e = loop {
        let el = a.element().await;
        if el.name() == "message" && el.attr("id") == Some("out") {
            break el;
        }
    };
    assert_eq!(error_of(&e).0, "not-acceptable", "{}", xml(&e));
    assert!(child(&e, "error")
        .unwrap()
        .children()
        .any(|c| c.name() == "blocked"));

    // Full: one more is refused, the thousand stay.
    let r = iq(
        &mut a,
        "more",
        "set",
        &block_iq(&strings(&["one@more.example"])),
    )
    .await;
    assert_eq!(error_of(&r).0, "resource-constraint", "{}", xml(&r));
    let r = iq(
        &mut a,
        "list",
        "get",
        &format!("<blocklist xmlns='{BLOCKING}'/>"),
    )
    .await;
    assert_eq!(child(&r, "blocklist").unwrap().children().count(), 1000);
}

#[tokio::test]
async fn an_oversized_subscription_request_is_stored_bounded_and_delivered_at_login() {
    let s = TestServer::start_with(|c| c.roster.max_request_bytes = 512).await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let mut c = RawClient::login(s.c2s(), "carol", "pw", "r").await;
    // Alice is offline: both requests are stored for her.
    let status = "x".repeat(100_000);
    let junk = "y".repeat(50_000);
    b.send(&format!(
        "<presence to='alice@localhost' type='subscribe'><status>{status}</status>\
         <nick xmlns='{NICK}'>Bob</nick><junk xmlns='urn:example:junk'>{junk}</junk></presence>"
    ))
    .await;
    // The server handles a client's stanzas in order: the request is stored before the ping
    // is answered. Bob's is stored before Carol sends hers (two sessions run concurrently).
    b.sync("b-done").await;
    c.send("<presence to='alice@localhost' type='subscribe'><status>hi alice</status></presence>")
        .await;
    c.sync("c-done").await;
    let stored = s
        .running
        .shared
        .store
        .subscription_requests("alice@localhost")
        .unwrap();
    assert_eq!(stored.len(), 2);
    let (from, bob_xml) = &stored[0];
    assert_eq!(from, "bob@localhost");
    assert!(bob_xml.len() <= 512, "{} bytes stored", bob_xml.len());
    assert!(!bob_xml.contains("junk"), "{bob_xml}");
    assert!(stored[1].1.contains("hi alice"));

    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let got = barrier(&mut a, "alice@localhost/r", "h").await;
    let reqs: Vec<&Element> = got
        .iter()
        .filter(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .collect();
    assert_eq!(
        reqs.len(),
        2,
        "{:?}",
        got.iter().map(xml).collect::<Vec<_>>()
    );
    let bob = reqs[0];
    assert_eq!(bob.attr("from"), Some("bob@localhost"));
    let st = child(bob, "status").unwrap().text();
    assert!(!st.is_empty() && st.len() < 512 && status.starts_with(&st));
    assert_eq!(bob.get_child("nick", NICK).unwrap().text(), "Bob");
    assert!(child(bob, "junk").is_none());
    // Carol's ordinary request arrives whole.
    let carol = reqs[1];
    assert_eq!(carol.attr("from"), Some("carol@localhost"));
    assert_eq!(child(carol, "status").unwrap().text(), "hi alice");
}

#[tokio::test]
async fn many_pending_requests_arrive_once_each_in_order() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let store = &s.running.shared.store;
    // More than two pages' worth, from a peer domain (as s2s would have stored them).
    let n = 250;
    for i in 0..n {
        store
            .add_subscription_request(
                "alice@localhost",
                &format!("u{i:03}@remote.example"),
                "<presence xmlns='jabber:client' type='subscribe'/>",
                1000,
            )
            .unwrap();
    }
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    b.send("<presence/>").await;
    a.send("<presence/>").await;
    let mut from = Vec::new();
    while from.len() < n {
        let el = a.element().await;
        if el.name() == "presence" && el.attr("type") == Some("subscribe") {
            from.push(el.attr("from").unwrap_or_default().to_string());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("u{i:03}@remote.example")).collect();
    assert_eq!(from, want);
    let more = barrier(&mut a, "alice@localhost/r", "h").await;
    assert!(
        !more.iter().any(|e| e.attr("type") == Some("subscribe")),
        "each once"
    );
    // Bob, online meanwhile, got none of them.
    let got = barrier(&mut b, "bob@localhost/r", "hb").await;
    assert!(!got.iter().any(|e| e.attr("type") == Some("subscribe")));
}
