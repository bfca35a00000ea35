//! Mobile delivery over TCP (issue 4): XEP-0198 stream management (acks, hibernation,
//! resumption, expiry into offline storage and the archive), XEP-0352 client state
//! indication, XEP-0280 carbons and XEP-0313 archive queries.
//!
//! Barriers are XEP-0199 pings (a session handles its client's stanzas in order), so nothing
//! waits a fixed time; the few cases that need time to pass (hibernation expiry) use a short
//! configured timeout and poll the server's state until it changes, bounded by `WAIT`.

mod common;

use std::time::Duration;

use common::*;
use herald_proto::Element;
use herald_server::config::Dur;
use herald_server::Config;

const SM: &str = "urn:xmpp:sm:3";
const DELAY: &str = "urn:xmpp:delay";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const SID: &str = "urn:xmpp:sid:0";
const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Hibernation timeout where a test waits for expiry: short, but long enough that the
/// stanzas a test sends right after killing a socket reach the still-hibernating session.
const EXPIRY_MS: u64 = 1000;

/// No server-initiated `<r/>` unless a test asks for it: transcripts stay exact.
fn quiet_sm(c: &mut Config) {
    c.stream_management.request_after = 100_000;
    c.stream_management.request_idle = Dur(Duration::from_secs(3600));
}

async fn server(f: impl FnOnce(&mut Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        quiet_sm(c);
        f(c);
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s.add_user("carol", "pw");
    s
}

/// `<enable resume='true'/>`; returns the resumption id after checking `<enabled/>`.
async fn enable(c: &mut RawClient) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    assert_eq!(e.attr("resume"), Some("true"), "{}", xml(&e));
    let id = e.attr("id").expect("resumption id").to_string();
    assert!(!id.is_empty());
    id
}

/// A new connection that authenticates as `user` and sends `<resume/>`; returns the client
/// and the server's answer (`<resumed/>` or `<failed/>`).
async fn resume(s: &TestServer, user: &str, previd: &str, h: u32) -> (RawClient, Element) {
    let (mut c, f) = RawClient::authenticate(s.c2s(), user, "pw").await;
    assert!(f.get_child("sm", SM).is_some(), "{}", xml(&f));
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
    ))
    .await;
    let answer = c.element().await;
    (c, answer)
}

/// A bodyless chat state (XEP-0085): unimportant for CSI.
async fn chat_state(c: &mut RawClient, to: &str, state: &str) {
    c.send(&format!(
        "<message to='{to}' type='chat'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ))
    .await;
}

fn body(el: &Element) -> Option<String> {
    child(el, "body").map(|b| b.text())
}

fn bodies(els: &[Element]) -> Vec<String> {
    els.iter().filter_map(body).collect()
}

fn messages(els: Vec<Element>) -> Vec<Element> {
    els.into_iter().filter(|e| e.name() == "message").collect()
}

fn delay_of(el: &Element) -> Option<&Element> {
    el.get_child("delay", DELAY)
}

/// The next stanza that is a message, skipping presence.
async fn next_message(c: &mut RawClient) -> Element {
    c.expect("message").await
}

/// Polls `cond` until it holds, bounded by WAIT (for states reached by a server timer).
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn offline_count(s: &TestServer, user: &str) -> usize {
    s.running.shared.store.offline_count(user).unwrap()
}

/// Reads the stream error and returns the whole `<stream:error/>` element.
async fn stream_error_el(c: &mut RawClient) -> Element {
    loop {
        let el = c.element().await;
        if el.name() == "error" && el.children().any(|x| x.has_ns(STREAMS)) {
            return el;
        }
    }
}

// ---------------------------------------------------------------------------------------
// XEP-0198: enabling, acks, requests, errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sm_is_offered_and_enabled_with_id_resume_and_max() {
    let s =
        server(|c| c.stream_management.hibernation_timeout = Dur(Duration::from_secs(90))).await;
    let (mut c, f) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    assert!(f.get_child("sm", SM).is_some(), "{}", xml(&f));
    // XEP-0198 §3: enabling before a resource is bound is refused, the stream goes on.
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c.element().await;
    assert!(e.is("failed", SM), "{}", xml(&e));
    assert!(e.get_child("unexpected-request", STANZAS).is_some());
    c.bind("phone").await;
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    assert_eq!(e.attr("resume"), Some("true"));
    assert_eq!(e.attr("max"), Some("90"));
    assert!(e.attr("id").is_some_and(|i| !i.is_empty()));
    // Enabling twice is an error, not a reset of the counters.
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = c.element().await;
    assert!(e.is("failed", SM), "{}", xml(&e));
    assert!(e.get_child("unexpected-request", STANZAS).is_some());

    // Without resume='true' there is no resumption id to hand out.
    let mut d = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    d.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = d.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    assert_eq!(e.attr("id"), None);
    assert_eq!(e.attr("resume"), None);
}

#[tokio::test]
async fn r_is_answered_with_the_count_of_handled_stanzas() {
    let s = server(|_| {}).await;
    let mut c = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut c).await;
    c.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = c.element().await;
    assert!(a.is("a", SM), "{}", xml(&a));
    assert_eq!(a.attr("h"), Some("0"));
    for i in 0..3 {
        assert!(c.sync(&format!("p{i}")).await.is_empty());
    }
    // Nonzas (<r/>, <a/>) are not counted: asking twice gives the same h.
    for _ in 0..2 {
        c.send("<r xmlns='urn:xmpp:sm:3'/>").await;
        let a = c.element().await;
        assert!(a.is("a", SM), "{}", xml(&a));
        assert_eq!(a.attr("h"), Some("3"));
    }
    // The server sent three ping results; acknowledging them is accepted silently.
    c.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    assert!(c.sync("p3").await.is_empty());
}

