//! RFC 6121 §3.1.3 subscription requests kept for later: what of a `<presence
//! type='subscribe'/>` is stored until the user answers it, and redelivered at each login.
//!
//! Anyone can send a request, from any JID, and it is read again at every login of the user
//! until answered: so only what a client shows is kept (the `<status/>` and the XEP-0172
//! `<nick/>`), cut to a byte bound. This module must not store or deliver the request (the
//! presence module does).

use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;

use crate::stanza;

/// XEP-0172 user nickname.
pub const NICK_NS: &str = "http://jabber.org/protocol/nick";

/// The stored form of the subscription request `el`: `<presence type='subscribe'/>` with
/// `el`'s first `<status/>` and its `<nick/>`, every other child and attribute dropped
/// (`from` and `to` are set again at delivery), the texts cut at character boundaries, the
/// longer one first, until its XML is at most `max_bytes` (or nothing is left to cut).
pub fn stored_request(el: &Element, max_bytes: usize) -> Element {
    let text_of = |name: &str, ns: &str| {
        let mut t = el
            .children()
            .find(|c| c.is(name, ns))
            .map(|c| c.text())
            .unwrap_or_default();
        // Escaping only lengthens a text, so nothing longer than the bound can fit: cut once
        // here rather than serialize a large text again and again below.
        cut(&mut t, max_bytes);
        t
    };
    let mut status = text_of("status", INTERNAL_NS);
    let mut nick = text_of("nick", NICK_NS);
    loop {
        let p = build(&status, &nick);
        let fits = stanza::to_xml(&p).is_some_and(|x| x.len() <= max_bytes);
        if fits || (status.is_empty() && nick.is_empty()) {
            return p;
        }
        let longer = if status.len() >= nick.len() {
            &mut status
        } else {
            &mut nick
        };
        // Halving ends in a handful of rounds whatever the size.
        let half = longer.len() / 2;
        cut(longer, half);
    }
}

fn build(status: &str, nick: &str) -> Element {
    let mut p = stanza::new("presence", INTERNAL_NS, &[("type", "subscribe")]);
    if !status.is_empty() {
        p.append_child(stanza::text("status", INTERNAL_NS, status));
    }
    if !nick.is_empty() {
        p.append_child(stanza::text("nick", NICK_NS, nick));
    }
    p
}

/// Shortens `s` to at most `max` bytes, at a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    fn len(e: &Element) -> usize {
        stanza::to_xml(e).unwrap().len()
    }

    #[test]
    fn keeps_status_and_nick_and_drops_the_rest() {
        let req = el(
            "<presence xmlns='jabber:client' type='subscribe' from='a@b.c/r' \
             to='d@e.f' id='x1'><status>hi, it's me</status><status xml:lang='fr'>salut</status>\
             <nick xmlns='http://jabber.org/protocol/nick'>Romeo</nick>\
             <x xmlns='urn:example:big'><y/><y/></x></presence>",
        );
        let want = el("<presence xmlns='jabber:client' type='subscribe'>\
             <status>hi, it's me</status>\
             <nick xmlns='http://jabber.org/protocol/nick'>Romeo</nick></presence>");
        assert_eq!(stored_request(&req, 2048), want);
        let bare = el("<presence xmlns='jabber:client' type='subscribe'/>");
        assert_eq!(stored_request(&bare, 2048), bare);
    }

    #[test]
    fn texts_are_cut_to_the_bound() {
        let big = "é".repeat(100_000);
        let cases = [
            // (status, nick, bound)
            (big.clone(), String::new(), 256),
            (String::new(), big.clone(), 256),
            (big.clone(), big.clone(), 1000),
            ("<&>".repeat(10_000), "n".into(), 300),
            ("short".into(), "n".into(), 256),
        ];
        for (status, nick, max) in cases {
            let mut req = stanza::new("presence", INTERNAL_NS, &[("type", "subscribe")]);
            req.append_child(stanza::text("status", INTERNAL_NS, status.as_str()));
            req.append_child(stanza::text("nick", NICK_NS, nick.as_str()));
            let got = stored_request(&req, max);
            assert!(len(&got) <= max, "{} > {max}", len(&got));
            let st = got.get_child("status", INTERNAL_NS).map(|s| s.text());
            let st = st.unwrap_or_default();
            assert!(status.starts_with(&st), "a prefix is kept");
            assert_eq!(
                st.is_empty(),
                status.is_empty(),
                "something of the status is left"
            );
            if len(&req) <= max {
                assert_eq!(st, status, "a request that fits is kept whole");
            }
        }
    }

    #[test]
    fn a_bound_smaller_than_the_skeleton_keeps_the_skeleton() {
        let mut req = stanza::new("presence", INTERNAL_NS, &[("type", "subscribe")]);
        req.append_child(stanza::text("status", INTERNAL_NS, "hello"));
        let got = stored_request(&req, 10);
        assert_eq!(got.children().count(), 0);
        assert_eq!(got.attr("type"), Some("subscribe"));
    }
}
