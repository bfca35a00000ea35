//! Bookmarks: XEP-0402 PEP native bookmarks (one item per room on the PEP node
//! `urn:xmpp:bookmarks:1`, item id = the room's JID) and their conversion from and to
//! XEP-0048 `<storage xmlns='storage:bookmarks'/>` kept in XEP-0049 private XML storage
//! (XEP-0402 §5.3 "compat", as Prosody's mod_bookmarks does it).
//!
//! Pure: the server decides where items are read and written. The PEP node is the one copy
//! of the bookmarks; an old-style private-XML `get` is answered from it ([`to_legacy`]) and a
//! `set` replaces its items ([`to_native`]), so the two views cannot drift apart.

use herald_proto::Element;

use crate::pep::{AccessModel, NodeConfig, SendLast};
use crate::stanza;

/// The XEP-0402 PEP node and its payload namespace.
pub const NODE: &str = "urn:xmpp:bookmarks:1";
/// XEP-0048's namespace (the `<storage/>` element).
pub const LEGACY_NS: &str = "storage:bookmarks";
/// Announced on the account when private-XML bookmarks are converted (XEP-0402 §5.3).
pub const COMPAT_FEATURE: &str = "urn:xmpp:bookmarks:1#compat";
/// Announced on the account when XEP-0048 bookmarks in PEP (the node `storage:bookmarks`)
/// and in private storage are converted both ways (XEP-0411 §2).
pub const CONVERSION_FEATURE: &str = "urn:xmpp:bookmarks-conversion:0";
/// Announced on the account when XEP-0048 bookmarks in PEP are unified with XEP-0402
/// (XEP-0402 §5.3, §6).
pub const COMPAT_PEP_FEATURE: &str = "urn:xmpp:bookmarks:1#compat-pep";
/// The one item id of the XEP-0048 PEP node (XEP-0048 §3.2).
pub const LEGACY_ITEM: &str = "current";

/// Whether a private-storage key is XEP-0048 bookmarks.
pub fn is_legacy(name: &str, ns: &str) -> bool {
    name == "storage" && ns == LEGACY_NS
}

/// The node configuration XEP-0402 §3 asks a client to publish with (whitelist: only the
/// owner reads them; every bookmark kept; never sent on presence, clients fetch them).
pub fn node_config(max_items_cap: u32) -> NodeConfig {
    NodeConfig {
        persist_items: true,
        max_items: max_items_cap,
        access_model: AccessModel::Whitelist,
        send_last: SendLast::Never,
        notify_retract: true,
    }
}

/// One XEP-0402 bookmark: the item id (room JID) and its `<conference/>` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Bookmark {
    /// The room's JID, the item id.
    pub jid: String,
    /// `<conference xmlns='urn:xmpp:bookmarks:1'/>`.
    pub conference: Element,
}

fn child_text(el: &Element, name: &str, ns: &str) -> Option<String> {
    el.get_child(name, ns).map(|c| c.text())
}

/// XEP-0048 `autojoin` is xs:boolean; XEP-0402 writes `true`/`false`.
fn autojoin(v: Option<&str>) -> Option<&'static str> {
    match v {
        Some("true") | Some("1") => Some("true"),
        Some("false") | Some("0") => Some("false"),
        _ => None,
    }
}

/// The XEP-0402 items for a XEP-0048 `<storage/>`: one per `<conference/>` with a JID (the
/// last wins when a JID repeats; URL bookmarks have no XEP-0402 form and are dropped, as in
/// Prosody). Name, autojoin, nick and password are carried over.
pub fn to_native(storage: &Element) -> Vec<Bookmark> {
    let mut out: Vec<Bookmark> = Vec::new();
    for c in crate::children_named(storage, "conference", LEGACY_NS) {
        let Some(jid) = c
            .attr("jid")
            .and_then(crate::normalize_jid)
            .map(|j| j.to_string())
        else {
            continue;
        };
        let mut attrs: Vec<(&str, &str)> = Vec::new();
        if let Some(n) = c.attr("name") {
            attrs.push(("name", n));
        }
        if let Some(a) = autojoin(c.attr("autojoin")) {
            attrs.push(("autojoin", a));
        }
        let mut conference = stanza::new("conference", NODE, &attrs);
        for field in ["nick", "password"] {
            if let Some(t) = child_text(c, field, LEGACY_NS) {
                conference.append_child(stanza::text(field, NODE, t));
            }
        }
        out.retain(|b| b.jid != jid);
        out.push(Bookmark { jid, conference });
    }
    out
}

