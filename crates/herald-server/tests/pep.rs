//! XEP-0163 PEP over TCP (issue 15, item 1): publish with auto-create and `publish-options`
//! preconditions, every access model (items and notifications), the `+notify` filter from
//! verified XEP-0115 caps, the last item on available presence, retract / purge / delete /
//! configuration, disco#items, the `[pep]` limits (each holds, another user is unaffected),
//! and persistence across a restart.
//!
//! Absence is checked as in `im.rs`: a notification is routed while the server handles the
//! publish, before it answers it; a headline each client sends to itself afterwards comes
//! back behind anything queued for it, so [`Pc::sync`] returns everything that arrived.

mod common;

use common::*;
use herald_proto::Element;
use herald_server::xep::pep as xp;
use herald_store::Subscription;

#[path = "common/pep.rs"]
mod pepkit;
use pepkit::*;

#[tokio::test]
async fn notifications_go_to_resources_whose_verified_caps_ask_for_the_node() {
    let s = server(&["alice", "bob", "carol"]).await;
    befriend(&s, "alice", "bob");
    befriend(&s, "alice", "carol");
    let mut bob = Pc::login(&s, "bob", "phone", &[NODE]).await;
    bob.online().await;
    let mut carol = Pc::login(&s, "carol", "pc", &["urn:example:other"]).await;
    carol.online().await;
    let mut a1 = Pc::login(&s, "alice", "notify", &[NODE]).await;
    a1.online().await;
    let mut a2 = Pc::login(&s, "alice", "plain", &[]).await;
    a2.online().await;
    // Alice's presence reached Bob and Carol after they were online: nothing to deliver
    // yet (no node), and each caps answer is in.
    bob.sync().await;
    carol.sync().await;

    let r = a1.publish(NODE, "", "happy", &[]).await;
    ok(&r);
    // The server chose the id and says which.
    let id = r
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish", PUBSUB))
        .and_then(|p| p.get_child("item", PUBSUB))
        .and_then(|i| i.attr("id"))
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    let want = format!("items {NODE} item:{id}");
    let summary = |evs: Vec<Element>| evs.iter().map(event_summary).collect::<Vec<_>>();
    assert_eq!(summary(a1.events().await), std::slice::from_ref(&want));
    assert_eq!(summary(bob.events().await), std::slice::from_ref(&want));
    // No +notify for the node: nothing, neither for the owner's own resource nor a contact.
    assert!(a2.events().await.is_empty());
    assert!(carol.events().await.is_empty());
    // The notification is a headline from the account's bare JID carrying the payload.
    a1.publish(NODE, "x", "sad", &[]).await;
    let m = bob
        .wait("the notification", |m| {
            m.get_child("event", EVENT).is_some()
        })
        .await;
    assert_eq!(m.attr("type"), Some("headline"));
    assert_eq!(m.attr("from"), Some("alice@localhost"));
    assert!(xml(&m).contains("sad"), "{}", xml(&m));
}

#[tokio::test]
async fn unverified_caps_get_no_notifications() {
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut bob = Pc::login(&s, "bob", "liar", &[NODE]).await;
    // Bob claims a hash, then answers with features that do not hash to it.
    bob.answer = info_query("something else", &[NODE], &["urn:extra"]);
    bob.online().await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    bob.sync().await;
    ok(&alice.publish(NODE, "1", "x", &[]).await);
    assert!(bob.events().await.is_empty());
}

