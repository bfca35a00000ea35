//! `idle`: hold N logged-in sessions (optionally with XEP-0198) and read the server's RSS
//! from /proc before and after, giving RSS per idle session.
//! It must not send traffic while holding: the figure is what an idle session costs.

use super::Common;
use crate::conn::{self, Inbound, LoginOpts};
use crate::report::{self, Progress, Report};
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `idle`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct IdleArgs {
    /// Shared target options (`--server-pid` is required here).
    #[command(flatten)]
    pub common: Common,
    /// Sessions to hold.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// Logins in flight at once while building up.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
    /// Enable stream management with resumption on every session.
    #[arg(long)]
    pub sm: bool,
    /// Seconds to let the server settle before each RSS reading.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Extra seconds to keep the sessions after measuring.
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
}

/// The servers' RSS added up (the nodes of a cluster: sessions are spread over them).
fn rss_sum(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&p| report::rss_kib(p)).sum()
}

/// Runs the scenario.
pub async fn run(a: IdleArgs) -> Result<Report> {
    let pids = &a.common.server_pid;
    if pids.is_empty() {
        bail!("idle needs --server-pid to read the server's RSS");
    }
    super::ensure_fd_budget(a.count)?;
    let t = a.common.target()?;
    let settle = Duration::from_secs(a.settle);
    let rss0 = rss_sum(pids)?;
    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let progress = Arc::new(Progress::default());
    let ticker = report::spawn_progress("idle", progress.clone());
    let start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Sessions the server closed after their login: `failed` counts them with the failed
    // logins, but only they come off the sessions held.
    let dropped = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.count {
        let (t, sem, progress, mut stop, dropped) = (
            t.clone(),
            sem.clone(),
            progress.clone(),
            stop_rx.clone(),
            dropped.clone(),
        );
        let n = a.common.offset + i;
        let opts = LoginOpts {
            sm: a.sm,
            presence: true,
        };
        set.spawn(async move {
            let permit = sem.acquire_owned().await;
            let mut s = match conn::login(&t, n, opts).await {
                Ok(s) => s,
                Err(e) => {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    return Some(format!("user {n}: {e}"));
                }
            };
            drop(permit);
            progress.ok.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    r = s.next() => match r {
                        Ok(Inbound::Element(_)) => {}
                        Ok(Inbound::Close) | Err(_) => {
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return Some(format!("user {n}: server closed an idle session"));
                        }
                    },
                }
            }
            s.close().await;
            None
        });
    }
    let logins_done = || {
        let failed_logins = progress
            .failed
            .load(Ordering::Relaxed)
            .saturating_sub(dropped.load(Ordering::Relaxed));
        progress.ok.load(Ordering::Relaxed) + failed_logins
    };
    while logins_done() < a.count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp = start.elapsed();
    tokio::time::sleep(settle).await;
    let rss1 = rss_sum(pids)?;
    let held = progress
        .ok
        .load(Ordering::Relaxed)
        .saturating_sub(dropped.load(Ordering::Relaxed));
    eprintln!("holding {held} sessions; server RSS {rss0} KiB -> {rss1} KiB");
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let wall = start.elapsed();
    let cpu_bench = report::cpu_seconds("self").unwrap_or(0.0) - cpu0;
    let _ = stop_tx.send(true);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        if let Some(e) = r.context("idle task panicked")? {
            first_error.get_or_insert(e);
        }
    }
    ticker.abort();
    if let Some(e) = &first_error {
        eprintln!("first error: {e}");
    }
    let mut r = Report::new("idle", serde_json::to_value(&a)?);
    r.add("sessions", held as f64, "sessions");
    r.add(
        "failed",
        progress.failed.load(Ordering::Relaxed) as f64,
        "sessions",
    );
    r.add("rss_before", rss0 as f64, "KiB");
    r.add("rss_after", rss1 as f64, "KiB");
    let per = if held > 0 {
        (rss1 as f64 - rss0 as f64) / held as f64
    } else {
        0.0
    };
    r.add("rss_per_session", per, "KiB");
    r.add("ramp_s", ramp.as_secs_f64(), "s");
    r.add("bench_cpu_s", cpu_bench, "s");
    let _ = wall;
    Ok(r)
}
