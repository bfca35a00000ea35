//! Table tests of the room machine: each row is stanzas in, what the room answers out.

use herald_muc::{Defaults, HistoryRequest, Limits, Out, Room, RoomConfig};
use herald_proto::Element;

const ROOM: &str = "tea@conference.d";
const NOW: i64 = 1_700_000_000_000_000;

fn el(xml: &str) -> Element {
    // Wrapped so the stanza inherits the client namespace, as a decoded stanza has it.
    let w: Element = format!("<w xmlns='jabber:client'>{xml}</w>")
        .parse()
        .unwrap_or_else(|e| panic!("{xml}: {e}"));
    w.children().next().cloned().expect("one stanza")
}

fn lim() -> Limits {
    Limits {
        defaults: Defaults {
            public: true,
            persistent: true,
            archive: true,
            max_users: 3,
        },
        ..Limits::default()
    }
}

fn room() -> Room {
    let mut r = Room::new(
        ROOM,
        "owner@d",
        RoomConfig::new(&lim().defaults),
        [7; 32],
        false,
    );
    join(&mut r, "owner@d/a", "boss");
    r
}

fn run(r: &mut Room, from: &str, nick: Option<&str>, xml: &str) -> Vec<Out> {
    r.handle(from, nick, &el(xml), false, NOW, &lim(), &["disco"])
}

fn join(r: &mut Room, from: &str, nick: &str) -> Vec<Out> {
    run(
        r,
        from,
        Some(nick),
        "<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    )
}

/// Every stanza sent, broadcasts expanded (one copy per recipient, addressed).
fn sent(out: &[Out]) -> Vec<Element> {
    let mut v = Vec::new();
    for o in out {
        match o {
            Out::Send(e) => v.push(e.clone()),
            Out::Occupants { presences, .. } => v.extend(presences.iter().cloned()),
            Out::Broadcast { stanza, to } => {
                for t in to {
                    let mut e = stanza.clone();
                    herald_xep::stanza::set(&mut e, "to", t.as_str());
                    v.push(e);
                }
            }
            _ => {}
        }
    }
    v
}

fn condition(out: &[Out]) -> Option<String> {
    let s = sent(out);
    let e = s.iter().find(|e| e.attr("type") == Some("error"))?;
    let err = e.get_child("error", "jabber:client")?;
    err.children().next().map(|c| c.name().to_string())
}

fn codes(p: &Element) -> Vec<String> {
    p.get_child("x", "http://jabber.org/protocol/muc#user")
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn set_affiliation(r: &mut Room, jid: &str, aff: &str) {
    let q = format!(
        "<iq type='set' id='a'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='{jid}' affiliation='{aff}'/></query></iq>"
    );
    let out = run(r, "owner@d/a", None, &q);
    assert_eq!(condition(&out), None, "{jid} {aff}");
}

fn configure(r: &mut Room, fields: &[(&str, &str)]) -> Vec<Out> {
    let mut form = String::from("<iq type='set' id='c'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>");
    for (k, v) in fields {
        form.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    form.push_str("</x></query></iq>");
    run(r, "owner@d/a", None, &form)
}

#[test]
fn join_refusals_carry_the_xep_0045_conditions() {
    type Setup = fn(&mut Room);
    let table: &[(&str, Setup, &str, &str, Option<&str>)] = &[
        ("open room", |_| {}, "u@d/x", "<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>", None),
        ("members only", |r| { configure(r, &[("muc#roomconfig_membersonly", "1")]); }, "u@d/x", "<presence/>", Some("registration-required")),
        ("member of a members-only room", |r| { configure(r, &[("muc#roomconfig_membersonly", "1")]); set_affiliation(r, "u@d", "member"); }, "u@d/x", "<presence/>", None),
        ("banned", |r| set_affiliation(r, "u@d", "outcast"), "u@d/x", "<presence/>", Some("forbidden")),
        ("no password", |r| { configure(r, &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "pw")]); }, "u@d/x", "<presence/>", Some("not-authorized")),
        ("wrong password", |r| { configure(r, &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "pw")]); }, "u@d/x", "<presence><x xmlns='http://jabber.org/protocol/muc'><password>no</password></x></presence>", Some("not-authorized")),
        ("right password", |r| { configure(r, &[("muc#roomconfig_passwordprotectedroom", "1"), ("muc#roomconfig_roomsecret", "pw")]); }, "u@d/x", "<presence><x xmlns='http://jabber.org/protocol/muc'><password>pw</password></x></presence>", None),
        ("nick taken", |r| { join(r, "v@d/x", "nick"); }, "u@d/x", "<presence/>", Some("conflict")),
        ("same user, second session", |r| { join(r, "u@d/y", "nick"); }, "u@d/x", "<presence/>", None),
        ("full", |r| { join(r, "v@d/x", "v"); join(r, "w@d/x", "w"); }, "u@d/x", "<presence/>", Some("service-unavailable")),
        ("full, but an admin", |r| { join(r, "v@d/x", "v"); join(r, "w@d/x", "w"); set_affiliation(r, "u@d", "admin"); }, "u@d/x", "<presence/>", None),
    ];
    for (what, setup, from, xml, want) in table {
        let mut r = room();
        setup(&mut r);
        let out = run(&mut r, from, Some("nick"), xml);
        assert_eq!(condition(&out).as_deref(), *want, "{what}");
        assert_eq!(r.is_occupant(from), want.is_none(), "{what}");
    }
}

