//! `login`: N full logins (connect, optional STARTTLS, SASL, bind, presence, close) with a
//! fixed number in flight; sessions/s, failures and login latency.
//! It must not reuse connections: each login is a new TCP connection, as a reconnecting
//! mobile client's is.

use super::Common;
use crate::conn::{self, LoginOpts};
use crate::report::{self, new_histogram, Progress, Report};
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Options of `login`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct LoginArgs {
    /// Shared target options.
    #[command(flatten)]
    pub common: Common,
    /// Number of logins.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// Logins in flight at once.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: u64,
    /// Distinct users to cycle through (default: count).
    #[arg(long)]
    pub users: Option<u64>,
}

/// Runs the scenario.
pub async fn run(a: LoginArgs) -> Result<Report> {
    let t = a.common.target()?;
    super::ensure_fd_budget(a.concurrency)?;
    let users = a.users.unwrap_or(a.count).max(1);
    let progress = Arc::new(Progress::default());
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let server0 = a.common.server_cpu();
    let ticker = report::spawn_progress("login", progress.clone());
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (t, progress, next) = (t.clone(), progress.clone(), next.clone());
        let (count, offset) = (a.count, a.common.offset);
        workers.spawn(async move {
            let mut h = new_histogram();
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t0 = Instant::now();
                let opts = LoginOpts {
                    sm: false,
                    presence: true,
                };
                match conn::login(&t, offset + i % users, opts).await {
                    Ok(s) => {
                        report::record_ns(&mut h, t0.elapsed().as_nanos() as u64);
                        progress.ok.fetch_add(1, Ordering::Relaxed);
                        s.close().await;
                    }
                    Err(e) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (h, first_error)
        });
    }
    let mut h = new_histogram();
    let mut first_error = None;
    while let Some(r) = workers.join_next().await {
        let (wh, e) = r?;
        h.add(&wh).ok();
        if first_error.is_none() {
            first_error = e;
        }
    }
    let wall = start.elapsed();
    ticker.abort();
    if let Some(e) = &first_error {
        eprintln!("first login error: {e}");
    }
    let ok = progress.ok.load(Ordering::Relaxed);
    let mut r = Report::new("login", serde_json::to_value(&a)?);
    r.add("logins_per_s", ok as f64 / wall.as_secs_f64(), "sessions/s");
    r.add("ok", ok as f64, "sessions");
    r.add(
        "failed",
        progress.failed.load(Ordering::Relaxed) as f64,
        "sessions",
    );
    r.add_latency("login_latency", &h, false);
    r.add("wall_s", wall.as_secs_f64(), "s");
    if let Some(cpu) = r.add_cpu(
        cpu0,
        server0.as_ref().map(|(p, c)| (p.as_slice(), *c)),
        wall,
    ) {
        r.add(
            "logins_per_server_cpu_s",
            ok as f64 / cpu.max(0.01),
            "sessions/CPU-s",
        );
    }
    Ok(r)
}
