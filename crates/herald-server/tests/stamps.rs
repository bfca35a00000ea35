//! Stamps only this server may put on a stanza (XEP-0359 stanza-ids by our accounts or
//! domains, XEP-0203 delays from our domains) are stripped from what clients and components
//! send, so the recipient sees only the server's own.

mod common;

use common::*;
use herald_proto::Element;

const SID: &str = "urn:xmpp:sid:0";
const DELAY: &str = "urn:xmpp:delay";

fn forged(from: &str, text: &str) -> String {
    format!(
        "<message {from} to='bob@localhost' type='chat' id='m1'><body>{text}</body>\
         <stanza-id xmlns='{SID}' id='forged' by='bob@localhost'/>\
         <stanza-id xmlns='{SID}' id='forged2' by='localhost'/>\
         <delay xmlns='{DELAY}' from='localhost' stamp='2001-01-01T00:00:00Z'/></message>"
    )
}

async fn bob_gets(bob: &mut RawClient, text: &str) -> Element {
    let m = bob
        .wait_for("the message", |el| {
            el.name() == "message"
                && el.get_child("body", "jabber:client").map(|b| b.text()) == Some(text.into())
        })
        .await;
    let ids: Vec<(Option<&str>, Option<&str>)> = m
        .children()
        .filter(|c| c.is("stanza-id", SID))
        .map(|c| (c.attr("id"), c.attr("by")))
        .collect();
    assert_eq!(ids.len(), 1, "{}", String::from(&m));
    assert_eq!(ids[0].1, Some("bob@localhost"));
    assert_ne!(ids[0].0, Some("forged"));
    assert!(
        !m.children().any(|c| c.is("delay", DELAY)),
        "{}",
        String::from(&m)
    );
    m
}

#[tokio::test]
async fn forged_stamps_from_a_client_are_stripped() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    bob.send("<presence/>").await;
    let mut alice = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    alice.send(&forged("", "from alice")).await;
    bob_gets(&mut bob, "from alice").await;
}

#[tokio::test]
async fn forged_stamps_from_a_component_are_stripped() {
    let s = TestServer::start().await;
    s.add_user("bob", "pw");
    let mut bob = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    bob.send("<presence/>").await;
    let mut comp = RawClient::component(s.component_addr(), "push.localhost", "s3cret").await;
    comp.send(&forged("from='bot@push.localhost'", "from the component"))
        .await;
    bob_gets(&mut bob, "from the component").await;
}
