//! XEP-0198 (`urn:xmpp:sm:3`) stream management elements, as the server writes them.
//!
//! Every `<enabled/>`, `<resumed/>`, `<failed/>`, `<a/>`, `<r/>` and the
//! `handled-count-too-high` stream error Herald sends is built here, so no other crate spells
//! these names or namespaces by hand. This module only builds elements: *when* to send which is
//! decided by `herald_session::sm_nonza` and the negotiation machine.

use minidom::Element;

use crate::error::{set_plain_attr, StanzaErrorCondition, StreamError, StreamErrorCondition};
use crate::ns;
use crate::stream::{self, StreamNs};

/// `<enabled/>` (XEP-0198 §3). With `resume`, `resume='true'` plus the resumption `id` and the
/// `max` seconds the session survives its transport (each when given).
pub fn enabled(id: Option<&str>, resume: bool, max: Option<u64>) -> Element {
    let mut el = Element::bare("enabled", ns::SM);
    if let Some(id) = id {
        set_plain_attr(&mut el, "id", id);
    }
    if resume {
        set_plain_attr(&mut el, "resume", "true");
    }
    if let Some(max) = max {
        set_plain_attr(&mut el, "max", &max.to_string());
    }
    el
}

/// `<resumed h='…' previd='…'/>` (XEP-0198 §5): `h` is the server's inbound count.
pub fn resumed(h: u32, previd: &str) -> Element {
    let mut el = Element::bare("resumed", ns::SM);
    set_plain_attr(&mut el, "previd", previd);
    set_plain_attr(&mut el, "h", &h.to_string());
    el
}

/// `<failed [h='…']><cond xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`
/// (XEP-0198 §3, §5): `h` is the server's inbound count when it is known.
pub fn failed(cond: StanzaErrorCondition, h: Option<u32>) -> Element {
    let mut el = Element::bare("failed", ns::SM);
    if let Some(h) = h {
        set_plain_attr(&mut el, "h", &h.to_string());
    }
    el.append_child(Element::bare(cond.as_str(), ns::STANZAS_ERR));
    el
}

/// `<failed h='…'>` for a `<resume/>` that acknowledged more than was sent (XEP-0198 §4):
/// `undefined-condition` with [`handled_count_too_high`].
pub fn failed_handled_count_too_high(our_h: u32, h: u32, send_count: u32) -> Element {
    let mut el = failed(StanzaErrorCondition::UndefinedCondition, Some(our_h));
    el.append_child(handled_count_too_high(h, send_count));
    el
}

/// `<handled-count-too-high h='…' send-count='…'/>` (XEP-0198 §4): the client's `h` and what
/// the server had sent.
pub fn handled_count_too_high(h: u32, send_count: u32) -> Element {
    let mut el = Element::bare("handled-count-too-high", ns::SM);
    set_plain_attr(&mut el, "h", &h.to_string());
    set_plain_attr(&mut el, "send-count", &send_count.to_string());
    el
}

/// The `<stream:error>` for an `<a/>` acknowledging more than was sent (XEP-0198 §4):
/// `undefined-condition`, then [`handled_count_too_high`], then a text with both counts. Only
/// valid inside a stream (it uses the `stream` prefix of our header).
pub fn handled_count_too_high_error(h: u32, send_count: u32) -> String {
    let e = StreamError::new(
        StreamErrorCondition::UndefinedCondition,
        Some(format!(
            "acknowledged {h} stanzas but only {send_count} were sent"
        )),
    );
    let mut app = Vec::new();
    stream::encode(
        &handled_count_too_high(h, send_count),
        StreamNs::Client,
        &mut app,
    );
    e.to_xml_with(&String::from_utf8_lossy(&app))
}

/// `<a h='…'/>` (XEP-0198 §4): the server's inbound count.
pub fn a(h: u32) -> Element {
    let mut el = Element::bare("a", ns::SM);
    set_plain_attr(&mut el, "h", &h.to_string());
    el
}

/// The `<sm/>` stream feature (XEP-0198 §2).
pub fn feature() -> Element {
    Element::bare("sm", ns::SM)
}

/// `<r/>` (XEP-0198 §4).
pub fn r() -> Element {
    Element::bare("r", ns::SM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(el: &Element) -> String {
        stream::to_string(el, StreamNs::Client)
    }

    #[test]
    fn elements_on_the_wire() {
        let cases = [
            (a(7), "<a xmlns='urn:xmpp:sm:3' h='7'/>"),
            (r(), "<r xmlns='urn:xmpp:sm:3'/>"),
            (enabled(None, false, None), "<enabled xmlns='urn:xmpp:sm:3'/>"),
            (
                enabled(Some("x1"), true, Some(600)),
                "<enabled xmlns='urn:xmpp:sm:3' id='x1' max='600' resume='true'/>",
            ),
            (
                resumed(3, "x1"),
                "<resumed xmlns='urn:xmpp:sm:3' h='3' previd='x1'/>",
            ),
            (
                failed(StanzaErrorCondition::UnexpectedRequest, None),
                "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
            ),
            (
                failed(StanzaErrorCondition::ItemNotFound, Some(4)),
                "<failed xmlns='urn:xmpp:sm:3' h='4'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
            ),
            (
                failed_handled_count_too_high(2, 9, 5),
                "<failed xmlns='urn:xmpp:sm:3' h='2'><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><handled-count-too-high h='9' send-count='5'/></failed>",
            ),
        ];
        for (el, want) in cases {
            assert_eq!(wire(&el), want);
        }
    }

    #[test]
    fn handled_count_too_high_stream_error() {
        assert_eq!(
            handled_count_too_high_error(5, 1),
            "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <handled-count-too-high xmlns='urn:xmpp:sm:3' h='5' send-count='1'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>acknowledged 5 stanzas but only 1 were sent</text>\
             </stream:error>"
        );
    }
}
