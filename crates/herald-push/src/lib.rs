//! herald-push: the push business rules (this crate's RULES.md: the three
//! rules and the decision table) as pure code.
//!
//! - [`classify`](mod@classify): the one importance judgement shared by CSI and push, and the summary
//!   (sender, body) of a stanza.
//! - [`delivery`]: whether a stanza entering a session's SM queue may push (CSI, asleep).
//! - [`diag`]: the bookkeeping of `herald push test` runs (results per registration, round
//!   trips, timeouts) and its wire types; the caller's reply handle is a type parameter.
//! - [`engine`]: registrations, rules a/b/c/d, dedup, coalescing, extended hibernation,
//!   wake-before-expiry, reply tracking, error accounting, device limits.
//! - [`groupchat`]: rule d, room messages for members with no joined session (XEP-0492
//!   settings, mentions); the engine applies it in [`engine::Engine::room_message`].
//! - [`notification`]: the XEP-0357 publish IQ.
//! - [`reply`]: reading the app server's answer (which errors count, who may answer).
//! - [`request`]: parsing `<enable/>`/`<disable/>` (canonical app server JIDs).
//!
//! Must not: do I/O, read clocks or spawn tasks. Every call takes `now`; storage changes and
//! stanzas to send come back as [`engine::Action`]s, finished test runs as
//! [`diag::Finished`] for the caller to answer.

pub mod classify;
pub mod delivery;
pub mod diag;
pub mod engine;
pub mod groupchat;
pub mod notification;
pub mod reply;
pub mod request;
pub mod saved;

pub use classify::{
    caused_by, classify, is_pep_event, never_wakes, summarize, Classifier, Importance, Summary,
};
pub use engine::{
    Action, Engine, PushConfig, RegKey, Registration, Removal, Reply, RoomMessage, SessionId,
    SessionPush, StanzaId, StanzaInfo,
};
pub use notification::{build_publish, Notice, Priority};
pub use request::{parse_command, PushCommand, PushError};
