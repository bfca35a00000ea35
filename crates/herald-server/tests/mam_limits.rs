//! `[mam]` bounds over TCP: concurrent queries per account and in all, the `ids` cap, the page
//! size, `complete` on page boundaries and `<count/>` left out beyond `max_count`. Each checks
//! what the client sees and that another session or account goes on.

mod common;

use common::*;
use herald_proto::Element;
use herald_store::ArchivedMessage;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// `n` messages from `peer` in `user`'s archive, ids `{prefix}{i}`, a millisecond apart
/// (recent: retention would delete old ones).
fn seed(s: &TestServer, user: &str, peer: &str, prefix: &str, n: usize) {
    let t0 = herald_server::xep::delay::now_micros() - 60_000_000;
    let items: Vec<(String, ArchivedMessage, String)> = (0..n)
        .map(|i| {
            let id = format!("{prefix}{i}");
            (
                user.to_owned(),
                ArchivedMessage {
                    id: id.clone(),
                    with: peer.to_owned(),
                    timestamp: t0 + i as i64 * 1000,
                    stanza_xml: format!(
                        "<message xmlns='jabber:client' from='{peer}/r' to='{user}' type='chat'><body>{id}</body></message>"
                    ),
                },
                format!("{peer}/r"),
            )
        })
        .collect();
    s.running.shared.store.archive_batch(&items).unwrap();
}

fn query_xml(qid: &str, fields: &str, rsm: &str) -> String {
    format!(
        "<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>{rsm}</query></iq>"
    )
}

fn rsm(max: usize, cursor: &str) -> String {
    format!("<set xmlns='{RSM}'><max>{max}</max>{cursor}</set>")
}

/// The answer to a query sent earlier: the result bodies and the `<fin/>`, or the error's
/// condition and type.
async fn answer(c: &mut RawClient, qid: &str) -> Result<(Vec<String>, Element), (String, String)> {
    let mut bodies = Vec::new();
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(qid) {
            if el.attr("type") == Some("error") {
                let e = child(&el, "error").expect("error");
                let cond = e
                    .children()
                    .find(|x| x.has_ns(STANZAS) && x.name() != "text")
                    .map(|x| x.name().to_string())
                    .unwrap_or_default();
                return Err((cond, e.attr("type").unwrap_or("").to_string()));
            }
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            let fin = el
                .get_child("fin", MAM)
                .unwrap_or_else(|| panic!("{}", xml(&el)))
                .clone();
            return Ok((bodies, fin));
        }
        if let Some(r) = el.get_child("result", MAM) {
            assert_eq!(r.attr("queryid"), Some(qid), "{}", xml(&el));
            let body = r
                .get_child("forwarded", "urn:xmpp:forward:0")
                .and_then(|f| child(f, "message"))
                .and_then(|m| child(m, "body"))
                .map(|b| b.text())
                .unwrap_or_default();
            bodies.push(body);
        }
    }
}

async fn query(c: &mut RawClient, qid: &str, fields: &str, rsm: &str) -> (Vec<String>, Element) {
    c.send(&query_xml(qid, fields, rsm)).await;
    answer(c, qid)
        .await
        .unwrap_or_else(|e| panic!("{qid} refused: {e:?}"))
}

