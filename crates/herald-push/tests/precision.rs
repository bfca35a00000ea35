//! Push precision (crates/herald-push/RULES.md §5, §6, §10–§12), table tests with a fake clock: the
//! device's own echo never wakes it, a burst gets a leading push and one catch-up with the
//! true count, admission to `max_pending` is fair, idle users are evicted, virtual hosts
//! have their own options, and every notification carries a priority hint.

mod common;

use common::*;
use herald_push::classify::caused_by;
use herald_push::engine::{
    Action, Engine, PushConfig, RegKey, Registration, Removal, Reply, StanzaInfo,
};
use minidom::Element;

const S1: u64 = 1;
const PHONE: &str = "juliet@example.com/phone";

fn one_device(cfg: PushConfig) -> (Clock, Engine) {
    let c = Clock::new();
    let mut e = engine(cfg);
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    (c, e)
}

fn el(xml: &str) -> Element {
    xml.parse().unwrap()
}

/// A stanza as the server describes it for the session `PHONE`.
fn info(id: u64, xml: &str) -> StanzaInfo {
    let e = el(xml);
    StanzaInfo {
        id,
        importance: herald_push::classify(&e),
        summary: herald_push::summarize(&e),
        own: caused_by(&e, PHONE),
        at: 0,
    }
}

fn own_presence(id: u64) -> StanzaInfo {
    info(
        id,
        "<presence xmlns='jabber:client' from='juliet@example.com/phone' to='juliet@example.com/phone'/>",
    )
}

fn iq_result(id: u64) -> StanzaInfo {
    info(
        id,
        "<iq xmlns='jabber:client' type='result' id='r1' from='example.com' to='juliet@example.com/phone'/>",
    )
}

fn priority_of(a: &Action) -> Option<String> {
    match a {
        Action::Publish { iq, .. } => iq
            .get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
            .and_then(|p| p.get_child("item", "http://jabber.org/protocol/pubsub"))
            .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
            .and_then(|n| n.get_child("priority", "tigase:push:priority:0"))
            .map(|p| p.text()),
        _ => None,
    }
}

fn reg_at(app: &str, node: &str, enabled_at: i64) -> Registration {
    Registration {
        key: key(app, node),
        ..reg(node, enabled_at, node)
    }
}

// ---- the device's own echo ----

#[test]
fn caused_by_names_only_what_the_device_caused() {
    assert!(own_presence(1).own);
    assert!(iq_result(1).own);
    assert!(
        info(
            1,
            "<iq xmlns='jabber:client' type='error' id='x' to='juliet@example.com/phone'/>"
        )
        .own
    );
    assert!(info(1, "<message xmlns='jabber:client' type='error' to='juliet@example.com/phone'><body>x</body></message>").own);
    // Anyone else's stanza is not the device's echo.
    assert!(
        !info(
            1,
            "<presence xmlns='jabber:client' from='juliet@example.com/laptop'/>"
        )
        .own
    );
    assert!(
        !info(
            1,
            "<presence xmlns='jabber:client' from='romeo@example.net/a'/>"
        )
        .own
    );
    assert!(
        !info(
            1,
            "<iq xmlns='jabber:client' type='set' id='p' from='juliet@example.com'/>"
        )
        .own
    );
    assert!(
        !info(
            1,
            "<message xmlns='jabber:client' from='romeo@example.net/a'><body>hi</body></message>"
        )
        .own
    );
}

#[test]
fn own_presence_echo_never_pushes_on_hibernation() {
    // The client enabled push, sent its presence and lost the connection before acking
    // the reflection: nothing new for the device, no push.
    let (c, mut e) = one_device(PushConfig::default());
    let a = e.hibernation_started(S1, &[own_presence(1)], c.at(0.3));
    assert!(pushes(&a).is_empty());
    // A stranger's presence right after still follows the rules (an unimportant push).
    let a = e.stanza_queued(
        S1,
        &info(
            2,
            "<presence xmlns='jabber:client' from='romeo@example.net/a'/>",
        ),
        c.at(0.5),
    );
    assert_eq!(pushes(&a).len(), 1);
    assert_eq!(priority_of(&a[0]).as_deref(), Some("low"));
}

