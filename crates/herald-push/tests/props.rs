//! Properties over arbitrary event sequences: never twice, bounded and leak-free.

mod common;

use std::collections::HashSet;

use common::*;
use herald_push::classify::Importance;
use herald_push::engine::{Engine, PushConfig, Reply, StanzaInfo};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Queued(u64, u64),
    Archived(u64),
    Offline(u64),
    Hibernate(u64),
    AckDelayed(u64),
    Acked(u64),
    Resume(u64),
    End(u64),
    Start(u64),
    Advance(u64),
    ReplyLast(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..3u64, 0..30u64).prop_map(|(s, i)| Op::Queued(s, i)),
        2 => (0..30u64).prop_map(Op::Archived),
        2 => (0..30u64).prop_map(Op::Offline),
        1 => (1..3u64).prop_map(Op::Hibernate),
        1 => (1..3u64).prop_map(Op::AckDelayed),
        1 => (1..3u64).prop_map(Op::Acked),
        1 => (1..3u64).prop_map(Op::Resume),
        1 => (1..3u64).prop_map(Op::End),
        1 => (1..3u64).prop_map(Op::Start),
        3 => (0..5000u64).prop_map(Op::Advance),
        2 => (0..3u8).prop_map(Op::ReplyLast),
    ]
}

fn info(id: u64) -> StanzaInfo {
    // The same stanza always has the same importance.
    let importance = match id % 3 {
        0 => Importance::Unimportant,
        1 => Importance::Important,
        _ => Importance::Urgent,
    };
    stanza(id, importance)
}

fn node(s: u64) -> String {
    format!("dev{s}")
}

proptest! {
    #[test]
    fn never_twice_bounded_and_leak_free(ops in proptest::collection::vec(op(), 1..120)) {
        let c = Clock::new();
        let cfg = PushConfig { max_pending: 8, ..Default::default() };
        let max_pending = cfg.max_pending;
        let mut e: Engine = engine(cfg);
        e.load_user(USER, vec![reg("laptop", 1, "laptop")]);
        for s in 1..3 {
            e.session_started(USER, s, &node(s), c.at(0.0));
            e.enable(USER, s, reg(&node(s), 10 + s as i64, &node(s)), c.at(0.0));
        }
        let mut t = 0.0f64;
        let mut seen: HashSet<(u64, String)> = HashSet::new();
        let mut last_ids: Vec<String> = Vec::new();
        for op in ops {
            let now = c.at(t);
            let (stanza, actions) = match op {
                Op::Queued(s, i) => (Some(i), e.stanza_queued(s, &info(i), now)),
                Op::Archived(i) => (Some(i), e.archived_for(USER, &info(i), now)),
                Op::Offline(i) => (Some(i), e.stored_offline(USER, &info(i), now)),
                Op::Hibernate(s) => (None, e.hibernation_started(s, &[], now)),
                Op::AckDelayed(s) => (None, e.ack_delayed(s, &[], now)),
                Op::Acked(s) => { e.acked(s, now); (None, vec![]) }
                Op::Resume(s) => (None, e.resumed(s, now)),
                Op::End(s) => (None, e.session_ended(s, now)),
                Op::Start(s) => {
                    e.session_started(USER, s, &node(s), now);
                    (None, e.enable(USER, s, reg(&node(s), 10 + s as i64, &node(s)), now))
                }
                Op::Advance(ms) => {
                    t += ms as f64 / 1000.0;
                    (None, e.poll(c.at(t), 0))
                }
                Op::ReplyLast(kind) => {
                    let r = match kind {
                        0 => Reply::Result,
                        1 => Reply::Error { wait: true, condition: "resource-constraint".into() },
                        _ => Reply::Error { wait: false, condition: "item-not-found".into() },
                    };
                    let acts = match last_ids.pop() {
                        Some(id) => e.reply(&id, r, now, 0),
                        None => vec![],
                    };
                    (None, acts)
                }
            };
            for p in pushes(&actions) {
                last_ids.push(p.iq_id.clone());
                if let Some(i) = stanza {
                    prop_assert!(seen.insert((i, p.node.clone())), "stanza {} pushed twice to {}", i, p.node);
                }
            }
            prop_assert!(e.pending_len() <= max_pending);
        }
        // A silent app server from here on: everything is dropped eventually.
        let mut rounds = 0;
        while let Some(d) = e.next_deadline() {
            e.poll(d.max(c.at(t)), 0);
            rounds += 1;
            prop_assert!(rounds < 10_000);
        }
        prop_assert_eq!(e.pending_len(), 0);
    }
}