#[test]
fn a_join_sees_the_others_then_itself_with_codes_then_history_and_subject() {
    let mut r = room();
    let out = run(
        &mut r,
        "u@d/x",
        Some("nick"),
        "<presence><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='500' seconds='60'/></x></presence>",
    );
    let s = sent(&out);
    // The owner's presence to the joiner, the joiner's to the owner, the joiner's own.
    assert_eq!(s[0].attr("from"), Some("tea@conference.d/boss"));
    assert_eq!(s[0].attr("to"), Some("u@d/x"));
    assert_eq!(s[1].attr("to"), Some("owner@d/a"));
    // The owner is a moderator of a semi-anonymous room: sees the real JID.
    let item = |p: &Element| {
        p.get_child("x", "http://jabber.org/protocol/muc#user")
            .and_then(|x| x.get_child("item", "http://jabber.org/protocol/muc#user"))
            .and_then(|i| i.attr("jid"))
            .map(String::from)
    };
    assert_eq!(item(&s[1]).as_deref(), Some("u@d/x"));
    assert_eq!(
        item(&s[0]),
        None,
        "a participant does not see the owner's JID"
    );
    assert_eq!(s[2].attr("to"), Some("u@d/x"));
    assert_eq!(codes(&s[2]), ["110", "170"]);
    assert!(s[2]
        .get_child("occupant-id", "urn:xmpp:occupant-id:0")
        .is_some());
    match &out[3] {
        Out::History(HistoryRequest {
            max_stanzas, since, ..
        }) => {
            assert_eq!(*max_stanzas, lim().history_max, "clamped");
            assert_eq!(*since, Some(NOW - 60_000_000));
        }
        o => panic!("{o:?}"),
    }
    assert!(s[3].get_child("subject", "jabber:client").is_some());
}

#[test]
fn a_room_created_locked_admits_only_its_owner_until_configured() {
    let mut r = Room::new(ROOM, "o@d", RoomConfig::new(&lim().defaults), [1; 32], true);
    let out = r.handle(
        "o@d/a",
        Some("o"),
        &el("<presence><x xmlns='http://jabber.org/protocol/muc'/></presence>"),
        true,
        NOW,
        &lim(),
        &[],
    );
    assert_eq!(codes(&sent(&out)[0]), ["110", "170", "201"]);
    assert_eq!(
        condition(&join(&mut r, "u@d/x", "u")).as_deref(),
        Some("item-not-found")
    );
    // The instant room: an empty submitted form.
    let out = r.handle("o@d/a", None, &el("<iq type='set' id='i'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"), false, NOW, &lim(), &[]);
    assert_eq!(condition(&out), None);
    assert!(!r.is_locked());
    assert_eq!(condition(&join(&mut r, "u@d/x", "u")), None);
}

