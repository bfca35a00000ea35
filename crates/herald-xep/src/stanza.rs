//! Small accessors on stanzas (Elements in the internal namespace) used across modules.

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

/// The `type` attribute, "" when absent.
pub fn typ(el: &Element) -> &str {
    el.attr("type").unwrap_or("")
}

/// An address attribute that is not a valid JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJid;

/// The `to` address: Ok(None) when absent, Err when malformed.
pub fn to(el: &Element) -> Result<Option<Jid>, BadJid> {
    match el.attr("to") {
        None => Ok(None),
        Some(s) => Jid::new(s).map(Some).map_err(|_| BadJid),
    }
}

/// The `from` address: Ok(None) when absent, Err when malformed.
pub fn from(el: &Element) -> Result<Option<Jid>, BadJid> {
    match el.attr("from") {
        None => Ok(None),
        Some(s) => Jid::new(s).map(Some).map_err(|_| BadJid),
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
    let ours = |addr: &str| match Jid::new(addr) {
        Ok(j) => is_ours(j.domain().as_str()),
        Err(_) => is_ours(addr),
    };
    let delay_is_ours = |addr: &str| match Jid::new(addr) {
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
                        Jid::new(by).is_ok_and(|b| b.to_bare() == *r)
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
}
