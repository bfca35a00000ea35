//! Backend tests of the SQLite store: the conformance suite on both flavours, plus what only
//! a file store has (persistence, migrations, concurrent processes, locking, permissions).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::conformance::{self, creds, msg};
use crate::sqlite::{DATABASE_FILE, USER_TABLES};
use crate::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn conformance_in_memory() {
    conformance::run_all(&Store::open_in_memory().unwrap());
}

#[test]
fn conformance_file_store() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    conformance::run_all(&store);
}

#[test]
fn conformance_file_store_full_durability_single_reader() {
    let dir = tmp();
    let options = StoreOptions {
        durability: Durability::Full,
        readers: 1,
        ..StoreOptions::default()
    };
    conformance::run_all(&Store::open_with(dir.path(), &options).unwrap());
}

#[test]
fn synchronous_follows_the_durability() {
    let dir = tmp();
    assert_eq!(Store::open(dir.path()).unwrap().synchronous().unwrap(), 1);
    let options = StoreOptions {
        durability: Durability::Full,
        ..StoreOptions::default()
    };
    let full = Store::open_with(dir.path(), &options).unwrap();
    assert_eq!(full.synchronous().unwrap(), 2);
}

#[test]
fn store_is_send_sync_clone_and_clones_share_data() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Store>();
    let dir = tmp();
    let a = Store::open(dir.path()).unwrap();
    let b = a.clone();
    a.create_account("u@d", &creds(1)).unwrap();
    assert!(b.account_exists("u@d").unwrap());
    assert_eq!(a.path(), Some(dir.path().join(DATABASE_FILE).as_path()));
    assert_eq!(Store::open_in_memory().unwrap().path(), None);
}

#[test]
fn in_memory_stores_are_independent() {
    let a = Store::open_in_memory().unwrap();
    let b = Store::open_in_memory().unwrap();
    a.create_account("u@d", &creds(1)).unwrap();
    assert!(!b.account_exists("u@d").unwrap());
}