fn rsm_text(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", RSM)?
        .get_child(name, RSM)
        .map(|e| e.text())
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_query_beyond_the_per_account_limit_waits_and_other_accounts_go_on() {
    let s = TestServer::start_with(|c| c.mam.max_concurrent_per_user = 2).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    seed(&s, "alice@localhost", "carol@localhost", "a", 3);
    seed(&s, "bob@localhost", "carol@localhost", "b", 2);
    let mut r1 = RawClient::login(s.c2s(), "alice", "pw", "r1").await;
    let mut r2 = RawClient::login(s.c2s(), "alice", "pw", "r2").await;
    let mut r3 = RawClient::login(s.c2s(), "alice", "pw", "r3").await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    let queries = &s.running.shared.mam_queries;

    // With every archive reader taken, admitted queries stay in flight.
    let readers = u32::try_from(s.running.shared.cfg.mam.readers).unwrap();
    let held = queries.readers().acquire_many(readers).await.unwrap();
    r1.send(&query_xml("q1", "", "")).await;
    r2.send(&query_xml("q2", "", "")).await;
    wait_until("alice's two queries are admitted", || {
        queries.running("alice@localhost") == 2
    })
    .await;

    // A third of alice's: resource-constraint, to retry later (XEP-0313 leaves it to us).
    r3.send(&query_xml("q3", "", "")).await;
    assert_eq!(
        answer(&mut r3, "q3").await.unwrap_err(),
        ("resource-constraint".into(), "wait".into())
    );
    // bob is not refused: his query is admitted and answered with the others.
    bob.send(&query_xml("qb", "", "")).await;
    wait_until("bob's query is admitted", || {
        queries.running("bob@localhost") == 1
    })
    .await;
    drop(held);
    let (b, fin) = answer(&mut bob, "qb").await.unwrap();
    assert_eq!(b, names("b", 0..2));
    assert_eq!(fin.attr("complete"), Some("true"));
    for (c, qid) in [(&mut r1, "q1"), (&mut r2, "q2")] {
        let (a, _) = answer(c, qid).await.unwrap();
        assert_eq!(a, names("a", 0..3), "{qid}");
    }
    // Answered queries free their slots: the refused session asks again and is served.
    let (a, _) = query(&mut r3, "q3b", "", "").await;
    assert_eq!(a, names("a", 0..3));
    assert_eq!(queries.running("alice@localhost"), 0);
}

#[tokio::test]
async fn a_query_beyond_the_server_limit_waits_and_admitted_ones_are_answered() {
    let s = TestServer::start_with(|c| {
        c.mam.max_concurrent_per_user = 1;
        c.mam.max_concurrent = 2;
    })
    .await;
    let mut clients = Vec::new();
    for u in ["alice", "bob", "dave"] {
        s.add_user(u, "pw");
        seed(&s, &format!("{u}@localhost"), "carol@localhost", u, 2);
        clients.push(RawClient::login(s.c2s(), u, "pw", "r").await);
    }
    let queries = &s.running.shared.mam_queries;
    let readers = u32::try_from(s.running.shared.cfg.mam.readers).unwrap();
    let held = queries.readers().acquire_many(readers).await.unwrap();
    clients[0].send(&query_xml("qa", "", "")).await;
    clients[1].send(&query_xml("qb", "", "")).await;
    wait_until("two queries are admitted", || {
        queries.running("alice@localhost") + queries.running("bob@localhost") == 2
    })
    .await;
    // dave is under his own limit, but the server is full.
    clients[2].send(&query_xml("qd", "", "")).await;
    assert_eq!(
        answer(&mut clients[2], "qd").await.unwrap_err(),
        ("resource-constraint".into(), "wait".into())
    );
    drop(held);
    let (a, _) = answer(&mut clients[0], "qa").await.unwrap();
    assert_eq!(a, names("alice", 0..2));
    let (b, _) = answer(&mut clients[1], "qb").await.unwrap();
    assert_eq!(b, names("bob", 0..2));
    let (d, _) = query(&mut clients[2], "qd2", "", "").await;
    assert_eq!(d, names("dave", 0..2));
}

#[tokio::test]
async fn too_many_ids_is_a_policy_violation_and_the_session_goes_on() {
    let s = TestServer::start_with(|c| c.mam.max_ids = 3).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    seed(&s, "alice@localhost", "carol@localhost", "a", 5);
    seed(&s, "bob@localhost", "carol@localhost", "b", 1);
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let ids = |v: &[&str]| {
        let values: String = v.iter().map(|i| format!("<value>{i}</value>")).collect();
        format!("<field var='ids'>{values}</field>")
    };
    alice
        .send(&query_xml("big", &ids(&["a0", "a1", "a2", "a3"]), ""))
        .await;
    assert_eq!(
        answer(&mut alice, "big").await.unwrap_err(),
        ("policy-violation".into(), "modify".into())
    );
    // Three distinct ids, repeated, are within the cap.
    let (r, _) = query(
        &mut alice,
        "ok",
        &ids(&["a4", "a1", "a4", "a1", "a2", "a1"]),
        "",
    )
    .await;
    assert_eq!(r, ["a1", "a2", "a4"]);
    let (r, _) = query(&mut bob, "bob", "", "").await;
    assert_eq!(r, ["b0"]);
}

#[tokio::test]
async fn a_larger_max_is_clamped_and_complete_is_right_on_page_boundaries() {
    let s = TestServer::start_with(|c| c.mam.max_page = 3).await;
    s.add_user("alice", "pw");
    seed(&s, "alice@localhost", "carol@localhost", "a", 6);
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "r").await;

    // <max>1000</max> gets max_page; the second page ends exactly at the last message and
    // says so, with no empty third page needed.
    let (p1, fin) = query(&mut alice, "p1", "", &rsm(1000, "")).await;
    assert_eq!(p1, names("a", 0..3));
    assert_eq!(fin.attr("complete"), None);
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("6"));
    let last = rsm_text(&fin, "last").unwrap();
    let (p2, fin) = query(
        &mut alice,
        "p2",
        "",
        &rsm(1000, &format!("<after>{last}</after>")),
    )
    .await;
    assert_eq!(p2, names("a", 3..6));
    assert_eq!(fin.attr("complete"), Some("true"));

    // Backward likewise: the last page is not complete, the first one is.
    let (l1, fin) = query(&mut alice, "l1", "", &rsm(3, "<before/>")).await;
    assert_eq!(l1, names("a", 3..6));
    assert_eq!(fin.attr("complete"), None);
    let first = rsm_text(&fin, "first").unwrap();
    let (l2, fin) = query(
        &mut alice,
        "l2",
        "",
        &rsm(3, &format!("<before>{first}</before>")),
    )
    .await;
    assert_eq!(l2, names("a", 0..3));
    assert_eq!(fin.attr("complete"), Some("true"));
}