#[tokio::test]
async fn every_access_model_decides_items_and_notifications() {
    let s = server(&["alice", "bob", "carol", "dave"]).await;
    // Bob sees Alice's presence; Carol is in Alice's roster without a subscription; Dave is
    // a stranger.
    befriend(&s, "alice", "bob");
    relate(&s, "alice", "carol", Subscription::None);
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    let mut readers = Vec::new();
    for u in ["bob", "carol", "dave"] {
        let mut c = Pc::login(&s, u, "r", &["open", "presence", "roster", "whitelist"]).await;
        c.online().await;
        // Each tells Alice it is online (directed presence for Carol and Dave), so it
        // would be a recipient if the model let it.
        let directed = format!(
            "<presence to='alice@localhost'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
            c.ver
        );
        c.send(&directed).await;
        c.sync().await;
        readers.push((u, c));
    }
    // Alice learns of their resources through their presence (the caps answers are in).
    alice.sync().await;
    // Notifications go to the owner's roster only (Dave's directed presence does not make
    // him a recipient), within what the model admits; items are read by the model alone.
    // (model, bob / carol / dave may read, are notified, the refusal)
    let cases = [
        ("open", [true, true, true], [true, true, false], ("", None)),
        (
            "presence",
            [true, false, false],
            [true, false, false],
            ("not-authorized", Some("presence-subscription-required")),
        ),
        (
            "roster",
            [true, true, false],
            [true, true, false],
            ("not-authorized", Some("not-in-roster-group")),
        ),
        (
            "whitelist",
            [false, false, false],
            [false, false, false],
            ("not-allowed", Some("closed-node")),
        ),
    ];
    for (model, allowed, notified, refusal) in cases {
        ok(&alice
            .publish(model, "i", model, &[("pubsub#access_model", model)])
            .await);
        for (((who, c), may), told) in readers.iter_mut().zip(allowed).zip(notified) {
            let evs = c.events().await;
            assert_eq!(
                evs.len(),
                usize::from(told),
                "{model}: {who} notified: {evs:?}"
            );
            match c.items("alice@localhost", model).await {
                Ok(items) => {
                    assert!(may, "{model}: {who} read {items:?}");
                    assert_eq!(items, [("i".to_string(), model.to_string())]);
                }
                Err(r) => {
                    assert!(!may, "{model}: {who} refused: {}", xml(&r));
                    let (cond, app) = error_of(&r);
                    assert_eq!((cond.as_str(), app.as_deref()), refusal, "{model}: {who}");
                }
            }
        }
        // The owner always reads its own node.
        assert_eq!(
            alice.items("alice@localhost", model).await.unwrap().len(),
            1
        );
    }
    // disco#items on the account lists what the asker may read.
    let nodes = |r: Element| -> Vec<String> {
        let mut v: Vec<String> = r
            .get_child("query", "http://jabber.org/protocol/disco#items")
            .unwrap()
            .children()
            .filter_map(|i| i.attr("node").map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let q = "<query xmlns='http://jabber.org/protocol/disco#items'/>";
    let (_, carol) = &mut readers[1];
    assert_eq!(
        nodes(carol.iq("get", Some("alice@localhost"), q).await),
        ["open", "roster"]
    );
    assert_eq!(
        nodes(alice.iq("get", None, q).await),
        ["open", "presence", "roster", "whitelist"]
    );
}

#[tokio::test]
async fn publish_options_that_do_not_hold_are_a_precondition_conflict() {
    let s = server(&["alice"]).await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    // Auto-created with the options.
    ok(&alice
        .publish(
            NODE,
            "1",
            "first",
            &[("pubsub#access_model", "open"), ("pubsub#max_items", "max")],
        )
        .await);
    // The same options hold.
    ok(&alice
        .publish(
            NODE,
            "2",
            "second",
            &[("pubsub#access_model", "open"), ("pubsub#max_items", "max")],
        )
        .await);
    for opts in [
        vec![("pubsub#access_model", "whitelist")],
        vec![("pubsub#max_items", "1")],
        vec![("pubsub#persist_items", "false")],
        vec![("pubsub#access_model", "bogus")],
    ] {
        let r = alice.publish(NODE, "3", "third", &opts).await;
        assert_eq!(
            error_of(&r),
            ("conflict".into(), Some("precondition-not-met".into())),
            "{opts:?}"
        );
    }
    // Nothing of the refused publishes was stored.
    let ids: Vec<String> = alice
        .items("alice@localhost", NODE)
        .await
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, ["1", "2"]);
    // A new node cannot be created with options beyond the server's cap.
    let r = alice
        .publish(
            "urn:example:new",
            "1",
            "x",
            &[("pubsub#max_items", "100000")],
        )
        .await;
    assert_eq!(
        error_of(&r),
        ("conflict".into(), Some("precondition-not-met".into()))
    );
    let r = alice
        .items("alice@localhost", "urn:example:new")
        .await
        .unwrap_err();
    assert_eq!(error_of(&r).0, "item-not-found");
}

#[tokio::test]
async fn limits_hold_per_user_with_their_errors() {
    let s = server_with(&["alice", "bob"], |c| {
        c.pep.max_nodes_per_user = 2;
        c.pep.max_items_per_node = 3;
        c.pep.max_item_bytes = 300;
        c.pep.max_bytes_per_user = 700;
    })
    .await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    let mut bob = Pc::login(&s, "bob", "b", &[]).await;
    bob.online().await;
    // Item size: not-acceptable + payload-too-big, nothing created.
    let r = alice.publish("big", "1", &"x".repeat(400), &[]).await;
    assert_eq!(
        error_of(&r),
        ("not-acceptable".into(), Some("payload-too-big".into()))
    );
    // Items per node: `max` is the cap; the oldest goes.
    for i in 1..=4 {
        ok(&alice
            .publish("n1", &i.to_string(), "s", &[("pubsub#max_items", "max")])
            .await);
    }
    let ids: Vec<String> = alice
        .items("alice@localhost", "n1")
        .await
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, ["2", "3", "4"]);
    // Bytes per user (items are 51 bytes of XML plus their text): n1 holds 3 × 52, n2 two
    // of 251; a third would take Alice beyond 700 bytes and stores nothing.
    let opts = [("pubsub#max_items", "max")];
    ok(&alice.publish("n2", "a", &"y".repeat(200), &opts).await);
    ok(&alice.publish("n2", "b", &"y".repeat(200), &opts).await);
    let r = alice.publish("n2", "c", &"z".repeat(200), &opts).await;
    assert_eq!(error_of(&r).0, "resource-constraint");
    assert_eq!(alice.items("alice@localhost", "n2").await.unwrap().len(), 2);
    // Replacing an item by one of the same size still fits.
    ok(&alice.publish("n2", "b", &"x".repeat(200), &opts).await);
    // Nodes per user: a third node is refused.
    let r = alice.publish("n3", "1", "s", &[]).await;
    assert_eq!(
        error_of(&r),
        ("policy-violation".into(), Some("max-nodes-exceeded".into()))
    );
    let r = alice
        .iq(
            "set",
            None,
            &format!("<pubsub xmlns='{PUBSUB}'><create node='n4'/></pubsub>"),
        )
        .await;
    assert_eq!(
        error_of(&r),
        ("policy-violation".into(), Some("max-nodes-exceeded".into()))
    );
    // Bob is not affected by Alice's usage.
    for n in ["n1", "n2"] {
        ok(&bob.publish(n, "1", &"w".repeat(200), &[]).await);
    }
}