#[test]
fn own_presence_echo_never_pushes_on_ack_delay() {
    // CSI inactive right after login: the ack-delay path sees only the echo.
    let (c, mut e) = one_device(PushConfig::default());
    assert!(pushes(&e.ack_delayed(S1, &[own_presence(1)], c.at(1.0))).is_empty());
    assert!(pushes(&e.stanza_queued(S1, &own_presence(2), c.at(1.1))).is_empty());
}

#[test]
fn own_iq_result_never_pushes() {
    let (c, mut e) = one_device(PushConfig::default());
    assert!(pushes(&e.ack_delayed(S1, &[iq_result(1)], c.at(1.0))).is_empty());
    e.hibernation_started(S1, &[iq_result(1)], c.at(2.0));
    assert!(pushes(&e.stanza_queued(S1, &iq_result(2), c.at(3.0))).is_empty());
    // A message in the same queue is pushed, and its count ignores the echoes.
    let a = e.stanza_queued(S1, &imp(3), c.at(4.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 1);
}

// ---- leading push and catch-up ----

#[test]
fn burst_of_three_leading_then_one_catch_up_with_count_three() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let a = e.stanza_queued(S1, &imp(1), c.at(5.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1, "the leading push goes out at once");
    assert_eq!(p[0].count, 1);
    assert_eq!(priority_of(&a[0]).as_deref(), Some("high"));
    assert!(pushes(&e.stanza_queued(S1, &imp(2), c.at(5.01))).is_empty());
    assert!(pushes(&e.stanza_queued(S1, &imp(3), c.at(5.02))).is_empty());
    assert!(
        pushes(&e.poll(c.at(5.9), 0)).is_empty(),
        "not before the window ends"
    );
    let a = e.poll(c.at(6.0), 0);
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
    assert_eq!(priority_of(&a[0]).as_deref(), Some("high"));
    // Nothing more, ever, for that burst.
    assert!(pushes(&e.poll(c.at(100.0), 0)).is_empty());
}

#[test]
fn at_most_two_pushes_per_window_whatever_the_burst() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    let mut n = 0;
    for i in 0..500u64 {
        n += pushes(&e.stanza_queued(S1, &imp(i + 1), c.at(1.0 + i as f64 * 0.001))).len();
    }
    n += pushes(&e.poll(c.at(2.0), 0)).len();
    assert_eq!(n, 2);
    assert_eq!(
        e.message_count(USER, &key("push.example.net", "phone")),
        Some(500)
    );
}

#[test]
fn unimportant_inside_an_important_window_adds_nothing() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0))).len(), 1);
    assert!(pushes(&e.stanza_queued(S1, &unimp(2), c.at(1.1))).is_empty());
    assert!(pushes(&e.stanza_queued(S1, &unimp(3), c.at(1.2))).is_empty());
    // No catch-up for unimportant stanzas.
    assert!(pushes(&e.poll(c.at(3.0), 0)).is_empty());
    assert_eq!(
        e.next_push_timer().map(|t| t > c.at(3.0)),
        Some(true),
        "only the wake timer"
    );
}

#[test]
fn important_after_an_unimportant_leading_push_goes_out_at_once() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(pushes(&e.stanza_queued(S1, &unimp(1), c.at(1.0))).len(), 1);
    let p = pushes(&e.stanza_queued(S1, &imp(2), c.at(1.1)));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 1);
}

