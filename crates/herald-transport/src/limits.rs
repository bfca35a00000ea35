//! Connection counting for `[limits]`: every open connection (global and per IP address),
//! the c2s connections of each address not yet authenticated, and the rate at which an
//! address opens new ones. A connection holds a guard; its drop gives the slot back, so no
//! path can leak one.
//!
//! "Address" means an IPv4 address, or an IPv6 /64: one IPv6 host usually holds a whole /64,
//! so counting single IPv6 addresses would give it 2^64 budgets. IPv4-mapped IPv6 addresses
//! count as their IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
    /// `limits.max_unauthenticated_per_ip`.
    UnauthenticatedPerIp,
    /// `limits.connection_rate_per_ip`: the connection is closed without a word, since
    /// answering each one would cost what the limit saves.
    RatePerIp,
}

impl Refused {
    /// The text of the `policy-violation` stream error.
    pub fn text(self) -> &'static str {
        match self {
            Refused::Total => "too many connections",
            Refused::PerIp => "too many connections from your address",
            Refused::UnauthenticatedPerIp => {
                "too many unauthenticated connections from your address"
            }
            Refused::RatePerIp => "too many new connections from your address",
        }
    }
}

#[derive(Default)]
struct PerIp {
    open: usize,
    unauthenticated: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, PerIp>,
}

impl Counts {
    /// Drops the entry of `ip` once nothing counts on it.
    fn tidy(&mut self, ip: IpAddr) {
        if self
            .per_ip
            .get(&ip)
            .is_some_and(|p| p.open == 0 && p.unauthenticated == 0)
        {
            self.per_ip.remove(&ip);
        }
    }
}

/// New connections per second an address may open, and how many at once beyond that rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectRate {
    /// Per second; 0: no limit.
    pub per_second: u64,
    /// At once.
    pub burst: u64,
}

/// Most addresses whose recent connections are remembered; beyond it, after forgetting every
/// address whose budget is whole again, a new address is let through unmetered (the other
/// limits still apply) rather than refused, so a spray of addresses cannot lock others out.
const RATE_ADDRESSES: usize = 65_536;

/// Token buckets of the addresses that connected lately (an address whose bucket is full
/// again is forgotten).
#[derive(Default)]
struct Recent {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Recent {
    /// Takes one connection of `key`'s budget at `now`: false if it has none left.
    fn admit(&mut self, key: IpAddr, rate: ConnectRate, now: Instant) -> bool {
        let (per_s, burst) = (rate.per_second as f64, rate.burst.max(1) as f64);
        let refill = |(tokens, last): (f64, Instant)| {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            (tokens + dt * per_s).min(burst)
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= RATE_ADDRESSES {
            self.buckets.retain(|_, b| refill(*b) < burst);
            if self.buckets.len() >= RATE_ADDRESSES {
                return true;
            }
        }
        let tokens = self.buckets.get(&key).map_or(burst, |b| refill(*b));
        if tokens < 1.0 {
            self.buckets.insert(key, (tokens, now));
            return false;
        }
        self.buckets.insert(key, (tokens - 1.0, now));
        true
    }
}

/// The counters and their limits.
pub struct ConnCounts {
    max_total: usize,
    max_per_ip: usize,
    max_unauthenticated_per_ip: usize,
    rate: ConnectRate,
    counts: Arc<Mutex<Counts>>,
    recent: Mutex<Recent>,
    log: Mutex<RefusalLog>,
}

/// When refusals were last logged, and how many went unlogged since.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    quiet: u64,
}

/// At most one refusal line per this interval: a flood of connections must not become a
/// flood of log lines (CPU, and the disk the logs are on).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

impl ConnCounts {
    /// Counters enforcing these limits, without a connection rate.
    pub fn new(max_total: usize, max_per_ip: usize, max_unauthenticated_per_ip: usize) -> Self {
        ConnCounts {
            max_total,
            max_per_ip,
            max_unauthenticated_per_ip,
            rate: ConnectRate {
                per_second: 0,
                burst: 0,
            },
            counts: Default::default(),
            recent: Default::default(),
            log: Default::default(),
        }
    }

    /// These counters, also limiting how fast one address opens connections.
    pub fn with_rate(mut self, rate: ConnectRate) -> Self {
        self.rate = rate;
        self
    }

    /// Whether a refusal at `now` should be logged, and how many were not logged since the
    /// last one that was (at most one line per second whatever the flood).
    pub fn log_refusal(&self, now: Instant) -> Option<u64> {
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if l.last
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_EVERY)
        {
            l.quiet += 1;
            return None;
        }
        l.last = Some(now);
        Some(std::mem::take(&mut l.quiet))
    }