#[test]
fn reopening_keeps_every_role() {
    let dir = tmp();
    let u = "u@example.test";
    {
        let s = Store::open(dir.path()).unwrap();
        s.create_account(u, &creds(1)).unwrap();
        s.set_roster_item(
            u,
            &RosterItem {
                jid: "c@x".into(),
                name: Some("C".into()),
                subscription: Subscription::Both,
                ask: true,
                groups: vec!["G1".into(), "G2".into()],
            },
        )
        .unwrap();
        s.add_subscription_request(u, "r@x", "<presence type='subscribe'/>", 10)
            .unwrap();
        s.store_offline(u, "<message>hi</message>", 10, u64::MAX)
            .unwrap();
        s.block(u, &["b@x".to_owned()], 100).unwrap();
        s.archive(u, &msg("a1", "c@x", 42), "c@x/r").unwrap();
        s.set_mam_prefs(
            u,
            &MamPrefs {
                default: Some("roster".into()),
                always: vec!["c@x".into()],
                never: vec![],
            },
        )
        .unwrap();
        s.upsert_push_registration(&PushRegistration {
            user: u.into(),
            jid: "push.x".into(),
            node: "n".into(),
            publish_options_xml: None,
            enabled_at: 7,
            resource: Some("phone".into()),
            lang: None,
            error_count: 5,
            last_push: Some(9),
            last_result: Some("ok".into()),
        })
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.credentials(u).unwrap(), Some(creds(1)));
    let (v, items) = s.roster(u).unwrap();
    assert_eq!(v, 1);
    assert_eq!(items[0].groups, vec!["G1".to_owned(), "G2".to_owned()]);
    assert!(items[0].ask);
    assert_eq!(s.subscription_requests(u).unwrap().len(), 1);
    assert_eq!(
        s.offline_messages(u).unwrap()[0].stanza_xml,
        "<message>hi</message>"
    );
    assert!(s.is_blocked(u, "b@x").unwrap());
    let page = s
        .query_archive(
            u,
            &ArchiveQuery {
                with: Some("c@x/r".into()),
                max: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.items, vec![msg("a1", "c@x", 42)]);
    assert_eq!(s.mam_prefs(u).unwrap().default.as_deref(), Some("roster"));
    // Push error counts survive a restart (push issue, item 10).
    assert_eq!(s.push_registrations(u).unwrap()[0].error_count, 5);
}

#[test]
fn migrations_are_recorded_once_per_role() {
    let dir = tmp();
    drop(Store::open(dir.path()).unwrap());
    let s = Store::open(dir.path()).unwrap();
    let rows: Vec<(String, i64)> = s
        .read(|tx| {
            let mut st = tx.prepare("SELECT role, version FROM schema_version ORDER BY role")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap();
    let roles: Vec<&str> = rows.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        vec![
            "accounts",
            "archive",
            "blocking",
            "fast_tokens",
            "invites",
            "muc",
            "offline",
            "pep",
            "private",
            "push",
            "roster",
            "sessions",
            "uploads",
            "vcard"
        ]
    );
    // Each role's latest version (push: 2, the table of removed registrations; archive: 3,
    // the full-JID index then the per-user usage; offline: 2, the per-user usage; muc: 2,
    // the room vCard; fast_tokens: 2, the salt of server-derived tokens).
    let latest = |role: &str| match role {
        "archive" => 3,
        "push" | "offline" | "muc" | "fast_tokens" => 2,
        _ => 1,
    };
    assert!(rows.iter().all(|(r, v)| *v == latest(r)), "{rows:?}");
}

/// A database made before the table of removed registrations gets it at the next open, and
/// keeps its registrations.
#[test]
fn push_removals_are_added_to_an_older_database() {
    use crate::{PushStore, RemovalNote};
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    s.upsert_push_registration(&crate::PushRegistration {
        user: "u@x.test".into(),
        jid: "push.x.test".into(),
        node: "n".into(),
        publish_options_xml: None,
        enabled_at: 1,
        resource: None,
        lang: None,
        error_count: 0,
        last_push: None,
        last_result: None,
    })
    .unwrap();
    drop(s);
    // Back to push schema version 1, as an older Herald left it.
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    raw.execute_batch(
        "DROP TABLE push_removals; UPDATE schema_version SET version = 1 WHERE role = 'push';",
    )
    .unwrap();
    drop(raw);
    let s = Store::open(dir.path()).unwrap();
    let note = RemovalNote {
        removed_at: 7,
        reason: "disabled",
        failed_with: None,
    };
    assert_eq!(
        s.remove_push_registrations("u@x.test", "push.x.test", None, &note)
            .unwrap(),
        1
    );
    assert_eq!(s.removed_push_registrations("u@x.test").unwrap().len(), 1);
}

/// A database from before salted FAST tokens gets the `salt` column at the next open and keeps
/// its tokens (without salt: still checked by their hashed messages).
#[test]
fn fast_tokens_get_a_salt_column_on_an_older_database() {
    use crate::{FastTokenRecord, FastTokenStore};
    let dir = tmp();
    drop(Store::open(dir.path()).unwrap());
    // Back to fast_tokens schema version 1, with one token, as an older Herald left it.
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    raw.execute_batch(&format!(
        "DROP TABLE fast_tokens; {}
         UPDATE schema_version SET version = 1 WHERE role = 'fast_tokens';
         INSERT INTO fast_tokens VALUES ('u@x.test', 'phone', 1, 'HT-SHA-256-NONE', x'0102',
                                         x'0304', 10, 20);",
        include_str!("sql/fast_tokens.sql")
    ))
    .unwrap();
    drop(raw);
    let s = Store::open(dir.path()).unwrap();
    let t = s.fast_tokens("u@x.test", "phone").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].verifier.as_slice(), t[0].salt.as_deref()),
        (&[1u8, 2][..], None)
    );
    let salted = FastTokenRecord {
        client_id: "phone".into(),
        mechanism: "HT-SHA-256-EXPR".into(),
        verifier: Vec::new(),
        responder: Vec::new(),
        salt: Some(vec![9; 16]),
        issued_at: 30,
        expires_at: 40,
        current: true,
    };
    s.issue_fast_token("u@x.test", &salted, 10).unwrap();
    let t = s.fast_tokens("u@x.test", "phone").unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0], salted);
    assert_eq!(t[1].salt, None);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tmp();
    drop(Store::open(dir.path()).unwrap());
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    raw.execute(
        "UPDATE schema_version SET version = 99 WHERE role = 'archive'",
        [],
    )
    .unwrap();
    drop(raw);
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("archive"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = tmp();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x42u8; 4096]).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Corrupt(_))
    ));
}

