//! Authentication throttling decisions, pure and with explicit time: how long to wait before
//! answering a failed authentication (doubling per recent failure, capped) and when an account
//! is locked out (RFC 6120 §6.5.11 `temporary-auth-failure`). The driver keeps one
//! [`Failures`] record per peer address, per account name and per (account, address) pair in
//! [`Records`] (bounded), hands the current ones to [`crate::negotiate`] and updates them with
//! [`Failures::failed`].
//!
//! A lock holds for the address whose failures caused it, not for the whole account: an
//! account-wide lock would let anyone lock a user out of their own account by guessing from
//! elsewhere (the mission's "nobody pushes another user out"). Guessing spread over many
//! addresses still meets the delay, which grows with the account's failures from everywhere.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use herald_proto::jid::BareJid;

/// Throttling policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The longest wait before answering a failed authentication.
    pub max_delay: Duration,
    /// Failures of one account within `lockout_time` that lock it (0: never).
    pub lockout_failures: u32,
    /// The failure-counting window and the lockout's length; a record older than this
    /// (counting from its first failure, or from the lock) is forgotten.
    pub lockout_time: Duration,
}

/// Recent failed authentications of one account or one peer address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failures in the current window.
    pub count: u32,
    /// When the window began (the first failure in it).
    pub since: Option<Instant>,
    /// Locked until then (accounts only).
    pub locked_until: Option<Instant>,
}

fn add(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

impl Failures {
    /// The record as it stands at `now`: an expired window or lock is forgotten.
    pub fn at(self, cfg: &Throttle, now: Instant) -> Failures {
        match (self.locked_until, self.since) {
            (Some(until), _) if now < until => self,
            (Some(_), _) => Failures::default(),
            (None, Some(since)) if now < add(since, cfg.lockout_time) => self,
            _ => Failures::default(),
        }
    }

    /// Whether the account is locked out at `now`.
    pub fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|u| now < u)
    }

    /// Whether the record says nothing any more at `now` (the store may drop it).
    pub fn is_expired(&self, cfg: &Throttle, now: Instant) -> bool {
        self.at(cfg, now) == Failures::default()
    }

    /// One more failure at `now`; `lockable` (an account, not a peer address) locks the
    /// record for `lockout_time` once the window holds `lockout_failures`. A locked record
    /// is not extended.
    pub fn failed(self, cfg: &Throttle, now: Instant, lockable: bool) -> Failures {
        let cur = self.at(cfg, now);
        if cur.is_locked(now) {
            return cur;
        }
        let count = cur.count.saturating_add(1);
        let locked_until = (lockable && cfg.lockout_failures > 0 && count >= cfg.lockout_failures)
            .then(|| add(now, cfg.lockout_time));
        Failures {
            count,
            since: Some(cur.since.unwrap_or(now)),
            locked_until,
        }
    }
}

/// The wait before answering the `n`th recent failure (1-based): `base` doubled per earlier
/// failure, at most `max` (and never less than `base`).
pub fn failure_delay(base: Duration, max: Duration, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(31);
    base.checked_mul(1u32 << doublings)
        .unwrap_or(Duration::MAX)
        .min(max.max(base))
}

// The bounded records the driver keeps: plain data, the server holds them under its lock.

/// Records kept per map (accounts, addresses). When a map is full, expired records go first,
/// then the oldest.
pub const MAX_RECORDS: usize = 65_536;

/// Failure records of accounts and peer addresses, bounded. Plain data: the server keeps it
/// under its own lock.
pub struct Records {
    cfg: Throttle,
    /// Failures of an account from any address: they lengthen the delay, never lock.
    accounts: Bounded<String>,
    peers: Bounded<IpAddr>,
    /// Failures of an account from one address: these lock (that address only).
    pairs: Bounded<(String, IpAddr)>,
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

impl Records {
    /// Empty records under `cfg`.
    pub fn new(cfg: Throttle) -> Self {
        Records {
            cfg,
            accounts: Bounded::default(),
            peers: Bounded::default(),
            pairs: Bounded::default(),
        }
    }

    /// The current records of `account` (default for none) as seen from `ip`, and of `ip`:
    /// the account's count is its failures from every address, its lock the one `ip` earned.
    pub fn get(&self, account: Option<&BareJid>, ip: IpAddr, now: Instant) -> (Failures, Failures) {
        let a = account
            .map(|a| {
                let name = a.to_string();
                let lock = self.pairs.get(&(name.clone(), ip), &self.cfg, now);
                Failures {
                    locked_until: lock.locked_until,
                    ..self.accounts.get(&name, &self.cfg, now)
                }
            })
            .unwrap_or_default();
        (a, self.peers.get(&ip, &self.cfg, now))
    }