#[tokio::test]
async fn server_requests_an_ack_after_request_after_stanzas() {
    let s = server(|c| c.stream_management.request_after = 3).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut b).await;
    for round in 0..2 {
        for i in 0..3 {
            chat(&mut a, "bob@localhost/phone", &format!("m{round}{i}")).await;
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(b.element().await);
        }
        assert_eq!(
            bodies(&got),
            vec![
                format!("m{round}0"),
                format!("m{round}1"),
                format!("m{round}2")
            ]
        );
        assert!(
            got[3].is("r", SM),
            "expected <r/> last, got {}",
            xml(&got[3])
        );
        let h = 3 * (round + 1);
        b.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")).await;
    }
}

#[tokio::test]
async fn acknowledging_more_than_was_sent_is_a_stream_error() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut b).await;
    chat(&mut a, "bob@localhost/phone", "one").await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("one"));
    b.send("<a xmlns='urn:xmpp:sm:3' h='5'/>").await;
    let e = stream_error_el(&mut b).await;
    // XEP-0198 §4: undefined-condition carrying <handled-count-too-high/>.
    assert!(
        e.get_child("undefined-condition", STREAMS).is_some(),
        "{}",
        xml(&e)
    );
    let hc = e
        .get_child("handled-count-too-high", SM)
        .unwrap_or_else(|| panic!("{}", xml(&e)));
    assert_eq!(hc.attr("h"), Some("5"));
    assert_eq!(hc.attr("send-count"), Some("1"));
    b.expect_closed().await;
}

#[tokio::test]
async fn queue_overflow_ends_the_stream_and_loses_nothing() {
    // Archive off: the stanzas can only survive through offline storage.
    let s = server(|c| {
        c.stream_management.max_queue = 3;
        c.mam.default = "never".into();
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut b).await;
    for i in 1..=4 {
        chat(&mut a, "bob@localhost/phone", &format!("q{i}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_message(&mut b).await);
    }
    assert_eq!(bodies(&got), ["q1", "q2", "q3"]);
    assert_eq!(b.stream_error().await, "policy-violation");
    b.expect_closed().await;
    // None acknowledged: all four (including the one that overflowed) are kept for later.
    wait_until(|| offline_count(&s, "bob@localhost") == 4).await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_message(&mut b).await);
    }
    assert_eq!(bodies(&got), ["q1", "q2", "q3", "q4"]);
    assert!(messages(b.sync("after").await).is_empty());
}

// ---------------------------------------------------------------------------------------
// XEP-0198: hibernation and resumption
// ---------------------------------------------------------------------------------------

async fn resume_scenario(reset: bool) {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<presence/>").await;
    chat(&mut a, "bob@localhost/phone", "m1").await;
    chat(&mut a, "bob@localhost/phone", "m2").await;
    let got = [next_message(&mut b).await, next_message(&mut b).await];
    assert_eq!(bodies(&got), ["m1", "m2"]);
    // Outbound so far: self-presence, m1, m2. The client acknowledges through m1.
    b.send("<a xmlns='urn:xmpp:sm:3' h='2'/>").await;
    chat(&mut a, "bob@localhost/phone", "m3").await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("m3"));
    // Inbound: presence and this ping (h=2); outbound adds the ping result.
    assert!(messages(b.sync("before-kill").await).is_empty());
    b.kill(reset);
    chat(&mut a, "bob@localhost/phone", "m4").await;
    chat(&mut a, "bob@localhost/phone", "m5").await;
    assert!(messages(a.sync("sent").await).is_empty());

    let (mut b, r) = resume(&s, "bob", &id, 2).await;
    assert!(r.is("resumed", SM), "{}", xml(&r));
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(r.attr("h"), Some("2"));
    // Unacked: m2, m3, the ping result, m4, m5 — each once, in order, stamped with when it
    // was first queued.
    let mut re = Vec::new();
    for _ in 0..5 {
        re.push(b.element().await);
    }
    assert_eq!(bodies(&re), ["m2", "m3", "m4", "m5"]);
    assert!(re[2].name() == "iq" && re[2].attr("id") == Some("before-kill"));
    // RFC 6120 §8.2.3: an IQ result keeps at most one child, so no delay stamp on it.
    assert!(delay_of(&re[2]).is_none(), "{}", xml(&re[2]));
    for el in re.iter().filter(|e| e.name() == "message") {
        let d = delay_of(el).unwrap_or_else(|| panic!("no delay stamp: {}", xml(el)));
        assert_eq!(d.attr("from"), Some("localhost"));
        assert!(d.attr("stamp").is_some());
    }
    // XEP-0198 §5: the server asks at once whether the retransmission arrived.
    let r = b.element().await;
    assert!(r.is("r", SM), "{}", xml(&r));
    b.send("<a xmlns='urn:xmpp:sm:3' h='7'/>").await;
    // Nothing is sent twice; the session goes on with live, unstamped delivery.
    assert!(b.sync("after-resume").await.is_empty());
    chat(&mut a, "bob@localhost/phone", "m6").await;
    let m6 = next_message(&mut b).await;
    assert_eq!(body(&m6).as_deref(), Some("m6"));
    assert!(delay_of(&m6).is_none(), "{}", xml(&m6));
    // Counters carried over: the ping result was #8 and m6 #9 since the stream was enabled;
    // inbound, the resumed stream adds its ping to the two before.
    b.send("<a xmlns='urn:xmpp:sm:3' h='9'/>").await;
    b.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = b.element().await;
    assert!(ack.is("a", SM), "{}", xml(&ack));
    assert_eq!(ack.attr("h"), Some("3"));
    // The resumed session still has its presence: a message to the bare JID reaches it.
    chat(&mut a, "bob@localhost", "to-bare").await;
    assert_eq!(
        body(&next_message(&mut b).await).as_deref(),
        Some("to-bare")
    );
}

