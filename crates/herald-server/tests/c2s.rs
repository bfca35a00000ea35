//! Black-box c2s transcripts over TCP: negotiation errors, authentication, binding, routing
//! between two users, server IQs, and components.

mod common;

use common::*;
use herald_proto::stream::StreamEvent;

/// Alice on `phone` and Bob on `desk`, Bob available.
async fn alice_and_bob() -> (TestServer, RawClient, RawClient) {
    let s = TestServer::start().await;
    s.add_user("alice", "pw-a");
    s.add_user("bob", "pw-b");
    let a = RawClient::login(s.c2s(), "alice", "pw-a", "phone").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw-b", "desk").await;
    b.send("<presence/>").await;
    (s, a, b)
}

#[tokio::test]
async fn two_users_exchange_messages_to_full_and_bare_jids() {
    let (_s, mut a, mut b) = alice_and_bob().await;
    a.send("<message to='bob@localhost/desk' type='chat' id='m1'><body>hi full</body></message>")
        .await;
    let m = b.expect("message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(child(&m, "body").unwrap().text(), "hi full");
    a.send("<message to='bob@localhost' type='chat' id='m2'><body>hi bare</body></message>")
        .await;
    let m = b.expect("message").await;
    assert_eq!(m.attr("to"), Some("bob@localhost"));
    assert_eq!(child(&m, "body").unwrap().text(), "hi bare");
}

#[tokio::test]
async fn a_burst_arrives_complete_and_in_order() {
    let (_s, mut a, mut b) = alice_and_bob().await;
    b.sync("p").await;
    // One write of 200 messages: they reach bob's session faster than it writes, so it
    // writes them in batches; none may be lost, reordered or cut.
    let burst: String = (0..200)
        .map(|i| {
            format!(
                "<message to='bob@localhost/desk' type='chat' id='b{i}'><body>{i}</body></message>"
            )
        })
        .collect();
    a.send(&burst).await;
    for i in 0..200 {
        let m = b.expect("message").await;
        assert_eq!(m.attr("id"), Some(format!("b{i}").as_str()));
        assert_eq!(child(&m, "body").unwrap().text(), i.to_string());
    }
    assert!(b.sync("after").await.is_empty());
}

#[tokio::test]
async fn from_is_stamped_and_spoofing_is_refused() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    b.send("<presence/>").await;
    a.send("<message to='bob@localhost/r' from='alice@localhost'><body>x</body></message>")
        .await;
    assert_eq!(
        b.expect("message").await.attr("from"),
        Some("alice@localhost/r")
    );
    a.send("<message to='bob@localhost/r' from='mallory@localhost/x'><body>x</body></message>")
        .await;
    assert_eq!(a.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn bare_jid_message_goes_to_highest_priority_resources() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut hi1 = RawClient::login(s.c2s(), "bob", "pw", "hi1").await;
    let mut hi2 = RawClient::login(s.c2s(), "bob", "pw", "hi2").await;
    let mut lo = RawClient::login(s.c2s(), "bob", "pw", "lo").await;
    hi1.send("<presence><priority>5</priority></presence>")
        .await;
    hi2.send("<presence><priority>5</priority></presence>")
        .await;
    lo.send("<presence><priority>1</priority></presence>").await;
    // Wait until each sees the others' presence so priorities are recorded.
    lo.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = lo.element().await;
        if el.name() == "iq" {
            break;
        }
    }
    hi1.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        if hi1.element().await.name() == "iq" {
            break;
        }
    }
    hi2.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        if hi2.element().await.name() == "iq" {
            break;
        }
    }
    a.send("<message to='bob@localhost' type='chat'><body>prio</body></message>")
        .await;
    for c in [&mut hi1, &mut hi2] {
        loop {
            let el = c.element().await;
            if el.name() == "message" {
                assert_eq!(child(&el, "body").unwrap().text(), "prio");
                break;
            }
        }
    }
    // The low-priority resource gets nothing: the next thing it sees is its own ping reply.
    lo.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = lo.element().await;
        assert_ne!(
            el.name(),
            "message",
            "low priority resource got {}",
            xml(&el)
        );
        if el.attr("id") == Some("after") {
            break;
        }
    }
}

#[tokio::test]
async fn unknown_user_gets_service_unavailable() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<message to='nobody@localhost' id='x1' type='chat'><body>?</body></message>")
        .await;
    let e = a.expect("message").await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(xml(&e).contains("service-unavailable"), "{}", xml(&e));
    a.send("<iq to='nobody@localhost/r' id='x2' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let e = a.expect("iq").await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(xml(&e).contains("service-unavailable"));
}

