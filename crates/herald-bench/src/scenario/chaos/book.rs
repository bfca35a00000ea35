//! The chaos scenario's bookkeeping, free of I/O so it can be tested on its own: which
//! messages a sender's stream had acknowledged (XEP-0198 `h`), what each pair's recipient got,
//! and the final classification of every acknowledged message (received, in the archive only,
//! bounced, lost).
//! It must never count a message as acknowledged unless an `h` covered its place in the stream.

use std::collections::{BTreeMap, VecDeque};

/// Message ids are `chaos-{pair}-{n}`; n counts the pair's messages from 0 over the whole run.
pub fn message_id(pair: u64, n: u64) -> String {
    format!("chaos-{pair}-{n}")
}

/// Parses `chaos-{pair}-{n}`.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let rest = id.strip_prefix("chaos-")?;
    let (pair, n) = rest.split_once('-')?;
    Some((pair.parse().ok()?, n.parse().ok()?))
}

/// A message body: its id, then the run's tag, so leftovers of an earlier run on the same
/// data directory (offline storage, archive) are never taken for this run's messages.
pub fn body(pair: u64, n: u64, tag: &str) -> String {
    format!("{} {tag}", message_id(pair, n))
}

/// Parses a body written by [`body`] with this run's `tag`.
pub fn parse_body(text: &str, tag: &str) -> Option<(u64, u64)> {
    let (id, t) = text.trim().split_once(' ')?;
    if t != tag {
        return None;
    }
    parse_id(id)
}

/// An `h` that acknowledges more stanzas than were sent on the stream (XEP-0198 §4
/// handled-count-too-high); the acknowledgement is ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct AckTooHigh {
    /// The server's `h`.
    pub h: u32,
    /// Stanzas sent on the stream.
    pub sent: u64,
}

/// The outbound side of one XEP-0198 stream: the server's `h` counts the stanzas we sent since
/// `<enable/>` in order (modulo 2^32), so message k is acknowledged once `h` reaches its place
/// in the stream. A resumed session keeps its counter.
#[derive(Debug, Default)]
pub struct StreamAcks {
    /// Stanzas sent since enable.
    sent: u64,
    /// Stanzas acknowledged so far.
    acked: u64,
    /// (place in the stream, message number) of messages not yet acknowledged, in order.
    pending: VecDeque<(u64, u64)>,
}

impl StreamAcks {
    /// A stream just enabled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Message `n` went out.
    pub fn sent_message(&mut self, n: u64) {
        self.sent += 1;
        self.pending.push_back((self.sent, n));
    }

    /// Messages sent and not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// Applies the server's `h` (`<a h/>`, `<resumed h/>`, `<failed h/>`); returns the
    /// messages it newly acknowledges, in order. An `h` lower than the last one read as
    /// wrapping past 2^32, which is how XEP-0198 counts, and then lands beyond what was sent.
    pub fn ack(&mut self, h: u32) -> Result<Vec<u64>, AckTooHigh> {
        // The count is kept modulo 2^32 on the wire; take the smallest count ≥ the last one
        // that matches it.
        let delta = u64::from(h.wrapping_sub(self.acked as u32));
        let now = self.acked + delta;
        if now > self.sent {
            return Err(AckTooHigh { h, sent: self.sent });
        }
        self.acked = now;
        let mut done = Vec::new();
        while let Some(&(place, n)) = self.pending.front() {
            if place > now {
                break;
            }
            done.push(n);
            self.pending.pop_front();
        }
        Ok(done)
    }

    /// After `<resumed h/>` (applied with [`StreamAcks::ack`] first): the server never got
    /// what we sent past its `h`, and the bench does not send it again, so the stream counts
    /// on from `h`. Returns the messages given up.
    pub fn rewind_to_acked(&mut self) -> Vec<u64> {
        self.sent = self.acked;
        self.pending.drain(..).map(|(_, n)| n).collect()
    }
}

/// What happened to one message, over the whole run.
#[derive(Debug, Clone, Copy, Default)]
struct MsgState {
    /// The cycle it was sent in (cycle c ends with the c-th kill).
    cycle: u32,
    acked: bool,
    bounced: bool,
    /// Times the recipient got it (live, offline or retransmitted after a resumption).
    received: u32,
    /// The first of those was at the final login (offline storage).
    first_at_final_login: bool,
    /// Times it was listed in the recipient's archive.
    archived: u32,
}

