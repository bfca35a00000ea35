//! XEP-0198 stream management state machine, driven with a fake clock.

use std::time::{Duration, Instant};

use herald_session::sm::{SmConfig, SmError, SmEvent, StreamManagement, Tombstones};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cfg() -> SmConfig {
    SmConfig {
        max_queue: 10,
        max_queue_bytes: 1000,
        request_after: 3,
        request_idle: secs(5),
        max_ack_delay: secs(30),
        hibernation_timeout: secs(600),
    }
}

fn enabled(resume: bool) -> (StreamManagement<u32>, Instant) {
    let t0 = Instant::now();
    let mut sm = StreamManagement::new(cfg());
    sm.enable(resume, t0).unwrap();
    (sm, t0)
}

fn unacked(sm: &StreamManagement<u32>) -> Vec<u32> {
    sm.unacked().copied().collect()
}

// ---------- enable / defaults ----------

#[test]
fn defaults_are_the_documented_ones() {
    let c = SmConfig::default();
    assert_eq!(c.max_queue, 500);
    assert_eq!(c.request_after, 5);
    assert_eq!(c.request_idle, secs(1));
    assert_eq!(c.max_ack_delay, secs(30));
    assert_eq!(c.hibernation_timeout, secs(600));
}

#[test]
fn starts_disabled_and_refuses_everything() {
    let t0 = Instant::now();
    let mut sm: StreamManagement<u32> = StreamManagement::new(cfg());
    assert!(!sm.is_enabled());
    assert!(!sm.is_resumable());
    assert_eq!(sm.push_outbound(1, t0), Err(SmError::NotEnabled));
    assert_eq!(sm.on_ack(0, t0), Err(SmError::NotEnabled));
    assert_eq!(sm.hibernate(t0), Err(SmError::NotEnabled));
    assert_eq!(sm.resume(0, t0), Err(SmError::NotEnabled));
    assert!(sm.poll(t0 + secs(10_000)).is_empty());
    assert_eq!(sm.next_deadline(), None);
}

#[test]
fn enable_resets_counters_and_refuses_twice() {
    let t0 = Instant::now();
    let mut sm: StreamManagement<u32> = StreamManagement::new(cfg());
    // Stanzas handled before <enable/> do not count (XEP-0198 §4: counting starts at enable).
    sm.on_inbound_stanza();
    sm.enable(true, t0).unwrap();
    assert!(sm.is_enabled());
    assert!(sm.is_resumable());
    assert_eq!(sm.inbound_h(), 0);
    assert_eq!(sm.outbound_h(), 0);
    assert_eq!(sm.enable(true, t0), Err(SmError::AlreadyEnabled));
}

#[test]
fn enabled_without_resume_is_not_resumable() {
    let (mut sm, t0) = enabled(false);
    assert!(sm.is_enabled());
    assert!(!sm.is_resumable());
    assert_eq!(sm.hibernate(t0), Err(SmError::NotEnabled));
    assert!(!sm.is_hibernating());
    assert_eq!(sm.resume(0, t0), Err(SmError::NotEnabled));
}

#[test]
fn inbound_counter_counts_and_wraps() {
    let mut sm: StreamManagement<u32> =
        StreamManagement::with_counters(cfg(), true, u32::MAX - 1, 0);
    sm.on_inbound_stanza();
    assert_eq!(sm.inbound_h(), u32::MAX);
    sm.on_inbound_stanza();
    assert_eq!(sm.inbound_h(), 0);
    sm.on_inbound_stanza();
    assert_eq!(sm.inbound_h(), 1);
}

// ---------- queue and acks ----------

#[test]
fn ack_drops_acknowledged_oldest_first() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=4 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert_eq!(sm.outbound_h(), 4);
    assert_eq!(sm.unacked_len(), 4);
    assert_eq!(sm.on_ack(2, t0).unwrap(), vec![1, 2]);
    assert_eq!(unacked(&sm), vec![3, 4]);
    assert_eq!(sm.on_ack(4, t0).unwrap(), vec![3, 4]);
    assert_eq!(sm.unacked_len(), 0);
    assert_eq!(sm.outbound_h(), 4);
}