#[tokio::test]
async fn resume_after_eof_retransmits_exactly_the_unacked_once() {
    resume_scenario(false).await;
}

#[tokio::test]
async fn resume_after_reset_retransmits_exactly_the_unacked_once() {
    resume_scenario(true).await;
}

#[tokio::test]
async fn a_second_resume_replaces_the_first() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.kill(false);
    let (mut b2, r) = resume(&s, "bob", &id, 0).await;
    assert!(r.is("resumed", SM), "{}", xml(&r));
    chat(&mut a, "bob@localhost/phone", "to-b2").await;
    assert_eq!(body(&next_message(&mut b2).await).as_deref(), Some("to-b2"));
    // Another user cannot take the session over with its id.
    let (mut other, r) = resume(&s, "carol", &id, 0).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(r.get_child("item-not-found", STANZAS).is_some());
    other.bind("x").await;
    // A resumption that acknowledges more than was sent fails and leaves the live stream be.
    let (_, r) = resume(&s, "bob", &id, 99).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(
        r.get_child("handled-count-too-high", SM).is_some(),
        "{}",
        xml(&r)
    );
    assert!(b2.sync("still-there").await.is_empty());
    // The owner resumes again while the first resumed stream is still open (h=0: the
    // message is retransmitted on the new stream).
    let (mut b3, r) = resume(&s, "bob", &id, 0).await;
    assert!(r.is("resumed", SM), "{}", xml(&r));
    let re = next_message(&mut b3).await;
    assert_eq!(body(&re).as_deref(), Some("to-b2"));
    assert!(delay_of(&re).is_some());
    let iq = b3.element().await;
    assert_eq!(iq.attr("id"), Some("still-there"), "{}", xml(&iq));
    let r = b3.element().await;
    assert!(r.is("r", SM), "{}", xml(&r));
    b3.send("<a xmlns='urn:xmpp:sm:3' h='2'/>").await;
    assert_eq!(b2.stream_error().await, "conflict");
    b2.expect_closed().await;
    chat(&mut a, "bob@localhost/phone", "to-b3").await;
    assert_eq!(body(&next_message(&mut b3).await).as_deref(), Some("to-b3"));
    assert!(messages(b3.sync("end").await).is_empty());
}

#[tokio::test]
async fn failed_resume_lets_the_stream_bind() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let (mut b, r) = resume(&s, "bob", "no-such-session", 0).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(
        r.get_child("item-not-found", STANZAS).is_some(),
        "{}",
        xml(&r)
    );
    assert_eq!(
        r.attr("h"),
        None,
        "an unknown session has no h: {}",
        xml(&r)
    );
    b.bind("phone").await;
    enable(&mut b).await;
    chat(&mut a, "bob@localhost/phone", "after-failed").await;
    assert_eq!(
        body(&next_message(&mut b).await).as_deref(),
        Some("after-failed")
    );
}

#[tokio::test]
async fn resume_of_an_expired_session_fails_with_its_last_h() {
    let s = server(|c| {
        c.stream_management.hibernation_timeout = Dur(Duration::from_millis(EXPIRY_MS));
    })
    .await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.sync("one").await;
    b.sync("two").await;
    b.kill(false);
    let shared = s.running.shared.clone();
    wait_until(|| shared.resumable_get(&id).is_none()).await;
    let (mut b, r) = resume(&s, "bob", &id, 0).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(
        r.get_child("item-not-found", STANZAS).is_some(),
        "{}",
        xml(&r)
    );
    assert_eq!(r.attr("h"), Some("2"), "{}", xml(&r));
    b.bind("phone").await;
}

// ---------------------------------------------------------------------------------------
// Hibernation expiry: nothing lost, nothing duplicated
// ---------------------------------------------------------------------------------------

/// A message that is worth storing offline but not archivable (no body: XEP-0066 OOB only).
async fn oob(c: &mut RawClient, to: &str, url: &str) {
    c.send(&format!(
        "<message to='{to}' type='chat'><x xmlns='jabber:x:oob'><url>{url}</url></x></message>"
    ))
    .await;
}

#[tokio::test]
async fn expiry_leaves_archived_messages_to_mam_and_stores_the_rest_offline() {
    let s = server(|c| {
        c.stream_management.hibernation_timeout = Dur(Duration::from_millis(EXPIRY_MS));
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut b).await;
    b.send("<presence/>").await;
    chat(&mut a, "bob@localhost", "e1").await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("e1"));
    b.kill(false);
    chat(&mut a, "bob@localhost", "e2").await;
    oob(&mut a, "bob@localhost", "https://example.org/e3").await;
    a.sync("sent").await;
    // e3 is the last unacked stanza handed on at expiry: once it is stored, all were.
    wait_until(|| offline_count(&s, "bob@localhost") == 1).await;

    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    let m = next_message(&mut b).await;
    let url = m
        .get_child("x", "jabber:x:oob")
        .and_then(|x| child(x, "url"))
        .map(|u| u.text());
    assert_eq!(
        url.as_deref(),
        Some("https://example.org/e3"),
        "{}",
        xml(&m)
    );
    assert!(delay_of(&m).is_some(), "{}", xml(&m));
    assert!(messages(b.sync("after-offline").await).is_empty());
    assert_eq!(offline_count(&s, "bob@localhost"), 0);
    // The archived ones are in the archive, once each.
    let (results, fin) = mam_query(&mut b, "q1", "", "").await;
    assert_eq!(result_bodies(&results), ["e1", "e2"]);
    assert_eq!(fin.attr("complete"), Some("true"));
}

