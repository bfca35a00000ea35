//! XEP-0054 vcard-temp, XEP-0153 avatar hashes in presence and XEP-0049 private XML storage,
//! as clients see them over a real connection.

mod common;

use common::*;
use herald_proto::Element;
use herald_store::{RosterItem, Subscription};

const VCARD: &str = "vcard-temp";
const UPDATE: &str = "vcard-temp:x:update";
const PRIVATE: &str = "jabber:iq:private";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

// Two small "images" with their SHA-1, computed outside Herald (Python's hashlib).
const PHOTO_1: &str = "iVBORw0KGgpoZXJhbGQgYXZhdGFyIG9uZQ==";
const HASH_1: &str = "4688cf5161da0fd9de33d8d4eb9bdbcb8c900405";
const PHOTO_2: &str = "iVBORw0KGgpoZXJhbGQgYXZhdGFyIHR3bw==";
const HASH_2: &str = "6c94f9351d0bef1d9d1068e278c1f96cdb0b3002";

fn vcard_with(fn_: &str, photo: Option<&str>) -> String {
    let photo = photo
        .map(|b| format!("<PHOTO><TYPE>image/png</TYPE><BINVAL>{b}</BINVAL></PHOTO>"))
        .unwrap_or_default();
    format!("<vCard xmlns='vcard-temp'><FN>{fn_}</FN>{photo}</vCard>")
}

/// Sends `iq` (whose id is `id`) and returns the answer, skipping anything else.
async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |el| {
        el.name() == "iq" && el.attr("id") == Some(id) && el.attr("type") != Some("set")
    })
    .await
}

/// The error condition and type of an error answer.
fn error_of(r: &Element) -> (String, String) {
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(r));
    let e = child(r, "error").unwrap_or_else(|| panic!("no <error/>: {}", xml(r)));
    let cond = e
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    (cond, e.attr("type").unwrap_or("").to_string())
}

async fn set_vcard(c: &mut RawClient, id: &str, card: &str) -> Element {
    ask(c, id, &format!("<iq type='set' id='{id}'>{card}</iq>")).await
}