#[test]
fn ack_repeating_last_h_acknowledges_nothing_new() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert_eq!(sm.on_ack(2, t0).unwrap(), vec![1, 2]);
    assert_eq!(sm.on_ack(2, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(unacked(&sm), vec![3]);
    // h = 0 on a fresh stream is also "nothing new", not an error.
    let (mut fresh, t0) = enabled(true);
    fresh.push_outbound(9, t0).unwrap();
    assert_eq!(fresh.on_ack(0, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(fresh.unacked_len(), 1);
}

#[test]
fn stale_ack_below_last_is_ignored_not_an_error() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=4 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.on_ack(3, t0).unwrap();
    assert_eq!(sm.on_ack(1, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(unacked(&sm), vec![4]);
    // A later correct ack still works.
    assert_eq!(sm.on_ack(4, t0).unwrap(), vec![4]);
}

#[test]
fn ack_higher_than_sent_is_handled_count_too_high_and_changes_nothing() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=2 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert_eq!(
        sm.on_ack(3, t0),
        Err(SmError::HandledCountTooHigh { h: 3, sent: 2 })
    );
    assert_eq!(unacked(&sm), vec![1, 2]);
    assert_eq!(sm.on_ack(2, t0).unwrap(), vec![1, 2]);
    // With nothing unacked any h above the count is too high.
    assert_eq!(
        sm.on_ack(100, t0),
        Err(SmError::HandledCountTooHigh { h: 100, sent: 2 })
    );
}

#[test]
fn acks_across_the_wrap_boundary() {
    let t0 = Instant::now();
    let mut sm: StreamManagement<u32> =
        StreamManagement::with_counters(cfg(), true, 0, u32::MAX - 2);
    for i in 1..=6 {
        sm.push_outbound(i, t0).unwrap();
    }
    // Sent counts: MAX-1, MAX, 0, 1, 2, 3 (XEP-0198 §4: h wraps to 0 after 2^32 - 1).
    assert_eq!(sm.outbound_h(), 3);
    assert_eq!(sm.on_ack(u32::MAX, t0).unwrap(), vec![1, 2]);
    assert_eq!(sm.on_ack(1, t0).unwrap(), vec![3, 4]);
    // Stale h from before the wrap.
    assert_eq!(sm.on_ack(u32::MAX - 1, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(sm.on_ack(1, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(
        sm.on_ack(4, t0),
        Err(SmError::HandledCountTooHigh { h: 4, sent: 3 })
    );
    assert_eq!(sm.on_ack(3, t0).unwrap(), vec![5, 6]);
    assert_eq!(sm.unacked_len(), 0);
}

#[test]
fn single_ack_spanning_the_wrap() {
    let t0 = Instant::now();
    let mut sm: StreamManagement<u32> =
        StreamManagement::with_counters(cfg(), true, 0, u32::MAX - 1);
    for i in 1..=4 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert_eq!(sm.outbound_h(), 2);
    assert_eq!(sm.on_ack(2, t0).unwrap(), vec![1, 2, 3, 4]);
}

#[test]
fn queue_overflow_is_queue_full_and_keeps_the_queue() {
    let (mut sm, t0) = enabled(true);
    for i in 0..10 {
        assert!(!sm.is_full());
        sm.push_outbound(i, t0).unwrap();
    }
    assert!(sm.is_full());
    assert_eq!(sm.push_outbound(10, t0), Err(SmError::QueueFull));
    assert_eq!(sm.unacked_len(), 10);
    assert_eq!(sm.outbound_h(), 10, "a refused stanza is not counted");
    sm.on_ack(1, t0).unwrap();
    assert!(!sm.is_full());
    assert!(sm.push_outbound(10, t0).is_ok());
    assert_eq!(sm.push_outbound(11, t0), Err(SmError::QueueFull));
}

#[test]
fn the_byte_bound_refuses_what_would_pass_it_and_acks_make_room() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound_sized(1, 600, t0).unwrap();
    sm.push_outbound_sized(2, 400, t0).unwrap();
    assert_eq!(sm.unacked_bytes(), 1000);
    // Far below max_queue (10) in count, but one byte over.
    assert!(sm.is_full_for(1));
    assert!(!sm.is_full());
    assert_eq!(sm.push_outbound_sized(3, 1, t0), Err(SmError::QueueFull));
    assert_eq!(sm.unacked_len(), 2, "a refused stanza is not queued");
    sm.on_ack(1, t0).unwrap();
    assert_eq!(sm.unacked_bytes(), 400);
    assert!(!sm.is_full_for(600));
    sm.push_outbound_sized(3, 600, t0).unwrap();
    // Expiry or session end takes everything, and the bytes with it.
    assert_eq!(sm.take_unacked(), vec![2, 3]);
    assert_eq!(sm.unacked_bytes(), 0);
}

#[test]
fn an_empty_queue_takes_one_stanza_of_any_size() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound_sized(1, 5000, t0).unwrap();
    assert_eq!(sm.push_outbound_sized(2, 1, t0), Err(SmError::QueueFull));
    let (acked, retransmit) = sm.resume_acked(1, t0).unwrap();
    assert_eq!((acked, retransmit), (vec![1], vec![]));
    assert_eq!(sm.unacked_bytes(), 0);
}

#[test]
fn a_restored_queue_keeps_its_sizes() {
    let t0 = Instant::now();
    let mut sm = StreamManagement::restore_hibernating_sized(
        cfg(),
        0,
        2,
        vec![(1u32, 300), (2, 500)],
        t0 + secs(60),
        t0,
    );
    assert_eq!(sm.unacked_bytes(), 800);
    assert_eq!(sm.resume(1, t0).unwrap(), vec![2]);
    assert_eq!(sm.unacked_bytes(), 500);
}

#[test]
fn zero_max_queue_refuses_every_stanza() {
    let t0 = Instant::now();
    let mut sm = StreamManagement::new(SmConfig {
        max_queue: 0,
        ..cfg()
    });
    sm.enable(false, t0).unwrap();
    assert_eq!(sm.push_outbound(1u32, t0), Err(SmError::QueueFull));
}

#[test]
fn unacked_with_time_reports_queueing_instants() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.push_outbound(2, t0 + secs(2)).unwrap();
    let v: Vec<(u32, Instant)> = sm.unacked_with_time().map(|(t, at)| (*t, at)).collect();
    assert_eq!(v, vec![(1, t0), (2, t0 + secs(2))]);
}

// ---------- requesting acks ----------

#[test]
fn request_after_threshold_asks_for_r() {
    let (mut sm, t0) = enabled(true);
    assert_eq!(sm.push_outbound(1, t0), Ok(false));
    assert_eq!(sm.push_outbound(2, t0), Ok(false));
    assert_eq!(sm.push_outbound(3, t0), Ok(true));
    sm.request_sent(t0);
    // Outstanding <r/>: no second request however many are queued.
    for i in 4..=9 {
        assert_eq!(sm.push_outbound(i, t0), Ok(false));
    }
    assert!(!sm.poll(t0 + secs(29)).contains(&SmEvent::RequestAck));
}

#[test]
fn request_after_counts_only_stanzas_since_the_last_r() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0);
    sm.on_ack(3, t0).unwrap();
    assert_eq!(sm.push_outbound(4, t0), Ok(false));
    assert_eq!(sm.push_outbound(5, t0), Ok(false));
    assert_eq!(sm.push_outbound(6, t0), Ok(true));
}

#[test]
fn request_idle_asks_for_r_exactly_at_the_deadline() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.push_outbound(2, t0 + secs(2)).unwrap();
    // Measured from the oldest unrequested stanza.
    assert_eq!(sm.next_deadline(), Some(t0 + secs(5)));
    assert!(sm.poll(t0 + secs(4)).is_empty());
    assert_eq!(sm.poll(t0 + secs(5)), vec![SmEvent::RequestAck]);
    // Idempotent: reported once until request_sent.
    assert!(sm.poll(t0 + secs(5)).is_empty());
    assert!(sm.poll(t0 + secs(6)).is_empty());
    sm.request_sent(t0 + secs(6));
    assert_eq!(sm.next_deadline(), Some(t0 + secs(36)));
    assert!(sm.poll(t0 + secs(20)).is_empty());
}

#[test]
fn no_timer_when_nothing_is_unacked() {
    let (mut sm, t0) = enabled(true);
    assert_eq!(sm.next_deadline(), None);
    assert!(sm.poll(t0 + secs(1000)).is_empty());
    sm.push_outbound(1, t0).unwrap();
    sm.on_ack(1, t0 + secs(1)).unwrap();
    assert_eq!(sm.next_deadline(), None);
    assert!(sm.poll(t0 + secs(1000)).is_empty());
}

#[test]
fn push_true_suppresses_a_duplicate_request_from_poll() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    // The owner was told by push_outbound; poll must not tell it again.
    assert!(sm.poll(t0 + secs(10)).is_empty());
    sm.request_sent(t0 + secs(10));
    assert_eq!(sm.next_deadline(), Some(t0 + secs(40)));
}