#[tokio::test]
async fn expiry_without_archive_stores_every_unacked_message_offline_once() {
    let s = server(|c| {
        c.stream_management.hibernation_timeout = Dur(Duration::from_millis(EXPIRY_MS));
        c.mam.default = "never".into();
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<presence/>").await;
    chat(&mut a, "bob@localhost", "x1").await;
    chat(&mut a, "bob@localhost", "x2").await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("x1"));
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("x2"));
    // x1 and the self-presence before it are acknowledged; x2 is not.
    b.send("<a xmlns='urn:xmpp:sm:3' h='2'/>").await;
    b.sync("acked").await;
    b.kill(true);
    chat(&mut a, "bob@localhost", "x3").await;
    chat(&mut a, "bob@localhost", "x4").await;
    a.sync("sent").await;
    wait_until(|| offline_count(&s, "bob@localhost") == 3).await;
    let shared = s.running.shared.clone();
    wait_until(|| shared.resumable_get(&id).is_none()).await;

    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_message(&mut b).await);
    }
    assert_eq!(bodies(&got), ["x2", "x3", "x4"]);
    for m in &got {
        assert!(delay_of(m).is_some(), "{}", xml(m));
    }
    assert!(messages(b.sync("after").await).is_empty());
    assert_eq!(offline_count(&s, "bob@localhost"), 0);
}

#[tokio::test]
async fn expiry_with_another_resource_online_bounces_to_the_sender() {
    let s = server(|c| {
        c.stream_management.hibernation_timeout = Dur(Duration::from_millis(EXPIRY_MS));
        c.mam.default = "never".into();
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut desk = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    desk.send("<presence/>").await;
    desk.sync("d").await;
    let mut phone = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    enable(&mut phone).await;
    phone.kill(false);
    chat(&mut a, "bob@localhost/phone", "for-phone").await;
    let e = next_message(&mut a).await;
    assert_eq!(e.attr("type"), Some("error"), "{}", xml(&e));
    assert_eq!(e.attr("from"), Some("bob@localhost/phone"));
    let err = child(&e, "error").expect("error child");
    assert!(
        err.get_child("recipient-unavailable", STANZAS).is_some(),
        "{}",
        xml(&e)
    );
    assert_eq!(offline_count(&s, "bob@localhost"), 0);
    assert!(messages(desk.sync("d2").await).is_empty());
}

// ---------------------------------------------------------------------------------------
// XEP-0352 client state indication
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn inactive_holds_unimportant_stanzas_until_a_body_or_active() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    assert!(b.sync("inactive").await.is_empty());
    chat_state(&mut a, "bob@localhost/phone", "composing").await;
    a.send("<presence to='bob@localhost/phone'/>").await;
    chat_state(&mut a, "bob@localhost/phone", "paused").await;
    a.sync("a1").await;
    assert!(
        b.sync("held").await.is_empty(),
        "held stanzas were delivered"
    );
    // A message with a body flushes the held ones first, in order, then itself.
    chat(&mut a, "bob@localhost/phone", "wake").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(b.element().await);
    }
    assert!(got[0].has_child("composing", "http://jabber.org/protocol/chatstates"));
    assert_eq!(got[1].name(), "presence");
    assert_eq!(got[1].attr("from"), Some("alice@localhost/r"));
    assert!(got[2].has_child("paused", "http://jabber.org/protocol/chatstates"));
    assert_eq!(body(&got[3]).as_deref(), Some("wake"));
    // Still inactive: the next chat state is held again until <active/>.
    chat_state(&mut a, "bob@localhost/phone", "gone").await;
    a.sync("a2").await;
    assert!(b.sync("held2").await.is_empty());
    b.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let g = b.element().await;
    assert!(
        g.has_child("gone", "http://jabber.org/protocol/chatstates"),
        "{}",
        xml(&g)
    );
    // Active: delivered as it comes.
    chat_state(&mut a, "bob@localhost/phone", "active").await;
    let g = b.element().await;
    assert!(
        g.has_child("active", "http://jabber.org/protocol/chatstates"),
        "{}",
        xml(&g)
    );
}

#[tokio::test]
async fn a_full_csi_buffer_flushes() {
    let s = server(|c| c.csi.max_buffer = 2).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    assert!(b.sync("inactive").await.is_empty());
    chat_state(&mut a, "bob@localhost/phone", "composing").await;
    chat_state(&mut a, "bob@localhost/phone", "paused").await;
    a.sync("a1").await;
    assert!(b.sync("held").await.is_empty());
    chat_state(&mut a, "bob@localhost/phone", "gone").await;
    let got = [b.element().await, b.element().await, b.element().await];
    let ns = "http://jabber.org/protocol/chatstates";
    assert!(got[0].has_child("composing", ns));
    assert!(got[1].has_child("paused", ns));
    assert!(got[2].has_child("gone", ns));
}

