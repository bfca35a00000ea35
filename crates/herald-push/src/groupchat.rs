//! Rule d (RULES.md §4a): group chat messages for room members with no joined session.
//!
//! A member of a room whose phone has no session in the room (its session expired while it
//! slept, or the client joins only when the chat is opened) still hears of the room's
//! messages, according to the XEP-0492 setting in the member's XEP-0402 bookmark
//! (`always`, `on-mention`, `never`; without one, `always` in a members-only room and
//! `on-mention` in an open one; a member who keeps no bookmark of the room is never woken by
//! it). A member with a joined session is left to rule a (a
//! hibernated session's queue pushes like any other), so one message never reaches one
//! registration by both paths. This module only decides; the server finds the members and
//! their bookmarks ([`bookmark_prefs`]), and [`crate::Engine::room_message`] applies the
//! decision to the member's registrations.

use minidom::Element;

use crate::classify::{self, Importance};

/// XEP-0492 namespace of `<notify/>`.
pub const NOTIFY_NS: &str = "urn:xmpp:notification-settings:1";
/// XEP-0372 references (`type='mention'`).
pub const REFERENCE_NS: &str = "urn:xmpp:reference:0";

/// A member's XEP-0492 notification setting for one room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifySetting {
    /// Every message.
    Always,
    /// Only messages that mention the member.
    OnMention,
    /// None: the room is muted.
    Never,
}

impl NotifySetting {
    /// XEP-0492's default when the member set nothing: private group chats (members-only
    /// rooms) notify always, public channels on mention.
    pub fn default_for(members_only: bool) -> NotifySetting {
        if members_only {
            NotifySetting::Always
        } else {
            NotifySetting::OnMention
        }
    }

    /// Reads a `<notify xmlns='urn:xmpp:notification-settings:1'/>` element for the device a
    /// push wakes, a phone (disco identity `client`/`phone`): [`NotifySetting::parse_for`].
    pub fn parse(notify: &Element) -> Option<NotifySetting> {
        NotifySetting::parse_for(notify, "client", "phone")
    }

    /// Reads a `<notify/>` element as XEP-0492 §4 says an application of disco identity
    /// `category`/`typ` must: the element matching both `identity-category` and
    /// `identity-type`, else the one matching `identity-category` alone, else the fallback
    /// element (neither attribute). An `<advanced/>` child is not understood here, so its
    /// parent's own setting applies. None if no element applies (a setting only for other
    /// kinds of clients, or none at all).
    pub fn parse_for(notify: &Element, category: &str, typ: &str) -> Option<NotifySetting> {
        if !notify.is("notify", NOTIFY_NS) {
            return None;
        }
        let settings = || {
            notify
                .children()
                .filter(|c| c.has_ns(NOTIFY_NS))
                .filter_map(|c| {
                    let s = match c.name() {
                        "always" => NotifySetting::Always,
                        "on-mention" => NotifySetting::OnMention,
                        "never" => NotifySetting::Never,
                        _ => return None,
                    };
                    Some((c.attr("identity-category"), c.attr("identity-type"), s))
                })
        };
        let find = |want: (Option<&str>, Option<&str>)| {
            settings()
                .find(|(c, t, _)| (*c, *t) == want)
                .map(|(_, _, s)| s)
        };
        find((Some(category), Some(typ)))
            .or_else(|| find((Some(category), None)))
            .or_else(|| find((None, None)))
    }
}

/// XEP-0402's bookmark namespace (the `<conference/>` payload of the PEP node of that name).
pub const BOOKMARKS_NS: &str = "urn:xmpp:bookmarks:1";

/// What a member's XEP-0402 bookmark of a room tells rule d: the nick it joins with
/// (`<nick/>`, for mentions) and its XEP-0492 setting (a `<notify/>` inside
/// `<extensions/>`). None if it is not a bookmark (not a `<conference/>`).
pub fn bookmark_prefs(conference: &Element) -> Option<(Option<String>, Option<NotifySetting>)> {
    if !conference.is("conference", BOOKMARKS_NS) {
        return None;
    }
    let nick = conference
        .get_child("nick", BOOKMARKS_NS)
        .map(|n| n.text())
        .filter(|n| !n.is_empty());
    let setting = conference
        .get_child("extensions", BOOKMARKS_NS)
        .and_then(|x| x.get_child("notify", NOTIFY_NS))
        .and_then(NotifySetting::parse);
    Some((nick, setting))
}