#[test]
fn ack_answering_the_request_restarts_the_idle_clock_for_newer_stanzas() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    assert_eq!(sm.poll(t0 + secs(5)), vec![SmEvent::RequestAck]);
    sm.request_sent(t0 + secs(5));
    sm.push_outbound(2, t0 + secs(6)).unwrap();
    // While the <r/> is outstanding only the ack-delay timer runs.
    assert_eq!(sm.next_deadline(), Some(t0 + secs(35)));
    assert!(sm.poll(t0 + secs(11)).is_empty());
    // The answer covers stanza 1 only; stanza 2 was queued after the <r/>.
    assert_eq!(sm.on_ack(1, t0 + secs(12)).unwrap(), vec![1]);
    assert!(!sm.ack_overdue());
    // Stanza 2 has waited since t0+6 without a request: due at t0+11, i.e. now.
    assert_eq!(sm.next_deadline(), Some(t0 + secs(11)));
    assert_eq!(sm.poll(t0 + secs(12)), vec![SmEvent::RequestAck]);
}

#[test]
fn partial_unsolicited_ack_keeps_the_request_outstanding() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0);
    // The client acks 1 before it read our <r/>: the <r/> still waits for h=3.
    sm.on_ack(1, t0 + secs(1)).unwrap();
    assert_eq!(sm.next_deadline(), Some(t0 + secs(30)));
    assert_eq!(
        sm.poll(t0 + secs(30)),
        vec![SmEvent::AckDelayed(vec![2, 3])]
    );
}

