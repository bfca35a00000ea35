//! XEP-0198 (`urn:xmpp:sm:3`) stream management for ONE session, server side.
//!
//! [`StreamManagement`] keeps the two h counters (mod 2^32), the queue of outbound stanzas the
//! client has not acknowledged, decides when the server should send `<r/>`, detects an `<r/>`
//! the client leaves unanswered (the "ack delayed" event push relies on), and tracks
//! hibernation: the transport died but the session lives on, queueing, until it is resumed or
//! its deadline passes. [`Tombstones`] remembers the last h of ended sessions so a late
//! `<resume/>` can be answered with `<failed h='…'/>` (Prosody's `smacks_h` store).
//!
//! Must not: write XML (what to answer the client's nonzas is [`crate::sm_nonza`]'s), read
//! clocks, arm timers or end sessions. It is driven with explicit
//! `now` values; the owner calls [`StreamManagement::poll`] at
//! [`StreamManagement::next_deadline`] and acts on the returned [`SmEvent`]s.
//!
//! Model (Prosody's mod_smacks, adjusted to be deterministic):
//! - An `<r/>` is *outstanding* from [`StreamManagement::request_sent`] until an `<a h/>`
//!   acknowledges every stanza that had been sent when it was written. While one is
//!   outstanding no further `<r/>` is asked for, until it has been reported as
//!   [`SmEvent::AckDelayed`] (then a new one may be asked for, which can be reported again).
//! - A stanza is *unrequested* while no `<r/>` has been written since it was queued. An `<r/>` is
//!   asked for when `request_after` unacked stanzas are unrequested, or when the oldest
//!   unrequested one has waited `request_idle`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Tuning of stream management for one session.
#[derive(Clone, Debug)]
pub struct SmConfig {
    /// Unacked outbound stanzas allowed before [`SmError::QueueFull`] (default 500).
    pub max_queue: usize,
    /// Bytes of unacked outbound stanzas (as the owner weighs them, see
    /// [`StreamManagement::push_outbound_sized`]) allowed before [`SmError::QueueFull`]
    /// (default 4 MiB). An empty queue takes one stanza of any size.
    pub max_queue_bytes: usize,
    /// Ask for `<r/>` once this many unacked stanzas were queued since the last `<r/>` (default 5).
    pub request_after: usize,
    /// Ask for `<r/>` once an unacked stanza has waited this long without one (default 1s).
    pub request_idle: Duration,
    /// An `<r/>` unanswered this long fires [`SmEvent::AckDelayed`], once per request (default 30s).
    pub max_ack_delay: Duration,
    /// How long a resumable session survives its transport (default 600s).
    pub hibernation_timeout: Duration,
}

impl Default for SmConfig {
    fn default() -> Self {
        SmConfig {
            max_queue: 500,
            max_queue_bytes: 4 << 20,
            request_after: 5,
            request_idle: Duration::from_secs(1),
            max_ack_delay: Duration::from_secs(30),
            hibernation_timeout: Duration::from_secs(600),
        }
    }
}

/// What stream management refuses. Each maps to the XEP-0198 reaction noted on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The client acknowledged more stanzas than were sent: XEP-0198 §4, stream error
    /// `undefined-condition` with `<handled-count-too-high h='…' send-count='…'/>`
    /// (in `<failed/>` when it came with `<resume/>`).
    #[error("client acknowledged {h} stanzas but only {sent} were sent")]
    HandledCountTooHigh {
        /// The h the client sent.
        h: u32,
        /// Our outbound count (mod 2^32), the `send-count` to report.
        sent: u32,
    },
    /// The unacked queue already holds `max_queue` stanzas, or the stanza would take it past
    /// `max_queue_bytes`: end the stream
    /// (`resource-constraint`/`policy-violation`).
    #[error("stream management queue is full")]
    QueueFull,
    /// Stream management is not enabled, or (for hibernate/resume) the session is not
    /// resumable: `<failed><unexpected-request/></failed>` or end the session.
    #[error("stream management is not enabled (or not resumable)")]
    NotEnabled,
    /// `<enable/>` on a stream where it is already enabled: `<failed><unexpected-request/></failed>`.
    #[error("stream management is already enabled")]
    AlreadyEnabled,
    /// The operation needs a hibernating session ([`StreamManagement::try_set_hibernation_deadline`]).
    #[error("the session is not hibernating")]
    NotHibernating,
    /// The hibernation deadline passed ([`SmEvent::Expired`] was reported): resume must be
    /// answered `<failed><item-not-found/></failed>`.
    #[error("the hibernated session has expired")]
    Expired,
}

