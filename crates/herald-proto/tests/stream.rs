//! Black-box tests of the stream codec: events, limits, errors, normalisation, restarts.

use herald_proto::error::StreamErrorCondition as Cond;
use herald_proto::ns;
use herald_proto::stream::{
    encode, header_xml, to_string, Decoder, Limits, StreamEvent, StreamHeader, StreamNs,
    INTERNAL_NS, STREAM_CLOSE,
};
use herald_proto::Element;

fn header(ns: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{ns}' \
         xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
         xml:lang='en'>"
    )
}

/// Feeds all of `input` in chunks of `chunk` bytes, collecting events until an error.
fn decode_chunked(limits: Limits, input: &[u8], chunk: usize) -> (Vec<StreamEvent>, Option<Cond>) {
    let mut d = Decoder::new(limits);
    let mut events = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e.condition)),
            }
        }
    }
    (events, None)
}

fn decode_all(input: &str) -> (Vec<StreamEvent>, Option<Cond>) {
    decode_chunked(Limits::default(), input.as_bytes(), input.len())
}

fn error_of(input: &str) -> Option<Cond> {
    decode_all(input).1
}

fn el(s: &str) -> Element {
    s.parse().unwrap()
}

fn stanza(ev: &StreamEvent) -> &Element {
    match ev {
        StreamEvent::Stanza(e) => e,
        other => panic!("expected a stanza, got {other:?}"),
    }
}

const TRANSCRIPT_BODY: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n \
    <message to='juliet@example.com/balcony' id='m1' type='chat' xml:lang='en'>\
    <body>Wherefore art thou &amp; &lt;3 &#x263A; \u{e9}</body>\
    <active xmlns='http://jabber.org/protocol/chatstates'/>\
    <request xmlns='urn:xmpp:receipts'/></message>\r\n\
    <iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>\
    <presence><show>away</show><status>  out  </status><priority>1</priority></presence>\
    <r xmlns='urn:xmpp:sm:3'/>\t\
    <iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>a&apos;b\"c</resource></bind></iq>\
    </stream:stream>";

fn transcript(ns: &str) -> String {
    format!("{}{}", header(ns), TRANSCRIPT_BODY)
}

fn expected_events() -> Vec<StreamEvent> {
    let hdr = StreamHeader {
        ns: Some(StreamNs::Client),
        to: Some("example.com".into()),
        from: None,
        id: None,
        version: Some("1.0".into()),
        lang: Some("en".into()),
    };
    vec![
        StreamEvent::Header(hdr),
        StreamEvent::Stanza(el("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")),
        StreamEvent::Stanza(el(
            "<message xmlns='jabber:client' to='juliet@example.com/balcony' id='m1' type='chat' \
             xml:lang='en'><body>Wherefore art thou &amp; &lt;3 \u{263a} \u{e9}</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/>\
             <request xmlns='urn:xmpp:receipts'/></message>",
        )),
        StreamEvent::Stanza(el(
            "<iq xmlns='jabber:client' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
        )),
        StreamEvent::Stanza(el(
            "<presence xmlns='jabber:client'><show>away</show><status>  out  </status>\
             <priority>1</priority></presence>",
        )),
        StreamEvent::Stanza(el("<r xmlns='urn:xmpp:sm:3'/>")),
        StreamEvent::Stanza(el(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>a'b\"c</resource></bind></iq>",
        )),
        StreamEvent::End,
    ]
}

#[test]
fn realistic_transcript_decodes() {
    let (events, err) = decode_all(&transcript(ns::CLIENT));
    assert_eq!(err, None);
    assert_eq!(events, expected_events());
}

#[test]
fn every_split_point_gives_the_same_events() {
    let input = transcript(ns::CLIENT);
    let bytes = input.as_bytes();
    let expected = expected_events();
    for split in 0..=bytes.len() {
        let mut d = Decoder::new(Limits::default());
        let mut events = Vec::new();
        for part in [&bytes[..split], &bytes[split..]] {
            d.feed(part);
            while let Some(ev) = d.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events, expected, "split at {split}");
    }
}

#[test]
fn one_byte_at_a_time_and_odd_chunks() {
    let input = transcript(ns::CLIENT);
    for chunk in [1, 2, 3, 7, 64, 1000] {
        let (events, err) = decode_chunked(Limits::default(), input.as_bytes(), chunk);
        assert_eq!(err, None, "chunk {chunk}");
        assert_eq!(events, expected_events(), "chunk {chunk}");
    }
}

