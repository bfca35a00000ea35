//! XEP-0402 PEP native bookmarks and their XEP-0048 private-XML form (issue 15, item 4): the
//! publish-options clients send succeed, notifications reach the owner's own interested
//! resources and no one else, retraction notifies, a private-XML `set` of
//! `storage:bookmarks` becomes XEP-0402 items (and notifications) and a private-XML `get`
//! reads them back, bounded by `[pep]`; XEP-0223 persistent private nodes.
//!
//! Absence is checked as in `pep.rs`: notifications are routed while the server handles the
//! request, before it answers; the barrier each client sends itself afterwards comes back
//! behind anything queued for it.

mod common;

use common::*;
use herald_proto::Element;

#[path = "common/pep.rs"]
mod pepkit;
use pepkit::*;

const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const PRIVATE: &str = "jabber:iq:private";
const LEGACY: &str = "storage:bookmarks";

/// What Conversations, Gajim and Dino send with a XEP-0402 publish (XEP-0402 §3).
const CLIENT_OPTIONS: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
];

impl Pc {
    async fn bookmark(&mut self, room: &str, name: &str) -> Element {
        self.iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS}'><item id='{room}'>\
                 <conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'><nick>me</nick></conference>\
                 </item></publish>{}</pubsub>",
                publish_options(CLIENT_OPTIONS)
            ),
        )
        .await
    }

    /// The XEP-0402 items of the own account: (room, name).
    async fn bookmarks(&mut self) -> Result<Vec<(String, String)>, Element> {
        let own = self.jid.split('/').next().unwrap_or_default().to_string();
        self.bookmarks_of(&own).await
    }

    async fn bookmarks_of(&mut self, owner: &str) -> Result<Vec<(String, String)>, Element> {
        let r = self
            .iq(
                "get",
                Some(owner),
                &format!("<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub>"),
            )
            .await;
        if r.attr("type") != Some("result") {
            return Err(r);
        }
        let mut out: Vec<(String, String)> = r
            .get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("items", PUBSUB))
            .map(|i| {
                i.children()
                    .map(|it| {
                        let c = it.get_child("conference", BOOKMARKS);
                        (
                            it.attr("id").unwrap_or("").to_string(),
                            c.and_then(|c| c.attr("name")).unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    async fn set_private(&mut self, storage: &str) -> Element {
        self.iq(
            "set",
            None,
            &format!("<query xmlns='{PRIVATE}'>{storage}</query>"),
        )
        .await
    }

    /// The XEP-0048 `<storage/>` private storage returns.
    async fn get_private(&mut self) -> Element {
        let r = self
            .iq(
                "get",
                None,
                &format!("<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>"),
            )
            .await;
        ok(&r);
        r.get_child("query", PRIVATE)
            .and_then(|q| q.get_child("storage", LEGACY))
            .cloned()
            .unwrap()
    }
}

#[tokio::test]
async fn client_publish_options_succeed_and_only_own_resources_are_notified() {
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut a1 = Pc::login(&s, "alice", "one", &[BOOKMARKS]).await;
    let mut a2 = Pc::login(&s, "alice", "two", &[BOOKMARKS]).await;
    let mut b = Pc::login(&s, "bob", "pc", &[BOOKMARKS]).await;
    a1.online().await;
    a2.online().await;
    b.online().await;
    // Bob's own presence reaches alice's resources; drain it.
    a1.sync().await;
    a2.sync().await;

    // Node auto-created with the options; then published again on the existing node
    // (`max` must hold against a node configured to the cap).
    ok(&a1.bookmark("room@muc.example", "Room").await);
    ok(&a1.bookmark("other@muc.example", "Other").await);
    let evs: Vec<String> = a2.events().await.iter().map(event_summary).collect();
    assert_eq!(
        evs,
        [
            format!("items {BOOKMARKS} item:room@muc.example"),
            format!("items {BOOKMARKS} item:other@muc.example"),
        ]
    );
    // The publisher's own resource is notified too (XEP-0163 §4.3.1), the contact is not:
    // whitelist admits only the owner.
    assert_eq!(a1.events().await.len(), 2);
    assert!(b.events().await.is_empty());
    let (cond, app) = error_of(&b.bookmarks_of("alice@localhost").await.unwrap_err());
    assert_eq!(
        (cond.as_str(), app.as_deref()),
        ("not-allowed", Some("closed-node"))
    );

    // Retraction with notify (XEP-0402 §3.3) reaches the other resource.
    let r = a1
        .iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='room@muc.example'/></retract></pubsub>"
            ),
        )
        .await;
    ok(&r);
    let evs: Vec<String> = a2.events().await.iter().map(event_summary).collect();
    assert_eq!(evs, [format!("items {BOOKMARKS} retract:room@muc.example")]);
    assert!(b.events().await.is_empty());
    assert_eq!(
        a2.bookmarks().await.unwrap(),
        [("other@muc.example".to_string(), "Other".to_string())]
    );
}

#[tokio::test]
async fn private_xml_bookmarks_are_pep_bookmarks_both_ways() {
    let s = server(&["alice"]).await;
    let mut old = Pc::login(&s, "alice", "old", &[]).await;
    let mut new = Pc::login(&s, "alice", "new", &[BOOKMARKS]).await;
    old.online().await;
    new.online().await;

    // The account says the conversion is done (XEP-0402 §5.3).
    let info = new
        .iq(
            "get",
            Some("alice@localhost"),
            &format!("<query xmlns='{DISCO_INFO}'/>"),
        )
        .await;
    ok(&info);
    let compat = format!("{BOOKMARKS}#compat");
    assert!(
        info.get_child("query", DISCO_INFO)
            .unwrap()
            .children()
            .any(|f| f.attr("var") == Some(compat.as_str())),
        "{}",
        xml(&info)
    );

    // An old client writes XEP-0048 bookmarks: the new one is notified of each room and
    // reads them as XEP-0402 items. The URL bookmark has no XEP-0402 form.
    ok(&old
        .set_private(&format!(
            "<storage xmlns='{LEGACY}'>\
             <conference jid='a@muc.example' name='A' autojoin='true'><nick>al</nick></conference>\
             <conference jid='b@muc.example' name='B'/>\
             <url name='web' url='https://example.org'/></storage>"
        ))
        .await);
    let mut evs: Vec<String> = new.events().await.iter().map(event_summary).collect();
    evs.sort();
    assert_eq!(
        evs,
        [
            format!("items {BOOKMARKS} item:a@muc.example"),
            format!("items {BOOKMARKS} item:b@muc.example"),
        ]
    );
    assert_eq!(
        new.bookmarks().await.unwrap(),
        [
            ("a@muc.example".to_string(), "A".to_string()),
            ("b@muc.example".to_string(), "B".to_string()),
        ]
    );
    // The node is what XEP-0402 asks for: the contact-less owner-only whitelist.
    let conf = new
        .iq(
            "get",
            None,
            &format!("<pubsub xmlns='{OWNER}'><configure node='{BOOKMARKS}'/></pubsub>"),
        )
        .await;
    ok(&conf);
    let form = conf
        .get_child("pubsub", OWNER)
        .and_then(|p| p.get_child("configure", OWNER))
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .unwrap();
    let fields = form_fields(form);
    assert_eq!(
        fields.get("pubsub#access_model").map(String::as_str),
        Some("whitelist")
    );
    assert_eq!(
        fields
            .get("pubsub#send_last_published_item")
            .map(String::as_str),
        Some("never")
    );

    // The new client adds one: the old client reads it back as XEP-0048.
    ok(&new.bookmark("c@muc.example", "C").await);
    let storage = old.get_private().await;
    let mut rooms: Vec<(String, String, String, String)> = storage
        .children()
        .map(|c| {
            (
                c.attr("jid").unwrap_or("").to_string(),
                c.attr("name").unwrap_or("").to_string(),
                c.attr("autojoin").unwrap_or("").to_string(),
                c.get_child("nick", LEGACY)
                    .map(|n| n.text())
                    .unwrap_or_default(),
            )
        })
        .collect();
    rooms.sort();
    let row = |j: &str, n: &str, a: &str, k: &str| {
        (j.to_string(), n.to_string(), a.to_string(), k.to_string())
    };
    assert_eq!(
        rooms,
        [
            row("a@muc.example", "A", "true", "al"),
            row("b@muc.example", "B", "", ""),
            row("c@muc.example", "C", "true", "me"),
        ]
    );

    // The old client removes a room by writing the set without it: retracted, notified;
    // the unchanged ones are not re-published.
    new.events().await;
    ok(&old
        .set_private(&format!(
            "<storage xmlns='{LEGACY}'>\
             <conference jid='a@muc.example' name='A' autojoin='true'><nick>al</nick></conference>\
             <conference jid='c@muc.example' name='C' autojoin='true'><nick>me</nick></conference></storage>"
        ))
        .await);
    let evs: Vec<String> = new.events().await.iter().map(event_summary).collect();
    assert_eq!(evs, [format!("items {BOOKMARKS} retract:b@muc.example")]);

    // An empty set empties the node.
    ok(&old
        .set_private(&format!("<storage xmlns='{LEGACY}'/>"))
        .await);
    assert_eq!(new.bookmarks().await.unwrap(), []);
    assert_eq!(old.get_private().await.children().count(), 0);
}

#[tokio::test]
async fn private_xml_bookmarks_are_bounded_by_the_pep_limits() {
    let s = server_with(&["alice", "bob"], |c| {
        c.pep.max_items_per_node = 2;
        c.pep.max_item_bytes = 300;
    })
    .await;
    let mut a = Pc::login(&s, "alice", "pc", &[]).await;
    let mut b = Pc::login(&s, "bob", "pc", &[]).await;
    let two = format!(
        "<storage xmlns='{LEGACY}'><conference jid='a@muc.example'/><conference jid='b@muc.example'/></storage>"
    );
    ok(&a.set_private(&two).await);

    // Three rooms where the node keeps two: refused whole, nothing lost.
    let three = format!(
        "<storage xmlns='{LEGACY}'><conference jid='c@muc.example'/><conference jid='a@muc.example'/><conference jid='b@muc.example'/></storage>"
    );
    let (cond, _) = error_of(&a.set_private(&three).await);
    assert_eq!(cond, "not-acceptable");
    // One bookmark larger than an item may be.
    let big = format!(
        "<storage xmlns='{LEGACY}'><conference jid='a@muc.example' name='{}'/></storage>",
        "x".repeat(400)
    );
    let (cond, _) = error_of(&a.set_private(&big).await);
    assert_eq!(cond, "not-acceptable");
    assert_eq!(
        a.bookmarks().await.unwrap(),
        [
            ("a@muc.example".to_string(), String::new()),
            ("b@muc.example".to_string(), String::new()),
        ]
    );
    // Another user is unaffected.
    ok(&b.set_private(&two).await);
    assert_eq!(b.bookmarks().await.unwrap().len(), 2);
}

#[tokio::test]
async fn persistent_private_pep_nodes_hold_their_preconditions() {
    // XEP-0223 §3: publish with persist_items + whitelist; the node is created so.
    let s = server(&["alice", "bob"]).await;
    befriend(&s, "alice", "bob");
    let mut a = Pc::login(&s, "alice", "pc", &[]).await;
    let mut b = Pc::login(&s, "bob", "pc", &[]).await;
    let private = [
        ("pubsub#persist_items", "true"),
        ("pubsub#access_model", "whitelist"),
    ];
    ok(&a
        .publish("urn:example:secret", "s1", "hidden", &private)
        .await);
    ok(&a
        .publish("urn:example:secret", "s2", "hidden too", &private)
        .await);
    // A node that is not private fails the precondition (XEP-0223 §4: the client then
    // knows the data would not be private and must not publish it).
    ok(&a.publish("urn:example:public", "p", "open", &[]).await);
    let (cond, app) = error_of(
        &a.publish("urn:example:public", "p2", "secret", &private)
            .await,
    );
    assert_eq!(
        (cond.as_str(), app.as_deref()),
        ("conflict", Some("precondition-not-met"))
    );
    assert_eq!(
        a.items("alice@localhost", "urn:example:public")
            .await
            .unwrap()
            .len(),
        1
    );
    // Only the owner reads the private node, even a subscribed contact is refused.
    let (cond, _) = error_of(
        &b.items("alice@localhost", "urn:example:secret")
            .await
            .unwrap_err(),
    );
    assert_eq!(cond, "not-allowed");
    let texts: Vec<String> = a
        .items("alice@localhost", "urn:example:secret")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(texts, ["hidden too"]);
}

impl Pc {
    /// Publishes a whole XEP-0048 `<storage/>` to the PEP node `storage:bookmarks`, as
    /// older clients do (XEP-0048 §3.2, item `current`).
    async fn publish_legacy(&mut self, storage: &str) -> Element {
        self.iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'><item id='current'>{storage}</item></publish>{}</pubsub>",
                publish_options(&[("pubsub#access_model", "whitelist")])
            ),
        )
        .await
    }

    /// The rooms (jid, name) of the `current` item of the PEP node `storage:bookmarks`.
    async fn legacy_pep(&mut self) -> Vec<(String, String)> {
        let r = self
            .iq(
                "get",
                None,
                &format!("<pubsub xmlns='{PUBSUB}'><items node='{LEGACY}'/></pubsub>"),
            )
            .await;
        ok(&r);
        let items = r
            .get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("items", PUBSUB))
            .unwrap();
        let ids: Vec<&str> = items.children().filter_map(|i| i.attr("id")).collect();
        assert_eq!(ids, ["current"], "{}", xml(&r));
        legacy_rooms(items.children().next().unwrap())
    }
}

