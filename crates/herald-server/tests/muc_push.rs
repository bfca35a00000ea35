//! Push rule d end to end (crates/herald-push/RULES.md §4a): a room's members whose phone
//! has no session in the room still get pushes for the room's messages, as their XEP-0402
//! bookmark's XEP-0492 setting says; a member whose phone is joined and hibernated is pushed
//! by rule a only, once per message. The fake app server records every publish;
//! `assert_quiet` is a barrier through the router and the push task, not a sleep.

mod common;

use std::time::Duration;

use common::*;
use herald_proto::Element;

const MUC_NS: &str = "http://jabber.org/protocol/muc";
const ROOM: &str = "tea@conference.localhost";
const BOB: &str = "bob@localhost";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// A server with alice, bob, carol and the fake app server; pushes name their sender, and
/// the coalescing window is `window`.
async fn server(window: Duration) -> (TestServer, FakeAppServer) {
    push_server(|c| {
        c.push.with_sender = true;
        c.push.coalesce_window.0 = window;
    })
    .await
}

/// No coalescing to speak of: each message in these tests comes after the previous push.
const NO_WINDOW: Duration = Duration::from_millis(1);

async fn client(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = RawClient::login(s.c2s(), user, "pw", res).await;
    c.send("<presence/>").await;
    c
}

async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |e| {
        e.name() == "iq" && e.attr("id") == Some(id)
    })
    .await
}

fn assert_result(r: &Element) {
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(r));
}

/// A room's self-presence (status code 110).
fn is_self(p: &Element) -> bool {
    p.get_child("x", "http://jabber.org/protocol/muc#user")
        .is_some_and(|x| {
            x.children()
                .any(|c| c.name() == "status" && c.attr("code") == Some("110"))
        })
}

async fn join(c: &mut RawClient, nick: &str) {
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='{MUC_NS}'/></presence>"
    ))
    .await;
    let from = format!("{ROOM}/{nick}");
    let p = c
        .wait_for("the self-presence", |e| {
            e.name() == "presence"
                && e.attr("from") == Some(from.as_str())
                && (e.attr("type") == Some("error") || is_self(e))
        })
        .await;
    assert_eq!(p.attr("type"), None, "{}", xml(&p));
}

/// Alice creates the room (members-only or open) and makes bob and carol members; she
/// stays in it to talk.
async fn room(s: &TestServer, members_only: bool) -> RawClient {
    let mut a = client(s, "alice", "a").await;
    join(&mut a, "alice").await;
    let mo = if members_only { "1" } else { "0" };
    let r = ask(&mut a, "cfg", &format!(
        "<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC_NS}#owner'><x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_membersonly'><value>{mo}</value></field></x></query></iq>"
    ))
    .await;
    assert_result(&r);
    let r = ask(
        &mut a,
        "aff",
        &format!(
            "<iq type='set' id='aff' to='{ROOM}'><query xmlns='{MUC_NS}#admin'>\
         <item jid='{BOB}' affiliation='member'/><item jid='carol@localhost' affiliation='member'/>\
         </query></iq>"
        ),
    )
    .await;
    assert_result(&r);
    a
}

/// Alice says `body` in the room (`extra` inside the message too) and sees it come back.
async fn say(a: &mut RawClient, body: &str, extra: &str) {
    a.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='{body}'><body>{body}</body>{extra}</message>"
    ))
    .await;
    a.wait_for(&format!("the echo of {body}"), |e| {
        e.name() == "message"
            && e.get_child("body", "jabber:client").map(|b| b.text()) == Some(body.to_string())
    })
    .await;
}

/// Bob's phone enables push on `node` and goes away: a registration with no session, and
/// bob is in no room.
async fn phone_gone(s: &TestServer, node: &str) {
    let mut p = push_phone(s, "localhost", "bob", node, false).await;
    p.send("</stream:stream>").await;
    p.expect_closed().await;
    let shared = s.running.shared.clone();
    wait_until("bob is offline", || !shared.router.is_online(BOB)).await;
}

