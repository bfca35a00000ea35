//! Who is online, as plain data: per account (bare JID) the bound resources and their
//! delivery flags.
//!
//! Owns the bind policy (RFC 6120 §7.7.2.2: the same resource replaces its session; below
//! the account's limit a resource is added; at the limit the oldest hibernated session makes
//! room; when all are connected the bind is refused, RFC 6120 §7.6.2.2 resource-constraint),
//! unbinding only by the session that still owns the resource, and the choice of the
//! resources a message to the bare JID goes to (RFC 6121 §8.5.2, [`best_resources`]).
//!
//! [`ResourceTable`] is generic over the session's inbox handle `Tx`, which it only stores and
//! hands back. Must not: do I/O, take locks (the owner wraps the table in one), read clocks
//! (the oldest session is the one with the smallest session id), or send anything.

use std::collections::HashMap;

/// One bound resource; `Tx` is the handle of the session's inbox.
#[derive(Clone, Debug)]
pub struct ResourceEntry<Tx> {
    /// The resourcepart.
    pub resource: String,
    /// Unique id of the session for this process's life.
    pub session_id: u64,
    /// The session task's inbox.
    pub tx: Tx,
    /// Presence priority (RFC 6121 §4.7.2.3), meaningful when `available`.
    pub priority: i8,
    /// Has sent available presence.
    pub available: bool,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
    /// XEP-0198 hibernation: the connection is gone, the session waits to be resumed.
    pub hibernated: bool,
    /// What carried the connection that bound it (`"tcp"`, `"websocket"`), for metrics.
    pub transport: &'static str,
}

/// What binding a resource did to the account's other sessions.
#[derive(Debug)]
pub enum Bound<Tx> {
    /// A resource more.
    Added,
    /// RFC 6120 §7.7.2.2: the session that had this resource; it must be told it was replaced.
    Replaced(ResourceEntry<Tx>),
    /// The account had its most sessions: its oldest hibernated one made room and must end.
    Evicted(ResourceEntry<Tx>),
}

/// The bound resources of every online account (bare JID → resources).
#[derive(Debug)]
pub struct ResourceTable<Tx> {
    users: HashMap<String, Vec<ResourceEntry<Tx>>>,
}

impl<Tx> Default for ResourceTable<Tx> {
    fn default() -> Self {
        ResourceTable {
            users: HashMap::new(),
        }
    }
}