/// Something the owner must act on, reported by [`StreamManagement::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmEvent<T> {
    /// Send `<r/>` now, then call [`StreamManagement::request_sent`].
    RequestAck,
    /// The client left an `<r/>` unanswered for `max_ack_delay`: clones of the unacked
    /// queue, oldest first (possibly empty if the `<r/>` was sent with nothing unacked).
    AckDelayed(Vec<T>),
    /// The hibernation deadline passed: take the queue with
    /// [`StreamManagement::take_unacked`] and end the session.
    Expired,
}

/// An `<r/>` we wrote and the client has not fully answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When the first still-unanswered `<r/>` was written (the ack-delay clock).
    sent_at: Instant,
    /// Our outbound h when the latest `<r/>` was written: an ack reaching it answers it.
    h: u32,
    /// AckDelayed was reported for it; it no longer blocks a new `<r/>`.
    delayed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Disabled,
    Attached,
    Hibernating { deadline: Instant },
    Expired,
}

/// Where an `h` from the client lies relative to what we know.
enum AckPos {
    /// Acknowledges this many queued stanzas (0: nothing new).
    Advance(usize),
    /// Lower than the last ack: a stale or reordered `<a/>`.
    Stale,
    /// More than we ever sent.
    TooHigh,
}

/// XEP-0198 state of one session (server side), generic over the queued stanza type.
#[derive(Debug, Clone)]
pub struct StreamManagement<T> {
    cfg: SmConfig,
    phase: Phase,
    resumable: bool,
    /// Stanzas we handled from the client (mod 2^32).
    inbound_h: u32,
    /// Stanzas we sent to the client (mod 2^32).
    outbound_h: u32,
    /// The client's last accepted h; `queue[0]` is stanza number `acked_h + 1`.
    acked_h: u32,
    /// Outbound h when the last `<r/>` was written: queued stanzas above it are unrequested.
    requested_h: u32,
    /// Unacked stanzas with the instant each was queued and its size, oldest first.
    queue: VecDeque<(T, Instant, usize)>,
    /// The sum of the sizes in `queue`.
    queued_bytes: usize,
    pending: Option<Pending>,
    /// h of the request reported as AckDelayed; cleared by an ack reaching it.
    overdue_h: Option<u32>,
    /// A RequestAck was reported (by `poll` or `push_outbound`) and `request_sent` not called yet.
    request_signalled: bool,
    /// Just resumed: ask for `<r/>` for the retransmitted stanzas without waiting.
    request_asap: bool,
}

/// `t + d`, saturating far in the future instead of panicking on a huge configured duration.
fn add(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(t)
}

/// `a >= b` in serial-number arithmetic mod 2^32 (XEP-0198 §4: h wraps to 0 after 2^32 - 1).
fn reached(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < (1 << 31)
}

impl<T: Clone> StreamManagement<T> {
    /// A disabled machine (before `<enable/>`).
    pub fn new(cfg: SmConfig) -> Self {
        StreamManagement {
            cfg,
            phase: Phase::Disabled,
            resumable: false,
            inbound_h: 0,
            outbound_h: 0,
            acked_h: 0,
            requested_h: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            pending: None,
            overdue_h: None,
            request_signalled: false,
            request_asap: false,
        }
    }