#[test]
fn catch_up_after_the_ack_delay_push() {
    // The client ignores <r/>: the ack-delay push, then a second message right behind it
    // is not lost — the catch-up tells the device.
    let (c, mut e) = one_device(PushConfig::default());
    assert_eq!(pushes(&e.ack_delayed(S1, &[imp(1)], c.at(60.0))).len(), 1);
    assert!(pushes(&e.stanza_queued(S1, &imp(2), c.at(60.2))).is_empty());
    let p = pushes(&e.poll(c.at(61.0), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 2);
}

#[test]
fn no_catch_up_once_the_device_is_back() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0))).len(), 1);
    assert!(pushes(&e.stanza_queued(S1, &imp(2), c.at(1.1))).is_empty());
    e.resumed(S1, c.at(1.5));
    assert!(pushes(&e.poll(c.at(3.0), 0)).is_empty());
    // Same when the overdue ack arrives.
    assert_eq!(pushes(&e.ack_delayed(S1, &[imp(3)], c.at(10.0))).len(), 1);
    assert!(pushes(&e.stanza_queued(S1, &imp(4), c.at(10.1))).is_empty());
    e.acked(S1, c.at(10.5));
    assert!(pushes(&e.poll(c.at(12.0), 0)).is_empty());
}

#[test]
fn a_call_rings_at_once_a_second_call_waits_for_the_catch_up() {
    let (c, mut e) = one_device(PushConfig::default());
    e.hibernation_started(S1, &[], c.at(0.0));
    assert_eq!(pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0))).len(), 1);
    let a = e.stanza_queued(S1, &urgent(2), c.at(1.1));
    assert_eq!(pushes(&a).len(), 1, "a call rings now");
    assert_eq!(priority_of(&a[0]).as_deref(), Some("high"));
    assert!(pushes(&e.stanza_queued(S1, &urgent(3), c.at(1.2))).is_empty());
    let p = pushes(&e.poll(c.at(2.1), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
}

#[test]
fn offline_burst_is_coalesced_too() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("a", 1, "a")]);
    let mut n = 0;
    for i in 1..=3 {
        n += pushes(&e.stored_offline(USER, &imp(i), c.at(0.01 * i as f64))).len();
    }
    assert_eq!(n, 1);
    let p = pushes(&e.poll(c.at(1.5), 0));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].count, 3);
}

// ---- fair admission ----

#[test]
fn a_flood_with_dead_app_servers_does_not_starve_another_user() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_pending: 50,
        max_pending_per_user: 10,
        max_pending_per_app_server: 40,
        ..Default::default()
    });
    // The flooder: five registrations on five app servers that never answer.
    let regs: Vec<Registration> = (0..5)
        .map(|i| reg_at(&format!("dead{i}.example"), &format!("n{i}"), i))
        .collect();
    e.load_user("flood@example.com", regs);
    let mut flood_pushes = 0;
    for i in 0..1000u64 {
        flood_pushes +=
            pushes(&e.stored_offline("flood@example.com", &imp(i), c.at(i as f64 * 1.5))).len();
    }
    assert_eq!(flood_pushes, 10, "the flooder's share");
    assert!(e.pending_len() <= 10);
    assert_eq!(
        e.owed_len(),
        5,
        "one owed push per registration, not one per stanza"
    );
    // Another user's push goes out at once.
    e.load_user(USER, vec![reg("a", 1, "a")]);
    let p = pushes(&e.stored_offline(USER, &imp(5000), c.at(1500.0)));
    assert_eq!(p.len(), 1);
    // When the flooder's publishes time out for good, its owed pushes go out with the
    // latest count.
    let mut later = Vec::new();
    for step in 0..400 {
        later.extend(pushes(&e.poll(c.at(1500.0 + step as f64), 0)));
    }
    let owed: Vec<_> = later
        .iter()
        .filter(|p| p.user == "flood@example.com")
        .collect();
    // (Retries of the first publishes carry their old counts.)
    let mut latest: Vec<&str> = owed
        .iter()
        .filter(|p| p.count == 1000)
        .map(|p| p.node.as_str())
        .collect();
    latest.sort();
    latest.dedup();
    assert_eq!(
        latest,
        vec!["n0", "n1", "n2", "n3", "n4"],
        "each owed push, latest count"
    );
}

