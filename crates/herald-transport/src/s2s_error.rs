//! Why a server-to-server stream could not be set up or failed, and the stanza error the
//! senders of its queued stanzas get (RFC 6120 §8.3.3.17/18).

use herald_proto::error::StanzaErrorCondition;

use crate::conn::ConnError;
use crate::s2s_verify::ConfigError;

/// Why s2s could not be set up or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum S2sError {
    /// A configuration value (certificate, CA file) is unusable.
    #[error("key `{key}`: {reason}")]
    Config {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No address could be found or reached for the remote domain.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The peer did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The peer does not offer TLS, which we require (RFC 6120 §5.3.1).
    #[error("peer does not offer STARTTLS")]
    NoTls,
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The peer's certificate does not verify for its domain (and `insecure_outgoing` is
    /// off, or incoming dialback is not allowed).
    #[error("certificate of {0} does not verify")]
    CertRejected(String),
    /// Every address found for the domain is loopback, private, link-local or otherwise not
    /// public, and no static route names the domain.
    #[error("{0}: only non-public addresses (add a static route to allow them)")]
    NotGlobal(String),
    /// The peer refused our authentication (SASL failure or dialback not valid).
    #[error("authentication refused: {0}")]
    AuthRefused(String),
    /// The stream broke (closed, stream error, bad XML).
    #[error("stream: {0}")]
    Stream(String),
}

impl From<ConnError> for S2sError {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Timeout => S2sError::Timeout,
            ConnError::Stream(se) => S2sError::Stream(format!(
                "{}{}",
                se.condition.as_str(),
                se.text.map(|t| format!(" ({t})")).unwrap_or_default()
            )),
            other => S2sError::Stream(other.to_string()),
        }
    }
}

impl From<ConfigError> for S2sError {
    fn from(e: ConfigError) -> Self {
        S2sError::Config {
            key: e.key,
            reason: e.reason,
        }
    }
}

impl S2sError {
    /// RFC 6120 §8.3.3.17/18: the condition senders of queued stanzas get.
    pub fn condition(&self) -> StanzaErrorCondition {
        match self {
            S2sError::Timeout => StanzaErrorCondition::RemoteServerTimeout,
            _ => StanzaErrorCondition::RemoteServerNotFound,
        }
    }
}
