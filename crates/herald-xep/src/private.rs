//! Private XML storage (XEP-0049): which element a `<query xmlns='jabber:iq:private'>` get or
//! set is about, and the namespaces refused.
//!
//! Pure: the server stores and bounds. Like Prosody's mod_private, a query carries exactly
//! one element (XEP-0049 §2.3: "a client MUST NOT query for more than one namespace").

use herald_proto::ns;
use herald_proto::Element;

/// Why a private-storage request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not exactly one child element (XEP-0049 §2.3 "Bad Format": `bad-request`).
    BadFormat,
    /// The child is in a namespace that cannot be private data (`not-acceptable`, §2.3): the
    /// storage's own, or a stream's content namespace (it would be a stanza, not a
    /// fragment "scoped by its own namespace").
    Reserved,
}

/// Namespaces a stored element may not have.
const RESERVED: &[&str] = &[ns::PRIVATE, ns::CLIENT, ns::SERVER, ns::COMPONENT];

/// The one element a query is about, with its key (name, namespace).
pub fn item(query: &Element) -> Result<(&Element, String, String), Refusal> {
    let mut children = query.children();
    let (Some(child), None) = (children.next(), children.next()) else {
        return Err(Refusal::BadFormat);
    };
    let ns = child.ns();
    if RESERVED.contains(&ns.as_str()) {
        return Err(Refusal::Reserved);
    }
    Ok((child, child.name().to_string(), ns))
}

/// The result payload: the stored element, or the requested one as it was asked (empty)
/// when nothing is stored (XEP-0049 has no "not found": the client gets back an empty item).
pub fn result(stored: Option<Element>, asked: &Element) -> Element {
    Element::builder("query", ns::PRIVATE)
        .append(stored.unwrap_or_else(|| asked.clone()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn exactly_one_child_in_its_own_namespace() {
        let q = el("<query xmlns='jabber:iq:private'> <prefs xmlns='x:p'><a/></prefs> </query>");
        let (c, name, ns) = item(&q).unwrap();
        assert_eq!((name.as_str(), ns.as_str()), ("prefs", "x:p"));
        assert!(c.get_child("a", "x:p").is_some());

        for bad in [
            "<query xmlns='jabber:iq:private'/>",
            "<query xmlns='jabber:iq:private'>text</query>",
            "<query xmlns='jabber:iq:private'><a xmlns='x:a'/><b xmlns='x:b'/></query>",
        ] {
            assert_eq!(item(&el(bad)).err(), Some(Refusal::BadFormat), "{bad}");
        }
        for reserved in [
            // No xmlns of its own: it inherits jabber:iq:private.
            "<query xmlns='jabber:iq:private'><a/></query>",
            "<query xmlns='jabber:iq:private'><a xmlns='jabber:client'/></query>",
            "<query xmlns='jabber:iq:private'><a xmlns='jabber:server'/></query>",
        ] {
            assert_eq!(
                item(&el(reserved)).err(),
                Some(Refusal::Reserved),
                "{reserved}"
            );
        }
    }

    #[test]
    fn result_echoes_the_request_when_nothing_is_stored() {
        let asked = el("<storage xmlns='storage:bookmarks'/>");
        let r = result(None, &asked);
        assert_eq!(r.get_child("storage", "storage:bookmarks"), Some(&asked));
        let stored = el("<storage xmlns='storage:bookmarks'><conference jid='r@m'/></storage>");
        let r = result(Some(stored.clone()), &asked);
        assert_eq!(r.get_child("storage", "storage:bookmarks"), Some(&stored));
    }
}