#[test]
fn an_app_server_share_protects_the_users_of_other_app_servers() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_pending: 100,
        max_pending_per_user: 100,
        max_pending_per_app_server: 3,
        ..Default::default()
    });
    for u in 0..5 {
        e.load_user(
            &format!("u{u}@example.com"),
            vec![reg_at("dead.example", "n", 1)],
        );
    }
    let mut sent = 0;
    for u in 0..5 {
        sent += pushes(&e.stored_offline(&format!("u{u}@example.com"), &imp(1), c.at(0.0))).len();
    }
    assert_eq!(sent, 3);
    e.load_user(USER, vec![reg_at("alive.example", "n", 1)]);
    assert_eq!(pushes(&e.stored_offline(USER, &imp(2), c.at(0.0))).len(), 1);
}

#[test]
fn owed_push_is_sent_when_a_slot_frees_and_dropped_when_the_device_returns() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_pending_per_user: 1,
        ..Default::default()
    });
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("phone", 100, "phone"), c.at(0.0));
    e.hibernation_started(S1, &[], c.at(0.0));
    let p = pushes(&e.stanza_queued(S1, &imp(1), c.at(1.0)));
    assert_eq!(p.len(), 1);
    // The next window's push does not fit the share: owed.
    assert!(pushes(&e.stanza_queued(S1, &imp(2), c.at(3.0))).is_empty());
    assert_eq!(e.owed_len(), 1);
    let a = e.reply(&p[0].iq_id, Reply::Result, c.at(3.5), 0);
    let p2 = pushes(&a);
    assert_eq!(p2.len(), 1, "the owed push follows the reply");
    assert_eq!(p2[0].count, 2);
    // Owed again, then the device resumes: nothing is sent for it.
    assert!(pushes(&e.stanza_queued(S1, &imp(3), c.at(6.0))).is_empty());
    assert_eq!(e.owed_len(), 1);
    e.resumed(S1, c.at(6.5));
    assert_eq!(e.owed_len(), 0);
    assert!(pushes(&e.reply(&p2[0].iq_id, Reply::Result, c.at(7.0), 0)).is_empty());
}

// ---- eviction ----

#[test]
fn idle_users_are_evicted_busy_ones_kept() {
    let c = Clock::new();
    let ttl = std::time::Duration::from_secs(600);
    let mut e = engine(PushConfig {
        idle_user_ttl: ttl,
        ..Default::default()
    });
    // Idle: loaded for one offline message, pushed, answered.
    e.load_user("idle@example.com", vec![reg("a", 1, "a")]);
    let p = pushes(&e.stored_offline("idle@example.com", &imp(1), c.at(0.0)));
    e.reply(&p[0].iq_id, Reply::Result, c.at(0.1), 0);
    // Loaded with no registrations at all (a recipient of archived messages).
    e.load_user("nobody@example.com", Vec::new());
    assert!(pushes(&e.archived_for("nobody@example.com", &imp(2), c.at(0.0))).is_empty());
    // Busy: a live session; and one whose app server has not answered yet.
    e.session_started("live@example.com", 7, "r", c.at(0.0));
    e.load_user("waiting@example.com", vec![reg("w", 1, "w")]);
    e.stored_offline("waiting@example.com", &imp(3), c.at(599.0));
    let loaded = e.loaded_users();
    let mut t = 0.0;
    while let Some(d) = e.next_deadline() {
        if d > c.at(1300.0) {
            break;
        }
        t = d.duration_since(c.base).as_secs_f64();
        e.poll(d, 0);
    }
    assert!(t > 600.0, "a sweep ran");
    assert!(!e.is_loaded("idle@example.com"));
    assert!(!e.is_loaded("nobody@example.com"));
    assert!(e.is_loaded("waiting@example.com") || e.pending_len() == 0);
    assert!(e.loaded_users() < loaded);
    // Loaded again on the next event, with the store's registrations.
    e.load_user("idle@example.com", vec![reg("a", 1, "a")]);
    assert_eq!(
        pushes(&e.stored_offline("idle@example.com", &imp(4), c.at(1400.0))).len(),
        1
    );
}

