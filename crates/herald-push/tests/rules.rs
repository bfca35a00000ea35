//! The rules of crates/herald-push/RULES.md, one test per situation, with a fake clock.

mod common;

use std::time::Duration;

use common::*;
use herald_push::classify::{classify, summarize, Importance};
use herald_push::engine::{Action, PushConfig, Reply, StanzaInfo};

const S1: u64 = 1;
const S2: u64 = 2;

/// One user, one session `S1` of resource `phone` that enabled node `phone`.
fn one_device(cfg: PushConfig) -> (Clock, herald_push::engine::Engine) {
    let c = Clock::new();
    let mut e = engine(cfg);
    e.session_started(USER, S1, "phone", c.at(0.0));
    let a = e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    assert!(matches!(a.as_slice(), [Action::SaveRegistration { .. }]));
    assert!(e.has_push(S1));
    (c, e)
}

#[test]
fn row_connected_client_acks_no_push() {
    let (c, mut e) = one_device(PushConfig::default());
    // Rule b skips a registration attached to a live session.
    assert!(pushes(&e.archived_for(USER, &imp(1), c.at(1.0))).is_empty());
    e.acked(S1, c.at(2.0));
    assert!(e.poll(c.at(100.0), 0).is_empty());
    assert_eq!(e.next_push_timer(), None);
    assert_eq!(e.pending_len(), 0);
}

#[test]
fn row_ack_delayed_one_push_for_queue_then_each_later_stanza() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.ack_delayed(S1, &[unimp(1), imp(2), imp(3), unimp(4)], c.at(60.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1, "one push for the whole unacked queue");
    assert_eq!(p[0].count, 2);
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
    assert!(expiries(&a).is_empty(), "not hibernated: no expiry change");
    // While the ack stays overdue, later stanzas are pushed like queued-while-hibernated.
    let p = pushes(&e.stanza_queued(S1, &imp(5), c.at(65.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
}

#[test]
fn row_ack_delayed_without_registration_or_known_session_is_silent() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    assert!(e.ack_delayed(S1, &[imp(1)], c.at(1.0)).is_empty());
    assert!(e.ack_delayed(99, &[imp(1)], c.at(1.0)).is_empty());
    assert!(!e.has_push(S1));
}

#[test]
fn row_hibernation_pushes_once_for_unpushed_stanzas() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.hibernation_started(S1, &[imp(1), unimp(2), imp(3)], c.at(10.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 2);
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
}

#[test]
fn row_hibernation_with_empty_queue_no_push() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.hibernation_started(S1, &[], c.at(10.0));
    assert!(pushes(&a).is_empty());
}

#[test]
fn row_hibernation_after_ack_delay_no_second_push() {
    let (c, mut e) = one_device(PushConfig::default());
    assert_eq!(
        pushes(&e.ack_delayed(S1, &[imp(1), imp(2)], c.at(60.0))).len(),
        1
    );
    let a = e.hibernation_started(S1, &[imp(1), imp(2)], c.at(70.0));
    assert!(pushes(&a).is_empty(), "all already pushed");
    // Only a new stanza in the queue earns a push.
    let a = e.hibernation_started(S1, &[imp(1), imp(2), imp(3)], c.at(80.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
}

#[test]
fn row_queued_while_hibernated_coalesced() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    // The first important stanza is pushed at once (no batching delay).
    let p = pushes(&e.stanza_queued(S1, &imp(1), c.at(10.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 1);
    // The rest of the burst inside the window is covered now...
    assert!(pushes(&e.stanza_queued(S1, &imp(2), c.at(10.3))).is_empty());
    assert!(pushes(&e.stanza_queued(S1, &imp(3), c.at(10.9))).is_empty());
    // ... and an unimportant stanza adds nothing to a window that had an important push.
    assert!(pushes(&e.stanza_queued(S1, &unimp(4), c.at(10.5))).is_empty());
    assert!(e.next_push_timer().is_some_and(|t| t <= c.at(11.0)));
    // At the window's end one catch-up push carries the true count.
    let p = pushes(&e.poll(c.at(11.0), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
    // The catch-up leads the next window: a flood gives one push per window.
    assert!(pushes(&e.stanza_queued(S1, &imp(6), c.at(11.5))).is_empty());
    let p = pushes(&e.poll(c.at(12.0), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 4);
    // A quiet window ends without a push.
    assert!(pushes(&e.poll(c.at(13.0), 0)).is_empty());
    // After it a new stanza leads again, at once.
    let p = pushes(&e.stanza_queued(S1, &imp(7), c.at(20.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 5);
}

#[test]
fn row_queued_urgent_is_never_coalesced() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0))).len(), 1);
    // An incoming call right behind a message still rings.
    let p = pushes(&e.stanza_queued(S1, &urgent(2), c.at(1.2)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 2);
}

#[test]
fn row_resumed_stops_pushes_and_cancels_retries() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let p = pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0)));
    // The app server says wait: a retry is scheduled.
    e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: true,
            condition: "resource-constraint".into(),
        },
        c.at(1.5),
        0,
    );
    assert_eq!(e.pending_len(), 1);
    assert!(e.resumed(S1, c.at(2.0)).is_empty());
    assert_eq!(e.pending_len(), 0, "retry cancelled");
    assert!(pushes(&e.poll(c.at(100.0), 0)).is_empty());
    assert_eq!(e.next_push_timer(), None);
    assert_eq!(
        e.message_count(USER, &key("push.example.net", "phone")),
        Some(0)
    );
}