#[tokio::test]
async fn count_is_left_out_beyond_max_count_and_paging_still_works() {
    let s = TestServer::start_with(|c| c.mam.max_count = 4).await;
    s.add_user("alice", "pw");
    seed(&s, "alice@localhost", "carol@localhost", "c", 3);
    seed(&s, "alice@localhost", "dave@localhost", "d", 3);
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "r").await;

    let (p1, fin) = query(&mut alice, "p1", "", &rsm(4, "")).await;
    assert_eq!(p1.len(), 4);
    assert_eq!(
        rsm_text(&fin, "count"),
        None,
        "six matches, more than max_count"
    );
    assert!(rsm_text(&fin, "first").is_some());
    let last = rsm_text(&fin, "last").unwrap();
    let (p2, fin) = query(
        &mut alice,
        "p2",
        "",
        &rsm(4, &format!("<after>{last}</after>")),
    )
    .await;
    assert_eq!(p2.len(), 2);
    assert_eq!(fin.attr("complete"), Some("true"));
    assert_eq!(rsm_text(&fin, "count"), None);

    // Three match the filter: counted, also on a later page.
    let with = "<field var='with'><value>dave@localhost</value></field>";
    let (w, fin) = query(&mut alice, "w1", with, &rsm(2, "")).await;
    assert_eq!(w, names("d", 0..2));
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("3"));
    let last = rsm_text(&fin, "last").unwrap();
    let (w, fin) = query(
        &mut alice,
        "w2",
        with,
        &rsm(2, &format!("<after>{last}</after>")),
    )
    .await;
    assert_eq!(w, names("d", 2..3));
    assert_eq!(rsm_text(&fin, "count").as_deref(), Some("3"));
    assert_eq!(fin.attr("complete"), Some("true"));
}

#[tokio::test]
async fn logins_go_on_while_every_archive_reader_is_busy() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    seed(&s, "alice@localhost", "carol@localhost", "a", 2);
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let queries = &s.running.shared.mam_queries;
    let readers = u32::try_from(s.running.shared.cfg.mam.readers).unwrap();
    let held = queries.readers().acquire_many(readers).await.unwrap();
    alice.send(&query_xml("stuck", "", "")).await;
    wait_until("alice's query is admitted", || {
        queries.running("alice@localhost") == 1
    })
    .await;
    // bob logs in, reads his roster and is online while alice's query cannot read.
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    bob.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let r = bob.expect("iq").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert!(bob.sync("online").await.is_empty());
    drop(held);
    let (a, _) = answer(&mut alice, "stuck").await.unwrap();
    assert_eq!(a, names("a", 0..2));
}
