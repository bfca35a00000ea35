//! Read state across devices (crates/herald-push/RULES.md §14), table tests with a fake
//! clock: a message the user already displayed on another device (XEP-0490) does not push a
//! sleeping phone, and when the displayed marker moves, a sleeping phone whose badge counted
//! those messages gets one unimportant push with the new count.

mod common;

use common::*;
use herald_push::classify::{Importance, Summary};
use herald_push::engine::{Engine, PushConfig, StanzaInfo};

const S1: u64 = 1;
const ROMEO: &str = "romeo@example.com";
const NURSE: &str = "nurse@example.com";

fn one_device() -> (Clock, Engine) {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    (c, e)
}

/// An important message of chat `from` that reached the server at `at` (unix micros).
fn msg(id: u64, from: &str, at: i64) -> StanzaInfo {
    StanzaInfo {
        id,
        importance: Importance::Important,
        summary: Summary {
            sender: Some(from.to_owned()),
            body: Some(format!("body {id}")),
        },
        own: false,
        at,
    }
}

fn count(e: &Engine) -> Option<u32> {
    e.message_count(USER, &key("push.example.net", "phone"))
}

#[test]
fn a_message_displayed_elsewhere_before_the_phone_hibernates_is_not_pushed() {
    // The phone lost its connection with two unacked messages; the desktop displayed the
    // chat up to the second. Hibernation pushes nothing for them.
    let (c, mut e) = one_device();
    e.displayed(USER, ROMEO, 2_000, c.at(1.0));
    let a = e.hibernation_started(S1, &[msg(1, ROMEO, 1_000), msg(2, ROMEO, 2_000)], c.at(2.0));
    assert!(pushes(&a).is_empty());
    assert_eq!(count(&e), Some(0));
    // Another chat, or a later message of that chat, still pushes.
    let p = pushes(&e.stanza_queued(S1, &msg(3, NURSE, 1_500), c.at(3.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 1);
}

#[test]
fn a_later_message_of_a_displayed_chat_still_pushes() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    e.displayed(USER, ROMEO, 2_000, c.at(1.0));
    let p = pushes(&e.stanza_queued(S1, &msg(1, ROMEO, 2_001), c.at(2.0)));
    assert_eq!(p.len(), 1, "newer than the marker: unread");
}

#[test]
fn displayed_marker_clears_the_badge_with_one_unimportant_push() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(
        pushes(&e.stanza_queued(S1, &msg(1, ROMEO, 1_000), c.at(1.0))).len(),
        1
    );
    // Long after the window: the desktop displays the chat.
    let a = e.displayed(USER, ROMEO, 1_000, c.at(30.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1, "one badge update");
    assert_eq!(p[0].count, 0);
    assert_eq!(p[0].body, None, "no body: nothing new to show");
    assert_eq!(priority(&a).as_deref(), Some("low"));
    assert_eq!(count(&e), Some(0));
    // The same marker again changes nothing.
    assert!(pushes(&e.displayed(USER, ROMEO, 1_000, c.at(31.0))).is_empty());
    // A marker never moves back.
    assert!(pushes(&e.displayed(USER, ROMEO, 500, c.at(32.0))).is_empty());
}

#[test]
fn a_marker_on_another_chat_leaves_the_badge_alone() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    e.stanza_queued(S1, &msg(1, ROMEO, 1_000), c.at(1.0));
    assert!(pushes(&e.displayed(USER, NURSE, 5_000, c.at(30.0))).is_empty());
    assert_eq!(count(&e), Some(1));
}

#[test]
fn partial_marker_counts_only_what_it_covers() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    e.stanza_queued(S1, &msg(1, ROMEO, 1_000), c.at(1.0));
    e.stanza_queued(S1, &msg(2, ROMEO, 2_000), c.at(1.1));
    e.stanza_queued(S1, &msg(3, NURSE, 2_500), c.at(1.2));
    let _catch_up = e.poll(c.at(10.0), 0);
    assert_eq!(count(&e), Some(3));
    let p = pushes(&e.displayed(USER, ROMEO, 1_000, c.at(30.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].count, 2,
        "romeo's second and the nurse's are still unread"
    );
}

