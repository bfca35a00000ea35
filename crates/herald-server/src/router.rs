//! The router's map: who is online (bare JID → resources → inbox) and which components are
//! attached. The only structure shared between sessions; locks are never held across `.await`.

use std::collections::HashMap;
use std::sync::RwLock;

use herald_proto::error::StreamError;
use herald_proto::Element;
use tokio::sync::mpsc;

/// A stanza on its way to a session, with the id it keeps on every path (for push dedup).
#[derive(Clone, Debug)]
pub struct Routed {
    /// Process-unique id.
    pub id: u64,
    /// The stanza, addressed and stamped.
    pub el: Element,
}

/// What a session task can be asked to do.
pub enum SessionMsg {
    /// Deliver this stanza to the client. Boxed, like every large payload here: each
    /// session's inbox allocates its slots up front, and a small message keeps that small.
    Stanza(Box<Routed>),
    /// Push moved the hibernation deadline (extended hibernation, XEP-0357 glue).
    SetExpiry(std::time::Instant),
    /// XEP-0198 resumption: take over this connection.
    Resume {
        /// The new connection.
        conn: Box<crate::conn::Conn>,
        /// The client's h.
        h: u32,
        /// The resumption id.
        previd: String,
    },
    /// End the stream with this error (e.g. `conflict` when another login takes the resource).
    Kick(StreamError),
    /// Run this internal command inside the session (roster pushes, admin actions).
    Command(crate::session::Command),
}

/// One bound resource.
#[derive(Clone, Debug)]
pub struct ResourceEntry {
    /// The resourcepart.
    pub resource: String,
    /// Unique id of the session for this process's life.
    pub session_id: u64,
    /// The session task's inbox.
    pub tx: SessionTx,
    /// Presence priority (RFC 6121 §4.7.2.3), meaningful when `available`.
    pub priority: i8,
    /// Has sent available presence.
    pub available: bool,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
}

/// A session task's inbox (bounded by `limits.session_inbox`; see `inbox` for why not mpsc).
pub type SessionTx = crate::inbox::Sender<SessionMsg>;

/// Sends to a component connection.
pub type ComponentTx = mpsc::Sender<Element>;

/// Online users and components.
#[derive(Default)]
pub struct Router {
    users: RwLock<HashMap<String, Vec<ResourceEntry>>>,
    components: RwLock<HashMap<String, ComponentTx>>,
}

impl Router {
    /// Registers a bound resource; returns the entry it replaced (RFC 6120 §7.7.2.2 conflict).
    pub fn bind(&self, bare: &str, entry: ResourceEntry) -> Option<ResourceEntry> {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        // Most accounts have one resource online: no room for four until a second binds.
        let list = users
            .entry(bare.to_string())
            .or_insert_with(|| Vec::with_capacity(1));
        if let Some(pos) = list.iter().position(|r| r.resource == entry.resource) {
            Some(std::mem::replace(&mut list[pos], entry))
        } else {
            list.push(entry);
            None
        }
    }

    /// Removes a resource if it still belongs to `session_id`.
    pub fn unbind(&self, bare: &str, resource: &str, session_id: u64) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = users.get_mut(bare) {
            list.retain(|r| !(r.resource == resource && r.session_id == session_id));
            if list.is_empty() {
                users.remove(bare);
            }
        }
    }

    /// Records presence availability and priority of a resource.
    pub fn set_presence(&self, bare: &str, session_id: u64, available: bool, priority: i8) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = users
            .get_mut(bare)
            .and_then(|l| l.iter_mut().find(|r| r.session_id == session_id))
        {
            r.available = available;
            r.priority = priority;
        }
    }

    /// Records the carbons flag of a resource.
    pub fn set_carbons(&self, bare: &str, session_id: u64, on: bool) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = users
            .get_mut(bare)
            .and_then(|l| l.iter_mut().find(|r| r.session_id == session_id))
        {
            r.carbons = on;
        }
    }

    /// All bound resources of a user.
    pub fn resources(&self, bare: &str) -> Vec<ResourceEntry> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(bare).cloned().unwrap_or_default()
    }

    /// The inbox of one full JID.
    pub fn resource(&self, bare: &str, resource: &str) -> Option<ResourceEntry> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(bare)
            .and_then(|l| l.iter().find(|r| r.resource == resource).cloned())
    }

    /// Whether the user has any bound resource.
    pub fn is_online(&self, bare: &str) -> bool {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.contains_key(bare)
    }

    /// Every bound resource (for shutdown).
    pub fn all_sessions(&self) -> Vec<ResourceEntry> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.values().flatten().cloned().collect()
    }

    /// Attaches a component; false if one is already attached for that domain.
    pub fn attach_component(&self, domain: &str, tx: ComponentTx) -> bool {
        let mut c = self.components.write().unwrap_or_else(|e| e.into_inner());
        if c.get(domain).is_some_and(|t| !t.is_closed()) {
            return false;
        }
        c.insert(domain.to_string(), tx);
        true
    }

    /// Detaches a component if `tx` is still the attached one.
    pub fn detach_component(&self, domain: &str, tx: &ComponentTx) {
        let mut c = self.components.write().unwrap_or_else(|e| e.into_inner());
        if c.get(domain).is_some_and(|t| t.same_channel(tx)) {
            c.remove(domain);
        }
    }

    /// The attached component for a configured component domain.
    pub fn component(&self, domain: &str) -> Option<ComponentTx> {
        let c = self.components.read().unwrap_or_else(|e| e.into_inner());
        c.get(domain).cloned()
    }
}

/// RFC 6121 §8.5.2.1.1: the resources a message to the bare JID goes to — those with the
/// highest non-negative priority among available resources (all of them on a tie).
pub fn best_resources(list: &[ResourceEntry]) -> Vec<&ResourceEntry> {
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

    fn entry(res: &str, id: u64, available: bool, priority: i8) -> ResourceEntry {
        let (tx, _rx) = crate::inbox::bounded(1);
        ResourceEntry {
            resource: res.into(),
            session_id: id,
            tx,
            priority,
            available,
            carbons: false,
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
    fn bind_replaces_same_resource_and_unbind_checks_owner() {
        let r = Router::default();
        assert!(r.bind("u@d", entry("a", 1, false, 0)).is_none());
        let old = r.bind("u@d", entry("a", 2, false, 0)).unwrap();
        assert_eq!(old.session_id, 1);
        r.unbind("u@d", "a", 1); // stale owner: no effect
        assert!(r.is_online("u@d"));
        r.unbind("u@d", "a", 2);
        assert!(!r.is_online("u@d"));
    }
}