/// `delete_account` relies on USER_TABLES; a table added to a role without being listed there
/// would keep a deleted user's data.
#[test]
fn user_tables_list_every_table_with_an_account_column() {
    let s = Store::open_in_memory().unwrap();
    let with_account: BTreeSet<String> = s
        .read(|tx| {
            let mut st = tx.prepare(
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c
                 WHERE m.type = 'table' AND c.name = 'account'",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<BTreeSet<String>>>()?)
        })
        .unwrap();
    let listed: BTreeSet<String> = USER_TABLES.iter().map(|t| t.to_string()).collect();
    assert_eq!(with_account, listed);
}

#[cfg(unix)]
#[test]
fn creates_a_private_data_dir_and_database() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp();
    let data = dir.path().join("nested/herald-data");
    Store::open(&data).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(DATABASE_FILE)), 0o600);
}

#[test]
fn wal_mode_is_set_on_the_file() {
    let dir = tmp();
    drop(Store::open(dir.path()).unwrap());
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// The CLI and the server are two processes with their own connections to one file; every
/// write of both must succeed while the other writes.
#[test]
fn two_stores_on_one_file_write_concurrently() {
    let dir = tmp();
    let server = Store::open(dir.path()).unwrap();
    let cli = Store::open(dir.path()).unwrap();
    const N: usize = 200;
    let mut handles = Vec::new();
    for t in 0..2 {
        let s = server.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..N {
                s.archive("srv@d", &msg(&format!("s{t}-{i}"), "peer@d", i as i64), "")
                    .unwrap();
                s.store_offline("srv@d", "<message/>", usize::MAX, u64::MAX)
                    .unwrap();
            }
        }));
    }
    for t in 0..2 {
        let s = cli.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..N {
                s.create_account(&format!("cli{t}-{i}@d"), &creds(1))
                    .unwrap();
                s.set_roster_item(
                    "cli@d",
                    &RosterItem {
                        jid: format!("c{t}-{i}@d"),
                        name: None,
                        subscription: Subscription::Both,
                        ask: false,
                        groups: vec![],
                    },
                )
                .unwrap();
                // Reads interleaved with the other process's writes.
                assert!(s.account_exists(&format!("cli{t}-{i}@d")).unwrap());
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    for s in [&server, &cli] {
        assert_eq!(s.list_accounts().unwrap().len(), 2 * N);
        assert_eq!(s.roster("cli@d").unwrap(), {
            let (v, items) = s.roster("cli@d").unwrap();
            assert_eq!(v, (2 * N) as u64);
            (v, items)
        });
        assert_eq!(s.roster_len("cli@d").unwrap(), 2 * N);
        assert_eq!(s.offline_count("srv@d").unwrap(), 2 * N);
        let page = s
            .query_archive(
                "srv@d",
                &ArchiveQuery {
                    max: 0,
                    count_limit: 2 * N,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.count, Some(2 * N));
    }
}

/// A write lock held elsewhere past the busy timeout is `Busy` (transient), not a generic
/// failure; WAL readers are not blocked by it.
#[test]
fn a_lock_held_past_the_timeout_is_busy_and_reads_continue() {
    let dir = tmp();
    let options = StoreOptions {
        busy_timeout: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), &options).unwrap();
    store.create_account("before@d", &creds(1)).unwrap();

    let mut other = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let err = store.create_account("during@d", &creds(1)).unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.xmpp_condition(), "resource-constraint");
    assert!(!StoreError::NotFound.is_transient());
    assert_eq!(
        StoreError::QuotaExceeded.xmpp_condition(),
        "resource-constraint"
    );
    assert!(store.account_exists("before@d").unwrap());
    assert_eq!(store.list_accounts().unwrap(), vec!["before@d".to_owned()]);
    tx.commit().unwrap();

    store.create_account("during@d", &creds(1)).unwrap();
    assert!(store.account_exists("during@d").unwrap());
}

