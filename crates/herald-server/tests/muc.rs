//! XEP-0045 group chat over real connections: what occupants see, and the errors they get.

mod common;

use common::*;
use herald_proto::Element;

const MUC_NS: &str = "http://jabber.org/protocol/muc";
const USER: &str = "http://jabber.org/protocol/muc#user";
const ROOM: &str = "tea@conference.localhost";

async fn server() -> TestServer {
    let s = TestServer::start().await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    s
}

/// A logged-in client that sent its initial presence, as every MUC client does.
async fn client(s: &TestServer, user: &str, res: &str) -> RawClient {
    let mut c = RawClient::login(s.c2s(), user, "pw", res).await;
    c.send("<presence/>").await;
    c
}

/// The stanza error's condition, "" if none.
fn condition(el: &Element) -> String {
    el.get_child("error", "jabber:client")
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        })
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}

fn codes(p: &Element) -> Vec<String> {
    p.get_child("x", USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn occupant_id(el: &Element) -> Option<String> {
    el.get_child("occupant-id", "urn:xmpp:occupant-id:0")
        .and_then(|o| o.attr("id"))
        .map(String::from)
}

/// Sends a join presence (with `x_inner` inside `<x xmlns='…muc'>`) and returns the answer:
/// the self-presence (status 110) or the error presence.
async fn join_with(c: &mut RawClient, room: &str, nick: &str, x_inner: &str) -> Element {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC_NS}'>{x_inner}</x></presence>"
    ))
    .await;
    let from = format!("{room}/{nick}");
    c.wait_for("the self-presence or an error", |e| {
        e.name() == "presence"
            && e.attr("from") == Some(from.as_str())
            && (e.attr("type") == Some("error") || codes(e).iter().any(|c| c == "110"))
    })
    .await
}

async fn join(c: &mut RawClient, room: &str, nick: &str) -> Element {
    let p = join_with(c, room, nick, "").await;
    assert_eq!(p.attr("type"), None, "{}", xml(&p));
    p
}

/// Sends an IQ and returns its answer.
async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |e| {
        e.name() == "iq" && e.attr("id") == Some(id)
    })
    .await
}