    /// An enabled machine whose counters start at the given values, as if that many stanzas had
    /// already been exchanged and acknowledged. For tests of the 2^32 wrap.
    #[doc(hidden)]
    pub fn with_counters(cfg: SmConfig, resume: bool, inbound_h: u32, outbound_h: u32) -> Self {
        let mut sm = Self::new(cfg);
        sm.phase = Phase::Attached;
        sm.resumable = resume;
        sm.inbound_h = inbound_h;
        sm.outbound_h = outbound_h;
        sm.acked_h = outbound_h;
        sm.requested_h = outbound_h;
        sm
    }

    /// A resumable session restored from storage in another process (a server restart):
    /// hibernating until `deadline`, with the counters it had and its unacked `queue` (oldest
    /// first; stanza numbers `outbound_h - queue.len() + 1 ..= outbound_h`). What the timers
    /// knew (outstanding `<r/>`, queueing instants) is not kept: a `<resume/>` starts those
    /// afresh anyway.
    pub fn restore_hibernating(
        cfg: SmConfig,
        inbound_h: u32,
        outbound_h: u32,
        queue: Vec<T>,
        deadline: Instant,
        now: Instant,
    ) -> Self {
        let queue = queue.into_iter().map(|t| (t, 0)).collect();
        Self::restore_hibernating_sized(cfg, inbound_h, outbound_h, queue, deadline, now)
    }

    /// [`Self::restore_hibernating`] with each queued stanza's size (as for
    /// [`Self::push_outbound_sized`]). The queue is taken whole even past the bounds: it
    /// was within them when it was saved.
    pub fn restore_hibernating_sized(
        cfg: SmConfig,
        inbound_h: u32,
        outbound_h: u32,
        queue: Vec<(T, usize)>,
        deadline: Instant,
        now: Instant,
    ) -> Self {
        let mut sm = Self::new(cfg);
        let n = u32::try_from(queue.len()).unwrap_or(u32::MAX);
        sm.phase = Phase::Hibernating { deadline };
        sm.resumable = true;
        sm.inbound_h = inbound_h;
        sm.outbound_h = outbound_h;
        sm.acked_h = outbound_h.wrapping_sub(n);
        sm.requested_h = sm.acked_h;
        sm.queued_bytes = queue.iter().map(|(_, b)| *b).fold(0, usize::saturating_add);
        sm.queue = queue.into_iter().map(|(t, b)| (t, now, b)).collect();
        sm
    }

    /// `<enable resume=…/>`: start counting from 0 (XEP-0198 §3).
    pub fn enable(&mut self, resume: bool, _now: Instant) -> Result<(), SmError> {
        if self.phase != Phase::Disabled {
            // XEP-0198 §3: the client MUST NOT enable twice.
            return Err(SmError::AlreadyEnabled);
        }
        self.phase = Phase::Attached;
        self.resumable = resume;
        self.inbound_h = 0;
        self.outbound_h = 0;
        self.acked_h = 0;
        self.requested_h = 0;
        Ok(())
    }

    /// Whether `<enable/>` succeeded (stays true while hibernating and after expiry).
    pub fn is_enabled(&self) -> bool {
        self.phase != Phase::Disabled
    }

    /// Whether the session was enabled with `resume='true'`.
    pub fn is_resumable(&self) -> bool {
        self.is_enabled() && self.resumable
    }

    /// Count one inbound stanza as handled (XEP-0198 §4: wraps mod 2^32).
    pub fn on_inbound_stanza(&mut self) {
        self.inbound_h = self.inbound_h.wrapping_add(1);
    }

    /// The h to send in `<a h/>`, `<enabled/>` and `<resumed h/>`/`<failed h/>`.
    pub fn inbound_h(&self) -> u32 {
        self.inbound_h
    }

    /// Stanzas sent to the client so far (mod 2^32).
    pub fn outbound_h(&self) -> u32 {
        self.outbound_h
    }

