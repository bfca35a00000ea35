//! RFC 6121 §2 roster payloads and XEP-0237 roster versioning attributes.
//!
//! This module parses roster get/set requests (with the RFC's validation rules and the
//! field length limits) and builds results and pushes. It must not read or write rosters, run
//! the subscription state machine, or decide who receives a push (the roster module does).

use std::collections::HashSet;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::{ns, Element};
use herald_store::RosterItem;

use crate::stanza;

/// A roster request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterReq {
    /// RFC 6121 §2.2 roster get; `ver` is XEP-0237's (`Some("")`: versioning supported, no
    /// cached copy).
    Get {
        /// The client's cached version, if it sent one.
        ver: Option<String>,
    },
    /// RFC 6121 §2.3 roster set (add/update) or §2.5 remove.
    Set(RosterSetItem),
}

/// The one `<item/>` of a roster set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterSetItem {
    /// The contact's bare JID (or a domain), normalised.
    pub jid: String,
    /// The handle; an empty `name` is no name.
    pub name: Option<String>,
    /// Groups in the order given (empty for a remove).
    pub groups: Vec<String>,
    /// `subscription='remove'` (RFC 6121 §2.5).
    pub remove: bool,
}

/// Parses a roster IQ (the whole `<iq/>`) of type get or set.
///
/// RFC 6121 §2.3.3: a set must carry exactly one `<item/>` and no duplicate groups
/// (`bad-request`); a name or group longer than `max_field_bytes` or an empty group is
/// `not-acceptable`, and so is an item with more than `max_groups` groups (the RFC lets the
/// server limit fields and uses `not-acceptable` for every such limit on the item). The item's `jid` must be a bare JID: an invalid one is `jid-malformed`,
/// a missing or full one `bad-request`. `subscription` values other than `remove` and
/// `ask` are ignored (RFC 6121 §2.1.2.5, §2.1.2.2: clients do not set them). A remove is not
/// checked for names and groups, which it discards.
pub fn parse(
    iq: &Element,
    max_field_bytes: usize,
    max_groups: usize,
) -> Result<RosterReq, StanzaErrorCondition> {
    let query = stanza::payload(iq)
        .filter(|q| q.is("query", ns::ROSTER))
        .ok_or(StanzaErrorCondition::BadRequest)?;
    match stanza::typ(iq) {
        // RFC 6121 §2.2: a get's query is empty; items a client adds are ignored.
        "get" => Ok(RosterReq::Get {
            ver: query.attr("ver").map(str::to_owned),
        }),
        "set" => {
            let mut items = super::children_named(query, "item", ns::ROSTER);
            let (Some(item), None) = (items.next(), items.next()) else {
                return Err(StanzaErrorCondition::BadRequest);
            };
            parse_item(item, max_field_bytes, max_groups).map(RosterReq::Set)
        }
        _ => Err(StanzaErrorCondition::BadRequest),
    }
}

fn parse_item(
    item: &Element,
    max: usize,
    max_groups: usize,
) -> Result<RosterSetItem, StanzaErrorCondition> {
    let raw = item.attr("jid").ok_or(StanzaErrorCondition::BadRequest)?;
    let jid = super::normalize_jid(raw).ok_or(StanzaErrorCondition::JidMalformed)?;
    if jid.resource().is_some() {
        return Err(StanzaErrorCondition::BadRequest);
    }
    let jid = jid.to_string();
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterSetItem {
            jid,
            name: None,
            groups: Vec::new(),
            remove: true,
        });
    }
    let name = match item.attr("name") {
        Some(n) if n.len() > max => return Err(StanzaErrorCondition::NotAcceptable),
        Some("") | None => None,
        Some(n) => Some(n.to_owned()),
    };
    let mut groups: Vec<String> = Vec::new();
    // Duplicates are found with a set: a stanza can carry thousands of groups, and comparing
    // each with every earlier one would cost their square.
    let mut seen: HashSet<String> = HashSet::new();
    for g in super::children_named(item, "group", ns::ROSTER) {
        if groups.len() == max_groups {
            return Err(StanzaErrorCondition::NotAcceptable);
        }
        let g = g.text();
        if g.is_empty() || g.len() > max {
            return Err(StanzaErrorCondition::NotAcceptable);
        }
        if !seen.insert(g.clone()) {
            return Err(StanzaErrorCondition::BadRequest);
        }
        groups.push(g);
    }
    Ok(RosterSetItem {
        jid,
        name,
        groups,
        remove: false,
    })
}

/// `<item jid name? subscription ask='subscribe'?><group/>..</item>` (RFC 6121 §2.1.2).
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = stanza::new("item", ns::ROSTER, &[("jid", &item.jid)]);
    if let Some(name) = &item.name {
        stanza::set(&mut el, "name", name.as_str());
    }
    stanza::set(&mut el, "subscription", item.subscription.as_str());
    if item.ask {
        stanza::set(&mut el, "ask", "subscribe");
    }
    for g in &item.groups {
        el.append_child(stanza::text("group", ns::ROSTER, g.as_str()));
    }
    el
}

