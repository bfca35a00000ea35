//! herald-xep: pure payload helpers for herald-server's feature modules: parsing requests and
//! building replies for MAM (XEP-0313), carbons (XEP-0280), blocking (XEP-0191), the roster
//! (RFC 6121 §2), stored subscription requests (RFC 6121 §3.1.3) and delay stamps
//! (XEP-0082/XEP-0203), vCards and their avatar hash ([`vcard`], XEP-0054/XEP-0153), private
//! XML storage ([`private`], XEP-0049), XEP-0077 registration payloads and XEP-0401 invite
//! tokens ([`register`]), the XEP-0115 verification string ([`caps`]), PEP ([`pep`]:
//! XEP-0060/0163 requests, node configuration, access models), Server Dialback keys and elements
//! ([`dialback`], XEP-0220/XEP-0185), and [`stanza`], the small stanza accessors and
//! builders every module uses; XEP-0363 upload slots and their signatures ([`upload`]) and
//! XEP-0215 TURN credentials ([`extdisco`]); XEP-0402 bookmarks and their XEP-0048 form
//! ([`bookmarks`]); XEP-0084 avatars and their XEP-0398 vCard conversion ([`avatar`]); XEP-0156 host-meta
//! documents ([`hostmeta`], for the WebSocket endpoint still to come).
//!
//! Everything here works on [`Element`]s in the internal namespace and returns values or
//! elements. It must not do I/O, touch the store, spawn tasks or know about sessions: the
//! feature modules call these helpers and own the side effects. Every parser must be
//! panic-free on arbitrary peer input.

pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod component;
pub mod delay;
pub mod dialback;
pub mod extdisco;
pub mod hostmeta;
pub mod mam;
pub mod mds;
pub mod pep;
pub mod private;
pub mod register;
pub mod roster;
pub mod stanza;
pub mod subscription;
pub mod upload;
pub mod vcard;

use herald_proto::jid::Jid;
use herald_proto::Element;

/// The normalised (stringprep'd) form of a JID, `None` if it is not a valid JID or its
/// normalised form would not parse again ([`herald_proto::address::jid`]).
pub(crate) fn normalize_jid(s: &str) -> Option<Jid> {
    herald_proto::address::jid(s).ok()
}

/// Child elements of `el` named `name` in namespace `ns`.
pub(crate) fn children_named<'a>(
    el: &'a Element,
    name: &'a str,
    ns: &'a str,
) -> impl Iterator<Item = &'a Element> + 'a {
    el.children().filter(move |c| c.is(name, ns))
}

/// Removes every child element for which `drop` holds, keeping text and order; how many went.
pub(crate) fn remove_children(el: &mut Element, drop: impl Fn(&Element) -> bool) -> usize {
    let nodes = el.take_nodes();
    let mut removed = 0;
    for node in nodes {
        match node.as_element() {
            Some(e) if drop(e) => removed += 1,
            _ => el.append_node(node),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_prepares_and_rejects() {
        assert_eq!(
            normalize_jid("Juliet@Capulet.LIT/Balcony").map(|j| j.to_string()),
            Some("juliet@capulet.lit/Balcony".to_owned())
        );
        assert!(normalize_jid("").is_none());
        assert!(normalize_jid("@example.com").is_none());
        assert!(normalize_jid("a@b@c").is_none());
    }

    #[test]
    fn remove_children_keeps_the_rest_in_order() {
        let mut el: Element = "<m xmlns='a'>x<b/><c/>y<b xmlns='o'/><b/></m>"
            .parse()
            .unwrap();
        assert_eq!(remove_children(&mut el, |c| c.is("b", "a")), 2);
        let names: Vec<String> = el.children().map(|c| c.ns()).collect();
        assert_eq!(names, ["a", "o"]);
        assert_eq!(el.text(), "xy");
    }
}
