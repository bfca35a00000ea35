//! Where a stanza for a local account goes when its sessions may be on several nodes.
//!
//! The decision is the single-node one (RFC 6121 §8.5.2.1.1,
//! [`herald_session::resources::best_resources`]) applied to the union of this node's
//! sessions and the other nodes' registry entries, so a cluster chooses exactly the
//! resources one node holding them all would choose.

use std::collections::BTreeMap;

use herald_session::resources::{best_resources, ResourceEntry};

use crate::{Entry, State};

/// Where a chosen resource lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// On this node (the local resource table is authoritative for it).
    Local,
    /// On another node, reached through its delivery stream.
    Remote(String),
}

/// The resources a message to a bare JID goes to, grouped by where they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Resourceparts on this node.
    pub local: Vec<String>,
    /// Other node → its resourceparts (one delivery per node).
    pub remote: BTreeMap<String, Vec<String>>,
}

impl Plan {
    /// No session anywhere qualifies: the message goes to offline storage (only then — a
    /// user online on another node must not have it stored offline).
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// The union of `local` (this node's table) and `remote` (the registry hash of the
/// account: resourcepart → entry, already filtered to nodes holding their lease). Entries
/// naming this node are skipped: the local table is the truth for them.
pub fn union<Tx>(
    self_node: &str,
    local: &[ResourceEntry<Tx>],
    remote: &[(String, Entry)],
) -> Vec<ResourceEntry<Location>> {
    let mut all: Vec<ResourceEntry<Location>> = local
        .iter()
        .map(|r| ResourceEntry {
            resource: r.resource.clone(),
            session_id: r.session_id,
            tx: Location::Local,
            priority: r.priority,
            available: r.available,
            carbons: r.carbons,
            hibernated: r.hibernated,
            transport: r.transport,
        })
        .collect();
    for (res, e) in remote {
        if e.node == self_node || all.iter().any(|r| &r.resource == res) {
            continue;
        }
        all.push(ResourceEntry {
            resource: res.clone(),
            session_id: 0,
            tx: Location::Remote(e.node.clone()),
            priority: e.priority,
            available: e.available,
            carbons: e.carbons,
            hibernated: e.state == State::Hibernated,
            transport: "cluster",
        });
    }
    all
}

/// Groups chosen resources by location.
pub fn plan(chosen: &[&ResourceEntry<Location>]) -> Plan {
    let mut p = Plan::default();
    for r in chosen {
        match &r.tx {
            Location::Local => p.local.push(r.resource.clone()),
            Location::Remote(n) => p
                .remote
                .entry(n.clone())
                .or_default()
                .push(r.resource.clone()),
        }
    }
    p
}

/// RFC 6121 §8.5.2.1.1 over the whole cluster: a normal/chat message to the bare JID.
pub fn bare_message<Tx>(
    self_node: &str,
    local: &[ResourceEntry<Tx>],
    remote: &[(String, Entry)],
) -> Plan {
    let all = union(self_node, local, remote);
    plan(&best_resources(&all))
}

/// XEP-0280: the user's other sessions with carbons enabled, anywhere in the cluster
/// (`except` is the sending or receiving resource itself).
pub fn carbon_targets<Tx>(
    self_node: &str,
    local: &[ResourceEntry<Tx>],
    remote: &[(String, Entry)],
    except: &str,
) -> Plan {
    let all = union(self_node, local, remote);
    let chosen: Vec<&ResourceEntry<Location>> = all
        .iter()
        .filter(|r| r.carbons && r.available && r.resource != except)
        .collect();
    plan(&chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(res: &str, prio: i8, available: bool) -> ResourceEntry<()> {
        ResourceEntry {
            resource: res.into(),
            session_id: 1,
            tx: (),
            priority: prio,
            available,
            carbons: true,
            hibernated: false,
            transport: "tcp",
        }
    }

    fn remote(res: &str, node: &str, prio: i8) -> (String, Entry) {
        (
            res.into(),
            Entry {
                node: node.into(),
                state: State::Live,
                priority: prio,
                available: true,
                carbons: true,
            },
        )
    }

    #[test]
    fn highest_priority_wins_across_nodes() {
        let p = bare_message(
            "n1",
            &[local("a", 1, true)],
            &[
                remote("b", "n2", 5),
                remote("c", "n3", 5),
                remote("d", "n2", 0),
            ],
        );
        assert!(p.local.is_empty());
        assert_eq!(p.remote.get("n2"), Some(&vec!["b".to_string()]));
        assert_eq!(p.remote.get("n3"), Some(&vec!["c".to_string()]));
    }

    #[test]
    fn local_tie_and_remote_share() {
        let p = bare_message("n1", &[local("a", 2, true)], &[remote("b", "n2", 2)]);
        assert_eq!(p.local, vec!["a"]);
        assert_eq!(p.remote.get("n2"), Some(&vec!["b".to_string()]));
    }

    #[test]
    fn offline_only_when_nobody_anywhere_qualifies() {
        // Online on another node only: not offline.
        assert!(!bare_message::<()>("n1", &[], &[remote("b", "n2", 0)]).is_empty());
        // Negative priority everywhere, or unavailable: offline, as on one node.
        assert!(bare_message("n1", &[local("a", 0, false)], &[remote("b", "n2", -1)]).is_empty());
        assert!(bare_message::<()>("n1", &[], &[]).is_empty());
    }

    #[test]
    fn own_node_entries_defer_to_the_local_table() {
        // The registry still lists "a" on n1 but the local table says it is unavailable.
        let p = bare_message("n1", &[local("a", 0, false)], &[remote("a", "n1", 9)]);
        assert!(p.is_empty());
    }

    #[test]
    fn carbons_reach_other_nodes_but_not_the_sender() {
        let p = carbon_targets(
            "n1",
            &[local("a", 0, true), local("x", 0, true)],
            &[remote("b", "n2", -5)],
            "a",
        );
        assert_eq!(p.local, vec!["x"]);
        assert_eq!(p.remote.get("n2"), Some(&vec!["b".to_string()]));
    }
}