/// One member of a room, as the rule needs to know it.
#[derive(Clone, Debug)]
pub struct Member<'a> {
    /// The member's bare JID.
    pub bare: &'a str,
    /// The nick the member uses in the room (its reserved nick or bookmark's), if known.
    pub nick: Option<&'a str>,
    /// Whether any session of the member is joined (connected or hibernated).
    pub joined: bool,
    /// Whether the member keeps a XEP-0402 bookmark of the room: the member's own say that
    /// the room is one of their conversations (clients bookmark the rooms they join).
    pub bookmarked: bool,
    /// The member's XEP-0492 setting for the room, if it set one.
    pub setting: Option<NotifySetting>,
}

/// Why a member gets no push for a room message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A session of the member is in the room: rule a decides for it.
    Joined,
    /// The member sent it.
    OwnMessage,
    /// The member has no bookmark of the room: being made a member by a room's owner must
    /// not let the room wake their phone.
    NotBookmarked,
    /// Nothing a person would be woken for (a subject change, a chat state).
    NotImportant,
    /// `never`.
    Muted,
    /// `on-mention` and it does not mention the member.
    NotMentioned,
}

/// What rule d decides for one member and one room message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Push to the member's registrations (coalesced and counted as any push);
    /// `mention` says whether the message mentions the member.
    Push {
        /// The message mentions the member.
        mention: bool,
    },
    /// No push.
    Skip(Skip),
}

/// Rule d for `member` and `message`, a groupchat message the room `room` broadcast, sent
/// by `sender_bare`. `members_only` picks the default setting.
pub fn decide(
    member: &Member<'_>,
    room: &str,
    members_only: bool,
    sender_bare: &str,
    message: &Element,
) -> Decision {
    if member.joined {
        return Decision::Skip(Skip::Joined);
    }
    if sender_bare == member.bare {
        return Decision::Skip(Skip::OwnMessage);
    }
    if !member.bookmarked {
        return Decision::Skip(Skip::NotBookmarked);
    }
    if classify::classify(message) == Importance::Unimportant {
        return Decision::Skip(Skip::NotImportant);
    }
    let mention = mentions(message, room, member.bare, member.nick);
    match member
        .setting
        .unwrap_or_else(|| NotifySetting::default_for(members_only))
    {
        NotifySetting::Never => Decision::Skip(Skip::Muted),
        NotifySetting::OnMention if !mention => Decision::Skip(Skip::NotMentioned),
        _ => Decision::Push { mention },
    }
}

/// Whether `message` mentions the member: a XEP-0372 `mention` reference to the member's
/// bare JID or occupant JID (`room/nick`), or the nick as a whole word of the body (any
/// case).
pub fn mentions(message: &Element, room: &str, bare: &str, nick: Option<&str>) -> bool {
    let occupant = nick.map(|n| format!("xmpp:{room}/{n}"));
    let by_reference = message
        .children()
        .filter(|c| c.is("reference", REFERENCE_NS) && c.attr("type") == Some("mention"))
        .filter_map(|c| c.attr("uri"))
        .any(|uri| {
            uri.strip_prefix("xmpp:").is_some_and(|j| j == bare) || occupant.as_deref() == Some(uri)
        });
    if by_reference {
        return true;
    }
    let Some(nick) = nick.filter(|n| !n.is_empty()) else {
        return false;
    };
    let body = message
        .children()
        .find(|c| c.name() == "body")
        .map(|b| b.text())
        .unwrap_or_default();
    word_in(&body.to_lowercase(), &nick.to_lowercase())
}

/// Whether `word` occurs in `text` not as part of a longer word (letters and digits on
/// neither side).
fn word_in(text: &str, word: &str) -> bool {
    let mut from = 0;
    while let Some(i) = text.get(from..).and_then(|t| t.find(word)) {
        let start = from + i;
        let end = start + word.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if edge(before) && edge(after) {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}
