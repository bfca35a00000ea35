//! Message displayed synchronization (XEP-0490): what an item of the account's
//! `urn:xmpp:mds:displayed:0` PEP node says.
//!
//! Pure: the server's PEP glue hands each published item here and gives the result to the
//! push rules (crates/herald-push/RULES.md §14).

use herald_proto::ns;
use herald_proto::Element;

/// A displayed marker: the account has read `chat` up to the message whose `<stanza-id>`,
/// assigned by `by`, is `stanza_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Displayed {
    /// The chat's bare JID (the item id, XEP-0490 §3).
    pub chat: String,
    /// The entity that assigned the stanza-id: the account itself for a 1:1 chat's archive.
    pub by: String,
    /// The stanza-id.
    pub stanza_id: String,
}

/// Reads an MDS item: `item_id` is the chat's JID and `payload` the `<displayed/>` element.
/// None when it is not an MDS payload or misses the chat, `by` or `id` (clients own the
/// node's content; a malformed item is theirs to keep, it just marks nothing).
pub fn displayed(item_id: &str, payload: &Element) -> Option<Displayed> {
    if !payload.is("displayed", ns::MDS) || item_id.is_empty() {
        return None;
    }
    let sid = payload.get_child("stanza-id", ns::SID)?;
    let by = sid.attr("by").filter(|s| !s.is_empty())?;
    let id = sid.attr("id").filter(|s| !s.is_empty())?;
    Some(Displayed {
        chat: item_id.to_owned(),
        by: by.to_owned(),
        stanza_id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn reads_a_marker() {
        let p = el("<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='S1'/></displayed>");
        assert_eq!(
            displayed("b@x", &p),
            Some(Displayed {
                chat: "b@x".into(),
                by: "a@x".into(),
                stanza_id: "S1".into()
            })
        );
    }

    #[test]
    fn ignores_what_is_not_a_marker() {
        let table = [
            ("b@x", "<displayed xmlns='urn:xmpp:mds:displayed:1'><stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='S1'/></displayed>"),
            ("b@x", "<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:1' by='a@x' id='S1'/></displayed>"),
            ("b@x", "<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' id='S1'/></displayed>"),
            ("b@x", "<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id=''/></displayed>"),
            ("", "<displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='S1'/></displayed>"),
        ];
        for (id, xml) in table {
            assert_eq!(displayed(id, &el(xml)), None, "{xml}");
        }
    }
}
