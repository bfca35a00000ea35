//! Rule d through the engine (RULES.md §4a): `Engine::room_message` decides with
//! `groupchat::decide`, then pushes the member's sleeping devices like rule b's pushes —
//! coalesced, counted, never twice.

mod common;

use common::*;
use herald_push::classify::{classify, summarize};
use herald_push::engine::{Engine, PushConfig, RoomMessage, StanzaInfo};
use herald_push::groupchat::{Decision, Member, NotifySetting, Skip};
use minidom::Element;

use NotifySetting::*;

const ROOM: &str = "tea@conference.example.com";
const S_LAPTOP: u64 = 1;
const S_TABLET: u64 = 2;

fn room_msg(inner: &str) -> Element {
    format!("<message xmlns='jabber:client' from='{ROOM}/ann' type='groupchat'>{inner}</message>")
        .parse()
        .unwrap()
}

fn info(id: u64, el: &Element) -> StanzaInfo {
    StanzaInfo {
        id,
        importance: classify(el),
        summary: summarize(el),
        own: false,
        at: 0,
    }
}

fn member(joined: bool, setting: Option<NotifySetting>) -> Member<'static> {
    Member {
        bare: USER,
        nick: Some("Juliet"),
        joined,
        bookmarked: true,
        setting,
    }
}

/// Three devices: a phone with no session, a laptop connected (live), a tablet whose
/// session hibernates. None of their sessions is in the room.
fn three_devices(cfg: PushConfig, c: &Clock) -> Engine {
    let mut e = engine(cfg);
    e.load_user(USER, vec![reg("phone", 1, "phone")]);
    e.session_started(USER, S_LAPTOP, "laptop", c.at(0.0));
    e.enable(USER, S_LAPTOP, reg("laptop", 2, "laptop"), c.at(0.0));
    e.session_started(USER, S_TABLET, "tablet", c.at(0.0));
    e.enable(USER, S_TABLET, reg("tablet", 3, "tablet"), c.at(0.0));
    e.hibernation_started(S_TABLET, &[], c.at(0.0));
    e
}

fn send(
    e: &mut Engine,
    m: &Member<'_>,
    sender: &str,
    members_only: bool,
    el: &Element,
    id: u64,
    at: std::time::Instant,
) -> (Decision, Vec<String>) {
    let msg = RoomMessage {
        room: ROOM,
        members_only,
        sender,
        message: el,
    };
    let (d, a) = e.room_message(m, &msg, &info(id, el), at);
    (d, nodes(&a))
}

#[test]
fn room_message_table() {
    let asleep = vec!["phone".to_string(), "tablet".to_string()];
    let none: Vec<String> = Vec::new();
    let push = |mention| Decision::Push { mention };
    // (what, joined, setting, members-only, sender, payload, decision, devices pushed)
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        &str,
        bool,
        Option<NotifySetting>,
        bool,
        &str,
        &str,
        Decision,
        &Vec<String>,
    )> = vec![
        (
            "always: the sleeping devices, not the live one",
            false,
            Some(Always),
            false,
            "ann@example.com",
            "<body>hi</body>",
            push(false),
            &asleep,
        ),
        (
            "joined: rule a's business",
            true,
            Some(Always),
            true,
            "ann@example.com",
            "<body>hi</body>",
            Decision::Skip(Skip::Joined),
            &none,
        ),
        (
            "own message",
            false,
            Some(Always),
            true,
            USER,
            "<body>hi</body>",
            Decision::Skip(Skip::OwnMessage),
            &none,
        ),
        (
            "subject change",
            false,
            Some(Always),
            true,
            "ann@example.com",
            "<subject>tea</subject>",
            Decision::Skip(Skip::NotImportant),
            &none,
        ),
        (
            "never, even mentioned",
            false,
            Some(Never),
            true,
            "ann@example.com",
            "<body>Juliet!</body>",
            Decision::Skip(Skip::Muted),
            &none,
        ),
        (
            "on-mention, not mentioned",
            false,
            Some(OnMention),
            true,
            "ann@example.com",
            "<body>hi</body>",
            Decision::Skip(Skip::NotMentioned),
            &none,
        ),
        (
            "on-mention, nick in the body",
            false,
            Some(OnMention),
            false,
            "ann@example.com",
            "<body>hi juliet, tea?</body>",
            push(true),
            &asleep,
        ),
        (
            "default in a members-only room: always",
            false,
            None,
            true,
            "ann@example.com",
            "<body>hi</body>",
            push(false),
            &asleep,
        ),
        (
            "default in an open room: on mention",
            false,
            None,
            false,
            "ann@example.com",
            "<body>hi</body>",
            Decision::Skip(Skip::NotMentioned),
            &none,
        ),
        (
            "encrypted, always",
            false,
            Some(Always),
            true,
            "ann@example.com",
            "<encrypted xmlns='eu.siacs.conversations.axolotl'/>",
            push(false),
            &asleep,
        ),
    ];
    for (i, (what, joined, setting, members_only, sender, payload, decision, devices)) in
        rows.into_iter().enumerate()
    {
        let c = Clock::new();
        let mut e = three_devices(PushConfig::default(), &c);
        let m = member(joined, setting);
        let el = room_msg(payload);
        let (d, pushed) = send(
            &mut e,
            &m,
            sender,
            members_only,
            &el,
            100 + i as u64,
            c.at(1.0),
        );
        assert_eq!(d, decision, "{what}");
        assert_eq!(&pushed, devices, "{what}");
    }
}

