//! Storage bounds over TCP: the per-user byte quotas of the archive and the offline store,
//! the free-space floor of the store's filesystem, what a bounced message leaves in the
//! archives, and retention in bounded batches. Each shows what the sender sees, that what
//! was stored is intact, and that another user is unaffected.

mod common;

use common::*;
use herald_proto::Element;
use herald_store::ArchiveStore;

const MAM: &str = "urn:xmpp:mam:2";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn messages(els: &[Element]) -> Vec<&Element> {
    els.iter().filter(|e| e.name() == "message").collect()
}

fn body(e: &Element) -> String {
    child(e, "body").map(|b| b.text()).unwrap_or_default()
}

/// The condition, type and text of a stanza error.
fn error_of(e: &Element) -> (String, String, String) {
    let err = child(e, "error").unwrap_or_else(|| panic!("no error in {}", xml(e)));
    let cond = err
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let text = err
        .children()
        .find(|c| c.name() == "text")
        .map(|t| t.text())
        .unwrap_or_default();
    (cond, err.attr("type").unwrap_or_default().to_string(), text)
}

/// A chat message whose id and body are `id` followed by `pad` bytes of filler.
async fn padded(c: &mut RawClient, to: &str, id: &str, pad: usize) {
    let filler = "x".repeat(pad);
    c.send(&format!(
        "<message to='{to}' type='chat' id='{id}'><body>{id} {filler}</body></message>"
    ))
    .await;
}

/// The ids (first word of the body) of everything in the client's archive, oldest first.
async fn archived(c: &mut RawClient, qid: &str) -> Vec<String> {
    c.send(&format!(
        "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'><set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query></iq>"
    ))
    .await;
    let mut ids = Vec::new();
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(qid) {
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            return ids;
        }
        if let Some(r) = el.get_child("result", MAM) {
            let m = r
                .children()
                .find_map(|f| f.children().find(|m| m.name() == "message"))
                .unwrap_or_else(|| panic!("{}", xml(&el)));
            ids.push(body(m).split(' ').next().unwrap_or_default().to_string());
        }
    }
}

/// Everything that reached `user`'s resource `a` before a headline it sends itself: errors
/// routed back to it come through the same inbox, so they are all in (a ping's result is
/// written directly and may overtake them).
async fn barrier(c: &mut RawClient, user: &str, id: &str) -> Vec<Element> {
    c.send(&format!(
        "<message to='{user}@localhost/a' type='headline' id='{id}'/>"
    ))
    .await;
    let mut out = Vec::new();
    loop {
        let el = c.element().await;
        if el.name() == "message" && el.attr("id") == Some(id) {
            return out;
        }
        out.push(el);
    }
}

fn users(s: &TestServer, names: &[&str]) {
    for n in names {
        s.add_user(n, "pw");
    }
}

