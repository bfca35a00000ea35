//! The server on PostgreSQL (`[store] backend = "postgres"`), end to end: accounts created by
//! the operator's admin code land in PostgreSQL, a client authenticates against the SCRAM
//! keys stored there, a message to an offline user is stored there and delivered after a
//! restart of the server. Needs `HERALD_TEST_POSTGRES_URL` (`.ci/run` starts a throwaway
//! server and sets it, e.g. `postgres://herald@127.0.0.1:55432/postgres`); without it the
//! test prints a notice and checks nothing. Each test gets a database of its own, dropped
//! at the end.

mod common;

use common::*;
use postgres::NoTls;

/// Runs a call of the synchronous client on a thread of its own: it blocks on a runtime of
/// its own, which tokio forbids on the test's runtime threads.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A database created for one test, dropped with the guard.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        off_runtime(|| {
            if let Ok(mut c) = postgres::Client::connect(&self.admin_url, NoTls) {
                let _ = c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        })
    }
}

/// A fresh database on the test server, or `None` (with a notice) without one. The URL's
/// database part is replaced, so the variable must be `postgres://…/DBNAME` form.
fn database(test: &str) -> Option<Database> {
    let Ok(admin_url) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        eprintln!("{test}: skipped, HERALD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let name = format!("herald_{test}_{}", std::process::id());
    off_runtime(|| {
        let mut c = postgres::Client::connect(&admin_url, NoTls).expect("connect");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    });
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url.as_str(), String::new()),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    let url = format!("{prefix}/{name}{query}");
    Some(Database {
        admin_url,
        name,
        url,
    })
}

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