/// With the default busy timeout, a writer waits for another connection's transaction to end
/// instead of failing: the other side commits once the waiting thread has started.
#[test]
fn a_writer_waits_for_a_short_lock() {
    let dir = tmp();
    let store = Store::open(dir.path()).unwrap();
    let mut other = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO blocklist (account, jid) VALUES ('u@d', 'from-other@d')",
        [],
    )
    .unwrap();
    let started = Arc::new(std::sync::Barrier::new(2));
    let s = store.clone();
    let b = started.clone();
    let writer = std::thread::spawn(move || {
        b.wait();
        s.block("u@d", &["from-store@d".to_owned()], 100)
    });
    started.wait();
    tx.commit().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        store.blocklist("u@d").unwrap(),
        vec!["from-other@d".to_owned(), "from-store@d".to_owned()]
    );
}

#[test]
fn bulk_creates_a_hundred_thousand_accounts() {
    let store = Store::open(tmp().path()).unwrap();
    let batch: Vec<(String, Credentials)> = (0..100_000)
        .map(|i| (format!("user{i:06}@bench.test"), creds(1)))
        .collect();
    assert_eq!(store.create_accounts_bulk(&batch).unwrap(), 100_000);
    assert_eq!(store.create_accounts_bulk(&batch[..10]).unwrap(), 0);
    let list = store.list_accounts().unwrap();
    assert_eq!(list.len(), 100_000);
    assert_eq!(list[0], "user000000@bench.test");
    assert_eq!(list[99_999], "user099999@bench.test");
}

