//! The conformance suite and backend tests on PostgreSQL. They need a server: set
//! `HERALD_TEST_POSTGRES_URL` (e.g. `postgres://herald@127.0.0.1:55432/postgres`, as `.ci/run`
//! does); without it each test prints a notice and passes without checking anything.
//!
//! Each test works in its own schema (named after the test and the process), created fresh
//! and dropped at the end, so the tests run in parallel on one database.

use std::sync::Arc;

use postgres::NoTls;

use crate::conformance::{self, creds, msg};
use crate::*;

const URL_VAR: &str = "HERALD_TEST_POSTGRES_URL";

/// A store in a fresh schema, dropped with the guard.
struct Fresh {
    store: PgStore,
    url: String,
    schema: String,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        // Left behind on a failure (to look at), dropped on success.
        if !std::thread::panicking() {
            if let Ok(mut c) = postgres::Client::connect(&self.url, NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
            }
        }
    }
}

fn fresh(name: &str) -> Option<Fresh> {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("{name}: skipped, {URL_VAR} is not set (no PostgreSQL to test against)");
        return None;
    };
    let schema = format!("t_{name}_{}", std::process::id());
    let mut c = postgres::Client::connect(&url, NoTls).expect("connect to the test database");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    let mut options = PgOptions::new(&url);
    options.schema = Some(schema.clone());
    options.pool_size = 4;
    let store = PgStore::open(&options).expect("open the store");
    Some(Fresh { store, url, schema })
}

macro_rules! sections {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            if let Some(f) = fresh(stringify!($name)) {
                conformance::$name(&f.store);
            }
        }
    )*};
}

// Every section of `conformance::run_all`, one test (and schema) each.
sections!(
    accounts,
    roster,
    subscription_requests,
    offline,
    sessions,
    blocking,
    archive_filters,
    archive_paging,
    archive_ties,
    archive_paging_without_count,
    mam_prefs,
    push,
    push_removals,
    delete_account_removes_everything,
    purge,
    offline_usage,
    archive_usage,
    purge_in_batches,
    muc_rooms,
    vcards,
    private_items,
    invites,
    uploads,
    fast_tokens,
);

/// The whole suite in one schema, in `run_all`'s order, exactly as SQLite runs it.
#[test]
fn conformance_run_all() {
    if let Some(f) = fresh("run_all") {
        conformance::run_all(&f.store);
    }
}

#[test]
fn reopening_applies_no_migration_twice_and_keeps_data() {
    let Some(f) = fresh("reopen") else { return };
    f.store.create_account("u@d", &creds(1)).unwrap();
    let mut options = PgOptions::new(&f.url);
    options.schema = Some(f.schema.clone());
    let again = PgStore::open(&options).unwrap();
    assert!(again.account_exists("u@d").unwrap());
    let mut c = postgres::Client::connect(&f.url, NoTls).unwrap();
    let n: i64 = c
        .query_one(
            &format!(
                "SELECT COUNT(*) FROM {}.schema_version WHERE version > 0",
                f.schema
            ),
            &[],
        )
        .unwrap()
        .get(0);
    // One row per role, each at its latest version.
    assert_eq!(n, 14);
}