#[test]
fn request_ack_while_attached_with_empty_queue_is_answered_by_equal_h() {
    let (mut sm, t0) = enabled(true);
    sm.request_sent(t0);
    assert_eq!(sm.next_deadline(), Some(t0 + secs(30)));
    sm.on_ack(0, t0 + secs(1)).unwrap();
    assert_eq!(sm.next_deadline(), None);
    assert!(sm.poll(t0 + secs(100)).is_empty());
}

// ---------- ack delay ----------

#[test]
fn ack_delayed_fires_once_with_the_queue_then_clears_on_ack() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0 + secs(1));
    assert!(sm.poll(t0 + secs(30)).is_empty());
    assert!(!sm.ack_overdue());
    assert_eq!(sm.next_deadline(), Some(t0 + secs(31)));
    assert_eq!(
        sm.poll(t0 + secs(31)),
        vec![SmEvent::AckDelayed(vec![1, 2, 3])]
    );
    assert!(sm.ack_overdue());
    // Exactly once per request.
    assert!(sm.poll(t0 + secs(31)).is_empty());
    assert!(sm.poll(t0 + secs(500)).is_empty());
    assert!(sm.ack_overdue());
    // The queue is a snapshot: still unacked.
    assert_eq!(sm.unacked_len(), 3);
    sm.on_ack(3, t0 + secs(600)).unwrap();
    assert!(!sm.ack_overdue());
    assert_eq!(sm.next_deadline(), None);
}

#[test]
fn ack_delayed_can_fire_again_for_a_later_request() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0);
    assert_eq!(
        sm.poll(t0 + secs(30)),
        vec![SmEvent::AckDelayed(vec![1, 2, 3])]
    );
    sm.on_ack(3, t0 + secs(31)).unwrap();
    for i in 4..=6 {
        sm.push_outbound(i, t0 + secs(40)).unwrap();
    }
    sm.request_sent(t0 + secs(40));
    assert!(sm.poll(t0 + secs(69)).is_empty());
    assert_eq!(
        sm.poll(t0 + secs(70)),
        vec![SmEvent::AckDelayed(vec![4, 5, 6])]
    );
}

#[test]
fn after_ack_delayed_a_new_request_may_be_sent_and_reported() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.request_sent(t0);
    // Stanza 2 arrives while the <r/> is outstanding: no request for it yet.
    sm.push_outbound(2, t0 + secs(1)).unwrap();
    assert_eq!(
        sm.poll(t0 + secs(30)),
        vec![SmEvent::AckDelayed(vec![1, 2]), SmEvent::RequestAck],
        "once reported, the request no longer blocks; stanza 2 waited 29s unrequested"
    );
    sm.request_sent(t0 + secs(30));
    assert!(sm.ack_overdue());
    assert_eq!(sm.next_deadline(), Some(t0 + secs(60)));
    assert_eq!(
        sm.poll(t0 + secs(60)),
        vec![SmEvent::AckDelayed(vec![1, 2])]
    );
    // Answering the first request is not enough: the second is overdue too.
    sm.on_ack(1, t0 + secs(61)).unwrap();
    assert!(sm.ack_overdue());
    sm.on_ack(2, t0 + secs(62)).unwrap();
    assert!(!sm.ack_overdue());
    assert_eq!(sm.next_deadline(), None);
}

