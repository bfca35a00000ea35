//! Feeds arbitrary bytes in arbitrary chunks to the stream decoder. Oracles: no panic; an
//! error is sticky; every decoded top-level element survives encode → decode unchanged.
#![no_main]

use herald_proto::stream::{encode, header_xml, Decoder, Limits, StreamEvent, StreamNs};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] =
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>";

fn reencode_roundtrip(el: &herald_proto::Element, ns: StreamNs) {
    let mut bytes = header_xml(ns, None, None, None, true, None, &[]).into_bytes();
    encode(el, ns, &mut bytes);
    let mut d = Decoder::new(Limits {
        max_stanza_bytes: usize::MAX / 2,
        max_depth: 1 << 20,
        max_attributes: 1 << 20,
        max_header_bytes: 4096,
    });
    d.feed(&bytes);
    match d.next_event() {
        Ok(Some(StreamEvent::Header(_))) => {}
        other => panic!("our own header did not decode: {other:?}"),
    }
    match d.next_event() {
        Ok(Some(StreamEvent::Stanza(again))) => assert_eq!(
            &again,
            el,
            "encode/decode changed {}",
            String::from_utf8_lossy(&bytes)
        ),
        other => panic!(
            "re-encoded element did not decode: {other:?} from {}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk, rest)) = rest.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut d = Decoder::new(Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
        max_attributes: 16,
        max_header_bytes: 1024,
    });
    if flags & 1 != 0 {
        d.feed(HEADER);
    }
    let mut ns = StreamNs::Client;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(StreamEvent::Header(h))) => ns = h.ns.unwrap_or(StreamNs::Client),
                Ok(Some(StreamEvent::Stanza(el))) => reencode_roundtrip(&el, ns),
                Ok(Some(StreamEvent::End)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(d.next_event(), Err(e));
                    return;
                }
            }
        }
        if flags & 2 != 0 && d.is_idle() {
            d.shrink();
        }
        if flags & 4 != 0 && i == 3 {
            d.reset();
        }
    }
});