#[test]
fn a_user_with_a_session_is_never_evicted() {
    let (c, mut e) = one_device(PushConfig {
        idle_user_ttl: std::time::Duration::from_secs(10),
        ..Default::default()
    });
    for s in 1..100 {
        e.poll(c.at(s as f64 * 10.0), 0);
    }
    assert!(e.is_loaded(USER));
}

// ---- virtual hosts, priorities, removals, test pushes ----

#[test]
fn a_virtual_host_has_its_own_options_and_domain() {
    let c = Clock::new();
    let mut e = Engine::new(PushConfig {
        domain: "example.com".into(),
        ..Default::default()
    });
    e.set_host_config(
        "full.example",
        PushConfig {
            domain: "full.example".into(),
            with_body: true,
            with_sender: true,
            ..Default::default()
        },
    );
    e.load_user("a@example.com", vec![reg("a", 1, "a")]);
    e.load_user("b@full.example", vec![reg("b", 1, "b")]);
    let primary = e.stored_offline("a@example.com", &imp(1), c.at(0.0));
    let host = e.stored_offline("b@full.example", &imp(1), c.at(0.0));
    let (p, h) = (pushes(&primary), pushes(&host));
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
    assert_eq!(p[0].sender, None);
    assert_eq!(h[0].body.as_deref(), Some("body 1"));
    assert_eq!(h[0].sender.as_deref(), Some("romeo@example.com"));
    let from = |a: &[Action]| match &a[0] {
        Action::Publish { iq, .. } => iq.attr("from").map(str::to_owned),
        _ => None,
    };
    assert_eq!(from(&primary).as_deref(), Some("example.com"));
    assert_eq!(from(&host).as_deref(), Some("full.example"));
}

#[test]
fn removals_say_why() {
    let c = Clock::new();
    let mut e = engine(PushConfig {
        max_devices: 1,
        max_errors: 1,
        ..Default::default()
    });
    e.session_started(USER, S1, "phone", c.at(0.0));
    e.enable(USER, S1, reg("old", 1, "phone"), c.at(0.0));
    let a = e.enable(USER, S1, reg("new", 2, "phone"), c.at(0.0));
    assert!(a.iter().any(|a| matches!(
        a,
        Action::DeleteRegistration {
            reason: Removal::Evicted,
            ..
        }
    )));
    let p = pushes(&e.stored_offline(USER, &imp(1), c.at(1.0)));
    let a = e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: false,
            condition: "item-not-found".into(),
        },
        c.at(1.1),
        0,
    );
    assert!(a.iter().any(|a| matches!(a, Action::DeleteRegistration { reason: Removal::Errors(c), .. } if c == "item-not-found")));
    e.enable(USER, S1, reg("n3", 3, "phone"), c.at(2.0));
    let a = e.disable(USER, "push.example.net", None, c.at(3.0));
    assert!(a.iter().any(|a| matches!(
        a,
        Action::DeleteRegistration {
            reason: Removal::Disabled,
            ..
        }
    )));
}

#[test]
fn test_push_filters_and_is_never_retried() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(
        USER,
        vec![
            reg_at("p1.example", "a", 1),
            reg_at("p1.example", "b", 2),
            reg_at("p2.example", "c", 3),
        ],
    );
    assert_eq!(pushes(&e.test_push(USER, None, None, c.at(0.0))).len(), 3);
    assert_eq!(
        pushes(&e.test_push(USER, Some("p1.example"), None, c.at(0.0))).len(),
        2
    );
    let a = e.test_push(USER, Some("p1.example"), Some("b"), c.at(0.0));
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    assert_eq!(priority_of(&a[0]).as_deref(), Some("low"));
    let a = e.reply(
        &p[0].iq_id,
        Reply::Error {
            wait: true,
            condition: "resource-constraint".into(),
        },
        c.at(0.5),
        0,
    );
    assert!(pushes(&a).is_empty());
    assert!(a.iter().any(|a| matches!(a, Action::SaveStats { last_result: Some(r), key: RegKey { node, .. }, .. } if r == "wait" && node == "b")));
}
