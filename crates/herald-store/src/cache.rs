//! Per-user values read from the store and kept in memory (the server's archive
//! preferences and blocklists): consulted for every message, changed only by the user's own
//! IQs. Knows nothing of what the values mean, and does not read the store itself: the
//! caller fills it with what it read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// A small per-user cache of values read from the store (archive preferences, blocklists),
/// invalidated by whoever changes them. Bounded: it is cleared when it grows past `cap`.
/// Once told which accounts have anything stored ([`UserCache::know_stored`]), it answers
/// the default for every other account without a read: a burst of messages to 300 users
/// would otherwise cost 300 lookups per cache before the first delivery to each.
pub struct UserCache<T> {
    inner: Mutex<CacheInner<T>>,
    cap: usize,
    empty: Arc<T>,
}

struct CacheInner<T> {
    map: HashMap<String, Arc<T>>,
    /// Accounts that may have a stored value; None: unknown, every miss reads the store.
    stored: Option<HashSet<String>>,
}

impl<T: Default> UserCache<T> {
    /// An empty cache holding at most `cap` users.
    pub fn new(cap: usize) -> Self {
        UserCache {
            inner: Mutex::new(CacheInner {
                map: Default::default(),
                stored: None,
            }),
            cap,
            empty: Default::default(),
        }
    }
}

impl<T> UserCache<T> {
    fn lock(&self) -> MutexGuard<'_, CacheInner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, or the default for an account known to have nothing stored.
    pub fn get(&self, user: &str) -> Option<Arc<T>> {
        let c = self.lock();
        if let Some(v) = c.map.get(user) {
            return Some(v.clone());
        }
        match &c.stored {
            Some(set) if !set.contains(user) => Some(self.empty.clone()),
            _ => None,
        }
    }

    /// Stores a value.
    pub fn put(&self, user: &str, v: T) -> Arc<T> {
        let v = Arc::new(v);
        let mut c = self.lock();
        if c.map.len() >= self.cap {
            c.map.clear();
        }
        c.map.insert(user.to_string(), v.clone());
        v
    }

    /// Forgets a user's value (it changed, so from now on it may be stored).
    pub fn invalidate(&self, user: &str) {
        let mut c = self.lock();
        c.map.remove(user);
        if let Some(set) = c.stored.as_mut() {
            set.insert(user.to_string());
        }
    }

    /// Forgets a user whose data is gone from the store (the account was removed): nothing
    /// is cached for it, and nothing is stored either, so its next lookup is the default.
    pub fn forget(&self, user: &str) {
        let mut c = self.lock();
        c.map.remove(user);
        if let Some(set) = c.stored.as_mut() {
            set.remove(user);
        }
    }

    /// The accounts that have a value in the store (read once at start, before any change).
    pub fn know_stored(&self, accounts: Vec<String>) {
        self.lock().stored = Some(accounts.into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_invalidates() {
        let c = UserCache::new(2);
        c.put("a", 1);
        c.put("b", 2);
        assert_eq!(c.get("a").as_deref(), Some(&1));
        c.put("c", 3);
        assert!(c.get("a").is_none(), "cleared when full");
        c.invalidate("c");
        assert!(c.get("c").is_none());
    }

    #[test]
    fn accounts_with_nothing_stored_get_the_default_without_a_read() {
        let c: UserCache<Vec<u8>> = UserCache::new(10);
        assert!(c.get("a").is_none(), "nothing known yet: read the store");
        c.know_stored(vec!["b".into()]);
        assert_eq!(c.get("a").as_deref(), Some(&vec![]));
        assert!(c.get("b").is_none(), "b has a stored value: read it");
        c.put("b", vec![1]);
        assert_eq!(c.get("b").as_deref(), Some(&vec![1]));
        // A change makes the account one that may have a stored value.
        c.invalidate("a");
        assert!(c.get("a").is_none());
        c.invalidate("b");
        assert!(c.get("b").is_none());
    }

    #[test]
    fn a_forgotten_user_gets_the_default() {
        let c: UserCache<Vec<u8>> = UserCache::new(10);
        c.put("a", vec![1]);
        c.forget("a");
        assert!(c.get("a").is_none(), "nothing known: read the store");
        c.know_stored(vec!["b".into()]);
        c.put("b", vec![2]);
        c.forget("b");
        assert_eq!(c.get("b").as_deref(), Some(&vec![]));
    }
}