#[test]
fn row_csi_held_stanzas_never_pushed() {
    // A chat state is unimportant, so an inactive client's CSI buffer holds it: it never
    // enters the SM queue, so hibernation sees an empty queue and pushes nothing.
    let state = "<message xmlns='jabber:client' from='romeo@example.net/a' type='chat'>\
                 <composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
    assert!(!classify(&state.parse().unwrap()).is_important());
    let (c, mut e) = one_device(PushConfig::default());
    assert!(pushes(&e.hibernation_started(S1, &[], c.at(0.0))).is_empty());
    assert!(pushes(&e.poll(c.at(5.0), 0)).is_empty());
}

#[test]
fn row_archived_pushes_only_registrations_without_session() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("old-laptop", 10, "laptop")]);
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    let a = e.archived_for(USER, &imp(1), c.at(1.0));
    assert_eq!(nodes(&a), vec!["old-laptop"]);
    // Once the phone's session ends its registration is unattached: rule b reaches it.
    e.session_ended(S1, c.at(2.0));
    assert_eq!(
        nodes(&e.archived_for(USER, &imp(2), c.at(3.0))),
        vec!["old-laptop", "phone"]
    );
}

#[test]
fn row_cluster_archived_skips_registrations_of_sessions_on_other_nodes() {
    // This node holds no session of the user; the phone's session (which enabled the
    // "phone" registration) is on another node, the laptop has none anywhere.
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(
        USER,
        vec![reg("phone", 100, "phone"), reg("old-laptop", 10, "laptop")],
    );
    let elsewhere = vec!["phone".to_string()];
    let a = e.archived_for_in_cluster(USER, &imp(1), &elsewhere, c.at(1.0));
    assert_eq!(nodes(&a), vec!["old-laptop"]);
    // Urgent rings every registration, wherever its session is (as on one node).
    let mut call = imp(2);
    call.importance = Importance::Urgent;
    let a = e.archived_for_in_cluster(USER, &call, &elsewhere, c.at(100.0));
    assert_eq!(nodes(&a), vec!["old-laptop", "phone"]);
    // Once the phone's session has ended everywhere, rule b reaches it here.
    let a = e.archived_for_in_cluster(USER, &imp(3), &[], c.at(200.0));
    assert_eq!(nodes(&a), vec!["old-laptop", "phone"]);
}

#[test]
fn row_cluster_reload_follows_the_store_and_keeps_state() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    e.load_user(USER, vec![reg("old-laptop", 10, "laptop")]);
    assert_eq!(
        nodes(&e.archived_for(USER, &imp(1), c.at(1.0))),
        vec!["old-laptop"]
    );
    // Another node disabled the laptop's registration and a tablet enabled one there.
    e.reload_user(
        USER,
        vec![reg("phone", 100, "phone"), reg("tablet", 200, "tablet")],
    );
    // The phone stays attached to its session here; the laptop is gone; the tablet's
    // session is on the other node.
    let a = e.archived_for_in_cluster(USER, &imp(2), &["tablet".into()], c.at(2.0));
    assert!(pushes(&a).is_empty(), "{a:?}");
    assert!(e.has_push(S1));
    let a = e.archived_for_in_cluster(USER, &imp(3), &[], c.at(3.0));
    assert_eq!(nodes(&a), vec!["tablet"]);
    // A user never loaded here is not loaded by a reload.
    e.reload_user("nobody@example.com", vec![reg("x", 1, "x")]);
    assert!(e.registrations("nobody@example.com").is_empty());
}

#[test]
fn row_live_phone_and_sleeping_tablet() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    e.session_started(USER, S2, "tablet", c.at(0.0));
    e.enable(USER, S2, reg("tablet", 101, "tablet"), c.at(0.0));
    e.hibernation_started(S2, &[], c.at(5.0));
    // The message goes to both sessions and the archive. Rule b skips both (attached);
    // the tablet's push comes from rule a on its hibernated session; the phone gets none.
    let m = imp(7);
    assert!(pushes(&e.archived_for(USER, &m, c.at(10.0))).is_empty());
    let a = e.stanza_queued(S2, &m, c.at(10.0));
    assert_eq!(nodes(&a), vec!["tablet"]);
}

