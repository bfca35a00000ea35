//! One MAM page from a 1,000,000-message archive: the page must cost the same whatever the
//! archive holds (issue 14: p99 under 5 ms).
//!
//! The archive is one user's, with 500 correspondents of very unequal weight (the first few
//! have most of the messages, like a phone's real history), a message every ~30 s over a
//! year, stanzas of ~300 bytes. It is built once into `$CARGO_TARGET_TMPDIR/mam-1m` (about
//! 20 s; reused while `COMPLETE` there says it is whole) through the store's own
//! `archive_batch`, 100,000 per transaction.
//!
//! Each query shape runs 2,000 times on random cursors first, and prints p50/p99 of those
//! (criterion's own figures follow): the first page, a page after and before a cursor in
//! the middle, a `with` page after a cursor, and a `start`/`end` window. Queries use the
//! server's defaults: 100 per page (`max_page`), `<count/>` up to 1,000 (`max_count`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use herald_store::{ArchiveQuery, ArchiveStore, ArchivedMessage, Store, StoreOptions};

const N: u64 = 1_000_000;
const PEERS: u64 = 500;
const USER: &str = "me@bench.test";
const T0: i64 = 1_750_000_000_000_000;
const STEP: i64 = 31_000_000;

fn id(i: u64) -> String {
    format!("m{i:07}")
}

/// Skewed: peer 0 gets about a fifth of the messages, most peers a few hundred.
fn peer(i: u64) -> String {
    let x = splitmix(i);
    // match, not is_multiple_of: the workspace still builds with Rust 1.85.
    let p = match (x % 5, x % 3) {
        (0, _) => 0,
        (_, 0) => 1 + (x >> 8) % 9,
        _ => (x >> 16) % PEERS,
    };
    format!("peer{p}@bench.test")
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn message(i: u64) -> (String, ArchivedMessage, String) {
    let with = peer(i);
    let stanza_xml = format!(
        "<message xmlns='jabber:client' from='{with}/phone' to='{USER}' type='chat' id='c{i}'>\
         <body>message number {i}: a line of ordinary chat, about as long as most of them are</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='{}' by='{USER}'/></message>",
        id(i)
    );
    let full = format!("{with}/phone");
    (
        USER.to_owned(),
        ArchivedMessage {
            id: id(i),
            with,
            timestamp: T0 + i as i64 * STEP,
            stanza_xml,
        },
        full,
    )
}

fn archive() -> Store {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mam-1m");
    let done = dir.join("COMPLETE");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open the bench store");
        let t = Instant::now();
        for chunk in 0..N / 100_000 {
            let items: Vec<_> = (chunk * 100_000..(chunk + 1) * 100_000)
                .map(message)
                .collect();
            store.archive_batch(&items).expect("archive a chunk");
        }
        eprintln!("built the 1M-message archive in {:?}", t.elapsed());
        std::fs::write(&done, b"1").expect("mark the archive complete");
    }
    // The server's own reader settings; the page cache is warm after the first runs, as on
    // a server whose archive is in use.
    Store::open_with(&dir, &StoreOptions::default()).expect("open the bench store")
}

fn page(max: usize) -> ArchiveQuery {
    ArchiveQuery {
        max,
        count_limit: 1000,
        ..ArchiveQuery::default()
    }
}

/// A query shape: its query for a random draw.
type Shape = Box<dyn Fn(u64) -> ArchiveQuery>;

/// The query shapes.
fn shapes() -> Vec<(&'static str, Shape)> {
    vec![
        ("first page", Box::new(|_| page(100))),
        (
            "last page (empty before)",
            Box::new(|_| ArchiveQuery {
                before_id: Some(String::new()),
                ..page(100)
            }),
        ),
        (
            "after a cursor in the middle",
            Box::new(|r| ArchiveQuery {
                after_id: Some(id(r % N)),
                ..page(100)
            }),
        ),
        (
            "before a cursor in the middle",
            Box::new(|r| ArchiveQuery {
                before_id: Some(id(r % N)),
                ..page(100)
            }),
        ),
        (
            "with a busy peer, after a cursor",
            Box::new(|r| ArchiveQuery {
                with: Some("peer0@bench.test".into()),
                after_id: Some(id(r % N)),
                ..page(100)
            }),
        ),
        (
            "with a rare peer",
            Box::new(|r| ArchiveQuery {
                with: Some(format!("peer{}@bench.test", 10 + r % (PEERS - 10))),
                ..page(100)
            }),
        ),
        (
            "start/end window of a day",
            Box::new(|r| {
                let start = T0 + (r % N) as i64 * STEP;
                ArchiveQuery {
                    start: Some(start),
                    end: Some(start + 86_400_000_000),
                    ..page(100)
                }
            }),
        ),
    ]
}

fn percentiles(store: &Store, name: &str, q: &dyn Fn(u64) -> ArchiveQuery) {
    let mut times: Vec<Duration> = (0..2000u64)
        .map(|k| {
            let query = q(splitmix(k ^ 0xabcdef));
            let t = Instant::now();
            let p = store.query_archive(USER, &query).expect("query");
            let e = t.elapsed();
            assert!(
                !p.items.is_empty(),
                "{name}: an empty page measures nothing"
            );
            e
        })
        .collect();
    times.sort();
    let at = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    println!(
        "mam page / {name}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn bench(c: &mut Criterion) {
    let store = archive();
    let mut g = c.benchmark_group("mam page (1M archive)");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (name, q) in shapes() {
        percentiles(&store, name, &*q);
        let mut k = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                store.query_archive(USER, &q(splitmix(k))).expect("query")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