/// (jid, name) of the conferences in a `storage:bookmarks` item, sorted.
fn legacy_rooms(item: &Element) -> Vec<(String, String)> {
    let storage = item.get_child("storage", LEGACY).expect("a <storage/>");
    let mut rooms: Vec<(String, String)> = storage
        .children()
        .map(|c| {
            (
                c.attr("jid").unwrap_or("").to_string(),
                c.attr("name").unwrap_or("").to_string(),
            )
        })
        .collect();
    rooms.sort();
    rooms
}

fn rooms(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(j, n)| (j.to_string(), n.to_string()))
        .collect()
}

/// The `current` item of the `storage:bookmarks` notifications among `evs`.
fn legacy_events(evs: &[Element]) -> Vec<Vec<(String, String)>> {
    evs.iter()
        .filter_map(|e| e.get_child("items", EVENT))
        .filter(|i| i.attr("node") == Some(LEGACY))
        .map(|i| {
            let item = i.children().next().expect("an item");
            assert_eq!(item.attr("id"), Some("current"));
            legacy_rooms(item)
        })
        .collect()
}

#[tokio::test]
async fn xep0048_pep_bookmarks_are_the_xep0402_ones_both_ways() {
    let s = server(&["alice", "bob"]).await;
    // A XEP-0402 client, a XEP-0048-in-PEP client and a private-storage client of one user.
    let mut new = Pc::login(&s, "alice", "new", &[BOOKMARKS]).await;
    new.online().await;
    let mut old = Pc::login(&s, "alice", "old", &[LEGACY]).await;
    old.online().await;
    let mut private = Pc::login(&s, "alice", "private", &[]).await;

    // XEP-0411 §2: announced on the account.
    let info = new
        .iq(
            "get",
            Some("alice@localhost"),
            &format!("<query xmlns='{DISCO_INFO}'/>"),
        )
        .await;
    assert!(
        xml(&info).contains("urn:xmpp:bookmarks-conversion:0"),
        "{}",
        xml(&info)
    );

    // A XEP-0402 publish: the old client is notified with the whole XEP-0048 list.
    ok(&new.bookmark("a@muc.example", "A").await);
    new.events().await;
    assert_eq!(
        legacy_events(&old.events().await),
        [rooms(&[("a@muc.example", "A")])]
    );
    assert_eq!(old.legacy_pep().await, rooms(&[("a@muc.example", "A")]));

    // The old client publishes its list with one more room: the XEP-0402 client gets the new
    // item, private storage has both, the old client sees its own publish notified.
    ok(&old
        .publish_legacy(&format!(
            "<storage xmlns='{LEGACY}'><conference jid='a@muc.example' name='A' autojoin='true'><nick>me</nick></conference>\
             <conference jid='b@muc.example' name='B'/></storage>"
        ))
        .await);
    // XEP-0402 §5.3.2: only the new room is notified, not the unchanged one.
    let evs: Vec<String> = new.events().await.iter().map(event_summary).collect();
    assert_eq!(evs, [format!("items {BOOKMARKS} item:b@muc.example")]);
    assert_eq!(
        new.bookmarks().await.unwrap(),
        rooms(&[("a@muc.example", "A"), ("b@muc.example", "B")])
    );
    assert_eq!(
        legacy_events(&old.events().await),
        [rooms(&[("a@muc.example", "A"), ("b@muc.example", "B")])]
    );
    let stored: Vec<String> = private
        .get_private()
        .await
        .children()
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect();
    assert_eq!(stored, ["a@muc.example", "b@muc.example"]);

    // A private-storage write (XEP-0411 §3) and a XEP-0402 retraction reach the old client.
    ok(&private
        .set_private(&format!(
            "<storage xmlns='{LEGACY}'><conference jid='b@muc.example' name='B'/></storage>"
        ))
        .await);
    assert_eq!(
        legacy_events(&old.events().await),
        [rooms(&[("b@muc.example", "B")])]
    );
    ok(&new
        .iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='b@muc.example'/></retract></pubsub>"
            ),
        )
        .await);
    assert_eq!(legacy_events(&old.events().await), [rooms(&[])]);
    assert_eq!(old.legacy_pep().await, rooms(&[]));

    // Bookmarks are the owner's: bob reads neither form.
    let mut b = Pc::login(&s, "bob", "pc", &[]).await;
    for node in [LEGACY, BOOKMARKS] {
        let r = b
            .iq(
                "get",
                Some("alice@localhost"),
                &format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"),
            )
            .await;
        assert_eq!(r.attr("type"), Some("error"), "{node}: {}", xml(&r));
    }
}