#[tokio::test]
async fn held_stanzas_stay_outside_the_sm_queue_and_follow_a_resume() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    assert!(b.sync("inactive").await.is_empty());
    chat_state(&mut a, "bob@localhost/phone", "composing").await;
    a.send("<presence to='bob@localhost/phone'/>").await;
    a.sync("a1").await;
    b.kill(false);
    chat_state(&mut a, "bob@localhost/phone", "paused").await;
    a.sync("a2").await;
    // The client saw the ping result (#1); nothing else was in the SM queue.
    // Acknowledging more than was sent fails the resumption with the counts (XEP-0198 §4)
    // and leaves the session resumable.
    let (_, r) = resume(&s, "bob", &id, 7).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    let hc = r
        .get_child("handled-count-too-high", SM)
        .unwrap_or_else(|| panic!("{}", xml(&r)));
    assert_eq!(hc.attr("h"), Some("7"));
    assert_eq!(hc.attr("send-count"), Some("1"));
    let (mut b, r) = resume(&s, "bob", &id, 1).await;
    assert!(r.is("resumed", SM), "{}", xml(&r));
    assert_eq!(r.attr("h"), Some("1"));
    // Nothing was in the SM queue (no retransmission, so no delay stamps); the held stanzas
    // follow in order, once.
    let got = [b.element().await, b.element().await, b.element().await];
    let ns = "http://jabber.org/protocol/chatstates";
    assert!(got[0].has_child("composing", ns), "{}", xml(&got[0]));
    assert_eq!(got[1].name(), "presence", "{}", xml(&got[1]));
    assert!(got[2].has_child("paused", ns), "{}", xml(&got[2]));
    for g in &got {
        assert!(delay_of(g).is_none(), "held stanza was queued: {}", xml(g));
    }
    assert!(b.sync("after").await.is_empty());
    // They entered the count only when flushed: ping result, 3 held, ping result.
    b.send("<a xmlns='urn:xmpp:sm:3' h='5'/>").await;
    b.send("<a xmlns='urn:xmpp:sm:3' h='6'/>").await;
    let e = stream_error_el(&mut b).await;
    let hc = e
        .get_child("handled-count-too-high", SM)
        .unwrap_or_else(|| panic!("{}", xml(&e)));
    assert_eq!(hc.attr("send-count"), Some("5"));
}

// ---------------------------------------------------------------------------------------
// XEP-0280 carbons
// ---------------------------------------------------------------------------------------

fn carbon<'a>(el: &'a Element, kind: &str) -> Option<&'a Element> {
    el.get_child(kind, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .children()
        .find(|c| c.name() == "message")
}

async fn carbons(c: &mut RawClient, on: bool) {
    let what = if on { "enable" } else { "disable" };
    c.send(&format!(
        "<iq type='set' id='cb-{what}'><{what} xmlns='urn:xmpp:carbons:2'/></iq>"
    ))
    .await;
    let r = c.expect("iq").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

#[tokio::test]
async fn carbons_copy_received_and_sent_messages_to_enabled_resources() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let mut phone = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let mut desk = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    phone.send("<presence/>").await;
    desk.send("<presence/>").await;
    carbons(&mut desk, true).await;
    phone.sync("p0").await;
    desk.sync("d0").await;

    // Received: the original to phone, a <received/> copy to desk.
    chat(&mut a, "bob@localhost/phone", "in1").await;
    let m = next_message(&mut phone).await;
    assert_eq!(body(&m).as_deref(), Some("in1"));
    assert!(m.get_child("received", CARBONS).is_none());
    let c = next_message(&mut desk).await;
    assert_eq!(c.attr("from"), Some("bob@localhost"));
    assert_eq!(c.attr("to"), Some("bob@localhost/desk"));
    let inner = carbon(&c, "received").unwrap_or_else(|| panic!("{}", xml(&c)));
    assert_eq!(body(inner).as_deref(), Some("in1"));
    assert_eq!(inner.attr("from"), Some("alice@localhost/r"));

    // Sent: phone writes to alice, desk gets a <sent/> copy; phone (carbons off) nothing.
    chat(&mut phone, "alice@localhost", "out1").await;
    assert_eq!(body(&next_message(&mut a).await).as_deref(), Some("out1"));
    let c = next_message(&mut desk).await;
    let inner = carbon(&c, "sent").unwrap_or_else(|| panic!("{}", xml(&c)));
    assert_eq!(body(inner).as_deref(), Some("out1"));
    assert_eq!(inner.attr("from"), Some("bob@localhost/phone"));
    assert!(messages(phone.sync("p1").await).is_empty());

    // Desk sends: no copy to itself, and phone has carbons off.
    chat(&mut desk, "alice@localhost", "out2").await;
    assert_eq!(body(&next_message(&mut a).await).as_deref(), Some("out2"));
    assert!(messages(desk.sync("d1").await).is_empty());
    assert!(messages(phone.sync("p2").await).is_empty());

    // Both enabled; a message to desk: desk gets only the original, phone the copy.
    carbons(&mut phone, true).await;
    chat(&mut a, "bob@localhost/desk", "in2").await;
    let m = next_message(&mut desk).await;
    assert_eq!(body(&m).as_deref(), Some("in2"));
    let c = next_message(&mut phone).await;
    assert_eq!(
        carbon(&c, "received").and_then(body).as_deref(),
        Some("in2")
    );
    assert!(messages(desk.sync("d2").await).is_empty());

    // Private (XEP-0280 §8) and no-copy (XEP-0334): no copies; <private/> is stripped.
    a.send("<message to='bob@localhost/phone' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    let m = next_message(&mut phone).await;
    assert_eq!(body(&m).as_deref(), Some("secret"));
    assert!(m.get_child("private", CARBONS).is_none(), "{}", xml(&m));
    a.send("<message to='bob@localhost/phone' type='chat'><body>nocopy</body><no-copy xmlns='urn:xmpp:hints'/></message>").await;
    assert_eq!(
        body(&next_message(&mut phone).await).as_deref(),
        Some("nocopy")
    );
    phone.send("<message to='alice@localhost' type='chat'><body>psent</body><private xmlns='urn:xmpp:carbons:2'/></message>").await;
    let m = next_message(&mut a).await;
    assert_eq!(body(&m).as_deref(), Some("psent"));
    assert!(m.get_child("private", CARBONS).is_none(), "{}", xml(&m));
    a.sync("a1").await;
    assert!(messages(desk.sync("d3").await).is_empty());

    // Disabled: no more copies.
    carbons(&mut desk, false).await;
    chat(&mut a, "bob@localhost/phone", "in3").await;
    assert_eq!(
        body(&next_message(&mut phone).await).as_deref(),
        Some("in3")
    );
    a.sync("a2").await;
    assert!(messages(desk.sync("d4").await).is_empty());
}

// ---------------------------------------------------------------------------------------
// XEP-0313 archive
// ---------------------------------------------------------------------------------------

/// Runs a MAM query; returns the `<result/>` messages and the `<fin/>`.
async fn mam_query(
    c: &mut RawClient,
    qid: &str,
    fields: &str,
    rsm: &str,
) -> (Vec<Element>, Element) {
    c.send(&format!(
        "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>{rsm}</query></iq>"
    ))
    .await;
    let mut results = Vec::new();
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(qid) {
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            let fin = el
                .get_child("fin", MAM)
                .unwrap_or_else(|| panic!("{}", xml(&el)))
                .clone();
            return (results, fin);
        }
        if let Some(r) = el.get_child("result", MAM) {
            assert_eq!(r.attr("queryid"), Some(qid), "{}", xml(&el));
            results.push(el.clone());
        }
    }
}