#[test]
fn partial_ack_below_the_overdue_request_keeps_it_overdue() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0);
    sm.poll(t0 + secs(30));
    assert!(sm.ack_overdue());
    sm.on_ack(2, t0 + secs(31)).unwrap();
    assert!(sm.ack_overdue());
    sm.on_ack(3, t0 + secs(32)).unwrap();
    assert!(!sm.ack_overdue());
}

#[test]
fn repeated_request_sent_keeps_the_ack_delay_clock_of_the_first() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.request_sent(t0);
    sm.push_outbound(2, t0 + secs(10)).unwrap();
    sm.request_sent(t0 + secs(10));
    assert_eq!(sm.next_deadline(), Some(t0 + secs(30)));
    // Acking only what the first <r/> covered leaves the second outstanding.
    sm.on_ack(1, t0 + secs(11)).unwrap();
    assert_eq!(sm.poll(t0 + secs(30)), vec![SmEvent::AckDelayed(vec![2])]);
}

// ---------- hibernation ----------

#[test]
fn hibernation_suppresses_requests_and_ack_delay_but_keeps_queueing() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.request_sent(t0);
    sm.hibernate(t0 + secs(1)).unwrap();
    assert!(sm.is_hibernating());
    assert_eq!(sm.hibernation_deadline(), Some(t0 + secs(601)));
    assert_eq!(sm.next_deadline(), Some(t0 + secs(601)));
    for i in 2..=6 {
        assert_eq!(sm.push_outbound(i, t0 + secs(2)), Ok(false));
    }
    assert_eq!(unacked(&sm), vec![1, 2, 3, 4, 5, 6]);
    // Neither the ack delay of the <r/> sent before nor the idle request fire.
    assert!(sm.poll(t0 + secs(100)).is_empty());
    assert!(sm.poll(t0 + secs(600)).is_empty());
}

#[test]
fn hibernation_still_respects_max_queue() {
    let (mut sm, t0) = enabled(true);
    sm.hibernate(t0).unwrap();
    for i in 0..10 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert_eq!(sm.push_outbound(10, t0), Err(SmError::QueueFull));
}

#[test]
fn expired_exactly_at_the_deadline_and_once() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.hibernate(t0).unwrap();
    assert!(sm.poll(t0 + secs(599)).is_empty());
    assert!(sm.poll(t0 + secs(600) - Duration::from_nanos(1)).is_empty());
    assert_eq!(sm.poll(t0 + secs(600)), vec![SmEvent::Expired]);
    assert!(sm.poll(t0 + secs(600)).is_empty());
    assert!(sm.poll(t0 + secs(9999)).is_empty());
    assert!(!sm.is_hibernating());
    assert_eq!(sm.next_deadline(), None);
    assert_eq!(sm.resume(0, t0 + secs(601)), Err(SmError::Expired));
    assert_eq!(sm.hibernate(t0 + secs(601)), Err(SmError::Expired));
    // Stanzas arriving while the owner tears down still queue and are taken with the rest.
    sm.push_outbound(2, t0 + secs(601)).unwrap();
    assert_eq!(sm.take_unacked(), vec![1, 2]);
    assert_eq!(sm.unacked_len(), 0);
}

#[test]
fn set_hibernation_deadline_moves_both_ways() {
    let (mut sm, t0) = enabled(true);
    sm.hibernate(t0).unwrap();
    // Extended hibernation (push enabled): later.
    sm.set_hibernation_deadline(t0 + secs(3600));
    assert_eq!(sm.hibernation_deadline(), Some(t0 + secs(3600)));
    assert_eq!(sm.next_deadline(), Some(t0 + secs(3600)));
    assert!(sm.poll(t0 + secs(600)).is_empty());
    // Shortened: earlier than the configured timeout.
    sm.set_hibernation_deadline(t0 + secs(60));
    assert!(sm.poll(t0 + secs(59)).is_empty());
    assert_eq!(sm.poll(t0 + secs(60)), vec![SmEvent::Expired]);
}

#[test]
fn set_hibernation_deadline_outside_hibernation_is_ignored() {
    let (mut sm, t0) = enabled(true);
    sm.set_hibernation_deadline(t0 + secs(1));
    assert_eq!(sm.hibernation_deadline(), None);
    assert!(!sm.is_hibernating());
    assert_eq!(
        sm.try_set_hibernation_deadline(t0 + secs(1)),
        Err(SmError::NotHibernating)
    );
    assert!(sm.poll(t0 + secs(10)).is_empty());
}

