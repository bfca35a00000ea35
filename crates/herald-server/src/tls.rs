//! TLS: the rustls server configuration from the configured certificate, or from a
//! self-signed one made in `data_dir` on first start and reused afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;

use crate::config::Config;

/// Paths of the self-signed certificate and key kept in `data_dir`.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("cert.pem"), data_dir.join("key.pem"))
}

/// Makes (once) and returns the certificate and key paths to use.
pub fn ensure_certificate(cfg: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(k)) = (&cfg.tls.cert, &cfg.tls.key) {
        return Ok((c.clone(), k.clone()));
    }
    let (cert, key) = self_signed_paths(&cfg.data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let mut names = cfg.local_domains();
    names.extend(cfg.components.component.iter().map(|c| c.domain.clone()));
    let made = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    std::fs::write(&cert, made.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, made.key_pair.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

fn certified(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{}: unusable private key", key.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().with_context(|| {
        format!(
            "{}: key does not match certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(ck))
}

/// Picks the certificate by SNI (virtual hosts), falling back to the primary domain's.
#[derive(Debug)]
pub struct HostCerts {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for HostCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(|n| n.to_ascii_lowercase());
        Some(
            name.and_then(|n| self.by_name.get(&n).cloned())
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// The certificates of every local domain.
pub fn host_certs(cfg: &Config) -> anyhow::Result<Arc<HostCerts>> {
    let provider = rustls::crypto::ring::default_provider();
    let (cert_path, key_path) = ensure_certificate(cfg)?;
    let default = certified(&provider, &cert_path, &key_path)?;
    let mut by_name = HashMap::new();
    by_name.insert(cfg.domain.to_ascii_lowercase(), default.clone());
    for h in &cfg.hosts {
        let ck = match (&h.cert, &h.key) {
            (Some(c), Some(k)) => certified(&provider, c, k)?,
            _ => default.clone(),
        };
        by_name.insert(h.domain.to_ascii_lowercase(), ck);
    }
    Ok(Arc::new(HostCerts { default, by_name }))
}

/// Builds the rustls server configuration.
pub fn server_config(cfg: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = host_certs(cfg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    Ok(Arc::new(sc))
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad PEM", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .with_context(|| format!("{}: bad PEM", path.display()))?
        .ok_or_else(|| anyhow!("{}: no private key found", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().join("d"),
            ..Config::default()
        };
        server_config(&cfg).unwrap();
        let (c, _) = self_signed_paths(&cfg.data_dir);
        let first = std::fs::read(&c).unwrap();
        server_config(&cfg).unwrap();
        assert_eq!(first, std::fs::read(&c).unwrap());
    }

    #[test]
    fn configured_files_must_exist() {
        let cfg = Config {
            tls: crate::config::TlsConfig {
                cert: Some("/nonexistent/c.pem".into()),
                key: Some("/nonexistent/k.pem".into()),
            },
            ..Config::default()
        };
        let e = format!("{:#}", server_config(&cfg).unwrap_err());
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
    }
}
