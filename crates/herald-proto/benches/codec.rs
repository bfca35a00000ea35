//! Decode and encode throughput on a realistic stanza mix (chat messages with bodies and
//! the usual payloads, presence, iq), reported in bytes/s.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use herald_proto::stream::{encode, header_xml, Decoder, Limits, StreamEvent, StreamNs};
use herald_proto::Element;

fn mix() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..100 {
        out.push(format!(
            "<message to='juliet@capulet.example/balcony' from='romeo@montague.example/garden' \
             type='chat' id='msg-{i}' xml:lang='en'><body>But soft, what light through yonder \
             window breaks? It is the east, and Juliet is the sun &amp; more #{i}</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/>\
             <request xmlns='urn:xmpp:receipts'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='5f1c3c5e-{i:04}-4c1e-9a1b-2f0c1d2e3f4a'/>\
             <markable xmlns='urn:xmpp:chat-markers:0'/></message>"
        ));
        if i % 3 == 0 {
            out.push(format!(
                "<presence from='romeo@montague.example/garden' id='p{i}'><show>away</show>\
                 <status>In the orchard</status><priority>5</priority>\
                 <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
                 node='https://conversations.im' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>"
            ));
        }
        if i % 4 == 0 {
            out.push(format!(
                "<iq type='get' id='ping-{i}' to='capulet.example'><ping xmlns='urn:xmpp:ping'/></iq>"
            ));
            out.push(format!(
                "<iq type='result' id='roster-{i}'><query xmlns='jabber:iq:roster' ver='ver{i}'>\
                 <item jid='nurse@capulet.example' name='Nurse' subscription='both'><group>Family</group></item>\
                 <item jid='benvolio@montague.example' subscription='to'/></query></iq>"
            ));
        }
        out.push("<r xmlns='urn:xmpp:sm:3'/>".to_string());
    }
    out
}

fn stream_bytes(ns: StreamNs) -> Vec<u8> {
    let mut bytes = header_xml(
        ns,
        None,
        Some("capulet.example"),
        None,
        true,
        Some("en"),
        &[],
    )
    .into_bytes();
    for s in mix() {
        bytes.extend_from_slice(s.as_bytes());
    }
    bytes
}

fn decode_all(bytes: &[u8], chunk: usize) -> usize {
    let mut d = Decoder::new(Limits::default());
    let mut n = 0;
    for piece in bytes.chunks(chunk) {
        d.feed(piece);
        while let Ok(Some(ev)) = d.next_event() {
            if let StreamEvent::Stanza(el) = ev {
                black_box(&el);
                n += 1;
            }
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let client = stream_bytes(StreamNs::Client);
    let server = stream_bytes(StreamNs::Server);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(client.len() as u64));
    g.bench_function("c2s_4KiB_reads", |b| b.iter(|| decode_all(&client, 4096)));
    g.bench_function("c2s_one_buffer", |b| {
        b.iter(|| decode_all(&client, client.len()))
    });
    g.bench_function("s2s_4KiB_reads", |b| b.iter(|| decode_all(&server, 4096)));
    g.finish();

    let els: Vec<Element> = mix()
        .iter()
        .map(|s| {
            let wrapped = s.replacen('>', " xmlns='jabber:client'>", 1);
            let wrapped = if s.starts_with("<r ") {
                s.clone()
            } else {
                wrapped
            };
            wrapped
                .replace("/ xmlns='jabber:client'>", " xmlns='jabber:client'/>")
                .parse()
                .expect("valid")
        })
        .collect();
    let mut out = Vec::with_capacity(client.len() * 2);
    for el in &els {
        encode(el, StreamNs::Client, &mut out);
    }
    let encoded_len = out.len() as u64;
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(encoded_len));
    for ns in [StreamNs::Client, StreamNs::Server] {
        g.bench_function(format!("{ns:?}"), |b| {
            b.iter(|| {
                out.clear();
                for el in &els {
                    encode(el, ns, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