/// `<query xmlns='jabber:iq:roster' ver=..>items</query>`, the result of a roster get
/// (`ver` only when versioning is in use, XEP-0237 / RFC 6121 §2.6).
pub fn query_element(ver: Option<u64>, items: &[RosterItem]) -> Element {
    let mut q = Element::bare("query", ns::ROSTER);
    if let Some(v) = ver {
        stanza::set(&mut q, "ver", v.to_string());
    }
    for item in items {
        q.append_child(item_element(item));
    }
    q
}

/// A roster push (RFC 6121 §2.1.6) to `to_full`: `<iq type='set' to id><query ver>item
/// </query></iq>`. Pushes carry no `from` (it is the user's own account).
pub fn push(to_full: &str, ver: u64, item_el: Element, id: &str) -> Element {
    let mut iq = stanza::new(
        "iq",
        INTERNAL_NS,
        &[("type", "set"), ("to", to_full), ("id", id)],
    );
    let mut q = Element::bare("query", ns::ROSTER);
    stanza::set(&mut q, "ver", ver.to_string());
    q.append_child(item_el);
    iq.append_child(q);
    iq
}

/// `<item jid subscription='remove'/>`, the pushed form of a removed contact (RFC 6121
/// §2.5.2).
pub fn removed_item(jid: &str) -> Element {
    stanza::new(
        "item",
        ns::ROSTER,
        &[("jid", jid), ("subscription", "remove")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::Subscription;
    use StanzaErrorCondition as C;

    const MAX: usize = 20;
    const GROUPS: usize = 3;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    fn set_iq(item: &str) -> Element {
        el(&format!(
            "<iq xmlns='jabber:client' type='set' id='ph1'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ))
    }

    #[test]
    fn get_with_and_without_ver() {
        // RFC 6121 §2.2.1 example.
        let iq = el(
            "<iq xmlns='jabber:client' from='juliet@example.com/balcony' id='bv1b' \
             type='get'><query xmlns='jabber:iq:roster'/></iq>",
        );
        assert_eq!(parse(&iq, MAX, GROUPS), Ok(RosterReq::Get { ver: None }));
        // RFC 6121 §2.6.2 example.
        let iq = el("<iq xmlns='jabber:client' id='r1h3vzp7' type='get'>\
             <query xmlns='jabber:iq:roster' ver='ver14'/></iq>");
        assert_eq!(
            parse(&iq, MAX, GROUPS),
            Ok(RosterReq::Get {
                ver: Some("ver14".into())
            })
        );
        let iq = el(
            "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:roster' ver=''/></iq>",
        );
        assert_eq!(
            parse(&iq, MAX, GROUPS),
            Ok(RosterReq::Get {
                ver: Some(String::new())
            })
        );
    }

    #[test]
    fn set_rfc_example() {
        // RFC 6121 §2.3.2 example.
        let iq =
            set_iq("<item jid='nurse@example.com' name='Nurse'><group>Servants</group></item>");
        assert_eq!(
            parse(&iq, MAX, GROUPS),
            Ok(RosterReq::Set(RosterSetItem {
                jid: "nurse@example.com".into(),
                name: Some("Nurse".into()),
                groups: vec!["Servants".into()],
                remove: false,
            }))
        );
    }

    #[test]
    fn set_normalises_ignores_subscription_and_ask() {
        let iq = set_iq(
            "<item jid='Nurse@Example.COM' name='' subscription='both' ask='subscribe'>\
             <group>A</group><group>B</group></item>",
        );
        assert_eq!(
            parse(&iq, MAX, GROUPS),
            Ok(RosterReq::Set(RosterSetItem {
                jid: "nurse@example.com".into(),
                name: None,
                groups: vec!["A".into(), "B".into()],
                remove: false,
            }))
        );
        // A bare domain is a valid contact (components, servers).
        let iq = set_iq("<item jid='proxy.example.com'/>");
        assert!(
            matches!(parse(&iq, MAX, GROUPS), Ok(RosterReq::Set(i)) if i.jid == "proxy.example.com")
        );
    }

    #[test]
    fn remove_rfc_example() {
        // RFC 6121 §2.5.2 example; names and groups of a remove are not validated.
        let iq = set_iq(&format!(
            "<item jid='nurse@example.com' subscription='remove' name='{}'><group/></item>",
            "n".repeat(MAX + 1)
        ));
        assert_eq!(
            parse(&iq, MAX, GROUPS),
            Ok(RosterReq::Set(RosterSetItem {
                jid: "nurse@example.com".into(),
                name: None,
                groups: vec![],
                remove: true,
            }))
        );
    }

    #[test]
    fn errors() {
        let long = "x".repeat(MAX + 1);
        let exact = "x".repeat(MAX);
        let cases = [
            // RFC 6121 §2.3.3: more than one item.
            (set_iq("<item jid='a@b.c'/><item jid='d@b.c'/>"), C::BadRequest),
            (set_iq(""), C::BadRequest),
            // §2.3.3: duplicate groups.
            (set_iq("<item jid='a@b.c'><group>G</group><group>G</group></item>"), C::BadRequest),
            // §2.3.3: too long / empty.
            (set_iq(&format!("<item jid='a@b.c' name='{long}'/>")), C::NotAcceptable),
            (set_iq(&format!("<item jid='a@b.c'><group>{long}</group></item>")), C::NotAcceptable),
            (set_iq("<item jid='a@b.c'><group/></item>"), C::NotAcceptable),
            (set_iq("<item jid='a@b@c'/>"), C::JidMalformed),
            (set_iq("<item jid=''/>"), C::JidMalformed),
            // Normalised to `ss--ǟ`, which does not parse again: not stored (herald_proto::address).
            (set_iq("<item jid='ß--ǟ'/>"), C::JidMalformed),
            (set_iq("<item jid='user@ß--ǟ'/>"), C::JidMalformed),
            (set_iq("<item jid='a@b.c/res'/>"), C::BadRequest),
            (set_iq("<item name='x'/>"), C::BadRequest),
            (el("<iq xmlns='jabber:client' type='set'/>"), C::BadRequest),
            (el("<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:private'/></iq>"), C::BadRequest),
            (el("<iq xmlns='jabber:client' type='result'><query xmlns='jabber:iq:roster'/></iq>"), C::BadRequest),
        ];
        for (iq, want) in cases {
            assert_eq!(parse(&iq, MAX, GROUPS), Err(want), "{iq:?}");
        }
        // One group more than the bound: not-acceptable, like every other field limit.
        let iq = set_iq(
            "<item jid='a@b.c'><group>1</group><group>2</group><group>3</group>\
             <group>4</group></item>",
        );
        assert_eq!(parse(&iq, MAX, GROUPS), Err(C::NotAcceptable));
        let iq =
            set_iq("<item jid='a@b.c'><group>1</group><group>2</group><group>3</group></item>");
        assert!(matches!(parse(&iq, MAX, GROUPS), Ok(RosterReq::Set(i)) if i.groups.len() == 3));
        // Exactly at the limit is fine.
        let iq = set_iq(&format!(
            "<item jid='a@b.c' name='{exact}'><group>{exact}</group></item>"
        ));
        assert!(parse(&iq, MAX, GROUPS).is_ok());
    }

    fn nurse() -> RosterItem {
        RosterItem {
            jid: "nurse@example.com".into(),
            name: Some("Nurse".into()),
            subscription: Subscription::None,
            ask: true,
            groups: vec!["Servants".into(), "Friends".into()],
        }
    }

    #[test]
    fn item_and_query_elements() {
        let item = item_element(&nurse());
        let want = el("<item xmlns='jabber:iq:roster' jid='nurse@example.com' name='Nurse' \
             subscription='none' ask='subscribe'><group>Servants</group><group>Friends</group></item>");
        assert_eq!(item, want);
        let plain = RosterItem {
            jid: "romeo@example.net".into(),
            name: None,
            subscription: Subscription::Both,
            ask: false,
            groups: vec![],
        };
        assert_eq!(
            item_element(&plain),
            el("<item xmlns='jabber:iq:roster' jid='romeo@example.net' subscription='both'/>")
        );
        let q = query_element(Some(14), &[nurse(), plain]);
        assert_eq!(q.attr("ver"), Some("14"));
        assert_eq!(q.children().count(), 2);
        assert_eq!(
            query_element(None, &[]),
            el("<query xmlns='jabber:iq:roster'/>")
        );
    }

    #[test]
    fn built_item_parses_back() {
        let mut iq = stanza::new("iq", INTERNAL_NS, &[("type", "set")]);
        let mut q = Element::bare("query", ns::ROSTER);
        q.append_child(item_element(&nurse()));
        iq.append_child(q);
        let RosterReq::Set(got) = parse(&iq, MAX, GROUPS).unwrap() else {
            panic!("not a set")
        };
        assert_eq!(got.jid, "nurse@example.com");
        assert_eq!(got.name.as_deref(), Some("Nurse"));
        assert_eq!(got.groups, nurse().groups);
        assert!(!got.remove);
    }

    #[test]
    fn push_and_removed_item() {
        // RFC 6121 §2.5.2 push of a removal.
        let p = push(
            "juliet@example.com/balcony",
            15,
            removed_item("nurse@example.com"),
            "hm4hs97y",
        );
        let want = el(
            "<iq xmlns='jabber:client' id='hm4hs97y' to='juliet@example.com/balcony' \
             type='set'><query xmlns='jabber:iq:roster' ver='15'><item jid='nurse@example.com' \
             subscription='remove'/></query></iq>",
        );
        assert_eq!(p, want);
        assert_eq!(p.attr("from"), None);
    }
}