/// Everything known about one sender → recipient pair.
#[derive(Debug, Default)]
pub struct PairBook {
    msgs: Vec<MsgState>,
    /// Received messages of this run with a number never sent (a server fault).
    unknown: u64,
}

impl PairBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allocates the next message number (the message is about to be sent in `cycle`).
    pub fn next(&mut self, cycle: u32) -> u64 {
        self.msgs.push(MsgState {
            cycle,
            ..MsgState::default()
        });
        self.msgs.len() as u64 - 1
    }

    /// Messages allocated so far.
    pub fn sent(&self) -> u64 {
        self.msgs.len() as u64
    }

    fn get(&mut self, n: u64) -> Option<&mut MsgState> {
        usize::try_from(n).ok().and_then(|i| self.msgs.get_mut(i))
    }

    /// The server acknowledged message `n` to its sender.
    pub fn acked(&mut self, n: u64) {
        if let Some(m) = self.get(n) {
            m.acked = true;
        }
    }

    /// The server bounced message `n` back to its sender with an error.
    pub fn bounced(&mut self, n: u64) {
        if let Some(m) = self.get(n) {
            m.bounced = true;
        }
    }

    /// The recipient got message `n`; `final_login` when it came at the last login.
    pub fn received(&mut self, n: u64, final_login: bool) {
        match self.get(n) {
            Some(m) => {
                if m.received == 0 {
                    m.first_at_final_login = final_login;
                }
                m.received += 1;
            }
            None => self.unknown += 1,
        }
    }

    /// The recipient's archive lists message `n`.
    pub fn archived(&mut self, n: u64) {
        match self.get(n) {
            Some(m) => m.archived += 1,
            None => self.unknown += 1,
        }
    }
}

/// The verdict over all pairs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Messages sent.
    pub sent: u64,
    /// Messages the server acknowledged to their sender.
    pub acked: u64,
    /// Messages bounced to their sender with an error (not counted as lost).
    pub bounced: u64,
    /// Distinct messages the recipients got (acknowledged or not).
    pub received: u64,
    /// Of those, first seen at the final login (waiting in offline storage until then).
    pub received_at_final_login: u64,
    /// Received messages that were never acknowledged to their sender.
    pub received_unacked: u64,
    /// Distinct messages listed in the recipients' archives.
    pub archived: u64,
    /// Acknowledged messages missing from the recipient's archive (received or not).
    pub acked_unarchived: u64,
    /// Acknowledged messages not received but listed in the recipient's archive.
    pub archive_only: u64,
    /// Acknowledged messages found nowhere (not received, not archived, not bounced).
    pub lost: u64,
    /// The first lost ids (at most the limit given to [`Tally::add`]).
    pub lost_ids: Vec<String>,
    /// Lost messages by the cycle they were sent in.
    pub lost_by_cycle: BTreeMap<u32, u64>,
    /// Receptions beyond the first of the same message.
    pub duplicates: u64,
    /// Archive entries beyond the first of the same message.
    pub archive_duplicates: u64,
    /// Messages received or archived under a number never sent.
    pub unknown: u64,
}