/// The MAM queries must be served by the indexes, not by scanning a user's whole archive
/// or sorting it. Checked on the SQL `query_archive` really generates.
#[test]
fn archive_queries_use_indexes() {
    use crate::archive::{count_query, page_query};
    let store = Store::open_in_memory().unwrap();
    let plan = |(sql, args): (String, Vec<rusqlite::types::Value>)| -> String {
        store
            .read(|tx| {
                let mut st = tx.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows =
                    st.query_map(rusqlite::params_from_iter(&args), |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
            })
            .unwrap()
    };
    let q = |with: Option<&str>, start, end, ids: Option<&[&str]>| ArchiveQuery {
        with: with.map(str::to_owned),
        start,
        end,
        ids: ids.map(|v| v.iter().map(|s| s.to_string()).collect()),
        max: 10,
        ..Default::default()
    };
    let cur = Some((50, 7));
    let cases = [
        (
            page_query("u", &q(None, None, None, None), None, None, false),
            "archive_by_time",
        ),
        (
            page_query("u", &q(None, Some(1), Some(99), None), cur, None, false),
            "archive_by_time",
        ),
        (
            page_query("u", &q(None, Some(1), None, None), None, cur, true),
            "archive_by_time",
        ),
        (
            page_query("u", &q(Some("w"), None, None, None), cur, None, false),
            "archive_by_with",
        ),
        (
            page_query(
                "u",
                &q(Some("w/r"), Some(1), Some(99), None),
                cur,
                cur,
                true,
            ),
            "archive_by_with_full",
        ),
        (
            page_query("u", &q(Some("w/r"), None, None, None), None, None, false),
            "archive_by_with_full",
        ),
        (
            count_query("u", &q(Some("w/r"), None, None, None)),
            "archive_by_with_full",
        ),
        (
            count_query("u", &q(None, None, None, None)),
            "archive_by_time",
        ),
        (
            page_query("u", &q(Some("w"), Some(1), Some(99), None), None, cur, true),
            "archive_by_with",
        ),
        (
            count_query("u", &q(Some("w"), Some(1), Some(99), None)),
            "archive_by_with",
        ),
        (
            count_query("u", &q(None, Some(1), None, None)),
            "archive_by_time",
        ),
        (
            page_query(
                "u",
                &q(Some("w"), Some(1), None, Some(&["a", "b"])),
                cur,
                None,
                false,
            ),
            "archive_by_id",
        ),
        (
            count_query("u", &q(None, None, None, Some(&["a"]))),
            "archive_by_id",
        ),
    ];
    for (query, index) in cases {
        let sql = query.0.clone();
        let p = plan(query);
        // "INDEX name " with the space: archive_by_with must not pass for archive_by_with_full.
        assert!(p.contains(&format!("INDEX {index} ")), "{sql}: {p}");
        assert!(!p.contains("SCAN archive"), "{sql} scans: {p}");
        // A few ids may be sorted; anything else must come out of the index in order.
        if index != "archive_by_id" {
            assert!(!p.contains("TEMP B-TREE"), "{sql} sorts: {p}");
        }
    }
    let retention = plan((crate::archive::PURGE.into(), vec![5.into(), 1000.into()]));
    assert!(retention.contains("archive_by_age"), "{retention}");
    assert!(
        !retention.contains("TEMP B-TREE"),
        "retention sorts: {retention}"
    );
}

/// A database from before the usage tables gets them computed from its rows when opened.
#[test]
fn the_usage_migration_counts_existing_rows() {
    let dir = tmp();
    let (a, b) = ("<message>one</message>", "<message>t\u{e9}o</message>");
    {
        let s = Store::open(dir.path()).unwrap();
        s.store_offline("u@d", a, 10, u64::MAX).unwrap();
        s.store_offline("u@d", b, 10, u64::MAX).unwrap();
        s.store_offline("v@d", a, 10, u64::MAX).unwrap();
        s.archive("u@d", &msg("m1", "p@d", 1), "").unwrap();
        s.archive("u@d", &msg("m2", "p@d", 2), "").unwrap();
    }
    // Back to the schema before the usage tables (offline 1, archive 2), rows kept.
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    raw.execute_batch(
        "DROP TABLE offline_usage; DROP TABLE archive_usage;
         UPDATE schema_version SET version = 1 WHERE role = 'offline';
         UPDATE schema_version SET version = 2 WHERE role = 'archive';",
    )
    .unwrap();
    drop(raw);
    let s = Store::open(dir.path()).unwrap();
    let bytes = |x: &str| x.len() as u64;
    assert_eq!(
        s.offline_usage("u@d").unwrap(),
        Usage {
            messages: 2,
            bytes: bytes(a) + bytes(b)
        }
    );
    assert_eq!(s.offline_usage("v@d").unwrap().messages, 1);
    let arch = msg("m1", "p@d", 1).stanza_xml.len() + msg("m2", "p@d", 2).stanza_xml.len();
    assert_eq!(
        s.archive_usage("u@d").unwrap(),
        Usage {
            messages: 2,
            bytes: arch as u64
        }
    );
    assert_eq!(s.archive_usage("v@d").unwrap(), Usage::default());
}

/// Archive queries have readers of their own: with every one of them held (a MAM storm),
/// a login's reads (credentials, roster) still get a connection at once.
#[test]
fn archive_queries_never_take_a_login_reader() {
    let dir = tmp();
    let options = StoreOptions {
        readers: 1,
        mam_readers: 1,
        ..StoreOptions::default()
    };
    let s = Store::open_with(dir.path(), &options).unwrap();
    s.create_account("u@d", &creds(1)).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let storm = {
        let s = s.clone();
        std::thread::spawn(move || {
            s.read_mam(|_| {
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
                Ok(())
            })
            .unwrap();
        })
    };
    held_rx.recv().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let login = {
        let s = s.clone();
        std::thread::spawn(move || {
            let creds = s.credentials("u@d").unwrap();
            let roster = s.roster("u@d").unwrap();
            done_tx.send((creds.is_some(), roster.1.len())).unwrap();
        })
    };
    // Shared readers would block here until the release below, which never comes first.
    let got = done_rx.recv_timeout(Duration::from_secs(10));
    release_tx.send(()).unwrap();
    storm.join().unwrap();
    login.join().unwrap();
    assert_eq!(got, Ok((true, 0)), "a login waited for the archive reader");
}
