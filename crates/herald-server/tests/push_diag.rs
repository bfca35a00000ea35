//! Push diagnostics end to end, through the admin socket as the CLI drives it
//! (`herald::admin::push_test`, `admin::removed_push`): `herald push test` reports
//! each app server's answer (result, error type and condition, timeout, a local app server
//! that is not connected) with the round-trip time, and `herald push list` shows the
//! registrations the server removed, why and when.
//!
//! The app server is the fake component of `common`; clients are raw XML over TCP.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use herald_push::diag::{TestOutcome, TestResult};

const BOB: &str = "bob@localhost";

/// Bob's phone, logged in, with one registration per node at the fake app server.
async fn bob_with(s: &TestServer, nodes: &[&str]) -> RawClient {
    let mut c = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    for node in nodes {
        iq(
            &mut c,
            &format!("<enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='{node}'/>"),
        )
        .await;
    }
    c
}

async fn iq(c: &mut RawClient, payload: &str) {
    c.send(&format!("<iq type='set' id='q'>{payload}</iq>"))
        .await;
    let r = c
        .wait_for("the answer", |e| {
            e.name() == "iq" && e.attr("id") == Some("q")
        })
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

/// `herald push test USER [JID [NODE]]` as the CLI runs it; results sorted by node.
async fn push_test(
    s: &TestServer,
    user: &str,
    jid: Option<&str>,
    node: Option<&str>,
) -> anyhow::Result<Vec<TestResult>> {
    let cfg = s.running.shared.cfg.clone();
    let wait_cfg = cfg.clone();
    wait_until("admin socket", move || {
        herald_server::admin::admin_socket::socket_path(&wait_cfg).exists()
    })
    .await;
    let user = herald::admin::account_jid(&cfg, user).unwrap();
    let (jid, node) = (jid.map(str::to_string), node.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        herald::admin::push_test(&cfg, &user, jid.as_deref(), node.as_deref())
    })
    .await
    .unwrap()
    .map(|mut r| {
        r.sort_by(|a, b| a.node.cmp(&b.node));
        r
    })
}