#[test]
fn the_push_names_the_room_and_counts_per_user() {
    let c = Clock::new();
    let mut e = three_devices(
        PushConfig {
            with_sender: true,
            ..PushConfig::default()
        },
        &c,
    );
    let m = member(false, Some(Always));
    let el = room_msg("<body>hi</body>");
    let msg = RoomMessage {
        room: ROOM,
        members_only: true,
        sender: "ann@example.com",
        message: &el,
    };
    let p = pushes(&e.room_message(&m, &msg, &info(1, &el), c.at(1.0)).1);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| p.sender.as_deref() == Some(ROOM)), "{p:?}");
    assert!(p.iter().all(|p| p.count == 1 && p.user == USER));
    // A one-to-one message archived for the user (rule b) counts on the same badge.
    let p = pushes(&e.archived_for(USER, &imp(2), c.at(5.0)));
    assert_eq!(
        p.len(),
        1,
        "rule b: the phone only (the tablet is attached)"
    );
    assert_eq!(p[0].count, 2);
}

#[test]
fn a_room_burst_is_coalesced_like_a_chat() {
    let c = Clock::new();
    let mut e = three_devices(PushConfig::default(), &c);
    let m = member(false, Some(Always));
    let mut leading = Vec::new();
    for (i, t) in [1.0, 1.2, 1.4, 1.6].into_iter().enumerate() {
        let el = room_msg(&format!("<body>m{i}</body>"));
        leading.push(send(&mut e, &m, "ann@example.com", true, &el, i as u64, c.at(t)).1);
    }
    assert_eq!(
        leading[0],
        vec!["phone", "tablet"],
        "the first pushes at once"
    );
    assert!(leading[1..].iter().all(Vec::is_empty), "{leading:?}");
    let p = pushes(&e.poll(c.at(2.0), 0));
    assert_eq!(p.len(), 2, "one catch-up per device");
    assert!(p.iter().all(|p| p.count == 4), "{p:?}");
}

#[test]
fn one_room_message_reaches_one_registration_once() {
    let c = Clock::new();
    let mut e = three_devices(PushConfig::default(), &c);
    let m = member(false, Some(Always));
    let el = room_msg("<body>hi</body>");
    let (_, first) = send(&mut e, &m, "ann@example.com", true, &el, 7, c.at(1.0));
    assert_eq!(first, vec!["phone", "tablet"]);
    // The same message again (another path, or the room told twice), long after.
    let (_, again) = send(&mut e, &m, "ann@example.com", true, &el, 7, c.at(60.0));
    assert!(again.is_empty(), "{again:?}");
    let s = info(7, &el);
    assert!(pushes(&e.archived_for(USER, &s, c.at(61.0))).is_empty());
    assert!(pushes(&e.stanza_queued(S_TABLET, &s, c.at(62.0))).is_empty());
}

#[test]
fn a_member_with_no_registrations_is_silent() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    let m = member(false, Some(Always));
    let el = room_msg("<body>hi</body>");
    let (d, pushed) = send(&mut e, &m, "ann@example.com", true, &el, 1, c.at(0.0));
    assert_eq!(d, Decision::Push { mention: false });
    assert!(pushed.is_empty());
}

#[test]
fn a_member_without_a_bookmark_of_the_room_is_never_woken() {
    let c = Clock::new();
    let mut e = three_devices(PushConfig::default(), &c);
    let m = Member {
        bookmarked: false,
        ..member(false, None)
    };
    let el = room_msg("<body>Juliet, buy now</body>");
    let (d, pushed) = send(&mut e, &m, "spam@example.com", true, &el, 1, c.at(1.0));
    assert_eq!(d, Decision::Skip(Skip::NotBookmarked));
    assert!(pushed.is_empty());
}
