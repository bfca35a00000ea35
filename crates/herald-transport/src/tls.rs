//! TLS: the rustls server configuration from the configured certificate, or from a
//! self-signed one made in `data_dir`, reused afterwards and renewed at start when it no
//! longer names every served domain or is about to expire.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use herald_config::Config;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use time::OffsetDateTime;

/// How long a self-signed certificate is valid from when it is made.
const SELF_SIGNED_VALIDITY: time::Duration = time::Duration::days(365);
/// A self-signed certificate that expires within this long is renewed at start.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// Paths of the self-signed certificate and key kept in `data_dir`.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("cert.pem"), data_dir.join("key.pem"))
}

/// Returns the certificate and key paths to use: the configured ones as they are, else the
/// self-signed ones in `data_dir`, made if absent and renewed if they do not name every
/// served domain or expire within `RENEW_BEFORE`.
pub fn ensure_certificate(cfg: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(k)) = (&cfg.tls.cert, &cfg.tls.key) {
        return Ok((c.clone(), k.clone()));
    }
    let (cert, key) = self_signed_paths(&cfg.data_dir);
    let names = self_signed_names(cfg);
    let now = OffsetDateTime::now_utc();
    if cert.exists() && key.exists() {
        match renewal_reason(&cert, &names, now) {
            None => return Ok((cert, key)),
            Some(reason) => tracing::info!(
                cert = %cert.display(),
                %reason,
                "renewing the self-signed certificate"
            ),
        }
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let (cert_pem, key_pem) = make_self_signed(&names, now)?;
    // The key first: a crash between the two writes leaves the old certificate, which still
    // needs renewing (or is absent), so the next start makes a matching pair again.
    write_private(&key, key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate");
    Ok((cert, key))
}

/// The names of the self-signed certificate: the primary domain (also its CN), the
/// `[[hosts]]` domains, then the component domains, then the group chat service's; each once,
/// whatever its case.
fn self_signed_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let all = cfg
        .local_domains()
        .into_iter()
        .chain(cfg.components.component.iter().map(|c| c.domain.clone()))
        .chain(cfg.muc_domain());
    for n in all {
        if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    }
    names
}

/// A self-signed certificate for `names` (the first is the CN), valid from a day before
/// `now` (clocks differ) for [`SELF_SIGNED_VALIDITY`]; PEM certificate and key.
fn make_self_signed(names: &[String], now: OffsetDateTime) -> anyhow::Result<(String, String)> {
    let cn = names
        .first()
        .ok_or_else(|| anyhow!("no domain to certify"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn.as_str());
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + SELF_SIGNED_VALIDITY;
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("generating certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Why the self-signed certificate at `path` must be made anew, `None` if it can stay.
fn renewal_reason(path: &Path, names: &[String], now: OffsetDateTime) -> Option<String> {
    let der = match load_certs(path).map(|c| c.into_iter().next()) {
        Ok(Some(der)) => der,
        Ok(None) => return Some("no certificate in it".into()),
        Err(e) => return Some(format!("{e:#}")),
    };
    let cert = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, c)) => c,
        Err(e) => return Some(format!("unreadable certificate: {e}")),
    };
    let mut dns = Vec::new();
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    dns.push(*d);
                }
            }
        }
        Ok(None) => {}
        Err(e) => return Some(format!("unreadable subjectAltName: {e}")),
    }
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !dns.iter().any(|d| d.eq_ignore_ascii_case(n)))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!("it does not name {}", missing.join(", ")));
    }
    // Made by an earlier Herald ("rcgen self signed cert", valid to 4096): a client shows
    // a name that says nothing of the server.
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if !cn.is_some_and(|cn| names.first().is_some_and(|p| p.eq_ignore_ascii_case(cn))) {
        return Some(format!(
            "its name is {:?}, not the domain",
            cn.unwrap_or("")
        ));
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after - now < RENEW_BEFORE {
        return Some(format!("it expires {not_after}"));
    }
    None
}

/// The SHA-256 fingerprint of a DER certificate as `openssl x509 -fingerprint -sha256`
/// prints it: uppercase hex bytes separated by colons.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
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

/// Logs the SHA-256 fingerprint of the primary certificate and of each `[[hosts]]` one, so
/// a user can compare it with what a client shows.
fn log_fingerprints(cfg: &Config, certs: &HostCerts) {
    let log = |domain: &str, source: &str, ck: &CertifiedKey| {
        if let Some(der) = ck.cert.first() {
            tracing::info!(domain, source, sha256 = %fingerprint(der), "TLS certificate");
        }
    };
    let primary = if cfg.tls.cert.is_some() {
        "configured"
    } else {
        "self-signed"
    };
    log(&cfg.domain, primary, &certs.default);
    for h in cfg.hosts.iter().filter(|h| h.cert.is_some()) {
        if let Some(ck) = certs.by_name.get(&h.domain.to_ascii_lowercase()) {
            log(&h.domain, "configured", ck);
        }
    }
}