#[test]
fn header_is_surfaced_before_any_child() {
    let mut d = Decoder::new(Limits::default());
    d.feed(header(ns::CLIENT).as_bytes());
    assert!(
        matches!(d.next_event(), Ok(Some(StreamEvent::Header(h))) if h.ns == Some(StreamNs::Client))
    );
    assert_eq!(d.next_event(), Ok(None));
    assert!(d.is_idle());
    d.feed(b"<presence");
    assert_eq!(d.next_event(), Ok(None));
    assert!(!d.is_idle());
    d.feed(b"/>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
    assert!(d.is_idle());
}

#[test]
fn header_fields() {
    let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns='jabber:component:accept' from='a&amp;b' to='comp.example' id='s1' \
                 xmlns:db='jabber:server:dialback' xml:lang='de' other='x'>";
    let (events, err) = decode_all(input);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![StreamEvent::Header(StreamHeader {
            ns: Some(StreamNs::Component),
            to: Some("comp.example".into()),
            from: Some("a&b".into()),
            id: Some("s1".into()),
            version: None,
            lang: Some("de".into()),
        })]
    );
}

#[test]
fn namespaces_are_normalised_for_all_stream_kinds() {
    let body = "<message to='a@b' type='chat'><body>x</body>\
                <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='{NS}' from='c@d'>\
                <body>inner</body></message></forwarded></message>\
                <db:result xmlns:db='jabber:server:dialback' to='b' from='a'>key</db:result>\
                <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>";
    let want_message = el(
        "<message xmlns='jabber:client' to='a@b' type='chat'><body>x</body>\
                           <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
                           from='c@d'><body>inner</body></message></forwarded></message>",
    );
    for sns in [StreamNs::Client, StreamNs::Server, StreamNs::Component] {
        let input = format!(
            "{}{}",
            header(sns.as_str()),
            body.replace("{NS}", sns.as_str())
        );
        let (events, err) = decode_all(&input);
        assert_eq!(err, None, "{sns:?}");
        assert_eq!(events.len(), 4, "{sns:?}");
        assert!(matches!(&events[0], StreamEvent::Header(h) if h.ns == Some(sns)));
        assert_eq!(stanza(&events[1]), &want_message, "{sns:?}");
        let db = stanza(&events[2]);
        assert!(db.is("result", ns::DIALBACK));
        assert_eq!(db.text(), "key");
        assert!(stanza(&events[3]).is("auth", ns::SASL));
    }
}

#[test]
fn foreign_content_namespace_is_left_alone() {
    // A jabber:server element inside a client stream is not the stream's namespace: untouched.
    let input = format!("{}<message xmlns='jabber:server'/>", header(ns::CLIENT));
    let (events, _) = decode_all(&input);
    assert!(stanza(&events[1]).is("message", ns::SERVER));
}

#[test]
fn stream_level_elements_keep_stream_namespace() {
    let input = format!(
        "{}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>\
         <stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        header(ns::SERVER)
    );
    let (events, err) = decode_all(&input);
    assert_eq!(err, None);
    assert!(stanza(&events[1]).is("features", ns::STREAM));
    assert!(stanza(&events[1]).has_child("bind", ns::BIND));
    assert!(stanza(&events[2]).is("error", ns::STREAM));
}

