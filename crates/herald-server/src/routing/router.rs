//! The router's map: who is online (bare JID → resources → inbox) and which components are
//! attached. The only structure shared between sessions; locks are never held across `.await`.
//! The bind policy and the choice among resources are herald-session's
//! [`ResourceTable`]; this keeps it under a lock,
//! wakes [`Router::wait_unbound`] and holds the components.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use herald_session::budget::Budget;

use herald_session::resources::{self, ResourceTable};

use crate::routing::msg::{ComponentTx, SessionTx};

pub use herald_session::resources::best_resources;

/// One bound resource, with its session's inbox.
pub type ResourceEntry = resources::ResourceEntry<SessionTx>;

/// What binding a resource did to the account's other sessions.
pub type Bound = resources::Bound<SessionTx>;

/// Online users and components.
pub struct Router {
    users: RwLock<ResourceTable<SessionTx>>,
    components: RwLock<HashMap<String, ComponentTx>>,
    /// Woken whenever a resource is unbound (for [`Router::wait_unbound`]).
    unbound: tokio::sync::Notify,
    /// Each account's byte budget (`limits.account_queue_bytes`), shared by its sessions'
    /// budgets. Held by the sessions alone: it lives as long as one of them (or a stanza
    /// charged to it) does, so an account's count survives a takeover and returns to zero.
    account_budgets: Mutex<HashMap<String, Weak<Budget>>>,
    /// Cluster mode: the accounts whose sessions on this node changed since the cluster
    /// writer last copied them to the registry.
    dirty: std::sync::OnceLock<Arc<Dirty>>,
    /// Ids of the other nodes' sessions mirrored here (a range apart from this node's).
    remote_ids: std::sync::atomic::AtomicU64,
}

/// Accounts to copy to the cluster registry: a set, so an account that changes many times
/// before the writer runs is written once, and bounded by the accounts online.
#[derive(Default)]
pub struct Dirty {
    set: Mutex<DirtySet>,
    /// Woken when the set gains an account.
    pub notify: tokio::sync::Notify,
    /// Woken when [`Dirty::done`] moves.
    done_notify: tokio::sync::Notify,
    done: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct DirtySet {
    set: std::collections::HashSet<String>,
    /// Marks so far.
    marked: u64,
}

impl Dirty {
    /// Adds `bare`.
    pub fn mark(&self, bare: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        s.marked += 1;
        if s.set.insert(bare.to_string()) && s.set.len() == 1 {
            self.notify.notify_one();
        }
    }

    /// Takes up to `max` of the accounts marked so far (the rest stay marked), with the
    /// count of marks the taker covers once it is done with them: all marks so far when it
    /// took every account, else none new.
    pub fn take(&self, max: usize) -> (Vec<String>, u64) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if s.set.len() <= max {
            let marked = s.marked;
            return (s.set.drain().collect(), marked);
        }
        let some: Vec<String> = s.set.iter().take(max).cloned().collect();
        for b in &some {
            s.set.remove(b);
        }
        (some, self.done.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The taker finished what it took with [`Dirty::take`]'s count `upto`.
    pub fn finished(&self, upto: u64) {
        self.done
            .fetch_max(upto, std::sync::atomic::Ordering::AcqRel);
        self.done_notify.notify_waiters();
    }

    /// Waits (at most `limit`) until every account marked before this call was taken and
    /// finished: what a session changed before it sent a stanza is written before the
    /// stanza leaves for another node.
    pub async fn settled(&self, limit: std::time::Duration) {
        let want = self.set.lock().unwrap_or_else(|e| e.into_inner()).marked;
        let _ = tokio::time::timeout(limit, async {
            loop {
                let wait = self.done_notify.notified();
                if self.done.load(std::sync::atomic::Ordering::Acquire) >= want {
                    return;
                }
                wait.await;
            }
        })
        .await;
    }
}

/// Where mirrored sessions' ids start: above any id this node gives its own sessions.
const REMOTE_IDS: u64 = 1 << 62;

impl Default for Router {
    fn default() -> Router {
        Router {
            users: Default::default(),
            components: Default::default(),
            unbound: Default::default(),
            account_budgets: Default::default(),
            dirty: Default::default(),
            remote_ids: std::sync::atomic::AtomicU64::new(REMOTE_IDS),
        }
    }
}

impl Router {
    /// Cluster mode: from now on, changes to this node's sessions are marked in the returned
    /// set for the cluster writer.
    pub fn track_changes(&self) -> Arc<Dirty> {
        self.dirty.get_or_init(Default::default).clone()
    }