/// Builds the rustls server configuration (once, at start: it logs the fingerprints).
pub fn server_config(cfg: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = host_certs(cfg)?;
    log_fingerprints(cfg, &certs);
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

    fn cfg_in(dir: &Path) -> Config {
        Config {
            domain: "example.test".into(),
            data_dir: dir.join("d"),
            hosts: vec![herald_config::HostEntry {
                domain: "vhost.test".into(),
                cert: None,
                key: None,
                push: Default::default(),
            }],
            components: herald_config::ComponentsConfig {
                component: vec![herald_config::ComponentEntry {
                    domain: "push.example.test".into(),
                    secret: "s".into(),
                }],
                ..Default::default()
            },
            ..Config::default()
        }
    }

    /// The CN, the DNS SANs and the validity of the first certificate in `path`.
    fn inspect(path: &Path) -> (String, Vec<String>, OffsetDateTime, OffsetDateTime) {
        let der = load_certs(path).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        let sans = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                other => panic!("unexpected name {other:?}"),
            })
            .collect();
        let v = cert.validity();
        (
            cn,
            sans,
            v.not_before.to_datetime(),
            v.not_after.to_datetime(),
        )
    }

    fn near(a: OffsetDateTime, b: OffsetDateTime) -> bool {
        (a - b).abs() < time::Duration::minutes(5)
    }

    #[test]
    fn self_signed_names_every_served_domain_for_a_year() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg_in(dir.path());
        let (cert, _) = ensure_certificate(&cfg).unwrap();
        let (cn, sans, not_before, not_after) = inspect(&cert);
        assert_eq!(cn, "example.test");
        assert_eq!(
            sans,
            [
                "example.test",
                "vhost.test",
                "push.example.test",
                "conference.example.test"
            ]
        );
        let now = OffsetDateTime::now_utc();
        assert!(
            near(not_before, now - time::Duration::days(1)),
            "{not_before}"
        );
        assert!(
            near(not_after, now + time::Duration::days(365)),
            "{not_after}"
        );
        server_config(&cfg).unwrap();
    }

    #[test]
    fn self_signed_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg_in(dir.path());
        server_config(&cfg).unwrap();
        let (c, k) = self_signed_paths(&cfg.data_dir);
        let (cert, key) = (std::fs::read(&c).unwrap(), std::fs::read(&k).unwrap());
        server_config(&cfg).unwrap();
        assert_eq!(cert, std::fs::read(&c).unwrap());
        assert_eq!(key, std::fs::read(&k).unwrap());
    }

    #[test]
    fn self_signed_is_renewed_when_a_domain_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg_in(dir.path());
        server_config(&cfg).unwrap();
        let (c, k) = self_signed_paths(&cfg.data_dir);
        let (cert, key) = (std::fs::read(&c).unwrap(), std::fs::read(&k).unwrap());
        cfg.hosts.push(herald_config::HostEntry {
            domain: "new.test".into(),
            cert: None,
            key: None,
            push: Default::default(),
        });
        server_config(&cfg).unwrap();
        assert_ne!(cert, std::fs::read(&c).unwrap());
        assert_ne!(key, std::fs::read(&k).unwrap());
        let (_, sans, _, _) = inspect(&c);
        assert!(sans.iter().any(|n| n == "new.test"), "{sans:?}");
        // A domain removed from the configuration is no reason to renew.
        cfg.hosts.retain(|h| h.domain != "vhost.test");
        let renewed = std::fs::read(&c).unwrap();
        server_config(&cfg).unwrap();
        assert_eq!(renewed, std::fs::read(&c).unwrap());
    }

    #[test]
    fn an_old_rcgen_named_certificate_is_renewed() {
        // What Herald made before: every domain in the SANs, but named by rcgen.
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg_in(dir.path());
        let names = self_signed_names(&cfg);
        let old = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        let (c, k) = self_signed_paths(&cfg.data_dir);
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        std::fs::write(&c, old.cert.pem()).unwrap();
        std::fs::write(&k, old.key_pair.serialize_pem()).unwrap();
        let why = renewal_reason(&c, &names, OffsetDateTime::now_utc());
        assert!(why.is_some_and(|w| w.contains("rcgen")));
        ensure_certificate(&cfg).unwrap();
        assert_eq!(inspect(&c).0, "example.test");
    }

    #[test]
    fn self_signed_is_renewed_within_30_days_of_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg_in(dir.path());
        let (c, _) = ensure_certificate(&cfg).unwrap();
        let names = self_signed_names(&cfg);
        let now = OffsetDateTime::now_utc();
        assert_eq!(renewal_reason(&c, &names, now), None);
        assert_eq!(
            renewal_reason(&c, &names, now + time::Duration::days(330)),
            None
        );
        let why = renewal_reason(&c, &names, now + time::Duration::days(340));
        assert!(why.is_some_and(|w| w.contains("expires")));
        std::fs::write(&c, "garbage").unwrap();
        assert!(renewal_reason(&c, &names, now).is_some());
    }

    #[test]
    fn a_configured_certificate_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) =
            make_self_signed(&["other.test".into()], OffsetDateTime::now_utc()).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert_pem).unwrap();
        std::fs::write(&k, &key_pem).unwrap();
        let cfg = Config {
            tls: herald_config::TlsConfig {
                cert: Some(c.clone()),
                key: Some(k.clone()),
            },
            ..cfg_in(dir.path())
        };
        assert_eq!(ensure_certificate(&cfg).unwrap(), (c.clone(), k.clone()));
        server_config(&cfg).unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), cert_pem);
        assert_eq!(std::fs::read_to_string(&k).unwrap(), key_pem);
        assert!(!cfg.data_dir.join("cert.pem").exists());
    }

    #[test]
    fn fingerprint_is_colon_separated_uppercase_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
             B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn configured_files_must_exist() {
        let cfg = Config {
            tls: herald_config::TlsConfig {
                cert: Some("/nonexistent/c.pem".into()),
                key: Some("/nonexistent/k.pem".into()),
            },
            ..Config::default()
        };
        let e = format!("{:#}", server_config(&cfg).unwrap_err());
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
    }
}
