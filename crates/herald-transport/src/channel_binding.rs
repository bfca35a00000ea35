//! Channel-binding data (RFC 5056) of a TLS connection we accepted, for SCRAM-*-PLUS:
//! `tls-exporter` (RFC 9266) and `tls-server-end-point` (RFC 5929 §4).
//!
//! rustls's unbuffered server connection (see `tls_io`) does not expose
//! `export_keying_material`, and neither kind of connection says which certificate it sent.
//! So the handshake of a connection that wants channel binding runs with its own copy of the
//! server configuration (dropped by rustls once the handshake is over) whose key log keeps
//! only the TLS 1.3 exporter master secret and whose certificate resolver notes the
//! certificate it picked. Right after the handshake the two values are derived and the secret
//! is dropped. The exporter is RFC 8446 §7.5 on rustls's own HKDF and hash for the negotiated
//! suite (the same steps as rustls's `export_keying_material`; a test checks the two agree
//! over a real connection).

use std::sync::{Arc, Mutex};

use herald_proto::sasl::ChannelBindings;
use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};
use sha2::Digest;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::SignatureAlgorithm;

/// RFC 9266 §2: the exporter label; the context is empty and the output 32 bytes.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
const EXPORTER_LEN: usize = 32;
/// The NSS key-log label under which rustls reports the TLS 1.3 exporter master secret.
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

/// What one handshake revealed: the exporter master secret and the certificate we sent.
#[derive(Debug, Default)]
pub struct Capture {
    exporter_secret: Mutex<Option<Vec<u8>>>,
    certificate: Mutex<Option<CertificateDer<'static>>>,
}

impl Capture {
    /// A copy of `config` for one handshake that records into `self`.
    pub fn config_for(self: &Arc<Self>, config: &ServerConfig) -> ServerConfig {
        let mut cfg = config.clone();
        cfg.key_log = self.clone();
        cfg.cert_resolver = Arc::new(Recording {
            inner: config.cert_resolver.clone(),
            capture: self.clone(),
        });
        cfg
    }

    /// The binding data of the finished handshake of a connection in `state` (taking the
    /// secret). A type is missing where it is undefined: `tls-exporter` below TLS 1.3 (RFC
    /// 9266 §3: TLS 1.2 only with the extended master secret, which rustls does not report),
    /// `tls-server-end-point` when the certificate's signature hash is not known (RFC 5929
    /// §4.1). A resumed session sends no certificate, but rustls resolves one all the same:
    /// the one this server presents for the name, which is the session's (certificates are
    /// loaded at start and sessions do not outlive the process).
    pub fn bindings(&self, state: &rustls::CommonState) -> ChannelBindings {
        let secret = lock(&self.exporter_secret).take();
        let tls_exporter = match (state.protocol_version(), state.negotiated_cipher_suite()) {
            (Some(ProtocolVersion::TLSv1_3), Some(suite)) => {
                secret.and_then(|s| tls13_exporter(suite, &s))
            }
            _ => None,
        };
        let tls_server_end_point = lock(&self.certificate)
            .take()
            .and_then(|c| server_end_point(&c));
        ChannelBindings {
            tls_exporter,
            tls_server_end_point,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl rustls::KeyLog for Capture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            *lock(&self.exporter_secret) = Some(secret.to_vec());
        }
    }

    /// Nothing but the exporter secret is ever handed over.
    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }
}

/// The configured resolver, noting the end-entity certificate it chose.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ResolvesServerCert>,
    capture: Arc<Capture>,
}

impl ResolvesServerCert for Recording {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.inner.resolve(hello)?;
        *lock(&self.capture.certificate) = key.cert.first().cloned();
        Some(key)
    }
}

/// RFC 8446 §7.5: TLS-Exporter(label, "", 32) =
/// HKDF-Expand-Label(Derive-Secret(exporter_master_secret, label, ""), "exporter", Hash(""), 32).
fn tls13_exporter(suite: SupportedCipherSuite, secret: &[u8]) -> Option<Vec<u8>> {
    let SupportedCipherSuite::Tls13(suite) = suite else {
        return None;
    };
    // OkmBlock holds at most 64 bytes (SHA-512); a TLS 1.3 secret is one hash long.
    if secret.is_empty() || secret.len() > 64 {
        return None;
    }
    let hkdf = suite.hkdf_provider;
    let empty_hash = suite.common.hash_provider.hash(&[]);
    let master = hkdf.expander_for_okm(&OkmBlock::new(secret));
    let mut derived = vec![0u8; master.hash_len()];
    expand_label(&*master, EXPORTER_LABEL, empty_hash.as_ref(), &mut derived)?;
    let exporter = hkdf.expander_for_okm(&OkmBlock::new(&derived));
    let mut out = vec![0u8; EXPORTER_LEN];
    expand_label(&*exporter, b"exporter", empty_hash.as_ref(), &mut out)?;
    Some(out)
}

/// RFC 8446 §7.1 HKDF-Expand-Label: the info is `HkdfLabel` (output length, "tls13 " +
/// label, context), each vector with its length prefix.
fn expand_label(
    expander: &dyn HkdfExpander,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(b"tls13 ".len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    expander
        .expand_slice(
            &[&length, &label_len, b"tls13 ", label, &context_len, context],
            out,
        )
        .ok()
}

/// RFC 5929 §4.1: the hash of our certificate with the hash function of its signature
/// algorithm, SHA-256 where that is MD5 or SHA-1; None where there is no single one (Ed25519,
/// unknown algorithms).
pub fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let alg = &cert.signature_algorithm;
    let oid = match SignatureAlgorithm::try_from(alg).ok()? {
        SignatureAlgorithm::RSASSA_PSS(params) => params.hash_algorithm_oid().to_id_string(),
        _ => alg.algorithm.to_id_string(),
    };
    Some(match oid.as_str() {
        // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1, DSA with SHA-1, SHA-1
        // (PSS), and the SHA-256 ones (RSA, ECDSA, DSA, PSS).
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.10045.4.1"
        | "1.2.840.10040.4.3"
        | "1.3.14.3.2.26"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.3.2"
        | "2.16.840.1.101.3.4.3.2"
        | "2.16.840.1.101.3.4.2.1" => sha2::Sha256::digest(der).to_vec(),
        // SHA-384: RSA, ECDSA, PSS.
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" | "2.16.840.1.101.3.4.2.2" => {
            sha2::Sha384::digest(der).to_vec()
        }
        // SHA-512: RSA, ECDSA, PSS.
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" | "2.16.840.1.101.3.4.2.3" => {
            sha2::Sha512::digest(der).to_vec()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            server_end_point(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            server_end_point(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        // Ed25519 has no separate hash: the type is undefined (RFC 5929 §4.1).
        assert_eq!(server_end_point(&cert(&rcgen::PKCS_ED25519)), None);
        assert_eq!(server_end_point(b"not a certificate"), None);
    }
}
