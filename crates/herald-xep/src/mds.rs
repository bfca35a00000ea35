//! Message displayed synchronization (XEP-0490): what an item of the account's
//! `urn:xmpp:mds:displayed:0` PEP node says.
//!
//! Pure: the server's PEP glue hands each published item here and gives the result to the
//! push rules (crates/herald-push/RULES.md §14). Server assist (XEP-0490 §4.5, feature
//! `urn:xmpp:mds:server-assist:0`): a client puts the `<displayed/>` in a message it sends to
//! the chat; the server takes it out ([`take_assist`]) and publishes it as the chat's item.

use herald_proto::ns;
use herald_proto::Element;

use crate::pep::{AccessModel, NodeConfig, SendLast};

/// The configuration XEP-0490 §4.2 asks clients to publish with, given to the node when a
/// server-assisted marker creates it (§5.2: "appropriate node configuration"): only the
/// owner reads it, every chat's item is kept, nothing is sent on presence.
pub fn node_config(max_items_cap: u32) -> NodeConfig {
    NodeConfig {
        persist_items: true,
        max_items: max_items_cap,
        access_model: AccessModel::Whitelist,
        send_last: SendLast::Never,
        notify_retract: true,
    }
}

/// Takes every server-assist `<displayed xmlns='urn:xmpp:mds:displayed:0'/>` out of a
/// message a client sends (XEP-0490 §6: before it is archived, copied or routed, so the
/// contact never sees the stanza-id) and returns the first, the payload to publish.
pub fn take_assist(msg: &mut Element) -> Option<Element> {
    let first = msg.get_child("displayed", ns::MDS).cloned()?;
    crate::remove_children(msg, |c| c.is("displayed", ns::MDS));
    Some(first)
}

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
    fn server_assist_is_taken_out_of_the_message() {
        let mut m = el("<message xmlns='jabber:client' to='romeo@x'>\
             <displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>\
             <displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='j@x' id='S1'/></displayed>\
             <displayed xmlns='urn:xmpp:mds:displayed:0'><stanza-id xmlns='urn:xmpp:sid:0' by='j@x' id='S2'/></displayed>\
             </message>");
        let d = take_assist(&mut m).expect("a marker");
        assert_eq!(
            displayed("romeo@x", &d).map(|d| d.stanza_id),
            Some("S1".into())
        );
        // The chat marker for the contact stays; no MDS element is left.
        assert!(m.has_child("displayed", "urn:xmpp:chat-markers:0"));
        assert!(!m.has_child("displayed", ns::MDS));
        assert_eq!(take_assist(&mut m), None);
        let mut plain = el("<message xmlns='jabber:client'><body>hi</body></message>");
        assert_eq!(take_assist(&mut plain), None);
        assert!(plain.has_child("body", "jabber:client"));
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