#[test]
fn end_of_stream_and_after() {
    let mut d = Decoder::new(Limits::default());
    d.feed(header(ns::CLIENT).as_bytes());
    d.feed(b"</stream:stream>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    assert_eq!(d.next_event(), Ok(Some(StreamEvent::End)));
    d.feed(b"<garbage");
    assert_eq!(d.next_event(), Ok(None));
    assert!(d.is_idle());
}

// --- limits -------------------------------------------------------------------------------

fn limits() -> Limits {
    Limits {
        max_stanza_bytes: 200,
        max_depth: 4,
        max_attributes: 5,
        max_header_bytes: 300,
    }
}

#[test]
fn stanza_byte_limit_is_exact() {
    let hdr = header(ns::CLIENT);
    let make = |len: usize| {
        let open = "<message><body>";
        let close = "</body></message>";
        let filler = "x".repeat(len - open.len() - close.len());
        format!("{open}{filler}{close}")
    };
    for chunk in [1, 13, 10_000] {
        let ok = format!("{hdr}{}{}", make(200), make(200));
        let (events, err) = decode_chunked(limits(), ok.as_bytes(), chunk);
        assert_eq!(err, None, "chunk {chunk}");
        assert_eq!(events.len(), 3);
        let too_big = format!("{hdr}{}", make(201));
        let (events, err) = decode_chunked(limits(), too_big.as_bytes(), chunk);
        assert_eq!(err, Some(Cond::PolicyViolation), "chunk {chunk}");
        assert_eq!(events.len(), 1);
    }
}

#[test]
fn unterminated_huge_stanza_fails_before_buffering_it_all() {
    let mut d = Decoder::new(limits());
    d.feed(header(ns::CLIENT).as_bytes());
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    d.feed(b"<message><body>");
    let mut failed = None;
    for _ in 0..100 {
        d.feed(&[b'a'; 10]);
        if let Err(e) = d.next_event() {
            failed = Some(e.condition);
            break;
        }
    }
    assert_eq!(failed, Some(Cond::PolicyViolation));
}

#[test]
fn whitespace_keepalives_do_not_count_towards_the_stanza() {
    let hdr = header(ns::CLIENT);
    let body = "x".repeat(200 - "<message><body></body></message>".len());
    let input = format!(
        "{hdr}{}<message><body>{body}</body></message>",
        " ".repeat(500)
    );
    let (events, err) = decode_chunked(limits(), input.as_bytes(), 7);
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
}

#[test]
fn depth_limit() {
    let hdr = header(ns::CLIENT);
    let ok = format!("{hdr}<a><b><c><d/></c></b></a>");
    assert_eq!(decode_chunked(limits(), ok.as_bytes(), 5).1, None);
    let deep = format!("{hdr}<a><b><c><d><e/></d></c></b></a>");
    assert_eq!(
        decode_chunked(limits(), deep.as_bytes(), 5).1,
        Some(Cond::PolicyViolation)
    );
}

#[test]
fn attribute_limit() {
    let hdr = header(ns::CLIENT);
    let ok = format!("{hdr}<a x1='1' x2='2' x3='3' x4='4' xmlns:p='urn:p'/>");
    assert_eq!(decode_chunked(limits(), ok.as_bytes(), 3).1, None);
    let many = format!("{hdr}<a x1='1' x2='2' x3='3' x4='4' x5='5' x6='6'/>");
    assert_eq!(
        decode_chunked(limits(), many.as_bytes(), 3).1,
        Some(Cond::PolicyViolation)
    );
    let nested = format!("{hdr}<a><b x1='1' x2='2' x3='3' x4='4' x5='5' x6='6'/></a>");
    assert_eq!(
        decode_chunked(limits(), nested.as_bytes(), 3).1,
        Some(Cond::PolicyViolation)
    );
}

#[test]
fn header_limits() {
    let long = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         to='{}'>",
        "a".repeat(300)
    );
    assert_eq!(
        decode_chunked(limits(), long.as_bytes(), 1).1,
        Some(Cond::PolicyViolation)
    );
    let many_attrs = "<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' a='1' b='2' c='3' d='4'>";
    assert_eq!(
        decode_chunked(limits(), many_attrs.as_bytes(), 1).1,
        Some(Cond::PolicyViolation)
    );
    // An endless XML declaration / leading whitespace is header bytes too.
    let ws = format!("<?xml version='1.0'?>{}<stream:stream", " ".repeat(400));
    assert_eq!(
        decode_chunked(limits(), ws.as_bytes(), 50).1,
        Some(Cond::PolicyViolation)
    );
    let ws = format!("{}<stream:stream", " ".repeat(400));
    assert_eq!(
        decode_chunked(limits(), ws.as_bytes(), 50).1,
        Some(Cond::PolicyViolation)
    );
}

#[test]
fn many_tiny_elements_are_capped() {
    let hdr = header(ns::CLIENT);
    let input = format!("{hdr}<a>{}</a>", "<b/>".repeat(30_000));
    let l = Limits {
        max_stanza_bytes: 200_000,
        ..Limits::default()
    };
    assert_eq!(
        decode_chunked(l, input.as_bytes(), 4096).1,
        Some(Cond::PolicyViolation)
    );
}