#[test]
fn row_urgent_archived_rings_every_registration_once() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("laptop", 10, "laptop")]);
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    e.session_started(USER, S2, "tablet", c.at(0.0));
    e.enable(USER, S2, reg("tablet", 101, "tablet"), c.at(0.0));
    e.hibernation_started(S2, &[], c.at(1.0));
    // Coalescing would cover this call on the tablet; urgent bypasses it.
    e.stanza_queued(S2, &imp(1), c.at(2.0));
    let call = urgent(2);
    let a = e.archived_for(USER, &call, c.at(2.1));
    assert_eq!(nodes(&a), vec!["laptop", "phone", "tablet"]);
    // Dedup still holds: the same call queued to the sessions is not pushed again.
    assert!(pushes(&e.stanza_queued(S2, &call, c.at(2.2))).is_empty());
    assert!(pushes(&e.ack_delayed(S1, std::slice::from_ref(&call), c.at(60.0))).is_empty());
    assert!(pushes(&e.archived_for(USER, &call, c.at(70.0))).is_empty());
}

#[test]
fn row_stored_offline_pushes_every_registration() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(
        USER,
        vec![reg("a", 1, "a"), reg("b", 2, "b"), reg("c", 3, "c")],
    );
    let a = e.stored_offline(USER, &imp(1), c.at(0.0));
    let p = pushes(&a);
    assert_eq!(nodes(&a), vec!["a", "b", "c"]);
    assert!(p.iter().all(|p| p.count == 1 && p.user == USER));
    // Coalesced like every path: the next one inside the window is owed the catch-up.
    assert!(pushes(&e.stored_offline(USER, &imp(2), c.at(0.1))).is_empty());
    let p = pushes(&e.poll(c.at(1.0), 0));
    assert_eq!(p.len(), 3, "one catch-up per registration");
    assert!(p.iter().all(|p| p.count == 2));
    // A stanza already pushed or covered is never pushed again.
    assert!(pushes(&e.stored_offline(USER, &imp(2), c.at(5.0))).is_empty());
}

#[test]
fn row_groupchat_to_bare_jid_without_session_pushes_every_registration() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("a", 1, "a"), reg("b", 2, "b")]);
    let xml = "<message xmlns='jabber:client' from='coven@chat.example.com/firstwitch' \
               to='juliet@example.com' type='groupchat'><body>Thrice</body></message>";
    let el = xml.parse().unwrap();
    let s = StanzaInfo {
        id: 9,
        importance: classify(&el),
        summary: summarize(&el),
        own: false,
        at: 0,
    };
    let p = pushes(&e.groupchat_unrouted(USER, &s, c.at(0.0)));
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| p.body.as_deref() == Some("New Message!")));
}

#[test]
fn row_received_carbon_to_hibernated_session_is_pushed() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let xml = "<message xmlns='jabber:client' from='juliet@example.com' to='juliet@example.com/phone'>\
               <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
               <message xmlns='jabber:client' from='romeo@example.net/orchard' to='juliet@example.com/laptop' type='chat'>\
               <body>Wherefore</body></message></forwarded></received></message>";
    let el = xml.parse().unwrap();
    let s = StanzaInfo {
        id: 3,
        importance: classify(&el),
        summary: summarize(&el),
        own: false,
        at: 0,
    };
    let p = pushes(&e.stanza_queued(S1, &s, c.at(1.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
    assert_eq!(p[0].count, 1);
}

#[test]
fn row_sent_carbon_is_pushed_unimportant() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let xml = "<message xmlns='jabber:client' from='juliet@example.com' to='juliet@example.com/phone'>\
               <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
               <message xmlns='jabber:client' from='juliet@example.com/laptop' to='romeo@example.net' type='chat'>\
               <body>Hi</body></message></forwarded></sent></message>";
    let el = xml.parse().unwrap();
    let s = StanzaInfo {
        id: 4,
        importance: classify(&el),
        summary: summarize(&el),
        own: false,
        at: 0,
    };
    let p = pushes(&e.stanza_queued(S1, &s, c.at(1.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].body, None);
    assert_eq!(p[0].count, 0);
}

#[test]
fn row_same_stanza_on_every_path_pushed_once() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    let m = imp(42);
    // ack delay → hibernation → expiry → offline → archive
    assert_eq!(
        pushes(&e.ack_delayed(S1, std::slice::from_ref(&m), c.at(60.0))).len(),
        1
    );
    assert!(pushes(&e.stanza_queued(S1, &m, c.at(61.0))).is_empty());
    assert!(pushes(&e.hibernation_started(S1, std::slice::from_ref(&m), c.at(70.0))).is_empty());
    e.session_ended(S1, c.at(700.0));
    assert!(pushes(&e.stored_offline(USER, &m, c.at(700.0))).is_empty());
    assert!(pushes(&e.archived_for(USER, &m, c.at(700.0))).is_empty());
    // A different stanza on the same path is pushed.
    assert_eq!(
        pushes(&e.archived_for(USER, &imp(43), c.at(701.0))).len(),
        1
    );
}

#[test]
fn row_hibernation_expiry_with_pushed_stanzas_no_new_push() {
    let (c, mut e) = one_device(PushConfig::default());
    assert_eq!(
        pushes(&e.hibernation_started(S1, &[imp(1), unimp(2)], c.at(0.0))).len(),
        1
    );
    e.session_ended(S1, c.at(600.0));
    assert!(!e.has_push(S1));
    assert!(pushes(&e.stored_offline(USER, &imp(1), c.at(600.0))).is_empty());
    assert!(pushes(&e.stored_offline(USER, &unimp(2), c.at(600.0))).is_empty());
    assert!(pushes(&e.archived_for(USER, &imp(1), c.at(600.0))).is_empty());
}

#[test]
fn row_extended_hibernation_until_first_important_push() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(expiries(&a), vec![(S1, c.at(72.0 * 3600.0))]);
    // An unimportant push does not end the extension.
    let a = e.stanza_queued(S1, &unimp(1), c.at(100.0));
    assert_eq!(pushes(&a).len(), 1);
    assert!(expiries(&a).is_empty());
    // The first important push starts the normal timeout.
    let a = e.stanza_queued(S1, &imp(2), c.at(200.0));
    assert_eq!(expiries(&a), vec![(S1, c.at(800.0))]);
    // Later pushes do not move it again.
    let a = e.stanza_queued(S1, &imp(3), c.at(300.0));
    assert_eq!(pushes(&a).len(), 1);
    assert!(expiries(&a).is_empty());
}

