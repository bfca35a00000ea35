//! Rule d (RULES.md §4a): who of a room's members is pushed for a room message.

use herald_push::groupchat::{
    bookmark_prefs, decide, mentions, Decision, Member, NotifySetting, Skip,
};
use minidom::Element;

use NotifySetting::*;

const ROOM: &str = "tea@conference.d";

fn el(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn msg(inner: &str) -> Element {
    el(&format!(
        "<message xmlns='jabber:client' from='{ROOM}/ann' type='groupchat'>{inner}</message>"
    ))
}

fn member(joined: bool, setting: Option<NotifySetting>) -> Member<'static> {
    Member {
        bare: "bob@d",
        nick: Some("Bob"),
        joined,
        bookmarked: true,
        setting,
    }
}

/// (what, joined, setting, members-only room, sender, message payload, decision)
type Row = (
    &'static str,
    bool,
    Option<NotifySetting>,
    bool,
    &'static str,
    &'static str,
    Decision,
);

#[test]
fn decision_table() {
    let hi = "<body>hi all</body>";
    let to_bob = "<body>bob: tea?</body>";
    let reference = "<body>tea?</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:bob@d'/>";
    let occupant_ref = "<body>tea?</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:tea@conference.d/Bob'/>";
    let push = |mention| Decision::Push { mention };
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // what                                   joined setting        members_only sender   message       decision
        ("joined: rule a decides",                true,  Some(Always),   true,  "ann@d", hi,           Decision::Skip(Skip::Joined)),
        ("own message",                           false, Some(Always),   true,  "bob@d", hi,           Decision::Skip(Skip::OwnMessage)),
        ("a subject change",                      false, Some(Always),   true,  "ann@d", "<subject>x</subject>", Decision::Skip(Skip::NotImportant)),
        ("a chat state",                          false, Some(Always),   true,  "ann@d", "<active xmlns='http://jabber.org/protocol/chatstates'/>", Decision::Skip(Skip::NotImportant)),
        ("always",                                false, Some(Always),   false, "ann@d", hi,           push(false)),
        ("never, even when mentioned",            false, Some(Never),    true,  "ann@d", to_bob,       Decision::Skip(Skip::Muted)),
        ("on-mention, not mentioned",             false, Some(OnMention), true, "ann@d", hi,           Decision::Skip(Skip::NotMentioned)),
        ("on-mention, nick in the body",          false, Some(OnMention), true, "ann@d", to_bob,       push(true)),
        ("on-mention, reference to the JID",      false, Some(OnMention), true, "ann@d", reference,    push(true)),
        ("on-mention, reference to the occupant", false, Some(OnMention), true, "ann@d", occupant_ref, push(true)),
        ("default in a members-only room: always", false, None,          true,  "ann@d", hi,           push(false)),
        ("default in an open room: on-mention",   false, None,           false, "ann@d", hi,           Decision::Skip(Skip::NotMentioned)),
        ("default in an open room, mentioned",    false, None,           false, "ann@d", to_bob,       push(true)),
        ("an encrypted message is important",     false, Some(Always),   true,  "ann@d", "<encrypted xmlns='eu.siacs.conversations.axolotl'/>", push(false)),
    ];
    for (what, joined, setting, members_only, sender, inner, want) in rows {
        let got = decide(
            &member(*joined, *setting),
            ROOM,
            *members_only,
            sender,
            &msg(inner),
        );
        assert_eq!(got, *want, "{what}");
    }
    // A member with no bookmark of the room (made a member by its owner, never joined from a
    // client that keeps one) is never woken, whatever the room says.
    let stranger = Member {
        bookmarked: false,
        ..member(false, None)
    };
    for inner in [hi, to_bob, reference] {
        assert_eq!(
            decide(&stranger, ROOM, true, "ann@d", &msg(inner)),
            Decision::Skip(Skip::NotBookmarked)
        );
    }
}

