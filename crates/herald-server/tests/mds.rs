//! XEP-0490 message displayed synchronization wired to push (issue 15, item 5; RULES.md
//! §14): a desktop publishes "displayed up to" markers to the account's
//! `urn:xmpp:mds:displayed:0` PEP node and a sleeping phone's badge follows.
//!
//! The marker reaches the push task before the publish is answered (the PEP hook runs
//! first), so `FakeAppServer::assert_quiet` after the answer checks the marker's effect.
//!
//! Server assist (XEP-0490 §4.5): the marker rides in the message that tells the contact
//! (a XEP-0333 `<displayed/>`); the contact and the carbon copy never see it, the account's
//! node has it, and the phone's badge follows as for a published marker.

mod common;

#[path = "common/pep.rs"]
mod pepkit;

use std::time::Duration;

use common::*;
use herald_proto::Element;

const BOB: &str = "bob@localhost";
const ALICE: &str = "alice@localhost";

/// The next message a client gets (presences and `<r/>` skipped).
async fn message(c: &mut RawClient) -> Element {
    loop {
        let el = next_unrequested(c).await;
        if el.name() == "message" {
            return el;
        }
    }
}

/// The archive id bob's server gave a message (its `<stanza-id by='bob@localhost'>`).
fn stanza_id(m: &Element) -> String {
    m.children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(BOB))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id by {BOB}: {}", xml(m)))
        .to_owned()
}

/// Publishes the MDS item for `chat` (XEP-0490 §3) and waits for the answer.
async fn mark_displayed(c: &mut RawClient, chat: &str, by: &str, id: &str) {
    c.send(&format!(
        "<iq type='set' id='mds'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='urn:xmpp:mds:displayed:0'><item id='{chat}'>\
         <displayed xmlns='urn:xmpp:mds:displayed:0'>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='{by}' id='{id}'/></displayed>\
         </item></publish></pubsub></iq>"
    ))
    .await;
    loop {
        let el = next_unrequested(c).await;
        if el.name() == "iq" && el.attr("id") == Some("mds") {
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            return;
        }
    }
}

/// Bob's desktop, online and available.
async fn desktop(s: &TestServer) -> RawClient {
    let mut d = RawClient::login(s.c2s(), "bob", "pw", "desk").await;
    d.send("<presence/>").await;
    d
}

#[tokio::test]
async fn displayed_on_the_desktop_clears_the_sleeping_phones_badge() {
    // The badge update goes out at once only when no coalescing window is open (§6):
    // a 1 ms window has closed by the time the desktop reads the message.
    let (s, mut app) = push_server(|c| c.push.coalesce_window.0 = Duration::from_millis(1)).await;
    // The phone app is closed: its registration has no session (push rule b).
    let mut phone = push_phone(&s, "localhost", "bob", "phone", false).await;
    phone.send("</stream:stream>").await;
    phone.expect_closed().await;
    let shared = s.running.shared.clone();
    wait_until("the phone is offline", || !shared.router.is_online(BOB)).await;
    let mut desk = desktop(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hello").await;
    let m = message(&mut desk).await;
    let p = app.next().await;
    assert_eq!((p.node.as_str(), p.count()), ("phone", 1));
    app.assert_quiet(&s).await;

    // A marker for another chat (carol's) leaves the badge alone.
    mark_displayed(&mut desk, "carol@localhost", BOB, &stanza_id(&m)).await;
    app.assert_quiet(&s).await;
    // A marker whose stanza-id another entity assigned is not our archive's: ignored.
    mark_displayed(
        &mut desk,
        ALICE,
        "room@conference.localhost",
        &stanza_id(&m),
    )
    .await;
    app.assert_quiet(&s).await;

    // The desktop displays alice's chat: one badge update, count 0, no body.
    mark_displayed(&mut desk, ALICE, BOB, &stanza_id(&m)).await;
    let p = app.next().await;
    assert_eq!((p.node.as_str(), p.count()), ("phone", 0));
    assert_eq!(p.body(), None);
    app.assert_quiet(&s).await;
    // The same marker again changes nothing.
    mark_displayed(&mut desk, ALICE, BOB, &stanza_id(&m)).await;
    app.assert_quiet(&s).await;
}
#[tokio::test]
async fn a_message_displayed_before_the_phone_sleeps_is_not_pushed() {
    // With the sender shown, the push says which message it is for: carol's, not alice's.
    let (s, mut app) = push_server(|c| c.push.with_sender = true).await;
    let mut desk = desktop(&s).await;
    // The phone acknowledges all it got before the chat starts (its push enable's result,
    // its presence and the desktop's), so that only the chat message is unacked when it
    // dies.
    let mut phone = push_phone(&s, "localhost", "bob", "phone", true).await;
    phone.send("<presence/>").await;
    for _ in 0..2 {
        assert_eq!(next_unrequested(&mut phone).await.name(), "presence");
    }
    phone.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "seen on the desk").await;
    let m = message(&mut desk).await;
    let pm = message(&mut phone).await;
    assert_eq!(stanza_id(&pm), stanza_id(&m));
    mark_displayed(&mut desk, ALICE, BOB, &stanza_id(&m)).await;
    // The phone dies with that message unacked: hibernation finds it displayed.
    phone.kill(false);
    // A later message of another chat still pushes, with a count of 1: only it is unread
    // (without the marker, hibernation would push alice's message first).
    let mut c = login_available(&s, "carol").await;
    chat(&mut c, BOB, "new").await;
    let _ = message(&mut desk).await;
    let p = app.next().await;
    assert_eq!((p.node.as_str(), p.count()), ("phone", 1), "{:?}", p.fields);
    assert_eq!(p.sender(), Some("carol@localhost"));
    // Rule b fires on the archive's commit: let it happen before checking for silence.
    s.running.shared.archive.flush().await;
    app.assert_quiet(&s).await;
}

