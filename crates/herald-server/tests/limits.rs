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