/// Bob's bookmark of the room (from another device, which then logs out): nick `bobby`,
/// and the XEP-0492 `setting` element if any. Without one the room never wakes bob's phone.
async fn bookmark(s: &TestServer, setting: Option<&str>) {
    let mut d = client(s, "bob", "desk").await;
    let ext = setting
        .map(|x| {
            format!("<extensions><notify xmlns='urn:xmpp:notification-settings:1'>{x}</notify></extensions>")
        })
        .unwrap_or_default();
    let r = ask(&mut d, "bm", &format!(
        "<iq type='set' id='bm'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:bookmarks:1'>\
         <item id='{ROOM}'><conference xmlns='urn:xmpp:bookmarks:1' name='Tea'><nick>bobby</nick>{ext}</conference></item>\
         </publish></pubsub></iq>"
    ))
    .await;
    assert_result(&r);
    d.send("</stream:stream>").await;
    d.expect_closed().await;
    let shared = s.running.shared.clone();
    wait_until("bob is offline", || !shared.router.is_online(BOB)).await;
}

fn assert_room_push(p: &Publish, node: &str, count: u32) {
    assert_eq!(p.node, node, "{}", xml(&p.iq));
    assert_eq!(p.count(), count, "{}", xml(&p.iq));
    // The summary names the room, not the person in it.
    assert_eq!(p.sender(), Some(ROOM), "{}", xml(&p.iq));
    assert_eq!(p.priority().as_deref(), Some("high"));
}

#[tokio::test]
async fn a_member_not_joined_gets_one_push_per_message_and_nothing_is_stored_twice() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, None).await;
    let mut a = room(&s, true).await;
    // A bookmark without a setting: XEP-0492's default for a members-only room is `always`.
    say(&mut a, "first", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    say(&mut a, "second", "").await;
    assert_room_push(&app.next().await, "bob-phone", 2);
    // A subject change is nothing to wake a phone for.
    a.send(&format!(
        "<message to='{ROOM}' type='groupchat'><subject>tea time</subject></message>"
    ))
    .await;
    a.wait_for("the subject", |e| xml(e).contains("tea time"))
        .await;
    app.assert_quiet(&s).await;
    // The phone catches up from the room's archive: nothing went to bob's offline store
    // or bob's own archive (only the room's archive has the messages).
    let store = s.running.shared.store.clone();
    assert!(store.offline_messages(BOB).unwrap().is_empty());
    let q = herald_store::ArchiveQuery {
        max: 10,
        ..Default::default()
    };
    assert_eq!(store.query_archive(BOB, &q).unwrap().items.len(), 0);
    assert_eq!(store.query_archive(ROOM, &q).unwrap().items.len(), 2);
}

#[tokio::test]
async fn on_mention_pushes_only_mentions() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, Some("<on-mention/>")).await;
    let mut a = room(&s, true).await;
    say(&mut a, "hello everyone", "").await;
    say(&mut a, "bobbyjoe is not bob", "").await;
    app.assert_quiet(&s).await;
    // The bookmark's nick as a whole word.
    say(&mut a, "tea, Bobby?", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    // A XEP-0372 mention of bob's JID.
    say(
        &mut a,
        "you there",
        &format!("<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{BOB}'/>"),
    )
    .await;
    assert_room_push(&app.next().await, "bob-phone", 2);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn an_open_room_defaults_to_on_mention() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, None).await;
    let mut a = room(&s, false).await;
    say(&mut a, "hello everyone", "").await;
    app.assert_quiet(&s).await;
    say(&mut a, "bobby, hello", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_muted_room_never_wakes_the_phone_until_unmuted() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, Some("<never/>")).await;
    let mut a = room(&s, true).await;
    say(&mut a, "plain", "").await;
    say(&mut a, "bobby!", "").await;
    app.assert_quiet(&s).await;
    // The setting is read when a message comes: unmuting takes effect at once.
    bookmark(&s, Some("<always/>")).await;
    say(&mut a, "now", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_burst_in_a_busy_room_is_coalesced() {
    let (s, mut app) = server(Duration::from_secs(2)).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, None).await;
    let mut a = room(&s, true).await;
    for i in 0..5 {
        say(&mut a, &format!("burst {i}"), "").await;
    }
    // One push at once, then one catch-up at the window's end with the true count.
    assert_room_push(&app.next().await, "bob-phone", 1);
    let catch_up = app.next().await;
    assert_room_push(&catch_up, "bob-phone", 5);
    app.assert_quiet(&s).await;
}

