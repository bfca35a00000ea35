//! XEP-0280 message carbons (`urn:xmpp:carbons:2`) payloads and eligibility, with the
//! XEP-0334 `<no-copy/>` hint.
//!
//! This module decides *whether* a message is copied and builds the copies; it must not know
//! which resources have carbons enabled nor deliver anything (the carbons module does).

use herald_proto::stream::INTERNAL_NS;
use herald_proto::{ns, Element};

use crate::stanza;

/// XEP-0333: chat markers.
const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";

/// An `<enable/>` or `<disable/>` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarbonsCmd {
    /// `<enable xmlns='urn:xmpp:carbons:2'/>`
    Enable,
    /// `<disable xmlns='urn:xmpp:carbons:2'/>`
    Disable,
}

/// Reads the payload of an `<iq type='set'/>`: `Some` for `<enable/>`/`<disable/>` in the
/// carbons namespace, `None` for anything else.
pub fn parse_command(iq_payload: &Element) -> Option<CarbonsCmd> {
    if iq_payload.is("enable", ns::CARBONS) {
        Some(CarbonsCmd::Enable)
    } else if iq_payload.is("disable", ns::CARBONS) {
        Some(CarbonsCmd::Disable)
    } else {
        None
    }
}

/// XEP-0280 §6: whether a message is copied to the user's other carbons-enabled resources.
///
/// Eligible: type `chat`; type `normal` (or no type) with a `<body/>` or a payload typical of
/// one-to-one IM (receipts, chat states, chat markers). Not eligible: `error`, `groupchat`
/// and `headline`; a message that already is a carbon or a forwarded MAM result; one with
/// `<private xmlns='urn:xmpp:carbons:2'/>` or XEP-0334 `<no-copy/>`.
pub fn is_eligible(msg: &Element) -> bool {
    if !msg.is("message", INTERNAL_NS) {
        return false;
    }
    let im_payload = msg.children().any(|c| {
        c.is("body", INTERNAL_NS)
            || c.has_ns(ns::RECEIPTS)
            || c.has_ns(ns::CHATSTATES)
            || c.has_ns(CHAT_MARKERS)
    });
    let by_type = match stanza::typ(msg) {
        "chat" => true,
        // RFC 6121 §5.2.2: a missing type means normal.
        "" | "normal" => im_payload,
        // XEP-0280 §6: groupchat and headline messages are not copied; errors are not copied
        // here (a bounced copy would reach resources that never sent the original).
        _ => false,
    };
    if !by_type || is_carbon(msg) {
        return false;
    }
    // XEP-0313: a MAM result is for the querying resource only.
    !msg.children().any(|c| {
        c.is("private", ns::CARBONS)
            || c.is("no-copy", ns::HINTS)
            || c.is("result", ns::MAM)
            || c.is("result", ns::MAM1)
    })
}

/// The `<received/>` copy (XEP-0280 §7.3) of a message the user received, for the user's
/// resource `to_full`.
pub fn received_copy(user_bare: &str, to_full: &str, original: &Element) -> Element {
    wrap("received", user_bare, to_full, original)
}

/// The `<sent/>` copy (XEP-0280 §7.4) of a message one of the user's resources sent, for the
/// user's other resource `to_full`.
pub fn sent_copy(user_bare: &str, to_full: &str, original: &Element) -> Element {
    wrap("sent", user_bare, to_full, original)
}

fn wrap(kind: &str, user_bare: &str, to_full: &str, original: &Element) -> Element {
    let mut msg = stanza::new(
        "message",
        INTERNAL_NS,
        &[("from", user_bare), ("to", to_full)],
    );
    // XEP-0280 §7.3: the wrapper keeps the original's type so type-based routing and CSI
    // treat it like the original.
    if let Some(t) = original.attr("type") {
        stanza::set(&mut msg, "type", t);
    }
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    forwarded.append_child(original.clone());
    let mut carbon = Element::bare(kind, ns::CARBONS);
    carbon.append_child(forwarded);
    msg.append_child(carbon);
    msg
}

/// Removes `<private xmlns='urn:xmpp:carbons:2'/>` (XEP-0280 §8: the sending server strips
/// it before delivering the message to the recipient); whether one was present.
pub fn strip_private(msg: &mut Element) -> bool {
    super::remove_children(msg, |c| c.is("private", ns::CARBONS)) > 0
}