// --- errors -------------------------------------------------------------------------------

#[test]
fn malformed_xml_is_not_well_formed() {
    let hdr = header(ns::CLIENT);
    for bad in [
        "<message></presence>",
        "<message><body>x</message>",
        "<message a='1' a='2'/>",
        "<message xmlns='x' xmlns='y'/>",
        "<message xmlns:p='u' xmlns:p='v'/>",
        "<message p:a='1' xmlns:p='u' q:a='2' xmlns:q='u'/>",
        "<message <",
        "<message>&#0;</message>",
        "<1message/>",
        "hello",
        "<message/>junk",
        "<message xmlns='http://www.w3.org/2000/xmlns/'/>",
        "<message xmlns:p='http://www.w3.org/2000/xmlns/' p:a='1'/>",
    ] {
        assert_eq!(
            error_of(&format!("{hdr}{bad}")),
            Some(Cond::NotWellFormed),
            "{bad}"
        );
    }
    assert_eq!(
        error_of("<p:stream xmlns='jabber:client'>"),
        Some(Cond::BadNamespacePrefix)
    );
    assert_eq!(error_of("<a><stream:stream"), Some(Cond::InvalidNamespace));
    assert_eq!(error_of("garbage"), Some(Cond::NotWellFormed));
}

#[test]
fn restricted_xml_features() {
    let hdr = header(ns::CLIENT);
    for bad in [
        "<!-- comment -->",
        "<?pi data?>",
        "<message>&custom;</message>",
    ] {
        assert_eq!(
            error_of(&format!("{hdr}{bad}")),
            Some(Cond::RestrictedXml),
            "{bad}"
        );
    }
    let dtd = "<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream>";
    assert!(matches!(
        error_of(dtd),
        Some(Cond::RestrictedXml | Cond::NotWellFormed)
    ));
}

#[test]
fn doctype_and_other_declarations_are_restricted_xml_in_any_chunking() {
    for input in [
        "<?xml version='1.0'?><!DOCTYPE stream:stream><stream:stream>".to_string(),
        "<!DOCTYPE foo [<!ENTITY x 'y'>]>".to_string(),
        format!("{}<!DOCTYPE message>", header(ns::CLIENT)),
        format!("{}<message><!ENTITY x 'y'></message>", header(ns::CLIENT)),
    ] {
        for chunk in [1, 2, 3, 7, input.len()] {
            assert_eq!(
                decode_chunked(Limits::default(), input.as_bytes(), chunk).1,
                Some(Cond::RestrictedXml),
                "{input} in chunks of {chunk}"
            );
        }
    }
    // CDATA and other syntax errors are unchanged.
    let hdr = header(ns::CLIENT);
    assert_eq!(
        error_of(&format!("{hdr}<message><![CDATA[<!DOCTYPE x>]]></message>")),
        None
    );
    assert_eq!(error_of(&format!("{hdr}<!x>")), Some(Cond::NotWellFormed));
}

#[test]
fn encodings() {
    assert_eq!(
        error_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        Some(Cond::UnsupportedEncoding)
    );
    let mut input = header(ns::CLIENT).into_bytes();
    input.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    assert_eq!(
        decode_chunked(Limits::default(), &input, 1).1,
        Some(Cond::UnsupportedEncoding)
    );
}