/// The error condition of a MAM query the server refuses.
async fn mam_error(c: &mut RawClient, qid: &str, fields: &str, rsm: &str) -> String {
    c.send(&format!(
        "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>{rsm}</query></iq>"
    ))
    .await;
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(qid) {
            assert_eq!(el.attr("type"), Some("error"), "{}", xml(&el));
            let e = child(&el, "error").expect("error");
            return e
                .children()
                .find(|x| x.has_ns(STANZAS) && x.name() != "text")
                .map(|x| x.name().to_string())
                .unwrap_or_default();
        }
        assert!(el.get_child("result", MAM).is_none(), "{}", xml(&el));
    }
}

fn forwarded(result: &Element) -> &Element {
    result
        .get_child("result", MAM)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .expect("forwarded")
}

fn result_id(result: &Element) -> String {
    result
        .get_child("result", MAM)
        .and_then(|r| r.attr("id"))
        .expect("result id")
        .to_string()
}

fn result_stamp(result: &Element) -> String {
    forwarded(result)
        .get_child("delay", DELAY)
        .and_then(|d| d.attr("stamp"))
        .expect("stamp")
        .to_string()
}

fn result_bodies(results: &[Element]) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            let m = child(forwarded(r), "message").expect("message");
            body(m).expect("body")
        })
        .collect()
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", RSM)?
        .get_child(name, RSM)
        .map(|e| e.text())
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn rsm(max: usize, cursor: &str) -> String {
    format!("<set xmlns='{RSM}'><max>{max}</max>{cursor}</set>")
}

#[tokio::test]
async fn messages_are_archived_for_both_parties_and_paged() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    b.sync("b0").await;
    let mut stanza_ids = Vec::new();
    for i in 1..=5 {
        chat(&mut a, "bob@localhost", &format!("n{i}")).await;
        let m = next_message(&mut b).await;
        assert_eq!(body(&m), Some(format!("n{i}")));
        let sid = m
            .get_child("stanza-id", SID)
            .unwrap_or_else(|| panic!("{}", xml(&m)));
        assert_eq!(sid.attr("by"), Some("bob@localhost"));
        stanza_ids.push(sid.attr("id").unwrap().to_string());
    }
    let (all, fin) = mam_query(&mut b, "all", "", "").await;
    assert_eq!(result_bodies(&all), ["n1", "n2", "n3", "n4", "n5"]);
    let ids: Vec<String> = all.iter().map(result_id).collect();
    assert_eq!(
        ids, stanza_ids,
        "archive ids are the stanza-ids the recipient saw"
    );
    assert_eq!(fin.attr("complete"), Some("true"));
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("5"));
    assert_eq!(rsm_text(&fin, "first"), Some(ids[0].clone()));
    assert_eq!(rsm_text(&fin, "last"), Some(ids[4].clone()));
    let inner = child(forwarded(&all[0]), "message").unwrap();
    assert_eq!(inner.attr("from"), Some("alice@localhost/r"));

    // The sender's archive has its side of the conversation.
    let (sent, fin) = mam_query(&mut a, "sent", &field("with", "bob@localhost"), "").await;
    assert_eq!(result_bodies(&sent), ["n1", "n2", "n3", "n4", "n5"]);
    assert_eq!(fin.attr("complete"), Some("true"));
    let (none, fin) = mam_query(&mut a, "carol", &field("with", "carol@localhost"), "").await;
    assert!(none.is_empty());
    assert_eq!(fin.attr("complete"), Some("true"));

    // RSM forward paging.
    let (p1, fin) = mam_query(&mut b, "p1", "", &rsm(2, "")).await;
    assert_eq!(result_bodies(&p1), ["n1", "n2"]);
    assert_eq!(fin.attr("complete"), None);
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("5"));
    let last = rsm_text(&fin, "last").unwrap();
    let (p2, fin) = mam_query(&mut b, "p2", "", &rsm(2, &format!("<after>{last}</after>"))).await;
    assert_eq!(result_bodies(&p2), ["n3", "n4"]);
    assert_eq!(fin.attr("complete"), None);
    let last = rsm_text(&fin, "last").unwrap();
    let (p3, fin) = mam_query(&mut b, "p3", "", &rsm(2, &format!("<after>{last}</after>"))).await;
    assert_eq!(result_bodies(&p3), ["n5"]);
    assert_eq!(fin.attr("complete"), Some("true"));

    // Backward from the last page (XEP-0059 §2.5 empty <before/>).
    let (l1, fin) = mam_query(&mut b, "l1", "", &rsm(2, "<before/>")).await;
    assert_eq!(result_bodies(&l1), ["n4", "n5"]);
    assert_eq!(fin.attr("complete"), None);
    let first = rsm_text(&fin, "first").unwrap();
    let (l2, _) = mam_query(
        &mut b,
        "l2",
        "",
        &rsm(2, &format!("<before>{first}</before>")),
    )
    .await;
    assert_eq!(result_bodies(&l2), ["n2", "n3"]);
    let (l3, fin) = mam_query(
        &mut b,
        "l3",
        "",
        &rsm(2, &format!("<before>{}</before>", ids[1])),
    )
    .await;
    assert_eq!(result_bodies(&l3), ["n1"]);
    assert_eq!(fin.attr("complete"), Some("true"));

    // Time filters, using the stamps the archive reports.
    let stamps: Vec<String> = all.iter().map(result_stamp).collect();
    let (r, _) = mam_query(&mut b, "st", &field("start", &stamps[2]), "").await;
    assert_eq!(result_bodies(&r), ["n3", "n4", "n5"]);
    let (r, _) = mam_query(&mut b, "en", &field("end", &stamps[1]), "").await;
    assert_eq!(result_bodies(&r), ["n1", "n2"]);
    let both = format!("{}{}", field("start", &stamps[1]), field("end", &stamps[3]));
    let (r, _) = mam_query(&mut b, "se", &both, "").await;
    assert_eq!(result_bodies(&r), ["n2", "n3", "n4"]);

    // Extended id filters (XEP-0313 §4.1.3, §4.1.4).
    let (r, _) = mam_query(&mut b, "ai", &field("after-id", &ids[2]), "").await;
    assert_eq!(result_bodies(&r), ["n4", "n5"]);
    let (r, _) = mam_query(&mut b, "bi", &field("before-id", &ids[2]), "").await;
    assert_eq!(result_bodies(&r), ["n1", "n2"]);
    let two = format!(
        "<field var='ids'><value>{}</value><value>{}</value></field>",
        ids[3], ids[1]
    );
    let (r, _) = mam_query(&mut b, "ids", &two, "").await;
    assert_eq!(result_bodies(&r), ["n2", "n4"]);

    // Unknown ids are item-not-found, not an empty page.
    assert_eq!(
        mam_error(&mut b, "u1", "", &rsm(2, "<after>nope</after>")).await,
        "item-not-found"
    );
    assert_eq!(
        mam_error(&mut b, "u2", &field("before-id", "nope"), "").await,
        "item-not-found"
    );
}

