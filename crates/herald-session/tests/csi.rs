//! XEP-0352 CSI buffer hold/flush rules.

use herald_session::csi::CsiBuffer;

#[test]
fn starts_active_and_passes_straight_through() {
    let mut b = CsiBuffer::new(256);
    assert!(b.is_active());
    assert_eq!(b.offer(1, false), vec![1]);
    assert_eq!(b.offer(2, true), vec![2]);
    assert_eq!(b.held_len(), 0);
}

#[test]
fn inactive_holds_unimportant() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    assert!(!b.is_active());
    assert!(b.offer(1, false).is_empty());
    assert!(b.offer(2, false).is_empty());
    assert_eq!(b.held_len(), 2);
}

#[test]
fn important_flushes_held_in_order_then_itself() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.offer(3, true), vec![1, 2, 3]);
    assert_eq!(b.held_len(), 0);
    assert!(
        !b.is_active(),
        "an important stanza does not make the client active"
    );
    assert!(b.offer(4, false).is_empty());
    assert_eq!(b.offer(5, true), vec![4, 5]);
    // Important with nothing held is just itself.
    assert_eq!(b.offer(6, true), vec![6]);
}

#[test]
fn set_active_flushes_in_order() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.set_active(), vec![1, 2]);
    assert!(b.is_active());
    assert_eq!(b.held_len(), 0);
    assert_eq!(b.offer(3, false), vec![3]);
    // Active again with nothing held.
    assert!(b.set_active().is_empty());
}

#[test]
fn full_buffer_flushes_everything_plus_the_new_one() {
    let mut b = CsiBuffer::new(3);
    b.set_inactive();
    for i in 1..=3 {
        assert!(b.offer(i, false).is_empty());
    }
    assert_eq!(b.held_len(), 3);
    assert_eq!(b.offer(4, false), vec![1, 2, 3, 4]);
    assert_eq!(b.held_len(), 0);
    // It keeps holding afterwards.
    assert!(b.offer(5, false).is_empty());
    assert_eq!(b.held_len(), 1);
}

#[test]
fn zero_sized_buffer_never_holds() {
    let mut b = CsiBuffer::new(0);
    b.set_inactive();
    assert_eq!(b.offer(1, false), vec![1]);
    assert_eq!(b.held_len(), 0);
}

#[test]
fn take_held_empties_and_keeps_state() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.offer(2, false);
    assert_eq!(b.take_held(), vec![1, 2]);
    assert_eq!(b.held_len(), 0);
    assert!(!b.is_active());
    assert!(b.take_held().is_empty());
    assert!(b.offer(3, false).is_empty());
}

#[test]
fn set_inactive_twice_keeps_held() {
    let mut b = CsiBuffer::new(256);
    b.set_inactive();
    b.offer(1, false);
    b.set_inactive();
    assert_eq!(b.held_len(), 1);
    assert_eq!(b.set_active(), vec![1]);
}

#[test]
fn every_offered_item_comes_back_once_in_order() {
    // A deterministic mixed sequence: nothing is lost, duplicated or reordered.
    let mut b = CsiBuffer::new(4);
    let mut out = Vec::new();
    for i in 0..200u32 {
        match i % 17 {
            0 => b.set_inactive(),
            9 => out.extend(b.set_active()),
            13 => out.extend(b.take_held()),
            _ => {}
        }
        out.extend(b.offer(i, i % 11 == 0));
    }
    out.extend(b.take_held());
    assert_eq!(out, (0..200).collect::<Vec<_>>());
}
