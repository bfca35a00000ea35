//! Connection counting for `[limits]`: every open connection (global and per IP address) and
//! the c2s connections of each address not yet authenticated. A connection holds a guard; its
//! drop gives the slot back, so no path can leak one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
    /// `limits.max_unauthenticated_per_ip`.
    UnauthenticatedPerIp,
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

/// The counters and their limits.
pub struct ConnCounts {
    max_total: usize,
    max_per_ip: usize,
    max_unauthenticated_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

impl ConnCounts {
    /// Counters enforcing these limits.
    pub fn new(max_total: usize, max_per_ip: usize, max_unauthenticated_per_ip: usize) -> Self {
        ConnCounts {
            max_total,
            max_per_ip,
            max_unauthenticated_per_ip,
            counts: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or says which limit it would pass.
    pub fn open(&self, ip: IpAddr) -> Result<OpenGuard, Refused> {
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
            .get(&ip)
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
}