#[test]
fn row_extended_hibernation_ends_at_once_when_queue_has_important() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.hibernation_started(S1, &[imp(1)], c.at(5.0));
    assert_eq!(pushes(&a).len(), 1);
    assert_eq!(
        expiries(&a),
        vec![(S1, c.at(605.0))],
        "one deadline, from the push"
    );
}

#[test]
fn row_important_push_while_ack_overdue_counts_as_the_first_push() {
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.ack_delayed(S1, &[imp(1)], c.at(10.0));
    assert_eq!(pushes(&a).len(), 1);
    // Everything is already pushed when the connection dies: the device was woken at 10 s,
    // so the normal timeout runs from then, not the 72 h extension.
    let a = e.hibernation_started(S1, &[imp(1)], c.at(40.0));
    assert!(pushes(&a).is_empty());
    assert_eq!(expiries(&a), vec![(S1, c.at(610.0))]);
    // An unimportant push while overdue does not count.
    let (c, mut e) = one_device(PushConfig::default());
    e.ack_delayed(S1, &[unimp(1)], c.at(10.0));
    let a = e.hibernation_started(S1, &[unimp(1)], c.at(40.0));
    assert_eq!(expiries(&a), vec![(S1, c.at(40.0 + 72.0 * 3600.0))]);
}

#[test]
fn row_extended_hibernation_any_push_when_important_body_empty() {
    let (c, mut e) = one_device(PushConfig {
        important_body: String::new(),
        ..Default::default()
    });
    e.hibernation_started(S1, &[], c.at(0.0));
    let a = e.stanza_queued(S1, &unimp(1), c.at(50.0));
    assert_eq!(expiries(&a), vec![(S1, c.at(650.0))]);
    assert_eq!(pushes(&a)[0].body, None);
}

#[test]
fn row_hibernation_without_push_keeps_server_timeout() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "phone", c.at(0.0));
    let a = e.hibernation_started(S1, &[imp(1)], c.at(0.0));
    assert!(a.is_empty());
    assert_eq!(e.next_push_timer(), None);
}

#[test]
fn row_fallback_when_registration_removed_from_hibernated_session() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(10.0));
    let a = e.disable(USER, "push.example.net", Some("phone"), c.at(20.0));
    assert_eq!(deletions(&a), vec![key("push.example.net", "phone")]);
    assert_eq!(expiries(&a), vec![(S1, c.at(610.0))]);
    assert!(!e.has_push(S1));
    // No wake-up for a session without push.
    assert!(pushes(&e.poll(c.at(80.0 * 3600.0), 0)).is_empty());
    assert_eq!(e.next_push_timer(), None);
}

