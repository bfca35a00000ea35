//! Whether a stanza entering a session's XEP-0198 queue may fire rule a (RULES.md §2, §5).
//! The session reports facts (what CSI did with the stanza, whether the device is
//! connected and acking); these functions decide, so the session and the engine cannot
//! disagree about what "asleep" means.
//!
//! Must not: look at stanzas (the classifier does) or at registrations (the engine does).

/// Whether the device behind a session cannot be reading now: its connection is gone
/// (hibernated), or it left an `<r/>` unanswered for `max_ack_delay`. The engine's session
/// modes mirror this (Hibernated, AckOverdue).
pub fn asleep(connected: bool, ack_overdue: bool) -> bool {
    !connected || ack_overdue
}

/// Whether a stanza offered to a session may push, as far as CSI (XEP-0352) is concerned:
/// one CSI would hold back (`csi_would_hold`, the classifier's verdict) never pushes while
/// the client is inactive — not when it is held, not when a later flush or a hibernation
/// lets it out. An active client's stanzas are not held, so they may.
pub fn csi_lets_push(csi_would_hold: bool, csi_active: bool) -> bool {
    !csi_would_hold || csi_active
}

/// Rule a for one stanza entering the SM queue: the engine hears of it only when it is the
/// stanza CSI let through (not one flushed from the CSI buffer), it is a routed stanza (a
/// server-generated one has no id), and the device is asleep.
pub fn queued_may_push(
    csi_let_it_push: bool,
    routed: bool,
    connected: bool,
    ack_overdue: bool,
) -> bool {
    csi_let_it_push && routed && asleep(connected, ack_overdue)
}