/// Whether the message is a carbon copy (has a `<received/>` or `<sent/>` child in the
/// carbons namespace). XEP-0280 §10: a server must not accept these from clients, and must
/// drop ones from remote entities that did not come from the user's own server.
pub fn is_carbon(msg: &Element) -> bool {
    msg.children()
        .any(|c| c.is("received", ns::CARBONS) || c.is("sent", ns::CARBONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn commands() {
        // XEP-0280 §4 and §5 examples.
        assert_eq!(
            parse_command(&el("<enable xmlns='urn:xmpp:carbons:2'/>")),
            Some(CarbonsCmd::Enable)
        );
        assert_eq!(
            parse_command(&el("<disable xmlns='urn:xmpp:carbons:2'/>")),
            Some(CarbonsCmd::Disable)
        );
        assert_eq!(
            parse_command(&el("<enable xmlns='urn:xmpp:carbons:1'/>")),
            None
        );
        assert_eq!(
            parse_command(&el("<enabled xmlns='urn:xmpp:carbons:2'/>")),
            None
        );
    }

    #[test]
    fn eligibility_by_type() {
        let cases = [
            ("<message xmlns='jabber:client' type='chat'/>", true),
            ("<message xmlns='jabber:client' type='chat'><body>x</body></message>", true),
            ("<message xmlns='jabber:client' type='normal'><body>x</body></message>", true),
            ("<message xmlns='jabber:client'><body>x</body></message>", true),
            ("<message xmlns='jabber:client'/>", false),
            ("<message xmlns='jabber:client' type='normal'/>", false),
            (
                "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='a'/></message>",
                true,
            ),
            (
                "<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                true,
            ),
            (
                "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='a'/></message>",
                true,
            ),
            ("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>", false),
            ("<message xmlns='jabber:client' type='headline'><body>x</body></message>", false),
            ("<message xmlns='jabber:client' type='error'><body>x</body></message>", false),
            ("<message xmlns='jabber:client' type='bogus'><body>x</body></message>", false),
            ("<presence xmlns='jabber:client'/>", false),
            ("<message xmlns='jabber:server' type='chat'/>", false),
        ];
        for (xml, want) in cases {
            assert_eq!(is_eligible(&el(xml)), want, "{xml}");
        }
    }

    #[test]
    fn private_and_no_copy_opt_out() {
        // XEP-0280 §8 example.
        let m = el(
            "<message xmlns='jabber:client' from='romeo@montague.example/garden' \
             to='juliet@capulet.example/balcony' type='chat'><body>Neither, fair saint</body>\
             <private xmlns='urn:xmpp:carbons:2'/></message>",
        );
        assert!(!is_eligible(&m));
        let m = el("<message xmlns='jabber:client' type='chat'><body>x</body>\
             <no-copy xmlns='urn:xmpp:hints'/></message>");
        assert!(!is_eligible(&m));
    }

    #[test]
    fn carbons_and_mam_results_are_not_copied_again() {
        let orig = el("<message xmlns='jabber:client' type='chat'><body>x</body></message>");
        let copy = received_copy("juliet@capulet.example", "juliet@capulet.example/a", &orig);
        assert!(is_carbon(&copy));
        assert!(!is_eligible(&copy));
        let mam = el(
            "<message xmlns='jabber:client' type='chat'><result xmlns='urn:xmpp:mam:2' \
             id='1'/></message>",
        );
        assert!(!is_eligible(&mam));
        // XEP-0280 §6: MUC private messages are type chat and copied.
        let muc_pm = el("<message xmlns='jabber:client' type='chat'><body>pm</body>\
             <x xmlns='http://jabber.org/protocol/muc#user'/></message>");
        assert!(is_eligible(&muc_pm));
    }

    #[test]
    fn received_copy_matches_xep_example() {
        // XEP-0280 §7.3 example.
        let orig = el("<message xmlns='jabber:client' from='romeo@montague.example/home' \
             to='juliet@capulet.example/balcony' type='chat'><body>Wherefore art thou, Romeo?</body>\
             <thread>0e3141cd80894871a68e6fe6b1ec56fa</thread></message>");
        let c = received_copy(
            "juliet@capulet.example",
            "juliet@capulet.example/chamber",
            &orig,
        );
        assert!(c.is("message", INTERNAL_NS));
        assert_eq!(c.attr("from"), Some("juliet@capulet.example"));
        assert_eq!(c.attr("to"), Some("juliet@capulet.example/chamber"));
        assert_eq!(c.attr("type"), Some("chat"));
        let fwd = c
            .get_child("received", ns::CARBONS)
            .and_then(|r| r.get_child("forwarded", ns::FORWARD))
            .unwrap();
        assert_eq!(fwd.children().next(), Some(&orig));
        assert!(c.get_child("sent", ns::CARBONS).is_none());
    }

    #[test]
    fn sent_copy_matches_xep_example() {
        // XEP-0280 §7.4 example; the original has no type here.
        let orig = el(
            "<message xmlns='jabber:client' to='romeo@montague.example/home' \
             from='juliet@capulet.example/balcony'><body>Romeo, Romeo</body></message>",
        );
        let c = sent_copy(
            "juliet@capulet.example",
            "juliet@capulet.example/chamber",
            &orig,
        );
        assert_eq!(c.attr("type"), None);
        let fwd = c
            .get_child("sent", ns::CARBONS)
            .and_then(|r| r.get_child("forwarded", ns::FORWARD))
            .unwrap();
        assert_eq!(fwd.children().next(), Some(&orig));
    }

    #[test]
    fn strip_private_removes_all() {
        let mut m = el("<message xmlns='jabber:client' type='chat'><body>x</body>\
             <private xmlns='urn:xmpp:carbons:2'/><private xmlns='urn:xmpp:carbons:2'/></message>");
        assert!(strip_private(&mut m));
        assert!(!m.has_child("private", ns::CARBONS));
        assert!(m.has_child("body", INTERNAL_NS));
        assert!(!strip_private(&mut m));
    }

    #[test]
    fn is_carbon_detects_both_directions() {
        assert!(is_carbon(&el(
            "<message xmlns='jabber:client'><sent xmlns='urn:xmpp:carbons:2'/></message>"
        )));
        assert!(is_carbon(&el(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:carbons:2'/></message>"
        )));
        assert!(!is_carbon(&el(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts'/></message>"
        )));
    }
}
