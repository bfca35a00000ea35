//! Byte budgets for the queues a peer can fill (a session's inbox, XEP-0198 queue and CSI
//! buffer; an account's sessions together; an s2s or component queue).
//!
//! A count bound alone lets a few large stanzas pin far more memory than intended, so each
//! queued stanza is also charged its size (the owner's measure, e.g.
//! `herald_xep::stanza::mem_cost`) against a [`Budget`], and against its group's budget when
//! the queue belongs to one (an account's sessions share one). A [`Charge`] travels with the
//! stanza and gives its bytes back when it is dropped, wherever that happens (delivered,
//! acknowledged, bounced, stored offline, or the session task unwinding), so no path can
//! leak bytes and a budget returns to zero once its queues are empty.
//!
//! Must not: decide what exceeding a budget means (the owner answers as for its count
//! bound), or measure stanzas. Counters are atomics (no lock): the router's threads charge
//! while the session task releases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes held against a limit.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// Charges held now (a stanza each).
    held: AtomicUsize,
}

impl Budget {
    /// An empty budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Charges (stanzas) held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` if they fit: within the limit, or the budget holds nothing (one item of
    /// any size is taken, so a single stanza the parser accepted can always pass an idle
    /// queue and the bound never wedges it).
    fn try_take(&self, bytes: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let fits = used == 0 || used.saturating_add(bytes) <= self.limit;
                fits.then(|| used.saturating_add(bytes))
            })
            .is_ok();
        if taken {
            self.held.fetch_add(1, Ordering::AcqRel);
        }
        taken
    }

    fn take(&self, bytes: usize) {
        self.held.fetch_add(1, Ordering::AcqRel);
        // Saturating: a count never wraps to a small number that would admit more.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_add(bytes))
            });
    }

    fn give_back(&self, bytes: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(1))
            });
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// Which budget refused a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The queue's own.
    Queue,
    /// Its group's (the account's).
    Group,
}

/// One queue's budget, and the budget of the group it belongs to, if any. Cheap to clone
/// (two `Arc`s); every clone charges the same counters.
#[derive(Debug, Clone)]
pub struct QueueBudget {
    own: Arc<Budget>,
    group: Option<Arc<Budget>>,
    on_release: Option<ReleaseHook>,
}

/// Called each time a charge of a queue is given back: a producer that paces itself by the
/// queue (a large room's join) waits for it instead of polling. It must be cheap: it runs
/// wherever a charge is dropped.
#[derive(Clone)]
pub struct ReleaseHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ReleaseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseHook")
    }
}

impl QueueBudget {
    /// A queue with a budget of `limit` bytes, within `group` when given.
    pub fn new(limit: usize, group: Option<Arc<Budget>>) -> QueueBudget {
        QueueBudget {
            own: Budget::new(limit),
            group,
            on_release: None,
        }
    }

    /// As [`QueueBudget::new`], calling `hook` after each charge is given back.
    pub fn with_release_hook(
        limit: usize,
        group: Option<Arc<Budget>>,
        hook: ReleaseHook,
    ) -> QueueBudget {
        QueueBudget {
            on_release: Some(hook),
            ..QueueBudget::new(limit, group)
        }
    }

    /// The queue's limit in bytes.
    pub fn limit(&self) -> usize {
        self.own.limit()
    }

    /// Charges (stanzas) the queue holds now.
    pub fn held(&self) -> usize {
        self.own.held()
    }

    /// Charges `bytes` to the queue and its group if both have room (see
    /// [`Budget`]: an empty budget takes anything); else nothing is charged.
    pub fn try_charge(&self, bytes: usize) -> Result<Charge, Over> {
        if !self.own.try_take(bytes) {
            return Err(Over::Queue);
        }
        if let Some(g) = &self.group {
            if !g.try_take(bytes) {
                self.own.give_back(bytes);
                return Err(Over::Group);
            }
        }
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Charges `bytes` whatever the limits: for what is already held and must be counted
    /// (the server's own replies entering a queue, a queue restored from storage).
    pub fn charge(&self, bytes: usize) -> Charge {
        self.own.take(bytes);
        if let Some(g) = &self.group {
            g.take(bytes);
        }
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    /// Bytes the queue holds now.
    pub fn used(&self) -> usize {
        self.own.used()
    }

    /// The group's budget.
    pub fn group(&self) -> Option<&Arc<Budget>> {
        self.group.as_ref()
    }
}

/// Bytes charged for one queued item; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: QueueBudget,
    bytes: usize,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.own.give_back(self.bytes);
        if let Some(g) = &self.budget.group {
            g.give_back(self.bytes);
        }
        if let Some(h) = &self.budget.on_release {
            (h.0)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_is_refused_past_the_limit_and_given_back_when_dropped() {
        let q = QueueBudget::new(1000, None);
        let a = q.try_charge(600).unwrap();
        let b = q.try_charge(400).unwrap();
        assert_eq!(q.used(), 1000);
        assert_eq!(q.try_charge(1).unwrap_err(), Over::Queue);
        assert_eq!(q.used(), 1000, "a refused charge takes nothing");
        drop(a);
        assert_eq!(q.used(), 400);
        let c = q.try_charge(600).unwrap();
        drop((b, c));
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn charges_are_counted_and_each_release_is_heard() {
        let heard = Arc::new(AtomicUsize::new(0));
        let h = heard.clone();
        let hook = ReleaseHook(Arc::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let q = QueueBudget::with_release_hook(1000, None, hook);
        let a = q.try_charge(10).unwrap();
        let b = q.charge(20);
        assert_eq!(q.held(), 2);
        assert!(q.try_charge(2000).is_err());
        assert_eq!(q.held(), 2, "a refused charge is not held");
        drop(a);
        assert_eq!((q.held(), heard.load(Ordering::SeqCst)), (1, 1));
        drop(b);
        assert_eq!(
            (q.held(), q.used(), heard.load(Ordering::SeqCst)),
            (0, 0, 2)
        );
    }

    #[test]
    fn an_empty_budget_takes_one_item_of_any_size() {
        let q = QueueBudget::new(1000, None);
        let big = q.try_charge(5000).unwrap();
        assert_eq!(q.try_charge(1).unwrap_err(), Over::Queue);
        drop(big);
        assert!(q.try_charge(1).is_ok());
    }

    #[test]
    fn the_group_bounds_its_queues_together() {
        let account = Budget::new(1500);
        let s1 = QueueBudget::new(1000, Some(account.clone()));
        let s2 = QueueBudget::new(1000, Some(account.clone()));
        let a = s1.try_charge(1000).unwrap();
        // s2 is empty and its own budget has room, but the account's has not.
        let held = s2.try_charge(500).unwrap();
        assert_eq!(s2.try_charge(1).unwrap_err(), Over::Group);
        assert_eq!(
            s2.used(),
            500,
            "refused by the group: the queue keeps nothing of it"
        );
        assert_eq!(account.used(), 1500);
        drop(a);
        assert_eq!(account.used(), 500);
        drop(held);
        assert_eq!((account.used(), s1.used(), s2.used()), (0, 0, 0));
    }

    #[test]
    fn a_forced_charge_counts_and_blocks_further_tries() {
        let account = Budget::new(1000);
        let q = QueueBudget::new(1000, Some(account.clone()));
        let forced = q.charge(1500);
        assert_eq!((q.used(), account.used()), (1500, 1500));
        assert_eq!(q.try_charge(1).unwrap_err(), Over::Queue);
        drop(forced);
        assert_eq!((q.used(), account.used()), (0, 0));
    }
}
