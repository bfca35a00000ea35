//! herald-proto: bytes ⇄ stanzas for Herald.
//!
//! The XML stream codec with hard limits and namespace normalisation ([`stream`]), namespace
//! constants ([`ns`]), stream and stanza errors ([`error`]) and the server side of SASL
//! (SCRAM-SHA-1/-256, PLAIN) with SCRAM credential derivation ([`sasl`]), and the XEP-0198
//! stream management elements the server sends ([`sm`]), and RFC 7395 WebSocket framing
//! over the same codec ([`framing`]), and the one parser of peer-supplied JIDs ([`address`]),
//! which refuses an address whose normalised form would not parse again.
//!
//! This crate must not do I/O, read clocks, spawn tasks or know about sessions or storage:
//! everything here is a pure function or a sans-IO state machine, so it can be fuzzed.

pub mod address;
pub mod error;
pub mod framing;
pub mod ns;
pub mod sasl;
pub mod sm;
pub mod stream;

pub use jid;
pub use minidom;
pub use minidom::Element;