#[tokio::test]
async fn server_answers_ping_version_and_disco() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<iq to='localhost' id='p' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = a.expect("iq").await;
    assert_eq!(
        (r.attr("type"), r.attr("id"), r.attr("from")),
        (Some("result"), Some("p"), Some("localhost"))
    );
    a.send("<iq to='localhost' id='v' type='get'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let r = a.expect("iq").await;
    assert!(xml(&r).contains("Herald"));
    a.send("<iq to='localhost' id='d' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = a.expect("iq").await;
    assert!(xml(&r).contains("urn:xmpp:ping"), "{}", xml(&r));
    assert!(
        xml(&r).contains("category=\"server\"") || xml(&r).contains("category='server'"),
        "{}",
        xml(&r)
    );
    a.send("<iq to='localhost' id='i' type='get'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    let r = a.expect("iq").await;
    assert!(xml(&r).contains("push.localhost"), "{}", xml(&r));
    a.send("<iq to='bob@localhost' id='ad' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = a.expect("iq").await;
    assert_eq!(r.attr("from"), Some("bob@localhost"));
    assert!(xml(&r).contains("registered"), "{}", xml(&r));
    a.send("<iq to='localhost' id='u' type='get'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    let r = a.expect("iq").await;
    assert!(xml(&r).contains("service-unavailable"), "{}", xml(&r));
}

#[tokio::test]
async fn bad_namespace_is_invalid_namespace() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").await;
    assert_eq!(c.stream_error().await, "invalid-namespace");
    c.expect_closed().await;
}

#[tokio::test]
async fn unknown_host_is_host_unknown() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("example.org").await;
    assert_eq!(c.stream_error().await, "host-unknown");
}

#[tokio::test]
async fn old_version_is_unsupported() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>").await;
    assert_eq!(c.stream_error().await, "unsupported-version");
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<message><body>x</bod></message>").await;
    assert_eq!(a.stream_error().await, "not-well-formed");
}

#[tokio::test]
async fn a_doctype_is_restricted_xml() {
    let s = TestServer::start().await;
    // Before the stream header: the server answers with its own header and the error.
    let mut c = RawClient::connect(s.c2s()).await;
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>")
        .await;
    assert_eq!(c.stream_error().await, "restricted-xml");
    c.expect_closed().await;
    // Inside an established session.
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<!DOCTYPE message>").await;
    assert_eq!(a.stream_error().await, "restricted-xml");
}

#[tokio::test]
async fn oversized_stanza_is_policy_violation() {
    let s = TestServer::start_with(|c| c.limits.max_stanza_bytes = 8192).await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let big = "x".repeat(10_000);
    a.send(&format!(
        "<message to='alice@localhost'><body>{big}</body></message>"
    ))
    .await;
    assert_eq!(a.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn wrong_password_fails_then_too_many_close_the_stream() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let bad = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "\0alice\0wrong");
    for _ in 0..2 {
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad}</auth>"
        ))
        .await;
        let f = c.expect("failure").await;
        assert!(child(&f, "not-authorized").is_some(), "{}", xml(&f));
    }
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{bad}</auth>"
    ))
    .await;
    let f = c.expect("failure").await;
    assert!(child(&f, "not-authorized").is_some());
    assert_eq!(c.stream_error().await, "policy-violation");
    assert_eq!(
        s.running
            .shared
            .metrics
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn stanzas_before_auth_are_not_authorized() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    c.send("<message to='a@localhost'><body>x</body></message>")
        .await;
    assert_eq!(c.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn encryption_required_hides_mechanisms_and_refuses_plain_auth() {
    let s = TestServer::start_with(|c| c.c2s.require_encryption = true).await;
    s.add_user("alice", "pw");
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    let f = c.expect("features").await;
    let st = child(&f, "starttls").expect("starttls offered");
    assert!(child(st, "required").is_some());
    assert!(child(&f, "mechanisms").is_none(), "{}", xml(&f));
    let creds = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "\0alice\0pw");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    let f = c.expect("failure").await;
    assert!(child(&f, "encryption-required").is_some(), "{}", xml(&f));
}

#[tokio::test]
async fn resource_conflict_replaces_the_old_session() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut old = RawClient::login(s.c2s(), "alice", "pw", "same").await;
    let _new = RawClient::login(s.c2s(), "alice", "pw", "same").await;
    assert_eq!(old.stream_error().await, "conflict");
}

#[tokio::test]
async fn generated_resource_when_none_requested() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let creds = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "\0alice\0pw");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    c.expect("success").await;
    c.decoder.reset();
    c.open("localhost").await;
    let f = c.expect("features").await;
    assert!(child(&f, "bind").is_some());
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let r = c.expect("iq").await;
    let jid = child(child(&r, "bind").unwrap(), "jid").unwrap().text();
    assert!(jid.starts_with("alice@localhost/"), "{jid}");
    assert!(jid.len() > "alice@localhost/".len());
    c.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    assert_eq!(c.expect("iq").await.attr("type"), Some("result"));
}