#[test]
fn hibernate_twice_keeps_the_first_deadline() {
    let (mut sm, t0) = enabled(true);
    sm.hibernate(t0).unwrap();
    sm.hibernate(t0 + secs(100)).unwrap();
    assert_eq!(sm.hibernation_deadline(), Some(t0 + secs(600)));
}

#[test]
fn resume_retransmits_exactly_the_unacked_once_oldest_first() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.on_ack(1, t0).unwrap();
    sm.hibernate(t0 + secs(1)).unwrap();
    sm.push_outbound(4, t0 + secs(2)).unwrap();
    sm.push_outbound(5, t0 + secs(3)).unwrap();
    // The client had handled 2 before the transport died.
    assert_eq!(sm.resume(2, t0 + secs(10)).unwrap(), vec![3, 4, 5]);
    assert!(!sm.is_hibernating());
    assert_eq!(sm.hibernation_deadline(), None);
    // They stay queued (unacked) but are not counted twice.
    assert_eq!(sm.outbound_h(), 5);
    assert_eq!(unacked(&sm), vec![3, 4, 5]);
    // Retransmitted stanzas are unrequested: the next poll asks for <r/> at once.
    assert_eq!(sm.poll(t0 + secs(10)), vec![SmEvent::RequestAck]);
    sm.request_sent(t0 + secs(10));
    assert_eq!(sm.on_ack(5, t0 + secs(11)).unwrap(), vec![3, 4, 5]);
    // The new transport can hibernate again.
    sm.hibernate(t0 + secs(20)).unwrap();
    assert_eq!(sm.hibernation_deadline(), Some(t0 + secs(620)));
}

#[test]
fn resume_acked_also_returns_what_h_acknowledged() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=4 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.on_ack(1, t0).unwrap();
    sm.hibernate(t0).unwrap();
    let (acked, again) = sm.resume_acked(3, t0 + secs(1)).unwrap();
    assert_eq!(acked, vec![2, 3]);
    assert_eq!(again, vec![4]);
    // A stale h acknowledges nothing.
    sm.hibernate(t0 + secs(2)).unwrap();
    let (acked, again) = sm.resume_acked(1, t0 + secs(3)).unwrap();
    assert!(acked.is_empty());
    assert_eq!(again, vec![4]);
}

#[test]
fn a_restored_session_resumes_with_its_counters_and_queue() {
    let t0 = Instant::now();
    let mut sm =
        StreamManagement::restore_hibernating(cfg(), 7, 12, vec![10u32, 11, 12], t0 + secs(60), t0);
    assert!(sm.is_hibernating());
    assert!(sm.is_resumable());
    assert_eq!(sm.inbound_h(), 7);
    assert_eq!(sm.outbound_h(), 12);
    assert_eq!(sm.hibernation_deadline(), Some(t0 + secs(60)));
    // h above what was sent is still refused; below the queue is stale.
    assert!(matches!(
        sm.resume(13, t0),
        Err(SmError::HandledCountTooHigh { h: 13, sent: 12 })
    ));
    let (acked, again) = sm.resume_acked(10, t0 + secs(1)).unwrap();
    assert_eq!(acked, vec![10]);
    assert_eq!(again, vec![11, 12]);
    assert_eq!(sm.on_ack(12, t0 + secs(2)).unwrap(), vec![11, 12]);
    // Across the wrap too.
    let mut sm = StreamManagement::restore_hibernating(cfg(), 0, 1, vec![1u32, 2], t0, t0);
    assert_eq!(unacked(&sm), vec![1, 2]);
    assert_eq!(sm.poll(t0 + secs(1)), vec![SmEvent::Expired]);
}

#[test]
fn resume_acking_everything_returns_nothing() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.hibernate(t0).unwrap();
    assert_eq!(sm.resume(3, t0 + secs(1)).unwrap(), Vec::<u32>::new());
    assert_eq!(sm.unacked_len(), 0);
    assert!(sm.poll(t0 + secs(100)).is_empty());
    assert_eq!(sm.next_deadline(), None);
}

#[test]
fn resume_with_too_high_h_fails_and_stays_hibernating() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.hibernate(t0).unwrap();
    assert_eq!(
        sm.resume(2, t0 + secs(1)),
        Err(SmError::HandledCountTooHigh { h: 2, sent: 1 })
    );
    assert!(sm.is_hibernating());
    assert_eq!(unacked(&sm), vec![1]);
    assert_eq!(sm.resume(1, t0 + secs(2)).unwrap(), Vec::<u32>::new());
}