#[test]
fn messages_are_stamped_archived_and_broadcast_visitors_are_silenced() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    let out = run(&mut r, "u@d/x", None, "<message type='groupchat' id='m1'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='tea@conference.d' id='forged'/></message>");
    let Some(Out::Archive {
        id,
        with_bare,
        with_full,
        ..
    }) = out.first()
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (with_bare.as_str(), with_full.as_str()),
        ("u@d", "tea@conference.d/u")
    );
    let s = sent(&out);
    assert_eq!(s.len(), 2, "one copy per session");
    for m in &s {
        assert_eq!(m.attr("from"), Some("tea@conference.d/u"));
        let ids: Vec<_> = m.children().filter(|c| c.name() == "stanza-id").collect();
        assert_eq!(ids.len(), 1, "the forged stamp is gone");
        assert_eq!(ids[0].attr("id"), Some(id.as_str()));
    }
    // Non-occupants, wrong types, visitors.
    assert_eq!(
        condition(&run(
            &mut r,
            "z@d/x",
            None,
            "<message type='groupchat'><body>x</body></message>"
        ))
        .as_deref(),
        Some("not-acceptable")
    );
    assert_eq!(
        condition(&run(
            &mut r,
            "u@d/x",
            None,
            "<message type='chat'><body>x</body></message>"
        ))
        .as_deref(),
        Some("bad-request")
    );
    configure(&mut r, &[("muc#roomconfig_moderatedroom", "1")]);
    join(&mut r, "v@d/x", "v");
    assert_eq!(
        condition(&run(
            &mut r,
            "v@d/x",
            None,
            "<message type='groupchat'><body>x</body></message>"
        ))
        .as_deref(),
        Some("forbidden")
    );
}

#[test]
fn subject_changes_follow_the_rights_and_the_size_bound() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    let subject = |n: usize| {
        format!(
            "<message type='groupchat'><subject>{}</subject></message>",
            "s".repeat(n)
        )
    };
    assert_eq!(
        condition(&run(&mut r, "u@d/x", None, &subject(3))).as_deref(),
        Some("forbidden")
    );
    let out = run(&mut r, "owner@d/a", None, &subject(3));
    assert!(matches!(out.last(), Some(Out::Save)));
    assert_eq!(r.subject(), Some("sss"));
    assert_eq!(
        condition(&run(&mut r, "owner@d/a", None, &subject(2000))).as_deref(),
        Some("not-acceptable")
    );
    configure(&mut r, &[("muc#roomconfig_changesubject", "1")]);
    assert_eq!(condition(&run(&mut r, "u@d/x", None, &subject(1))), None);
}

#[test]
fn private_messages() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    let pm = "<message type='chat'><body>psst</body></message>";
    let out = run(&mut r, "u@d/x", Some("boss"), pm);
    let s = sent(&out);
    assert_eq!(
        (s[0].attr("from"), s[0].attr("to")),
        (Some("tea@conference.d/u"), Some("owner@d/a"))
    );
    assert!(s[0].has_child("x", "http://jabber.org/protocol/muc#user"));
    assert_eq!(
        condition(&run(&mut r, "u@d/x", Some("ghost"), pm)).as_deref(),
        Some("item-not-found")
    );
    assert_eq!(
        condition(&run(&mut r, "z@d/x", Some("boss"), pm)).as_deref(),
        Some("not-acceptable")
    );
    configure(&mut r, &[("muc#roomconfig_allowpm", "none")]);
    assert_eq!(
        condition(&run(&mut r, "u@d/x", Some("boss"), pm)).as_deref(),
        Some("forbidden")
    );
}