    /// Queue an outbound stanza (also while hibernating). `Ok(true)`: send `<r/>` now
    /// (`request_after` unrequested stanzas are unacked) and call [`Self::request_sent`].
    pub fn push_outbound(&mut self, item: T, now: Instant) -> Result<bool, SmError> {
        self.push_outbound_sized(item, 0, now)
    }

    /// [`Self::push_outbound`] for a stanza that costs `bytes` of memory while queued
    /// (the owner's measure): refused with [`SmError::QueueFull`] when the queue's bytes
    /// would pass `max_queue_bytes`, unless the queue is empty.
    pub fn push_outbound_sized(
        &mut self,
        item: T,
        bytes: usize,
        now: Instant,
    ) -> Result<bool, SmError> {
        if self.phase == Phase::Disabled {
            return Err(SmError::NotEnabled);
        }
        if !self.fits(bytes) {
            // XEP-0198 §4 leaves the limit to the server; the owner ends the stream.
            return Err(SmError::QueueFull);
        }
        self.queued_bytes = self.queued_bytes.saturating_add(bytes);
        self.queue.push_back((item, now, bytes));
        self.outbound_h = self.outbound_h.wrapping_add(1);
        let due = self.phase == Phase::Attached
            && !self.request_blocked()
            && self.unrequested_len() >= self.cfg.request_after.max(1);
        if due {
            self.request_signalled = true;
        }
        Ok(due)
    }

    /// The client's `<a h/>`: drop and return (oldest first) the stanzas it acknowledges.
    /// An h lower than the last one is stale and ignored; an h above what we sent is
    /// [`SmError::HandledCountTooHigh`] and changes nothing.
    pub fn on_ack(&mut self, h: u32, _now: Instant) -> Result<Vec<T>, SmError> {
        if self.phase == Phase::Disabled {
            return Err(SmError::NotEnabled);
        }
        let n = match self.ack_pos(h) {
            AckPos::Advance(n) => n,
            // XEP-0198 §4: h is monotonic; an older <a/> carries no new information.
            AckPos::Stale => return Ok(Vec::new()),
            AckPos::TooHigh => {
                return Err(SmError::HandledCountTooHigh {
                    h,
                    sent: self.outbound_h,
                })
            }
        };
        let acked = self.drop_acked(h, n);
        if let Some(p) = self.pending {
            if reached(h, p.h) {
                self.pending = None;
                self.request_signalled = false;
            }
        }
        if let Some(oh) = self.overdue_h {
            if reached(h, oh) {
                self.overdue_h = None;
            }
        }
        if self.queue.is_empty() {
            self.request_signalled = false;
            self.request_asap = false;
        }
        Ok(acked)
    }

    /// We wrote `<r/>`: it is outstanding until acknowledged or reported as delayed.
    pub fn request_sent(&mut self, now: Instant) {
        if self.phase == Phase::Disabled {
            return;
        }
        self.request_signalled = false;
        self.request_asap = false;
        self.requested_h = self.outbound_h;
        self.pending = Some(match self.pending {
            // An earlier <r/> is still unanswered and not yet reported: its clock keeps running.
            Some(p) if !p.delayed => Pending {
                h: self.outbound_h,
                ..p
            },
            _ => Pending {
                sent_at: now,
                h: self.outbound_h,
                delayed: false,
            },
        });
    }

    /// An `<r/>` was reported as [`SmEvent::AckDelayed`] and no ack has reached it since.
    pub fn ack_overdue(&self) -> bool {
        self.overdue_h.is_some()
    }

