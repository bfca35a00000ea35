//! XEP-0191 blocking command payloads and the XEP-0016 JID matching it relies on.
//!
//! This module parses requests, builds lists and pushes, and says whether an entity is covered
//! by a blocklist. It must not read or write the blocklist nor decide what happens to a
//! blocked stanza (the blocking module does).

use std::collections::HashSet;

use herald_proto::address;
use herald_proto::error::StanzaErrorCondition;
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

/// The normalised JIDs of the `<item/>` children, first occurrence kept (found with a set:
/// a stanza can carry thousands of items).
fn items(payload: &Element) -> Result<Vec<String>, StanzaErrorCondition> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for item in super::children_named(payload, "item", ns::BLOCKING) {
        let jid = item
            .attr("jid")
            .and_then(super::normalize_jid)
            .ok_or(StanzaErrorCondition::JidMalformed)?
            .to_string();
        if seen.insert(jid.clone()) {
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

/// A user's blocklist as a set of normalised JIDs, so that deciding whether a stanza's JID is
/// blocked costs at most three lookups however long the list is (it is consulted for every
/// stanza to and from the user). Held once per user, shared behind an `Arc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocklist {
    set: HashSet<String>,
}

impl Blocklist {
    /// A blocklist of normalised JIDs (as stored, or as parsed by [`parse`]).
    pub fn new(items: impl IntoIterator<Item = String>) -> Blocklist {
        Blocklist {
            set: items.into_iter().collect(),
        }
    }

    /// The JIDs, sorted (for `<blocklist/>`, asked for far more rarely than matched).
    pub fn sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.set.iter().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// How many JIDs are listed.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether `entity` (a full or bare JID) is covered.
    ///
    /// XEP-0191 §3 defers to XEP-0016 §2.1 for matching: a full JID item matches exactly that
    /// JID; a bare JID item matches it and all its resources; a `domain/resource` item matches
    /// exactly that JID; a domain item matches the domain and every JID on it. So the items
    /// that can cover `node@domain/resource` are exactly that JID, `node@domain` and `domain`
    /// (`domain/resource` and `domain` for a JID without node): each is looked up in the set.
    /// An entity that is not a valid JID matches nothing.
    pub fn matches(&self, entity: &str) -> bool {
        if self.set.is_empty() {
            return false;
        }
        let Ok(entity) = address::jid(entity) else {
            return false;
        };
        // The entity is normalised by parsing, and items are stored normalised: exact string
        // lookups are the XEP-0016 comparisons.
        let domain = entity.domain().as_str();
        if self.set.contains(domain) {
            return true;
        }
        if entity.node().is_some() && self.set.contains(entity.to_bare().as_str()) {
            return true;
        }
        entity.resource().is_some() && self.set.contains(entity.as_str())
    }
}

#[cfg(test)]
fn matches(blocked: &[String], entity: &str) -> bool {
    Blocklist::new(blocked.to_vec()).matches(entity)
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
            // Normalised to a form that does not parse again: never stored.
            (
                "<iq xmlns='jabber:client' type='set'><block xmlns='urn:xmpp:blocking'><item jid='user@ß--ǟ/res'/></block></iq>",
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
        // Every kind of item at once, as one set.
        let all = v(&[
            "romeo@montague.net/orchard",
            "juliet@capulet.net",
            "montague.net/bot",
            "verona.lit",
        ]);
        assert!(matches(&all, "romeo@montague.net/orchard"));
        assert!(!matches(&all, "romeo@montague.net/garden"));
        assert!(matches(&all, "juliet@capulet.net/balcony"));
        assert!(!matches(&all, "nurse@capulet.net"));
        assert!(matches(&all, "montague.net/bot"));
        assert!(!matches(&all, "montague.net"));
        assert!(matches(&all, "prince@verona.lit/palace"));
        assert!(!matches(&dom, "not a jid@@"));
        assert!(!matches(&dom, ""));
    }

    #[test]
    fn a_large_list_matches_by_lookup() {
        let mut items: Vec<String> = (0..5000).map(|i| format!("u{i}@d{}.lit", i % 50)).collect();
        items.push("spam.example".into());
        items.push("x.example/bot".into());
        let l = Blocklist::new(items);
        assert_eq!(l.len(), 5002);
        assert!(l.matches("u4999@d49.lit/phone"));
        assert!(l.matches("U0@D0.lit"));
        assert!(!l.matches("u4999@d48.lit"));
        assert!(l.matches("anyone@spam.example/r"));
        assert!(l.matches("x.example/bot"));
        assert!(!l.matches("y@x.example/bot"));
        assert_eq!(l.sorted()[0], "spam.example");
        assert_eq!(l.sorted().len(), 5002);
    }
}