#[test]
fn a_nick_is_mentioned_only_as_a_whole_word() {
    for (body, want) in [
        ("Bob, tea?", true),
        ("tea, BOB?", true),
        ("@bob", true),
        ("bobby?", false),
        ("kebob", false),
        ("nobody", false),
        ("", false),
        ("é bob é", true),
    ] {
        let m = msg(&format!("<body>{body}</body>"));
        assert_eq!(mentions(&m, ROOM, "bob@d", Some("bob")), want, "{body:?}");
    }
    // No nick known: only references count.
    assert!(!mentions(&msg("<body>bob</body>"), ROOM, "bob@d", None));
    // A reference to someone else, or not a mention.
    let other =
        "<body>x</body><reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:carol@d'/>";
    assert!(!mentions(&msg(other), ROOM, "bob@d", None));
    let data =
        "<body>x</body><reference xmlns='urn:xmpp:reference:0' type='data' uri='xmpp:bob@d'/>";
    assert!(!mentions(&msg(data), ROOM, "bob@d", None));
}

#[test]
fn notify_settings_are_read_from_xep_0492_elements() {
    let n = |inner: &str| {
        el(&format!(
            "<notify xmlns='urn:xmpp:notification-settings:1'>{inner}</notify>"
        ))
    };
    assert_eq!(NotifySetting::parse(&n("<never/>")), Some(Never));
    assert_eq!(NotifySetting::parse(&n("<on-mention/>")), Some(OnMention));
    assert_eq!(NotifySetting::parse(&n("<always/>")), Some(Always));
    // XEP-0492 §4: the element most specific to the woken device (a phone) applies:
    // category and type, then category alone, then the fallback (no identity attributes).
    let pc = "<never identity-category='client' identity-type='pc'/>";
    let phone = "<on-mention identity-category='client' identity-type='phone'/>";
    let client = "<never identity-category='client'/>";
    let gateway = "<never identity-category='gateway'/>";
    assert_eq!(
        NotifySetting::parse(&n(&format!("{pc}<always/>"))),
        Some(Always)
    );
    assert_eq!(NotifySetting::parse(&n(pc)), None, "only for PCs");
    assert_eq!(
        NotifySetting::parse(&n(&format!("<always/>{client}{phone}{pc}"))),
        Some(OnMention)
    );
    assert_eq!(
        NotifySetting::parse(&n(&format!("<always/>{gateway}{client}{pc}"))),
        Some(Never)
    );
    assert_eq!(
        NotifySetting::parse_for(&n(&format!("<always/>{phone}{pc}")), "client", "pc"),
        Some(Never)
    );
    // <advanced/> refinements are not understood: the parent's setting holds.
    assert_eq!(
        NotifySetting::parse(&n(
            "<never><advanced><night xmlns='urn:example'/></advanced></never>"
        )),
        Some(Never)
    );
    assert_eq!(NotifySetting::parse(&n("<sometimes/>")), None);
    assert_eq!(
        NotifySetting::parse(&el("<notify xmlns='urn:example'><never/></notify>")),
        None
    );
    assert_eq!(NotifySetting::default_for(true), Always);
    assert_eq!(NotifySetting::default_for(false), OnMention);
}

#[test]
fn the_nick_and_setting_come_from_the_xep_0402_bookmark() {
    let b = el(
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Tea' autojoin='true'>\
        <nick>Bob</nick><extensions>\
        <notify xmlns='urn:xmpp:notification-settings:1'><never/></notify>\
        </extensions></conference>",
    );
    assert_eq!(
        bookmark_prefs(&b),
        Some((Some("Bob".to_string()), Some(Never)))
    );
    let plain = el("<conference xmlns='urn:xmpp:bookmarks:1'/>");
    assert_eq!(bookmark_prefs(&plain), Some((None, None)));
    // A <notify/> outside <extensions/> is not XEP-0492's place.
    let misplaced = el("<conference xmlns='urn:xmpp:bookmarks:1'>\
        <notify xmlns='urn:xmpp:notification-settings:1'><never/></notify></conference>");
    assert_eq!(bookmark_prefs(&misplaced), Some((None, None)));
    let other = el("<storage xmlns='storage:bookmarks'/>");
    assert_eq!(bookmark_prefs(&other), None);
}
