//! `herald migrate --from sqlite:PATH --to postgres:URL`, run as an operator would: a SQLite
//! installation made with the CLI is copied into a fresh PostgreSQL database, the counts are
//! printed and match, and the same CLI configured with `backend = "postgres"` then sees the
//! accounts. The copy needs `HERALD_TEST_POSTGRES_URL` (`.ci/run` sets it; without it the
//! test prints a notice and checks only the argument errors).

mod common;

use common::*;
use postgres::NoTls;

/// A database created for the test, dropped with the guard; its URL.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin_url, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn database(test: &str) -> Option<Database> {
    let Ok(admin_url) = std::env::var("HERALD_TEST_POSTGRES_URL") else {
        eprintln!("{test}: skipped, HERALD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let name = format!("herald_{test}_{}", std::process::id());
    let mut c = postgres::Client::connect(&admin_url, NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let base = admin_url.split('?').next().unwrap_or(&admin_url);
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    let url = format!("{prefix}/{name}");
    Some(Database {
        admin_url,
        name,
        url,
    })
}

#[test]
fn bad_arguments_are_refused_before_anything_is_opened() {
    let e = Env::new();
    assert!(e
        .fails(&[
            "migrate",
            "--from",
            "/tmp/x",
            "--to",
            "postgres:postgres://h/db"
        ])
        .contains("--from must be sqlite:PATH"));
    assert!(e
        .fails(&["migrate", "--from", "sqlite:/tmp/x", "--to", "mysql://h/db"])
        .contains("--to must be postgres:URL"));
}

#[test]
fn a_sqlite_installation_is_copied_and_counted() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    e.ok(&["roster", "subscribe", "alice@localhost", "bob@localhost"]);
    let Some(db) = database("migrate") else {
        return;
    };
    let from = format!("sqlite:{}", e.data().display());
    let to = format!("postgres:{}", db.url);
    let out = e.ok(&["migrate", "--from", &from, "--to", &to]);
    assert!(out.contains("every count matches"), "{out}");
    let line = |table: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
    };
    assert_eq!(line("accounts"), Some(vec!["2", "2"]), "{out}");
    assert_eq!(line("roster_items"), Some(vec!["2", "2"]), "{out}");

    // The same CLI on PostgreSQL sees what was copied.
    let pg = Env::with(&format!(
        "[components]\nlisten = \"\"\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        db.url
    ));
    assert_eq!(pg.ok(&["user", "list"]), "alice@localhost\nbob@localhost\n");
    assert!(pg
        .ok(&["roster", "list", "alice"])
        .contains("bob@localhost"));

    // A second copy into the now filled database is refused and changes nothing.
    assert!(e
        .fails(&["migrate", "--from", &from, "--to", &to])
        .contains("already has 2 accounts"));
}
