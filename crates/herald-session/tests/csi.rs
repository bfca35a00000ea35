//! XEP-0352 CSI buffer hold/flush rules and the importance classification.

use herald_session::csi::{CsiBuffer, Importance};
use minidom::Element;

#[test]
fn starts_active_and_passes_straight_through() {
    let mut b = CsiBuffer::new(256);
    assert!(b.is_active());
    assert_eq!(b.offer(1, false), vec![1]);
    assert_eq!(b.offer(2, true), vec![2]);
    assert_eq!(b.held_len(), 0);
}

#[test]
fn inactive_holds_unimportant() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    assert!(!b.is_active());
    assert!(b.offer(1, false).is_empty());
    assert!(b.offer(2, false).is_empty());
    assert_eq!(b.held_len(), 2);
}

#[test]
fn important_flushes_held_in_order_then_itself() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.offer(3, true), vec![1, 2, 3]);
    assert_eq!(b.held_len(), 0);
    assert!(
        !b.is_active(),
        "an important stanza does not make the client active"
    );
    assert!(b.offer(4, false).is_empty());
    assert_eq!(b.offer(5, true), vec![4, 5]);
    // Important with nothing held is just itself.
    assert_eq!(b.offer(6, true), vec![6]);
}

#[test]
fn set_active_flushes_in_order() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.set_active(), vec![1, 2]);
    assert!(b.is_active());
    assert_eq!(b.held_len(), 0);
    assert_eq!(b.offer(3, false), vec![3]);
    // Active again with nothing held.
    assert!(b.set_active().is_empty());
}

#[test]
fn full_buffer_flushes_everything_plus_the_new_one() {
    let mut b = CsiBuffer::new(3);
    b.set_inactive();
    for i in 1..=3 {
        assert!(b.offer(i, false).is_empty());
    }
    assert_eq!(b.held_len(), 3);
    assert_eq!(b.offer(4, false), vec![1, 2, 3, 4]);
    assert_eq!(b.held_len(), 0);
    // It keeps holding afterwards.
    assert!(b.offer(5, false).is_empty());
    assert_eq!(b.held_len(), 1);
}

#[test]
fn zero_sized_buffer_never_holds() {
    let mut b = CsiBuffer::new(0);
    b.set_inactive();
    assert_eq!(b.offer(1, false), vec![1]);
    assert_eq!(b.held_len(), 0);
}

#[test]
fn take_held_empties_and_keeps_state() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.take_held(), vec![1, 2]);
    assert_eq!(b.held_len(), 0);
    assert!(!b.is_active());
    assert!(b.take_held().is_empty());
    assert!(b.offer(3, false).is_empty());
}

#[test]
fn set_inactive_twice_keeps_held() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.set_inactive();
    assert_eq!(b.held_len(), 1);
    assert_eq!(b.set_active(), vec![1]);
}

#[test]
fn every_offered_item_comes_back_once_in_order() {
    // A deterministic mixed sequence: nothing is lost, duplicated or reordered.
    let mut b = CsiBuffer::new(4);
    let mut out = Vec::new();
    for i in 0..200u32 {
        match i % 17 {
            0 => b.set_inactive(),
            9 => out.extend(b.set_active()),
            13 => out.extend(b.take_held()),
            _ => {}
        }
        out.extend(b.offer(i, i % 11 == 0));
    }
    out.extend(b.take_held());
    assert_eq!(out, (0..200).collect::<Vec<_>>());
}

// ---------- importance ----------

fn el(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn important(xml: &str) -> bool {
    Importance::new().is_important(&el(xml))
}

#[test]
fn message_with_body_is_important() {
    assert!(important(
        "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
    ));
    assert!(important(
        "<message xmlns='jabber:server'><body>hi</body></message>"
    ));
}

#[test]
fn bodyless_messages_are_not_important() {
    // Chat state, receipt, marker.
    assert!(!important(
        "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    assert!(!important(
        "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='x'/></message>"
    ));
    assert!(!important(
        "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>"
    ));
    // A foreign <body/> does not count.
    assert!(!important(
        "<message xmlns='jabber:client'><body xmlns='urn:example'>x</body></message>"
    ));
}

#[test]
fn headline_is_not_important_even_with_body_and_error_is() {
    assert!(!important(
        "<message xmlns='jabber:client' type='headline'><body>news</body></message>"
    ));
    assert!(important(
        "<message xmlns='jabber:client' type='error'><error type='cancel'/></message>"
    ));
}

#[test]
fn encrypted_payloads_calls_subjects_and_invites_are_important() {
    for payload in [
        "<encrypted xmlns='eu.siacs.conversations.axolotl'/>",
        "<encrypted xmlns='urn:xmpp:omemo:2'/>",
        "<openpgp xmlns='urn:xmpp:openpgp:0'>x</openpgp>",
        "<x xmlns='jabber:x:encrypted'>x</x>",
        "<encryption xmlns='urn:xmpp:eme:0' namespace='x'/>",
        "<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>",
        "<x xmlns='jabber:x:conference' jid='room@muc'/>",
        "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x>",
        "<subject>topic</subject>",
    ] {
        let xml = format!("<message xmlns='jabber:client'>{payload}</message>");
        assert!(important(&xml), "{payload}");
    }
    // muc#user without an invite (e.g. status codes) is not.
    assert!(!important(
        "<message xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'><status code='100'/></x></message>"
    ));
    // Other JMI messages are not in the default list.
    assert!(!important(
        "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"
    ));
}

#[test]
fn configured_payloads_extend_the_classification() {
    let xml = "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:jingle-message:0' id='c'/></message>";
    let imp = Importance::new().with_payload("retract", "urn:xmpp:jingle-message:0");
    assert!(imp.is_important(&el(xml)));
    assert!(!imp.is_important(&el(
        "<message xmlns='jabber:client'><retract xmlns='urn:other' id='c'/></message>"
    )));
}

#[test]
fn carbons_are_judged_by_the_forwarded_message() {
    let wrap = |inner: &str| {
        format!(
            "<message xmlns='jabber:client'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded></sent></message>"
        )
    };
    assert!(important(&wrap(
        "<message xmlns='jabber:client'><body>hi</body></message>"
    )));
    assert!(!important(&wrap(
        "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )));
    let received = "<message xmlns='jabber:client'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><encrypted xmlns='urn:xmpp:omemo:2'/></message></forwarded></received></message>";
    assert!(important(received));
}

#[test]
fn presence_availability_is_not_important_subscriptions_are() {
    assert!(!important("<presence xmlns='jabber:client'/>"));
    assert!(!important(
        "<presence xmlns='jabber:client' type='unavailable'/>"
    ));
    assert!(!important("<presence xmlns='jabber:client' type='error'/>"));
    for t in ["subscribe", "subscribed", "unsubscribe", "unsubscribed"] {
        assert!(important(&format!(
            "<presence xmlns='jabber:client' type='{t}'/>"
        )));
    }
}

#[test]
fn iqs_are_important() {
    assert!(important(
        "<iq xmlns='jabber:client' type='result' id='1'/>"
    ));
    assert!(important(
        "<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
}
