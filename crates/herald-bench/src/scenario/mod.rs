//! Scenarios and what they share: the target options every subcommand takes, logging many
//! users in with bounded concurrency, and the open-files budget check.
//! Scenarios must stay bounded in count and time and must stop by themselves.

pub mod chaos;
pub mod hostile;
pub mod idle;
pub mod login;
pub mod messages;
pub mod muc;
pub mod push;
pub mod upload;
pub mod wake;

use crate::conn::{self, AuthMech, LoginOpts, Session, Target, TlsMode};
use crate::report::Progress;
use crate::scram::SaltCache;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Options shared by every scenario: where the server is and how bench users are named.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Common {
    /// Server host (loopback only for load tests).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// c2s port.
    #[arg(long, default_value_t = 5222)]
    pub port: u16,
    /// XMPP domain.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Users are `{prefix}{n}@{domain}`, n from 0.
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// Password shared by all bench users.
    #[arg(long, default_value = "bench")]
    #[serde(skip)]
    pub password: String,
    /// First user index this run uses (lets scenarios use disjoint users).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "scram-sha1")]
    pub auth: AuthMech,
    /// Transport security.
    #[arg(long, value_enum, default_value = "none")]
    pub tls: TlsMode,
    /// Connect over RFC 7395 WebSocket at this URL (`ws://HOST:PORT/xmpp-websocket`) instead
    /// of TCP to `--port`; needs `--tls none` (no STARTTLS over WebSocket).
    #[arg(long)]
    pub websocket: Option<String>,
    /// Bench runtime worker threads (0 = number of CPUs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Server pid, for its CPU (and RSS in `idle`) from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the result as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Deadline for each protocol step, seconds.
    #[arg(long, default_value_t = 30)]
    pub step_timeout: u64,
}

impl Common {
    /// The connection target built from these options.
    pub fn target(&self) -> Result<Arc<Target>> {
        Ok(Arc::new(Target {
            host: self.host.clone(),
            port: self.port,
            domain: self.domain.clone(),
            user_prefix: self.user_prefix.clone(),
            password: self.password.clone(),
            tls: self.tls,
            auth: self.auth,
            cache: SaltCache::default(),
            connector: conn::tls_connector()?,
            step_timeout: Duration::from_secs(self.step_timeout),
            websocket: self.websocket.clone(),
            source: None,
        }))
    }

    /// The server's CPU seconds now, if a pid was given.
    pub fn server_cpu(&self) -> Option<(String, f64)> {
        let pid = self.server_pid?.to_string();
        let c = crate::report::cpu_seconds(&pid)?;
        Some((pid, c))
    }
}

/// Raises the open-files soft limit to the hard limit and refuses plans that need more.
pub fn ensure_fd_budget(connections: u64) -> Result<()> {
    // Headroom for stdio, the runtime's own descriptors and the component socket.
    const RESERVE: u64 = 64;
    let soft = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    if connections + RESERVE > soft {
        bail!(
            "{connections} connections need {} open files but this process may open only {soft} \
             (RLIMIT_NOFILE hard limit); lower the count, or project larger counts from RSS per session",
            connections + RESERVE
        );
    }
    Ok(())
}

/// Logs in users `ns` with at most `concurrency` handshakes in flight; every login must succeed.
pub async fn login_all(
    t: &Arc<Target>,
    ns: &[u64],
    concurrency: usize,
    opts: LoginOpts,
    progress: &Arc<Progress>,
) -> Result<Vec<Session>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, &n) in ns.iter().enumerate() {
        let (t, sem, progress) = (t.clone(), sem.clone(), progress.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = conn::login(&t, n, opts).await;
            match &r {
                Ok(_) => progress.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => progress.failed.fetch_add(1, Ordering::Relaxed),
            };
            (i, n, r)
        });
    }
    let mut out: Vec<Option<Session>> = ns.iter().map(|_| None).collect();
    while let Some(j) = set.join_next().await {
        let (i, n, r) = j.context("login task panicked")?;
        let s = r.with_context(|| format!("logging in user {n}"))?;
        out[i] = Some(s);
    }
    Ok(out.into_iter().flatten().collect())
}
