//! Small accessors on stanzas (Elements in the internal namespace) used across modules.

use herald_proto::error::{error_reply, ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
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

impl Frozen {
    /// Serializes `el`.
    pub fn new(el: &Element) -> Option<Frozen> {
        let mut out = Vec::new();
        el.write_to(&mut out).ok()?;
        String::from_utf8(out)
            .ok()
            .map(|s| Frozen(s.into_boxed_str()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