    /// One more failure of `account` (when a name is one) from `ip`.
    pub fn fail(&mut self, account: Option<&BareJid>, ip: IpAddr, now: Instant) {
        if let Some(a) = account {
            let name = a.to_string();
            self.pairs.fail((name.clone(), ip), &self.cfg, now, true);
            self.accounts.fail(name, &self.cfg, now, false);
        }
        self.peers.fail(ip, &self.cfg, now, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Throttle {
        Throttle {
            max_delay: Duration::from_secs(30),
            lockout_failures: 3,
            lockout_time: Duration::from_secs(60),
        }
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        for (n, want) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 30),
            (99, 30),
        ] {
            assert_eq!(
                failure_delay(base, max, n),
                Duration::from_secs(want),
                "n={n}"
            );
        }
        // A cap below the base never shortens the base.
        assert_eq!(
            failure_delay(base, Duration::ZERO, 3),
            Duration::from_secs(1)
        );
        assert_eq!(
            failure_delay(Duration::from_secs(u64::MAX / 2), Duration::MAX, 40),
            Duration::MAX
        );
    }

    #[test]
    fn account_locks_after_n_failures_in_the_window_until_it_expires() {
        let c = cfg();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // (time of the failure, count after, locked right after)
        let mut f = Failures::default();
        for (at, count, locked) in [(0, 1, false), (10, 2, false), (20, 3, true)] {
            f = f.failed(&c, s(at), true);
            assert_eq!(f.count, count, "at {at}");
            assert_eq!(f.is_locked(s(at)), locked, "at {at}");
        }
        // Locked for lockout_time from the third failure; more failures do not extend it.
        assert!(f.at(&c, s(79)).is_locked(s(79)));
        let g = f.failed(&c, s(50), true);
        assert_eq!(g, f);
        assert!(!f.at(&c, s(80)).is_locked(s(80)));
        assert_eq!(f.at(&c, s(80)), Failures::default());
        assert!(f.is_expired(&c, s(80)));
    }

    #[test]
    fn failures_outside_the_window_start_a_new_one() {
        let c = cfg();
        let t0 = Instant::now();
        let f =
            Failures::default()
                .failed(&c, t0, true)
                .failed(&c, t0 + Duration::from_secs(30), true);
        assert_eq!(f.count, 2);
        // 60 s after the first failure the window is over: this is the first of a new one.
        let g = f.failed(&c, t0 + Duration::from_secs(61), true);
        assert_eq!(g.count, 1);
        assert!(!g.is_locked(t0 + Duration::from_secs(61)));
    }

    #[test]
    fn peers_and_disabled_lockout_never_lock() {
        let mut c = cfg();
        let t0 = Instant::now();
        let mut peer = Failures::default();
        for _ in 0..10 {
            peer = peer.failed(&c, t0, false);
        }
        assert_eq!(peer.count, 10);
        assert!(!peer.is_locked(t0));
        c.lockout_failures = 0;
        let mut acct = Failures::default();
        for _ in 0..10 {
            acct = acct.failed(&c, t0, true);
        }
        assert!(!acct.is_locked(t0));
    }
}

#[cfg(test)]
mod records_tests {
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

#[cfg(test)]
mod lock_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lock_holds_for_the_guessing_address_only() {
        let mut r = Records::new(Throttle {
            max_delay: Duration::from_secs(8),
            lockout_failures: 3,
            lockout_time: Duration::from_secs(60),
        });
        let t = Instant::now();
        let Ok(alice) = BareJid::new("alice@example.org") else {
            panic!("jid");
        };
        let attacker: IpAddr = [203, 0, 113, 7].into();
        let owner: IpAddr = [198, 51, 100, 1].into();
        for _ in 0..3 {
            r.fail(Some(&alice), attacker, t);
        }
        let (a, p) = r.get(Some(&alice), attacker, t);
        assert!(a.is_locked(t), "the guessing address is locked out");
        assert_eq!((a.count, p.count), (3, 3));
        let (a, p) = r.get(Some(&alice), owner, t);
        assert!(!a.is_locked(t), "the owner elsewhere is not");
        // … but the account's failures still lengthen the delay of guesses from anywhere.
        assert_eq!((a.count, p.count), (3, 0));
        // The lock ends with lockout_time.
        let later = t + Duration::from_secs(61);
        assert!(!r.get(Some(&alice), attacker, later).0.is_locked(later));
    }
}
