//! XEP-0398 conversion between XEP-0084 PEP avatars and the vCard photo (issue 15, item 3),
//! as clients see it: a PEP avatar becomes the vCard PHOTO and the hash in presence; a vCard
//! photo becomes the PEP data and metadata items; disabling the PEP avatar removes the
//! photo; the `[vcard]` and `[pep]` limits hold without failing the client's request.

mod common;

use common::*;
use herald_proto::Element;
use herald_store::{RosterItem, Subscription};

const VCARD: &str = "vcard-temp";
const UPDATE: &str = "vcard-temp:x:update";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA: &str = "urn:xmpp:avatar:data";
const META: &str = "urn:xmpp:avatar:metadata";

// Small "images" with their SHA-1, computed outside Herald (base64 and sha1sum).
const PHOTO_1: &str = "iVBORw0KGgpoZXJhbGQgYXZhdGFyIG9uZQ==";
const HASH_1: &str = "4688cf5161da0fd9de33d8d4eb9bdbcb8c900405";
const PHOTO_2: &str = "iVBORw0KGgpoZXJhbGQgYXZhdGFyIHR3bw==";
const HASH_2: &str = "6c94f9351d0bef1d9d1068e278c1f96cdb0b3002";

async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |el| {
        el.name() == "iq" && el.attr("id") == Some(id) && el.attr("type") != Some("set")
    })
    .await
}

fn ok(r: &Element) {
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(r));
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

async fn publish(c: &mut RawClient, id: &str, node: &str, item_id: &str, payload: &str) -> Element {
    ask(
        c,
        id,
        &format!(
            "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item_id}'>{payload}</item></publish></pubsub></iq>"
        ),
    )
    .await
}

async fn publish_avatar(c: &mut RawClient, id: &str, b64: &str, hash: &str) {
    ok(&publish(
        c,
        &format!("{id}d"),
        DATA,
        hash,
        &format!("<data xmlns='{DATA}'>{b64}</data>"),
    )
    .await);
    ok(&publish(
        c,
        &format!("{id}m"),
        META,
        hash,
        &format!(
            "<metadata xmlns='{META}'><info id='{hash}' type='image/png' bytes='20'/></metadata>"
        ),
    )
    .await);
}

/// The vCard `to` answers with.
async fn vcard_of(c: &mut RawClient, id: &str, to: &str) -> Element {
    let r = ask(
        c,
        id,
        &format!("<iq type='get' id='{id}' to='{to}'><vCard xmlns='{VCARD}'/></iq>"),
    )
    .await;
    ok(&r);
    r.get_child("vCard", VCARD).cloned().unwrap()
}

fn binval(card: &Element) -> Option<String> {
    card.get_child("PHOTO", VCARD)?
        .get_child("BINVAL", VCARD)
        .map(|b| b.text())
}