/// A phone with XEP-0198 that counts what it read, to ack it all before it drops.
struct SmPhone {
    c: RawClient,
    h: u32,
}

impl SmPhone {
    async fn next(&mut self) -> Element {
        loop {
            let el = self.c.element().await;
            if el.is("r", "urn:xmpp:sm:3") {
                continue;
            }
            if matches!(el.name(), "message" | "presence" | "iq") {
                self.h += 1;
            }
            return el;
        }
    }

    async fn wait_for(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.next().await;
            if pred(&el) {
                return el;
            }
        }
    }
}

#[tokio::test]
async fn a_joined_hibernated_member_gets_exactly_one_push_per_message() {
    let (s, mut app) = server(NO_WINDOW).await;
    let mut a = room(&s, true).await;
    let mut p = SmPhone {
        c: push_phone(&s, "localhost", "bob", "bob-phone", true).await,
        h: 0,
    };
    p.c.send("<presence/>").await;
    p.c.send(&format!(
        "<presence to='{ROOM}/bob'><x xmlns='{MUC_NS}'/></presence>"
    ))
    .await;
    p.wait_for(|e| e.name() == "presence" && is_self(e)).await;
    p.c.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    p.wait_for(|e| e.attr("id") == Some("sync")).await;
    // Everything read is acked: the hibernation has nothing to push.
    p.c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", p.h))
        .await;
    p.c.kill(false);
    let shared = s.running.shared.clone();
    wait_until("bob's session hibernates", || {
        shared.router.resources(BOB).iter().any(|r| r.hibernated)
    })
    .await;
    app.assert_quiet(&s).await;
    // Bob's session is still an occupant: rule a pushes the queued message, rule d leaves
    // bob alone, so each message reaches the registration once.
    say(&mut a, "one", "").await;
    let first = app.next().await;
    assert_eq!(first.node, "bob-phone");
    assert_eq!(first.count(), 1);
    say(&mut a, "two", "").await;
    assert_eq!(app.next().await.count(), 2);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_members_own_message_does_not_push_their_phone() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    bookmark(&s, Some("<always/>")).await;
    let _a = room(&s, true).await;
    // Bob talks from his desktop; the phone's registration has no session.
    let mut d = client(&s, "bob", "desk").await;
    join(&mut d, "bob").await;
    say(&mut d, "from bob", "").await;
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_hibernated_phone_that_never_joined_is_pushed_by_rule_d() {
    let (s, mut app) = server(NO_WINDOW).await;
    bookmark(&s, Some("<always/>")).await;
    let mut a = room(&s, true).await;
    // A client that joins rooms only when their chat is opened: its session is in none.
    let mut p = SmPhone {
        c: push_phone(&s, "localhost", "bob", "bob-phone", true).await,
        h: 0,
    };
    p.c.send("<presence/>").await;
    p.c.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    p.wait_for(|e| e.attr("id") == Some("sync")).await;
    p.c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", p.h))
        .await;
    p.c.kill(false);
    let shared = s.running.shared.clone();
    wait_until("bob's session hibernates", || {
        shared.router.resources(BOB).iter().any(|r| r.hibernated)
    })
    .await;
    app.assert_quiet(&s).await;
    // The room's message is not in the session's queue; rule d is what wakes the phone.
    say(&mut a, "one", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_member_without_a_bookmark_of_the_room_is_never_woken() {
    let (s, mut app) = server(NO_WINDOW).await;
    phone_gone(&s, "bob-phone").await;
    // Alice makes bob a member of her room; bob never joined it nor bookmarked it.
    let mut a = room(&s, true).await;
    say(&mut a, "bob, buy my tea", "").await;
    say(
        &mut a,
        "really",
        &format!("<reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:{BOB}'/>"),
    )
    .await;
    app.assert_quiet(&s).await;
    // Once bob keeps the room (a bookmark), it may wake him.
    bookmark(&s, None).await;
    say(&mut a, "welcome", "").await;
    assert_room_push(&app.next().await, "bob-phone", 1);
    app.assert_quiet(&s).await;
}
