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

    /// Whether `ip` may register one more account at `now`.
    pub fn allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        let window = self.window;
        match self.by_ip.get_mut(&ip) {
            None => true,
            Some(times) => {
                expire(times, now, window);
                let n = times.len();
                if n == 0 {
                    self.by_ip.remove(&ip);
                }
                n < self.max as usize
            }
        }
    }

    /// `ip` registered an account at `now`.
    pub fn record(&mut self, ip: IpAddr, now: Instant) {
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
        let mut r = Registrations::new(2, Duration::from_secs(60), 100);
        assert!(r.allows(ip(1), t0));
        r.record(ip(1), t0);
        r.record(ip(1), t0 + Duration::from_secs(10));
        assert!(!r.allows(ip(1), t0 + Duration::from_secs(20)));
        // Another address is not affected.
        assert!(r.allows(ip(2), t0 + Duration::from_secs(20)));
        // The first registration leaves the window.
        assert!(r.allows(ip(1), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn records_are_bounded_expired_then_oldest_first() {
        let t0 = Instant::now();
        let mut r = Registrations::new(1, Duration::from_secs(60), 2);
        r.record(ip(1), t0);
        r.record(ip(2), t0 + Duration::from_secs(1));
        r.record(ip(3), t0 + Duration::from_secs(2));
        assert_eq!(r.tracked(), 2);
        // ip(1), the oldest, was forgotten.
        assert!(r.allows(ip(1), t0 + Duration::from_secs(3)));
        assert!(!r.allows(ip(2), t0 + Duration::from_secs(3)));
        // After the window everything expired: room without evicting a live record.
        r.record(ip(4), t0 + Duration::from_secs(100));
        assert!(!r.allows(ip(4), t0 + Duration::from_secs(100)));
        assert!(r.tracked() <= 2);
    }
}