#[tokio::test]
async fn the_last_item_goes_to_a_resource_that_becomes_available() {
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    ok(&alice.publish(NODE, "1", "old", &[]).await);
    ok(&alice.publish(NODE, "2", "latest", &[]).await);
    // Bob comes online interested: his presence reaches Alice's PEP service, which sends
    // him the last item once his caps are verified.
    let mut bob = Pc::login(&s, "bob", "phone", &[NODE]).await;
    bob.online().await;
    let m = bob
        .wait("the last item", |m| m.get_child("event", EVENT).is_some())
        .await;
    let ev = m.get_child("event", EVENT).unwrap();
    assert_eq!(event_summary(ev), format!("items {NODE} item:2"));
    // Alice's own new resource with +notify gets it too; one without does not.
    let mut a2 = Pc::login(&s, "alice", "tablet", &[NODE]).await;
    a2.online().await;
    let m = a2
        .wait("the last item", |m| m.get_child("event", EVENT).is_some())
        .await;
    assert!(xml(&m).contains("latest"));
    let mut a3 = Pc::login(&s, "alice", "watch", &[]).await;
    a3.online().await;
    assert!(a3.events().await.is_empty());
    // A presence update of a known resource does not send it again.
    let update = format!(
        "<presence><show>away</show><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
        bob.ver
    );
    bob.send(&update).await;
    assert!(bob.events().await.is_empty());
}

