//! Transport: the bytes under every stream. The TCP/TLS connection, the TLS set-up and a
//! session's bounded inbox are herald-transport's (re-exported here); this folder adds the
//! accept loops every listener shares and the connection counts of `[limits]`. Knows nothing of XMPP sessions or routing.

pub use herald_transport::{conn, inbox, limits, tls, tls_io};
pub mod listener;
