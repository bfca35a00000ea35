//! Small accessors on stanzas (Elements in the internal namespace) used across modules.

use herald_proto::address;
use herald_proto::error::{error_reply, ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::ns;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;

/// The three stanza kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

/// The kind of a top-level element, if it is a stanza.
pub fn kind(el: &Element) -> Option<Kind> {
    if el.ns() != INTERNAL_NS {
        return None;
    }
    match el.name() {
        "message" => Some(Kind::Message),
        "presence" => Some(Kind::Presence),
        "iq" => Some(Kind::Iq),
        _ => None,
    }
}

/// An element kept for a long time as its XML: a minidom `Element` costs about 1 KiB (each
/// attribute map is a B-tree node), its text a tenth of that. For what a session holds while
/// idle and reads rarely (its last presence).
#[derive(Clone, Debug)]
pub struct Frozen(Box<str>);

/// `el` as XML text. minidom's own `String::from(&Element)` unwraps both the writer's
/// result and the UTF-8 check; this returns `None` instead, so an element a peer shaped
/// can never panic a task. Use this everywhere an element becomes text
/// (herald-server's `tests/layout.rs` refuses `String::from(&` in every crate's sources).
pub fn to_xml(el: &Element) -> Option<String> {
    let mut out = Vec::new();
    el.write_to(&mut out).ok()?;
    String::from_utf8(out).ok()
}

impl Frozen {
    /// Serializes `el`.
    pub fn new(el: &Element) -> Option<Frozen> {
        to_xml(el).map(|s| Frozen(s.into_boxed_str()))
    }

    /// The serialized element.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Text saved from [`Frozen::as_str`] (checked to parse).
    pub fn from_saved(s: &str) -> Option<Frozen> {
        s.parse::<Element>().ok()?;
        Some(Frozen(s.into()))
    }

    /// The element again.
    pub fn thaw(&self) -> Option<Element> {
        self.0.parse().ok()
    }
}

/// Heap bytes one element costs in minidom 0.19, without its name, attributes and text:
/// its `Node` slot in the parent's child vector (which grows by doubling) and its own
/// strings' headers. Measured with a counting allocator: 16,000 empty children take 2.7 MB
/// (168 bytes each).
const ELEMENT_COST: usize = 176;
/// An element's first attribute allocates its attribute map's B-tree node (measured: a child
/// with one short attribute costs 1,170 bytes, with four the same).
const ATTR_MAP_COST: usize = 1024;
/// Each attribute's key and value headers within that node.
const ATTR_COST: usize = 32;
/// An element's first child node allocates its child vector (measured: a child holding a
/// short text costs 620 bytes).
const CHILDREN_COST: usize = 448;
/// An element that declares namespaces (`xmlns`) holds them in a prefix map (measured: 720
/// bytes for an empty child declaring a namespace of its own).
const PREFIXES_COST: usize = 560;
/// A text node's header.
const TEXT_COST: usize = 32;

/// What holding `el` as an `Element` costs in memory, in bytes: the lengths of its names,
/// namespaces, attributes and text plus the allocations minidom makes for them
/// (`ELEMENT_COST` and the others, measured). Never less than the real heap use of the
/// shapes measured (a typical 195-byte chat message costs 3,881 bytes, estimated 4,300; a
/// 64 KiB stanza of 16,000 empty children 2.7 MB, estimated 2.9 MB), so a byte budget in
/// these units bounds real memory. Walks the tree without allocating, cheaper than
/// serializing it.
pub fn mem_cost(el: &Element) -> usize {
    let mut total = 0usize;
    let mut stack: Vec<&Element> = vec![el];
    while let Some(e) = stack.pop() {
        total = total.saturating_add(ELEMENT_COST + e.name().len());
        let declared = e.prefixes.declared_prefixes();
        if !declared.is_empty() {
            total = total.saturating_add(PREFIXES_COST);
            for (p, ns) in declared {
                let p = p.as_ref().map_or(0, |p| p.len());
                total = total.saturating_add(p + ns.len());
            }
        }
        let attrs = e.attrs();
        if !attrs.is_empty() {
            total = total.saturating_add(ATTR_MAP_COST);
            for ((_, k), v) in attrs.iter() {
                total = total.saturating_add(ATTR_COST + k.len() + v.len());
            }
        }
        let mut nodes = e.nodes().peekable();
        if nodes.peek().is_some() {
            total = total.saturating_add(CHILDREN_COST);
        }
        for n in nodes {
            match n {
                herald_proto::minidom::Node::Element(c) => stack.push(c),
                herald_proto::minidom::Node::Text(t) => {
                    total = total.saturating_add(TEXT_COST + t.len());
                }
            }
        }
    }
    total
}

/// The `type` attribute, "" when absent.
pub fn typ(el: &Element) -> &str {
    el.attr("type").unwrap_or("")
}

/// An address attribute that is not a valid JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJid;

/// The `to` address: Ok(None) when absent, Err when malformed (including an address whose
/// normalised form would not parse again, see [`herald_proto::address::jid`]).
pub fn to(el: &Element) -> Result<Option<Jid>, BadJid> {
    addr(el, "to")
}

/// The `from` address: Ok(None) when absent, Err when malformed (as for [`to`]).
pub fn from(el: &Element) -> Result<Option<Jid>, BadJid> {
    addr(el, "from")
}

fn addr(el: &Element, name: &str) -> Result<Option<Jid>, BadJid> {
    match el.attr(name) {
        None => Ok(None),
        Some(s) => herald_proto::address::jid(s).map(Some).map_err(|_| BadJid),
    }
}

/// Sets an attribute (names are our own literals; an invalid one is skipped).
pub fn set(el: &mut Element, name: &str, value: impl Into<String>) {
    if let Ok(n) = rxml::NcName::try_from(name) {
        el.set_attr(rxml::Namespace::NONE, n, value.into());
    }
}

/// A new element with attributes.
pub fn new(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (k, v) in attrs {
        set(&mut el, k, *v);
    }
    el
}

/// A new element with one text child.
pub fn text(name: &str, ns: &str, text: impl Into<String>) -> Element {
    let mut el = Element::bare(name, ns);
    el.append_text(text);
    el
}

/// Builds an error reply (None for errors, which are never answered).
pub fn error(el: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Option<Element> {
    error_reply(el, cond, None, text)
}

/// Builds an error reply with an explicit type.
pub fn error_typed(
    el: &Element,
    cond: StanzaErrorCondition,
    kind: ErrorType,
    text: Option<&str>,
) -> Option<Element> {
    error_reply(el, cond, Some(kind), text)
}

/// An `<iq type='result'/>` answering `req`, with an optional payload.
pub fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut el = new("iq", INTERNAL_NS, &[("type", "result")]);
    for (attr, from) in [("id", "id"), ("from", "to"), ("to", "from")] {
        if let Some(v) = req.attr(from) {
            set(&mut el, attr, v);
        }
    }
    if let Some(p) = payload {
        el.append_child(p);
    }
    el
}

/// The first child element of an IQ (its payload).
pub fn payload(iq: &Element) -> Option<&Element> {
    iq.children().next()
}

/// Removes the stamps only this server may put on a stanza it receives (from a client, a peer
/// server or a component), so a forged one cannot pass for ours: a top-level XEP-0203
/// `<delay from=…>` whose `from` is one of our domains, and a top-level XEP-0359
/// `<stanza-id by=…>` whose `by` is the stanza's recipient (bare `to`) or a JID at one of our
/// domains (XEP-0359 §3 requires it; our archives stamp with our accounts' bare JIDs).
/// `is_ours` says whether a domain is served here (not components: a component such as a MUC
/// stamps its own ids). Returns how many children went; a stanza with nothing to strip is left
/// untouched (no copy).
pub fn strip_spoofed(el: &mut Element, is_ours: impl Fn(&str) -> bool) -> usize {
    let recipient = to(el).ok().flatten().map(|j| j.to_bare());
    let ours = |addr: &str| match address::parse(addr) {
        Ok(j) => is_ours(j.domain().as_str()),
        Err(_) => is_ours(addr),
    };
    let delay_is_ours = |addr: &str| match address::parse(addr) {
        Ok(j) => j.node().is_none() && is_ours(j.domain().as_str()),
        Err(_) => is_ours(addr),
    };
    let spoofed = |c: &Element| {
        if c.is("delay", ns::DELAY) {
            c.attr("from").is_some_and(delay_is_ours)
        } else if c.is("stanza-id", ns::SID) {
            c.attr("by").is_some_and(|by| {
                ours(by)
                    || recipient.as_ref().is_some_and(|r| {
                        address::parse(by).is_ok_and(|b| b.to_bare() == *r)
                            || by.eq_ignore_ascii_case(r.as_str())
                    })
            })
        } else {
            false
        }
    };
    if !el.children().any(spoofed) {
        return 0;
    }
    crate::remove_children(el, spoofed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(d: &str) -> bool {
        d == "localhost" || d == "example.net"
    }

    fn stamps(el: &Element) -> Vec<String> {
        el.children()
            .map(|c| {
                format!(
                    "{}:{}",
                    c.name(),
                    c.attr("by").or(c.attr("from")).unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn addresses_are_normalised_and_refused_if_that_form_would_not_parse() {
        let el: Element = "<message xmlns='jabber:client' to='Juliet@Capulet.LIT/Balcony' \
             from='user@ß--ǟ/res'/>"
            .parse()
            .unwrap();
        assert_eq!(
            to(&el).map(|j| j.map(|j| j.to_string())),
            Ok(Some("juliet@capulet.lit/Balcony".to_owned()))
        );
        // The jid crate takes it as `user@ss--ǟ/res`, which it then refuses.
        assert_eq!(from(&el), Err(BadJid));
        let el: Element = "<iq xmlns='jabber:client' to='ß--ǟ'/>".parse().unwrap();
        assert_eq!(to(&el), Err(BadJid));
        assert_eq!(from(&el), Ok(None));
    }

    #[test]
    fn strip_spoofed_removes_our_stamps_only() {
        let mut el: Element = "<message xmlns='jabber:client' to='bob@remote.test/x'>\
             <body>hi</body>\
             <delay xmlns='urn:xmpp:delay' from='localhost' stamp='2020-01-01T00:00:00Z'/>\
             <delay xmlns='urn:xmpp:delay' from='Example.NET/res' stamp='2020-01-01T00:00:00Z'/>\
             <delay xmlns='urn:xmpp:delay' from='alice@localhost' stamp='2020-01-01T00:00:00Z'/>\
             <delay xmlns='urn:xmpp:delay' from='remote.test' stamp='2020-01-01T00:00:00Z'/>\
             <delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='1' by='bob@remote.test'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='2' by='alice@localhost'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='3' by='localhost'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='4' by='room@muc.remote.test'/>\
             <stanza-id xmlns='urn:xmpp:other' id='5' by='localhost'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='6'/>\
             </message>"
            .parse()
            .unwrap();
        assert_eq!(strip_spoofed(&mut el, ours), 5);
        assert_eq!(
            stamps(&el),
            [
                "body:",
                "delay:alice@localhost",
                "delay:remote.test",
                "delay:",
                "stanza-id:room@muc.remote.test",
                "stanza-id:localhost",
                "origin-id:",
            ]
        );
        assert_eq!(
            el.children().find(|c| c.name() == "body").unwrap().text(),
            "hi"
        );
    }

    #[test]
    fn strip_spoofed_matches_the_recipient_by_bare_jid_and_leaves_clean_stanzas() {
        let mut el: Element = "<message xmlns='jabber:client' to='Bob@Remote.test/phone'>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='1' by='bob@remote.test'/></message>"
            .parse()
            .unwrap();
        assert_eq!(strip_spoofed(&mut el, ours), 1);
        assert_eq!(el.children().count(), 0);

        let mut clean: Element = "<message xmlns='jabber:client' to='bad@@jid'>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='1' by='someone@else.test'/></message>"
            .parse()
            .unwrap();
        let before = clean.clone();
        assert_eq!(strip_spoofed(&mut clean, ours), 0);
        assert_eq!(clean, before);
    }

    #[test]
    fn frozen_round_trips_a_presence_with_extensions() {
        let xml = "<presence xmlns='jabber:client' from='a@b/c' xml:lang='en'><show>away</show>\
                   <status>out &amp; about</status><priority>-1</priority>\
                   <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>";
        let el: Element = xml.parse().unwrap();
        let f = Frozen::new(&el).unwrap();
        assert_eq!(f.thaw().unwrap(), el);
    }

    fn children(n: usize, child: impl Fn(usize) -> String) -> Element {
        let mut xml = String::from("<message xmlns='jabber:client'>");
        for i in 0..n {
            xml.push_str(&child(i));
        }
        xml.push_str("</message>");
        xml.parse().unwrap()
    }

    /// The heap use measured with a counting allocator (minidom 0.19) for each shape; the
    /// estimate must not fall below it, nor be far above (a budget in these units would
    /// then refuse honest traffic).
    #[test]
    fn mem_cost_covers_the_measured_heap_use() {
        let cases: [(Element, usize); 5] = [
            (children(16_000, |_| "<a/>".into()), 2_699_625),
            (children(4_000, |i| format!("<a b='{i}'/>")), 4_690_259),
            (children(4_000, |i| format!("<a>t{i}</a>")), 2_486_259),
            (
                children(4_000, |i| format!("<a xmlns='urn:x:{i}'/>")),
                2_877_149,
            ),
            (
                "<message xmlns='jabber:client' to='a@b/c' from='d@e/f' id='abc' type='chat'>\
                 <body>hello</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
                 <request xmlns='urn:xmpp:receipts'/></message>"
                    .parse()
                    .unwrap(),
                3_881,
            ),
        ];
        for (i, (el, measured)) in cases.iter().enumerate() {
            let est = mem_cost(el);
            assert!(
                est >= *measured && est <= measured * 2,
                "case {i}: estimated {est}, measured {measured}"
            );
        }
    }

    #[test]
    fn mem_cost_of_text_is_its_length() {
        let big = text("body", "jabber:client", "x".repeat(100_000));
        let est = mem_cost(&big);
        assert!((100_000..101_000).contains(&est), "{est}");
    }
}