async fn set_prefs(c: &mut RawClient, id: &str, prefs: &str) -> Element {
    c.send(&format!("<iq type='set' id='{id}'>{prefs}</iq>"))
        .await;
    let r = c.expect("iq").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    r.get_child("prefs", MAM)
        .unwrap_or_else(|| panic!("{}", xml(&r)))
        .clone()
}

/// Sends `text` from `from` to bob (online), returns whether bob's copy carried a stanza-id.
async fn archived_for_bob(from: &mut RawClient, b: &mut RawClient, text: &str) -> bool {
    chat(from, "bob@localhost", text).await;
    let m = next_message(b).await;
    assert_eq!(body(&m).as_deref(), Some(text));
    m.get_child("stanza-id", SID).is_some()
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut c = RawClient::login(s.c2s(), "carol", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    b.sync("b0").await;

    b.send(&format!(
        "<iq type='get' id='pg'><prefs xmlns='{MAM}'/></iq>"
    ))
    .await;
    let r = b.expect("iq").await;
    let p = r
        .get_child("prefs", MAM)
        .unwrap_or_else(|| panic!("{}", xml(&r)));
    assert_eq!(p.attr("default"), Some("always"));

    let p = set_prefs(&mut b, "never", &format!("<prefs xmlns='{MAM}' default='never'><always><jid>carol@localhost</jid></always><never/></prefs>")).await;
    assert_eq!(p.attr("default"), Some("never"));
    assert!(!archived_for_bob(&mut a, &mut b, "never-a").await);
    assert!(archived_for_bob(&mut c, &mut b, "always-c").await);

    // roster: only contacts in the roster are archived.
    set_prefs(
        &mut b,
        "roster",
        &format!("<prefs xmlns='{MAM}' default='roster'/>"),
    )
    .await;
    assert!(!archived_for_bob(&mut a, &mut b, "roster-a-1").await);
    b.send("<iq type='set' id='ri'><query xmlns='jabber:iq:roster'><item jid='alice@localhost'/></query></iq>").await;
    loop {
        let el = b.element().await;
        if el.name() == "iq" && el.attr("id") == Some("ri") {
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            break;
        }
    }
    assert!(archived_for_bob(&mut a, &mut b, "roster-a-2").await);

    // always, with a per-JID never that wins.
    set_prefs(&mut b, "always", &format!("<prefs xmlns='{MAM}' default='always'><always/><never><jid>carol@localhost</jid></never></prefs>")).await;
    assert!(archived_for_bob(&mut a, &mut b, "always-a").await);
    assert!(!archived_for_bob(&mut c, &mut b, "never-c").await);

    let (r, _) = mam_query(&mut b, "q", "", "").await;
    assert_eq!(result_bodies(&r), ["always-c", "roster-a-2", "always-a"]);
}

#[tokio::test]
async fn retention_purges_archived_messages_older_than_max_age() {
    use herald_store::{ArchiveQuery, ArchiveStore, ArchivedMessage};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    quiet_sm(&mut cfg);
    cfg.mam.max_age = Dur(Duration::from_secs(7 * 86400));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let store = herald_store::Store::open(&cfg.data_dir).unwrap();
    let now = herald_server::xep::delay::now_micros();
    for (id, age_days) in [("old", 8), ("young", 6)] {
        let msg = ArchivedMessage {
            id: id.to_string(),
            with: "alice@localhost".to_string(),
            timestamp: now - age_days * 86_400_000_000,
            stanza_xml: format!(
                "<message xmlns='jabber:client' from='alice@localhost/r' to='bob@localhost' type='chat'><body>{id}</body></message>"
            ),
        };
        store
            .archive("bob@localhost", &msg, "alice@localhost/r")
            .unwrap();
    }
    let running = herald_server::start_with_store(cfg, store).await.unwrap();
    let s = TestServer { running, dir };
    s.add_user("bob", "pw");
    let count = || {
        let q = ArchiveQuery {
            max: 10,
            count_limit: 10,
            ..ArchiveQuery::default()
        };
        s.running
            .shared
            .store
            .query_archive("bob@localhost", &q)
            .unwrap()
            .count
    };
    wait_until(|| count() == Some(1)).await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let (r, fin) = mam_query(&mut b, "q", "", "").await;
    assert_eq!(result_bodies(&r), ["young"]);
    assert_eq!(fin.attr("complete"), Some("true"));
}

#[tokio::test]
async fn a_dead_connection_without_resumption_hands_unacked_messages_on() {
    let s = server(|c| c.mam.default = "never".into()).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert!(b.element().await.is("enabled", SM));
    b.send("<presence/>").await;
    chat(&mut a, "bob@localhost", "d1").await;
    assert_eq!(body(&next_message(&mut b).await).as_deref(), Some("d1"));
    b.kill(true);
    // Not resumable: the session ends at once and d1 (never acknowledged) is kept offline.
    wait_until(|| offline_count(&s, "bob@localhost") == 1).await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    let m = next_message(&mut b).await;
    assert_eq!(body(&m).as_deref(), Some("d1"));
    assert!(messages(b.sync("after").await).is_empty());
}

#[tokio::test]
async fn stanzas_held_by_csi_are_kept_when_hibernation_expires() {
    let s = server(|c| {
        c.stream_management.hibernation_timeout = Dur(Duration::from_millis(EXPIRY_MS));
        c.mam.default = "never".into();
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    assert!(b.sync("inactive").await.is_empty());
    // Bodyless, so held; but worth keeping offline.
    oob(&mut a, "bob@localhost/phone", "https://example.org/held").await;
    chat_state(&mut a, "bob@localhost/phone", "composing").await;
    a.sync("a1").await;
    assert!(b.sync("held").await.is_empty());
    b.kill(false);
    let shared = s.running.shared.clone();
    wait_until(|| shared.resumable_get(&id).is_none()).await;
    wait_until(|| offline_count(&s, "bob@localhost") == 1).await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<presence/>").await;
    let m = next_message(&mut b).await;
    assert!(m.get_child("x", "jabber:x:oob").is_some(), "{}", xml(&m));
    // The standalone chat state is not worth storing (XEP-0160 / XEP-0085 §5.5).
    assert!(messages(b.sync("after").await).is_empty());
}

#[tokio::test]
async fn a_new_login_on_the_resource_of_a_hibernated_session_gets_its_messages() {
    let s = server(|c| c.mam.default = "never".into()).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<presence/>").await;
    b.sync("p").await;
    b.kill(false);
    chat(&mut a, "bob@localhost", "h1").await;
    a.sync("a1").await;
    // The client lost its resumption state and binds the same resource afresh: the old
    // session ends (conflict) and its unacked message must not be lost.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let shared = s.running.shared.clone();
    wait_until(|| shared.resumable_get(&id).is_none()).await;
    wait_until(|| offline_count(&s, "bob@localhost") == 1).await;
    b.send("<presence/>").await;
    let m = next_message(&mut b).await;
    assert_eq!(body(&m).as_deref(), Some("h1"));
    assert!(messages(b.sync("after").await).is_empty());
}

#[tokio::test]
async fn at_the_session_limit_the_oldest_hibernated_session_makes_room() {
    let s = server(|c| {
        c.limits.max_sessions_per_account = 2;
        c.mam.default = "never".into();
    })
    .await;
    let shared = s.running.shared.clone();
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    // Bound but never available: it holds a place without receiving messages to the bare JID.
    let mut desk = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    let mut phone = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut phone).await;
    phone.send("<presence/>").await;
    phone.sync("p1").await;

    // Both connected: a third is refused (RFC 6120 §7.6.2.2), and told to wait.
    let (mut third, _) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    third
        .send("<iq type='set' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>tablet</resource></bind></iq>")
        .await;
    let r = third.expect("iq").await;
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(&r));
    let e = child(&r, "error").unwrap();
    assert_eq!(e.attr("type"), Some("wait"), "{}", xml(&r));
    assert!(
        e.get_child("resource-constraint", STANZAS).is_some(),
        "{}",
        xml(&r)
    );

    // The phone's connection dies with a message unacked: the session hibernates.
    phone.kill(false);
    let hibernated = || {
        shared
            .router
            .resources("bob@localhost")
            .iter()
            .any(|r| r.resource == "phone" && r.hibernated)
    };
    wait_until(hibernated).await;
    chat(&mut a, "bob@localhost/phone", "while-asleep").await;
    a.sync("a1").await;

    // A new device now binds: the hibernated phone session ends to make room, and what it
    // held is not lost: with no resource available it is stored offline.
    let (mut tablet, _) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    tablet.bind("tablet").await;
    wait_until(|| shared.resumable_get(&id).is_none()).await;
    wait_until(|| offline_count(&s, "bob@localhost") == 1).await;
    assert!(messages(desk.sync("d1").await).is_empty());
    let mut res: Vec<_> = shared
        .router
        .resources("bob@localhost")
        .into_iter()
        .map(|r| r.resource)
        .collect();
    res.sort();
    assert_eq!(res, ["desk", "tablet"]);
    // The phone can no longer resume.
    let (_c, r) = resume(&s, "bob", &id, 0).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
}