/// The `<FN/>` of the vCard `to` answers with ("" for none), asserting a result.
async fn fn_of(c: &mut RawClient, id: &str, to: &str) -> String {
    let r = ask(
        c,
        id,
        &format!("<iq type='get' id='{id}'{to}><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let card = r
        .get_child("vCard", VCARD)
        .unwrap_or_else(|| panic!("no vCard: {}", xml(&r)));
    card.get_child("FN", VCARD)
        .map(|f| f.text())
        .unwrap_or_default()
}

fn befriend(s: &TestServer, a: &str, b: &str) {
    for (u, c) in [(a, b), (b, a)] {
        let item = RosterItem {
            jid: format!("{c}@localhost"),
            name: None,
            subscription: Subscription::Both,
            ask: false,
            groups: vec![],
        };
        s.running
            .shared
            .store
            .set_roster_item(&format!("{u}@localhost"), &item)
            .unwrap();
    }
}

/// The avatar hash in a presence: None without `<x/>` or `<photo/>`, "" for an empty one.
fn photo(p: &Element) -> Option<String> {
    p.get_child("x", UPDATE)?
        .get_child("photo", UPDATE)
        .map(|p| p.text())
}

/// The next available presence from `from` (a full JID's bare part).
async fn presence_from(c: &mut RawClient, from: &str) -> Element {
    c.wait_for(&format!("presence from {from}"), |e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from").is_some_and(|f| f.starts_with(from))
    })
    .await
}

#[tokio::test]
async fn the_owner_sets_and_anyone_reads_the_vcard() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;

    // Never set: an empty vCard, for the owner and for others.
    assert_eq!(fn_of(&mut a, "g0", "").await, "");
    assert_eq!(fn_of(&mut b, "g1", " to='alice@localhost'").await, "");

    let r = set_vcard(&mut a, "s1", &vcard_with("Alice", Some(PHOTO_1))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    // The owner, on no `to` and on her bare JID.
    assert_eq!(fn_of(&mut a, "g2", "").await, "Alice");
    assert_eq!(fn_of(&mut a, "g3", " to='alice@localhost'").await, "Alice");
    // Bob, no contact of hers, reads it whole, photo included, from her bare JID.
    let r = ask(
        &mut b,
        "g4",
        "<iq type='get' id='g4' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(r.attr("from"), Some("alice@localhost"));
    let binval = r
        .get_child("vCard", VCARD)
        .and_then(|v| v.get_child("PHOTO", VCARD))
        .and_then(|p| p.get_child("BINVAL", VCARD))
        .map(|b| b.text());
    assert_eq!(binval.as_deref(), Some(PHOTO_1), "{}", xml(&r));

    // An entity that is no account here (a component, as a remote server would be).
    let mut comp = RawClient::component(s.component_addr(), "push.localhost", "s3cret").await;
    let r = ask(&mut comp, "g5", "<iq type='get' id='g5' from='push.localhost' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert!(xml(&r).contains("Alice"), "{}", xml(&r));

    // No such account: service-unavailable (RFC 6121 §8.5.1).
    let r = ask(
        &mut b,
        "g6",
        "<iq type='get' id='g6' to='ghost@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(error_of(&r).0, "service-unavailable");

    // Only the owner sets it.
    let r = ask(
        &mut b,
        "s2",
        &format!(
            "<iq type='set' id='s2' to='alice@localhost'>{}</iq>",
            vcard_with("Mallory", None)
        ),
    )
    .await;
    assert_eq!(error_of(&r), ("forbidden".into(), "auth".into()));
    assert_eq!(fn_of(&mut b, "g7", " to='alice@localhost'").await, "Alice");
}

#[tokio::test]
async fn a_vcard_beyond_max_bytes_is_refused_and_others_are_unaffected() {
    let s = TestServer::start_with(|c| c.vcard.max_bytes = 1024).await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let r = set_vcard(&mut a, "s1", &vcard_with("Alice", None)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));

    let big = "x".repeat(2000);
    let r = set_vcard(&mut a, "s2", &vcard_with(&big, None)).await;
    assert_eq!(error_of(&r), ("not-acceptable".into(), "modify".into()));
    // Nothing changed, the stream is fine, and Bob stores his.
    assert_eq!(fn_of(&mut a, "g1", "").await, "Alice");
    let r = set_vcard(&mut b, "s3", &vcard_with("Bob", None)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert_eq!(fn_of(&mut a, "g2", " to='bob@localhost'").await, "Bob");

    // A photo that is not base64 has no hash to advertise: bad-request.
    let r = set_vcard(&mut a, "s4", &vcard_with("Alice", Some("*?*"))).await;
    assert_eq!(error_of(&r).0, "bad-request");
    assert_eq!(fn_of(&mut a, "g3", "").await, "Alice");
}

#[tokio::test]
async fn the_vcard_survives_a_restart() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = set_vcard(&mut a, "s1", &vcard_with("Alice", Some(PHOTO_1))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    drop(a);
    let s = s.restart().await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    assert_eq!(fn_of(&mut a, "g1", "").await, "Alice");
    // And the hash is known at once after the restart.
    a.send("<presence/>").await;
    let p = presence_from(&mut a, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_1), "{}", xml(&p));
}

#[tokio::test]
async fn presence_carries_the_photo_hash_and_follows_a_new_photo() {
    let s = TestServer::start().await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    befriend(&s, "alice", "bob");
    befriend(&s, "alice", "carol");
    let mut b = login_available(&s, "bob").await;
    b.sync("b0").await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;

    // No vCard stored: presence passes as sent.
    a.send("<presence><status>one</status></presence>").await;
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p), None, "{}", xml(&p));

    // A photo is set: the server re-broadcasts her presence with its hash, unasked.
    let r = set_vcard(&mut a, "s1", &vcard_with("Alice", Some(PHOTO_1))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_1), "{}", xml(&p));
    assert!(
        xml(&p).contains("one"),
        "the rest of her presence stays: {}",
        xml(&p)
    );
    // Her own resource sees the same.
    let own = presence_from(&mut a, "alice@localhost/r").await;
    assert_eq!(photo(&own).as_deref(), Some(HASH_1), "{}", xml(&own));

    // A presence she sends without <x/>, or with an empty one, gets the hash.
    a.send("<presence><status>two</status></presence>").await;
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_1), "{}", xml(&p));
    a.send("<presence><x xmlns='vcard-temp:x:update'/></presence>")
        .await;
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_1), "{}", xml(&p));
    // An explicit <photo/> is her client's word (XEP-0398 §4): untouched.
    a.send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
        .await;
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(""), "{}", xml(&p));
    a.send("<presence><status>three</status></presence>").await;
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_1), "{}", xml(&p));

    // A new photo: a new hash, again without her sending presence.
    let r = set_vcard(&mut a, "s2", &vcard_with("Alice", Some(PHOTO_2))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_2), "{}", xml(&p));
    assert!(xml(&p).contains("three"), "{}", xml(&p));

    // Carol comes online later: the answer to her probe carries the current hash.
    let mut c = login_available(&s, "carol").await;
    let p = presence_from(&mut c, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_2), "{}", xml(&p));
    // Directed presence (a MUC join, say) carries it too (XEP-0398 §4).
    a.send("<presence to='carol@localhost/a'><status>directed</status></presence>")
        .await;
    let p = c
        .wait_for("alice's directed presence", |e| {
            e.name() == "presence" && xml(e).contains("directed")
        })
        .await;
    assert_eq!(photo(&p).as_deref(), Some(HASH_2), "{}", xml(&p));

    // The photo is removed: contacts learn "no avatar" (an empty <photo/>).
    let r = set_vcard(&mut a, "s3", &vcard_with("Alice", None)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let p = presence_from(&mut b, "alice@localhost/r").await;
    assert_eq!(photo(&p).as_deref(), Some(""), "{}", xml(&p));

    // Bob stored no vCard: his presence never gains an <x/>.
    b.send("<presence><status>bob</status></presence>").await;
    let p = presence_from(&mut a, "bob@localhost/a").await;
    assert_eq!(photo(&p), None, "{}", xml(&p));
}