#[tokio::test]
async fn closing_the_stream_is_answered_cleanly() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("</stream:stream>").await;
    match a.event().await {
        Some(StreamEvent::End) | None => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn component_handshake_and_message_exchange() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let mut comp = RawClient::connect(s.component_addr()).await;
    comp.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.localhost'>").await;
    let id = match comp.event().await {
        Some(StreamEvent::Header(h)) => h.id.unwrap(),
        other => panic!("{other:?}"),
    };
    let digest = herald_server::federation::component::handshake_digest(&id, "s3cret");
    comp.send(&format!("<handshake>{digest}</handshake>")).await;
    assert_eq!(comp.element().await.name(), "handshake");
    a.send("<message to='bot@push.localhost' id='c1'><body>to component</body></message>")
        .await;
    let m = comp.expect("message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/r"));
    comp.send("<message from='bot@push.localhost' to='alice@localhost/r'><body>from component</body></message>").await;
    let m = a.expect("message").await;
    assert_eq!(m.attr("from"), Some("bot@push.localhost"));
    // Without 'from' the stanza is the component's own.
    comp.send("<message to='alice@localhost/r'><body>no from</body></message>")
        .await;
    let m = a.expect("message").await;
    assert_eq!(m.attr("from"), Some("push.localhost"));
    comp.send("<message from='bot@localhost' to='alice@localhost/r'><body>spoof</body></message>")
        .await;
    assert_eq!(comp.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn component_bad_secret_is_not_authorized() {
    let s = TestServer::start().await;
    let mut comp = RawClient::connect(s.component_addr()).await;
    comp.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.localhost'>").await;
    comp.event().await;
    comp.send("<handshake>0000000000000000000000000000000000000000</handshake>")
        .await;
    assert_eq!(comp.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn a_large_element_before_authentication_is_policy_violation() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    // 20 KiB of base64 in an <auth/>: well over the 8 KiB pre-authentication budget, far under
    // the normal 256 KiB stanza limit.
    let big = "A".repeat(20 * 1024);
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{big}</auth>"
    ))
    .await;
    assert_eq!(c.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn a_deep_element_before_authentication_is_policy_violation() {
    let s = TestServer::start().await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let open = "<a>".repeat(10);
    let close = "</a>".repeat(10);
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{open}{close}</auth>"
    ))
    .await;
    assert_eq!(c.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn after_authentication_the_normal_limits_apply() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    // PLAIN login under the pre-authentication limits, then a 100 KiB message to herself.
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    a.send("<presence/>").await;
    let big = "x".repeat(100 * 1024);
    a.send(&format!(
        "<message to='alice@localhost/r' id='big' type='chat'><body>{big}</body></message>"
    ))
    .await;
    let m = a
        .wait_for("the big message", |e| e.name() == "message")
        .await;
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text().len()),
        Some(100 * 1024)
    );
}

/// One PLAIN `<auth/>` on a fresh stream; the SASL answer (`success` or `failure`).
async fn plain_attempt(c: &mut RawClient, user: &str, password: &str) -> herald_proto::Element {
    let creds = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0{user}\0{password}"),
    );
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    c.element().await
}

#[tokio::test]
async fn a_locked_account_refuses_even_the_right_password_from_the_guessing_address_until_the_lock_expires(
) {
    let lock = std::time::Duration::from_millis(800);
    let s = TestServer::start_with(|c| {
        c.c2s.max_auth_failures = 10;
        c.c2s.max_auth_delay = herald_server::config::Dur(std::time::Duration::from_millis(40));
        c.c2s.auth_lockout_failures = 3;
        c.c2s.auth_lockout_time = herald_server::config::Dur(lock);
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    for _ in 0..3 {
        let f = plain_attempt(&mut c, "alice", "wrong").await;
        assert!(child(&f, "not-authorized").is_some(), "{}", xml(&f));
    }
    let locked_at = std::time::Instant::now();
    // Locked: the right password too, on this stream and on a new one.
    let f = plain_attempt(&mut c, "alice", "pw").await;
    assert!(child(&f, "temporary-auth-failure").is_some(), "{}", xml(&f));
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let f = plain_attempt(&mut c, "alice", "pw").await;
    if locked_at.elapsed() < lock {
        assert!(child(&f, "temporary-auth-failure").is_some(), "{}", xml(&f));
    }
    // The owner, from another address, is not locked out by the guesses.
    let mut o = RawClient::connect_from(s.c2s(), [127, 0, 0, 2].into()).await;
    o.open("localhost").await;
    o.expect("features").await;
    assert_eq!(plain_attempt(&mut o, "alice", "pw").await.name(), "success");
    // Another account is not locked.
    let mut b = RawClient::connect(s.c2s()).await;
    b.open("localhost").await;
    b.expect("features").await;
    assert_eq!(plain_attempt(&mut b, "bob", "pw").await.name(), "success");
    // Once the lock expires, the right password gets in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = RawClient::connect(s.c2s()).await;
        c.open("localhost").await;
        c.expect("features").await;
        let f = plain_attempt(&mut c, "alice", "pw").await;
        if f.name() == "success" {
            assert!(locked_at.elapsed() >= lock - std::time::Duration::from_millis(100));
            break;
        }
        assert!(child(&f, "temporary-auth-failure").is_some(), "{}", xml(&f));
        assert!(
            std::time::Instant::now() < deadline,
            "the lock never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
