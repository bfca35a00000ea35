//! Decisions per second: classifying stanzas, and the push decision for a stanza queued
//! to a hibernated push-enabled session (dedup, coalescing, publish building, reply).

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use herald_push::classify::{classify, summarize, Importance, Summary};
use herald_push::engine::{Action, Engine, PushConfig, RegKey, Registration, Reply, StanzaInfo};
use minidom::Element;

fn stanzas() -> Vec<Element> {
    [
        "<message xmlns='jabber:client' from='romeo@example.net/orchard' to='juliet@example.com' type='chat'><body>Art thou not Romeo, and a Montague?</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message xmlns='jabber:client' from='romeo@example.net/orchard' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message xmlns='jabber:client' from='romeo@example.net/orchard' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>AAAA</payload></encrypted></message>",
        "<message xmlns='jabber:client' from='juliet@example.com'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='romeo@example.net/orchard' type='chat'><body>Hi</body></message></forwarded></received></message>",
        "<presence xmlns='jabber:client' from='romeo@example.net/orchard'><show>away</show></presence>",
    ]
    .iter()
    .map(|s| s.parse().expect("bench stanza"))
    .collect()
}

fn bench_classify(c: &mut Criterion) {
    let all = stanzas();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("classify+summarize mix", |b| {
        b.iter(|| {
            for s in &all {
                black_box(classify(black_box(s)));
                black_box(summarize(black_box(s)));
            }
        })
    });
    g.finish();
}

fn bench_queued(c: &mut Criterion) {
    let mut g = c.benchmark_group("stanza_queued");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hibernated session, replies answered", |b| {
        let base = Instant::now();
        let mut e = Engine::new(PushConfig::default());
        e.load_user("juliet", Vec::new());
        e.session_started("juliet", 1, "phone", base);
        e.enable(
            "juliet",
            1,
            Registration {
                key: RegKey {
                    jid: "push.example.net".into(),
                    node: "n".into(),
                },
                publish_options: None,
                enabled_at: 0,
                resource: Some("phone".into()),
                lang: None,
                error_count: 0,
            },
            base,
        );
        e.hibernation_started(1, &[], base);
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            // 50 ms apart: most stanzas are covered by a window, some open a new one.
            let now = base + Duration::from_millis(id * 50);
            let s = StanzaInfo {
                id,
                importance: match id % 4 {
                    0 => Importance::Unimportant,
                    _ => Importance::Important,
                },
                summary: Summary {
                    sender: Some("romeo@example.net".into()),
                    body: Some("Hi".into()),
                },
                own: false,
                at: 0,
            };
            for a in e.stanza_queued(1, &s, now) {
                if let Action::Publish { iq_id, .. } = a {
                    black_box(e.reply(&iq_id, Reply::Result, now, 0));
                }
            }
        });
        assert_eq!(e.pending_len(), 0);
    });
    g.finish();
}

criterion_group!(benches, bench_classify, bench_queued);
criterion_main!(benches);