async fn private_get(c: &mut RawClient, id: &str, item: &str) -> Element {
    ask(
        c,
        id,
        &format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:private'>{item}</query></iq>"),
    )
    .await
}

async fn private_set(c: &mut RawClient, id: &str, item: &str) -> Element {
    ask(
        c,
        id,
        &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>{item}</query></iq>"),
    )
    .await
}

#[tokio::test]
async fn private_storage_round_trip_and_refusals() {
    let s = TestServer::start_with(|c| {
        c.private.max_items = 2;
        c.private.max_bytes_per_item = 512;
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;

    // Nothing stored: the empty element comes back.
    let r = private_get(&mut a, "p0", "<prefs xmlns='x:prefs'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let item = r
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("prefs", "x:prefs"))
        .unwrap_or_else(|| panic!("{}", xml(&r)));
    assert_eq!(item.children().count(), 0);

    let r = private_set(
        &mut a,
        "p1",
        "<prefs xmlns='x:prefs'><nick>Al</nick></prefs>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = private_get(&mut a, "p2", "<prefs xmlns='x:prefs'/>").await;
    let nick = r
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("prefs", "x:prefs"))
        .and_then(|p| p.get_child("nick", "x:prefs"))
        .map(|n| n.text());
    assert_eq!(nick.as_deref(), Some("Al"), "{}", xml(&r));
    // Keyed by name and namespace: another name in the same namespace is another item.
    let r = private_get(&mut a, "p3", "<other xmlns='x:prefs'/>").await;
    assert!(!xml(&r).contains("Al"), "{}", xml(&r));
    // Bob's own storage is his.
    let r = private_get(&mut b, "p4", "<prefs xmlns='x:prefs'/>").await;
    assert!(!xml(&r).contains("Al"), "{}", xml(&r));

    // Someone else's: forbidden, for get and set.
    for typ in ["get", "set"] {
        let r = ask(&mut b, "p5", &format!("<iq type='{typ}' id='p5' to='alice@localhost'><query xmlns='jabber:iq:private'><prefs xmlns='x:prefs'/></query></iq>")).await;
        assert_eq!(error_of(&r), ("forbidden".into(), "auth".into()), "{typ}");
    }
    // Not exactly one element: bad-request.
    let r = private_get(&mut a, "p6", "").await;
    assert_eq!(error_of(&r).0, "bad-request");
    let r = private_set(&mut a, "p7", "<a xmlns='x:a'/><b xmlns='x:b'/>").await;
    assert_eq!(error_of(&r).0, "bad-request");
    // The storage's own namespace, or a stanza's: not-acceptable.
    let r = private_set(&mut a, "p8", "<a/>").await;
    assert_eq!(error_of(&r).0, "not-acceptable");
    let r = private_set(&mut a, "p9", "<a xmlns='jabber:client'/>").await;
    assert_eq!(error_of(&r).0, "not-acceptable");

    // Bounds: bytes per item (not-acceptable), items per user (resource-constraint).
    let big = format!("<big xmlns='x:big'>{}</big>", "x".repeat(600));
    let r = private_set(&mut a, "p10", &big).await;
    assert_eq!(error_of(&r), ("not-acceptable".into(), "modify".into()));
    let r = private_set(&mut a, "p11", "<two xmlns='x:two'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = private_set(&mut a, "p12", "<three xmlns='x:three'/>").await;
    assert_eq!(error_of(&r), ("resource-constraint".into(), "wait".into()));
    // At the bound, an item is still replaced; Bob is not limited by Alice's count.
    let r = private_set(
        &mut a,
        "p13",
        "<prefs xmlns='x:prefs'><nick>A2</nick></prefs>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = private_get(&mut a, "p14", "<prefs xmlns='x:prefs'/>").await;
    assert!(xml(&r).contains("A2"), "{}", xml(&r));
    let r = private_set(&mut b, "p15", "<three xmlns='x:three'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
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

#[tokio::test]
async fn removing_the_account_removes_its_vcard_avatar_and_private_data() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    let r = set_vcard(&mut a, "s1", &vcard_with("Alice", Some(PHOTO_1))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = private_set(
        &mut a,
        "p1",
        "<prefs xmlns='x:prefs'><nick>Al</nick></prefs>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));

    assert_eq!(admin(&s, "user-remove alice@localhost").await, "ok 1");
    a.expect_closed().await;
    // Gone for others at once: no such account.
    let r = ask(
        &mut b,
        "g1",
        "<iq type='get' id='g1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(error_of(&r).0, "service-unavailable");

    // A new account under the JID starts without vCard, avatar or private data.
    s.add_user("alice", "pw2");
    let mut a = RawClient::login(s.c2s(), "alice", "pw2", "r").await;
    assert_eq!(fn_of(&mut a, "g2", "").await, "");
    assert_eq!(fn_of(&mut b, "g3", " to='alice@localhost'").await, "");
    let r = private_get(&mut a, "p2", "<prefs xmlns='x:prefs'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert!(!xml(&r).contains("Al"), "{}", xml(&r));
    a.send("<presence/>").await;
    let own = presence_from(&mut a, "alice@localhost/r").await;
    assert_eq!(photo(&own), None, "{}", xml(&own));
}