impl<Tx> ResourceTable<Tx> {
    /// Registers a bound resource, keeping the account at `max` sessions at most. A session
    /// with the same resource is replaced; at the limit, the oldest hibernated session makes
    /// room (its queue is handed on as on expiry, so a phone that keeps failing to resume is
    /// not locked out until its old sessions expire). Err(entry) when all are connected
    /// (RFC 6120 §7.6.2.2: resource-constraint).
    pub fn bind(
        &mut self,
        bare: &str,
        entry: ResourceEntry<Tx>,
        max: usize,
    ) -> Result<Bound<Tx>, ResourceEntry<Tx>> {
        // Most accounts have one resource online: no room for four until a second binds.
        let list = self
            .users
            .entry(bare.to_string())
            .or_insert_with(|| Vec::with_capacity(1));
        if let Some(pos) = list.iter().position(|r| r.resource == entry.resource) {
            return Ok(Bound::Replaced(std::mem::replace(&mut list[pos], entry)));
        }
        if list.len() < max {
            list.push(entry);
            return Ok(Bound::Added);
        }
        let oldest = list
            .iter()
            .enumerate()
            .filter(|(_, r)| r.hibernated)
            .min_by_key(|(_, r)| r.session_id)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                let old = list.remove(i);
                list.push(entry);
                Ok(Bound::Evicted(old))
            }
            None => {
                if list.is_empty() {
                    self.users.remove(bare);
                }
                Err(entry)
            }
        }
    }

    /// Removes a resource if it still belongs to `session_id`.
    pub fn unbind(&mut self, bare: &str, resource: &str, session_id: u64) {
        if let Some(list) = self.users.get_mut(bare) {
            list.retain(|r| !(r.resource == resource && r.session_id == session_id));
            if list.is_empty() {
                self.users.remove(bare);
            }
        }
    }

    /// Edits `bare`'s list of entries in place (a cluster node mirroring the other nodes'
    /// sessions of the account); the account is dropped when the list ends up empty.
    pub fn edit(&mut self, bare: &str, f: impl FnOnce(&mut Vec<ResourceEntry<Tx>>)) {
        let list = self.users.entry(bare.to_string()).or_default();
        f(list);
        if list.is_empty() {
            self.users.remove(bare);
        }
    }

    /// Removes every entry for which `f` holds (the sessions of a cluster node found dead);
    /// how many went.
    pub fn remove_where(&mut self, f: impl Fn(&ResourceEntry<Tx>) -> bool) -> usize {
        let mut n = 0;
        self.users.retain(|_, list| {
            let before = list.len();
            list.retain(|r| !f(r));
            n += before - list.len();
            !list.is_empty()
        });
        n
    }

    /// Whether any of the sessions `ids` of `bare` is bound.
    pub fn any_bound(&self, bare: &str, ids: &[u64]) -> bool {
        self.users
            .get(bare)
            .is_some_and(|l| l.iter().any(|r| ids.contains(&r.session_id)))
    }

    /// Applies `f` to the entry of session `session_id`, if still bound.
    pub fn update(&mut self, bare: &str, session_id: u64, f: impl FnOnce(&mut ResourceEntry<Tx>)) {
        if let Some(r) = self
            .users
            .get_mut(bare)
            .and_then(|l| l.iter_mut().find(|r| r.session_id == session_id))
        {
            f(r);
        }
    }

    /// Records presence availability and priority of a resource.
    pub fn set_presence(&mut self, bare: &str, session_id: u64, available: bool, priority: i8) {
        self.update(bare, session_id, |r| {
            r.available = available;
            r.priority = priority;
        });
    }

    /// Records whether a session is hibernated.
    pub fn set_hibernated(&mut self, bare: &str, session_id: u64, on: bool) {
        self.update(bare, session_id, |r| r.hibernated = on);
    }

    /// Records what carries a resource's connection now (a resumption may come over
    /// another transport).
    pub fn set_transport(&mut self, bare: &str, session_id: u64, transport: &'static str) {
        self.update(bare, session_id, |r| r.transport = transport);
    }

    /// Records the carbons flag of a resource.
    pub fn set_carbons(&mut self, bare: &str, session_id: u64, on: bool) {
        self.update(bare, session_id, |r| r.carbons = on);
    }

    /// All bound resources of a user (empty when offline).
    pub fn resources(&self, bare: &str) -> &[ResourceEntry<Tx>] {
        self.users.get(bare).map(Vec::as_slice).unwrap_or_default()
    }

    /// The entry of one full JID.
    pub fn resource(&self, bare: &str, resource: &str) -> Option<&ResourceEntry<Tx>> {
        self.resources(bare).iter().find(|r| r.resource == resource)
    }

    /// Whether the user has any bound resource.
    pub fn is_online(&self, bare: &str) -> bool {
        self.users.contains_key(bare)
    }

    /// Every account with its bound resources.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &[ResourceEntry<Tx>])> {
        self.users.iter().map(|(b, l)| (b.as_str(), l.as_slice()))
    }

    /// Every bound resource of every user.
    pub fn all(&self) -> impl Iterator<Item = &ResourceEntry<Tx>> {
        self.users.values().flatten()
    }
}