#[test]
fn row_fallback_after_max_errors_may_be_in_the_past() {
    let (c, mut e) = one_device(PushConfig {
        max_errors: 1,
        ..Default::default()
    });
    e.hibernation_started(S1, &[], c.at(0.0));
    let p = pushes(&e.stanza_queued(S1, &unimp(1), c.at(1000.0)));
    let a = e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: false,
            condition: "item-not-found".into(),
        },
        c.at(1001.0),
        0,
    );
    assert_eq!(deletions(&a).len(), 1);
    // start + hibernation_timeout is already past: the server expires it at once.
    assert_eq!(expiries(&a), vec![(S1, c.at(600.0))]);
}

#[test]
fn row_wake_before_expiry_exactly_once_per_deadline() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let a = e.stanza_queued(S1, &imp(1), c.at(100.0));
    let p = pushes(&a);
    e.reply(&p[0].iq_id, Reply::Result, c.at(100.5), 0);
    // Deadline 700 s, margin 60 s: the wake push is due at 640 s.
    assert_eq!(e.next_push_timer(), Some(c.at(640.0)));
    assert!(pushes(&e.poll(c.at(639.0), 0)).is_empty());
    let w = pushes(&e.poll(c.at(640.0), 0));
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].count, 1, "count unchanged");
    assert_eq!(w[0].body, None);
    e.reply(&w[0].iq_id, Reply::Result, c.at(641.0), 0);
    assert!(pushes(&e.poll(c.at(699.0), 0)).is_empty());
    assert_eq!(e.next_push_timer(), None);
}

#[test]
fn row_wake_before_extended_expiry_and_disabled_option() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let due = c.at(72.0 * 3600.0 - 60.0);
    assert_eq!(e.next_push_timer(), Some(due));
    let w = pushes(&e.poll(due, 0));
    assert_eq!(w.len(), 1);
    // With important_body set, the wake push is not an important push: no re-extension.
    assert!(expiries(&e.poll(due, 0)).is_empty());

    let (c, mut e) = one_device(PushConfig {
        wake_before_expiry: false,
        ..Default::default()
    });
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(e.next_push_timer(), None);
    assert!(pushes(&e.poll(c.at(80.0 * 3600.0), 0)).is_empty());
}

#[test]
fn row_wake_margin_clamped_to_half_the_timeout() {
    let (c, mut e) = one_device(PushConfig {
        hibernation_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    e.hibernation_started(S1, &[imp(1)], c.at(0.0));
    assert_eq!(e.next_push_timer(), Some(c.at(30.0)));
    // The reply timeout (30 s) coincides; the wake fires at 30 s, not at 0 s.
    let a = e.poll(c.at(29.0), 0);
    assert!(pushes(&a).is_empty());
    let a = e.poll(c.at(30.0), 0);
    assert_eq!(pushes(&a).len(), 1);
}

#[test]
fn row_resumed_cancels_wake() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert!(e.next_push_timer().is_some());
    e.resumed(S1, c.at(10.0));
    assert_eq!(e.next_push_timer(), None);
    assert!(pushes(&e.poll(c.at(80.0 * 3600.0), 0)).is_empty());
}

#[test]
fn row_unimportant_kinds_pushed_without_placeholder() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let presence = "<presence xmlns='jabber:client' from='romeo@example.net/a'/>";
    let el = presence.parse().unwrap();
    let s = StanzaInfo {
        id: 1,
        importance: classify(&el),
        summary: summarize(&el),
        own: false,
        at: 0,
    };
    assert_eq!(s.importance, Importance::Unimportant);
    let p = pushes(&e.stanza_queued(S1, &s, c.at(1.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].body, None);
    assert_eq!(p[0].count, 0);
}

#[test]
fn row_wait_and_timeout_retried_with_backoff_not_counted() {
    let (c, mut e) = one_device(PushConfig::default());
    let p = pushes(&e.stored_offline(USER, &imp(1), c.at(0.0)));
    // Attempt 1 answered wait → retry after 5 s.
    let a = e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: true,
            condition: "resource-constraint".into(),
        },
        c.at(1.0),
        0,
    );
    assert!(a.is_empty());
    assert_eq!(e.next_push_timer(), Some(c.at(6.0)));
    let r = pushes(&e.poll(c.at(6.0), 0));
    assert_eq!(r.len(), 1);
    assert_ne!(r[0].iq_id, p[0].iq_id, "each publish has its own id");
    assert_eq!(
        (r[0].count, r[0].body.clone()),
        (p[0].count, p[0].body.clone()),
        "same content"
    );
    // Attempt 2 times out (30 s) → retry after 10 s.
    assert!(pushes(&e.poll(c.at(36.0), 0)).is_empty());
    assert_eq!(e.next_push_timer(), Some(c.at(46.0)));
    let r3 = pushes(&e.poll(c.at(46.0), 0));
    assert_eq!(r3.len(), 1);
    // Attempt 3 (the last) times out → dropped, stats saved, no error counted.
    let a = e.poll(c.at(76.0), 0);
    assert!(a.iter().any(|x| matches!(x, Action::SaveStats { error_count: 0, last_result: Some(r), .. } if r == "timeout")));
    assert_eq!(e.pending_len(), 0);
    assert_eq!(e.next_push_timer(), None);
    assert_eq!(e.registrations(USER)[0].error_count, 0);
}