#[tokio::test]
async fn retract_purge_delete_and_configuration() {
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut bob = Pc::login(&s, "bob", "b", &[NODE]).await;
    bob.online().await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    bob.sync().await;
    let cfg = |max: u32| {
        format!(
            "<pubsub xmlns='{OWNER}'><configure node='{NODE}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{}</value></field><field var='pubsub#max_items'><value>{max}</value></field></x></configure></pubsub>",
            xp::NODE_CONFIG
        )
    };
    // Configuration of a node that does not exist.
    assert_eq!(
        error_of(&alice.iq("set", None, &cfg(5)).await).0,
        "item-not-found"
    );
    ok(&alice.publish(NODE, "1", "a", &[]).await);
    ok(&alice.iq("set", None, &cfg(5)).await);
    ok(&alice.publish(NODE, "2", "b", &[]).await);
    bob.events().await;
    // The configuration form says what was set.
    let r = alice
        .iq(
            "get",
            None,
            &format!("<pubsub xmlns='{OWNER}'><configure node='{NODE}'/></pubsub>"),
        )
        .await;
    ok(&r);
    assert!(xml(&r).contains("pubsub#max_items"), "{}", xml(&r));
    let form = r
        .get_child("pubsub", OWNER)
        .and_then(|p| p.get_child("configure", OWNER))
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .unwrap();
    let max = form
        .children()
        .find(|f| f.attr("var") == Some("pubsub#max_items"))
        .and_then(|f| f.children().next())
        .map(|v| v.text());
    assert_eq!(max.as_deref(), Some("5"));
    // Another account may not read or change the configuration, nor publish.
    let r = bob
        .iq(
            "get",
            Some("alice@localhost"),
            &format!("<pubsub xmlns='{OWNER}'><configure node='{NODE}'/></pubsub>"),
        )
        .await;
    assert_eq!(error_of(&r).0, "service-unavailable");
    let r = bob
        .iq("set", Some("alice@localhost"), &format!("<pubsub xmlns='{PUBSUB}'><publish node='{NODE}'><item><x xmlns='y'/></item></publish></pubsub>"))
        .await;
    assert_eq!(error_of(&r).0, "forbidden");
    // Retract with notify.
    ok(&alice
        .iq("set", None, &format!("<pubsub xmlns='{PUBSUB}'><retract node='{NODE}' notify='true'><item id='1'/></retract></pubsub>"))
        .await);
    assert_eq!(
        bob.events()
            .await
            .iter()
            .map(event_summary)
            .collect::<Vec<_>>(),
        [format!("items {NODE} retract:1")]
    );
    let r = alice
        .iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><retract node='{NODE}'><item id='1'/></retract></pubsub>"
            ),
        )
        .await;
    assert_eq!(error_of(&r).0, "item-not-found");
    // Purge.
    ok(&alice
        .iq(
            "set",
            None,
            &format!("<pubsub xmlns='{OWNER}'><purge node='{NODE}'/></pubsub>"),
        )
        .await);
    assert_eq!(
        bob.events()
            .await
            .iter()
            .map(event_summary)
            .collect::<Vec<_>>(),
        [format!("purge {NODE}")]
    );
    assert!(alice
        .items("alice@localhost", NODE)
        .await
        .unwrap()
        .is_empty());
    // Delete.
    ok(&alice
        .iq(
            "set",
            None,
            &format!("<pubsub xmlns='{OWNER}'><delete node='{NODE}'/></pubsub>"),
        )
        .await);
    assert_eq!(
        bob.events()
            .await
            .iter()
            .map(event_summary)
            .collect::<Vec<_>>(),
        [format!("delete {NODE}")]
    );
    let r = alice.items("alice@localhost", NODE).await.unwrap_err();
    assert_eq!(error_of(&r).0, "item-not-found");
    // An explicit subscription is not how PEP works: refused as unsupported.
    let r = bob
        .iq(
            "set",
            Some("alice@localhost"),
            &format!(
                "<pubsub xmlns='{PUBSUB}'><subscribe node='{NODE}' jid='bob@localhost'/></pubsub>"
            ),
        )
        .await;
    assert_eq!(
        error_of(&r),
        ("feature-not-implemented".into(), Some("unsupported".into()))
    );
}

#[tokio::test]
async fn items_survive_a_restart() {
    let s = server(&["alice"]).await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    ok(&alice
        .publish(NODE, "1", "kept", &[("pubsub#access_model", "open")])
        .await);
    drop(alice);
    let s = s.restart().await;
    let mut alice = Pc::login(&s, "alice", "b", &[]).await;
    assert_eq!(
        alice.items("alice@localhost", NODE).await.unwrap(),
        [("1".to_string(), "kept".to_string())]
    );
    // And the configuration with them: the same publish-options still hold.
    ok(&alice
        .publish(NODE, "2", "more", &[("pubsub#access_model", "open")])
        .await);
}

#[tokio::test]
async fn a_blocked_contact_gets_neither_items_nor_notifications() {
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut bob = Pc::login(&s, "bob", "b", &[NODE]).await;
    bob.online().await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    bob.sync().await;
    ok(&alice
        .publish(NODE, "1", "before", &[("pubsub#access_model", "open")])
        .await);
    assert_eq!(bob.events().await.len(), 1);
    ok(&alice
        .iq(
            "set",
            None,
            "<block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block>",
        )
        .await);
    ok(&alice
        .publish(NODE, "2", "after", &[("pubsub#access_model", "open")])
        .await);
    assert!(bob.events().await.is_empty());
    let r = bob.items("alice@localhost", NODE).await.unwrap_err();
    assert_eq!(error_of(&r).0, "service-unavailable");
}