#[test]
fn kick_and_ban_carry_their_codes_and_spare_owners() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    let kick = |nick: &str| {
        format!("<iq type='set' id='k'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='{nick}' role='none'><reason>out</reason></item></query></iq>")
    };
    assert_eq!(
        condition(&run(&mut r, "u@d/x", None, &kick("boss"))).as_deref(),
        Some("forbidden")
    );
    let out = run(&mut r, "owner@d/a", None, &kick("u"));
    let s = sent(&out);
    let to_u = s.iter().find(|p| p.attr("to") == Some("u@d/x")).unwrap();
    assert_eq!(to_u.attr("type"), Some("unavailable"));
    assert_eq!(codes(to_u), ["110", "307"]);
    assert!(!r.is_occupant("u@d/x"));
    join(&mut r, "u@d/x", "u");
    set_affiliation(&mut r, "u@d", "admin");
    // An admin cannot ban the owner.
    let ban = "<iq type='set' id='b'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='owner@d' affiliation='outcast'/></query></iq>";
    assert_eq!(
        condition(&run(&mut r, "u@d/x", None, ban)).as_deref(),
        Some("not-allowed")
    );
    set_affiliation(&mut r, "u@d", "member");
    let out = run(&mut r, "owner@d/a", None, "<iq type='set' id='b'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='u@d' affiliation='outcast'/></query></iq>");
    let s = sent(&out);
    let to_u = s.iter().find(|p| p.attr("to") == Some("u@d/x")).unwrap();
    assert_eq!(codes(to_u), ["110", "301"]);
    assert_eq!(
        condition(&join(&mut r, "u@d/other", "u")).as_deref(),
        Some("forbidden")
    );
    // The last owner stays.
    let out = run(&mut r, "owner@d/a", None, "<iq type='set' id='o'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='owner@d' affiliation='member'/></query></iq>");
    assert_eq!(condition(&out).as_deref(), Some("conflict"));
}

#[test]
fn nick_changes_and_leaving() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    assert_eq!(
        condition(&run(&mut r, "u@d/x", Some("boss"), "<presence/>")).as_deref(),
        Some("conflict")
    );
    let out = run(&mut r, "u@d/x", Some("u2"), "<presence/>");
    let s = sent(&out);
    assert_eq!(
        codes(s.iter().find(|p| p.attr("to") == Some("u@d/x")).unwrap()),
        ["110", "303"]
    );
    assert!(r.is_occupant("u@d/x"));
    let out = run(
        &mut r,
        "u@d/x",
        Some("u2"),
        "<presence type='unavailable'/>",
    );
    assert_eq!(sent(&out).len(), 2);
    assert!(!r.is_occupant("u@d/x"));
    // A temporary room goes with its last occupant; a persistent one stays.
    let out = run(
        &mut r,
        "owner@d/a",
        Some("boss"),
        "<presence type='unavailable'/>",
    );
    assert!(!out.iter().any(|o| matches!(o, Out::Gone)));
    join(&mut r, "owner@d/a", "boss");
    configure(&mut r, &[("muc#roomconfig_persistentroom", "0")]);
    let out = run(
        &mut r,
        "owner@d/a",
        Some("boss"),
        "<presence type='unavailable'/>",
    );
    assert!(matches!(out.last(), Some(Out::Gone)));
}