impl Tally {
    /// Adds pair `pair`'s book, listing at most `max_ids` lost ids in all.
    pub fn add(&mut self, pair: u64, book: &PairBook, max_ids: usize) {
        self.unknown += book.unknown;
        for (n, m) in book.msgs.iter().enumerate() {
            self.sent += 1;
            self.acked += u64::from(m.acked);
            self.bounced += u64::from(m.bounced);
            self.duplicates += u64::from(m.received.saturating_sub(1));
            self.archive_duplicates += u64::from(m.archived.saturating_sub(1));
            self.archived += u64::from(m.archived > 0);
            self.acked_unarchived += u64::from(m.acked && m.archived == 0);
            if m.received > 0 {
                self.received += 1;
                self.received_at_final_login += u64::from(m.first_at_final_login);
                self.received_unacked += u64::from(!m.acked);
                continue;
            }
            if !m.acked {
                continue;
            }
            if m.archived > 0 {
                self.archive_only += 1;
            } else if !m.bounced {
                self.lost += 1;
                *self.lost_by_cycle.entry(m.cycle).or_default() += 1;
                if self.lost_ids.len() < max_ids {
                    self.lost_ids.push(message_id(pair, n as u64));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_bodies_round_trip() {
        assert_eq!(message_id(3, 17), "chaos-3-17");
        assert_eq!(parse_id("chaos-3-17"), Some((3, 17)));
        assert_eq!(parse_id("chaos-3"), None);
        assert_eq!(parse_id("m7"), None);
        assert_eq!(parse_body(&body(3, 17, "t1"), "t1"), Some((3, 17)));
        // Another run's message, on a reused data directory, is not this run's.
        assert_eq!(parse_body(&body(3, 17, "t0"), "t1"), None);
        assert_eq!(parse_body("3 17 12345", "t1"), None);
    }

    #[test]
    fn h_acknowledges_messages_by_their_place_in_the_stream() {
        let mut s = StreamAcks::new();
        for n in 10..15 {
            s.sent_message(n); // stanzas 1..=5
        }
        assert_eq!(s.ack(0), Ok(vec![]));
        assert_eq!(s.ack(2), Ok(vec![10, 11]));
        assert_eq!(s.unacked(), 3);
        // The same h again acknowledges nothing new.
        assert_eq!(s.ack(2), Ok(vec![]));
        assert_eq!(s.ack(5), Ok(vec![12, 13, 14]));
        assert_eq!(s.unacked(), 0);
        assert_eq!(s.ack(6), Err(AckTooHigh { h: 6, sent: 5 }));
        // A rejected h changes nothing.
        s.sent_message(15);
        assert_eq!(s.ack(6), Ok(vec![15]));
    }

    #[test]
    fn h_wraps_at_2_pow_32() {
        let mut s = StreamAcks {
            sent: u64::from(u32::MAX) - 1,
            acked: u64::from(u32::MAX) - 1,
            pending: VecDeque::new(),
        };
        s.sent_message(1); // place 2^32 - 1
        s.sent_message(2); // place 2^32, h = 0
        s.sent_message(3); // place 2^32 + 1, h = 1
        assert_eq!(s.ack(u32::MAX), Ok(vec![1]));
        assert_eq!(s.ack(1), Ok(vec![2, 3]));
        // A smaller h than the last is not a step back: it would wrap beyond what was sent.
        assert!(s.ack(0).is_err());
    }

    #[test]
    fn resumption_counts_on_from_the_servers_h() {
        let mut s = StreamAcks::new();
        for n in 0..5 {
            s.sent_message(n);
        }
        assert_eq!(s.ack(2), Ok(vec![0, 1]));
        // <resumed h='3'/>: message 2 arrived, 3 and 4 did not and are given up.
        assert_eq!(s.ack(3), Ok(vec![2]));
        assert_eq!(s.rewind_to_acked(), vec![3, 4]);
        s.sent_message(5); // place 4 in the server's count
        assert_eq!(s.ack(4), Ok(vec![5]));
    }

    #[test]
    fn classification() {
        let mut b = PairBook::new();
        for n in 0..8 {
            b.next(n / 4);
        }
        // 0: acked, received twice (a duplicate).
        b.acked(0);
        b.received(0, false);
        b.received(0, false);
        // 1: acked, only in the archive.
        b.acked(1);
        b.archived(1);
        // 2: acked, nowhere: lost.
        b.acked(2);
        // 3: not acked, nowhere: not lost (the sender was never told it was safe).
        // 4: not acked, yet received; again at the final login (a duplicate, not a first).
        b.received(4, false);
        b.received(4, true);
        // 5: acked and bounced with an error: the sender was told, not lost.
        b.acked(5);
        b.bounced(5);
        // 6: acked, delivered from offline storage at the final login, archived twice.
        b.acked(6);
        b.received(6, true);
        b.archived(6);
        b.archived(6);
        // 7: acked, lost.
        b.acked(7);
        // A message number never sent.
        b.received(99, false);

        let mut t = Tally::default();
        t.add(4, &b, 1);
        assert_eq!(
            t,
            Tally {
                sent: 8,
                acked: 6,
                bounced: 1,
                received: 3,
                received_at_final_login: 1,
                received_unacked: 1,
                archived: 2,
                acked_unarchived: 4,
                archive_only: 1,
                lost: 2,
                lost_ids: vec!["chaos-4-2".into()],
                lost_by_cycle: BTreeMap::from([(0, 1), (1, 1)]),
                duplicates: 2,
                archive_duplicates: 1,
                unknown: 1,
            }
        );
        // Pairs add up; the id list stays bounded.
        let mut c = PairBook::new();
        c.next(1);
        c.acked(0);
        t.add(5, &c, 1);
        assert_eq!((t.sent, t.acked, t.lost), (9, 7, 3));
        assert_eq!(t.lost_by_cycle, BTreeMap::from([(0, 1), (1, 2)]));
        assert_eq!(t.lost_ids, vec!["chaos-4-2".to_string()]);
    }
}
