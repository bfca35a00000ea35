//! `[limits]` connection counts over TCP: a connection beyond a limit gets `policy-violation`
//! while the sessions already there go on, and a freed slot can be used again.

mod common;

use std::net::IpAddr;

use common::*;

/// A pre-authentication connection: stream opened, features received (so the server counts
/// it), nothing more.
async fn pre_auth(s: &TestServer) -> RawClient {
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    c
}

/// How many times the server has slowed a client for its inbound rate.
fn throttled(s: &TestServer) -> u64 {
    s.running
        .shared
        .metrics
        .c2s_throttled
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_third_unauthenticated_connection_is_refused_and_logins_go_on() {
    let s = TestServer::start_with(|c| c.limits.max_unauthenticated_per_ip = 2).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    let lo: IpAddr = [127, 0, 0, 1].into();
    let first = pre_auth(&s).await;
    let _second = pre_auth(&s).await;
    assert_eq!(s.running.shared.conns.of_ip(lo).1, 2);

    let mut third = RawClient::connect(s.c2s()).await;
    assert_eq!(third.stream_error().await, "policy-violation");
    third.expect_closed().await;

    // The logged-in session is untouched.
    assert!(alice.sync("still-there").await.is_empty());

    // One pre-auth connection leaves: its slot is free for a login.
    drop(first);
    wait_until("the closed connection is no longer counted", || {
        s.running.shared.conns.of_ip(lo).1 < 2
    })
    .await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    assert!(bob.sync("bob-in").await.is_empty());
    assert!(alice.sync("alice-still").await.is_empty());
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_refused() {
    let s = TestServer::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    s.add_user("alice", "pw");
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    let other = pre_auth(&s).await;
    let lo: IpAddr = [127, 0, 0, 1].into();
    assert_eq!(s.running.shared.conns.of_ip(lo).0, 2);
    let mut third = RawClient::connect(s.c2s()).await;
    assert_eq!(third.stream_error().await, "policy-violation");
    assert!(alice.sync("ok").await.is_empty());
    drop(other);
    wait_until("the closed connection is no longer counted", || {
        s.running.shared.conns.of_ip(lo).0 < 2
    })
    .await;
    let mut again = pre_auth(&s).await;
    again.send("</stream:stream>").await;
}

#[tokio::test]
async fn start_raises_the_descriptor_limit_and_knows_when_max_connections_does_not_fit() {
    let _s = TestServer::start().await;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    assert_eq!(
        herald_transport::fd::fd_shortfall(10_000, 1024),
        Some(1024 - 64)
    );
    assert_eq!(herald_transport::fd::fd_shortfall(10_000, 1 << 20), None);
    assert_eq!(herald_transport::fd::fd_shortfall(960, 1024), None);
    assert_eq!(herald_transport::fd::fd_shortfall(961, 1024), Some(960));
}

#[tokio::test]
async fn a_client_over_its_stanza_rate_is_read_slower_loses_nothing_and_still_receives() {
    let s = TestServer::start_with(|c| {
        c.limits.c2s_stanzas_per_second = 20;
        c.limits.c2s_stanza_burst = 50;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    alice.send("<presence/>").await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    let started = std::time::Instant::now();
    // 90 pings in one write: 50 fit the burst, 40 more take two seconds at 20/s.
    let flood: String = (1..=90)
        .map(|i| format!("<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"))
        .collect();
    alice.send(&flood).await;
    bob.send("<message to='alice@localhost/phone' id='hello'><body>hi</body></message>")
        .await;
    let mut next = 1;
    let mut got_message_at = None;
    while next <= 90 {
        let el = alice.element().await;
        match el.name() {
            "iq" => {
                // Every ping is answered, in order: nothing is dropped.
                assert_eq!(el.attr("id"), Some(format!("p{next}").as_str()));
                assert_eq!(el.attr("type"), Some("result"));
                next += 1;
            }
            "message" => got_message_at = Some(next),
            _ => {}
        }
    }
    // Reading is paused, not the session: bob's message reached alice while her own
    // stanzas waited.
    let at = got_message_at.expect("bob's message did not arrive");
    assert!(
        at < 90,
        "bob's message came only after the flood (at ping {at})"
    );
    // Lower bound only: a slower machine only makes it longer.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "90 stanzas at 20/s with a burst of 50 took {:?}",
        started.elapsed()
    );
    assert!(throttled(&s) >= 1);
    // Bob, under his own rate, is not slowed by alice's.
    assert!(bob.sync("bob-fine").await.is_empty());
}

/// Opens a raw connection from `src`, sends a stream header and reads: true if the server
/// answered (admitted), false if it closed the socket without a byte (over the rate).
async fn admitted_from(addr: std::net::SocketAddr, src: IpAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(std::net::SocketAddr::new(src, 0)).unwrap();
    let mut tcp = sock.connect(addr).await.unwrap();
    // A refused connection may already be closed: the write may fail, the read tells.
    let _ = tcp
        .write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the server neither answered nor closed");
    matches!(n, Ok(n) if n > 0)
}

#[tokio::test]
async fn new_connections_over_the_rate_are_closed_while_other_addresses_and_sessions_go_on() {
    let s = TestServer::start_with(|c| {
        c.limits.connection_rate_per_ip = 1;
        c.limits.connection_burst_per_ip = 10;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    let flooder: IpAddr = [127, 0, 0, 2].into();
    // One after another, each closed before the next: the open-connection limits never
    // apply, only the rate. The burst of 10 passes (one more if a second went by).
    let mut admitted = 0;
    for _ in 0..30 {
        if !admitted_from(s.c2s(), flooder).await {
            break;
        }
        admitted += 1;
    }
    assert!(
        (10..=12).contains(&admitted),
        "{admitted} connections admitted before the first refusal"
    );
    // The logged-in session is untouched, and another address still gets in.
    assert!(alice.sync("still-there").await.is_empty());
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    assert!(bob.sync("bob-in").await.is_empty());
}

#[tokio::test]
async fn reading_the_archive_flat_out_is_metered_like_sending() {
    let s = TestServer::start_with(|c| {
        c.limits.c2s_stanzas_per_second = 50;
        c.limits.c2s_stanza_burst = 50;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    bob.send("<presence/>").await;
    {
        let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
        let batch: String = (0..40)
            .map(|i| format!("<message to='bob@localhost' type='chat'><body>m{i}</body></message>"))
            .collect();
        alice.send(&batch).await;
        assert!(alice.sync("sent").await.is_empty());
    }
    let mut got = 0;
    while got < 40 {
        if bob.element().await.name() == "message" {
            got += 1;
        }
    }
    let before = throttled(&s);
    // Twenty queries of 40 results: twenty stanzas sent, well inside bob's burst of 50, but
    // each weighs 1 + 4 for its results: 100 in all, which the burst and what refills while
    // they run (50/s) do not cover.
    for q in 0..20 {
        bob.send(&format!(
            "<iq type='set' id='q{q}'><query xmlns='urn:xmpp:mam:2' queryid='q{q}'/></iq>"
        ))
        .await;
        let mut results = 0;
        loop {
            let el = bob.element().await;
            if el.name() == "presence" {
                continue;
            }
            if el.name() == "iq" {
                assert_eq!(el.attr("type"), Some("result"));
                break;
            }
            results += 1;
        }
        // Nothing is dropped: every page is whole.
        assert_eq!(results, 40);
    }
    assert!(bob.sync("after").await.is_empty());
    assert!(
        throttled(&s) > before,
        "twenty archive pages of 40 were not metered"
    );
}

#[tokio::test]
async fn reading_a_rooms_archive_flat_out_is_metered_too() {
    let s = TestServer::start_with(|c| {
        c.limits.c2s_stanzas_per_second = 50;
        c.limits.c2s_stanza_burst = 50;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    const ROOM: &str = "tea@conference.localhost";
    async fn join(c: &mut RawClient, nick: &str) {
        let to = format!("{ROOM}/{nick}");
        c.send(&format!(
            "<presence to='{to}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
        c.wait_for("the self-presence", |e| {
            e.name() == "presence" && e.attr("from") == Some(to.as_str())
        })
        .await;
    }
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    join(&mut alice, "alice").await;
    let batch: String = (0..40)
        .map(|i| format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"))
        .collect();
    alice.send(&batch).await;
    alice
        .wait_for("the last message back", |e| {
            e.get_child("body", "jabber:client")
                .is_some_and(|b| b.text() == "m39")
        })
        .await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    join(&mut bob, "bob").await;
    let before = throttled(&s);
    // Twenty queries asking for the default page of 50: twenty stanzas, inside bob's burst,
    // but each weighs 1 + 5 for the page it asks for, 120 in all.
    for q in 0..20 {
        let id = format!("q{q}");
        bob.send(&format!(
            "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'/></iq>"
        ))
        .await;
        let mut results = 0;
        loop {
            let el = bob
                .wait_for("results and fin", |e| {
                    e.attr("id") == Some(id.as_str()) || e.has_child("result", "urn:xmpp:mam:2")
                })
                .await;
            if el.name() == "iq" {
                assert_eq!(el.attr("type"), Some("result"));
                break;
            }
            results += 1;
        }
        assert_eq!(results, 40, "every page is whole");
    }
    assert!(bob.sync("after").await.is_empty());
    assert!(
        throttled(&s) > before,
        "twenty room archive pages were not metered"
    );
}
