//! The authentication throttle's records: recent failures per account name and per peer IP
//! address, in memory and bounded ([`MAX_RECORDS`] of each). The decisions (delay, lockout)
//! are `herald_session::throttle`'s and the negotiation machine's; this only stores.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use herald_proto::jid::BareJid;
use herald_session::throttle::{Failures, Throttle};

/// Records kept per map (accounts, addresses). When a map is full, expired records go first,
/// then the oldest.
pub const MAX_RECORDS: usize = 65_536;

/// Failure records of accounts and peer addresses.
pub struct AuthThrottle {
    cfg: Throttle,
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    accounts: Bounded<String>,
    peers: Bounded<IpAddr>,
}

struct Bounded<K> {
    map: HashMap<K, Failures>,
    cap: usize,
}

impl<K> Default for Bounded<K> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            cap: MAX_RECORDS,
        }
    }
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    fn get(&self, k: &K, cfg: &Throttle, now: Instant) -> Failures {
        self.map.get(k).map(|f| f.at(cfg, now)).unwrap_or_default()
    }

    fn fail(&mut self, k: K, cfg: &Throttle, now: Instant, lockable: bool) {
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.map.retain(|_, f| !f.is_expired(cfg, now));
            if self.map.len() >= self.cap {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    self.map.remove(&o);
                }
            }
        }
        let f = self.map.entry(k).or_default();
        *f = f.failed(cfg, now, lockable);
    }
}

impl AuthThrottle {
    /// Empty records under `cfg`.
    pub fn new(cfg: Throttle) -> Self {
        AuthThrottle {
            cfg,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current records of `account` (default for none) and of `ip`.
    pub fn get(&self, account: Option<&BareJid>, ip: IpAddr, now: Instant) -> (Failures, Failures) {
        let m = self.maps();
        let a = account
            .map(|a| m.accounts.get(&a.to_string(), &self.cfg, now))
            .unwrap_or_default();
        (a, m.peers.get(&ip, &self.cfg, now))
    }

    /// One more failure of `account` (when a name is one) from `ip`.
    pub fn fail(&self, account: Option<&BareJid>, ip: IpAddr, now: Instant) {
        let mut m = self.maps();
        if let Some(a) = account {
            m.accounts.fail(a.to_string(), &self.cfg, now, true);
        }
        m.peers.fail(ip, &self.cfg, now, false);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_full_map_drops_expired_then_oldest_records() {
        let cfg = Throttle {
            max_delay: Duration::from_secs(8),
            lockout_failures: 3,
            lockout_time: Duration::from_secs(60),
        };
        let t = Instant::now();
        let mut b: Bounded<u32> = Bounded {
            map: HashMap::new(),
            cap: 3,
        };
        b.fail(1, &cfg, t, false);
        b.fail(2, &cfg, t + Duration::from_secs(10), false);
        b.fail(3, &cfg, t + Duration::from_secs(20), false);
        // Full: 4 takes the place of the oldest (1).
        b.fail(4, &cfg, t + Duration::from_secs(30), false);
        assert_eq!(b.map.len(), 3);
        assert!(!b.map.contains_key(&1));
        // 2 and 3 expired by now: both go.
        b.fail(5, &cfg, t + Duration::from_secs(85), false);
        assert_eq!(b.map.len(), 2);
        assert_eq!(b.get(&4, &cfg, t + Duration::from_secs(85)).count, 1);
    }
}
