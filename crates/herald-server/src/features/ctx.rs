//! What a feature handler sees of the session it runs for: [`SessionCtx`], instead of the
//! whole session task. It carries who the client is, its per-resource flags (this is their
//! one owner: the router's entry is a published copy, written only by the setters here), its
//! presence bookkeeping, and the [`Effect`]s a handler asks of the session, which the session
//! task carries out after the handler returns, in order. Handlers never see the connection,
//! the XEP-0198 queue or the CSI buffer; this module names no feature or session module.

use std::collections::HashSet;
use std::sync::Arc;

use herald_proto::jid::FullJid;
use herald_proto::Element;

use crate::Shared;

/// Per-session presence bookkeeping.
#[derive(Default, Debug)]
pub struct SessionPresence {
    /// The last available presence broadcast (answers probes), kept as XML: every idle
    /// session holds one.
    pub last: Option<herald_xep::stanza::Frozen>,
    /// JIDs that got directed presence and must get our unavailable (RFC 6121 §4.6.3).
    pub directed: HashSet<String>,
    /// Initial presence was sent.
    pub initial_sent: bool,
    /// The client asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    pub interested: bool,
}

/// Something a handler asks the session task to do once it returns.
#[derive(Debug)]
pub enum Effect {
    /// Write these to the client before the handler's reply (e.g. MAM results before the
    /// query's result IQ, XEP-0313 §4.2).
    Write(Vec<Element>),
    /// Stop delivering stored stanzas (the client went unavailable).
    StopBacklog,
    /// Start delivering stored stanzas as the client's XEP-0198 queue has room: pending
    /// subscription requests if `requests`, and offline messages if `offline` (XEP-0160 §3).
    StartBacklog {
        /// The pending subscription requests (RFC 6121 §3.1.3).
        requests: bool,
        /// Also the offline messages.
        offline: bool,
    },
}

/// One bound session as its feature handlers see it.
pub struct SessionCtx {
    /// The server state.
    pub shared: Arc<Shared>,
    /// The session's process-unique id.
    pub id: u64,
    /// The client's full JID.
    pub jid: FullJid,
    /// The account's bare JID, as a string (the router's and the store's key).
    pub bare: String,
    /// Presence bookkeeping.
    pub presence: SessionPresence,
    /// What the session must do after the handler returns, in order.
    pub effects: Vec<Effect>,
    available: bool,
    priority: i8,
    carbons: bool,
}

impl SessionCtx {
    /// A fresh session: unavailable, priority 0, carbons off.
    pub fn new(shared: Arc<Shared>, id: u64, jid: FullJid) -> SessionCtx {
        let bare = jid.to_bare().to_string();
        SessionCtx {
            shared,
            id,
            jid,
            bare,
            presence: SessionPresence::default(),
            effects: Vec::new(),
            available: false,
            priority: 0,
            carbons: false,
        }
    }

    /// Has sent available presence (RFC 6121 §4.2).
    pub fn available(&self) -> bool {
        self.available
    }

    /// Presence priority (RFC 6121 §4.7.2.3), meaningful when available.
    pub fn priority(&self) -> i8 {
        self.priority
    }

    /// Available with a non-negative priority: messages to the bare JID reach it.
    pub fn reachable(&self) -> bool {
        self.available && self.priority >= 0
    }

    /// XEP-0280 carbons enabled.
    pub fn carbons(&self) -> bool {
        self.carbons
    }

    /// Records availability and priority, here and in the router.
    pub fn set_presence(&mut self, available: bool, priority: i8) {
        self.available = available;
        self.priority = priority;
        self.shared
            .router
            .set_presence(&self.bare, self.id, available, priority);
    }

    /// Records the carbons flag, here and in the router.
    pub fn set_carbons(&mut self, on: bool) {
        self.carbons = on;
        self.shared.router.set_carbons(&self.bare, self.id, on);
    }

    /// The session is ending: unavailable here; its router entry is removed with it, so it
    /// is not touched (routing goes on reading it until then).
    pub fn set_ending(&mut self) {
        self.available = false;
    }

    /// Restores the flags of a saved session (its router entry is created with them).
    pub fn restore_flags(&mut self, available: bool, priority: i8, carbons: bool) {
        self.available = available;
        self.priority = priority;
        self.carbons = carbons;
    }
}

/// What a client is told when the store call behind its IQ failed (the failures a handler
/// has no better answer for: `NotFound`, `QuotaExceeded` and the like it answers itself).
/// A transient failure (SQLite busy, PostgreSQL down or its pool exhausted) is
/// `resource-constraint`: the server lacks the resources to serve the request now (RFC 6120
/// §8.3.3.18), and type `wait` tells the client to retry. Anything else is
/// `internal-server-error`, also of type `wait`: a store fault may be repaired, and the
/// request itself was fine.
pub fn store_condition(
    e: &herald_store::StoreError,
) -> (
    herald_proto::error::StanzaErrorCondition,
    herald_proto::error::ErrorType,
) {
    use herald_proto::error::{ErrorType, StanzaErrorCondition};
    if e.is_transient() {
        (StanzaErrorCondition::ResourceConstraint, ErrorType::Wait)
    } else {
        (StanzaErrorCondition::InternalServerError, ErrorType::Wait)
    }
}

/// The error answer to a `get`/`set` whose store call failed ([`store_condition`]); the
/// caller logs the failure with its context.
pub fn store_failed(el: &Element, e: &herald_store::StoreError) -> Element {
    let (cond, kind) = store_condition(e);
    crate::stanza::error_typed(el, cond, kind, None)
        .unwrap_or_else(|| crate::stanza::iq_result(el, None))
}