#[test]
fn a_bad_schema_name_or_url_is_an_error_not_a_panic() {
    let mut options = PgOptions::new("postgres://u@127.0.0.1:1/db");
    options.schema = Some("x; DROP TABLE accounts".into());
    assert!(matches!(
        PgStore::open(&options),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        PgStore::open(&PgOptions::new("not a url ===")),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn an_unreachable_server_is_unavailable() {
    let mut options = PgOptions::new("postgres://herald@127.0.0.1:1/herald");
    options.connect_timeout = std::time::Duration::from_millis(300);
    let err = PgStore::open(&options).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// SQLite serialises writers; here the per-user lock must: 16 threads storing offline
/// messages at once never get past the bound together.
#[test]
fn concurrent_offline_stores_respect_the_bound() {
    let Some(f) = fresh("offline_race") else {
        return;
    };
    let store = Arc::new(f.store.clone());
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            std::thread::spawn(move || {
                (0..5)
                    .filter(|j| {
                        s.store_offline("u@race", &format!("<m n='{i}-{j}'/>"), 10, u64::MAX)
                            .is_ok()
                    })
                    .count()
            })
        })
        .collect();
    let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(stored, 10);
    assert_eq!(store.offline_messages("u@race").unwrap().len(), 10);
    assert_eq!(store.offline_usage("u@race").unwrap().messages, 10);
}

/// The archive's group commit writer on PostgreSQL: concurrent writes all commit, a
/// duplicate id fails alone.
#[test]
fn group_commit_on_postgres() {
    let Some(f) = fresh("group_commit") else {
        return;
    };
    let store = Arc::new(f.store.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let w = Arc::new(group_commit::ArchiveWriter::start(
            store.clone(),
            std::time::Duration::ZERO,
        ));
        let mut tasks = Vec::new();
        for i in 0..100 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let id = if i == 99 {
                    "id-0".to_string()
                } else {
                    format!("id-{i}")
                };
                let (done, wait) = tokio::sync::oneshot::channel();
                w.submit(
                    "a@x".into(),
                    msg(&id, "b@x", i),
                    "b@x/r".into(),
                    Box::new(move |r| {
                        let _ = done.send(r);
                    }),
                )
                .await;
                wait.await.unwrap()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, 99);
    let page = store
        .query_archive(
            "a@x",
            &ArchiveQuery {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.items.len(), 99);
    assert_eq!(store.archive_usage("a@x").unwrap().messages, 99);
}

/// Every SQLite table has its PostgreSQL counterpart with the same columns (the push
/// tables' rowid is their `seq` there): what the copy relies on, and what a new role must
/// keep when it adds a table to one backend.
#[test]
fn both_backends_have_the_same_tables_and_columns() {
    let Some(f) = fresh("schemas") else { return };
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(crate::sqlite::DATABASE_FILE)).unwrap();
    let mut c = postgres::Client::connect(&f.url, NoTls).unwrap();
    for table in crate::pg::copy_tables_for_test(&conn) {
        let (name, mut want) = table;
        if name == "push_registrations" || name == "push_removals" {
            want.push("seq".into());
        }
        want.sort();
        let mut got: Vec<String> = c
            .query(
                "SELECT column_name::TEXT FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2",
                &[&f.schema, &name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        got.sort();
        assert_eq!(got, want, "columns of {name}");
    }
}

/// `copy_from_sqlite`: an installation filled through the role traits reads back the same
/// through the PostgreSQL store, counts match, new ids follow the copied ones, and a second
/// copy into the now non-empty store is refused.
#[test]
fn a_sqlite_installation_copies_into_postgres() {
    let Some(f) = fresh("copy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path()).unwrap();
    let u = "u@copy.test";
    src.create_account(u, &creds(7)).unwrap();
    src.create_account("v@copy.test", &creds(8)).unwrap();
    let item = RosterItem {
        jid: "v@copy.test".into(),
        name: Some("V".into()),
        subscription: Subscription::Both,
        ask: false,
        groups: vec!["b".into(), "a".into()],
    };
    src.set_roster_item(u, &item).unwrap();
    src.set_roster_item(u, &item).unwrap();
    src.add_subscription_request(u, "w@x.test", "<presence type='subscribe'/>", 10)
        .unwrap();
    let first = src
        .store_offline(u, "<message id='o1'/>", 10, 1 << 20)
        .unwrap();
    src.store_offline(u, "<message id='o2'/>", 10, 1 << 20)
        .unwrap();
    src.delete_offline(u, &[first]).unwrap();
    for i in 0..5 {
        src.archive(u, &msg(&format!("a{i}"), "v@copy.test", 100), "")
            .unwrap();
    }
    src.block(u, &["bad@x.test".to_string()], 10).unwrap();
    for (node, at) in [("late", 200), ("early", 100)] {
        src.upsert_push_registration(&PushRegistration {
            user: u.into(),
            jid: "push.x.test".into(),
            node: node.into(),
            publish_options_xml: None,
            enabled_at: at,
            resource: Some("phone".into()),
            lang: None,
            error_count: 2,
            last_push: Some(5),
            last_result: Some("ok".into()),
        })
        .unwrap();
    }
    let limits = PepLimits {
        max_nodes: 10,
        max_bytes: 1 << 20,
    };
    for id in ["1", "2", "3"] {
        let it = PepItem {
            id: id.into(),
            xml: format!("<p n='{id}'/>"),
        };
        src.pep_publish(u, "n", Some("cfg"), Some(&it), 10, limits)
            .unwrap();
    }
    src.set_vcard(
        u,
        &StoredVcard {
            xml: "<vCard/>".into(),
            photo_hash: Some("abc".into()),
        },
    )
    .unwrap();

    let mut seen = Vec::new();
    let copied = f
        .store
        .copy_from_sqlite(dir.path(), |t, done, total| {
            seen.push((t.to_owned(), done, total))
        })
        .unwrap();
    for t in &copied {
        assert_eq!(t.source, t.target, "{t:?}");
    }
    let rows = |name: &str| copied.iter().find(|t| t.table == name).unwrap().target;
    assert_eq!(rows("accounts"), 2);
    assert_eq!(rows("archive"), 5);
    assert_eq!(rows("offline_messages"), 1);
    assert!(seen.contains(&("archive".to_string(), 5, 5)));

    let dst = &f.store;
    assert_eq!(dst.credentials(u).unwrap(), src.credentials(u).unwrap());
    assert_eq!(dst.roster(u).unwrap(), src.roster(u).unwrap());
    assert_eq!(dst.roster(u).unwrap().0, 2, "the roster version is kept");
    assert_eq!(
        dst.subscription_requests(u).unwrap(),
        src.subscription_requests(u).unwrap()
    );
    assert_eq!(
        dst.offline_messages(u).unwrap(),
        src.offline_messages(u).unwrap()
    );
    assert_eq!(dst.offline_usage(u).unwrap(), src.offline_usage(u).unwrap());
    let all = ArchiveQuery {
        max: 100,
        count_limit: 100,
        ..Default::default()
    };
    assert_eq!(
        dst.query_archive(u, &all).unwrap(),
        src.query_archive(u, &all).unwrap()
    );
    assert_eq!(dst.archive_usage(u).unwrap(), src.archive_usage(u).unwrap());
    assert_eq!(dst.blocklist(u).unwrap(), src.blocklist(u).unwrap());
    assert_eq!(
        dst.push_registrations(u).unwrap(),
        src.push_registrations(u).unwrap()
    );
    assert_eq!(dst.pep_nodes(u).unwrap(), src.pep_nodes(u).unwrap());
    assert_eq!(
        dst.pep_items(u, "n", &[], None).unwrap(),
        src.pep_items(u, "n", &[], None).unwrap()
    );
    assert_eq!(dst.vcard(u).unwrap(), src.vcard(u).unwrap());

    // Identities continue after the copied rows: no id is handed out twice.
    let next = dst
        .store_offline(u, "<message id='o3'/>", 10, 1 << 20)
        .unwrap();
    assert!(next > dst.offline_messages(u).unwrap()[0].id);
    dst.archive(u, &msg("late", "v@copy.test", 100), "")
        .unwrap();
    let ids: Vec<String> = dst
        .query_archive(u, &all)
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids.last().map(String::as_str), Some("late"), "{ids:?}");

    let again = f.store.copy_from_sqlite(dir.path(), |_, _, _| {});
    assert!(matches!(again, Err(StoreError::Invalid(_))), "{again:?}");
}