/// The message with this body among `els`.
fn with_marker<'a>(els: &'a [Element], id: &str) -> Option<&'a Element> {
    els.iter().find(|m| {
        m.name() == "message"
            && m.get_child("displayed", "urn:xmpp:chat-markers:0")
                .and_then(|d| d.attr("id"))
                == Some(id)
    })
}

fn mds_children(m: &Element) -> usize {
    let direct = m.children().filter(|c| c.is("displayed", MDS)).count();
    // Inside a carbon copy: <sent><forwarded><message>.
    let nested = m
        .children()
        .flat_map(|c| c.children())
        .flat_map(|f| f.children())
        .filter(|c| c.name() == "message")
        .map(|inner| inner.children().filter(|c| c.is("displayed", MDS)).count())
        .sum::<usize>();
    direct + nested
}

const MDS: &str = "urn:xmpp:mds:displayed:0";

#[tokio::test]
async fn server_assist_publishes_the_marker_and_strips_it_from_the_message() {
    use pepkit::{ok, Pc, DISCO_INFO, EVENT, PUBSUB};
    let (s, mut app) = push_server(|c| c.push.coalesce_window.0 = Duration::from_millis(1)).await;
    // The phone app is closed (push rule b), so the badge is the push's to clear.
    let mut phone = push_phone(&s, "localhost", "bob", "phone", false).await;
    phone.send("</stream:stream>").await;
    phone.expect_closed().await;
    let shared = s.running.shared.clone();
    wait_until("the phone is offline", || !shared.router.is_online(BOB)).await;

    // Bob's desktop asks for MDS notifications and carbons; his laptop too.
    let mut desk = Pc::login(&s, "bob", "desk", &[MDS]).await;
    desk.online().await;
    let mut laptop = Pc::login(&s, "bob", "laptop", &[MDS]).await;
    ok(&laptop
        .iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>")
        .await);
    laptop.online().await;

    // The account announces server assist (XEP-0490 §4.5.1).
    let info = desk
        .iq("get", Some(BOB), &format!("<query xmlns='{DISCO_INFO}'/>"))
        .await;
    let features: Vec<&str> = info
        .get_child("query", DISCO_INFO)
        .map(|q| q.children().filter_map(|f| f.attr("var")).collect())
        .unwrap_or_default();
    assert!(
        features.contains(&"urn:xmpp:mds:server-assist:0"),
        "{features:?}"
    );

    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hello").await;
    let m = desk
        .wait("alice's message", |e| {
            e.name() == "message" && e.get_child("body", "jabber:client").is_some()
        })
        .await;
    let sid = stanza_id(&m);
    let p = app.next().await;
    assert_eq!((p.node.as_str(), p.count()), ("phone", 1));

    // The desktop tells alice it displayed the message, and its own devices where it is.
    desk.send(&format!(
        "<message to='{ALICE}' id='mark1'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>\
         <displayed xmlns='{MDS}'><stanza-id xmlns='urn:xmpp:sid:0' by='{BOB}' id='{sid}'/></displayed>\
         </message>"
    ))
    .await;
    // Alice gets the chat marker, not bob's stanza-id.
    let got = next_message_with_marker(&mut a, "m1").await;
    assert_eq!(mds_children(&got), 0, "{}", xml(&got));
    // The laptop gets the PEP notification for alice's chat and a carbon without it.
    let ev = laptop
        .wait("the MDS notification", |e| {
            e.get_child("event", EVENT)
                .and_then(|ev| ev.get_child("items", EVENT))
                .and_then(|i| i.attr("node"))
                == Some(MDS)
        })
        .await;
    let item = ev
        .get_child("event", EVENT)
        .and_then(|e| e.get_child("items", EVENT))
        .and_then(|i| i.get_child("item", EVENT))
        .expect("an item");
    assert_eq!(item.attr("id"), Some(ALICE));
    let marked = item
        .get_child("displayed", MDS)
        .and_then(|d| d.get_child("stanza-id", "urn:xmpp:sid:0"))
        .and_then(|s| s.attr("id"));
    assert_eq!(marked, Some(sid.as_str()));
    let rest = laptop.sync().await;
    let carbon = rest
        .iter()
        .find(|e| e.has_child("sent", "urn:xmpp:carbons:2"))
        .unwrap_or_else(|| panic!("no carbon: {:?}", rest.iter().map(xml).collect::<Vec<_>>()));
    assert_eq!(mds_children(carbon), 0, "{}", xml(carbon));
    assert!(with_marker(&rest, "m1").is_none());

    // The sleeping phone's badge clears, as with a published marker.
    let p = app.next().await;
    assert_eq!((p.node.as_str(), p.count()), ("phone", 0));
    app.assert_quiet(&s).await;

    // The node holds it, readable by bob only: the server created it whitelisted.
    let r = desk
        .iq(
            "get",
            None,
            &format!("<pubsub xmlns='{PUBSUB}'><items node='{MDS}'/></pubsub>"),
        )
        .await;
    ok(&r);
    assert!(xml(&r).contains(&sid), "{}", xml(&r));
    let r = a
        .send(&format!(
            "<iq type='get' id='peek' to='{BOB}'><pubsub xmlns='{PUBSUB}'><items node='{MDS}'/></pubsub></iq>"
        ))
        .await;
    let () = r;
    let peek = loop {
        let el = next_unrequested(&mut a).await;
        if el.attr("id") == Some("peek") {
            break el;
        }
    };
    assert_eq!(peek.attr("type"), Some("error"), "{}", xml(&peek));
    assert!(!xml(&peek).contains(&sid));
}

