//! Bounds on the work a stanza or a peer can make federation do: outgoing setups in progress
//! (all together and per local user), dialback verifications in progress, and the memory of
//! remote domains whose setup failed (so a stanza to a dead domain does not cost a new DNS
//! lookup and connect each time). In-memory bookkeeping only, with the clock passed in;
//! herald-server decides when to ask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_proto::error::StanzaErrorCondition;

/// Which cap refused a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// The cap for everybody together.
    Total,
    /// The cap for one key (a local user).
    PerKey,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_key: HashMap<String, usize>,
}

/// Slots in use, at most `max_total` together and `max_per_key` for one key.
pub struct Slots {
    max_total: usize,
    max_per_key: usize,
    counts: Arc<Mutex<Counts>>,
}

impl Slots {
    /// Counters enforcing these caps.
    pub fn new(max_total: usize, max_per_key: usize) -> Slots {
        Slots {
            max_total,
            max_per_key,
            counts: Default::default(),
        }
    }

    /// Takes a slot, counted for `key` too when there is one; the guard gives it back.
    pub fn take(&self, key: Option<&str>) -> Result<Slot, Over> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err(Over::Total);
        }
        if let Some(k) = key {
            let n = c.per_key.get(k).copied().unwrap_or(0);
            if n >= self.max_per_key {
                return Err(Over::PerKey);
            }
            c.per_key.insert(k.to_string(), n + 1);
        }
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            key: key.map(str::to_string),
        })
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One slot in use; dropping it frees it, so no path can leak one.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    key: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(k) = &self.key {
            if let Some(n) = c.per_key.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_key.remove(k);
                }
            }
        }
    }
}

/// Remote domains whose setup failed recently, with the condition their stanzas get.
pub struct FailedDomains {
    backoff: Duration,
    max_entries: usize,
    /// domain (lowercase) → (failed at, condition).
    entries: HashMap<String, (Instant, StanzaErrorCondition)>,
}

impl FailedDomains {
    /// Remembers failures for `backoff` (zero: never), at most `max_entries` at once.
    pub fn new(backoff: Duration, max_entries: usize) -> FailedDomains {
        FailedDomains {
            backoff,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// The condition to bounce with if `domain` failed less than `backoff` before `now`.
    pub fn check(&mut self, domain: &str, now: Instant) -> Option<StanzaErrorCondition> {
        let (at, cond) = *self.entries.get(domain)?;
        if now.saturating_duration_since(at) < self.backoff {
            return Some(cond);
        }
        self.entries.remove(domain);
        None
    }

    /// Notes that setting up `domain` failed at `now`. When full, expired entries go first,
    /// then the oldest: a flood of dead domains only shortens how long each is remembered.
    pub fn record(&mut self, domain: &str, cond: StanzaErrorCondition, now: Instant) {
        if self.backoff.is_zero() {
            return;
        }
        if !self.entries.contains_key(domain) && self.entries.len() >= self.max_entries {
            let backoff = self.backoff;
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < backoff);
            if self.entries.len() >= self.max_entries {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(d, _)| d.clone());
                if let Some(d) = oldest {
                    self.entries.remove(&d);
                }
            }
        }
        self.entries.insert(domain.to_string(), (now, cond));
    }

    /// Forgets `domain` (a connection to it was set up after all).
    pub fn forget(&mut self, domain: &str) {
        self.entries.remove(domain);
    }

    /// Domains remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StanzaErrorCondition::{RemoteServerNotFound as NotFound, RemoteServerTimeout};

    #[test]
    fn slots_cap_the_total_and_each_key_and_come_back_on_drop() {
        let s = Slots::new(3, 2);
        let a1 = s.take(Some("alice")).ok();
        let _a2 = s.take(Some("alice")).ok();
        assert_eq!(s.take(Some("alice")).err(), Some(Over::PerKey));
        let b1 = s.take(Some("bob")).ok();
        assert_eq!(s.take(None).err(), Some(Over::Total));
        assert_eq!(s.take(Some("carol")).err(), Some(Over::Total));
        drop(b1);
        // The server's own stanzas (no key) count only against the total.
        let none = s.take(None).ok();
        assert!(none.is_some());
        assert_eq!(s.in_use(), 3);
        drop(a1);
        let a3 = s.take(Some("alice"));
        assert!(a3.is_ok());
        assert_eq!(s.in_use(), 3);
        drop(a3);
        assert_eq!(s.in_use(), 2);
    }

    #[test]
    fn failures_are_remembered_for_the_backoff_only() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut f = FailedDomains::new(60 * sec, 10);
        f.record("dead.example", RemoteServerTimeout, t0);
        assert_eq!(f.check("dead.example", t0), Some(RemoteServerTimeout));
        assert_eq!(
            f.check("dead.example", t0 + 59 * sec),
            Some(RemoteServerTimeout)
        );
        assert_eq!(f.check("other.example", t0), None);
        assert_eq!(f.check("dead.example", t0 + 60 * sec), None);
        assert!(f.is_empty(), "an expired entry is dropped when seen");
        f.record("dead.example", NotFound, t0);
        f.forget("dead.example");
        assert_eq!(f.check("dead.example", t0), None);
    }

    #[test]
    fn a_full_memory_drops_expired_then_oldest_entries() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut f = FailedDomains::new(10 * sec, 2);
        f.record("a", NotFound, t0);
        f.record("b", NotFound, t0 + sec);
        // Full, nothing expired: the oldest (a) goes.
        f.record("c", NotFound, t0 + 2 * sec);
        assert_eq!(f.len(), 2);
        assert_eq!(f.check("a", t0 + 2 * sec), None);
        assert_eq!(f.check("b", t0 + 2 * sec), Some(NotFound));
        // b has expired by t0+11s: it goes, c stays although it is older than d.
        f.record("d", NotFound, t0 + 11 * sec);
        assert_eq!(f.check("c", t0 + 11 * sec), Some(NotFound));
        assert_eq!(f.check("d", t0 + 11 * sec), Some(NotFound));
        assert_eq!(f.len(), 2);
        // Re-recording a known domain never evicts another.
        f.record("c", RemoteServerTimeout, t0 + 11 * sec);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn zero_backoff_remembers_nothing() {
        let mut f = FailedDomains::new(Duration::ZERO, 10);
        f.record("a", NotFound, Instant::now());
        assert!(f.is_empty());
    }
}