#[test]
fn self_ping_occupant_ids_and_destroy() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    let ping = "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>";
    assert_eq!(
        sent(&run(&mut r, "u@d/x", Some("u"), ping))[0].attr("type"),
        Some("result")
    );
    assert_eq!(
        condition(&run(&mut r, "u@d/y", Some("u"), ping)).as_deref(),
        Some("not-acceptable")
    );
    // A ping to someone else's nick is theirs to answer: forwarded.
    let fwd = sent(&run(&mut r, "u@d/x", Some("boss"), ping));
    assert_eq!(fwd[0].attr("to"), Some("owner@d/a"));
    assert_eq!(r.occupant_id("u@d"), r.occupant_id("u@d"));
    assert_ne!(r.occupant_id("u@d"), r.occupant_id("v@d"));
    let back = Room::from_saved(ROOM, &r.to_saved(), &lim());
    assert_eq!(
        back.occupant_id("u@d"),
        r.occupant_id("u@d"),
        "stable across restarts"
    );
    let other = Room::new(
        "other@conference.d",
        "o@d",
        RoomConfig::new(&lim().defaults),
        [8; 32],
        false,
    );
    assert_ne!(other.occupant_id("u@d"), r.occupant_id("u@d"), "per room");
    let out = run(&mut r, "owner@d/a", None, "<iq type='set' id='d'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='new@conference.d'><reason>moved</reason></destroy></query></iq>");
    let s = sent(&out);
    assert_eq!(s.len(), 3, "the result and one unavailable per session");
    assert!(s[1]
        .get_child("x", "http://jabber.org/protocol/muc#user")
        .unwrap()
        .has_child("destroy", "http://jabber.org/protocol/muc#user"));
    assert!(matches!(out.last(), Some(Out::Gone)));
}

#[test]
fn unknown_configuration_field_is_not_acceptable_and_members_only_invites_add_members() {
    let mut r = room();
    assert_eq!(
        condition(&configure(&mut r, &[("muc#roomconfig_bogus", "1")])).as_deref(),
        Some("not-acceptable")
    );
    configure(&mut r, &[("muc#roomconfig_membersonly", "1")]);
    let out = run(&mut r, "owner@d/a", None, "<message><x xmlns='http://jabber.org/protocol/muc#user'><invite to='new@d'><reason>come</reason></invite></x></message>");
    let s = sent(&out);
    assert_eq!(s[0].attr("to"), Some("new@d"));
    assert!(matches!(out.last(), Some(Out::Save)));
    assert_eq!(
        condition(&join(&mut r, "new@d/x", "new")),
        None,
        "now a member"
    );
}

#[test]
fn mam_access_follows_membership() {
    let mut r = room();
    let q = "<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'/></iq>";
    assert!(matches!(
        run(&mut r, "z@d/x", None, q).first(),
        Some(Out::MamQuery {
            real_jids: false,
            ..
        })
    ));
    assert!(matches!(
        run(&mut r, "owner@d/a", None, q).first(),
        Some(Out::MamQuery {
            real_jids: true,
            ..
        })
    ));
    configure(&mut r, &[("muc#roomconfig_membersonly", "1")]);
    assert_eq!(
        condition(&run(&mut r, "z@d/x", None, q)).as_deref(),
        Some("forbidden")
    );
    configure(&mut r, &[("muc#roomconfig_enablearchiving", "0")]);
    assert_eq!(
        condition(&run(&mut r, "owner@d/a", None, q)).as_deref(),
        Some("service-unavailable")
    );
}

#[test]
fn results_are_never_answered_and_an_empty_room_made_temporary_goes() {
    let mut r = room();
    for typ in ["result", "error"] {
        let out = run(&mut r, "u@d/x", None, &format!("<iq type='{typ}' id='r'/>"));
        assert!(out.is_empty(), "{typ}: {out:?}");
    }
    run(
        &mut r,
        "owner@d/a",
        Some("boss"),
        "<presence type='unavailable'/>",
    );
    assert!(r.is_empty());
    let out = configure(&mut r, &[("muc#roomconfig_persistentroom", "0")]);
    assert!(matches!(out.last(), Some(Out::Gone)), "{out:?}");
}