#[test]
fn namespace_errors() {
    // RFC 6120 §4.9.3.10: wrong stream namespace, wrong root, unsupported content namespace.
    assert_eq!(
        error_of("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>"),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        error_of(
            "<stream:foo xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        error_of(
            "<stream:stream xmlns='urn:other' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        error_of("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        error_of("<stream xmlns='http://etherx.jabber.org/streams'>"),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        error_of(&format!("{}<p:message/>", header(ns::CLIENT))),
        Some(Cond::BadNamespacePrefix)
    );
    assert_eq!(
        error_of(&format!("{}<message p:a='1'/>", header(ns::CLIENT))),
        Some(Cond::BadNamespacePrefix)
    );
    // An element in the XML namespace could not be serialized for the recipient (found by
    // the `profile` fuzz target); `xml:` attributes stay fine.
    for bad in [
        "<xml:message/>",
        "<message><xml:body/></message>",
        "<message><body xml:lang='en'><xml:x xml:a='1'/></body></message>",
    ] {
        assert_eq!(
            error_of(&format!("{}{bad}", header(ns::CLIENT))),
            Some(Cond::BadNamespacePrefix),
            "{bad}"
        );
    }
}

#[test]
fn failure_is_sticky() {
    let mut d = Decoder::new(Limits::default());
    d.feed(format!("{}<a></b>", header(ns::CLIENT)).as_bytes());
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    let e = d.next_event().unwrap_err();
    assert_eq!(e.condition, Cond::NotWellFormed);
    d.feed(b"<presence/>");
    assert_eq!(d.next_event(), Err(e.clone()));
    assert_eq!(d.next_event(), Err(e));
}

// --- restart and memory ---------------------------------------------------------------------

#[test]
fn reset_starts_a_new_document() {
    let mut d = Decoder::new(Limits::default());
    d.feed(header(ns::CLIENT).as_bytes());
    d.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Stanza(s))) if s.name() == "starttls"));
    d.reset();
    // The plaintext bytes that followed <starttls/> are gone (no command injection).
    assert_eq!(d.next_event(), Ok(None));
    d.feed(header(ns::CLIENT).as_bytes());
    d.feed(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Stanza(s))) if s.text() == "AGEAYg=="));
    d.reset();
    // A restarted stream may even carry the XML declaration again, and is a fresh document.
    d.feed(header(ns::CLIENT).as_bytes());
    d.feed(b"<iq type='set' id='1'/>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Stanza(s))) if s.is("iq", INTERNAL_NS)));
}

#[test]
fn reset_clears_a_failure() {
    let mut d = Decoder::new(Limits::default());
    d.feed(b"<bad");
    d.feed(b" =>");
    assert!(d.next_event().is_err());
    d.reset();
    d.feed(header(ns::CLIENT).as_bytes());
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Header(_)))));
}