fn cancel(condition: &str) -> TestOutcome {
    TestOutcome::Error {
        error_type: "cancel".into(),
        condition: condition.into(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn push_test_reports_result_error_and_timeout_per_registration() {
    let (s, mut app) = push_server(|c| c.push.reply_timeout.0 = Duration::from_millis(700)).await;
    let _bob = bob_with(&s, &["bad", "good", "odd", "silent"]).await;
    app.set_reply_for("bad", AppReply::cancel());
    app.set_reply_for(
        "odd",
        AppReply::Error {
            typ: "auth",
            condition: "forbidden",
        },
    );
    app.set_reply_for("silent", AppReply::Silent);

    let got = push_test(&s, "bob", None, None).await.unwrap();
    let summary: Vec<(&str, String)> = got
        .iter()
        .map(|r| (r.node.as_str(), r.outcome.to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bad", "error cancel/item-not-found".to_string()),
            ("good", "ok".to_string()),
            ("odd", "error auth/forbidden".to_string()),
            ("silent", "timeout".to_string()),
        ]
    );
    assert!(got.iter().all(|r| r.jid == APP_DOMAIN));
    assert!(got[..3].iter().all(|r| r.rtt_us.is_some()), "{got:?}");
    assert_eq!(got[3].rtt_us, None, "a timeout has no round trip");
    // One publish each, no retry (not even of the silent one).
    let mut sent: Vec<String> = app.settle(&s).await.into_iter().map(|p| p.node).collect();
    sent.sort();
    assert_eq!(sent, ["bad", "good", "odd", "silent"]);
    app.assert_quiet(&s).await;
    // The answers count like any other.
    let regs = s.running.shared.store.push_registrations(BOB).unwrap();
    let bad = regs.iter().find(|r| r.node == "bad").unwrap();
    assert_eq!(
        (bad.error_count, bad.last_result.as_deref()),
        (1, Some("item-not-found"))
    );
    let good = regs.iter().find(|r| r.node == "good").unwrap();
    assert_eq!(good.last_result.as_deref(), Some("ok"));

    // Only one app server, only one node.
    let got = push_test(&s, "bob", Some(APP_DOMAIN), Some("good"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].node.as_str(), &got[0].outcome),
        ("good", &TestOutcome::Ok)
    );
    assert_eq!(app.next().await.node, "good");
    app.assert_quiet(&s).await;

    // Nothing to test: a clear refusal, nothing sent.
    let e = push_test(&s, "bob", Some("push.elsewhere.example"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no push registration with push.elsewhere.example"),
        "{e}"
    );
    let e = push_test(&s, "alice", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(e, "alice@localhost has no push registration");
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn push_test_reports_a_local_app_server_that_is_not_connected() {
    let (s, app) = push_server(|_| {}).await;
    let _bob = bob_with(&s, &["phone"]).await;
    drop(app);
    let shared = s.running.shared.clone();
    wait_until("the component is gone", || {
        shared.router.component(APP_DOMAIN).is_none()
    })
    .await;
    let got = push_test(&s, "bob", None, None).await.unwrap();
    assert_eq!(
        got[0].outcome,
        TestOutcome::Error {
            error_type: "wait".into(),
            condition: "remote-server-timeout".into(),
        }
    );
    assert!(got[0].rtt_us.is_some());
    // Our outage is not the app server's error.
    let regs = s.running.shared.store.push_registrations(BOB).unwrap();
    assert_eq!(regs[0].error_count, 0);
}

#[tokio::test]
async fn push_tests_at_once_are_bounded() {
    let (s, mut app) = push_server(|c| c.push.reply_timeout.0 = Duration::from_secs(3)).await;
    let _bob = bob_with(&s, &["silent"]).await;
    app.set_reply(AppReply::Silent);
    let max = herald_push::diag::MAX_TESTS;
    let mut running = Vec::new();
    for _ in 0..max {
        let cfg = s.running.shared.cfg.clone();
        running.push(tokio::task::spawn_blocking(move || {
            let bob = herald::admin::account_jid(&cfg, "bob").unwrap();
            herald::admin::push_test(&cfg, &bob, None, None)
        }));
    }
    // Every one of them has sent its publish: they are all waiting now.
    for _ in 0..max {
        app.next().await;
    }
    let e = push_test(&s, "bob", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many push tests"), "{e}");
    for t in running {
        let got = t.await.unwrap().unwrap();
        assert_eq!(got[0].outcome, TestOutcome::Timeout);
    }
    // Once they are over, a test runs again.
    app.set_reply(AppReply::Result);
    let got = push_test(&s, "bob", None, None).await.unwrap();
    assert_eq!(got[0].outcome, TestOutcome::Ok);
}

#[tokio::test]
async fn push_list_shows_removed_registrations_with_reason_and_time() {
    let (s, mut app) = push_server(|c| c.push.max_errors = 2).await;
    let mut bob = bob_with(&s, &["bad", "good", "tablet", "spare"]).await;
    app.set_reply_for("bad", AppReply::cancel());
    let before = unix_now();

    // Two errors in a row (max_errors): the server removes the registration.
    for n in 1..=2 {
        let got = push_test(&s, "bob", Some(APP_DOMAIN), Some("bad"))
            .await
            .unwrap();
        assert_eq!(got[0].outcome, cancel("item-not-found"), "test {n}");
        app.next().await;
    }
    app.assert_quiet(&s).await;
    // The client disables one, the operator removes another.
    iq(
        &mut bob,
        &format!("<disable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='tablet'/>"),
    )
    .await;
    let store = s.running.shared.store.clone();
    let cfg = s.running.shared.cfg.clone();
    let (c, st) = (cfg.clone(), store.clone());
    let n = tokio::task::spawn_blocking(move || {
        herald::admin::remove_push(&c, &*st, BOB, APP_DOMAIN, Some("spare"))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(n, 1);

    let removed = herald::admin::removed_push(&cfg, &*store, BOB).unwrap();
    let mut rows: Vec<(&str, &str, Option<&str>, u32)> = removed
        .iter()
        .map(|r| {
            (
                r.node.as_str(),
                r.reason.as_str(),
                r.last_result.as_deref(),
                r.error_count,
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (
                "bad",
                "app server errors (last: item-not-found)",
                Some("item-not-found"),
                2
            ),
            ("spare", "removed by the operator", None, 0),
            ("tablet", "disabled by the client", None, 0),
        ]
    );
    let after = unix_now();
    for r in &removed {
        assert_eq!(r.jid, APP_DOMAIN);
        assert!((before..=after).contains(&r.removed_at), "{r:?}");
    }
    // What is left is what `push list` shows above them.
    let left: Vec<String> = store
        .push_registrations(BOB)
        .unwrap()
        .into_iter()
        .map(|r| r.node)
        .collect();
    assert_eq!(left, ["good"]);
    // Pushes to the removed ones stop.
    let got = push_test(&s, "bob", None, None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(app.next().await.node, "good");

    // Older than push.removed_retention: not shown (and purged hourly).
    let mut short = cfg.clone();
    short.push.removed_retention.0 = Duration::ZERO;
    let old = herald_store::PushRemoval {
        removed_at: before - 10,
        ..removed[0].clone()
    };
    store.record_push_removal(&old).unwrap();
    assert_eq!(
        herald::admin::removed_push(&cfg, &*store, BOB)
            .unwrap()
            .len(),
        4
    );
    assert!(herald::admin::removed_push(&short, &*store, BOB)
        .unwrap()
        .iter()
        .all(|r| r.removed_at >= after));
}
