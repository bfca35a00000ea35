//! `/metrics` and `/health` as an operator's scraper sees them (over the plain listener a
//! reverse proxy would use): the counters move after a login and a message, and every push
//! outcome is counted against the fake app server of tests/push.rs.

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
        // A histogram's samples carry suffixes of the family its # TYPE line names.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| base.strip_suffix(x).filter(|f| typed.contains(*f)))
            .unwrap_or(base);
        assert!(typed.contains(family), "{base} has no # TYPE line");
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
        "herald_archive_commit_seconds_count",
        "herald_archive_commit_seconds_bucket{le=\"+Inf\"}",
        "herald_push_publishes_total",
        "herald_push_outcomes_total{outcome=\"result\"}",
        "herald_push_outcomes_total{outcome=\"dropped\"}",
        "herald_push_event_to_publish_seconds_count",
        "herald_push_publish_to_reply_seconds_count",
        "herald_push_events_dropped_total",
        "herald_push_registrations_removed_total{reason=\"errors\"}",
        "herald_push_pending",
        "herald_sessions{state=\"live\",transport=\"tcp\"}",
        "herald_sessions{state=\"hibernated\"}",
        "herald_connections{transport=\"tcp\"}",
        "herald_connections{transport=\"websocket\"}",
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
    assert_eq!(m["herald_sessions{state=\"live\",transport=\"tcp\"}"], 1.0);
    assert_eq!(m["herald_connections{transport=\"tcp\"}"], 1.0);
    // Bob is offline: the message is archived for both and stored for him.
    chat(&mut a, "bob@localhost", "hello").await;
    let routed = m["herald_stanzas_routed_total"];
    let m = until(&s, "herald_offline_stored_total", 1.0).await;
    assert!(m["herald_stanzas_routed_total"] > routed, "{m:?}");
    let m = until(&s, "herald_archive_writes_total", 2.0).await;
    assert!(m["herald_archive_commits_total"] >= 1.0);
    assert_eq!(
        m["herald_archive_commit_seconds_count"],
        m["herald_archive_commits_total"]
    );
    assert!(m["herald_archive_commit_seconds_sum"] > 0.0);
    // Store calls are timed per role: the login read the account, the message went to the
    // offline store.
    for role in ["AccountStore", "OfflineStore"] {
        let n = format!("herald_store_seconds_count{{role=\"{role}\"}}");
        assert!(m.get(&n).copied().unwrap_or(0.0) >= 1.0, "{n}: {m:?}");
        let inf = format!("herald_store_seconds_bucket{{role=\"{role}\",le=\"+Inf\"}}");
        assert_eq!(m[&inf], m[&n]);
    }
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
    assert_eq!(m["herald_sessions{state=\"live\",transport=\"tcp\"}"], 2.0);
}

#[tokio::test]
async fn incoming_s2s_connections_are_counted_while_open() {
    let s = TestServer::start_with(|c| {
        c.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.s2s.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let name = "herald_s2s_incoming_connections";
    assert_eq!(scrape(&s).await[name], 0.0);
    let peer = RawClient::connect(s.running.s2s_addr.unwrap()).await;
    until(&s, name, 1.0).await;
    drop(peer);
    let deadline = tokio::time::Instant::now() + WAIT;
    while scrape(&s).await[name] != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "{name} stayed up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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

#[tokio::test]
async fn push_outcomes_and_latencies_are_counted() {
    let (s, mut app) = push_server(|c| {
        c.http.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        // Each message opens its own push (no catch-up), and a silent app server is given up
        // on quickly: 3 attempts (the default) 200 ms apart.
        c.push.coalesce_window.0 = std::time::Duration::from_millis(1);
        c.push.reply_timeout.0 = std::time::Duration::from_millis(200);
        c.push.retry_backoff.0 = std::time::Duration::from_millis(50);
    })
    .await;
    let mut phone = push_phone(&s, "localhost", "bob", "phone", false).await;
    phone.send("</stream:stream>").await;
    phone.expect_closed().await;
    wait_until("bob is offline", || {
        !s.running.shared.router.is_online("bob@localhost")
    })
    .await;
    let mut a = login_available(&s, "alice").await;
    app.queue_replies([AppReply::Result, AppReply::wait(), AppReply::cancel()]);
    // A result.
    chat(&mut a, "bob@localhost", "one").await;
    assert_eq!(app.next().await.answered, AppReply::Result);
    until(&s, "herald_push_outcomes_total{outcome=\"result\"}", 1.0).await;
    // A wait error, retried, then the app server's error.
    chat(&mut a, "bob@localhost", "two").await;
    assert_eq!(app.next().await.answered, AppReply::wait());
    assert_eq!(app.next().await.answered, AppReply::cancel());
    until(&s, "herald_push_outcomes_total{outcome=\"cancel\"}", 1.0).await;
    // No answer to any of the three attempts: three timeouts, one push given up.
    app.set_reply(AppReply::Silent);
    chat(&mut a, "bob@localhost", "three").await;
    for _ in 0..3 {
        app.next().await;
    }
    let m = until(&s, "herald_push_outcomes_total{outcome=\"dropped\"}", 1.0).await;
    let o = |k: &str| m[&format!("herald_push_outcomes_total{{outcome=\"{k}\"}}")];
    assert_eq!(
        [
            o("result"),
            o("wait"),
            o("cancel"),
            o("timeout"),
            o("dropped")
        ],
        [1.0, 1.0, 1.0, 3.0, 1.0],
        "{m:?}"
    );
    assert_eq!(m["herald_push_publishes_total"], 6.0);
    assert_eq!(m["herald_push_pending"], 0.0);
    // Every answer was timed; every push a message caused (not the retries) too.
    assert_eq!(m["herald_push_publish_to_reply_seconds_count"], 3.0);
    assert_eq!(
        m["herald_push_publish_to_reply_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    assert!(m["herald_push_publish_to_reply_seconds_sum"] > 0.0);
    assert_eq!(m["herald_push_event_to_publish_seconds_count"], 3.0);
    // The app server answers at once: well under the reply timeout.
    assert_eq!(
        m["herald_push_publish_to_reply_seconds_bucket{le=\"0.1\"}"],
        3.0
    );
    assert_eq!(m["herald_push_events_dropped_total"], 0.0);
    app.assert_quiet(&s).await;
}
