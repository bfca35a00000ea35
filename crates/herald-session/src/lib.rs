//! Per-session protocol state machines for Herald, sans-IO.
//!
//! Each machine here owns the protocol state of ONE client session and is driven by its
//! owner (the server's session task) with inputs and an explicit `now: Instant`; it answers
//! with values and events for the owner to act on.
//! [`resources`] is the one table across sessions: the router owns it and updates it as
//! sessions bind, change presence and end.
//!
//! - [`sm`]: XEP-0198 stream management (h counters mod 2^32, unacked queue, ack requests,
//!   ack-delay detection, hibernation and resumption) plus the [`sm::Tombstones`] store of
//!   ended sessions' h values.
//! - [`sm_nonza`]: XEP-0198 on the wire — what to answer to `<enable/>`, `<r/>`, `<a/>` and
//!   `<resume/>` given the [`sm`] state (elements from `herald_proto::sm`).
//! - [`negotiate`]: c2s stream negotiation (headers, STARTTLS, SASL, failure limits, bind and
//!   resume requests, the deadline) as a typestate machine whose store and registry look-ups
//!   are actions answered by the driver.
//! - [`sasl2`]: XEP-0388 SASL2 with Bind2, inline stream management and FAST on the wire
//!   (what `<authenticate/>` asks for, the Bind2 resource, `<success/>`); [`negotiate`] runs it.
//! - [`throttle`]: failed-authentication delays and account lockouts, with explicit time;
//!   [`negotiate`] applies them to the records its driver keeps.
//! - [`registrations`]: accounts registered in band per peer address (XEP-0077), bounded.
//! - [`csi`]: XEP-0352 client state indication buffer (Prosody's mod_csi_simple model) and the
//!   importance classification shared with push.
//! - [`budget`]: byte budgets for queues (a session's, its account's, an s2s or component
//!   queue): a charge travels with each queued stanza and gives its bytes back when dropped.
//!   Atomic counters, shared between the router and the session that releases them.
//! - [`rate`]: inbound rate limits of a client stream (token buckets for stanzas and bytes):
//!   a client over its rate is read more slowly, nothing is dropped.
//! - [`subscription`]: the RFC 6121 presence subscription machine.
//! - [`resources`]: who is online, shared by all sessions as plain data — the bind policy
//!   (RFC 6120 §7.7.2.2: replace, add, evict the oldest hibernated session, or refuse) and
//!   the delivery choice among an account's resources (RFC 6121 §8.5); the server keeps it
//!   under its router's lock.
//!
//! Must not: spawn tasks, touch sockets, take locks (the budgets are atomics), read clocks, or know about message
//! routing and storage. The session machines ([`sm`], [`csi`]) and [`resources`] are generic
//! over the queued item or inbox type so they do not depend on the stanza model or the
//! transport; [`negotiate`] and [`sm_nonza`] speak herald-proto elements.

pub mod budget;
pub mod csi;
pub mod negotiate;
pub mod rate;
pub mod registrations;
pub mod resources;
pub mod sasl2;
pub mod sm;
pub mod sm_nonza;
pub mod subscription;
pub mod throttle;
