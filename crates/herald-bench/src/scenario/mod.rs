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
    /// c2s ports of several cluster nodes on `--host`, comma-separated (instead of `--port`):
    /// user n connects to the (n mod count)-th, so logins are spread round-robin and each
    /// `messages` pair's sender and receiver are on different nodes. TCP only.
    #[arg(long, value_delimiter = ',', conflicts_with = "websocket")]
    pub ports: Vec<u16>,
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
    /// Server pid, for its CPU (and RSS in `idle`) from /proc. Several (repeated or
    /// comma-separated: the nodes of a cluster) are added up; `hostile` samples the first.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
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
            ports: self.ports.clone(),
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

    /// The server's CPU seconds now (summed over its pids), if a pid was given.
    pub fn server_cpu(&self) -> Option<(Vec<u32>, f64)> {
        let c = crate::report::cpu_seconds_of(&self.server_pid)?;
        Some((self.server_pid.clone(), c))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: Common,
    }

    fn common(args: &[&str]) -> Common {
        Cli::parse_from(std::iter::once("bench").chain(args.iter().copied())).common
    }

    #[test]
    fn one_port_is_every_users() {
        let t = common(&["--port", "5333"]).target().unwrap();
        assert_eq!((t.port_for(0), t.port_for(7)), (5333, 5333));
    }

    #[test]
    fn several_ports_take_users_round_robin_and_a_pair_crosses_nodes() {
        let c = common(&[
            "--ports",
            "5222,6222,7222",
            "--server-pid",
            "10,11",
            "--server-pid",
            "12",
        ]);
        assert_eq!(c.server_pid, vec![10, 11, 12]);
        let t = c.target().unwrap();
        let ports: Vec<u16> = (0..6).map(|n| t.port_for(n)).collect();
        assert_eq!(ports, [5222, 6222, 7222, 5222, 6222, 7222]);
        // A messages pair is users 2i and 2i+1: never on the same node with 2 or more ports.
        for ports in ["5222,6222", "5222,6222,7222", "5222,6222,7222,8222"] {
            let t = common(&["--ports", ports]).target().unwrap();
            for i in 0..20 {
                assert_ne!(
                    t.port_for(2 * i),
                    t.port_for(2 * i + 1),
                    "ports {ports}, pair {i}"
                );
            }
        }
    }
}
