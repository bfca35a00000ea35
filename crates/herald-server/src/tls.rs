//! TLS: the rustls server configuration from the configured certificate, or from a
//! self-signed one made in `data_dir` on first start and reused afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

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
    let mut names = vec![cfg.domain.clone()];
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

/// Builds the rustls server configuration.
pub fn server_config(cfg: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = ensure_certificate(cfg)?;
    let certs = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{}: key does not match certificate", key_path.display()))?;
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