#[test]
fn bounds_give_their_errors() {
    let small = Limits {
        max_affiliations: 2,
        max_sessions_per_occupant: 1,
        max_field_bytes: 8,
        ..lim()
    };
    let mut r = room();
    let run_small = |r: &mut Room, from: &str, nick: Option<&str>, xml: &str| {
        r.handle(from, nick, &el(xml), false, NOW, &small, &[])
    };
    let aff = |jid: &str| {
        format!("<iq type='set' id='a'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='{jid}' affiliation='member'/></query></iq>")
    };
    // The owner is one affiliation; one more fits, a third does not.
    assert_eq!(
        condition(&run_small(&mut r, "owner@d/a", None, &aff("m1@d"))),
        None
    );
    assert_eq!(
        condition(&run_small(&mut r, "owner@d/a", None, &aff("m2@d"))).as_deref(),
        Some("resource-constraint")
    );
    // Changing a listed one still works at the bound.
    let out = run_small(&mut r, "owner@d/a", None, "<iq type='set' id='a'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='m1@d' affiliation='admin'/></query></iq>");
    assert_eq!(condition(&out), None);
    let join = "<presence/>";
    assert_eq!(
        condition(&run_small(&mut r, "u@d/x", Some("a-very-long-nick"), join)).as_deref(),
        Some("not-acceptable")
    );
    assert_eq!(
        condition(&run_small(&mut r, "u@d/x", Some("u"), join)),
        None
    );
    assert_eq!(
        condition(&run_small(&mut r, "u@d/y", Some("u"), join)).as_deref(),
        Some("resource-constraint")
    );
}

#[test]
fn history_requests_are_clamped_and_zero_means_none() {
    let ask = |attrs: &str| {
        let mut r = room();
        let out = run(
            &mut r,
            "u@d/x",
            Some("u"),
            &format!("<presence><x xmlns='http://jabber.org/protocol/muc'><history {attrs}/></x></presence>"),
        );
        out.into_iter().find_map(|o| match o {
            Out::History(h) => Some(h),
            _ => None,
        })
    };
    let h = ask("").unwrap();
    assert_eq!(
        (h.max_stanzas, h.max_chars, h.since),
        (lim().history_default, None, None)
    );
    assert_eq!(ask("maxstanzas='3'").unwrap().max_stanzas, 3);
    assert_eq!(
        ask("maxstanzas='99999999999'").unwrap().max_stanzas,
        lim().history_max
    );
    assert_eq!(ask("maxchars='500'").unwrap().max_chars, Some(500));
    assert!(ask("maxstanzas='0'").is_none());
    assert!(ask("maxchars='0'").is_none());
    // `since` and `seconds` together: the later bound.
    let h = ask("seconds='10' since='1970-01-01T00:00:00Z'").unwrap();
    assert_eq!(h.since, Some(NOW - 10_000_000));
    assert_eq!(
        ask("maxstanzas='x'").unwrap().max_stanzas,
        lim().history_default
    );
}

#[test]
fn errors_that_say_a_session_is_gone_remove_it_with_333() {
    let table: &[(&str, bool)] = &[
        ("<message type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", true),
        ("<message type='error'><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", true),
        ("<presence type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>", true),
        ("<message type='error'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", false),
        ("<message type='error'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>", false),
        ("<iq type='error' id='x'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", false),
        ("<message type='chat'><body>not an error</body></message>", false),
    ];
    for (xml, removed) in table {
        let mut r = room();
        join(&mut r, "u@d/x", "u");
        let out = r.error_from_occupant("u@d/x", &el(xml), &lim());
        assert_eq!(!r.is_occupant("u@d/x"), *removed, "{xml}");
        if *removed {
            let s = sent(&out);
            let to_owner = s
                .iter()
                .find(|p| p.attr("to") == Some("owner@d/a"))
                .unwrap();
            assert_eq!(codes(to_owner), ["333"], "{xml}");
        } else {
            assert!(out.is_empty(), "{xml}");
        }
    }
    // From someone who is not in the room: nothing.
    let mut r = room();
    let e = el("<presence type='error'/>");
    assert!(r.error_from_occupant("z@d/x", &e, &lim()).is_empty());
}

