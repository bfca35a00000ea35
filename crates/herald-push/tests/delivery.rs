//! When a stanza entering a session's SM queue may push (crates/herald-push/RULES.md §2, §5):
//! the CSI veto and what "asleep" means, as a table.

use herald_push::delivery::{asleep, csi_lets_push, queued_may_push};

#[test]
fn asleep_means_gone_or_not_acking() {
    // (connected, ack overdue) → asleep
    for (connected, overdue, want) in [
        (true, false, false),
        (true, true, true),
        (false, false, true),
        (false, true, true),
    ] {
        assert_eq!(asleep(connected, overdue), want, "{connected} {overdue}");
    }
}

#[test]
fn csi_held_stanzas_never_push() {
    // (CSI would hold it, client active) → may push
    for (hold, active, want) in [
        (false, false, true),
        (false, true, true),
        (true, false, false),
        (true, true, true),
    ] {
        assert_eq!(csi_lets_push(hold, active), want, "{hold} {active}");
    }
}

#[test]
fn rule_a_fires_only_for_a_routed_stanza_csi_let_through_to_a_sleeping_device() {
    for csi in [false, true] {
        for routed in [false, true] {
            for connected in [false, true] {
                for overdue in [false, true] {
                    let want = csi && routed && (!connected || overdue);
                    assert_eq!(
                        queued_may_push(csi, routed, connected, overdue),
                        want,
                        "csi={csi} routed={routed} connected={connected} overdue={overdue}"
                    );
                }
            }
        }
    }
    // The CSI row of RULES.md §5: an inactive client's held chat state to a hibernated
    // session does not push.
    assert!(!queued_may_push(
        csi_lets_push(true, false),
        true,
        false,
        false
    ));
}