/// The XEP-0048 `<storage/>` for XEP-0402 items (id, payload); an item whose payload is
/// not a `<conference/>` is skipped.
pub fn to_legacy<'a>(items: impl IntoIterator<Item = (&'a str, &'a Element)>) -> Element {
    let mut storage = stanza::new("storage", LEGACY_NS, &[]);
    for (id, payload) in items {
        if !payload.is("conference", NODE) {
            continue;
        }
        let mut attrs: Vec<(&str, &str)> = vec![("jid", id)];
        if let Some(n) = payload.attr("name") {
            attrs.push(("name", n));
        }
        if let Some(a) = autojoin(payload.attr("autojoin")) {
            attrs.push(("autojoin", a));
        }
        let mut c = stanza::new("conference", LEGACY_NS, &attrs);
        for field in ["nick", "password"] {
            if let Some(t) = child_text(payload, field, NODE) {
                c.append_child(stanza::text(field, LEGACY_NS, t));
            }
        }
        storage.append_child(c);
    }
    storage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn legacy_storage_becomes_one_item_per_room() {
        let s = el("<storage xmlns='storage:bookmarks'>\
            <conference jid='Room@Muc.Example' name='The room' autojoin='1'><nick>me</nick><password>pw</password></conference>\
            <conference jid='other@muc.example'/>\
            <conference name='no jid'/>\
            <conference jid='not a jid@@'/>\
            <url name='site' url='https://example.org'/>\
            <conference jid='other@muc.example' autojoin='false'/>\
            </storage>");
        let b = to_native(&s);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].jid, "room@muc.example");
        let c = &b[0].conference;
        assert!(c.is("conference", NODE));
        assert_eq!(c.attr("name"), Some("The room"));
        assert_eq!(c.attr("autojoin"), Some("true"));
        assert_eq!(child_text(c, "nick", NODE).as_deref(), Some("me"));
        assert_eq!(child_text(c, "password", NODE).as_deref(), Some("pw"));
        // The later duplicate wins.
        assert_eq!(b[1].jid, "other@muc.example");
        assert_eq!(b[1].conference.attr("autojoin"), Some("false"));
    }

    #[test]
    fn native_items_become_legacy_storage() {
        let a = el("<conference xmlns='urn:xmpp:bookmarks:1' name='A' autojoin='true'><nick>n</nick><extensions/></conference>");
        let junk = el("<x xmlns='urn:example'/>");
        let s = to_legacy([("a@muc.example", &a), ("b@muc.example", &junk)]);
        assert!(s.is("storage", LEGACY_NS));
        let cs: Vec<&Element> = s.children().collect();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].attr("jid"), Some("a@muc.example"));
        assert_eq!(cs[0].attr("name"), Some("A"));
        assert_eq!(cs[0].attr("autojoin"), Some("true"));
        assert_eq!(child_text(cs[0], "nick", LEGACY_NS).as_deref(), Some("n"));
        assert!(child_text(cs[0], "password", LEGACY_NS).is_none());
    }

    #[test]
    fn round_trip_keeps_what_both_can_say() {
        let s = el("<storage xmlns='storage:bookmarks'><conference jid='r@m.example' name='R' autojoin='true'><nick>x</nick></conference></storage>");
        let b = to_native(&s);
        let back = to_legacy(b.iter().map(|b| (b.jid.as_str(), &b.conference)));
        assert_eq!(back, s);
    }

    #[test]
    fn config_is_what_the_xep_publishes_with() {
        let c = node_config(64);
        assert_eq!(c.access_model, AccessModel::Whitelist);
        assert_eq!(c.send_last, SendLast::Never);
        assert_eq!(c.max_items, 64);
        assert!(c.persist_items);
        assert!(is_legacy("storage", LEGACY_NS));
        assert!(!is_legacy("storage", "x"));
    }
}