/// (item id, payload) of the items of `owner`'s `node`.
async fn items(c: &mut RawClient, id: &str, owner: &str, node: &str) -> Vec<(String, Element)> {
    let r = ask(
        c,
        id,
        &format!("<iq type='get' id='{id}' to='{owner}'><pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub></iq>"),
    )
    .await;
    ok(&r);
    r.get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .map(|i| {
            i.children()
                .filter_map(|it| Some((it.attr("id")?.to_string(), it.children().next()?.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn photo(p: &Element) -> Option<String> {
    p.get_child("x", UPDATE)?
        .get_child("photo", UPDATE)
        .map(|p| p.text())
}

async fn presence_with_photo(c: &mut RawClient, from: &str, hash: &str) -> Element {
    c.wait_for(&format!("presence from {from} with {hash}"), |e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some(from)
            && photo(e).as_deref() == Some(hash)
    })
    .await
}

#[tokio::test]
async fn a_pep_avatar_becomes_the_vcard_photo_and_the_hash_in_presence() {
    let s = TestServer::start().await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    befriend(&s, "alice", "bob");
    let mut b = login_available(&s, "bob").await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    // A vCard with a name already: the conversion keeps it.
    ok(&ask(
        &mut a,
        "v0",
        &format!("<iq type='set' id='v0'><vCard xmlns='{VCARD}'><FN>Alice</FN></vCard></iq>"),
    )
    .await);
    a.send("<presence/>").await;
    b.sync("b0").await;

    // The account says it converts (XEP-0398 §2).
    let info = ask(
        &mut b,
        "d0",
        "<iq type='get' id='d0' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(
        xml(&info).contains("urn:xmpp:pep-vcard-conversion:0"),
        "{}",
        xml(&info)
    );

    publish_avatar(&mut a, "p1", PHOTO_1, HASH_1).await;
    // Bob sees the new hash without Alice's client sending presence again.
    presence_with_photo(&mut b, "alice@localhost/r", HASH_1).await;
    let card = vcard_of(&mut b, "g1", "alice@localhost").await;
    assert_eq!(binval(&card).as_deref(), Some(PHOTO_1), "{}", xml(&card));
    assert_eq!(
        card.get_child("FN", VCARD).map(|f| f.text()).as_deref(),
        Some("Alice")
    );
    assert_eq!(
        card.get_child("PHOTO", VCARD)
            .and_then(|p| p.get_child("TYPE", VCARD))
            .map(|t| t.text())
            .as_deref(),
        Some("image/png")
    );

    // Metadata whose data does not hash to its id changes nothing.
    ok(&publish(
        &mut a,
        "x1",
        DATA,
        "bogus",
        &format!("<data xmlns='{DATA}'>{PHOTO_2}</data>"),
    )
    .await);
    ok(&publish(
        &mut a,
        "x2",
        META,
        "bogus",
        &format!(
            "<metadata xmlns='{META}'><info id='bogus' type='image/png' bytes='20'/></metadata>"
        ),
    )
    .await);
    let card = vcard_of(&mut b, "g2", "alice@localhost").await;
    assert_eq!(binval(&card).as_deref(), Some(PHOTO_1));

    // Disabling the PEP avatar (XEP-0084 §4.5) removes the photo: presence says "none".
    ok(&publish(
        &mut a,
        "x3",
        META,
        "off",
        &format!("<metadata xmlns='{META}'/>"),
    )
    .await);
    presence_with_photo(&mut b, "alice@localhost/r", "").await;
    let card = vcard_of(&mut b, "g3", "alice@localhost").await;
    assert_eq!(binval(&card), None, "{}", xml(&card));
    assert_eq!(
        card.get_child("FN", VCARD).map(|f| f.text()).as_deref(),
        Some("Alice")
    );
}

#[tokio::test]
async fn a_vcard_photo_becomes_the_pep_avatar() {
    let s = TestServer::start().await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    befriend(&s, "alice", "bob");
    let mut a = login_available(&s, "alice").await;
    let mut b = login_available(&s, "bob").await;
    let card = format!(
        "<vCard xmlns='{VCARD}'><FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{PHOTO_2}</BINVAL></PHOTO></vCard>"
    );
    ok(&ask(&mut a, "v1", &format!("<iq type='set' id='v1'>{card}</iq>")).await);

    // A contact reads both nodes (XEP-0084's presence access model).
    let meta = items(&mut b, "m1", "alice@localhost", META).await;
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0].0, HASH_2);
    let info = meta[0].1.get_child("info", META).unwrap();
    assert_eq!(info.attr("id"), Some(HASH_2));
    assert_eq!(info.attr("type"), Some("image/png"));
    // The image's size, not the base64's (25 bytes).
    assert_eq!(info.attr("bytes"), Some("25"));
    let data = items(&mut b, "d1", "alice@localhost", DATA).await;
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].0, HASH_2);
    assert_eq!(data[0].1.text(), PHOTO_2);

    // Setting the same vCard again publishes nothing new (same item, no duplicate).
    ok(&ask(&mut a, "v2", &format!("<iq type='set' id='v2'>{card}</iq>")).await);
    assert_eq!(items(&mut b, "m2", "alice@localhost", META).await.len(), 1);
    // A vCard without photo leaves the PEP avatar alone (XEP-0398 §3.2 converts photos).
    ok(&ask(
        &mut a,
        "v3",
        &format!("<iq type='set' id='v3'><vCard xmlns='{VCARD}'><FN>A</FN></vCard></iq>"),
    )
    .await);
    assert_eq!(
        items(&mut b, "m3", "alice@localhost", META).await[0].0,
        HASH_2
    );
}

#[tokio::test]
async fn conversion_stays_within_the_limits_and_never_fails_the_request() {
    let s = TestServer::start_with(|c| {
        c.vcard.max_bytes = 220;
        c.pep.max_item_bytes = 160;
    })
    .await;
    s.add_user("alice", "pw");
    let mut a = login_available(&s, "alice").await;
    // The image fits PEP's item limit but the vCard with it would exceed [vcard] max_bytes:
    // the publish succeeds, the vCard is unchanged.
    let small = format!(
        "<vCard xmlns='vcard-temp'><FN>{}</FN></vCard>",
        "A".repeat(120)
    );
    ok(&ask(
        &mut a,
        "v0",
        &format!("<iq type='set' id='v0'>{small}</iq>"),
    )
    .await);
    publish_avatar(&mut a, "p1", PHOTO_1, HASH_1).await;
    let card = vcard_of(&mut a, "g1", "alice@localhost").await;
    assert_eq!(binval(&card), None, "{}", xml(&card));

    // A vCard photo whose data item would exceed [pep] max_item_bytes: the vCard is stored,
    // the PEP avatar stays as it was.
    let big = format!(
        "<vCard xmlns='{VCARD}'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>",
        "QUFB".repeat(32)
    );
    ok(&ask(&mut a, "v1", &format!("<iq type='set' id='v1'>{big}</iq>")).await);
    let meta = items(&mut a, "m1", "alice@localhost", META).await;
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0].0, HASH_1);
}