    fn changed(&self, bare: &str) {
        if let Some(d) = self.dirty.get() {
            d.mark(bare);
        }
    }

    fn users(&self) -> RwLockReadGuard<'_, ResourceTable<SessionTx>> {
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    fn users_mut(&self) -> RwLockWriteGuard<'_, ResourceTable<SessionTx>> {
        self.users.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a bound resource, keeping the account at `max` sessions at most
    /// ([`ResourceTable::bind`]: same resource replaced, oldest hibernated session evicted at
    /// the limit). Err(entry) when all are connected (RFC 6120 §7.6.2.2: resource-constraint).
    pub fn bind(
        &self,
        bare: &str,
        entry: ResourceEntry,
        max: usize,
    ) -> Result<Bound, ResourceEntry> {
        let r = self.users_mut().bind(bare, entry, max);
        self.changed(bare);
        r
    }

    /// The byte budget of `bare`'s sessions together (made with `limit` if none is alive).
    pub fn account_budget(&self, bare: &str, limit: usize) -> Arc<Budget> {
        let mut m = self
            .account_budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = m.get(bare).and_then(Weak::upgrade) {
            return b;
        }
        // Budgets of accounts without sessions are dead weak pointers: dropped as the map
        // grows, so it stays proportional to the accounts online.
        if m.len() >= 64 && m.len().is_power_of_two() {
            m.retain(|_, b| b.strong_count() > 0);
        }
        let b = Budget::new(limit);
        m.insert(bare.to_string(), Arc::downgrade(&b));
        b
    }

    /// Bytes held for `bare`'s sessions together (0 when none holds anything).
    pub fn account_queue_bytes(&self, bare: &str) -> usize {
        let m = self
            .account_budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.get(bare).and_then(Weak::upgrade).map_or(0, |b| b.used())
    }

    /// Removes a resource if it still belongs to `session_id`.
    pub fn unbind(&self, bare: &str, resource: &str, session_id: u64) {
        self.users_mut().unbind(bare, resource, session_id);
        self.changed(bare);
        self.unbound.notify_waiters();
    }

