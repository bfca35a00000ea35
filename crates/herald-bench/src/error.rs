//! The bench client's error type: what can go wrong talking to the server under test.
//! It must not carry scenario policy (retry, counting); scenarios decide what a failure means.

use thiserror::Error;

/// Every way one bench connection can fail.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The socket or TLS layer failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the stream or the TCP connection when we still expected data.
    #[error("server closed the connection")]
    Closed,
    /// The server's XML could not be framed (unbalanced tags, oversized element).
    #[error("malformed XML from server: {0}")]
    Xml(&'static str),
    /// The server answered with something the flow did not expect.
    #[error("unexpected reply during {stage}: {got}")]
    Unexpected {
        /// Which negotiation step was running.
        stage: &'static str,
        /// The first bytes of what arrived.
        got: String,
    },
    /// The server does not offer what the bench was asked to use.
    #[error("server does not offer {0}")]
    NotOffered(&'static str),
    /// SASL authentication was refused or the server's proof was wrong.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A step did not complete within its deadline.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// TLS setup failed (bad server name, handshake).
    #[error("tls: {0}")]
    Tls(String),
}

/// Short alias used across the crate.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Truncates server output for error messages so logs stay readable.
pub fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.chars().take(200).collect()
}