#[test]
fn iqs_between_occupants_are_forwarded_and_answered_back() {
    let mut r = room();
    join(&mut r, "u@d/x", "u");
    join(&mut r, "u@d/y", "u");
    let vcard = "<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>";
    // From the second session of u, to the owner.
    let out = run(&mut r, "u@d/y", Some("boss"), vcard);
    let fwd = &sent(&out)[0];
    assert_eq!(fwd.attr("from"), Some("tea@conference.d/u"));
    assert_eq!(fwd.attr("to"), Some("owner@d/a"));
    let id = fwd.attr("id").unwrap().to_string();
    assert_ne!(id, "v1", "the room's own id");
    // Only the JID it went to may answer, once.
    let answer =
        format!("<iq type='result' id='{id}'><vCard xmlns='vcard-temp'><FN>Boss</FN></vCard></iq>");
    assert!(run(&mut r, "intruder@d/z", Some("u"), &answer).is_empty());
    let out = run(&mut r, "owner@d/a", Some("u"), &answer);
    let back = &sent(&out)[0];
    assert_eq!(back.attr("from"), Some("tea@conference.d/boss"));
    assert_eq!(back.attr("to"), Some("u@d/y"), "the asking session");
    assert_eq!(back.attr("id"), Some("v1"));
    assert!(
        run(&mut r, "owner@d/a", Some("u"), &answer).is_empty(),
        "answered once"
    );
    // An error answer comes back too.
    let out = run(&mut r, "u@d/x", Some("boss"), vcard);
    let id = sent(&out)[0].attr("id").unwrap().to_string();
    let e = el(&format!("<iq type='error' id='{id}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
    let out = r.error_from_occupant("owner@d/a", &e, &lim());
    assert_eq!(sent(&out)[0].attr("to"), Some("u@d/x"));
    assert!(r.is_occupant("owner@d/a"), "an IQ error removes nobody");
    // Not occupants, absent nicks, and the bound.
    assert_eq!(
        condition(&run(&mut r, "z@d/x", Some("boss"), vcard)).as_deref(),
        Some("not-acceptable")
    );
    assert_eq!(
        condition(&run(&mut r, "u@d/x", Some("ghost"), vcard)).as_deref(),
        Some("item-not-found")
    );
    for _ in 0..herald_muc::MAX_PROXIED_IQS {
        assert_eq!(condition(&run(&mut r, "u@d/x", Some("boss"), vcard)), None);
    }
    assert_eq!(
        condition(&run(&mut r, "u@d/x", Some("boss"), vcard)).as_deref(),
        Some("resource-constraint")
    );
    // A minute later the unanswered ones are forgotten.
    let later = r.handle(
        "u@d/x",
        Some("boss"),
        &el(vcard),
        false,
        NOW + 61_000_000,
        &lim(),
        &[],
    );
    assert_eq!(condition(&later), None);
}

#[test]
fn absent_members_are_the_affiliated_without_a_session_in_the_room() {
    let mut r = room();
    set_affiliation(&mut r, "m@d", "member");
    set_affiliation(&mut r, "a@d", "admin");
    set_affiliation(&mut r, "x@d", "outcast");
    join(&mut r, "v@d/x", "visitor");
    // The owner is in the room; outcasts and affiliation-less visitors are not members.
    assert_eq!(r.absent_members(), vec!["a@d", "m@d"]);
    join(&mut r, "m@d/phone", "em");
    assert_eq!(r.absent_members(), vec!["a@d"]);
    assert_eq!(r.occupant_bare("em"), Some("m@d"));
    assert_eq!(r.occupant_bare("nobody"), None);
    run(
        &mut r,
        "m@d/phone",
        Some("em"),
        "<presence type='unavailable'/>",
    );
    assert_eq!(r.absent_members(), vec!["a@d", "m@d"]);
}