    /// Unacked stanzas, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &T> {
        self.queue.iter().map(|(t, _, _)| t)
    }

    /// The sizes of the unacked stanzas, summed (see [`Self::push_outbound_sized`]).
    pub fn unacked_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Number of unacked stanzas.
    pub fn unacked_len(&self) -> usize {
        self.queue.len()
    }

    /// Stanzas the queue has room for without growing (its memory, for idle-size checks).
    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Whether [`Self::push_outbound`] would refuse the next stanza with
    /// [`SmError::QueueFull`] (the owner keeps that stanza instead of losing it).
    pub fn is_full(&self) -> bool {
        self.is_enabled() && self.queue.len() >= self.max_queue()
    }

    /// Whether [`Self::push_outbound_sized`] would refuse a stanza of `bytes` with
    /// [`SmError::QueueFull`].
    pub fn is_full_for(&self, bytes: usize) -> bool {
        self.is_enabled() && !self.fits(bytes)
    }

    /// Unacked stanzas with the instant each was queued (e.g. for XEP-0203 delay stamps).
    pub fn unacked_with_time(&self) -> impl Iterator<Item = (&T, Instant)> {
        self.queue.iter().map(|(t, at, _)| (t, *at))
    }

    /// The transport died: keep the session and its queue until `now + hibernation_timeout`.
    /// `Err(NotEnabled)` if the session is not resumable (the owner ends it). Calling it again
    /// while hibernating is a no-op that keeps the deadline; after expiry it is `Err(Expired)`.
    pub fn hibernate(&mut self, now: Instant) -> Result<(), SmError> {
        if !self.is_resumable() {
            return Err(SmError::NotEnabled);
        }
        match self.phase {
            Phase::Hibernating { .. } => Ok(()),
            Phase::Expired => Err(SmError::Expired),
            _ => {
                self.phase = Phase::Hibernating {
                    deadline: add(now, self.cfg.hibernation_timeout),
                };
                // The <r/> went to a dead transport; <resume h/> will answer for it.
                self.pending = None;
                self.request_signalled = false;
                self.request_asap = false;
                Ok(())
            }
        }
    }

    /// Whether the session is waiting for a `<resume/>` (false once expired).
    pub fn is_hibernating(&self) -> bool {
        matches!(self.phase, Phase::Hibernating { .. })
    }

    /// When hibernation expires (None when not hibernating).
    pub fn hibernation_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Hibernating { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Move the hibernation deadline (earlier or later); ignored when not hibernating.
    pub fn set_hibernation_deadline(&mut self, at: Instant) {
        let _ = self.try_set_hibernation_deadline(at);
    }

    /// [`Self::set_hibernation_deadline`], reporting `Err(NotHibernating)` instead of ignoring.
    pub fn try_set_hibernation_deadline(&mut self, at: Instant) -> Result<(), SmError> {
        match &mut self.phase {
            Phase::Hibernating { deadline } => {
                *deadline = at;
                Ok(())
            }
            _ => Err(SmError::NotHibernating),
        }
    }

    /// `<resume h/>` on a new transport (the session may be hibernating, or still attached to
    /// a transport that has not noticed it died: the new one replaces it). Drops what `h`
    /// acknowledges and returns clones of the rest, oldest first, to retransmit; they stay
    /// queued until acked. A stale h acknowledges nothing. On error nothing changes.
    /// Afterwards the retransmitted stanzas count as unrequested, so the next `poll` asks for
    /// `<r/>` right away (as Prosody does after a resume).
    pub fn resume(&mut self, h: u32, now: Instant) -> Result<Vec<T>, SmError> {
        self.resume_acked(h, now).map(|(_, retransmit)| retransmit)
    }

    /// [`Self::resume`], also returning (first) the stanzas `h` acknowledged, oldest first:
    /// the owner may have work to do once the client has them (e.g. delete them from a store).
    pub fn resume_acked(&mut self, h: u32, _now: Instant) -> Result<(Vec<T>, Vec<T>), SmError> {
        if !self.is_resumable() {
            return Err(SmError::NotEnabled);
        }
        if self.phase == Phase::Expired {
            return Err(SmError::Expired);
        }
        let acked = match self.ack_pos(h) {
            AckPos::Advance(n) => self.drop_acked(h, n),
            AckPos::Stale => Vec::new(),
            AckPos::TooHigh => {
                return Err(SmError::HandledCountTooHigh {
                    h,
                    sent: self.outbound_h,
                })
            }
        };
        self.phase = Phase::Attached;
        self.pending = None;
        self.overdue_h = None;
        self.request_signalled = false;
        self.requested_h = self.acked_h;
        // Prosody asks at once after a resume: the client's answer tells us what arrived.
        self.request_asap = !self.queue.is_empty();
        Ok((
            acked,
            self.queue.iter().map(|(t, _, _)| t.clone()).collect(),
        ))
    }

    /// Remove and return everything unacked, oldest first (expiry, session end). The items
    /// count as gone: a later ack or resume cannot acknowledge them.
    pub fn take_unacked(&mut self) -> Vec<T> {
        self.acked_h = self.outbound_h;
        self.requested_h = self.outbound_h;
        self.request_signalled = false;
        self.request_asap = false;
        self.queued_bytes = 0;
        self.queue.drain(..).map(|(t, _, _)| t).collect()
    }

    /// Timers due at `now`: [`SmEvent::Expired`] (hibernating, deadline reached; reported once),
    /// [`SmEvent::AckDelayed`] (once per outstanding `<r/>`, not while hibernating) and
    /// [`SmEvent::RequestAck`] (not while hibernating; reported once until `request_sent`).
    pub fn poll(&mut self, now: Instant) -> Vec<SmEvent<T>> {
        let mut events = Vec::new();
        match self.phase {
            Phase::Hibernating { deadline } => {
                if now >= deadline {
                    self.phase = Phase::Expired;
                    events.push(SmEvent::Expired);
                }
                return events;
            }
            Phase::Attached => {}
            Phase::Disabled | Phase::Expired => return events,
        }
        if let Some(p) = &mut self.pending {
            if !p.delayed && now >= add(p.sent_at, self.cfg.max_ack_delay) {
                p.delayed = true;
                self.overdue_h = Some(p.h);
                events.push(SmEvent::AckDelayed(
                    self.queue.iter().map(|(t, _, _)| t.clone()).collect(),
                ));
            }
        }
        if let Some(due) = self.request_due() {
            if now >= due {
                self.request_signalled = true;
                events.push(SmEvent::RequestAck);
            }
        }
        events
    }

    /// When [`Self::poll`] next has something to report (None: no timer needed). May be in
    /// the past, meaning "now".
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Hibernating { deadline } => Some(deadline),
            Phase::Attached => {
                let ack = self
                    .pending
                    .filter(|p| !p.delayed)
                    .map(|p| add(p.sent_at, self.cfg.max_ack_delay));
                match (ack, self.request_due()) {
                    (Some(a), Some(r)) => Some(a.min(r)),
                    (a, r) => a.or(r),
                }
            }
            Phase::Disabled | Phase::Expired => None,
        }
    }

    // --- internals ---

    fn max_queue(&self) -> usize {
        // Keeps the queue far below 2^31 so serial-number comparison of h stays unambiguous.
        self.cfg.max_queue.min(1 << 30)
    }

    /// Room for one more stanza of `bytes`: below `max_queue`, and within `max_queue_bytes`
    /// unless the queue is empty (one stanza the parser accepted always fits, so a large
    /// one cannot wedge the session).
    fn fits(&self, bytes: usize) -> bool {
        self.queue.len() < self.max_queue()
            && (self.queue.is_empty()
                || self.queued_bytes.saturating_add(bytes) <= self.cfg.max_queue_bytes)
    }

    fn request_blocked(&self) -> bool {
        self.pending.is_some_and(|p| !p.delayed)
    }

    /// Queued stanzas written after the last `<r/>`.
    fn unrequested_len(&self) -> usize {
        let requested_in_queue = if reached(self.requested_h, self.acked_h) {
            self.requested_h.wrapping_sub(self.acked_h) as usize
        } else {
            0
        };
        self.queue.len().saturating_sub(requested_in_queue)
    }

    /// When a RequestAck becomes due, if one can be asked for at all.
    fn request_due(&self) -> Option<Instant> {
        if self.phase != Phase::Attached || self.request_blocked() || self.request_signalled {
            return None;
        }
        let unrequested = self.unrequested_len();
        let oldest = self.queue.get(self.queue.len() - unrequested)?.1;
        if self.request_asap || unrequested >= self.cfg.request_after.max(1) {
            Some(oldest)
        } else {
            Some(add(oldest, self.cfg.request_idle))
        }
    }

    fn ack_pos(&self, h: u32) -> AckPos {
        let ahead = h.wrapping_sub(self.acked_h);
        if ahead as usize <= self.queue.len() {
            AckPos::Advance(ahead as usize)
        } else if !reached(h, self.acked_h) {
            AckPos::Stale
        } else {
            AckPos::TooHigh
        }
    }

    fn drop_acked(&mut self, h: u32, n: usize) -> Vec<T> {
        self.acked_h = h;
        let acked: Vec<T> = self
            .queue
            .drain(..n)
            .map(|(t, _, b)| {
                self.queued_bytes = self.queued_bytes.saturating_sub(b);
                t
            })
            .collect();
        if self.queue.is_empty() {
            // Most sessions sit idle with everything acked: give a burst's buffer back.
            self.queue = VecDeque::new();
        }
        acked
    }
}