#[tokio::test]
async fn xep0048_pep_bookmarks_are_bounded_by_the_pep_limits() {
    let s = server_with(&["alice"], |c| c.pep.max_items_per_node = 2).await;
    let mut a = Pc::login(&s, "alice", "pc", &[]).await;
    let three = format!(
        "<storage xmlns='{LEGACY}'><conference jid='a@muc.example'/><conference jid='b@muc.example'/><conference jid='c@muc.example'/></storage>"
    );
    let (cond, _) = error_of(&a.publish_legacy(&three).await);
    assert_eq!(cond, "not-acceptable");
    let two = format!(
        "<storage xmlns='{LEGACY}'><conference jid='a@muc.example'/><conference jid='b@muc.example'/></storage>"
    );
    ok(&a.publish_legacy(&two).await);
    assert_eq!(
        a.legacy_pep().await,
        rooms(&[("a@muc.example", ""), ("b@muc.example", "")])
    );
}

#[tokio::test]
async fn xep0048_pep_reads_what_private_storage_held_before_the_conversion() {
    let s = server(&["alice"]).await;
    // Stored the way private storage kept XEP-0048 bookmarks before they were converted.
    s.running
        .shared
        .store
        .set_private_items(
            "alice@localhost",
            &[herald_store::PrivateItem {
                name: "storage".into(),
                ns: LEGACY.into(),
                xml: format!("<storage xmlns='{LEGACY}'><conference jid='old@muc.example' name='Old'/></storage>"),
            }],
            16,
        )
        .unwrap();
    let mut a = Pc::login(&s, "alice", "pc", &[]).await;
    assert_eq!(a.legacy_pep().await, rooms(&[("old@muc.example", "Old")]));
}
