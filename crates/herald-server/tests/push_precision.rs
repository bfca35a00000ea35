//! Push precision end to end (crates/herald-push/RULES.md): a device is never woken for its
//! own echo, a burst gets a leading push at once and one catch-up with the true count, and
//! a user whose app servers never answer cannot hold up anybody else's pushes.
//!
//! Clients are raw XML over TCP; the app server is the fake component of `common`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BOB: &str = "bob@localhost";

async fn hibernated(s: &TestServer, user: &str, resource: &str) {
    let shared = s.running.shared.clone();
    wait_until("the session hibernates", || {
        shared
            .router
            .resource(user, resource)
            .is_some_and(|r| r.hibernated)
    })
    .await;
}

#[tokio::test]
async fn a_phone_that_drops_right_after_login_is_not_pushed_for_its_own_echo() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut phone = push_phone(&s, "localhost", "bob", "phone", true).await;
    phone.send("<presence/>").await;
    // The reflection of its own presence arrives; the phone drops before acking it (and
    // the result of its push enable).
    let echo = next_unrequested(&mut phone).await;
    assert_eq!(echo.name(), "presence", "{}", xml(&echo));
    assert_eq!(echo.attr("from"), Some("bob@localhost/phone"));
    phone.kill(true);
    hibernated(&s, BOB, "phone").await;
    // Only what someone else sends wakes it: the first publish is for alice's message.
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "are you there?").await;
    let p = app.next().await;
    assert_eq!(p.count(), 1, "{}", xml(&p.iq));
    assert_eq!(p.body(), Some("New Message!"), "{}", xml(&p.iq));
    assert_eq!(p.priority().as_deref(), Some("high"));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_burst_to_a_sleeping_phone_gets_a_push_at_once_and_one_catch_up() {
    let window = Duration::from_secs(2);
    let (s, mut app) = push_server(|c| c.push.coalesce_window.0 = window).await;
    let phone = push_phone(&s, "localhost", "bob", "phone", true).await;
    phone.kill(true);
    hibernated(&s, BOB, "phone").await;
    let mut a = login_available(&s, "alice").await;
    let start = Instant::now();
    for body in ["one", "two", "three"] {
        chat(&mut a, BOB, body).await;
    }
    let first = app.next().await;
    // The leading push is not held back for batching: it came inside the window.
    assert!(
        start.elapsed() < window,
        "leading push waited for the window"
    );
    assert_eq!(first.count(), 1);
    // The other two are told by one catch-up push with the true count.
    let second = app.next().await;
    assert_eq!(second.count(), 3, "{}", xml(&second.iq));
    assert_eq!(second.body(), Some("New Message!"));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_flood_user_with_dead_app_servers_does_not_delay_another_users_push() {
    let (s, mut app) = push_server(|c| {
        // The flooder's publishes stay unanswered for the whole test.
        c.push.reply_timeout.0 = Duration::from_secs(600);
        c.push.max_pending = 20;
        c.push.max_pending_per_user = 5;
        // Every message leads a window of its own: 200 publishes for 40 messages, ten
        // times the global budget.
        c.push.coalesce_window.0 = Duration::from_millis(1);
    })
    .await;
    // Carol: five registrations whose app server never answers.
    let mut carol = push_phone(&s, "localhost", "carol", "c0", true).await;
    for i in 1..5 {
        carol
            .send(&format!(
                "<iq type='set' id='p{i}'><enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='c{i}'/></iq>"
            ))
            .await;
        assert_eq!(
            next_unrequested(&mut carol).await.attr("type"),
            Some("result")
        );
    }
    for i in 0..5 {
        app.set_reply_for(&format!("c{i}"), AppReply::Silent);
    }
    carol.send("</stream:stream>").await;
    drop(carol);
    let shared = s.running.shared.clone();
    wait_until("carol is offline", || {
        !shared.router.is_online("carol@localhost")
    })
    .await;
    // Bob's phone sleeps.
    let phone = push_phone(&s, "localhost", "bob", "phone", true).await;
    phone.kill(true);
    hibernated(&s, BOB, "phone").await;
    // A stream of messages to carol (stored offline, each pushing every registration).
    let mut a = login_available(&s, "alice").await;
    for i in 0..40 {
        chat(&mut a, "carol@localhost", &format!("flood {i}")).await;
    }
    let shared = s.running.shared.clone();
    wait_until("carol's messages are stored", || {
        shared.store.offline_count("carol@localhost").unwrap_or(0) == 40
    })
    .await;
    // Carol's share went out; everything else of hers waits (owed), nothing is dropped
    // for anybody else.
    let seen = app.settle(&s).await;
    assert_eq!(seen.len(), 5, "carol's share");
    assert!(seen.iter().all(|p| p.node.starts_with('c')));
    let stats = s.running.shared.push.stats().await.unwrap();
    assert_eq!(stats.pending, 5, "carol's share");
    // Bob's push goes out at once, while all of carol's are still unanswered.
    chat(&mut a, BOB, "for bob").await;
    let p = app.next().await;
    assert_eq!(p.node, "phone");
    assert_eq!(p.count(), 1);
    app.assert_quiet(&s).await;
}