#[tokio::test]
async fn a_pep_notification_does_not_wake_a_sleeping_phone() {
    let (s, mut app) = push_server(|_| {}).await;
    // Alice sees Bob's presence, not the other way round (her presence would push him):
    // a `roster` node reaches him.
    relate(&s, "alice", "bob", Subscription::To);
    relate(&s, "bob", "alice", Subscription::From);
    // Bob's phone: push and stream management on, caps asking for the node (verified), then
    // its connection dies and the session hibernates.
    let mut phone = push_phone(&s, "localhost", "bob", "bob-phone", true).await;
    let info = info_query("bob phone", &[NODE], &[]);
    let ver = xp::caps_ver(&info).unwrap();
    phone
        .send(&format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
        ))
        .await;
    let node_ver = format!("{CAPS_NODE}#{ver}");
    // Read (and count, for the XEP-0198 ack) everything up to the pong: the presence echo,
    // the caps query (answered), the pong. The push enable's result came before.
    let mut handled = 1;
    let mut pinged = false;
    loop {
        let el = next_unrequested(&mut phone).await;
        if !matches!(el.name(), "message" | "presence" | "iq") {
            continue;
        }
        handled += 1;
        let query = el
            .get_child("query", DISCO_INFO)
            .and_then(|q| q.attr("node"))
            .filter(|n| *n == node_ver);
        if el.name() == "iq" && query.is_some() {
            let mut answer = info.clone();
            herald_server::stanza::set(&mut answer, "node", node_ver.clone());
            phone
                .send(&format!(
                    "<iq type='result' id='{}' to='{}'>{}</iq>",
                    el.attr("id").unwrap(),
                    el.attr("from").unwrap(),
                    xml(&answer)
                ))
                .await;
            if !pinged {
                // Behind the answer: its result means the answer was handled.
                phone
                    .send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
                    .await;
                pinged = true;
            }
        }
        if el.attr("id") == Some("sync") {
            break;
        }
    }
    // The phone has everything so far (a real client acks it): only what comes next
    // could wake it.
    phone
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"))
        .await;
    phone
        .send("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    phone
        .wait_for("the ack is in", |el| el.attr("id") == Some("sync2"))
        .await;
    handled += 1;
    phone
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"))
        .await;
    phone.kill(true);
    let shared = s.running.shared.clone();
    wait_until("the session hibernates", || {
        shared
            .router
            .resource("bob@localhost", "phone")
            .is_some_and(|r| r.hibernated)
    })
    .await;
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    alice.online().await;
    let opts = [("pubsub#access_model", "roster")];
    ok(&alice.publish(NODE, "1", "while you sleep", &opts).await);
    // The notification went to the sleeping phone's queue before the publish was answered,
    // so before this message: the first publish the app server sees is for the message.
    alice
        .send("<message to='bob@localhost' type='chat' id='m'><body>wake up</body></message>")
        .await;
    let p = app.next().await;
    assert_eq!(p.body(), Some("New Message!"), "{}", xml(&p.iq));
    assert_eq!(p.count(), 1, "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn recipients_per_account_are_bounded() {
    let s = server_with(&["alice", "bob", "carol", "dave"], |c| {
        c.pep.max_recipients_per_user = 1;
    })
    .await;
    befriend(&s, "alice", "bob");
    befriend(&s, "alice", "carol");
    befriend(&s, "dave", "carol");
    // Alice and Dave publish without being available themselves (not their own recipients).
    let mut alice = Pc::login(&s, "alice", "a", &[]).await;
    let mut dave = Pc::login(&s, "dave", "d", &[]).await;
    let mut bob = Pc::login(&s, "bob", "b", &[NODE]).await;
    bob.online().await;
    let mut carol = Pc::login(&s, "carol", "c", &[NODE]).await;
    carol.online().await;
    // Bob took Alice's one place; Carol is not notified by Alice, but Dave's account has
    // its own bound.
    ok(&alice.publish(NODE, "1", "x", &[]).await);
    assert_eq!(bob.events().await.len(), 1);
    assert!(carol.events().await.is_empty());
    ok(&dave.publish(NODE, "1", "y", &[]).await);
    assert_eq!(carol.events().await.len(), 1);
    // When Bob leaves, the place is free for the next resource that comes.
    bob.send("<presence type='unavailable'/>").await;
    bob.sync().await;
    let mut carol2 = Pc::login(&s, "carol", "c2", &[NODE]).await;
    carol2.online().await;
    // (Carol's second resource got Alice's last item as it came.)
    let m = carol2
        .wait("alice's last item", |m| {
            m.get_child("event", EVENT).is_some() && m.attr("from") == Some("alice@localhost")
        })
        .await;
    assert!(xml(&m).contains("item"));
}
