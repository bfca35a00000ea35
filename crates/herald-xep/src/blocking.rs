//! XEP-0191 blocking command payloads and the XEP-0016 JID matching it relies on.
//!
//! This module parses requests, builds lists and pushes, and says whether an entity is covered
//! by a blocklist. It must not read or write the blocklist nor decide what happens to a
//! blocked stanza (the blocking module does).

use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::Jid;
use herald_proto::{ns, Element};

use crate::stanza;

/// A blocking command request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockCmd {
    /// `<iq type='get'><blocklist/></iq>`: retrieve the list.
    List,
    /// `<iq type='set'><block>items</block></iq>`: normalised JIDs, without duplicates.
    Block(Vec<String>),
    /// `<iq type='set'><unblock>items</unblock></iq>`: normalised JIDs; empty = unblock all.
    Unblock(Vec<String>),
}

/// Parses a blocking command IQ (the whole `<iq/>`).
///
/// XEP-0191 §3.3: a `<block/>` without items is `bad-request`; an item whose `jid` is missing
/// or not a JID is `jid-malformed` (XEP-0191 §3.3, §3.4). A payload that does not fit the IQ
/// type (e.g. `<block/>` in a get) is `bad-request`.
pub fn parse(iq: &Element) -> Result<BlockCmd, StanzaErrorCondition> {
    let payload = stanza::payload(iq).ok_or(StanzaErrorCondition::BadRequest)?;
    if !payload.has_ns(ns::BLOCKING) {
        return Err(StanzaErrorCondition::BadRequest);
    }
    match (stanza::typ(iq), payload.name()) {
        ("get", "blocklist") => Ok(BlockCmd::List),
        ("set", "block") => {
            let jids = items(payload)?;
            if jids.is_empty() {
                return Err(StanzaErrorCondition::BadRequest);
            }
            Ok(BlockCmd::Block(jids))
        }
        ("set", "unblock") => Ok(BlockCmd::Unblock(items(payload)?)),
        _ => Err(StanzaErrorCondition::BadRequest),
    }
}

/// The normalised JIDs of the `<item/>` children, first occurrence kept.
fn items(payload: &Element) -> Result<Vec<String>, StanzaErrorCondition> {
    let mut out: Vec<String> = Vec::new();
    for item in super::children_named(payload, "item", ns::BLOCKING) {
        let jid = item
            .attr("jid")
            .and_then(super::normalize_jid)
            .ok_or(StanzaErrorCondition::JidMalformed)?
            .to_string();
        if !out.contains(&jid) {
            out.push(jid);
        }
    }
    Ok(out)
}

/// `<blocklist xmlns='urn:xmpp:blocking'><item jid=../>..</blocklist>` (XEP-0191 §3.2).
pub fn blocklist_element(jids: &[String]) -> Element {
    with_items("blocklist", jids)
}

/// The push to the user's resources after a change (XEP-0191 §3.3, §3.4): `<block/>` or
/// `<unblock/>` with the items (an `<unblock/>` without items means all were unblocked).
/// [`BlockCmd::List`] is not a change; it yields an empty `<blocklist/>`.
pub fn push_element(cmd: &BlockCmd) -> Element {
    match cmd {
        BlockCmd::List => with_items("blocklist", &[]),
        BlockCmd::Block(jids) => with_items("block", jids),
        BlockCmd::Unblock(jids) => with_items("unblock", jids),
    }
}

fn with_items(name: &str, jids: &[String]) -> Element {
    let mut el = Element::bare(name, ns::BLOCKING);
    for jid in jids {
        el.append_child(stanza::new("item", ns::BLOCKING, &[("jid", jid)]));
    }
    el
}