/// The last inbound h of sessions that ended, so a late `<resume/>` gets `<failed h='…'/>`
/// (XEP-0198 §5; Prosody's `smacks_h` store). Bounded in count (oldest evicted) and in age.
#[derive(Debug, Clone)]
pub struct Tombstones {
    max_entries: usize,
    ttl: Duration,
    entries: HashMap<String, Tomb>,
    /// Insertion order; entries whose `seq` no longer matches the map are stale and skipped.
    order: VecDeque<(u64, String)>,
    next_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Tomb {
    h: u32,
    at: Instant,
    seq: u64,
}

impl Tombstones {
    /// A store keeping at most `max_entries`, each for `ttl`.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        Tombstones {
            max_entries,
            ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Remember `h` for resumption id `id` (replacing an older entry for the same id).
    pub fn insert(&mut self, id: String, h: u32, now: Instant) {
        self.prune(now);
        if self.max_entries == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(id.clone(), Tomb { h, at: now, seq });
        self.order.push_back((seq, id));
        while self.entries.len() > self.max_entries {
            self.pop_oldest();
        }
        self.compact();
    }

    /// The h remembered for `id`, removing it; None if unknown or older than `ttl`.
    pub fn take(&mut self, id: &str, now: Instant) -> Option<u32> {
        self.prune(now);
        let tomb = self.entries.remove(id)?;
        self.compact();
        // `now` may be earlier than a later insert's: judge the entry's own age too.
        (now < add(tomb.at, self.ttl)).then_some(tomb.h)
    }

    /// Forgets every entry whose id `forget` matches (e.g. all of a removed account's).
    pub fn forget_where(&mut self, mut forget: impl FnMut(&str) -> bool) {
        self.entries.retain(|id, _| !forget(id));
        self.compact();
    }

    /// Entries held (expired ones are dropped at the next `insert`/`take`/`prune`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drop entries older than `ttl`.
    pub fn prune(&mut self, now: Instant) {
        while let Some((seq, id)) = self.order.front() {
            match self.entries.get(id) {
                Some(t) if t.seq == *seq => {
                    if now < add(t.at, self.ttl) {
                        break;
                    }
                    self.pop_oldest();
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn pop_oldest(&mut self) {
        while let Some((seq, id)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|t| t.seq == seq) {
                self.entries.remove(&id);
                return;
            }
        }
    }

    /// Keep the order list proportional to the live entries after removals and replacements.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(seq, id)| entries.get(id).is_some_and(|t| t.seq == *seq));
        }
    }
}