    /// Counts a new connection from `ip` at `now`, or says which limit it would pass: the
    /// connection rate first (checked before anything is counted), then the open counts.
    pub fn open_at(&self, ip: IpAddr, now: Instant) -> Result<OpenGuard, Refused> {
        if self.rate.per_second > 0 {
            let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if !r.admit(addr_key(ip), self.rate, now) {
                return Err(Refused::RatePerIp);
            }
        }
        self.open(ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or says which limit it would pass (not the rate:
    /// see [`ConnCounts::open_at`]).
    pub fn open(&self, ip: IpAddr) -> Result<OpenGuard, Refused> {
        let ip = addr_key(ip);
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let p = c.per_ip.entry(ip).or_default();
        if p.open >= self.max_per_ip {
            c.tidy(ip);
            return Err(Refused::PerIp);
        }
        p.open += 1;
        c.total += 1;
        Ok(OpenGuard {
            counts: self.counts.clone(),
            ip,
        })
    }

    /// Counts a connection from `ip` as not yet authenticated, or refuses it at the limit.
    pub fn unauthenticated(&self, ip: IpAddr) -> Result<UnauthGuard, Refused> {
        let ip = addr_key(ip);
        let mut c = self.lock();
        let p = c.per_ip.entry(ip).or_default();
        if p.unauthenticated >= self.max_unauthenticated_per_ip {
            c.tidy(ip);
            return Err(Refused::UnauthenticatedPerIp);
        }
        p.unauthenticated += 1;
        Ok(UnauthGuard {
            counts: self.counts.clone(),
            ip,
        })
    }

    /// Open connections of every kind.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Open and unauthenticated connections from `ip`.
    pub fn of_ip(&self, ip: IpAddr) -> (usize, usize) {
        self.lock()
            .per_ip
            .get(&addr_key(ip))
            .map_or((0, 0), |p| (p.open, p.unauthenticated))
    }
}

/// One open connection; dropping it frees its slot.
pub struct OpenGuard {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(p) = c.per_ip.get_mut(&self.ip) {
            p.open = p.open.saturating_sub(1);
        }
        c.tidy(self.ip);
    }
}

/// One connection not yet authenticated; dropped when negotiation ends (authenticated or not).
pub struct UnauthGuard {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for UnauthGuard {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = c.per_ip.get_mut(&self.ip) {
            p.unauthenticated = p.unauthenticated.saturating_sub(1);
        }
        c.tidy(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_free_their_slots() {
        let c = ConnCounts::new(3, 2, 1);
        let a = IpAddr::from([127, 0, 0, 1]);
        let b: IpAddr = IpAddr::from([10, 0, 0, 1]);
        let g1 = c.open(a).ok();
        let _g2 = c.open(a).ok();
        assert_eq!(c.open(a).err(), Some(Refused::PerIp));
        let _g3 = c.open(b).ok();
        assert_eq!(c.open(b).err(), Some(Refused::Total));
        let u = c.unauthenticated(a).ok();
        assert_eq!(
            c.unauthenticated(a).err(),
            Some(Refused::UnauthenticatedPerIp)
        );
        drop(u);
        assert!(c.unauthenticated(a).is_ok());
        drop(g1);
        assert_eq!(c.total(), 2);
        assert!(c.open(b).is_ok());
        assert_eq!(c.of_ip(b), (1, 0));
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let c = ConnCounts::new(10, 2, 10);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let a2: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g = (c.open(a).ok(), c.open(a2).ok());
        assert_eq!(c.open(a).err(), Some(Refused::PerIp), "same /64");
        assert!(c.open(other).is_ok(), "another /64");
        let v4: IpAddr = [192, 0, 2, 7].into();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _h = c.open(v4).ok();
        assert_eq!(c.of_ip(mapped), (1, 0));
    }

    #[test]
    fn the_connection_rate_allows_a_burst_then_its_rate_per_address() {
        let rate = ConnectRate {
            per_second: 10,
            burst: 3,
        };
        let c = ConnCounts::new(100, 100, 100).with_rate(rate);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(c.open_at(a, t).ok());
        }
        assert_eq!(c.open_at(a, t).err(), Some(Refused::RatePerIp));
        // A refused attempt counts nothing.
        assert_eq!(c.of_ip(a), (3, 0));
        // Another address has its own budget.
        assert!(c.open_at(b, t).is_ok());
        // Closing does not give the rate back; time does: one token per 100 ms.
        held.clear();
        assert_eq!(
            c.open_at(a, t + Duration::from_millis(50)).err(),
            Some(Refused::RatePerIp)
        );
        assert!(c.open_at(a, t + Duration::from_millis(160)).is_ok());
        assert_eq!(
            c.open_at(a, t + Duration::from_millis(170)).err(),
            Some(Refused::RatePerIp)
        );
        // Idle for long enough, the whole burst is back.
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(c.open_at(a, later).is_ok());
        }
    }

    #[test]
    fn a_spray_of_addresses_is_not_refused_for_want_of_memory() {
        let mut r = Recent::default();
        let rate = ConnectRate {
            per_second: 1,
            burst: 2,
        };
        let t = Instant::now();
        for i in 0..RATE_ADDRESSES as u32 {
            assert!(r.admit(IpAddr::from(i.to_be_bytes()), rate, t));
        }
        // Full of addresses still in debt... not here: each used 1 of 2, so none is whole;
        // a new address is let through, not remembered.
        assert!(r.admit([250, 0, 0, 1].into(), rate, t));
        assert_eq!(r.buckets.len(), RATE_ADDRESSES);
        // Once the old ones are whole again they are forgotten and the new one is metered.
        let later = t + Duration::from_secs(5);
        assert!(r.admit([250, 0, 0, 1].into(), rate, later));
        assert_eq!(r.buckets.len(), 1);
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second_with_the_count_left_out() {
        let c = ConnCounts::new(1, 1, 1);
        let t = Instant::now();
        assert_eq!(c.log_refusal(t), Some(0));
        for i in 1..=5 {
            assert_eq!(c.log_refusal(t + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(c.log_refusal(t + Duration::from_millis(1000)), Some(5));
        assert_eq!(c.log_refusal(t + Duration::from_millis(1001)), None);
    }
}
