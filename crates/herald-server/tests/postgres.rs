//! The server on PostgreSQL (`[store] backend = "postgres"`), end to end: accounts created by
//! the operator's admin code land in PostgreSQL, a client authenticates against the SCRAM
//! keys stored there, a message to an offline user is stored there and delivered after a
//! restart of the server. Needs `HERALD_TEST_POSTGRES_URL` (`.ci/run` starts a throwaway
//! server and sets it, e.g. `postgres://herald@127.0.0.1:55432/postgres`); without it the
//! test prints a notice and checks nothing. Each test gets a database of its own, dropped
//! at the end.

mod common;
#[path = "common/pg.rs"]
mod pg;

use common::*;
use pg::*;
use postgres::NoTls;

fn count(url: &str, table: &str) -> i64 {
    off_runtime(|| {
        let mut c = postgres::Client::connect(url, NoTls).unwrap();
        c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_logins_and_offline_messages_live_in_postgres_across_a_restart() {
    let Some(db) = database("e2e") else { return };
    let url = db.url.clone();
    let s = TestServer::start_with(|c| {
        c.store.backend = "postgres".into();
        c.store.url = url;
        c.store.pool_size = 4;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    assert_eq!(
        count(&db.url, "accounts"),
        2,
        "accounts are PostgreSQL rows"
    );
    assert!(
        !s.running
            .shared
            .cfg
            .data_dir
            .join("herald.sqlite3")
            .exists(),
        "no SQLite file is made"
    );

    let mut a = login_available(&s, "alice").await;
    chat(&mut a, "bob@localhost", "while-you-were-away").await;
    // The session handles its stanzas in order: once the roster answers, the message before
    // it is stored.
    a.send("<iq type='get' id='barrier'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    a.expect("iq").await;
    assert_eq!(count(&db.url, "offline_messages"), 1);

    let s = s.restart().await;
    let mut b = login_available(&s, "bob").await;
    let m = b.expect("message").await;
    assert_eq!(m.attr("id"), Some("while-you-were-away"), "{}", xml(&m));
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_against_the_keys_in_postgres() {
    let Some(db) = database("auth") else { return };
    let url = db.url.clone();
    let s = TestServer::start_with(|c| {
        c.store.backend = "postgres".into();
        c.store.url = url;
    })
    .await;
    s.add_user("carol", "right");
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"\0carol\0wrong",
    );
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
    ))
    .await;
    let f = c.expect("failure").await;
    assert!(
        f.get_child("not-authorized", "urn:ietf:params:xml:ns:xmpp-sasl")
            .is_some(),
        "{}",
        xml(&f)
    );
    // The right one works.
    RawClient::login(s.c2s(), "carol", "right", "r").await;
}