#[tokio::test]
async fn over_the_offline_byte_quota_the_sender_gets_resource_constraint() {
    // About 350 bytes per stored message (body, delay stamp): two fit in 1,000, a third not.
    let s = TestServer::start_with(|c| c.offline.max_bytes_per_user = 1000).await;
    users(&s, &["alice", "bob", "carol"]);
    let mut a = login_available(&s, "alice").await;
    for i in 1..=4 {
        padded(&mut a, "bob@localhost", &format!("m{i}"), 200).await;
    }
    let got = barrier(&mut a, "alice", "s1").await;
    let errs = messages(&got);
    let refused: Vec<_> = errs.iter().filter_map(|e| e.attr("id")).collect();
    assert_eq!(refused, ["m3", "m4"], "{got:?}");
    for e in &errs {
        assert_eq!(e.attr("type"), Some("error"));
        assert_eq!(
            error_of(e),
            (
                "resource-constraint".into(),
                "wait".into(),
                "offline storage is full".into()
            )
        );
    }
    let usage = s
        .running
        .shared
        .store
        .offline_usage("bob@localhost")
        .unwrap();
    assert_eq!(usage.messages, 2);
    assert!(usage.bytes <= 1000, "{usage:?}");

    // Another user's store is not touched by bob's being full.
    padded(&mut a, "carol@localhost", "c1", 200).await;
    assert!(messages(&barrier(&mut a, "alice", "s2").await).is_empty());
    assert_eq!(
        s.running
            .shared
            .store
            .offline_count("carol@localhost")
            .unwrap(),
        1
    );

    // Bob gets exactly what was stored; the refused messages are in nobody's archive.
    let mut b = login_available(&s, "bob").await;
    let got = barrier(&mut b, "bob", "b1").await;
    let ids: Vec<_> = messages(&got)
        .iter()
        .map(|m| body(m).split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(archived(&mut b, "q1").await, ["m1", "m2"]);
    assert_eq!(archived(&mut a, "q2").await, ["m1", "m2", "c1"]);
}

#[tokio::test]
async fn over_the_archive_quota_messages_are_delivered_and_not_archived() {
    // Each archived message is about 300 bytes: a handful fit in 2,000.
    let s = TestServer::start_with(|c| c.mam.max_bytes_per_user = 2000).await;
    users(&s, &["alice", "bob", "carol"]);
    let mut a = login_available(&s, "alice").await;
    let mut b = login_available(&s, "bob").await;
    b.sync("b0").await;
    let mut counts = Vec::new();
    for i in 0..12 {
        padded(&mut a, "bob@localhost/a", &format!("m{i}"), 150).await;
        let m = b.expect("message").await;
        assert!(body(&m).starts_with(&format!("m{i} ")), "{}", xml(&m));
        // A message beyond the quota does not claim to be archived.
        let stamped = m
            .children()
            .any(|c| c.name() == "stanza-id" && c.attr("by") == Some("bob@localhost"));
        // The query waits for bob's archive writes in flight.
        let ids = archived(&mut b, &format!("q{i}")).await;
        assert_eq!(
            stamped,
            ids.last().map(String::as_str) == Some(&*format!("m{i}"))
        );
        counts.push(ids.len());
    }
    // The sender never heard of it: delivered is delivered.
    assert!(messages(&barrier(&mut a, "alice", "a1").await).is_empty());
    // Archiving stopped at the quota and nothing archived was evicted for the newer ones.
    let kept = *counts.last().unwrap();
    assert!((2..12).contains(&kept), "{counts:?}");
    let want: Vec<usize> = (1..=12).map(|n| n.min(kept)).collect();
    assert_eq!(counts, want);
    assert_eq!(
        archived(&mut b, "all").await,
        (0..kept).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let usage = s
        .running
        .shared
        .store
        .archive_usage("bob@localhost")
        .unwrap();
    assert!(usage.bytes <= 2000, "{usage:?}");

    // Carol's archive has its own quota.
    let mut c = login_available(&s, "carol").await;
    c.sync("c0").await;
    padded(&mut a, "carol@localhost/a", "late", 150).await;
    c.expect("message").await;
    assert_eq!(archived(&mut c, "cq").await, ["late"]);
}

#[tokio::test]
async fn a_bounced_message_is_not_archived_for_its_sender() {
    let s = TestServer::start().await;
    users(&s, &["alice", "bob"]);
    let mut a = login_available(&s, "alice").await;
    let mut b = login_available(&s, "bob").await;
    b.sync("b0").await;
    // Bob blocks alice: her message bounces.
    b.send("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>").await;
    b.wait_for("block result", |e| e.attr("id") == Some("blk"))
        .await;
    padded(&mut a, "nobody@localhost", "unknown", 10).await;
    padded(&mut a, "bob@localhost", "blocked", 10).await;
    let got = barrier(&mut a, "alice", "a1").await;
    let errs: Vec<_> = messages(&got)
        .iter()
        .map(|e| (e.attr("id").unwrap_or_default(), error_of(e).0))
        .collect();
    assert_eq!(
        errs,
        [
            ("unknown", "service-unavailable".to_string()),
            ("blocked", "service-unavailable".to_string())
        ]
    );
    b.send("<iq type='set' id='ublk'><unblock xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    b.wait_for("unblock result", |e| e.attr("id") == Some("ublk"))
        .await;
    padded(&mut a, "bob@localhost", "sent", 10).await;
    assert!(messages(&barrier(&mut a, "alice", "a2").await).is_empty());
    b.wait_for("the message", |e| e.name() == "message").await;
    assert_eq!(archived(&mut a, "qa").await, ["sent"]);
    assert_eq!(archived(&mut b, "qb").await, ["sent"]);
}

#[tokio::test]
async fn below_the_free_space_floor_stored_messages_are_refused_until_space_returns() {
    // A floor above any real free space: the first check at start finds it low.
    let s = TestServer::start_with(|c| c.store.min_free_bytes = u64::MAX).await;
    users(&s, &["alice", "bob", "carol"]);
    let space = &s.running.shared.space;
    assert!(space.is_low());
    let mut a = login_available(&s, "alice").await;
    let mut b = login_available(&s, "bob").await;
    b.sync("b0").await;
    // To a connected user (it would be archived) and to an offline one (stored offline).
    padded(&mut a, "bob@localhost", "live", 10).await;
    padded(&mut a, "carol@localhost", "stored", 10).await;
    let got = barrier(&mut a, "alice", "a1").await;
    let errs: Vec<_> = messages(&got)
        .iter()
        .map(|e| (e.attr("id").unwrap_or_default().to_string(), error_of(e)))
        .collect();
    let low = (
        "resource-constraint".to_string(),
        "wait".to_string(),
        "the server is low on storage space".to_string(),
    );
    assert_eq!(
        errs,
        [
            ("live".to_string(), low.clone()),
            ("stored".to_string(), low)
        ]
    );
    // Nothing reached bob, nothing was stored; the server still answers everyone.
    assert!(messages(&barrier(&mut b, "bob", "b1").await).is_empty());
    assert_eq!(
        s.running
            .shared
            .store
            .offline_count("carol@localhost")
            .unwrap(),
        0
    );

    // Space returns (the floor drops below it): writes resume at the next check.
    space.set_min_free(1);
    space.check();
    assert!(!space.is_low());
    padded(&mut a, "bob@localhost", "again", 10).await;
    padded(&mut a, "carol@localhost", "kept", 10).await;
    assert!(messages(&barrier(&mut a, "alice", "a2").await).is_empty());
    assert!(body(&b.expect("message").await).starts_with("again"));
    assert_eq!(archived(&mut b, "qb").await, ["again"]);
    assert_eq!(
        s.running
            .shared
            .store
            .offline_count("carol@localhost")
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn retention_purges_in_batches_until_everything_expired_is_gone() {
    // 25 expired messages for alice and 5 for bob, written before the server starts; with
    // batches of 10 the purge takes four transactions.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.mam.purge_batch = 10;
    {
        let store = herald_store::Store::open(&cfg.data_dir).unwrap();
        let old = 1_000_000; // 1970: long past any max_age
        let mut items = Vec::new();
        for (user, n) in [("alice@localhost", 25), ("bob@localhost", 5)] {
            for i in 0..n {
                items.push((
                    user.to_string(),
                    herald_store::ArchivedMessage {
                        id: format!("{user}-{i}"),
                        with: "carol@localhost".into(),
                        timestamp: old + i,
                        stanza_xml: format!(
                            "<message xmlns='jabber:client' type='chat'><body>old{i}</body></message>"
                        ),
                    },
                    String::new(),
                ));
            }
        }
        store.archive_batch(&items).unwrap();
        assert_eq!(store.archive_usage("alice@localhost").unwrap().messages, 25);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = herald_server::start(cfg).await.unwrap();
    let s = TestServer { running, dir };
    users(&s, &["alice", "bob"]);
    let store = s.running.shared.store.clone();
    wait_until("the expired messages are purged", || {
        store.archive_usage("alice@localhost").unwrap().messages == 0
            && store.archive_usage("bob@localhost").unwrap().messages == 0
    })
    .await;
    // New messages are archived as usual afterwards.
    let mut a = login_available(&s, "alice").await;
    let mut b = login_available(&s, "bob").await;
    b.sync("b0").await;
    padded(&mut a, "bob@localhost", "new", 10).await;
    b.expect("message").await;
    assert_eq!(archived(&mut b, "qb").await, ["new"]);
    assert_eq!(archived(&mut a, "qa").await, ["new"]);
}
