//! herald-transport: the bytes under a stream, for herald-server.
//!
//! - [`conn`]: one XML stream over TCP, TLS or a WebSocket (RFC 7395), with read limits, buffered decoding and
//!   batched writes.
//! - [`tls_io`]: rustls driven over tokio without extra copies (STARTTLS and direct TLS).
//! - [`channel_binding`]: a c2s handshake's `tls-exporter` and `tls-server-end-point` data
//!   for SCRAM-*-PLUS.
//! - [`tls`]: the certificates from the configuration (loaded, or self-signed in `data_dir`
//!   and renewed), the SNI resolver and the c2s rustls server configuration.
//! - [`s2s_verify`]: the s2s trust store, the check that a peer's chain is valid for a
//!   domain, and the rustls configurations of both s2s directions.
//! - [`resolve`]: where to connect for a remote domain (static routes, DNS SRV, A/AAAA), and
//!   which addresses are public.
//! - [`inbox`]: a session task's bounded inbox with a separate lane for control messages.
//! - [`limits`]: connection counting (global, per address, unauthenticated per address) with
//!   guards that give a slot back when dropped.
//! - [`fd`]: the file descriptor budget (soft `RLIMIT_NOFILE` raised to the hard limit).
//! - [`unix_socket`]: owner-only Unix sockets created without a race, accept back-off.
//! - [`s2s_error`]: why a server-to-server stream failed, and what its queued stanzas get.
//! - [`s2s_limits`]: caps on outgoing setups and dialback verifications in progress, and
//!   the memory of remote domains that recently failed.
//!
//! Must not: know about sessions, routing, features or the store, or decide s2s policy
//! (which certificates or dialback to accept is herald-server's call).

pub mod channel_binding;
pub mod conn;
pub mod fd;
pub mod inbox;
pub mod limits;
pub mod resolve;
pub mod s2s_error;
pub mod s2s_limits;
pub mod s2s_verify;
pub mod secret_file;
pub mod tls;
pub mod tls_io;
pub mod unix_socket;
