//! Byte budgets of the queues a peer fills (`[limits] session_queue_bytes`,
//! `account_queue_bytes`, `[csi] max_buffer_bytes`), over real connections: each bound holds
//! long before its count bound would, answers as that count bound does, leaves other users
//! alone, and the account's counter returns to zero once the stanzas are gone.

mod common;

use common::*;
use herald_proto::Element;

const SM: &str = "urn:xmpp:sm:3";
/// The body of a large message: its memory cost is a little over this.
const BIG: usize = 100_000;

fn big_chat(to: &str, id: &str) -> String {
    format!(
        "<message to='{to}' type='chat' id='{id}'><body>{}</body></message>",
        "x".repeat(BIG)
    )
}

/// Whether `el` is the `resource-constraint` (type `wait`) bounce of one of our messages.
fn is_wait_bounce(el: &Element) -> bool {
    el.name() == "message"
        && el.attr("type") == Some("error")
        && child(el, "error").is_some_and(|e| {
            e.attr("type") == Some("wait") && child(e, "resource-constraint").is_some()
        })
}

/// Alice (resource `a`) sends `n` large messages to `to` (ids `{prefix}{i}`); returns how
/// many bounced with `resource-constraint` (type `wait`). Nothing else may come back.
async fn send_big(c: &mut RawClient, to: &str, prefix: &str, n: usize) -> usize {
    for i in 1..=n {
        c.send(&big_chat(to, &format!("{prefix}{i}"))).await;
    }
    // The bounces reach alice's inbox as her messages are routed; a message to herself
    // sent after them comes out of it after them.
    let mark = format!("{prefix}-mark");
    chat(c, "alice@localhost/a", &mark).await;
    let mut bounced = 0;
    loop {
        let el = c.expect("message").await;
        if el.attr("id") == Some(mark.as_str()) && el.attr("type") == Some("chat") {
            return bounced;
        }
        assert!(is_wait_bounce(&el), "{}", xml(&el));
        bounced += 1;
    }
}

/// Logs `user` in as `res` with resumable stream management and initial presence, then
/// drops the connection; returns the resumption id once the session hibernates.
async fn sleeping(s: &TestServer, user: &str, res: &str) -> String {
    let mut c = RawClient::login(s.c2s(), user, "pw", res).await;
    c.send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let e = c.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    let id = e.attr("id").unwrap_or_default().to_string();
    c.send("<presence/>").await;
    assert!(c.sync("present").await.iter().all(|e| e.name() != "iq"));
    c.kill(true);
    let shared = s.running.shared.clone();
    let bare = format!("{user}@localhost");
    wait_until("hibernated", || {
        shared
            .router
            .resource(&bare, res)
            .is_some_and(|e| e.hibernated)
    })
    .await;
    id
}

/// Carol's message reaches dave: the other account is unaffected.
async fn others_unaffected(s: &TestServer) {
    let mut dave = RawClient::login(s.c2s(), "dave", "pw", "d").await;
    let mut carol = RawClient::login(s.c2s(), "carol", "pw", "c").await;
    chat(&mut carol, "dave@localhost/d", "still-here").await;
    let m = dave.expect("message").await;
    assert_eq!(
        child(&m, "body").map(|b| b.text()).as_deref(),
        Some("still-here")
    );
}

async fn server(f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.mam.default = "never".into();
        c.limits.session_queue_bytes = 512 << 10;
        f(c);
    })
    .await;
    for u in ["alice", "bob", "carol", "dave"] {
        s.add_user(u, "pw");
    }
    s
}

fn account_bytes(s: &TestServer, bare: &str) -> usize {
    s.running.shared.router.account_queue_bytes(bare)
}

#[tokio::test]
async fn a_flood_of_large_stanzas_hits_the_session_byte_budget_long_before_the_count() {
    let s = server(|_| {}).await;
    let previd = sleeping(&s, "bob", "phone").await;
    let mut alice = login_available(&s, "alice").await;

    let bounced = send_big(&mut alice, "bob@localhost/phone", "m", 12).await;
    let queued = 12 - bounced;
    // 512 KiB hold four or five of these; the count bounds (1024 in the inbox, 500 in the
    // XEP-0198 queue) are nowhere near.
    assert!(
        (3..=5).contains(&queued),
        "queued {queued}, bounced {bounced}"
    );
    let held = account_bytes(&s, "bob@localhost");
    assert!(held <= (512 << 10) + BIG, "{held}");
    others_unaffected(&s).await;

    // Bob resumes and acknowledges everything: every byte is given back.
    let (mut bob, _) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    bob.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"))
        .await;
    assert!(bob.element().await.is("resumed", SM));
    let (mut h, mut bodies) = (0u32, 0usize);
    while bodies < queued {
        let el = bob.element().await;
        if el.has_ns(SM) {
            continue;
        }
        h += 1;
        if el.name() == "message" && child(&el, "body").is_some() {
            bodies += 1;
        }
    }
    bob.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    // Room again: a new large message is taken.
    assert_eq!(send_big(&mut alice, "bob@localhost/phone", "n", 1).await, 0);
    loop {
        let el = bob.element().await;
        if el.has_ns(SM) {
            continue;
        }
        h += 1;
        if el.attr("id") == Some("n1") {
            break;
        }
    }
    bob.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    wait_until("bob's bytes given back", || {
        account_bytes(&s, "bob@localhost") == 0
    })
    .await;
}

