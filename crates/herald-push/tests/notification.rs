//! The summary form for each option combination, and the publish IQ's shape.

mod common;

use common::*;
use herald_push::engine::{Action, PushConfig, Registration};
use herald_push::notification::{build_publish, Notice, Priority};
use minidom::Element;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

fn options_form() -> Element {
    "<x xmlns='jabber:x:data' type='submit'>\
     <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
     <field var='secret'><value>eruio234vzxc2kla-91</value></field>\
     <field var='endpoint'><value>https://push.example.net/v1/abc?x=1&amp;y=2</value></field>\
     </x>"
        .parse()
        .unwrap()
}

fn vars(form: &Element) -> Vec<String> {
    form.children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect()
}

#[test]
fn publish_iq_shape() {
    let k = key("push.example.net", "yxs32uqsflafdk3iuqo");
    let iq = build_publish(
        "example.com",
        "id-1",
        &k,
        &Notice {
            count: 4,
            sender: Some("romeo@example.net".into()),
            body: Some("Hi".into()),
            priority: Some(Priority::High),
        },
        None,
    );
    assert!(iq.is("iq", "jabber:client"));
    assert_eq!(iq.attr("type"), Some("set"));
    assert_eq!(iq.attr("from"), Some("example.com"));
    assert_eq!(iq.attr("to"), Some("push.example.net"));
    assert_eq!(iq.attr("id"), Some("id-1"));
    let pubsub = iq.get_child("pubsub", PUBSUB).unwrap();
    let publish = pubsub.get_child("publish", PUBSUB).unwrap();
    assert_eq!(publish.attr("node"), Some("yxs32uqsflafdk3iuqo"));
    assert!(pubsub.get_child("publish-options", PUBSUB).is_none());
    let form = form_of(&iq);
    assert_eq!(form.attr("type"), Some("submit"));
    assert_eq!(
        vars(&form),
        vec![
            "FORM_TYPE",
            "message-count",
            "last-message-sender",
            "last-message-body"
        ]
    );
    let ft = form.children().next().unwrap();
    assert_eq!(
        ft.get_child("value", "jabber:x:data").unwrap().text(),
        "urn:xmpp:push:summary"
    );
    let p = pushes(&[Action::Publish {
        iq_id: "id-1".into(),
        user: USER.into(),
        key: k,
        iq: iq.clone(),
    }]);
    assert_eq!(p[0].count, 4);
    assert_eq!(p[0].sender.as_deref(), Some("romeo@example.net"));
    assert_eq!(p[0].body.as_deref(), Some("Hi"));
    // The Tigase priority hint follows the form inside <notification/>.
    let notification = iq
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish", PUBSUB))
        .and_then(|p| p.get_child("item", PUBSUB))
        .and_then(|i| i.get_child("notification", "urn:xmpp:push:0"))
        .unwrap();
    let prio = notification
        .get_child("priority", "tigase:push:priority:0")
        .unwrap();
    assert_eq!(prio.text(), "high");
}

#[test]
fn publish_options_copied_unchanged() {
    let opts = options_form();
    let k = key("push.example.net", "n");
    let iq = build_publish(
        "example.com",
        "i",
        &k,
        &Notice {
            count: 1,
            ..Notice::default()
        },
        Some(&opts),
    );
    let po = iq
        .get_child("pubsub", PUBSUB)
        .unwrap()
        .get_child("publish-options", PUBSUB)
        .unwrap();
    let children: Vec<&Element> = po.children().collect();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0], &opts);
    // And through the engine, from the stored registration.
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    let r = Registration {
        publish_options: Some(opts.clone()),
        ..reg("n", 1, "phone")
    };
    e.load_user(USER, vec![r]);
    let a = e.stored_offline(USER, &imp(1), c.at(0.0));
    let Action::Publish { iq, .. } = &a[0] else {
        panic!("{a:?}")
    };
    let po = iq
        .get_child("pubsub", PUBSUB)
        .unwrap()
        .get_child("publish-options", PUBSUB)
        .unwrap();
    assert_eq!(po.children().next(), Some(&opts));
    // Serialised form survives a round trip byte-for-byte in meaning.
    let mut out = Vec::new();
    iq.write_to(&mut out).unwrap();
    let back: Element = String::from_utf8(out).unwrap().parse().unwrap();
    assert_eq!(&back, iq);
}

/// (with_body, with_sender, important_body, stanza, want sender, want body)
type Case = (
    bool,
    bool,
    &'static str,
    herald_push::engine::StanzaInfo,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn summary_form_for_each_option_combination() {
    // (with_body, with_sender, important_body, stanza, want sender, want body)
    let cases: Vec<Case> = vec![
        (
            false,
            false,
            "New Message!",
            imp(1),
            None,
            Some("New Message!"),
        ),
        (false, false, "New Message!", unimp(1), None, None),
        (
            false,
            false,
            "New Message!",
            urgent(1),
            None,
            Some("New Message!"),
        ),
        (false, false, "", imp(1), None, None),
        (true, false, "New Message!", imp(1), None, Some("body 1")),
        (true, false, "New Message!", unimp(1), None, None),
        (
            false,
            true,
            "New Message!",
            imp(1),
            Some("romeo@example.com"),
            Some("New Message!"),
        ),
        (
            false,
            true,
            "New Message!",
            unimp(1),
            Some("romeo@example.com"),
            None,
        ),
        (
            true,
            true,
            "",
            imp(1),
            Some("romeo@example.com"),
            Some("body 1"),
        ),
        (
            true,
            true,
            "Ping",
            unimp(1),
            Some("romeo@example.com"),
            None,
        ),
    ];
    for (i, (with_body, with_sender, important_body, s, sender, body)) in
        cases.into_iter().enumerate()
    {
        let c = Clock::new();
        let mut e = engine(PushConfig {
            with_body,
            with_sender,
            important_body: important_body.to_owned(),
            ..Default::default()
        });
        e.load_user(USER, vec![reg("n", 1, "phone")]);
        let p = pushes(&e.stored_offline(USER, &s, c.at(0.0)));
        assert_eq!(p.len(), 1, "case {i}");
        assert_eq!(p[0].sender.as_deref(), sender, "case {i} sender");
        assert_eq!(p[0].body.as_deref(), body, "case {i} body");
        let want_count = u32::from(s.importance.is_important());
        assert_eq!(p[0].count, want_count, "case {i} count");
    }
}

#[test]
fn with_body_but_no_readable_body_falls_back_to_placeholder() {
    // An OMEMO message without a body is important; with_body has nothing to show.
    let c = Clock::new();
    let mut e = engine(PushConfig {
        with_body: true,
        ..Default::default()
    });
    e.load_user(USER, vec![reg("n", 1, "phone")]);
    let mut s = imp(1);
    s.summary.body = None;
    let p = pushes(&e.stored_offline(USER, &s, c.at(0.0)));
    assert_eq!(p[0].body.as_deref(), Some("New Message!"));
}

#[test]
fn publish_comes_from_the_configured_domain() {
    let c = Clock::new();
    let mut e = engine(PushConfig::default());
    e.load_user(USER, vec![reg("n", 1, "phone")]);
    let a = e.stored_offline(USER, &imp(1), c.at(0.0));
    let Action::Publish { iq, user, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(iq.attr("from"), Some("example.com"));
    assert_eq!(user, USER);
}