async fn configure(c: &mut RawClient, room: &str, fields: &[(&str, &str)]) -> Element {
    let mut f = String::new();
    for (k, v) in fields {
        f.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    ask(
        c,
        "cfg",
        &format!("<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC_NS}#owner'><x xmlns='jabber:x:data' type='submit'>{f}</x></query></iq>"),
    )
    .await
}

/// Alice creates `room` and configures it with `fields` (none: an instant room).
async fn create(c: &mut RawClient, room: &str, fields: &[(&str, &str)]) {
    let p = join(c, room, "alice").await;
    assert!(codes(&p).contains(&"201".to_string()), "{}", xml(&p));
    let r = configure(c, room, fields).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

async fn groupchat(c: &mut RawClient, room: &str, body: &str) {
    c.send(&format!(
        "<message to='{room}' type='groupchat' id='{body}'><body>{body}</body></message>"
    ))
    .await;
}

async fn next_groupchat(c: &mut RawClient, body: &str) -> Element {
    c.wait_for(&format!("groupchat {body}"), |e| {
        e.name() == "message"
            && e.attr("type") == Some("groupchat")
            && e.get_child("body", "jabber:client").map(|b| b.text()) == Some(body.to_string())
    })
    .await
}

async fn error_reply(c: &mut RawClient, kind: &str) -> Element {
    c.wait_for(&format!("a {kind} error"), |e| {
        e.name() == kind && e.attr("type") == Some("error")
    })
    .await
}

#[tokio::test]
async fn the_service_is_discovered_and_lists_public_rooms() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let items = ask(&mut a, "i", "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert!(
        xml(&items).contains("jid=\"conference.localhost\"")
            || xml(&items).contains("jid='conference.localhost'"),
        "{}",
        xml(&items)
    );
    let info = ask(&mut a, "s", "<iq type='get' id='s' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let x = xml(&info);
    for f in [
        MUC_NS,
        "urn:xmpp:occupant-id:0",
        "urn:xmpp:mam:2",
        "http://jabber.org/protocol/disco#items",
    ] {
        assert!(x.contains(f), "{f}: {x}");
    }
    assert!(x.contains("conference") && x.contains("text"), "{x}");
    create(&mut a, ROOM, &[("muc#roomconfig_roomname", "Tea")]).await;
    create(
        &mut a,
        "hidden@conference.localhost",
        &[("muc#roomconfig_publicroom", "0")],
    )
    .await;
    let rooms = ask(&mut a, "r", "<iq type='get' id='r' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    let listed: Vec<&str> = rooms
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(listed, [ROOM]);
    let info = ask(&mut a, "ri", &format!("<iq type='get' id='ri' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    let x = xml(&info);
    for f in [
        "muc_public",
        "muc_semianonymous",
        "urn:xmpp:mam:2",
        "muc#roominfo_occupants",
        "Tea",
    ] {
        assert!(x.contains(f), "{f}: {x}");
    }
    let nothing = ask(&mut a, "n", "<iq type='get' id='n' to='nowhere@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert_eq!(condition(&nothing), "item-not-found");
}

#[tokio::test]
async fn a_locked_room_waits_for_its_owner_then_people_join_talk_and_leave() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    let p = join(&mut a, ROOM, "alice").await;
    assert!(codes(&p).contains(&"201".into()));
    let refused = join_with(&mut b, ROOM, "bob", "").await;
    assert_eq!(
        condition(&refused),
        "item-not-found",
        "locked until configured"
    );
    configure(&mut a, ROOM, &[]).await;
    join(&mut b, ROOM, "bob").await;
    // Alice sees Bob arrive.
    a.wait_for("bob's presence", |e| {
        e.attr("from") == Some("tea@conference.localhost/bob")
    })
    .await;
    groupchat(&mut b, ROOM, "hello").await;
    let m = next_groupchat(&mut a, "hello").await;
    assert_eq!(m.attr("from"), Some("tea@conference.localhost/bob"));
    let sid = m.get_child("stanza-id", "urn:xmpp:sid:0").unwrap();
    assert_eq!(sid.attr("by"), Some(ROOM));
    // Bob's echo carries the same id.
    let echo = next_groupchat(&mut b, "hello").await;
    assert_eq!(
        echo.get_child("stanza-id", "urn:xmpp:sid:0")
            .unwrap()
            .attr("id"),
        sid.attr("id")
    );
    // The occupant id is stable across messages, presence and sessions of the same user.
    let bob_id = occupant_id(&m).unwrap();
    b.send(&format!("<presence to='{ROOM}/bob' type='unavailable'/>"))
        .await;
    let gone = a
        .wait_for("bob leaves", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(occupant_id(&gone), Some(bob_id.clone()));
    let mut b2 = client(&s, "bob", "phone").await;
    let p = join(&mut b2, ROOM, "bobby").await;
    assert_eq!(
        occupant_id(&p),
        Some(bob_id),
        "same user, another session and nick"
    );
    // A session that ends leaves the room.
    drop(b2);
    let gone = a
        .wait_for("bobby's session ends", |e| {
            e.attr("from") == Some("tea@conference.localhost/bobby")
                && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(codes(&gone).is_empty());
}

#[tokio::test]
async fn join_refusals_members_only_banned_password_full_and_nick_conflict() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    let mut c = client(&s, "carol", "c").await;
    create(&mut a, ROOM, &[("muc#roomconfig_membersonly", "1")]).await;
    assert_eq!(
        condition(&join_with(&mut b, ROOM, "bob", "").await),
        "registration-required"
    );
    let r = ask(&mut a, "m", &format!("<iq type='set' id='m' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item jid='bob@localhost' affiliation='member'/></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    join(&mut b, ROOM, "bob").await;
    // Carol is invited by the owner: that makes her a member of the members-only room.
    a.send(&format!("<message to='{ROOM}'><x xmlns='{USER}'><invite to='carol@localhost'><reason>tea?</reason></invite></x></message>")).await;
    let inv = c
        .wait_for("the invitation", |e| {
            e.name() == "message" && e.attr("from") == Some(ROOM)
        })
        .await;
    assert!(xml(&inv).contains("alice@localhost"), "{}", xml(&inv));
    assert_eq!(
        condition(&join_with(&mut c, ROOM, "bob", "").await),
        "conflict"
    );
    join(&mut c, ROOM, "carol").await;

    let room2 = "locked@conference.localhost";
    create(
        &mut a,
        room2,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "sesame"),
            ("muc#roomconfig_maxusers", "2"),
        ],
    )
    .await;
    assert_eq!(
        condition(&join_with(&mut b, room2, "bob", "").await),
        "not-authorized"
    );
    assert_eq!(
        condition(&join_with(&mut b, room2, "bob", "<password>nope</password>").await),
        "not-authorized"
    );
    join_with(&mut b, room2, "bob", "<password>sesame</password>").await;
    let full = join_with(&mut c, room2, "carol", "<password>sesame</password>").await;
    assert_eq!(condition(&full), "service-unavailable", "maxusers is 2");
}

#[tokio::test]
async fn kick_ban_and_rejoin_refused() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    create(&mut a, ROOM, &[]).await;
    join(&mut b, ROOM, "bob").await;
    // Bob cannot kick the owner.
    let r = ask(&mut b, "k0", &format!("<iq type='set' id='k0' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item nick='alice' role='none'/></query></iq>")).await;
    assert_eq!(condition(&r), "forbidden");
    let r = ask(&mut a, "k1", &format!("<iq type='set' id='k1' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item nick='bob' role='none'><reason>shoo</reason></item></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    let kicked = b
        .wait_for("the kick", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(codes(&kicked), ["110", "307"]);
    assert!(xml(&kicked).contains("shoo"));
    // Kicked is not banned: Bob comes back, then is banned.
    join(&mut b, ROOM, "bob").await;
    let r = ask(&mut a, "b1", &format!("<iq type='set' id='b1' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item jid='bob@localhost' affiliation='outcast'/></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    let banned = b
        .wait_for("the ban", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(codes(&banned), ["110", "301"]);
    assert_eq!(
        condition(&join_with(&mut b, ROOM, "bob", "").await),
        "forbidden"
    );
    let list = ask(&mut a, "l", &format!("<iq type='get' id='l' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item affiliation='outcast'/></query></iq>")).await;
    assert!(xml(&list).contains("bob@localhost"), "{}", xml(&list));
}

#[tokio::test]
async fn moderated_rooms_silence_visitors_and_subjects_are_bounded() {
    let s = TestServer::start_with(|c| c.muc.max_subject_bytes = 10).await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    create(&mut a, ROOM, &[("muc#roomconfig_moderatedroom", "1")]).await;
    let p = join(&mut b, ROOM, "bob").await;
    assert!(xml(&p).contains("visitor"), "{}", xml(&p));
    groupchat(&mut b, ROOM, "may I?").await;
    assert_eq!(
        condition(&error_reply(&mut b, "message").await),
        "forbidden"
    );
    a.send(&format!(
        "<message to='{ROOM}' type='groupchat'><subject>{}</subject></message>",
        "x".repeat(11)
    ))
    .await;
    assert_eq!(
        condition(&error_reply(&mut a, "message").await),
        "not-acceptable"
    );
    a.send(&format!(
        "<message to='{ROOM}' type='groupchat'><subject>Tea time</subject></message>"
    ))
    .await;
    let subj = b
        .wait_for("the subject", |e| {
            e.get_child("subject", "jabber:client")
                .is_some_and(|s| s.text() == "Tea time")
        })
        .await;
    assert_eq!(subj.attr("from"), Some("tea@conference.localhost/alice"));
    // Bob, a visitor, may not change it.
    b.send(&format!(
        "<message to='{ROOM}' type='groupchat'><subject>Coffee</subject></message>"
    ))
    .await;
    assert_eq!(
        condition(&error_reply(&mut b, "message").await),
        "forbidden"
    );
    // An unknown configuration field changes nothing.
    let r = configure(&mut a, ROOM, &[("muc#roomconfig_bogus", "1")]).await;
    assert_eq!(condition(&r), "not-acceptable");
}

#[tokio::test]
async fn private_messages_flow_unless_the_room_forbids_them() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    let mut c = client(&s, "carol", "c").await;
    create(&mut a, ROOM, &[]).await;
    join(&mut b, ROOM, "bob").await;
    b.send(&format!(
        "<message to='{ROOM}/alice' type='chat' id='pm1'><body>psst</body></message>"
    ))
    .await;
    let pm = a.wait_for("the PM", |e| e.attr("id") == Some("pm1")).await;
    assert_eq!(pm.attr("from"), Some("tea@conference.localhost/bob"));
    assert!(pm.get_child("x", USER).is_some());
    // Not an occupant.
    c.send(&format!(
        "<message to='{ROOM}/alice' type='chat'><body>hi</body></message>"
    ))
    .await;
    assert_eq!(
        condition(&error_reply(&mut c, "message").await),
        "not-acceptable"
    );
    b.send(&format!(
        "<message to='{ROOM}/nobody' type='chat'><body>hi</body></message>"
    ))
    .await;
    assert_eq!(
        condition(&error_reply(&mut b, "message").await),
        "item-not-found"
    );
    configure(&mut a, ROOM, &[("muc#roomconfig_allowpm", "none")]).await;
    b.send(&format!(
        "<message to='{ROOM}/alice' type='chat'><body>hi</body></message>"
    ))
    .await;
    assert_eq!(
        condition(&error_reply(&mut b, "message").await),
        "forbidden"
    );
}

#[tokio::test]
async fn history_on_join_and_mam_paging_come_from_the_room_archive() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    for i in 0..5 {
        groupchat(&mut a, ROOM, &format!("m{i}")).await;
        next_groupchat(&mut a, &format!("m{i}")).await;
    }
    let mut b = client(&s, "bob", "b").await;
    join_with(&mut b, ROOM, "bob", "<history maxstanzas='3'/>").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let h = b
            .wait_for("history", |e| {
                e.name() == "message" && e.get_child("body", "jabber:client").is_some()
            })
            .await;
        let d = h
            .get_child("delay", "urn:xmpp:delay")
            .expect("a delay stamp");
        assert_eq!(d.attr("from"), Some(ROOM));
        got.push(h.get_child("body", "jabber:client").unwrap().text());
    }
    assert_eq!(got, ["m2", "m3", "m4"]);
    // The subject follows the history.
    b.wait_for("the subject", |e| {
        e.get_child("subject", "jabber:client").is_some()
    })
    .await;
    // MAM on the room, two per page.
    let mut after = String::new();
    let mut all = Vec::new();
    for page in 0..3 {
        let rsm = if after.is_empty() {
            "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>".to_string()
        } else {
            format!("<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>{after}</after></set>")
        };
        let id = format!("q{page}");
        b.send(&format!("<iq type='set' id='{id}' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>{rsm}</query></iq>")).await;
        let mut n = 0;
        loop {
            let e = b
                .wait_for("results and fin", |e| {
                    e.attr("id") == Some(id.as_str()) || e.has_child("result", "urn:xmpp:mam:2")
                })
                .await;
            if e.name() == "iq" {
                assert_eq!(e.attr("type"), Some("result"), "{}", xml(&e));
                let fin = e.get_child("fin", "urn:xmpp:mam:2").unwrap();
                assert_eq!(
                    fin.attr("complete") == Some("true"),
                    page == 2,
                    "{}",
                    xml(&e)
                );
                after = fin
                    .get_child("set", "http://jabber.org/protocol/rsm")
                    .unwrap()
                    .get_child("last", "http://jabber.org/protocol/rsm")
                    .map(|l| l.text())
                    .unwrap_or_default();
                break;
            }
            assert_eq!(e.attr("from"), Some(ROOM));
            all.push(xml(&e));
            n += 1;
        }
        assert!(n <= 2);
    }
    assert_eq!(all.len(), 5);
    for (i, r) in all.iter().enumerate() {
        assert!(r.contains(&format!("m{i}")), "{r}");
    }
}

#[tokio::test]
async fn self_ping_destroy_and_persistent_rooms_across_restarts() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    create(
        &mut a,
        ROOM,
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_roomname", "Kept"),
        ],
    )
    .await;
    let ping = |id: &str, to: &str| {
        format!("<iq type='get' id='{id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
    };
    let r = ask(&mut a, "p1", &ping("p1", "tea@conference.localhost/alice")).await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = ask(&mut b, "p2", &ping("p2", "tea@conference.localhost/alice")).await;
    assert_eq!(condition(&r), "not-acceptable", "not joined");
    drop(a);
    drop(b);
    let s = s.restart().await;
    let mut a = client(&s, "alice", "a").await;
    let p = join(&mut a, ROOM, "alice").await;
    assert!(!codes(&p).contains(&"201".into()), "not created again");
    let info = ask(&mut a, "i", &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    assert!(
        xml(&info).contains("Kept") && xml(&info).contains("muc_persistent"),
        "{}",
        xml(&info)
    );
    let mut b = client(&s, "bob", "b").await;
    join(&mut b, ROOM, "bob").await;
    let r = ask(&mut a, "d", &format!("<iq type='set' id='d' to='{ROOM}'><query xmlns='{MUC_NS}#owner'><destroy jid='new@conference.localhost'><reason>moving</reason></destroy></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
    let gone = b
        .wait_for("the destruction", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert!(
        xml(&gone).contains("destroy") && xml(&gone).contains("moving"),
        "{}",
        xml(&gone)
    );
    let nothing = ask(&mut b, "n", &format!("<iq type='get' id='n' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    assert_eq!(condition(&nothing), "item-not-found");
    let s = s.restart().await;
    assert_eq!(
        s.running.shared.muc.room_count(),
        0,
        "forgotten by the store too"
    );
}

#[tokio::test]
async fn room_creation_follows_the_limits() {
    let s = TestServer::start_with(|c| {
        c.muc.max_rooms_per_user = 1;
        c.muc.restrict_room_creation = "admins".into();
        c.muc.admins = vec!["alice@localhost".into()];
    })
    .await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    assert_eq!(
        condition(&join_with(&mut b, ROOM, "bob", "").await),
        "not-allowed"
    );
    create(&mut a, ROOM, &[]).await;
    // Admins are not held to the per-user count.
    create(&mut a, "second@conference.localhost", &[]).await;
    let full = TestServer::start_with(|c| c.muc.max_rooms = 1).await;
    full.add_user("bob", "pw");
    let mut b = client(&full, "bob", "b").await;
    join(&mut b, ROOM, "bob").await;
    let r = join_with(&mut b, "second@conference.localhost", "bob", "").await;
    assert_eq!(condition(&r), "resource-constraint", "max_rooms");
    let s2 = TestServer::start_with(|c| c.muc.max_rooms_per_user = 1).await;
    s2.add_user("bob", "pw");
    let mut b = client(&s2, "bob", "b").await;
    join(&mut b, ROOM, "bob").await;
    let r = join_with(&mut b, "second@conference.localhost", "bob", "").await;
    assert_eq!(condition(&r), "resource-constraint");
}

#[tokio::test]
async fn a_client_cannot_forge_a_rooms_stamps() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    a.send(&format!(
        "<message to='bob@localhost' type='chat' id='f'><body>trust me</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/><delay xmlns='urn:xmpp:delay' from='conference.localhost' stamp='2001-01-01T00:00:00Z'/></message>"
    ))
    .await;
    let m = b
        .wait_for("the message", |e| e.attr("id") == Some("f"))
        .await;
    assert!(!xml(&m).contains("forged"), "{}", xml(&m));
    assert!(!xml(&m).contains("2001-01-01"), "{}", xml(&m));
}

#[tokio::test]
async fn a_hibernated_occupant_stays_joined_and_gets_the_room_on_resume() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "phone").await;
    b.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = b.wait_for("enabled", |e| e.name() == "enabled").await;
    let previd = enabled.attr("id").expect("a resumption id").to_string();
    b.send("<presence/>").await;
    join(&mut b, ROOM, "bob").await;
    // The phone loses its connection: the session hibernates, still an occupant.
    b.kill(false);
    groupchat(&mut a, ROOM, "while asleep").await;
    next_groupchat(&mut a, "while asleep").await;
    let (mut b, _) = RawClient::authenticate(s.c2s(), "bob", "pw").await;
    b.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
    ))
    .await;
    let r = b.element().await;
    assert_eq!(r.name(), "resumed", "{}", xml(&r));
    let m = next_groupchat(&mut b, "while asleep").await;
    assert_eq!(m.attr("from"), Some("tea@conference.localhost/alice"));
    // XEP-0410: the room still counts it in.
    let ping = ask(
        &mut b,
        "sp",
        "<iq type='get' id='sp' to='tea@conference.localhost/bob'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(ping.attr("type"), Some("result"), "{}", xml(&ping));
}

#[tokio::test]
async fn over_the_archive_quota_messages_are_broadcast_unstamped() {
    let s = TestServer::start_with(|c| c.mam.max_bytes_per_user = 10).await;
    s.add_user("alice", "pw");
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    groupchat(&mut a, ROOM, "not kept").await;
    let m = next_groupchat(&mut a, "not kept").await;
    assert!(
        m.get_child("stanza-id", "urn:xmpp:sid:0").is_none(),
        "{}",
        xml(&m)
    );
    a.send(&format!(
        "<iq type='set' id='q' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>"
    ))
    .await;
    let mut results = 0;
    loop {
        let e = a.element().await;
        if e.name() == "iq" && e.attr("id") == Some("q") {
            assert_eq!(e.attr("type"), Some("result"), "{}", xml(&e));
            break;
        }
        if e.has_child("result", "urn:xmpp:mam:2") {
            results += 1;
        }
    }
    assert_eq!(results, 0, "nothing archived");
}

#[tokio::test]
async fn a_session_that_joined_without_initial_presence_still_leaves_when_it_ends() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    // No `<presence/>` first: some clients join rooms before (or without) going available.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "b").await;
    join(&mut b, ROOM, "bob").await;
    b.kill(false);
    let gone = a
        .wait_for("bob's session ends", |e| {
            e.attr("from") == Some("tea@conference.localhost/bob")
                && e.attr("type") == Some("unavailable")
        })
        .await;
    assert!(codes(&gone).is_empty(), "{}", xml(&gone));
}

#[tokio::test]
async fn an_occupant_whose_server_bounces_room_traffic_is_removed() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    // A user behind a component (like one on another server) joins.
    let mut comp = RawClient::component(s.component_addr(), "push.localhost", "s3cret").await;
    comp.send(&format!(
        "<presence from='ghost@push.localhost/r' to='{ROOM}/ghost'><x xmlns='{MUC_NS}'/></presence>"
    ))
    .await;
    comp.wait_for("the ghost's self-presence", |e| {
        e.attr("from") == Some("tea@conference.localhost/ghost") && codes(e).contains(&"110".into())
    })
    .await;
    // A full inbox is no reason to go.
    comp.send(&format!("<message type='error' from='ghost@push.localhost/r' to='{ROOM}/alice'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")).await;
    groupchat(&mut a, ROOM, "anyone there?").await;
    next_groupchat(&mut comp, "anyone there?").await;
    // Its server says the session is gone: the room lets it go, with 333.
    comp.send(&format!("<message type='error' from='ghost@push.localhost/r' to='{ROOM}/alice'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")).await;
    let gone = a
        .wait_for("the ghost removed", |e| {
            e.attr("from") == Some("tea@conference.localhost/ghost")
                && e.attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(codes(&gone), ["333"], "{}", xml(&gone));
}

#[tokio::test]
async fn an_occupant_asks_another_through_the_room() {
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    create(&mut a, ROOM, &[]).await;
    join(&mut b, ROOM, "bob").await;
    b.send(&format!(
        "<iq type='get' id='v1' to='{ROOM}/alice'><vCard xmlns='vcard-temp'/></iq>"
    ))
    .await;
    let q = a
        .wait_for("the forwarded query", |e| {
            e.name() == "iq" && e.has_child("vCard", "vcard-temp")
        })
        .await;
    assert_eq!(
        q.attr("from"),
        Some("tea@conference.localhost/bob"),
        "{}",
        xml(&q)
    );
    let id = q.attr("id").unwrap();
    a.send(&format!(
        "<iq type='result' id='{id}' to='tea@conference.localhost/bob'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>"
    ))
    .await;
    let r = b
        .wait_for("the answer", |e| e.attr("id") == Some("v1"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert_eq!(r.attr("from"), Some("tea@conference.localhost/alice"));
    assert!(xml(&r).contains("Alice"), "{}", xml(&r));
}

#[tokio::test]
async fn rooms_persistent_by_default_survive_a_restart_unconfigured() {
    let s = TestServer::start_with(|c| c.muc.default_persistent = true).await;
    s.add_user("alice", "pw");
    let mut a = client(&s, "alice", "a").await;
    // Without the MUC element: an instant room, never configured.
    a.send(&format!("<presence to='{ROOM}/alice'/>")).await;
    a.wait_for("the self-presence", |e| codes(e).contains(&"201".into()))
        .await;
    drop(a);
    let s = s.restart().await;
    assert_eq!(s.running.shared.muc.room_count(), 1);
}

/// The features a disco#info answer lists.
fn disco_features(r: &Element) -> std::collections::BTreeSet<String> {
    r.get_child("query", "http://jabber.org/protocol/disco#info")
        .map(|q| {
            q.children()
                .filter(|c| c.name() == "feature")
                .filter_map(|c| c.attr("var").map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_muc_table_line_is_served_and_advertised() {
    use herald_server::features::iq::table::TABLE;
    use herald_server::features::iq::{Advertised, Target};
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[]).await;
    let service = ask(&mut a, "si", "<iq type='get' id='si' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let room = ask(&mut a, "ri", &format!("<iq type='get' id='ri' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    let (service, room) = (disco_features(&service), disco_features(&room));
    let mut lines = 0;
    for (i, e) in TABLE.iter().enumerate() {
        let (to, listed, advertised) = match (e.target, e.advertised) {
            (Target::MucService, Advertised::OnMucService(f)) => {
                ("conference.localhost", &service, f)
            }
            (Target::MucRoom, Advertised::OnMucRoom(f)) => (ROOM, &room, f),
            (Target::MucRoom, Advertised::Nowhere) => (ROOM, &room, &[][..]),
            (Target::MucService | Target::MucRoom, other) => panic!("line {i}: {other:?}"),
            _ => continue,
        };
        lines += 1;
        for f in advertised {
            assert!(listed.contains(*f), "{f} not advertised on {to}");
        }
        // Alice owns the room: every line answers her, none with service-unavailable.
        let id = format!("t{i}");
        let r = ask(
            &mut a,
            &id,
            &format!(
                "<iq type='{}' id='{id}' to='{to}'><{} xmlns='{}'/></iq>",
                e.typ.as_str(),
                e.element,
                e.ns
            ),
        )
        .await;
        assert!(
            !xml(&r).contains("service-unavailable"),
            "{:?} {} {}: {}",
            e.typ,
            e.ns,
            e.element,
            xml(&r)
        );
    }
    assert!(lines >= 10, "the MUC lines");
    // What no line serves is not answered.
    let r = ask(
        &mut a,
        "x",
        &format!("<iq type='get' id='x' to='{ROOM}'><query xmlns='jabber:iq:version'/></iq>"),
    )
    .await;
    assert!(xml(&r).contains("service-unavailable"), "{}", xml(&r));
    let r = ask(
        &mut a,
        "y",
        "<iq type='set' id='y' to='conference.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert!(xml(&r).contains("service-unavailable"), "{}", xml(&r));
}

/// The `muc#roominfo_avatarhash` values of a room's disco#info (XEP-0486 §4.3).
fn avatar_hashes(info: &Element) -> Vec<String> {
    info.get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("x", "jabber:x:data"))
        .and_then(|x| {
            x.children()
                .find(|f| f.attr("var") == Some("muc#roominfo_avatarhash"))
        })
        .map(|f| f.children().map(|v| v.text()).collect())
        .unwrap_or_default()
}

fn disco_info_iq(id: &str, to: &str) -> String {
    format!("<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
}

fn vcard_set_iq(id: &str, to: &str, inner: &str) -> String {
    format!("<iq type='set' id='{id}' to='{to}'><vCard xmlns='vcard-temp'>{inner}</vCard></iq>")
}

/// base64 of "room avatar bytes" and its SHA-1; of "second format" and its SHA-1.
const PHOTO: &str = "cm9vbSBhdmF0YXIgYnl0ZXM=";
const PHOTO_SHA1: &str = "cbb7499c34030bbd44e453d2c446389b92ecf6f8";
const PHOTO2: &str = "c2Vjb25kIGZvcm1hdA==";
const PHOTO2_SHA1: &str = "2cc07d7dbb0cc64dbd90c8dd6c52ccc57081038f";

fn photo(b64: &str) -> String {
    format!("<PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO>")
}

#[tokio::test]
async fn room_avatars_are_set_by_owners_read_by_anyone_and_kept() {
    let s = TestServer::start_with(|c| c.muc.max_vcard_bytes = 2048).await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, "pw");
    }
    let mut a = client(&s, "alice", "a").await;
    let mut b = client(&s, "bob", "b").await;
    let mut c = client(&s, "carol", "c").await;
    create(
        &mut a,
        ROOM,
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_publicroom", "0"),
        ],
    )
    .await;
    let r = ask(&mut a, "m", &format!("<iq type='set' id='m' to='{ROOM}'><query xmlns='{MUC_NS}#admin'><item jid='bob@localhost' affiliation='member'/></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    join(&mut b, ROOM, "bob").await;

    // No avatar yet: vcard-temp is advertised, the hash field is absent, the vCard empty.
    let info = ask(&mut b, "i0", &disco_info_iq("i0", ROOM)).await;
    assert!(
        disco_features(&info).contains("vcard-temp"),
        "{}",
        xml(&info)
    );
    assert!(avatar_hashes(&info).is_empty(), "{}", xml(&info));
    let v = ask(
        &mut b,
        "v0",
        &format!("<iq type='get' id='v0' to='{ROOM}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert_eq!(v.attr("type"), Some("result"), "{}", xml(&v));
    assert!(!xml(&v).contains("PHOTO"), "{}", xml(&v));

    // A member who is no owner may not set it; nothing changes.
    let r = ask(&mut b, "s1", &vcard_set_iq("s1", ROOM, &photo(PHOTO))).await;
    assert_eq!(condition(&r), "forbidden", "{}", xml(&r));
    // Too large, or a BINVAL that is not base64: refused, nothing changes.
    let big = format!("<DESC>{}</DESC>", "x".repeat(4096));
    let r = ask(&mut a, "s2", &vcard_set_iq("s2", ROOM, &big)).await;
    assert_eq!(condition(&r), "not-acceptable", "{}", xml(&r));
    let r = ask(
        &mut a,
        "s3",
        &vcard_set_iq("s3", ROOM, &photo("!!not base64!!")),
    )
    .await;
    assert_eq!(condition(&r), "bad-request", "{}", xml(&r));
    let info = ask(&mut b, "i1", &disco_info_iq("i1", ROOM)).await;
    assert!(avatar_hashes(&info).is_empty(), "{}", xml(&info));

    // The owner sets it (two formats of one image): occupants hear 104 and find both hashes.
    let two = format!("{}{}", photo(PHOTO), photo(PHOTO2));
    let r = ask(&mut a, "s4", &vcard_set_iq("s4", ROOM, &two)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let note = b
        .wait_for("the configuration change", |e| {
            e.name() == "message"
                && e.attr("from") == Some(ROOM)
                && codes(e).contains(&"104".into())
        })
        .await;
    assert_eq!(note.attr("type"), Some("groupchat"), "{}", xml(&note));
    let info = ask(&mut b, "i2", &disco_info_iq("i2", ROOM)).await;
    assert_eq!(
        avatar_hashes(&info),
        vec![PHOTO_SHA1, PHOTO2_SHA1],
        "{}",
        xml(&info)
    );
    let v = ask(
        &mut b,
        "v1",
        &format!("<iq type='get' id='v1' to='{ROOM}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert!(
        xml(&v).contains(PHOTO) && xml(&v).contains(PHOTO2),
        "{}",
        xml(&v)
    );

    // Carol is not in the room, nor may she join it (members-only, hidden): she still sees
    // the hash and reads the avatar (XEP-0486: discoverable from outside the room).
    let info = ask(&mut c, "i3", &disco_info_iq("i3", ROOM)).await;
    assert_eq!(
        avatar_hashes(&info),
        vec![PHOTO_SHA1, PHOTO2_SHA1],
        "{}",
        xml(&info)
    );
    let v = ask(
        &mut c,
        "v2",
        &format!("<iq type='get' id='v2' to='{ROOM}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert!(xml(&v).contains(PHOTO), "{}", xml(&v));

    // A persistent room keeps it across a restart.
    drop((a, b, c));
    let s = s.restart().await;
    let mut c = client(&s, "carol", "c").await;
    let info = ask(&mut c, "i4", &disco_info_iq("i4", ROOM)).await;
    assert_eq!(
        avatar_hashes(&info),
        vec![PHOTO_SHA1, PHOTO2_SHA1],
        "{}",
        xml(&info)
    );

    // An empty vCard removes the avatar (XEP-0486 §4.2).
    let mut a = client(&s, "alice", "a").await;
    let r = ask(&mut a, "s5", &vcard_set_iq("s5", ROOM, "")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let info = ask(&mut c, "i5", &disco_info_iq("i5", ROOM)).await;
    assert!(avatar_hashes(&info).is_empty(), "{}", xml(&info));

    // Set again, then the room is destroyed: the avatar goes with it, also from the store.
    let r = ask(&mut a, "s6", &vcard_set_iq("s6", ROOM, &photo(PHOTO))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let r = ask(&mut a, "d", &format!("<iq type='set' id='d' to='{ROOM}'><query xmlns='{MUC_NS}#owner'><destroy/></query></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let v = ask(
        &mut c,
        "v3",
        &format!("<iq type='get' id='v3' to='{ROOM}'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await;
    assert_eq!(condition(&v), "item-not-found", "{}", xml(&v));
    drop((a, c));
    let s = s.restart().await;
    assert_eq!(s.running.shared.muc.room_count(), 0);
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[("muc#roomconfig_persistentroom", "1")]).await;
    let info = ask(&mut a, "i6", &disco_info_iq("i6", ROOM)).await;
    assert!(
        avatar_hashes(&info).is_empty(),
        "a new room of that name has none: {}",
        xml(&info)
    );
}

#[tokio::test]
async fn joining_a_full_room_of_a_thousand_gives_every_presence_within_the_default_budget() {
    // Default limits (session queue 4 MiB, XEP-0198 queue 1,000): a room at max_occupants.
    let s = server().await;
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[("muc#roomconfig_maxusers", "1000")]).await;
    // 998 occupants that have no connection (their traffic goes nowhere), with the presence
    // a mobile client typically sends: caps, an avatar hash, a status.
    let muc = &s.running.shared.muc;
    for i in 0..998 {
        let p: Element = format!(
            "<presence xmlns='jabber:client'><show>away</show><status>on my way, back at {i}</status>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='Oybz1x3hw2Q3E0vKZRhdwqkiT3s='/>\
             <x xmlns='vcard-temp:x:update'><photo>0123456789abcdef0123456789abcdef01234567</photo></x></presence>"
        )
        .parse()
        .unwrap();
        let from = format!("filler{i}@localhost/phone");
        assert!(
            muc.join_quietly(ROOM, &from, &format!("filler {i}"), &p)
                .await
        );
    }
    // Bob joins with XEP-0198 on (its queue holds what is not acknowledged yet).
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "b").await;
    b.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    b.wait_for("enabled", |e| e.name() == "enabled").await;
    b.send("<presence/>").await;
    b.send(&format!(
        "<presence to='{ROOM}/bob'><x xmlns='{MUC_NS}'/></presence>"
    ))
    .await;
    let mut others = std::collections::BTreeSet::new();
    let mut handled = 0u32;
    let own = loop {
        let e = b.element().await;
        if e.name() == "r" {
            // Acknowledge as a client does when asked.
            b.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", handled))
                .await;
            continue;
        }
        if matches!(e.name(), "presence" | "message" | "iq") {
            handled += 1;
        }
        if e.name() != "presence" {
            continue;
        }
        assert_ne!(e.attr("type"), Some("error"), "{}", xml(&e));
        if codes(&e).contains(&"110".to_string()) {
            break e;
        }
        if let Some(f) = e.attr("from").filter(|f| f.starts_with(ROOM)) {
            others.insert(f.to_string());
        }
    };
    assert_eq!(own.attr("from"), Some(format!("{ROOM}/bob").as_str()));
    assert_eq!(
        others.len(),
        999,
        "alice and every filler, before bob's own"
    );
    // The subject follows, and the session is alive and in the room.
    b.wait_for("the subject", |e| {
        e.get_child("subject", "jabber:client").is_some()
    })
    .await;
    groupchat(&mut a, ROOM, "welcome").await;
    next_groupchat(&mut b, "welcome").await;
    assert_eq!(
        muc.paced_joins(),
        0,
        "the gate is closed once the list is given"
    );
}

#[tokio::test]
async fn what_the_room_holds_for_a_paced_joiner_past_its_budget_is_refused_to_the_sender() {
    // A session budget of 64 KiB: the occupant list of 100 goes at the pace bob acknowledges
    // it, and what the room sends bob meanwhile is held behind it, within those 64 KiB.
    let s = TestServer::start_with(|c| c.limits.session_queue_bytes = 64 << 10).await;
    for u in ["alice", "bob"] {
        s.add_user(u, "pw");
    }
    let mut a = client(&s, "alice", "a").await;
    create(&mut a, ROOM, &[("muc#roomconfig_maxusers", "1000")]).await;
    let muc = &s.running.shared.muc;
    for i in 0..100 {
        let p: Element = format!(
            "<presence xmlns='jabber:client'><status>filler {i} with a status of some length</status></presence>"
        )
        .parse()
        .unwrap();
        let from = format!("filler{i}@localhost/phone");
        assert!(
            muc.join_quietly(ROOM, &from, &format!("filler {i}"), &p)
                .await
        );
    }
    // Bob joins with XEP-0198 on and acknowledges nothing yet: the list stalls.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "b").await;
    b.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    b.wait_for("enabled", |e| e.name() == "enabled").await;
    b.send("<presence/>").await;
    b.send(&format!(
        "<presence to='{ROOM}/bob'><x xmlns='{MUC_NS}'/></presence>"
    ))
    .await;
    // Stanzas bob has had, for his acknowledgements; the occupant list has begun.
    let mut handled = 0u32;
    loop {
        let e = b.element().await;
        if matches!(e.name(), "presence" | "message" | "iq") {
            handled += 1;
        }
        if e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with(ROOM)) {
            break;
        }
    }

    // Alice asks bob (through the room) eight times, 16 KB each: more than the room may hold.
    let pad = "x".repeat(16 << 10);
    for n in 1..=8 {
        a.send(&format!(
            "<iq type='get' id='q{n}' to='{ROOM}/bob'><query xmlns='urn:example:pad' n='{n}'>{pad}</query></iq>"
        ))
        .await;
    }
    // Those past the budget come back at once as the error any delivery to a session over
    // its budget gives: resource-constraint, try again later. Those held are not answered
    // (bob never answers), so the refused ones are the last, up to q8.
    let mut refused = Vec::new();
    loop {
        let e = error_reply(&mut a, "iq").await;
        assert_eq!(condition(&e), "resource-constraint", "{}", xml(&e));
        let err = e.get_child("error", "jabber:client");
        assert_eq!(
            err.and_then(|x| x.attr("type")),
            Some("wait"),
            "{}",
            xml(&e)
        );
        assert_eq!(e.attr("from"), Some(format!("{ROOM}/bob").as_str()));
        let id = e.attr("id").unwrap_or_default().to_string();
        let n: u32 = id.trim_start_matches('q').parse().unwrap();
        refused.push(n);
        if n == 8 {
            break;
        }
    }
    let held = refused[0] - 1;
    assert!(held >= 1, "the room held none of them: {refused:?}");
    assert_eq!(refused, (held + 1..=8).collect::<Vec<_>>());

    // Bob catches up: he gets the held ones, in order, and none of the refused ones.
    let mut got = Vec::new();
    while got.len() < held as usize {
        let e = b.element().await;
        if e.name() == "r" {
            b.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"))
                .await;
            continue;
        }
        if matches!(e.name(), "presence" | "message" | "iq") {
            handled += 1;
        }
        if let Some(q) = e.get_child("query", "urn:example:pad") {
            got.push(q.attr("n").unwrap_or_default().parse::<u32>().unwrap());
        }
    }
    assert_eq!(got, (1..=held).collect::<Vec<_>>());
    groupchat(&mut a, ROOM, "welcome").await;
    let next = b
        .wait_for("the next IQ or message", |e| {
            e.get_child("query", "urn:example:pad").is_some() || e.name() == "message"
        })
        .await;
    assert_eq!(next.attr("type"), Some("groupchat"), "{}", xml(&next));
}
