//! The server under test as a child process of the bench: its configuration (given, or written
//! into a temp data dir), its accounts, and starting, killing (SIGKILL) and stopping (SIGTERM)
//! it on the same data dir, timing each start until the c2s port accepts.
//! It must never signal any process but the child it started, and must not leave it running:
//! the child is killed when this is dropped.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where the server listens and how it is run.
pub struct ServerConfig {
    /// The configuration file passed to `herald serve --config`.
    pub config: PathBuf,
    /// The c2s address the clients connect to.
    pub c2s: SocketAddr,
    /// The XMPP domain.
    pub domain: String,
    /// The server's stdout and stderr go here, appended over restarts.
    pub log: PathBuf,
}

/// A free loopback port (bound once, then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Writes a minimal configuration into `dir`: domain, data in `dir/data`, c2s without
/// required encryption on `port`, every other listener off, and no connection limit (every
/// client of the run connects from 127.0.0.1).
pub fn write_config(dir: &Path, domain: &str, port: u16) -> Result<ServerConfig> {
    let config = dir.join("herald.toml");
    let data = dir.join("data");
    // TOML strings quoted and escaped by the toml crate, whatever the temp dir's name.
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let text = format!(
        "domain = {}\n\
         data_dir = {}\n\
         \n\
         [c2s]\n\
         listen = \"127.0.0.1:{port}\"\n\
         direct_tls_listen = \"\"\n\
         require_encryption = false\n\
         \n\
         [components]\n\
         listen = \"\"\n\
         \n\
         [http]\n\
         listen = \"\"\n\
         \n\
         [limits]\n\
         max_connections = 1000000\n\
         max_connections_per_ip = 1000000\n\
         max_unauthenticated_per_ip = 1000000\n",
        q(domain),
        q(&data.to_string_lossy())
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(ServerConfig {
        config,
        c2s: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        domain: domain.to_string(),
        log: dir.join("herald.log"),
    })
}

/// Reads `domain` and `[c2s] listen` from an existing configuration (Herald's defaults when
/// absent); the log goes next to the bench's working directory.
pub fn read_config(config: &Path, log: PathBuf) -> Result<ServerConfig> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let v: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config.display()))?;
    let domain = v
        .get("domain")
        .and_then(|d| d.as_str())
        .unwrap_or("localhost")
        .to_string();
    let listen = v
        .get("c2s")
        .and_then(|c| c.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or("127.0.0.1:5222");
    if listen.is_empty() {
        bail!("{}: [c2s] listen is off; chaos needs it", config.display());
    }
    let mut c2s: SocketAddr = listen
        .parse()
        .with_context(|| format!("{}: [c2s] listen = {listen:?}", config.display()))?;
    if c2s.ip().is_unspecified() {
        c2s.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(ServerConfig {
        config: config.to_path_buf(),
        c2s,
        domain,
        log,
    })
}

/// Creates `{prefix}0` … `{prefix}{count-1}` with `herald user add-bulk` (existing accounts
/// are left as they are).
pub async fn add_users(
    bin: &Path,
    cfg: &ServerConfig,
    prefix: &str,
    count: u64,
    password: &str,
) -> Result<()> {
    let out = Command::new(bin)
        .args(["user", "add-bulk", prefix, &count.to_string(), password])
        .arg("--config")
        .arg(&cfg.config)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} user add-bulk", bin.display()))?;
    if !out.status.success() {
        bail!(
            "herald user add-bulk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The last lines of the server's log, for errors (the temp dir holding it may be removed).
fn log_tail(log: &Path) -> String {
    const LINES: usize = 20;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// How a stop went.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// From the signal to the process's exit.
    pub took: Duration,
    /// SIGTERM was not enough within the bound: the process was killed.
    pub timed_out: bool,
}

/// The running (or stopped) server.
pub struct Server {
    bin: PathBuf,
    cfg: ServerConfig,
    child: Option<Child>,
}

impl Server {
    /// A server not started yet.
    pub fn new(bin: PathBuf, cfg: ServerConfig) -> Self {
        Self {
            bin,
            cfg,
            child: None,
        }
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Starts `herald serve` and waits (at most `timeout`) until the c2s port accepts;
    /// returns the time from spawn to the first accepted connection.
    pub async fn start(&mut self, timeout: Duration) -> Result<Duration> {
        if self.child.is_some() {
            bail!("the server is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.log)
            .with_context(|| format!("opening {}", self.cfg.log.display()))?;
        let err = log.try_clone()?;
        let t0 = Instant::now();
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.cfg.config)
            .stdin(Stdio::null())
            // A log file, not a terminal: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        loop {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "the server exited at start ({st}); the end of its log:\n{}",
                    log_tail(&self.cfg.log)
                );
            }
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(self.cfg.c2s),
            )
            .await;
            if let Ok(Ok(_)) = probe {
                break;
            }
            if t0.elapsed() > timeout {
                let _ = child.kill().await;
                bail!(
                    "the server did not accept on {} within {timeout:?}; the end of its log:\n{}",
                    self.cfg.c2s,
                    log_tail(&self.cfg.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        self.child = Some(child);
        Ok(took)
    }

    /// SIGKILL, then reaps the process.
    pub async fn kill(&mut self) -> Result<Stopped> {
        let Some(mut child) = self.child.take() else {
            bail!("the server is not running");
        };
        let t0 = Instant::now();
        child.kill().await.context("killing the server")?;
        Ok(Stopped {
            took: t0.elapsed(),
            timed_out: false,
        })
    }

    /// SIGTERM, then waits at most `timeout` for the exit; past it, SIGKILL.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<Stopped> {
        let Some(mut child) = self.child.take() else {
            bail!("the server is not running");
        };
        let t0 = Instant::now();
        if let Some(pid) = child.id() {
            // `kill(1)` by pid: the bench has no unsafe code, hence no libc::kill.
            let st = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .context("running kill -TERM")?;
            if !st.success() {
                bail!("kill -TERM {pid} failed ({st})");
            }
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(r) => {
                r.context("waiting for the server")?;
                Ok(Stopped {
                    took: t0.elapsed(),
                    timed_out: false,
                })
            }
            Err(_) => {
                child.kill().await.context("killing the server")?;
                Ok(Stopped {
                    took: t0.elapsed(),
                    timed_out: true,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = write_config(dir.path(), "localhost", 40123).unwrap();
        let r = read_config(&c.config, c.log.clone()).unwrap();
        assert_eq!(r.c2s, "127.0.0.1:40123".parse().unwrap());
        assert_eq!(r.domain, "localhost");
        let text = std::fs::read_to_string(&c.config).unwrap();
        assert!(text.contains("require_encryption = false"), "{text}");
        assert!(text.contains("max_connections_per_ip = 1000000"), "{text}");
        assert!(text.contains(&format!("{}", dir.path().join("data").display())));
    }

    #[test]
    fn config_defaults_and_wildcard_listen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "").unwrap();
        let r = read_config(&p, dir.path().join("log")).unwrap();
        assert_eq!(r.c2s, "127.0.0.1:5222".parse().unwrap());
        std::fs::write(
            &p,
            "domain = \"x.test\"\n[c2s]\nlisten = \"0.0.0.0:5999\"\n",
        )
        .unwrap();
        let r = read_config(&p, dir.path().join("log")).unwrap();
        assert_eq!(r.c2s, "127.0.0.1:5999".parse().unwrap());
        assert_eq!(r.domain, "x.test");
        std::fs::write(&p, "[c2s]\nlisten = \"\"\n").unwrap();
        assert!(read_config(&p, dir.path().join("log")).is_err());
    }
}