    /// Waits (at most `limit`) until none of the sessions `ids` of `bare` is bound any more;
    /// false on timeout.
    pub async fn wait_unbound(&self, bare: &str, ids: &[u64], limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                // Registered before the check: an unbind in between still wakes it.
                let unbound = self.unbound.notified();
                if !self.users().any_bound(bare, ids) {
                    return;
                }
                unbound.await;
            }
        })
        .await
        .is_ok()
    }

    /// Records presence availability and priority of a resource.
    pub fn set_presence(&self, bare: &str, session_id: u64, available: bool, priority: i8) {
        self.users_mut()
            .set_presence(bare, session_id, available, priority);
        self.changed(bare);
    }

    /// Records what carries a session's connection (after a resumption).
    pub fn set_transport(&self, bare: &str, session_id: u64, transport: &'static str) {
        self.users_mut().set_transport(bare, session_id, transport);
    }

    /// Records whether a session is hibernated.
    pub fn set_hibernated(&self, bare: &str, session_id: u64, on: bool) {
        self.users_mut().set_hibernated(bare, session_id, on);
        self.changed(bare);
    }

    /// Records the carbons flag of a resource.
    pub fn set_carbons(&self, bare: &str, session_id: u64, on: bool) {
        self.users_mut().set_carbons(bare, session_id, on);
        self.changed(bare);
    }

    /// All bound resources of a user.
    pub fn resources(&self, bare: &str) -> Vec<ResourceEntry> {
        self.users().resources(bare).to_vec()
    }

    /// The inbox of one full JID.
    pub fn resource(&self, bare: &str, resource: &str) -> Option<ResourceEntry> {
        self.users().resource(bare, resource).cloned()
    }

    /// Whether the user has any bound resource.
    pub fn is_online(&self, bare: &str) -> bool {
        self.users().is_online(bare)
    }

    /// Every resource bound on this node (for shutdown and metrics; not the other nodes'
    /// sessions mirrored here in cluster mode).
    pub fn all_sessions(&self) -> Vec<ResourceEntry> {
        self.users()
            .all()
            .filter(|r| r.tx.is_local())
            .cloned()
            .collect()
    }

    /// This node's own resources of `bare` (cluster mode: what it writes to the registry).
    pub fn local_resources(&self, bare: &str) -> Vec<ResourceEntry> {
        self.users()
            .resources(bare)
            .iter()
            .filter(|r| r.tx.is_local())
            .cloned()
            .collect()
    }

    /// The accounts with a resource bound on this node.
    pub fn local_accounts(&self) -> Vec<String> {
        self.users()
            .accounts()
            .filter(|(_, l)| l.iter().any(|r| r.tx.is_local()))
            .map(|(b, _)| b.to_string())
            .collect()
    }

    /// How many resources are bound on this node.
    pub fn local_count(&self) -> usize {
        self.users().all().filter(|r| r.tx.is_local()).count()
    }

    /// Cluster mode: makes the other nodes' sessions of `bare` mirrored here exactly
    /// `remote` (resourcepart, its entry, the session's node link). This node's own
    /// sessions are left alone and win a resource both name: the other node is told of the
    /// conflict by the bind that made it. A mirrored session that is unchanged keeps its
    /// id, so a stanza in flight to it is not mistaken for one to a new session.
    pub fn sync_remote(
        &self,
        bare: &str,
        remote: Vec<(
            String,
            herald_cluster::Entry,
            Arc<crate::routing::msg::NodeLink>,
        )>,
    ) {
        let mut fresh = Vec::with_capacity(remote.len());
        let mut users = self.users_mut();
        let current = users.resources(bare);
        for (res, e, link) in remote {
            if current.iter().any(|r| r.resource == res && r.tx.is_local()) {
                continue;
            }
            let kept = current.iter().find(|r| {
                r.resource == res
                    && r.tx
                        .as_remote()
                        .is_some_and(|t| Arc::ptr_eq(&t.link, &link))
            });
            let (session_id, tx) = match kept {
                Some(k) => (k.session_id, k.tx.clone()),
                None => (
                    self.remote_ids
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    SessionTx::remote(format!("{bare}/{res}"), link),
                ),
            };
            fresh.push(ResourceEntry {
                resource: res,
                session_id,
                tx,
                priority: e.priority,
                available: e.available,
                carbons: e.carbons,
                hibernated: e.state == herald_cluster::State::Hibernated,
                transport: "cluster",
            });
        }
        users.edit(bare, |list| {
            list.retain(|r| r.tx.is_local());
            list.extend(fresh);
        });
        drop(users);
        self.unbound.notify_waiters();
    }

    /// Cluster mode: forgets the sessions mirrored from `node` (found dead); how many.
    pub fn drop_node(&self, node: &str) -> usize {
        let n = self
            .users_mut()
            .remove_where(|r| r.tx.as_remote().is_some_and(|t| t.link.node == node));
        self.unbound.notify_waiters();
        n
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

/// An available resource with a throw-away inbox, for unit tests.
#[cfg(test)]
pub(crate) fn test_entry(res: &str, id: u64) -> ResourceEntry {
    let (tx, _rx) = crate::routing::msg::SessionTx::inbox(1, 1 << 20, None);
    ResourceEntry {
        resource: res.into(),
        session_id: id,
        tx,
        priority: 0,
        available: true,
        carbons: false,
        hibernated: false,
        transport: herald_transport::conn::TRANSPORT_TCP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_entry as entry;

    #[tokio::test]
    async fn wait_unbound_returns_once_the_sessions_are_gone() {
        let r = std::sync::Arc::new(Router::default());
        let limit = std::time::Duration::from_secs(10);
        assert!(r.wait_unbound("u@d", &[1], limit).await, "nothing bound");
        r.bind("u@d", entry("a", 1), 10).unwrap();
        r.bind("u@d", entry("b", 2), 10).unwrap();
        let short = std::time::Duration::from_millis(20);
        assert!(!r.wait_unbound("u@d", &[1, 2], short).await);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_unbound("u@d", &[1, 2], limit).await }
        });
        r.unbind("u@d", "a", 1);
        r.unbind("u@d", "b", 2);
        assert!(waiter.await.unwrap());
        // Sessions not waited for do not hold it up.
        r.bind("u@d", entry("c", 3), 10).unwrap();
        assert!(r.wait_unbound("u@d", &[1, 2], limit).await);
    }
}
