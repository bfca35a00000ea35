//! How many accounts each peer address registered recently (XEP-0077 §10 asks servers to
//! limit in-band registration): at most `max` per address within `window`, the records
//! bounded to `max_tracked` addresses (expired ones are dropped first, then the address
//! whose last registration is oldest). Pure: time comes in as `now`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The registration records.
#[derive(Debug)]
pub struct Registrations {
    max: u32,
    window: Duration,
    max_tracked: usize,
    by_ip: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Registrations {
    /// `max` per address within `window`, at most `max_tracked` addresses remembered.
    pub fn new(max: u32, window: Duration, max_tracked: usize) -> Self {
        Registrations {
            max,
            window,
            max_tracked: max_tracked.max(1),
            by_ip: HashMap::new(),
        }
    }

    /// Takes one of `ip`'s registrations at `now` if it has one left: true, and the
    /// registration counts from now on (so concurrent attempts cannot pass together); give
    /// it back with [`Registrations::give_back`] if the account is not created after all.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let window = self.window;
        if let Some(times) = self.by_ip.get_mut(&ip) {
            expire(times, now, window);
            if times.len() >= self.max as usize {
                return false;
            }
        }
        self.record(ip, now);
        true
    }

    /// Undoes the [`Registrations::take`] of `ip` at `at` (the registration failed).
    pub fn give_back(&mut self, ip: IpAddr, at: Instant) {
        if let Some(times) = self.by_ip.get_mut(&ip) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }

    fn record(&mut self, ip: IpAddr, now: Instant) {
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= self.max_tracked {
            let window = self.window;
            self.by_ip.retain(|_, t| {
                expire(t, now, window);
                !t.is_empty()
            });
            if self.by_ip.len() >= self.max_tracked {
                let oldest = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(o) = oldest {
                    self.by_ip.remove(&o);
                }
            }
        }
        let times = self.by_ip.entry(ip).or_default();
        times.push_back(now);
        // Only the last `max` matter for the decision.
        while times.len() > self.max as usize {
            times.pop_front();
        }
    }

    /// Addresses remembered.
    pub fn tracked(&self) -> usize {
        self.by_ip.len()
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn at_most_max_per_address_within_the_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Registrations::new(2, s(60), 100);
        assert!(r.take(ip(1), t0));
        assert!(r.take(ip(1), t0 + s(10)));
        assert!(!r.take(ip(1), t0 + s(20)));
        // Another address is not affected.
        assert!(r.take(ip(2), t0 + s(20)));
        // The first registration leaves the window.
        assert!(r.take(ip(1), t0 + s(60)));
        assert!(!r.take(ip(1), t0 + s(61)));
    }

    #[test]
    fn a_failed_registration_is_given_back() {
        let t0 = Instant::now();
        let mut r = Registrations::new(1, Duration::from_secs(60), 100);
        assert!(r.take(ip(1), t0));
        r.give_back(ip(1), t0);
        assert_eq!(r.tracked(), 0);
        assert!(r.take(ip(1), t0));
        assert!(!r.take(ip(1), t0));
    }

    #[test]
    fn records_are_bounded_expired_then_oldest_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Registrations::new(1, s(60), 2);
        assert!(r.take(ip(1), t0));
        assert!(r.take(ip(2), t0 + s(1)));
        assert!(r.take(ip(3), t0 + s(2)));
        assert_eq!(r.tracked(), 2);
        // ip(1), the oldest, was forgotten; ip(2) and ip(3) are still counted.
        assert!(!r.take(ip(2), t0 + s(3)));
        assert!(r.take(ip(1), t0 + s(3)));
        assert_eq!(r.tracked(), 2);
        // After the window everything expired: room without evicting a live record.
        assert!(r.take(ip(4), t0 + s(100)));
        assert!(!r.take(ip(4), t0 + s(100)));
        assert!(r.tracked() <= 2);
    }
}
