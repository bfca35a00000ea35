//! Inbound rate limits for one client stream: token buckets for stanzas and for bytes,
//! with explicit time.
//!
//! A client may send a burst (a login sends a few dozen stanzas at once, an avatar publish a
//! few hundred kilobytes), then at most the configured rate. Going over does not end the
//! stream and drops nothing: the bucket goes into debt and the owner stops reading the
//! socket until it is paid back, so a flooding client only slows itself down (TCP pushes
//! back on it), while stanzas already routed *to* it keep flowing. This is Prosody's
//! mod_limits model, per stanza as well as per byte.

use std::time::{Duration, Instant};

/// One token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket. `rate` must be above zero (see [`InboundRate::new`] for "no limit").
    pub fn new(rate: u64, burst: u64, now: Instant) -> Bucket {
        let burst = burst.max(1) as f64;
        Bucket {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens, going into debt if there are fewer. Returns when the debt is paid
    /// back (the earliest instant the owner may read again), or `None` if there is no debt.
    pub fn take(&mut self, n: u64, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = Duration::from_secs_f64(-self.tokens / self.rate);
        Some(now + wait)
    }
}

/// Elements sent in answer to a request (MAM results) that weigh as much as one stanza
/// received: serving a result costs the server about a tenth of routing a stanza.
pub const ANSWERS_PER_STANZA: u64 = 10;

/// The limits of one direction of a stream; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Stanzas (and nonzas) per second.
    pub stanzas_per_second: u64,
    /// Stanzas a client may send at once beyond the rate.
    pub stanza_burst: u64,
    /// Bytes per second, as the caller weighs them.
    pub bytes_per_second: u64,
    /// Bytes a client may send at once beyond the rate.
    pub byte_burst: u64,
}

/// Both buckets of one client stream.
#[derive(Clone, Debug)]
pub struct InboundRate {
    stanzas: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl InboundRate {
    /// Full buckets for `limits` (a rate of 0 has no bucket: unlimited).
    pub fn new(limits: RateLimits, now: Instant) -> InboundRate {
        let stanzas = (limits.stanzas_per_second > 0)
            .then(|| Bucket::new(limits.stanzas_per_second, limits.stanza_burst, now));
        let bytes = (limits.bytes_per_second > 0)
            .then(|| Bucket::new(limits.bytes_per_second, limits.byte_burst, now));
        InboundRate { stanzas, bytes }
    }

    /// One element of `bytes` arrived: until when reading must pause, if at all.
    pub fn take(&mut self, bytes: usize, now: Instant) -> Option<Instant> {
        self.take_answered(bytes, 0, now)
    }

    /// One element of `bytes` arrived and answering it sent the client `answers` elements
    /// it asked for (a MAM page's results): each [`ANSWERS_PER_STANZA`] of them weigh one
    /// more stanza, so reading an archive flat out is metered too (at the default 100
    /// stanzas/s: 1,000 results a second after a burst of 10,000).
    pub fn take_answered(&mut self, bytes: usize, answers: u64, now: Instant) -> Option<Instant> {
        let n = 1 + answers.div_ceil(ANSWERS_PER_STANZA);
        let a = self.stanzas.as_mut().and_then(|b| b.take(n, now));
        let b = self
            .bytes
            .as_mut()
            .and_then(|b| b.take(u64::try_from(bytes).unwrap_or(u64::MAX), now));
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t = Instant::now();
        let mut b = Bucket::new(10, 5, t);
        for _ in 0..5 {
            assert_eq!(b.take(1, t), None);
        }
        // The sixth at the same instant is one token in debt: 100 ms at 10/s.
        assert_eq!(b.take(1, t), Some(ms(t, 100)));
        // Paid back at 100 ms; one more token accrues by 200 ms.
        assert_eq!(b.take(1, ms(t, 200)), None);
    }

    #[test]
    fn answers_weigh_a_tenth_of_a_stanza_each() {
        let t = Instant::now();
        let limits = RateLimits {
            stanzas_per_second: 100,
            stanza_burst: 100,
            ..RateLimits::default()
        };
        let mut r = InboundRate::new(limits, t);
        // A query answered with 90 results: 1 + 9 of 100 tokens.
        for _ in 0..10 {
            assert_eq!(r.take_answered(100, 90, t), None);
        }
        // The eleventh is 10 tokens in debt: 100 ms at 100/s.
        assert_eq!(r.take_answered(100, 90, t), Some(ms(t, 100)));
        // An answerless stanza weighs one, as `take` does.
        let mut r = InboundRate::new(limits, t);
        assert_eq!(r.take_answered(10, 0, t), r.clone().take(10, t));
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t = Instant::now();
        let mut b = Bucket::new(10, 3, t);
        for _ in 0..3 {
            b.take(1, t);
        }
        let later = t + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(1, later), None);
        }
        assert!(b.take(1, later).is_some());
    }

    #[test]
    fn one_element_larger_than_the_burst_passes_and_pauses_for_its_debt() {
        let t = Instant::now();
        let mut b = Bucket::new(1000, 1000, t);
        // 3000 bytes with 1000 in the bucket: 2000 in debt, two seconds at 1000/s.
        assert_eq!(b.take(3000, t), Some(ms(t, 2000)));
        assert!(b.take(1, ms(t, 1999)).is_some());
        assert_eq!(b.take(1, ms(t, 2002)), None);
    }

    #[test]
    fn the_later_of_both_buckets_decides_and_zero_means_unlimited() {
        let t = Instant::now();
        let limits = RateLimits {
            stanzas_per_second: 10,
            stanza_burst: 1,
            bytes_per_second: 100,
            byte_burst: 100,
        };
        let mut r = InboundRate::new(limits, t);
        assert_eq!(r.take(100, t), None);
        // Stanzas: 1 in debt (100 ms); bytes: 100 in debt (1 s).
        assert_eq!(r.take(100, t), Some(ms(t, 1000)));
        let mut free = InboundRate::new(RateLimits::default(), t);
        for _ in 0..100_000 {
            assert_eq!(free.take(1 << 20, t), None);
        }
    }

    #[test]
    fn time_going_backwards_is_ignored() {
        let t = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(10, 1, t);
        assert_eq!(b.take(1, t), None);
        let earlier = t - Duration::from_secs(5);
        // No refill from a clock that went back, and the debt is counted from `last`.
        assert!(b.take(1, earlier).is_some());
    }
}
