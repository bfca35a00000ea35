//! `/metrics` and `/health` as an operator's scraper sees them (over the plain listener a
//! reverse proxy would use): the counters move after a login and a message.

mod common;
#[path = "common/http.rs"]
mod http;

use std::collections::BTreeMap;

use common::*;

async fn server(metrics: bool) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.http.metrics = metrics;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

/// Every sample of the exposition text, by name with labels.
async fn scrape(s: &TestServer) -> BTreeMap<String, f64> {
    let r = http::request_plain(s.running.http_plain_addr.unwrap(), "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.body).unwrap();
    let mut out = BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, v) = line.rsplit_once(' ').unwrap();
        let base = name.split('{').next().unwrap();
        assert!(typed.contains(base), "{base} has no # TYPE line");
        out.insert(name.to_string(), v.parse().unwrap());
    }
    out
}

/// Scrapes until `name` reaches `want` (a server task updates it after the client saw its
/// part), bounded by WAIT.
async fn until(s: &TestServer, name: &str, want: f64) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = scrape(s).await;
        if m.get(name).copied().unwrap_or(0.0) >= want {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {want}: {m:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn counters_move_after_a_login_and_a_message() {
    let s = server(true).await;
    let before = scrape(&s).await;
    for name in [
        "herald_logins_total",
        "herald_auth_failures_total",
        "herald_stanzas_routed_total",
        "herald_offline_stored_total",
        "herald_offline_delivered_total",
        "herald_archive_writes_total",
        "herald_archive_commits_total",
        "herald_archive_commit_seconds_total",
        "herald_push_publishes_total",
        "herald_push_replies_total{outcome=\"ok\"}",
        "herald_push_registrations_removed_total{reason=\"errors\"}",
        "herald_push_pending",
        "herald_sessions{state=\"live\"}",
        "herald_sessions{state=\"hibernated\"}",
        "herald_connections",
        "herald_s2s_outgoing_connections",
        "herald_uploads_total",
    ] {
        assert_eq!(before.get(name), Some(&0.0), "{name}: {before:?}");
    }
    // The scrape's own connection.
    assert_eq!(before["herald_http_connections"], 1.0);
    let mut a = login_available(&s, "alice").await;
    let m = scrape(&s).await;
    assert_eq!(m["herald_logins_total"], 1.0);
    assert_eq!(m["herald_sessions{state=\"live\"}"], 1.0);
    assert_eq!(m["herald_connections"], 1.0);
    // Bob is offline: the message is archived for both and stored for him.
    chat(&mut a, "bob@localhost", "hello").await;
    let routed = m["herald_stanzas_routed_total"];
    let m = until(&s, "herald_offline_stored_total", 1.0).await;
    assert!(m["herald_stanzas_routed_total"] > routed, "{m:?}");
    let m = until(&s, "herald_archive_writes_total", 2.0).await;
    assert!(m["herald_archive_commits_total"] >= 1.0);
    assert!(m["herald_archive_commit_seconds_total"] > 0.0);
    // Bob logs in and gets it: delivered.
    let mut b = login_available(&s, "bob").await;
    b.wait_for("the stored message", |el| el.name() == "message")
        .await;
    until(&s, "herald_offline_delivered_total", 1.0).await;
    // A wrong password.
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("\0alice\0wrong");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
    ))
    .await;
    c.wait_for("the failure", |el| el.name() == "failure").await;
    let m = scrape(&s).await;
    assert_eq!(m["herald_auth_failures_total"], 1.0);
    assert_eq!(m["herald_logins_total"], 2.0);
    assert_eq!(m["herald_sessions{state=\"live\"}"], 2.0);
}

#[tokio::test]
async fn health_answers_and_metrics_can_be_switched_off() {
    let s = server(true).await;
    let r = http::request_plain(s.running.http_plain_addr.unwrap(), "GET", "/health").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    let s = server(false).await;
    let addr = s.running.http_plain_addr.unwrap();
    assert_eq!(
        http::request_plain(addr, "GET", "/metrics").await.status,
        404
    );
    assert_eq!(
        http::request_plain(addr, "GET", "/health").await.status,
        404
    );
}
