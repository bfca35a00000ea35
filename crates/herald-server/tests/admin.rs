//! Account changes made by the command line reaching running sessions, through the admin
//! socket the CLI uses (`herald user remove`, `herald user passwd`): live and hibernated
//! (XEP-0198) sessions end, resumption is refused, and a removed account keeps nothing.
//!
//! Barriers are XEP-0199 pings and the admin socket's reply (it answers once the sessions
//! are over); the one state only the server sees (a session hibernated after its socket
//! died) is polled, bounded by `WAIT`.

mod common;

use std::time::Duration;

use common::*;
use herald_proto::Element;
use herald_server::config::Dur;
use herald_server::Config;
use herald_store::ArchiveQuery;

const SM: &str = "urn:xmpp:sm:3";
const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

async fn server(f: impl FnOnce(&mut Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        // No server-initiated `<r/>`: transcripts stay exact.
        c.stream_management.request_after = 100_000;
        c.stream_management.request_idle = Dur(Duration::from_secs(3600));
        f(c);
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

/// Sends one request over the admin socket, as the CLI does; returns the server's reply.
async fn admin(s: &TestServer, line: &str) -> String {
    let cfg = s.running.shared.cfg.clone();
    wait_until("admin socket", || {
        herald_server::admin::admin_socket::socket_path(&cfg).exists()
    })
    .await;
    let line = line.to_string();
    tokio::task::spawn_blocking(move || herald::admin::notify(&cfg, &line))
        .await
        .unwrap()
        .expect("the admin socket answers")
}

/// `<enable resume='true'/>`; returns the resumption id.
async fn enable(c: &mut RawClient) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = c.element().await;
    assert!(e.is("enabled", SM), "{}", xml(&e));
    e.attr("id").expect("resumption id").to_string()
}

/// Authenticates as `user` on a new connection and asks to resume `previd`; the answer.
async fn resume(s: &TestServer, user: &str, password: &str, previd: &str) -> Element {
    let (mut c, _) = RawClient::authenticate(s.c2s(), user, password).await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='1'/>"
    ))
    .await;
    c.element().await
}

fn messages(els: Vec<Element>) -> Vec<Element> {
    els.into_iter().filter(|e| e.name() == "message").collect()
}

/// The stream error's condition and text.
async fn stream_error(c: &mut RawClient) -> (String, String) {
    loop {
        let el = c.element().await;
        if el.name() != "error" || !el.children().any(|x| x.has_ns(STREAMS)) {
            continue;
        }
        let cond = el
            .children()
            .find(|x| x.has_ns(STREAMS) && x.name() != "text")
            .map(|x| x.name().to_string())
            .unwrap_or_default();
        let text = el
            .get_child("text", STREAMS)
            .map(|t| t.text())
            .unwrap_or_default();
        return (cond, text);
    }
}

/// Bob's phone: SM with resumption, available, `m1` from Alice received and never acked;
/// then its socket dies and the session hibernates; `m2` is queued while it sleeps.
async fn hibernated_phone(s: &TestServer, a: &mut RawClient) -> String {
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let id = enable(&mut b).await;
    b.send("<presence/>").await;
    chat(a, "bob@localhost/phone", "m1").await;
    assert_eq!(b.expect("message").await.attr("id"), Some("m1"));
    b.sync("before-kill").await;
    b.kill(false);
    let shared = s.running.shared.clone();
    wait_until("sessions ended", || {
        shared
            .router
            .resources("bob@localhost")
            .iter()
            .any(|r| r.resource == "phone" && r.hibernated)
    })
    .await;
    chat(a, "bob@localhost/phone", "m2").await;
    assert!(messages(a.sync("queued").await).is_empty());
    id
}