#[test]
fn badge_updates_are_coalesced_like_any_push() {
    // The user reads ten chats on the desktop in a second: the phone gets the first badge
    // update at once and one more with the final count at the window's end.
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    for i in 0..10u64 {
        let from = format!("friend{i}@example.com");
        e.stanza_queued(
            S1,
            &msg(i + 1, &from, 1_000 + i as i64),
            c.at(1.0 + i as f64),
        );
    }
    assert_eq!(count(&e), Some(10));
    let mut seen = Vec::new();
    for i in 0..10u64 {
        let from = format!("friend{i}@example.com");
        let a = e.displayed(USER, &from, 1_000 + i as i64, c.at(100.0 + i as f64 * 0.05));
        seen.extend(pushes(&a));
    }
    seen.extend(pushes(&e.poll(c.at(102.0), 0)));
    let counts: Vec<u32> = seen.iter().map(|p| p.count).collect();
    assert_eq!(counts, vec![9, 0]);
}

#[test]
fn the_catch_up_drops_the_body_of_a_message_displayed_meanwhile() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(
        pushes(&e.stanza_queued(S1, &msg(1, NURSE, 1_000), c.at(1.0))).len(),
        1
    );
    // Covered by the window: owed a catch-up showing romeo's message…
    assert!(pushes(&e.stanza_queued(S1, &msg(2, ROMEO, 2_000), c.at(1.1))).is_empty());
    // …which the desktop displays before the window ends.
    assert!(pushes(&e.displayed(USER, ROMEO, 2_000, c.at(1.5))).is_empty());
    let p = pushes(&e.poll(c.at(2.0), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 1, "only the nurse's message is unread");
    assert_eq!(p[0].body, None);
}

#[test]
fn an_awake_device_gets_no_badge_push() {
    let (c, mut e) = one_device();
    e.ack_delayed(S1, &[msg(1, ROMEO, 1_000)], c.at(1.0));
    e.acked(S1, c.at(2.0));
    assert!(pushes(&e.displayed(USER, ROMEO, 1_000, c.at(3.0))).is_empty());
}

#[test]
fn rule_b_and_c_skip_displayed_messages_too() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    e.session_ended(S1, c.at(0.5));
    e.displayed(USER, ROMEO, 1_000, c.at(1.0));
    assert!(pushes(&e.archived_for(USER, &msg(1, ROMEO, 900), c.at(2.0))).is_empty());
    assert!(pushes(&e.stored_offline(USER, &msg(1, ROMEO, 900), c.at(2.0))).is_empty());
    assert_eq!(
        pushes(&e.stored_offline(USER, &msg(2, ROMEO, 1_100), c.at(3.0))).len(),
        1
    );
}

#[test]
fn a_stanza_without_a_time_is_never_taken_for_displayed() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    e.displayed(USER, ROMEO, i64::MAX, c.at(1.0));
    assert_eq!(
        pushes(&e.stanza_queued(S1, &msg(1, ROMEO, 0), c.at(2.0))).len(),
        1
    );
}

#[test]
fn markers_per_user_are_bounded() {
    let (c, mut e) = one_device();
    e.hibernation_started(S1, &[], c.at(0.0));
    let n = herald_push::engine::MAX_DISPLAYED_CHATS as i64 + 10;
    for i in 0..n {
        e.displayed(USER, &format!("c{i}@example.com"), 1_000 + i, c.at(1.0));
    }
    // The oldest markers were forgotten: their chats push again; the newest still hold.
    assert_eq!(
        pushes(&e.stanza_queued(S1, &msg(1, "c0@example.com", 500), c.at(2.0))).len(),
        1
    );
    let last = format!("c{}@example.com", n - 1);
    e.poll(c.at(50.0), 0);
    assert!(pushes(&e.stanza_queued(S1, &msg(2, &last, 500), c.at(60.0))).is_empty());
}

fn priority(actions: &[herald_push::engine::Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        herald_push::engine::Action::Publish { iq, .. } => form_priority(iq),
        _ => None,
    })
}

fn form_priority(iq: &minidom::Element) -> Option<String> {
    iq.get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
        .and_then(|p| p.get_child("item", "http://jabber.org/protocol/pubsub"))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .and_then(|n| n.get_child("priority", "tigase:push:priority:0"))
        .map(|p| p.text())
}