/// Whether `entity` (a full or bare JID) is covered by a blocklist of normalised JIDs.
///
/// XEP-0191 §3 defers to XEP-0016 §2.1 for matching: a full JID item matches exactly that
/// JID; a bare JID item matches it and all its resources; a `domain/resource` item matches
/// exactly that JID; a domain item matches the domain and every JID on it. An entity that
/// is not a valid JID matches nothing.
pub fn matches(blocked: &[String], entity: &str) -> bool {
    let Ok(entity) = Jid::new(entity) else {
        return false;
    };
    let e_node = entity.node().map(|n| n.as_str());
    let e_domain = entity.domain().as_str();
    let e_resource = entity.resource().map(|r| r.as_str());
    blocked.iter().any(|item| {
        // Items are stored normalised, so splitting the string avoids re-running stringprep
        // on every item of the list for every stanza.
        let (bare, resource) = match item.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (item.as_str(), None),
        };
        let (node, domain) = match bare.split_once('@') {
            Some((n, d)) => (Some(n), d),
            None => (None, bare),
        };
        if domain != e_domain {
            return false;
        }
        match (node, resource) {
            (Some(n), Some(r)) => e_node == Some(n) && e_resource == Some(r),
            (Some(n), None) => e_node == Some(n),
            (None, Some(r)) => e_node.is_none() && e_resource == Some(r),
            (None, None) => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use StanzaErrorCondition as C;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_xep_examples() {
        // XEP-0191 §3.2 example 1.
        let iq = el("<iq xmlns='jabber:client' type='get' id='blocklist1'>\
             <blocklist xmlns='urn:xmpp:blocking'/></iq>");
        assert_eq!(parse(&iq), Ok(BlockCmd::List));
        // §3.3 example 4.
        let iq = el(
            "<iq xmlns='jabber:client' from='juliet@capulet.com/chamber' type='set' \
             id='block1'><block xmlns='urn:xmpp:blocking'>\
             <item jid='romeo@montague.net'/></block></iq>",
        );
        assert_eq!(parse(&iq), Ok(BlockCmd::Block(v(&["romeo@montague.net"]))));
        // §3.4 example 9.
        let iq = el("<iq xmlns='jabber:client' type='set' id='unblock1'>\
             <unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock></iq>");
        assert_eq!(
            parse(&iq),
            Ok(BlockCmd::Unblock(v(&["romeo@montague.net"])))
        );
        // §3.5 example 13: unblock all.
        let iq = el("<iq xmlns='jabber:client' type='set' id='unblock2'>\
             <unblock xmlns='urn:xmpp:blocking'/></iq>");
        assert_eq!(parse(&iq), Ok(BlockCmd::Unblock(vec![])));
    }

    #[test]
    fn parse_normalises_and_dedups() {
        let iq = el(
            "<iq xmlns='jabber:client' type='set' id='b'><block xmlns='urn:xmpp:blocking'>\
             <item jid='Romeo@Montague.NET'/><item jid='romeo@montague.net'/>\
             <item jid='montague.net/res'/></block></iq>",
        );
        assert_eq!(
            parse(&iq),
            Ok(BlockCmd::Block(v(&[
                "romeo@montague.net",
                "montague.net/res"
            ])))
        );
    }

    #[test]
    fn parse_errors() {
        let cases = [
            // §3.3: empty block.
            ("<iq xmlns='jabber:client' type='set'><block xmlns='urn:xmpp:blocking'/></iq>", C::BadRequest),
            (
                "<iq xmlns='jabber:client' type='set'><block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block></iq>",
                C::JidMalformed,
            ),
            (
                "<iq xmlns='jabber:client' type='set'><block xmlns='urn:xmpp:blocking'><item/></block></iq>",
                C::JidMalformed,
            ),
            (
                "<iq xmlns='jabber:client' type='set'><unblock xmlns='urn:xmpp:blocking'><item jid=''/></unblock></iq>",
                C::JidMalformed,
            ),
            ("<iq xmlns='jabber:client' type='get'><block xmlns='urn:xmpp:blocking'><item jid='a@b'/></block></iq>", C::BadRequest),
            ("<iq xmlns='jabber:client' type='set'><blocklist xmlns='urn:xmpp:blocking'/></iq>", C::BadRequest),
            ("<iq xmlns='jabber:client' type='get'><blocklist xmlns='urn:xmpp:other'/></iq>", C::BadRequest),
            ("<iq xmlns='jabber:client' type='get'/>", C::BadRequest),
            ("<iq xmlns='jabber:client' type='result'><blocklist xmlns='urn:xmpp:blocking'/></iq>", C::BadRequest),
        ];
        for (xml, want) in cases {
            assert_eq!(parse(&el(xml)), Err(want), "{xml}");
        }
    }

    #[test]
    fn blocklist_and_pushes() {
        // XEP-0191 §3.2 example 2.
        let l = blocklist_element(&v(&["romeo@montague.net", "iago@shakespeare.lit"]));
        let want = el(
            "<blocklist xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/>\
             <item jid='iago@shakespeare.lit'/></blocklist>",
        );
        assert_eq!(l, want);
        assert_eq!(
            blocklist_element(&[]),
            el("<blocklist xmlns='urn:xmpp:blocking'/>")
        );
        // §3.3 example 6 push.
        assert_eq!(
            push_element(&BlockCmd::Block(v(&["romeo@montague.net"]))),
            el("<block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block>")
        );
        assert_eq!(
            push_element(&BlockCmd::Unblock(v(&["romeo@montague.net"]))),
            el("<unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock>")
        );
        // §3.5 example 15 push: unblock all.
        assert_eq!(
            push_element(&BlockCmd::Unblock(vec![])),
            el("<unblock xmlns='urn:xmpp:blocking'/>")
        );
        assert_eq!(
            push_element(&BlockCmd::List),
            el("<blocklist xmlns='urn:xmpp:blocking'/>")
        );
    }

    #[test]
    fn parse_then_build_round_trip() {
        let jids = v(&["a@b.c", "b.c/r", "d.e", "x@y.z/w"]);
        let mut iq = stanza::new("iq", "jabber:client", &[("type", "set")]);
        iq.append_child(push_element(&BlockCmd::Block(jids.clone())));
        assert_eq!(parse(&iq), Ok(BlockCmd::Block(jids)));
    }

    #[test]
    fn matching_follows_xep_0016_order() {
        let full = v(&["romeo@montague.net/orchard"]);
        assert!(matches(&full, "romeo@montague.net/orchard"));
        assert!(!matches(&full, "romeo@montague.net/garden"));
        assert!(!matches(&full, "romeo@montague.net"));

        let bare = v(&["romeo@montague.net"]);
        assert!(matches(&bare, "romeo@montague.net"));
        assert!(matches(&bare, "romeo@montague.net/any"));
        assert!(matches(&bare, "Romeo@Montague.net/any"));
        assert!(!matches(&bare, "montague.net"));
        assert!(!matches(&bare, "mercutio@montague.net"));

        let dom_res = v(&["montague.net/bot"]);
        assert!(matches(&dom_res, "montague.net/bot"));
        assert!(!matches(&dom_res, "montague.net"));
        assert!(!matches(&dom_res, "romeo@montague.net/bot"));

        let dom = v(&["montague.net"]);
        assert!(matches(&dom, "montague.net"));
        assert!(matches(&dom, "montague.net/x"));
        assert!(matches(&dom, "romeo@montague.net/orchard"));
        assert!(!matches(&dom, "romeo@capulet.net"));
        assert!(!matches(&dom, "sub.montague.net"));

        assert!(!matches(&[], "romeo@montague.net"));
        assert!(!matches(&dom, "not a jid@@"));
        assert!(!matches(&dom, ""));
    }
}