#[test]
fn row_other_errors_counted_reset_on_success_removed_at_max() {
    let (c, mut e) = one_device(PushConfig {
        max_errors: 3,
        ..Default::default()
    });
    let err = || Reply::Error {
        wait: false,
        condition: "item-not-found".into(),
    };
    let mut id = 0;
    let mut push = |e: &mut herald_push::engine::Engine| {
        id += 1;
        pushes(&e.stored_offline(USER, &imp(id), c.at(id as f64)))[0]
            .iq_id
            .clone()
    };
    let i = push(&mut e);
    let a = e.reply(&i, err(), c.at(1.0), 1000);
    assert!(a.contains(&Action::SaveStats {
        user: USER.into(),
        key: key("push.example.net", "phone"),
        error_count: 1,
        last_push: None,
        last_result: Some("item-not-found".into()),
    }));
    let i = push(&mut e);
    e.reply(&i, err(), c.at(2.0), 1001);
    assert_eq!(e.registrations(USER)[0].error_count, 2);
    // A result resets the count.
    let i = push(&mut e);
    let a = e.reply(&i, Reply::Result, c.at(3.0), 1002);
    assert!(a.contains(&Action::SaveStats {
        user: USER.into(),
        key: key("push.example.net", "phone"),
        error_count: 0,
        last_push: Some(1002),
        last_result: Some("ok".into()),
    }));
    assert_eq!(e.registrations(USER)[0].error_count, 0);
    // Three errors in a row remove it, from the store and from the live session.
    for _ in 0..2 {
        let i = push(&mut e);
        assert!(deletions(&e.reply(&i, err(), c.at(4.0), 0)).is_empty());
    }
    let i = push(&mut e);
    let a = e.reply(&i, err(), c.at(5.0), 0);
    assert_eq!(deletions(&a), vec![key("push.example.net", "phone")]);
    assert!(e.registrations(USER).is_empty());
    assert!(!e.has_push(S1));
    assert_eq!(e.pending_len(), 0);
    // Unknown or repeated ids are ignored.
    assert!(e.reply(&i, Reply::Result, c.at(6.0), 0).is_empty());
    assert!(e.reply("nope", err(), c.at(6.0), 0).is_empty());
}

#[test]
fn error_counts_survive_restart() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_errors: 3,
        ..Default::default()
    });
    let mut r = reg("phone", 1, "phone");
    r.error_count = 2;
    e.load_user(USER, vec![r]);
    assert_eq!(e.registrations(USER)[0].error_count, 2);
    let p = pushes(&e.stored_offline(USER, &imp(1), c.at(0.0)));
    let a = e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: false,
            condition: "forbidden".into(),
        },
        c.at(1.0),
        0,
    );
    assert_eq!(deletions(&a).len(), 1);
}

#[test]
fn silent_app_server_leaks_nothing() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("a", 1, "a"), reg("b", 2, "b")]);
    // Two seconds apart: each opens a window of its own, so each is pushed.
    for i in 0..50 {
        e.stored_offline(USER, &imp(i), c.at(i as f64 * 2.0));
    }
    assert_eq!(e.pending_len(), 100);
    let mut t = 0.0;
    let mut published = 100;
    while let Some(d) = e.next_push_timer() {
        assert!(d >= c.at(t));
        t = d.duration_since(c.base).as_secs_f64();
        published += pushes(&e.poll(d, 0)).len();
    }
    assert_eq!(published, 300, "3 attempts per publish, then dropped");
    assert_eq!(e.pending_len(), 0);
}

#[test]
fn pending_is_bounded() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_pending: 10,
        ..Default::default()
    });
    e.load_user(USER, vec![reg("a", 1, "a")]);
    let mut n = 0;
    for i in 0..25 {
        n += pushes(&e.stored_offline(USER, &imp(i), c.at(i as f64 * 2.0))).len();
    }
    assert_eq!(n, 10);
    assert_eq!(e.pending_len(), 10);
    // What did not fit is owed once (with the latest count), not dropped.
    assert_eq!(e.owed_len(), 1);
}

