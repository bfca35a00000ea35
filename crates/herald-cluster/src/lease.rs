//! Lease decisions, with an explicit `now` (milliseconds since the Unix epoch).
//!
//! A node beats by writing its heartbeat key with a TTL equal to the lease; Redis expires
//! the key when the node stops. The other nodes take a node whose beat stays away for one
//! more lease as lost (every beat vanishes at once when Redis restarts empty, and comes
//! back within a third of a lease), then remove its sessions.

use std::time::Duration;

/// Shortest lease accepted: shorter ones risk expiring between two beats under load.
pub const MIN_LEASE: Duration = Duration::from_secs(3);
/// Longest lease accepted: a dead node's sessions stay routable for this long.
pub const MAX_LEASE: Duration = Duration::from_secs(600);

/// How often a node renews its heartbeat: three times per lease, so a single late beat
/// does not let the lease expire.
pub fn beat_interval(lease: Duration) -> Duration {
    lease / 3
}

/// How old a heartbeat is (`beat_ms` read from the key); a beat stamped in the future
/// (clock skew between nodes) counts as fresh.
pub fn age(beat_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(beat_ms))
}

/// Whether a node holds its lease: its heartbeat key exists (`beat_ms` is Some; Redis
/// expired it otherwise) and is younger than the lease — the second check covers a key
/// written without TTL by mistake or a Redis whose expiry lags.
pub fn alive(beat_ms: Option<u64>, now_ms: u64, lease: Duration) -> bool {
    beat_ms.is_some_and(|b| age(b, now_ms) < lease)
}

/// One row of `herald cluster status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node name.
    pub node: String,
    /// Age of its last heartbeat; None when the key expired (the node is dead or gone).
    pub lease_age: Option<Duration>,
    /// Registered sessions held by the node.
    pub sessions: usize,
}

/// Renders `herald cluster status`'s table, nodes sorted by name.
pub fn render_status(rows: &[NodeRow], lease: Duration) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    let mut out = format!(
        "{:<24} {:<8} {:>10} {:>9}\n",
        "NODE", "STATE", "LEASE AGE", "SESSIONS"
    );
    for r in rows {
        let (state, age) = match r.lease_age {
            Some(a) if a < lease => ("up", format!("{:.1}s", a.as_secs_f64())),
            Some(a) => ("expired", format!("{:.1}s", a.as_secs_f64())),
            None => ("down", "-".to_string()),
        };
        out.push_str(&format!(
            "{:<24} {:<8} {:>10} {:>9}\n",
            r.node, state, age, r.sessions
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn lease_holds_until_it_expires() {
        assert!(alive(Some(1_000), 1_000, LEASE));
        assert!(alive(Some(1_000), 15_999, LEASE));
        assert!(!alive(Some(1_000), 16_000, LEASE));
        assert!(!alive(None, 1_000, LEASE));
        // A beat from a node whose clock runs ahead is fresh, not negative.
        assert!(alive(Some(20_000), 1_000, LEASE));
        assert_eq!(age(20_000, 1_000), Duration::ZERO);
        assert_eq!(beat_interval(LEASE), Duration::from_secs(5));
    }

    #[test]
    fn status_table() {
        let rows = vec![
            NodeRow {
                node: "n2".into(),
                lease_age: None,
                sessions: 3,
            },
            NodeRow {
                node: "n1".into(),
                lease_age: Some(Duration::from_millis(1200)),
                sessions: 2,
            },
        ];
        let t = render_status(&rows, LEASE);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("n1 ") && lines[1].contains(" up ") && lines[1].contains("1.2s")
        );
        assert!(
            lines[2].starts_with("n2 ") && lines[2].contains(" down ") && lines[2].ends_with(" 3")
        );
    }
}
