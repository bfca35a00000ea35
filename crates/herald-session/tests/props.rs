//! Properties of the SM queue and the CSI buffer under arbitrary interleavings.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herald_session::csi::CsiBuffer;
use herald_session::sm::{SmConfig, SmError, SmEvent, StreamManagement};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push,
    /// Ack `n` more than the last ack (clamped to what is unacked).
    Ack(usize),
    /// An ack lower than the last one by this much.
    StaleAck(u32),
    /// An ack above what was sent by this much (at least 1).
    TooHigh(u32),
    Inbound,
    RequestSent,
    Advance(u64),
    Hibernate,
    /// Resume acking `n` more (clamped).
    Resume(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Push),
        3 => (0usize..6).prop_map(Op::Ack),
        1 => (1u32..4).prop_map(Op::StaleAck),
        1 => (1u32..1000).prop_map(Op::TooHigh),
        2 => Just(Op::Inbound),
        1 => Just(Op::RequestSent),
        2 => (0u64..20).prop_map(Op::Advance),
        1 => Just(Op::Hibernate),
        1 => (0usize..6).prop_map(Op::Resume),
    ]
}

fn start() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), (u32::MAX - 40)..=u32::MAX, any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A model queue mirrors the machine: unacked == pushed - acked, acks and retransmits come
    /// back oldest first, counters agree mod 2^32, invalid h never changes anything.
    #[test]
    fn queue_matches_model(start_out in start(), start_in in start(), ops in prop::collection::vec(op(), 0..200)) {
        let t0 = Instant::now();
        let cfg = SmConfig { max_queue: 30, ..SmConfig::default() };
        let mut sm: StreamManagement<u64> = StreamManagement::with_counters(cfg, true, start_in, start_out);
        let mut now = t0;
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut next_id = 0u64;
        let mut pushed = 0u64;
        let mut acked = 0u64;
        let mut inbound = 0u64;
        let mut last_h = start_out;
        for op in ops {
            match op {
                Op::Push => match sm.push_outbound(next_id, now) {
                    Ok(_) => { model.push_back(next_id); next_id += 1; pushed += 1; }
                    Err(e) => { prop_assert_eq!(e, SmError::QueueFull); prop_assert_eq!(model.len(), 30); }
                },
                Op::Ack(n) => {
                    let n = n.min(model.len());
                    let h = last_h.wrapping_add(n as u32);
                    let got = sm.on_ack(h, now).unwrap();
                    let want: Vec<u64> = model.drain(..n).collect();
                    prop_assert_eq!(got, want);
                    acked += n as u64;
                    last_h = h;
                }
                Op::StaleAck(d) => {
                    prop_assert_eq!(sm.on_ack(last_h.wrapping_sub(d), now).unwrap(), Vec::<u64>::new());
                }
                Op::TooHigh(d) => {
                    let sent = start_out.wrapping_add(pushed as u32);
                    let h = sent.wrapping_add(d);
                    prop_assert_eq!(sm.on_ack(h, now), Err(SmError::HandledCountTooHigh { h, sent }));
                    prop_assert_eq!(sm.resume(h, now), Err(SmError::HandledCountTooHigh { h, sent }));
                }
                Op::Inbound => { sm.on_inbound_stanza(); inbound += 1; }
                Op::RequestSent => sm.request_sent(now),
                Op::Advance(s) => {
                    now += Duration::from_secs(s);
                    for ev in sm.poll(now) {
                        if let SmEvent::AckDelayed(q) = ev {
                            prop_assert_eq!(q, model.iter().copied().collect::<Vec<_>>());
                        }
                    }
                }
                Op::Hibernate => sm.hibernate(now).unwrap(),
                Op::Resume(n) => {
                    let n = n.min(model.len());
                    let h = last_h.wrapping_add(n as u32);
                    let got = sm.resume(h, now).unwrap();
                    model.drain(..n);
                    acked += n as u64;
                    last_h = h;
                    prop_assert_eq!(got, model.iter().copied().collect::<Vec<_>>());
                    prop_assert!(!sm.is_hibernating());
                }
            }
            prop_assert_eq!(sm.unacked_len() as u64, pushed - acked);
            prop_assert_eq!(sm.unacked().copied().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sm.outbound_h(), start_out.wrapping_add(pushed as u32));
            prop_assert_eq!(sm.inbound_h(), start_in.wrapping_add(inbound as u32));
            prop_assert_eq!(sm.outbound_h().wrapping_sub(last_h) as usize, sm.unacked_len());
        }
        prop_assert_eq!(sm.take_unacked(), model.into_iter().collect::<Vec<_>>());
    }

    /// poll is idempotent at a fixed instant, and never reports before next_deadline.
    #[test]
    fn poll_is_idempotent_and_respects_next_deadline(ops in prop::collection::vec(op(), 0..120)) {
        let t0 = Instant::now();
        let cfg = SmConfig { max_queue: 30, ..SmConfig::default() };
        let mut sm: StreamManagement<u64> = StreamManagement::new(cfg);
        sm.enable(true, t0).unwrap();
        let mut now = t0;
        let mut last_h = 0u32;
        let mut expired = false;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push => { let _ = sm.push_outbound(i as u64, now); }
                Op::Ack(n) => {
                    let n = n.min(sm.unacked_len());
                    last_h = last_h.wrapping_add(n as u32);
                    sm.on_ack(last_h, now).unwrap();
                }
                Op::RequestSent => sm.request_sent(now),
                Op::Advance(s) => {
                    let before = sm.next_deadline();
                    now += Duration::from_secs(s * 3);
                    let evs = sm.poll(now);
                    if !evs.is_empty() {
                        prop_assert!(before.is_some_and(|d| d <= now), "event before deadline: {:?}", evs);
                    }
                    if evs.contains(&SmEvent::Expired) {
                        prop_assert!(!expired);
                        expired = true;
                    }
                    prop_assert_eq!(sm.poll(now), vec![]);
                    if sm.is_hibernating() {
                        prop_assert!(evs.iter().all(|e| !matches!(e, SmEvent::RequestAck | SmEvent::AckDelayed(_))));
                    }
                }
                Op::Hibernate => { let _ = sm.hibernate(now); }
                Op::Resume(n) if !expired => {
                    let n = n.min(sm.unacked_len());
                    last_h = last_h.wrapping_add(n as u32);
                    sm.resume(last_h, now).unwrap();
                }
                _ => {}
            }
        }
    }

    /// Whatever the interleaving, the CSI buffer returns every item exactly once, in order, and
    /// never holds more than max_buffer.
    #[test]
    fn csi_preserves_order_and_bound(max in 0usize..8, ops in prop::collection::vec(0u8..10, 0..300)) {
        let mut b = CsiBuffer::new(max);
        let mut out = Vec::new();
        let mut next = 0u32;
        for o in ops {
            match o {
                0 => b.set_inactive(),
                1 => out.extend(b.set_active()),
                2 => out.extend(b.take_held()),
                n => {
                    let important = n == 3;
                    let was_active = b.is_active();
                    let got = b.offer(next, important);
                    if got.is_empty() {
                        prop_assert!(!was_active && !important);
                    } else {
                        prop_assert_eq!(*got.last().unwrap(), next);
                    }
                    out.extend(got);
                    next += 1;
                }
            }
            prop_assert!(b.held_len() <= max);
            if b.is_active() { prop_assert_eq!(b.held_len(), 0); }
        }
        out.extend(b.take_held());
        prop_assert_eq!(out, (0..next).collect::<Vec<_>>());
    }
}
