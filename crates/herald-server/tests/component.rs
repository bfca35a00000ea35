//! XEP-0114 components: a failed handshake is slow and ends with `not-authorized`; a
//! component cannot send as a local host or as another configured component.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_proto::stream::StreamEvent;
use herald_server::config::{ComponentEntry, HostEntry};

#[tokio::test]
async fn bad_handshake_is_delayed_and_not_authorized() {
    let delay = Duration::from_millis(400);
    let srv =
        TestServer::start_with(|c| c.c2s.auth_failure_delay = herald_server::config::Dur(delay))
            .await;
    let mut c = RawClient::connect(srv.component_addr()).await;
    c.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.localhost'>").await;
    match c.event().await {
        Some(StreamEvent::Header(_)) => {}
        other => panic!("expected a header, got {other:?}"),
    }
    let sent = Instant::now();
    c.send("<handshake>0000000000000000000000000000000000000000</handshake>")
        .await;
    assert_eq!(c.stream_error().await, "not-authorized");
    assert!(
        sent.elapsed() >= delay,
        "answered after {:?}",
        sent.elapsed()
    );
    c.expect_closed().await;

    // The right secret still works afterwards.
    let _ok = RawClient::component(srv.component_addr(), "push.localhost", "s3cret").await;
}

async fn server_with_nested_domains() -> TestServer {
    TestServer::start_with(|c| {
        c.hosts.push(HostEntry {
            domain: "chat.push.localhost".into(),
            cert: None,
            key: None,
            push: Default::default(),
        });
        c.components.component.push(ComponentEntry {
            domain: "other.push.localhost".into(),
            secret: "other".into(),
        });
    })
    .await
}

#[tokio::test]
async fn component_may_not_send_as_a_local_host() {
    let srv = server_with_nested_domains().await;
    srv.add_user("alice", "pw");
    let mut comp = RawClient::component(srv.component_addr(), "push.localhost", "s3cret").await;
    comp.send("<message from='admin@chat.push.localhost' to='alice@localhost' type='chat'><body>hi</body></message>").await;
    assert_eq!(comp.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn component_may_not_send_as_another_component() {
    let srv = server_with_nested_domains().await;
    srv.add_user("alice", "pw");
    let mut comp = RawClient::component(srv.component_addr(), "push.localhost", "s3cret").await;
    comp.send("<message from='x@other.push.localhost' to='alice@localhost' type='chat'><body>hi</body></message>").await;
    assert_eq!(comp.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn component_may_send_as_its_own_jids() {
    let srv = server_with_nested_domains().await;
    srv.add_user("alice", "pw");
    let mut alice = RawClient::login(srv.c2s(), "alice", "pw", "phone").await;
    let mut comp = RawClient::component(srv.component_addr(), "push.localhost", "s3cret").await;
    comp.send("<message from='bot@push.localhost' to='alice@localhost/phone' type='chat'><body>hi</body></message>").await;
    let m = alice.expect("message").await;
    assert_eq!(m.attr("from"), Some("bot@push.localhost"));
    // The nested component itself may still send as its own domain.
    let mut other =
        RawClient::component(srv.component_addr(), "other.push.localhost", "other").await;
    other.send("<message from='x@other.push.localhost' to='alice@localhost/phone' type='chat'><body>yo</body></message>").await;
    let m = alice.expect("message").await;
    assert_eq!(m.attr("from"), Some("x@other.push.localhost"));
}