#[tokio::test]
async fn removing_a_user_ends_its_hibernated_session_and_keeps_nothing_of_it() {
    let s = server(|c| c.mam.default = "always".into()).await;
    let shared = s.running.shared.clone();
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let id = hibernated_phone(&s, &mut a).await;
    let mut desk = RawClient::login(s.c2s(), "bob", "pw", "desk").await;

    assert_eq!(admin(&s, "user-remove bob@localhost").await, "ok 2");
    let (cond, text) = stream_error(&mut desk).await;
    assert_eq!(
        (cond.as_str(), text.as_str()),
        ("not-authorized", "account removed")
    );
    desk.expect_closed().await;
    assert!(shared.router.resources("bob@localhost").is_empty());

    // What the sleeping session held goes back to its sender (the archived m1 too: the
    // archive went with the account), and nothing is stored for Bob.
    let mut bounced = Vec::new();
    for _ in 0..2 {
        let m = a.expect("message").await;
        assert_eq!(m.attr("type"), Some("error"), "{}", xml(&m));
        let e = child(&m, "error").unwrap();
        assert_eq!(e.attr("type"), Some("cancel"), "{}", xml(&m));
        assert!(
            e.get_child("service-unavailable", STANZAS).is_some(),
            "{}",
            xml(&m)
        );
        bounced.push(m.attr("id").unwrap_or_default().to_string());
    }
    bounced.sort();
    assert_eq!(bounced, ["m1", "m2"]);
    let store = &*shared.store;
    assert!(!store.account_exists("bob@localhost").unwrap());
    assert_eq!(store.offline_count("bob@localhost").unwrap(), 0);
    let q = ArchiveQuery {
        max: 10,
        count_limit: 10,
        ..ArchiveQuery::default()
    };
    assert_eq!(
        store.query_archive("bob@localhost", &q).unwrap().count,
        Some(0)
    );

    // A message to the removed JID: RFC 6121 §8.5.1, no such account.
    chat(&mut a, "bob@localhost", "m3").await;
    let m = a.expect("message").await;
    assert_eq!(m.attr("id"), Some("m3"));
    let e = child(&m, "error").unwrap();
    assert_eq!(e.attr("type"), Some("cancel"), "{}", xml(&m));
    assert!(e.get_child("service-unavailable", STANZAS).is_some());

    // A new account under the same JID inherits nothing: the old session is not resumable,
    // and no h of it is remembered.
    s.add_user("bob", "pw2");
    let r = resume(&s, "bob", "pw2", &id).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(
        r.get_child("item-not-found", STANZAS).is_some(),
        "{}",
        xml(&r)
    );
    assert_eq!(r.attr("h"), None, "{}", xml(&r));
    // … and it is an account again: a message for it is stored while it is offline.
    chat(&mut a, "bob@localhost", "m4").await;
    assert!(messages(a.sync("after").await).is_empty());
    assert_eq!(store.offline_count("bob@localhost").unwrap(), 1);
}

#[tokio::test]
async fn a_password_change_ends_every_session_and_hands_their_queues_on() {
    let s = server(|c| c.mam.default = "never".into()).await;
    let shared = s.running.shared.clone();
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let id = hibernated_phone(&s, &mut a).await;
    // Available too: it ends with the others, so it is no place for their queues.
    let mut desk = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    desk.send("<presence/>").await;
    desk.sync("d1").await;

    let jid = herald::admin::account_jid(&shared.cfg, "bob").unwrap();
    herald::admin::set_password(&*shared.store, &jid, "new").unwrap();
    assert_eq!(admin(&s, "password-changed bob@localhost").await, "ok 2");
    let (cond, text) = stream_error(&mut desk).await;
    assert_eq!(
        (cond.as_str(), text.as_str()),
        ("not-authorized", "password changed")
    );
    desk.expect_closed().await;
    assert!(shared.router.resources("bob@localhost").is_empty());

    // The sleeping session's queue went offline, as on any end: the account still exists.
    assert_eq!(shared.store.offline_count("bob@localhost").unwrap(), 2);
    assert!(messages(a.sync("nothing-bounced").await).is_empty());
    // Resumption is over; logging in with the new password is not.
    let r = resume(&s, "bob", "new", &id).await;
    assert!(r.is("failed", SM), "{}", xml(&r));
    assert!(
        r.get_child("item-not-found", STANZAS).is_some(),
        "{}",
        xml(&r)
    );
    let mut b = RawClient::login(s.c2s(), "bob", "new", "phone").await;
    b.send("<presence/>").await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            b.expect("message")
                .await
                .attr("id")
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(got, ["m1", "m2"]);
}

#[tokio::test]
async fn admin_requests_for_unknown_accounts_change_nothing() {
    let s = server(|_| {}).await;
    assert_eq!(
        admin(&s, "user-remove ghost@localhost").await,
        "error no such user"
    );
    assert_eq!(
        admin(&s, "password-changed ghost@localhost").await,
        "error no such user"
    );
    // Accounts without sessions: nothing to end, and the removal is done.
    assert_eq!(admin(&s, "password-changed alice@localhost").await, "ok 0");
    assert_eq!(admin(&s, "user-remove alice@localhost").await, "ok 0");
    assert!(!s
        .running
        .shared
        .store
        .account_exists("alice@localhost")
        .unwrap());
}