/// RFC 6121 §8.5.2.1.1: the resources a message to the bare JID goes to — those with the
/// highest non-negative priority among available resources (all of them on a tie).
pub fn best_resources<Tx>(list: &[ResourceEntry<Tx>]) -> Vec<&ResourceEntry<Tx>> {
    let max = list
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .map(|r| r.priority)
        .max();
    match max {
        Some(m) => list
            .iter()
            .filter(|r| r.available && r.priority == m)
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(res: &str, id: u64, available: bool, priority: i8) -> ResourceEntry<()> {
        ResourceEntry {
            resource: res.into(),
            session_id: id,
            tx: (),
            priority,
            available,
            carbons: false,
            hibernated: false,
            transport: "tcp",
        }
    }

    #[test]
    fn highest_priority_wins_and_ties_share() {
        let l = vec![
            entry("a", 1, true, 5),
            entry("b", 2, true, 5),
            entry("c", 3, true, 1),
            entry("d", 4, false, 9),
            entry("e", 5, true, -1),
        ];
        let got: Vec<_> = best_resources(&l)
            .iter()
            .map(|r| r.resource.clone())
            .collect();
        assert_eq!(got, vec!["a", "b"]);
        assert!(best_resources(&[entry("x", 1, true, -1)]).is_empty());
        assert!(best_resources(&[entry("x", 1, false, 0)]).is_empty());
    }

    #[test]
    fn edit_and_remove_where_drop_emptied_accounts() {
        let mut r = ResourceTable::default();
        r.edit("u@d", |l| l.push(entry("a", 1, true, 0)));
        r.edit("v@d", |l| l.push(entry("b", 2, true, 0)));
        r.edit("v@d", |l| l.push(entry("c", 3, true, 0)));
        assert!(r.is_online("u@d"));
        r.edit("u@d", |l| l.clear());
        assert!(!r.is_online("u@d"));
        // Editing an absent account to nothing leaves no empty entry behind.
        r.edit("w@d", |_| {});
        assert!(!r.is_online("w@d"));
        assert_eq!(r.remove_where(|e| e.session_id == 2), 1);
        assert_eq!(r.resources("v@d").len(), 1);
        assert_eq!(r.remove_where(|e| e.session_id == 3), 1);
        assert!(!r.is_online("v@d"));
    }

    #[test]
    fn bind_replaces_same_resource_and_unbind_checks_owner() {
        let mut r = ResourceTable::default();
        assert!(matches!(
            r.bind("u@d", entry("a", 1, false, 0), 10),
            Ok(Bound::Added)
        ));
        match r.bind("u@d", entry("a", 2, false, 0), 10) {
            Ok(Bound::Replaced(old)) => assert_eq!(old.session_id, 1),
            other => panic!("{other:?}"),
        }
        r.unbind("u@d", "a", 1); // stale owner: no effect
        assert!(r.is_online("u@d"));
        r.unbind("u@d", "a", 2);
        assert!(!r.is_online("u@d"));
    }

    #[test]
    fn at_the_limit_the_oldest_hibernated_session_makes_room() {
        let mut r = ResourceTable::default();
        for (res, id) in [("a", 1), ("b", 2), ("c", 3)] {
            assert!(matches!(
                r.bind("u@d", entry(res, id, true, 0), 3),
                Ok(Bound::Added)
            ));
        }
        // All connected: refused, and nothing changes.
        let refused = r.bind("u@d", entry("d", 4, true, 0), 3).unwrap_err();
        assert_eq!(refused.session_id, 4);
        assert_eq!(r.resources("u@d").len(), 3);
        // A resource already bound is replaced even at the limit.
        assert!(matches!(
            r.bind("u@d", entry("b", 5, true, 0), 3),
            Ok(Bound::Replaced(_))
        ));
        r.set_hibernated("u@d", 3, true);
        r.set_hibernated("u@d", 5, true);
        match r.bind("u@d", entry("e", 6, true, 0), 3) {
            Ok(Bound::Evicted(old)) => assert_eq!(old.session_id, 3),
            other => panic!("{other:?}"),
        }
        let mut ids: Vec<_> = r.resources("u@d").iter().map(|e| e.session_id).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 5, 6]);
        // A resumed session is no longer a candidate.
        r.set_hibernated("u@d", 5, false);
        assert!(r.bind("u@d", entry("f", 7, true, 0), 3).is_err());
        // Refusing a first session leaves no empty entry behind.
        assert!(r.bind("v@d", entry("a", 8, true, 0), 0).is_err());
        assert!(!r.is_online("v@d"));
    }
}
