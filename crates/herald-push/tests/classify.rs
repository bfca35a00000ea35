//! Importance of each stanza kind and the summary extracted from it.

use herald_push::classify::{classify, summarize, Classifier, Importance, Summary};
use minidom::Element;

use Importance::*;

fn el(xml: &str) -> Element {
    xml.parse().unwrap()
}

const C: &str =
    "xmlns='jabber:client' from='romeo@example.net/orchard' to='juliet@example.com/balcony'";

fn msg(attrs: &str, inner: &str) -> String {
    format!("<message {C} {attrs}>{inner}</message>")
}

fn carbon(kind: &str, inner_msg: &str) -> String {
    format!(
        "<message xmlns='jabber:client' from='juliet@example.com' to='juliet@example.com/balcony'>\
         <{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner_msg}\
         </forwarded></{kind}></message>"
    )
}

#[test]
fn importance_table() {
    let cases: Vec<(&str, String, Importance)> = vec![
        ("chat body", msg("type='chat'", "<body>Hi</body>"), Important),
        ("normal body", msg("", "<body>Hi</body>"), Important),
        ("groupchat body", msg("type='groupchat'", "<body>Hi all</body>"), Important),
        ("empty body", msg("type='chat'", "<body></body>"), Unimportant),
        ("whitespace body", msg("type='chat'", "<body>  \n</body>"), Unimportant),
        ("no body", msg("type='chat'", ""), Unimportant),
        (
            "OMEMO legacy",
            msg("type='chat'", "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>x</payload></encrypted>"),
            Important,
        ),
        (
            "OMEMO 0",
            msg("type='chat'", "<encrypted xmlns='urn:xmpp:omemo:0'/>"),
            Important,
        ),
        (
            "OMEMO 2",
            msg("type='chat'", "<encrypted xmlns='urn:xmpp:omemo:2'/>"),
            Important,
        ),
        (
            "XEP-0027 PGP",
            msg("type='chat'", "<x xmlns='jabber:x:encrypted'>qANQR1DBw</x>"),
            Important,
        ),
        (
            "OX",
            msg("type='chat'", "<openpgp xmlns='urn:xmpp:openpgp:0'>BASE64</openpgp>"),
            Important,
        ),
        (
            "JMI propose",
            msg("", "<propose xmlns='urn:xmpp:jingle-message:0' id='a73sjjvkla37jfea'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"),
            Urgent,
        ),
        (
            "JMI retract",
            msg("", "<retract xmlns='urn:xmpp:jingle-message:0' id='a73sjjvkla37jfea'/>"),
            Unimportant,
        ),
        ("presence", format!("<presence {C}/>"), Unimportant),
        (
            "presence with status",
            format!("<presence {C}><status>away</status></presence>"),
            Unimportant,
        ),
        (
            "iq",
            format!("<iq {C} type='get' id='1'><query xmlns='jabber:iq:version'/></iq>"),
            Unimportant,
        ),
        ("headline", msg("type='headline'", "<body>News</body>"), Unimportant),
        // XEP-0163 PEP notifications: an OMEMO device list or an avatar is not a message a
        // human waits for, even though its namespace is OMEMO's.
        (
            "PEP notification of an OMEMO device list",
            msg("type='headline'", "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='eu.siacs.conversations.axolotl.devicelist'><item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list></item></items></event>"),
            Unimportant,
        ),
        (
            "PEP notification of avatar metadata",
            msg("type='headline'", "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='h'><metadata xmlns='urn:xmpp:avatar:metadata'/></item></items></event>"),
            Unimportant,
        ),
        ("error message", msg("type='error'", "<body>Hi</body><error type='cancel'/>"), Unimportant),
        (
            "sent carbon",
            carbon("sent", "<message xmlns='jabber:client' from='juliet@example.com/phone' to='romeo@example.net' type='chat'><body>Hi</body></message>"),
            Unimportant,
        ),
        (
            "received carbon of body",
            carbon("received", "<message xmlns='jabber:client' from='romeo@example.net/orchard' to='juliet@example.com/phone' type='chat'><body>Hi</body></message>"),
            Important,
        ),
        (
            "received carbon of chat state",
            carbon("received", "<message xmlns='jabber:client' from='romeo@example.net/orchard' to='juliet@example.com/phone' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            Unimportant,
        ),
        (
            "received carbon of OMEMO",
            carbon("received", "<message xmlns='jabber:client' from='romeo@example.net/orchard' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"),
            Important,
        ),
        (
            "groupchat subject",
            msg("type='groupchat'", "<subject>Fire Burn and Cauldron Bubble!</subject>"),
            Unimportant,
        ),
        (
            "receipt",
            msg("", "<received xmlns='urn:xmpp:receipts' id='richard2-4.1.247'/>"),
            Unimportant,
        ),
        (
            "chat marker",
            msg("type='chat'", "<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>"),
            Unimportant,
        ),
        (
            "chat state",
            msg("type='chat'", "<active xmlns='http://jabber.org/protocol/chatstates'/>"),
            Unimportant,
        ),
        (
            "body in a foreign namespace",
            msg("type='chat'", "<body xmlns='urn:example'>Hi</body>"),
            Unimportant,
        ),
    ];
    for (name, xml, want) in cases {
        assert_eq!(classify(&el(&xml)), want, "{name}: {xml}");
    }
}

#[test]
fn configured_extra_payload_is_important() {
    let xml = msg("type='chat'", "<ping xmlns='urn:example:wake'/>");
    assert_eq!(classify(&el(&xml)), Unimportant);
    let c = Classifier {
        extra_important: vec![("urn:example:wake".to_owned(), "ping".to_owned())],
    };
    assert_eq!(c.classify(&el(&xml)), Important);
    // Configured payloads do not turn headlines or presence important.
    let headline = msg("type='headline'", "<ping xmlns='urn:example:wake'/>");
    assert_eq!(c.classify(&el(&headline)), Unimportant);
    let presence = format!("<presence {C}><ping xmlns='urn:example:wake'/></presence>");
    assert_eq!(c.classify(&el(&presence)), Unimportant);
    // Same name in another namespace does not count.
    let other = msg("type='chat'", "<ping xmlns='urn:example:other'/>");
    assert_eq!(c.classify(&el(&other)), Unimportant);
}

#[test]
fn importance_order_and_csi_predicate() {
    assert!(Urgent > Important && Important > Unimportant);
    assert!(Urgent.is_important() && Important.is_important());
    assert!(!Unimportant.is_important());
}

#[test]
fn summary_of_plain_message() {
    let s = summarize(&el(&msg("type='chat'", "<body>Hi there</body>")));
    assert_eq!(
        s,
        Summary {
            sender: Some("romeo@example.net".to_owned()),
            body: Some("Hi there".to_owned()),
        }
    );
}

#[test]
fn summary_of_received_carbon_is_the_inner_message() {
    let xml = carbon(
        "received",
        "<message xmlns='jabber:client' from='nurse@example.org/kitchen' type='chat'><body>Come in</body></message>",
    );
    let s = summarize(&el(&xml));
    assert_eq!(s.sender.as_deref(), Some("nurse@example.org"));
    assert_eq!(s.body.as_deref(), Some("Come in"));
}

#[test]
fn summary_skips_empty_bodies_and_has_none_for_presence() {
    let s = summarize(&el(&msg(
        "",
        "<body></body><body xml:lang='de'>Hallo</body>",
    )));
    assert_eq!(s.body.as_deref(), Some("Hallo"));
    let p = summarize(&el(&format!("<presence {C}><status>x</status></presence>")));
    assert_eq!(p.sender.as_deref(), Some("romeo@example.net"));
    assert_eq!(p.body, None);
    let anon = summarize(&el(
        "<message xmlns='jabber:client'><body>x</body></message>",
    ));
    assert_eq!(anon.sender, None);
}

#[test]
fn csi_holds_only_unimportant_messages_and_availability() {
    let c = Classifier::default();
    for (xml, held) in [
        ("<presence xmlns='jabber:client'/>", true),
        ("<presence xmlns='jabber:client' type='unavailable'/>", true),
        ("<presence xmlns='jabber:client' type='subscribe'/>", false),
        ("<iq xmlns='jabber:client' type='get' id='1'/>", false),
        (
            &msg(
                "type='chat'",
                "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            ),
            true,
        ),
        (&msg("type='chat'", "<body>hi</body>"), false),
    ] {
        assert_eq!(c.csi_may_hold(&el(xml)), held, "{xml}");
    }
}

#[test]
fn pep_notifications_never_wake() {
    let event = "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'/></event>";
    for (name, xml, want) in [
        ("PEP headline", msg("type='headline'", event), true),
        // Only a headline: a chat message that happens to carry an event still may.
        ("chat with an event", msg("type='chat'", event), false),
        (
            "plain headline",
            msg("type='headline'", "<body>News</body>"),
            false,
        ),
        (
            "presence",
            format!("<presence {C}>{event}</presence>"),
            false,
        ),
    ] {
        assert_eq!(herald_push::is_pep_event(&el(&xml)), want, "{name}: {xml}");
    }
}