#[test]
fn shrink_releases_capacity_when_idle() {
    let mut d = Decoder::new(Limits::default());
    d.feed(header(ns::CLIENT).as_bytes());
    let big = format!("<message><body>{}</body></message>", "y".repeat(100_000));
    d.feed(big.as_bytes());
    let mut got = 0;
    while let Some(ev) = d.next_event().unwrap() {
        got += 1;
        let _ = ev;
    }
    assert_eq!(got, 2);
    d.feed(b"\n");
    assert_eq!(d.next_event(), Ok(None));
    assert!(d.is_idle());
    assert!(d.buffer_capacity() >= 100_000);
    d.shrink();
    assert!(d.buffer_capacity() < 1024, "{}", d.buffer_capacity());
    // Still works after shrinking.
    d.feed(b"<presence/>");
    assert!(matches!(d.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
}

#[test]
fn whitespace_before_the_header_is_tolerated() {
    let input = format!(
        "\n \r\n{}<presence/>",
        header(ns::CLIENT).trim_start_matches("<?xml version='1.0'?>")
    );
    for chunk in [1, 2, 1000] {
        let (events, err) = decode_chunked(Limits::default(), input.as_bytes(), chunk);
        assert_eq!(err, None);
        assert_eq!(events.len(), 2);
    }
}

#[test]
fn decoder_is_small_and_sendable() {
    fn assert_send<T: Send>() {}
    assert_send::<Decoder>();
    // The per-connection footprint when idle: the struct itself plus a few small strings.
    assert!(
        std::mem::size_of::<Decoder>() <= 1024,
        "{}",
        std::mem::size_of::<Decoder>()
    );
}

#[test]
fn idle_only_between_stanzas() {
    let mut d = Decoder::new(Limits::default());
    assert!(d.is_idle());
    d.feed(b"<?xml version='1.0'?>");
    assert_eq!(d.next_event(), Ok(None));
    assert!(!d.is_idle());
    d.feed(
        header(ns::CLIENT)
            .trim_start_matches("<?xml version='1.0'?>")
            .as_bytes(),
    );
    assert!(d.next_event().unwrap().is_some());
    assert!(d.is_idle());
    d.feed(b"<message><bo");
    assert_eq!(d.next_event(), Ok(None));
    assert!(!d.is_idle());
    d.feed(b"dy/></message> ");
    assert!(d.next_event().unwrap().is_some());
    assert_eq!(d.next_event(), Ok(None));
    assert!(d.is_idle());
}

// --- encoding -------------------------------------------------------------------------------

#[test]
fn encode_rewrites_internal_namespace() {
    let m = el(
        "<message xmlns='jabber:client' to='a@b' type='chat'><body>hi &lt;there&gt; &amp; \
                'you'</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
                <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded>\
                </message>",
    );
    assert_eq!(
        to_string(&m, StreamNs::Client),
        "<message to='a@b' type='chat'><body>hi &lt;there&gt; &amp; 'you'</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/></forwarded></message>"
    );
    assert_eq!(
        to_string(&m, StreamNs::Server),
        "<message to='a@b' type='chat'><body>hi &lt;there&gt; &amp; 'you'</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:server'/></forwarded></message>"
    );
    let r = el("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(
        to_string(&r, StreamNs::Component),
        "<r xmlns='urn:xmpp:sm:3'/>"
    );
}

#[test]
fn encode_attributes_and_special_namespaces() {
    let m = el(
        "<presence xmlns='jabber:client' xml:lang='en' from='a&amp;b&apos;&quot;&lt;' \
                xmlns:x='urn:x' x:foo='1&#x9;2&#xA;3'/>",
    );
    let out = to_string(&m, StreamNs::Client);
    assert!(out.starts_with("<presence "), "{out}");
    assert!(out.contains(" from='a&amp;b&apos;&quot;&lt;'"), "{out}");
    assert!(out.contains(" xml:lang='en'"), "{out}");
    assert!(out.contains("='urn:x' a0:foo='1&#x9;2&#xA;3'"), "{out}");

    let features = el("<features xmlns='http://etherx.jabber.org/streams'>\
                       <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></features>");
    assert_eq!(
        to_string(&features, StreamNs::Client),
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
    );
    // Control characters XML cannot carry are dropped; CR survives as a reference.
    let mut body = Element::bare("body", INTERNAL_NS);
    body.append_text_node("a\u{1}b\r\nc");
    assert_eq!(
        to_string(&body, StreamNs::Client),
        "<body>ab&#xD;\nc</body>"
    );
    // An element in no namespace under a namespaced parent must undeclare the default.
    let mut outer = Element::bare("x", "urn:x");
    outer.append_child(Element::bare("y", ""));
    assert_eq!(
        to_string(&outer, StreamNs::Client),
        "<x xmlns='urn:x'><y xmlns=''/></x>"
    );
}

#[test]
fn encode_appends_to_the_buffer() {
    let mut out = b"prefix".to_vec();
    encode(
        &el("<presence xmlns='jabber:client'/>"),
        StreamNs::Client,
        &mut out,
    );
    assert_eq!(out, b"prefix<presence/>");
}

#[test]
fn header_xml_shape() {
    assert_eq!(
        header_xml(
            StreamNs::Client,
            Some("example.com"),
            Some("a'b@example.com"),
            Some("s<1>"),
            true,
            Some("en"),
            &[]
        ),
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' from='example.com' \
         to='a&apos;b@example.com' id='s&lt;1&gt;' version='1.0' xml:lang='en'>"
    );
    assert_eq!(
        header_xml(
            StreamNs::Server,
            None,
            None,
            None,
            false,
            None,
            &[("db", ns::DIALBACK)]
        ),
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>"
    );
    assert_eq!(STREAM_CLOSE, "</stream:stream>");
}

#[test]
fn our_own_header_and_stanzas_decode() {
    for sns in [StreamNs::Client, StreamNs::Server, StreamNs::Component] {
        let mut bytes = header_xml(
            sns,
            Some("x"),
            None,
            Some("i"),
            true,
            None,
            &[("db", ns::DIALBACK)],
        )
        .into_bytes();
        let m = el("<message xmlns='jabber:client' to='a@b'><body>1 &lt; 2</body></message>");
        encode(&m, sns, &mut bytes);
        bytes.extend_from_slice(STREAM_CLOSE.as_bytes());
        let (events, err) = decode_chunked(Limits::default(), &bytes, 3);
        assert_eq!(err, None);
        assert_eq!(events.len(), 3);
        assert_eq!(stanza(&events[1]), &m);
    }
}
