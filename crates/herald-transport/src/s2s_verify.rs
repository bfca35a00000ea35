//! Certificates for s2s: the trust store (webpki roots plus `[s2s] ca_file`), the check that a
//! peer's chain is valid for a domain (RFC 6125 DNS-ID, via webpki), and the rustls
//! configurations both directions use.
//!
//! The TLS handshakes themselves accept any certificate (signatures are still checked): a peer
//! whose certificate does not verify may still authenticate with dialback, so the decision is
//! taken after the handshake, per domain, by [`Trust::valid_for`]. This module must not decide
//! policy (`insecure_outgoing`, `allow_dialback`); the callers do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use herald_config::Config;

/// A certificate, key or CA file that cannot be used: the configuration key and why.
/// herald-server turns it into its `S2sError::Config`, which displays the same.
#[derive(Debug, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct ConfigError {
    /// The dotted key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// XEP-0368 §3: the ALPN protocol of direct TLS s2s.
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Who we trust to vouch for a peer's domain.
pub struct Trust {
    verifier: Arc<WebPkiServerVerifier>,
}

impl Trust {
    /// The webpki roots plus every certificate in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Trust, ConfigError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let data = std::fs::read(path).map_err(|e| ConfigError {
                key: "s2s.ca_file".into(),
                reason: format!("{}: {e}", path.display()),
            })?;
            let certs = rustls_pemfile::certs(&mut data.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError {
                    key: "s2s.ca_file".into(),
                    reason: format!("{}: bad PEM: {e}", path.display()),
                })?;
            if certs.is_empty() {
                return Err(ConfigError {
                    key: "s2s.ca_file".into(),
                    reason: format!("{}: no certificate found", path.display()),
                });
            }
            for c in certs {
                roots.add(c).map_err(|e| ConfigError {
                    key: "s2s.ca_file".into(),
                    reason: format!("{}: unusable CA certificate: {e}", path.display()),
                })?;
            }
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| ConfigError {
            key: "s2s.ca_file".into(),
            reason: format!("trust store: {e}"),
        })?;
        Ok(Trust { verifier })
    }

    /// Whether `chain` (end entity first) is a trusted certificate for `domain`.
    ///
    /// RFC 6125 §6: the reference identifier is the domain itself, matched as a DNS-ID
    /// (wildcards in the left-most label as webpki allows); XMPP's SRV-ID and XmppAddr are not
    /// consulted, which only makes us stricter.
    pub fn valid_for(&self, chain: &[CertificateDer<'static>], domain: &str) -> bool {
        let Some((end, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_string()) else {
            return false;
        };
        self.verifier
            .verify_server_cert(end, intermediates, &name, &[], UnixTime::now())
            .is_ok()
    }
}

/// The handshake signature checks of rustls' own verifiers (the provider's algorithms); both
/// of ours below keep them, whatever they decide about the chain.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// Accepts any certificate at the TLS layer (signatures are still verified), as a client of
/// outgoing streams and as the server of incoming ones; the chain is judged afterwards by
/// [`Trust::valid_for`].
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    provider_signature_checks!();
}

/// Incoming peers are asked for a certificate without requiring one (dialback peers may
/// have none).
impl ClientCertVerifier for AnyCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    provider_signature_checks!();
}

/// Presents one local domain's certificate to the peer.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS configurations of s2s.
pub struct TlsConfigs {
    /// Incoming: SNI picks the local domain's certificate; peers are asked for theirs.
    pub server: Arc<rustls::ServerConfig>,
    /// Outgoing, per local domain (lowercase), each presenting that domain's certificate.
    client: HashMap<String, (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)>,
    /// Outgoing for domains without their own certificate (components): the primary's.
    default_client: (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>),
}

impl TlsConfigs {
    /// Builds them from the configured (or self-signed) certificates.
    pub fn new(cfg: &Config) -> Result<TlsConfigs, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |e: String| ConfigError {
            key: "tls".into(),
            reason: e,
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyCert(provider.clone())))
            .with_cert_resolver(
                crate::tls::host_certs(cfg).map_err(|e| tls_err(format!("{e:#}")))?,
            );
        let (cert, key) =
            crate::tls::ensure_certificate(cfg).map_err(|e| tls_err(format!("{e:#}")))?;
        let primary = certified(&provider, &cert, &key)?;
        let default_client = client_pair(&provider, primary.clone())?;
        let mut client = HashMap::new();
        client.insert(cfg.domain.to_ascii_lowercase(), default_client.clone());
        for h in &cfg.hosts {
            let pair = match (&h.cert, &h.key) {
                (Some(c), Some(k)) => client_pair(&provider, certified(&provider, c, k)?)?,
                _ => default_client.clone(),
            };
            client.insert(h.domain.to_ascii_lowercase(), pair);
        }
        Ok(TlsConfigs {
            server: Arc::new(server),
            client,
            default_client,
        })
    }

    /// The client configuration for streams from `local`; `direct` adds XEP-0368's ALPN.
    pub fn client_for(&self, local: &str, direct: bool) -> Arc<rustls::ClientConfig> {
        let pair = self
            .client
            .get(&local.to_ascii_lowercase())
            .unwrap_or(&self.default_client);
        if direct {
            pair.1.clone()
        } else {
            pair.0.clone()
        }
    }
}

fn client_pair(
    provider: &Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
) -> Result<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>), ConfigError> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError {
            key: "tls".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider.clone())))
        .with_client_cert_resolver(Arc::new(OwnCert(key)));
    c.enable_sni = true;
    let plain = Arc::new(c.clone());
    c.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
    Ok((plain, Arc::new(c)))
}

fn certified(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let bad = |reason: String| ConfigError {
        key: "tls".into(),
        reason,
    };
    let data = std::fs::read(cert).map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{}: bad PEM: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{}: no certificate found", cert.display())));
    }
    let data = std::fs::read(key).map_err(|e| bad(format!("{}: {e}", key.display())))?;
    let key_der = rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| bad(format!("{}: bad PEM: {e}", key.display())))?
        .ok_or_else(|| bad(format!("{}: no private key found", key.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad(format!("{}: unusable private key: {e}", key.display())))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf(names: &[&str]) -> (String, Vec<CertificateDer<'static>>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&leaf_key, &ca, &ca_key)
                .unwrap();
        (ca.pem(), vec![leaf.der().clone()])
    }

    #[test]
    fn chain_from_configured_ca_is_valid_only_for_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, chain) = ca_and_leaf(&["a.test", "*.push.a.test"]);
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem).unwrap();
        let trust = Trust::new(Some(&ca_path)).unwrap();
        assert!(trust.valid_for(&chain, "a.test"));
        assert!(trust.valid_for(&chain, "x.push.a.test"));
        assert!(!trust.valid_for(&chain, "b.test"));
        assert!(!trust.valid_for(&[], "a.test"));
        // Without the CA the same chain is not trusted.
        assert!(!Trust::new(None).unwrap().valid_for(&chain, "a.test"));
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not pem").unwrap();
        let e = Trust::new(Some(&p)).err().unwrap().to_string();
        assert!(e.contains("s2s.ca_file"), "{e}");
        let e = Trust::new(Some(&dir.path().join("missing.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