#[test]
fn eviction_of_oldest_beyond_max_devices() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_devices: 2,
        ..Default::default()
    });
    e.session_started(USER, S1, "a", c.at(0.0));
    e.session_started(USER, S2, "b", c.at(0.0));
    e.session_started(USER, 3, "c", c.at(0.0));
    assert!(deletions(&e.enable(USER, S1, reg("a", 100, "a"), c.at(0.0))).is_empty());
    assert!(deletions(&e.enable(USER, S2, reg("b", 200, "b"), c.at(0.0))).is_empty());
    // Re-enabling the same key replaces it and evicts nothing.
    assert!(deletions(&e.enable(USER, S1, reg("a", 300, "a"), c.at(0.0))).is_empty());
    assert_eq!(e.registrations(USER).len(), 2);
    // A third device evicts the oldest (b, enabled at 200) and detaches it.
    let a = e.enable(USER, 3, reg("c", 400, "c"), c.at(0.0));
    assert_eq!(deletions(&a), vec![key("push.example.net", "b")]);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::SaveRegistration { reg, .. } if reg.key.node == "c")));
    let left: Vec<String> = e
        .registrations(USER)
        .into_iter()
        .map(|r| r.key.node)
        .collect();
    assert_eq!(left, vec!["a", "c"]);
    assert!(!e.has_push(S2));
}

#[test]
fn disable_by_jid_removes_every_node_and_detaches() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("x", 1, "x"), reg("y", 2, "y")]);
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 3, "phone"), c.at(0.0));
    let mut other = reg("z", 4, "z");
    other.key.jid = "other.example.org".into();
    e.load_user(USER, vec![other]);
    let a = e.disable(USER, "push.example.net", None, c.at(1.0));
    assert_eq!(deletions(&a).len(), 3);
    assert!(!e.has_push(S1));
    assert_eq!(e.registrations(USER).len(), 1);
    assert!(e
        .disable(USER, "push.example.net", None, c.at(1.0))
        .is_empty());
}

#[test]
fn message_count_resets() {
    let (c, mut e) = one_device(PushConfig::default());
    let k = key("push.example.net", "phone");
    e.session_ended(S1, c.at(0.0));
    for i in 1..=3 {
        e.stored_offline(USER, &imp(i), c.at(i as f64));
    }
    e.stored_offline(USER, &unimp(9), c.at(4.0));
    assert_eq!(
        e.message_count(USER, &k),
        Some(3),
        "unimportant not counted"
    );
    // Login with another resource does not reset it; the enabling resource does.
    e.session_started(USER, S2, "laptop", c.at(5.0));
    assert_eq!(e.message_count(USER, &k), Some(3));
    e.session_started(USER, 3, "phone", c.at(6.0));
    assert_eq!(e.message_count(USER, &k), Some(0));
    let p = pushes(&e.stored_offline(USER, &imp(10), c.at(7.0)));
    assert_eq!(p[0].count, 1);
    // A fresh enable starts at 0.
    e.enable(USER, 3, reg("phone", 200, "phone"), c.at(8.0));
    assert_eq!(e.message_count(USER, &k), Some(0));
    // Resume resets the registrations attached to the session.
    e.hibernation_started(3, &[], c.at(9.0));
    e.stanza_queued(3, &imp(11), c.at(10.0));
    assert_eq!(e.message_count(USER, &k), Some(1));
    e.resumed(3, c.at(11.0));
    assert_eq!(e.message_count(USER, &k), Some(0));
}

#[test]
fn ping_pushes_every_registration_without_stanza() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("a", 1, "a"), reg("b", 2, "b")]);
    e.stored_offline(USER, &imp(1), c.at(0.0));
    let p = pushes(&e.ping(USER, c.at(1.0)));
    assert_eq!(p.len(), 2);
    assert!(p
        .iter()
        .all(|p| p.count == 1 && p.body.is_none() && p.sender.is_none()));
    // A ping is not a stanza: pinging again pushes again.
    assert_eq!(pushes(&e.ping(USER, c.at(2.0))).len(), 2);
}

#[test]
fn dedup_memory_is_bounded() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        dedup_per_registration: 4,
        ..Default::default()
    });
    e.load_user(USER, vec![reg("a", 1, "a")]);
    // Two seconds apart, so no window covers the next one.
    for i in 0..10 {
        let a = e.stored_offline(USER, &imp(i), c.at(i as f64 * 2.0));
        assert_eq!(pushes(&a).len(), 1);
    }
    // The 4 most recent are remembered, older ones forgotten.
    for i in 6..10 {
        assert!(pushes(&e.stored_offline(USER, &imp(i), c.at(30.0))).is_empty());
    }
    assert_eq!(
        pushes(&e.stored_offline(USER, &imp(0), c.at(30.0))).len(),
        1
    );
}