#[test]
fn resume_with_stale_h_retransmits_the_whole_queue() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.on_ack(2, t0).unwrap();
    sm.hibernate(t0).unwrap();
    assert_eq!(sm.resume(1, t0 + secs(1)).unwrap(), vec![3]);
}

#[test]
fn resume_across_the_wrap() {
    let t0 = Instant::now();
    let mut sm: StreamManagement<u32> =
        StreamManagement::with_counters(cfg(), true, 7, u32::MAX - 1);
    for i in 1..=4 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.hibernate(t0).unwrap();
    assert_eq!(sm.resume(0, t0 + secs(1)).unwrap(), vec![3, 4]);
    assert_eq!(sm.inbound_h(), 7);
    assert_eq!(
        sm.resume(3, t0 + secs(1)),
        Err(SmError::HandledCountTooHigh { h: 3, sent: 2 })
    );
}

#[test]
fn resume_of_an_attached_session_replaces_the_transport() {
    // The old connection has not noticed it died when the client resumes elsewhere.
    let (mut sm, t0) = enabled(true);
    for i in 1..=2 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.request_sent(t0);
    assert_eq!(sm.resume(1, t0 + secs(1)).unwrap(), vec![2]);
    // The old <r/> is moot: no ack-delay report for it.
    assert_eq!(sm.poll(t0 + secs(1)), vec![SmEvent::RequestAck]);
    assert!(!sm
        .poll(t0 + secs(100))
        .iter()
        .any(|e| matches!(e, SmEvent::AckDelayed(_))));
}

#[test]
fn second_resume_replays_the_still_unacked_again() {
    // A resume whose transport died before anything was acked: the next resume sends them again.
    let (mut sm, t0) = enabled(true);
    for i in 1..=2 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.hibernate(t0).unwrap();
    assert_eq!(sm.resume(0, t0 + secs(1)).unwrap(), vec![1, 2]);
    sm.hibernate(t0 + secs(2)).unwrap();
    assert_eq!(sm.resume(1, t0 + secs(3)).unwrap(), vec![2]);
}

#[test]
fn resume_clears_overdue() {
    let (mut sm, t0) = enabled(true);
    sm.push_outbound(1, t0).unwrap();
    sm.request_sent(t0);
    sm.poll(t0 + secs(30));
    assert!(sm.ack_overdue());
    sm.hibernate(t0 + secs(31)).unwrap();
    sm.resume(0, t0 + secs(32)).unwrap();
    assert!(!sm.ack_overdue());
}

#[test]
fn take_unacked_empties_and_later_acks_cannot_reach_taken_items() {
    let (mut sm, t0) = enabled(true);
    for i in 1..=3 {
        sm.push_outbound(i, t0).unwrap();
    }
    sm.on_ack(1, t0).unwrap();
    assert_eq!(sm.take_unacked(), vec![2, 3]);
    assert_eq!(sm.unacked_len(), 0);
    assert_eq!(sm.on_ack(3, t0).unwrap(), Vec::<u32>::new());
    assert_eq!(sm.on_ack(2, t0).unwrap(), Vec::<u32>::new());
    assert!(sm.take_unacked().is_empty());
    assert_eq!(sm.next_deadline(), None);
}

#[test]
fn huge_configured_durations_do_not_panic() {
    let t0 = Instant::now();
    let mut sm = StreamManagement::new(SmConfig {
        request_idle: Duration::MAX,
        max_ack_delay: Duration::MAX,
        hibernation_timeout: Duration::MAX,
        ..cfg()
    });
    sm.enable(true, t0).unwrap();
    sm.push_outbound(1u32, t0).unwrap();
    assert!(sm.next_deadline().unwrap() > t0 + secs(1_000_000));
    sm.request_sent(t0);
    assert!(sm.poll(t0 + secs(1_000_000)).is_empty());
    sm.hibernate(t0).unwrap();
    assert!(sm.poll(t0 + secs(1_000_000)).is_empty());
}

// ---------- tombstones ----------

#[test]
fn tombstone_take_returns_h_once() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(10, secs(3600));
    ts.insert("a".into(), 42, t0);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts.take("b", t0), None);
    assert_eq!(ts.take("a", t0 + secs(1)), Some(42));
    assert_eq!(ts.take("a", t0 + secs(1)), None);
    assert!(ts.is_empty());
}

