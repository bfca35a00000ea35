//! herald-transport: the bytes under a stream, for herald-server.
//!
//! - [`conn`]: one XML stream over TCP or TLS, with read limits, buffered decoding and
//!   batched writes.
//! - [`tls_io`]: rustls driven over tokio without extra copies (STARTTLS and direct TLS).
//! - [`inbox`]: a session task's bounded inbox with a separate lane for control messages.
//!
//! Must not: know about sessions, routing, features or the store.

pub mod conn;
pub mod inbox;
pub mod tls_io;
