//! Property tests: encode → decode is the identity on stanza-shaped elements, for every stream
//! namespace and any chunking; the decoder survives arbitrary bytes.

use herald_proto::stream::{
    encode, header_xml, Decoder, Limits, StreamEvent, StreamNs, INTERNAL_NS, STREAM_CLOSE,
};
use herald_proto::Element;
use proptest::prelude::*;
use rxml::{Namespace, NcName};

#[derive(Debug, Clone)]
enum Child {
    Text(String),
    El(Tree),
}

#[derive(Debug, Clone)]
struct Tree {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    lang: Option<String>,
    children: Vec<Child>,
}

fn text() -> impl Strategy<Value = String> {
    // Printable Unicode plus everything that needs escaping or normalisation care.
    "[\\PC\t\n\r<>&'\" ]{1,16}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,7}"
}

fn child_ns() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(INTERNAL_NS.to_string()),
        1 => Just("urn:xmpp:receipts".to_string()),
        1 => Just("urn:x:'weird'&<ns>".to_string()),
        1 => Just(String::new()),
    ]
}

fn tree(ns: BoxedStrategy<String>) -> impl Strategy<Value = Tree> {
    (
        name(),
        ns,
        prop::collection::btree_map(name(), text(), 0..4),
        prop::option::of("[a-z]{2}(-[A-Z]{2})?"),
    )
        .prop_map(|(name, ns, attrs, lang)| Tree {
            name,
            ns,
            attrs: attrs.into_iter().collect(),
            lang,
            children: Vec::new(),
        })
}

fn stanza() -> impl Strategy<Value = Tree> {
    let leaf = tree(child_ns().boxed());
    let nested = leaf.prop_recursive(4, 32, 5, |inner| {
        (
            tree(child_ns().boxed()),
            prop::collection::vec(
                prop_oneof![text().prop_map(Child::Text), inner.prop_map(Child::El)],
                0..5,
            ),
        )
            .prop_map(|(mut t, children)| {
                t.children = children;
                t
            })
    });
    (
        prop_oneof![Just("message"), Just("presence"), Just("iq")],
        nested,
    )
        .prop_map(|(top, mut t)| {
            t.name = top.to_string();
            t.ns = INTERNAL_NS.to_string();
            t
        })
}

fn build(t: &Tree) -> Element {
    let mut el = Element::bare(t.name.as_str(), t.ns.as_str());
    for (k, v) in &t.attrs {
        el.attrs_mut().insert(
            Namespace::NONE,
            NcName::try_from(k.as_str()).unwrap(),
            v.clone(),
        );
    }
    if let Some(lang) = &t.lang {
        el.attrs_mut().insert(
            Namespace::XML,
            NcName::try_from("lang").unwrap(),
            lang.clone(),
        );
    }
    for c in &t.children {
        match c {
            // append_text merges neighbours, as the decoder does.
            Child::Text(s) => el.append_text(s.as_str()),
            Child::El(sub) => {
                el.append_child(build(sub));
            }
        }
    }
    el
}

/// The reader side of XML 1.0 §2.11: a CR is only kept when written as a reference, which
/// the encoder does, so texts survive unchanged.
fn decode_stream(bytes: &[u8], chunk: usize) -> Vec<StreamEvent> {
    let mut d = Decoder::new(Limits::default());
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        d.feed(piece);
        while let Some(ev) = d.next_event().expect("decode") {
            events.push(ev);
        }
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_is_identity(
        trees in prop::collection::vec(stanza(), 1..4),
        sns in prop_oneof![Just(StreamNs::Client), Just(StreamNs::Server), Just(StreamNs::Component)],
        chunk in 1usize..200,
    ) {
        let els: Vec<Element> = trees.iter().map(build).collect();
        let mut bytes = header_xml(sns, Some("example.com"), None, Some("id"), true, None, &[]).into_bytes();
        for el in &els {
            encode(el, sns, &mut bytes);
            bytes.extend_from_slice(b"\n");
        }
        bytes.extend_from_slice(STREAM_CLOSE.as_bytes());
        let events = decode_stream(&bytes, chunk);
        prop_assert_eq!(events.len(), els.len() + 2);
        prop_assert!(matches!(&events[0], StreamEvent::Header(h) if h.ns == Some(sns)));
        for (ev, el) in events[1..].iter().zip(&els) {
            match ev {
                StreamEvent::Stanza(got) => prop_assert_eq!(got, el),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(events.last(), Some(&StreamEvent::End));
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        prefix in prop::bool::ANY,
        data in prop::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
    ) {
        let mut d = Decoder::new(Limits { max_stanza_bytes: 256, max_header_bytes: 128, ..Limits::default() });
        if prefix {
            d.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
        }
        for piece in data.chunks(chunk) {
            d.feed(piece);
            while let Ok(Some(_)) = d.next_event() {}
        }
    }
}
