//! The Redis key layout. Every key starts with `herald:` so one Redis can be shared with
//! other software; bare JIDs are embedded as they are (Redis keys are binary-safe). The
//! channel names below get `:{db}` appended by the node (pub/sub ignores the database
//! number), so clusters on different databases of one Redis stay apart.

/// The heartbeat of `node` (a string: ms time of the last beat; TTL = the lease).
pub fn node(node: &str) -> String {
    format!("herald:node:{node}")
}

/// The set of every node name that ever beat, so `herald cluster status` can list nodes
/// whose heartbeat expired (dead) next to the live ones.
pub const NODES: &str = "herald:nodes";

/// The hash resourcepart → [`crate::Entry`] of one account.
pub fn sessions(bare: &str) -> String {
    format!("herald:sess:{bare}")
}

/// The set of bare JIDs with sessions on `node`, so the node that finds `node` dead can
/// remove its entries without scanning every account.
pub fn node_accounts(node: &str) -> String {
    format!("herald:acct:{node}")
}

/// The channel on which a node announces `node|bare` after changing `bare`'s entries, so
/// the others refresh their view of that account.
pub const REGISTRY_CHANNEL: &str = "herald:reg";

/// The node a XEP-0114 component for `domain` is attached to (a string; removed by that
/// node when the component leaves, ignored while the node's heartbeat is expired).
pub fn component(domain: &str) -> String {
    format!("herald:comp:{domain}")
}

/// The channel on which a node announces `node|bare` after changing `bare`'s push
/// registrations in the store, so the others reload them.
pub const PUSH_CHANNEL: &str = "herald:push";

/// Set (NX) by the node that adopts the saved sessions of `node` after finding it dead, so
/// only one does, and so `node`, restarting, knows its saved sessions are held elsewhere.
pub fn takeover(node: &str) -> String {
    format!("herald:takeover:{node}")
}

/// The channel on which a node shares what the others keep in memory too (`node\n`, a
/// kind, then its lines): PEP recipients and verified caps, so a publish on any node
/// notifies every recipient; and which account's cached blocklist, archive preferences or
/// avatar changed, or which account was removed.
pub const STATE_CHANNEL: &str = "herald:state";

/// The node serving the group chat service (`[muc]`): one at a time, so each room lives in
/// one place; the others route its stanzas there. Taken over when that node is lost.
pub const MUC_HOME: &str = "herald:muc-home";

/// Which session (`node:session id`) delivers `bare`'s offline store now (XEP-0160: to one
/// resource at a time, cluster-wide); with a TTL, so a lost node's claim ends by itself.
pub fn offline_claim(bare: &str) -> String {
    format!("herald:offline:{bare}")
}

/// The delivery stream of `node`.
pub fn inbox(node: &str) -> String {
    format!("herald:in:{node}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(super::node("n1"), "herald:node:n1");
        assert_eq!(super::sessions("a@d"), "herald:sess:a@d");
        assert_eq!(super::inbox("n1"), "herald:in:n1");
        assert_eq!(super::node_accounts("n1"), "herald:acct:n1");
        assert_eq!(super::component("push.d"), "herald:comp:push.d");
        assert_eq!(super::takeover("n2"), "herald:takeover:n2");
    }
}
