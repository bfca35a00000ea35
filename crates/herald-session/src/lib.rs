//! Per-session protocol state machines for Herald, sans-IO.
//!
//! Each machine here owns the protocol state of ONE client session and is driven by its
//! owner (the server's session task) with inputs and an explicit `now: Instant`; it answers
//! with values and events for the owner to act on.
//!
//! - [`sm`]: XEP-0198 stream management (h counters mod 2^32, unacked queue, ack requests,
//!   ack-delay detection, hibernation and resumption) plus the [`sm::Tombstones`] store of
//!   ended sessions' h values.
//! - [`sm_nonza`]: XEP-0198 on the wire — what to answer to `<enable/>`, `<r/>`, `<a/>` and
//!   `<resume/>` given the [`sm`] state (elements from `herald_proto::sm`).
//! - [`negotiate`]: c2s stream negotiation (headers, STARTTLS, SASL, failure limits, bind and
//!   resume requests, the deadline) as a typestate machine whose store and registry look-ups
//!   are actions answered by the driver.
//! - [`csi`]: XEP-0352 client state indication buffer (Prosody's mod_csi_simple model) and the
//!   importance classification shared with push.
//! - [`subscription`]: the RFC 6121 presence subscription machine.
//!
//! Must not: spawn tasks, touch sockets, read clocks, or know about routing and storage. The
//! session machines ([`sm`], [`csi`]) are generic over the queued item type so they do not
//! depend on the stanza model; [`negotiate`] and [`sm_nonza`] speak herald-proto elements.

pub mod csi;
pub mod negotiate;
pub mod sm;
pub mod sm_nonza;
pub mod subscription;