#[test]
fn row_restart_restores_a_sleeping_session_without_pushing_again() {
    use herald_push::engine::SessionPush;
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[imp(1), imp(2)], c.at(0.0));
    // Live sessions have nothing to carry over.
    assert_eq!(e.session_push(S2), None);
    let saved = e.session_push(S1).expect("hibernated");
    assert_eq!(saved.regs, vec![(key("push.example.net", "phone"), 2)]);
    assert!(saved.first_push);

    // A new process: the registration loaded from the store, the session restored.
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("phone", 100, "phone")]);
    let expiry = c.at(600.0);
    e.restore_session(USER, S1, saved.clone(), expiry, c.at(10.0));
    assert!(e.has_push(S1));
    assert_eq!(e.session_push(S1), Some(saved));
    // Nothing pushed for the restore itself; rule b leaves the attached registration alone.
    assert!(pushes(&e.archived_for(USER, &imp(3), c.at(11.0))).is_empty());
    // The next queued stanza counts on from 2.
    let p = pushes(&e.stanza_queued(S1, &imp(4), c.at(12.0)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
    // Wake-before-expiry is armed for the restored deadline.
    assert!(e.next_push_timer().is_some_and(|d| d < expiry));
    // A registration removed while the server was down is not attached.
    let mut e = engine(PushConfig::default());
    e.restore_session(
        USER,
        S2,
        SessionPush {
            regs: vec![(key("push.example.net", "gone"), 1)],
            first_push: false,
        },
        expiry,
        c.at(10.0),
    );
    assert!(!e.has_push(S2));
}

#[test]
fn row_device_reconnecting_with_its_client_id_gets_its_registrations_back() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.session_started(USER, S1, "Phone~0a1b", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "Phone~0a1b"), c.at(0.0));
    e.load_user(USER, vec![reg("laptop", 10, "laptop")]);
    e.session_ended(S1, c.at(1.0));
    // Reconnected through Bind2 with the same client id: attached again without <enable/>,
    // so rule b no longer pushes the connected phone…
    e.session_started(USER, S2, "Phone~0a1b", c.at(2.0));
    assert!(e
        .reattach_device(USER, S2, "Phone~0a1b", c.at(2.0))
        .is_empty());
    assert!(e.has_push(S2));
    assert_eq!(
        nodes(&e.archived_for(USER, &imp(1), c.at(3.0))),
        vec!["laptop"]
    );
    // …and rule a pushes it when its session hibernates with a queued stanza.
    e.hibernation_started(S2, &[], c.at(4.0));
    assert_eq!(
        nodes(&e.stanza_queued(S2, &imp(2), c.at(5.0))),
        vec!["phone"]
    );
    // Another resource takes nothing.
    let mut e2 = engine(PushConfig::default());
    e2.session_started(USER, S1, "Phone~0a1b", c.at(0.0));
    e2.enable(USER, S1, reg("phone", 100, "Phone~0a1b"), c.at(0.0));
    e2.session_ended(S1, c.at(1.0));
    e2.session_started(USER, S2, "Phone~ffff", c.at(2.0));
    e2.reattach_device(USER, S2, "Phone~ffff", c.at(2.0));
    assert!(!e2.has_push(S2));
}

#[test]
fn each_publish_attempt_ends_in_one_outcome() {
    use herald_push::engine::Outcomes;
    let (c, mut e) = one_device(PushConfig::default());
    let wait = Reply::Error {
        wait: true,
        condition: "resource-constraint".into(),
    };
    // One push: wait (retry after 5 s), timeout (retry after 10 s), timeout on the last
    // attempt: given up.
    let p = pushes(&e.stored_offline(USER, &imp(1), c.at(0.0)));
    e.reply(&p[0].iq_id, wait, c.at(1.0), 0);
    assert_eq!(pushes(&e.poll(c.at(6.0), 0)).len(), 1);
    e.poll(c.at(36.0), 0);
    assert_eq!(pushes(&e.poll(c.at(46.0), 0)).len(), 1);
    e.poll(c.at(76.0), 0);
    let o = e.outcomes();
    assert_eq!(
        o,
        Outcomes {
            wait: 1,
            timeout: 2,
            dropped: 1,
            ..Outcomes::default()
        }
    );
    // Later pushes: a result, then the app server's error; unknown or repeated ids and a
    // late answer to the given-up push change nothing.
    let p = pushes(&e.stored_offline(USER, &imp(2), c.at(200.0)));
    e.reply(&p[0].iq_id, Reply::Result, c.at(200.5), 0);
    e.reply(&p[0].iq_id, Reply::Result, c.at(200.6), 0);
    e.reply("nope", Reply::Result, c.at(200.7), 0);
    let p = pushes(&e.stored_offline(USER, &imp(3), c.at(400.0)));
    let cancel = Reply::Error {
        wait: false,
        condition: "item-not-found".into(),
    };
    e.reply(&p[0].iq_id, cancel, c.at(400.5), 0);
    assert_eq!(
        e.outcomes(),
        Outcomes {
            result: 1,
            cancel: 1,
            ..o
        }
    );
    assert_eq!(e.pending_len(), 0);
}
