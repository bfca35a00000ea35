//! Parsing of `<enable/>` and `<disable/>` (XEP-0357 §5, §6).

use herald_proto::error::StanzaErrorCondition;
use herald_push::request::{parse_command, PushCommand, PushError};
use minidom::Element;

const OWN: &str = "juliet@example.com/balcony";

fn el(xml: &str) -> Element {
    xml.parse().unwrap()
}

#[test]
fn enable_with_publish_options() {
    let xml =
        "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>\
               <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
               <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
               <field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable>";
    let e = el(xml);
    let form = e.get_child("x", "jabber:x:data").cloned();
    assert_eq!(
        parse_command(&e, OWN),
        Ok(PushCommand::Enable {
            jid: "push-5.client.example".into(),
            node: "yxs32uqsflafdk3iuqo".into(),
            publish_options: form,
        })
    );
}

#[test]
fn enable_without_node_or_form() {
    let e = el("<enable xmlns='urn:xmpp:push:0' jid='push.example.net'/>");
    assert_eq!(
        parse_command(&e, OWN),
        Ok(PushCommand::Enable {
            jid: "push.example.net".into(),
            node: String::new(),
            publish_options: None
        })
    );
}

#[test]
fn refusals() {
    let cases = [
        (
            "<enable xmlns='urn:xmpp:push:0' node='n'/>",
            PushError::MissingJid,
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='' node='n'/>",
            PushError::MissingJid,
        ),
        ("<disable xmlns='urn:xmpp:push:0'/>", PushError::MissingJid),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='juliet@example.com' node='n'/>",
            PushError::OwnJid,
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='juliet@example.com/balcony' node='n'/>",
            PushError::OwnJid,
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='JULIET@Example.COM/other' node='n'/>",
            PushError::OwnJid,
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>",
            PushError::BadJid,
        ),
        (
            "<disable xmlns='urn:xmpp:push:0' jid='a@b@c'/>",
            PushError::BadJid,
        ),
        (
            "<enable xmlns='urn:xmpp:push:1' jid='push.example.net'/>",
            PushError::NotPush,
        ),
        (
            "<query xmlns='urn:xmpp:push:0' jid='push.example.net'/>",
            PushError::NotPush,
        ),
    ];
    for (xml, want) in cases {
        let got = parse_command(&el(xml), OWN);
        assert_eq!(got, Err(want.clone()), "{xml}");
        let cond = want.condition();
        assert!(
            cond == StanzaErrorCondition::BadRequest
                || cond == StanzaErrorCondition::FeatureNotImplemented
        );
    }
    assert_eq!(
        PushError::MissingJid.condition(),
        StanzaErrorCondition::BadRequest
    );
    assert_eq!(
        PushError::OwnJid.condition(),
        StanzaErrorCondition::BadRequest
    );
}

#[test]
fn disable_with_and_without_node() {
    assert_eq!(
        parse_command(
            &el("<disable xmlns='urn:xmpp:push:0' jid='push.example.net'/>"),
            OWN
        ),
        Ok(PushCommand::Disable {
            jid: "push.example.net".into(),
            node: None
        })
    );
    assert_eq!(
        parse_command(
            &el("<disable xmlns='urn:xmpp:push:0' jid='push.example.net' node='x'/>"),
            OWN
        ),
        Ok(PushCommand::Disable {
            jid: "push.example.net".into(),
            node: Some("x".into())
        })
    );
}

#[test]
fn app_server_jids_come_back_canonical() {
    // However the client spells the app server, enable and disable name the same one.
    let enable = parse_command(
        &el("<enable xmlns='urn:xmpp:push:0' jid='PUSH.Example.NET' node='n'/>"),
        OWN,
    );
    assert!(matches!(enable, Ok(PushCommand::Enable { ref jid, .. }) if jid == "push.example.net"));
    let disable = parse_command(
        &el("<disable xmlns='urn:xmpp:push:0' jid='Push.example.net'/>"),
        OWN,
    );
    assert!(
        matches!(disable, Ok(PushCommand::Disable { ref jid, .. }) if jid == "push.example.net")
    );
}