#[test]
fn tombstones_evict_the_oldest_beyond_max_entries() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(2, secs(3600));
    ts.insert("a".into(), 1, t0);
    ts.insert("b".into(), 2, t0 + secs(1));
    ts.insert("c".into(), 3, t0 + secs(2));
    assert_eq!(ts.len(), 2);
    assert_eq!(ts.take("a", t0 + secs(3)), None);
    assert_eq!(ts.take("b", t0 + secs(3)), Some(2));
    assert_eq!(ts.take("c", t0 + secs(3)), Some(3));
}

#[test]
fn tombstones_expire_after_ttl() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(10, secs(60));
    ts.insert("a".into(), 1, t0);
    ts.insert("b".into(), 2, t0 + secs(30));
    assert_eq!(ts.take("a", t0 + secs(59)), Some(1));
    ts.insert("a".into(), 1, t0);
    assert_eq!(ts.take("a", t0 + secs(60)), None, "older than ttl");
    assert_eq!(ts.len(), 1);
    ts.prune(t0 + secs(90));
    assert_eq!(ts.len(), 0);
}

#[test]
fn tombstone_reinsert_replaces_and_refreshes() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(2, secs(3600));
    ts.insert("a".into(), 1, t0);
    ts.insert("b".into(), 2, t0 + secs(1));
    ts.insert("a".into(), 5, t0 + secs(2));
    assert_eq!(ts.len(), 2);
    // "b" is now the oldest and goes first.
    ts.insert("c".into(), 3, t0 + secs(3));
    assert_eq!(ts.take("b", t0 + secs(4)), None);
    assert_eq!(ts.take("a", t0 + secs(4)), Some(5));
    assert_eq!(ts.take("c", t0 + secs(4)), Some(3));
}

#[test]
fn tombstones_forget_what_matches_and_keep_order_for_the_rest() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(2, secs(3600));
    ts.insert("gone a".into(), 1, t0);
    ts.insert("kept b".into(), 2, t0 + secs(1));
    ts.forget_where(|id| id.starts_with("gone "));
    assert_eq!(ts.len(), 1);
    assert_eq!(ts.take("gone a", t0 + secs(2)), None);
    // The forgotten entry no longer counts against the bound: "kept b" stays the oldest.
    ts.insert("kept c".into(), 3, t0 + secs(2));
    ts.insert("kept d".into(), 4, t0 + secs(3));
    assert_eq!(ts.take("kept b", t0 + secs(4)), None);
    assert_eq!(ts.take("kept c", t0 + secs(4)), Some(3));
    assert_eq!(ts.take("kept d", t0 + secs(4)), Some(4));
}

#[test]
fn tombstones_with_zero_capacity_keep_nothing() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(0, secs(3600));
    ts.insert("a".into(), 1, t0);
    assert_eq!(ts.len(), 0);
    assert_eq!(ts.take("a", t0), None);
}

#[test]
fn tombstones_stay_bounded_under_churn() {
    let t0 = Instant::now();
    let mut ts = Tombstones::new(3, secs(3600));
    for i in 0..1000u32 {
        let id = format!("id{}", i % 5);
        ts.insert(id.clone(), i, t0 + Duration::from_millis(u64::from(i)));
        if i % 7 == 0 {
            ts.take(&id, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(ts.len() <= 3);
    }
    // The three most recent inserts survive (999 % 7 != 0).
    let now = t0 + secs(2);
    assert_eq!(ts.take("id4", now), Some(999));
    assert_eq!(ts.take("id3", now), Some(998));
    assert_eq!(ts.take("id2", now), Some(997));
}

#[test]
fn a_fully_acked_queue_gives_its_memory_back() {
    let (mut sm, t0) = enabled(true);
    for i in 0..8 {
        sm.push_outbound(i, t0).unwrap();
    }
    assert!(sm.queue_capacity() >= 8);
    sm.on_ack(5, t0).unwrap();
    assert_eq!(unacked(&sm), vec![5, 6, 7]);
    assert!(
        sm.queue_capacity() >= 3,
        "a partly acked queue keeps its stanzas"
    );
    sm.on_ack(8, t0).unwrap();
    assert_eq!(sm.unacked_len(), 0);
    assert_eq!(sm.queue_capacity(), 0);
    // and it still works afterwards
    sm.push_outbound(8, t0).unwrap();
    assert_eq!(unacked(&sm), vec![8]);
}