/// The next message `c` gets that carries the XEP-0333 marker `id`.
async fn next_message_with_marker(c: &mut RawClient, id: &str) -> Element {
    loop {
        let m = message(c).await;
        if with_marker(std::slice::from_ref(&m), id).is_some() {
            return m;
        }
    }
}

#[tokio::test]
async fn an_oversized_assisted_marker_is_dropped_and_the_message_still_goes() {
    use pepkit::{ok, PUBSUB};
    // `[pep] max_item_bytes` bounds server-assisted markers as it bounds published ones.
    let s = pepkit::server_with(&["alice", "bob"], |c| c.pep.max_item_bytes = 200).await;
    let mut a = login_available(&s, "alice").await;
    let mut desk = pepkit::Pc::login(&s, "bob", "desk", &[]).await;
    let long = "x".repeat(300);
    desk.send(&format!(
        "<message to='{ALICE}'><displayed xmlns='urn:xmpp:chat-markers:0' id='m2'/>\
         <displayed xmlns='{MDS}'><stanza-id xmlns='urn:xmpp:sid:0' by='{BOB}' id='{long}'/></displayed>\
         </message>"
    ))
    .await;
    // The contact gets the chat marker, stripped as always.
    let got = next_message_with_marker(&mut a, "m2").await;
    assert_eq!(mds_children(&got), 0, "{}", xml(&got));
    // Nothing was stored: the node was not even created.
    let r = desk
        .iq(
            "get",
            None,
            &format!("<pubsub xmlns='{PUBSUB}'><items node='{MDS}'/></pubsub>"),
        )
        .await;
    assert_eq!(pepkit::error_of(&r).0, "item-not-found", "{}", xml(&r));
    // A marker within the bound is stored.
    desk.send(&format!(
        "<message to='{ALICE}'><displayed xmlns='urn:xmpp:chat-markers:0' id='m3'/>\
         <displayed xmlns='{MDS}'><stanza-id xmlns='urn:xmpp:sid:0' by='{BOB}' id='short'/></displayed>\
         </message>"
    ))
    .await;
    let _ = next_message_with_marker(&mut a, "m3").await;
    let r = desk
        .iq(
            "get",
            None,
            &format!("<pubsub xmlns='{PUBSUB}'><items node='{MDS}'/></pubsub>"),
        )
        .await;
    ok(&r);
    assert!(xml(&r).contains("id='short'"), "{}", xml(&r));
}