#[tokio::test]
async fn the_account_budget_bounds_all_its_sessions_together_and_returns_to_zero() {
    // Each session could hold four large messages; the account only about five in all.
    let s = server(|c| c.limits.account_queue_bytes = 600 << 10).await;
    sleeping(&s, "bob", "one").await;
    sleeping(&s, "bob", "two").await;
    let mut alice = login_available(&s, "alice").await;

    assert_eq!(send_big(&mut alice, "bob@localhost/one", "a", 3).await, 0);
    let bounced = send_big(&mut alice, "bob@localhost/two", "b", 4).await;
    assert!(bounced >= 1, "the account's budget refused nothing");
    assert!(4 - bounced <= 3, "session two took {}", 4 - bounced);
    others_unaffected(&s).await;

    // New logins take both resources over: the old sessions end, their queues are handed
    // on (to the new sessions, which write them out), and the account holds nothing.
    let _one = RawClient::login(s.c2s(), "bob", "pw", "one").await;
    let _two = RawClient::login(s.c2s(), "bob", "pw", "two").await;
    wait_until("bob's bytes given back", || {
        account_bytes(&s, "bob@localhost") == 0
    })
    .await;
}

/// An unimportant message (no body: CSI may hold it) of about `BIG` bytes.
fn big_chat_state(to: &str, id: &str) -> String {
    format!(
        "<message to='{to}' type='chat' id='{id}'>\
         <composing xmlns='http://jabber.org/protocol/chatstates'/>\
         <x xmlns='urn:example:pad'>{}</x></message>",
        "x".repeat(BIG)
    )
}

#[tokio::test]
async fn a_csi_buffer_over_its_byte_bound_is_flushed_early_and_loses_nothing() {
    // About three held stanzas fit in 350 KB; the count bound (256) is far.
    let s = server(|c| c.csi.max_buffer_bytes = 350_000).await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    let mut alice = login_available(&s, "alice").await;
    for i in 1..=3 {
        alice
            .send(&big_chat_state("bob@localhost/phone", &format!("s{i}")))
            .await;
    }
    assert!(alice
        .sync("three")
        .await
        .iter()
        .all(|e| e.name() == "presence"));
    // The fourth would take the buffer past its bound: all four arrive, in order, while
    // bob is still inactive.
    alice
        .send(&big_chat_state("bob@localhost/phone", "s4"))
        .await;
    for i in 1..=4 {
        let m = bob.expect("message").await;
        assert_eq!(m.attr("id"), Some(format!("s{i}").as_str()));
    }
    // Still inactive: the next one is held until bob becomes active.
    alice
        .send(&big_chat_state("bob@localhost/phone", "s5"))
        .await;
    assert!(alice
        .sync("five")
        .await
        .iter()
        .all(|e| e.name() == "presence"));
    others_unaffected(&s).await;
    bob.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let m = bob.expect("message").await;
    assert_eq!(m.attr("id"), Some("s5"));
    // Nothing is left in bob's queues.
    assert_eq!(account_bytes(&s, "bob@localhost"), 0);
}

#[tokio::test]
async fn an_unacked_queue_over_its_byte_bound_ends_the_stream_with_policy_violation() {
    let s = server(|c| c.mam.default = "always".into()).await;
    // Stored for bob while he is away, and archived.
    let mut alice = login_available(&s, "alice").await;
    assert_eq!(send_big(&mut alice, "bob@localhost", "m", 8).await, 0);

    // Bob asks for his archive and never acknowledges: the results (the server's own
    // stanzas, which routing does not weigh) fill the XEP-0198 queue past 512 KiB, far
    // below its 500 stanzas.
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    bob.send(&format!("<enable xmlns='{SM}'/>")).await;
    assert!(bob.element().await.is("enabled", SM));
    bob.send("<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='f'/></iq>")
        .await;
    assert_eq!(bob.stream_error().await, "policy-violation");
    bob.expect_closed().await;
    others_unaffected(&s).await;
    wait_until("bob's bytes given back", || {
        account_bytes(&s, "bob@localhost") == 0
    })
    .await;
}

#[tokio::test]
async fn a_component_that_does_not_read_gets_no_more_than_its_byte_budget() {
    let s = server(|c| c.limits.component_queue_bytes = 64 << 10).await;
    // Connected, never reading: once the socket's buffers are full, what is routed to it
    // waits in its queue.
    let component = RawClient::component(s.component_addr(), "push.localhost", "s3cret").await;
    let mut alice = login_available(&s, "alice").await;
    // 20 MB, more than any socket buffer holds; 200 stanzas, far below the count bound
    // (1024): the bounces come from the byte budget.
    // In rounds, reading the bounces (each carries the 100 KB back) between them.
    let mut bounced = 0;
    for round in 0..20 {
        let to = "app@push.localhost";
        bounced += send_big(&mut alice, to, &format!("c{round}-"), 10).await;
    }
    assert!(bounced >= 1, "nothing bounced");
    let queued = s
        .running
        .shared
        .router
        .component("push.localhost")
        .map_or(0, |tx| tx.queued_bytes());
    assert!(queued <= (64 << 10) + BIG + 4096, "{queued}");
    others_unaffected(&s).await;
    drop(component);
}
