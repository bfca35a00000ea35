//! `herald-bench`: a load generator for XMPP servers (Herald, Prosody, any other) speaking raw
//! XML over tokio, with scenarios for logins, idle sessions, chat throughput/latency, push
//! notification latency and acked messages kept across server kills (`chaos`), plus helpers to
//! provision Prosody users and compare runs of up to three servers.
//! It must never be the bottleneck it measures: minimal parsing, cached SCRAM derivation, a
//! multi-threaded runtime sized by `--threads`, and its own CPU time is always reported.

mod conn;
mod error;
mod prosody;
mod report;
mod scenario;
mod scram;
mod ws;
mod xml;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "herald-bench", version, about = "XMPP server load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect, authenticate, bind, send presence, close; sessions/s and latency.
    Login(scenario::login::LoginArgs),
    /// Hold N sessions and report the server's RSS per session.
    Idle(scenario::idle::IdleArgs),
    /// Chat message throughput and latency between pairs of users.
    Messages(scenario::messages::MessagesArgs),
    /// Group chat: N occupants of one room, M senders; deliveries/s and latency.
    Muc(scenario::muc::MucArgs),
    /// Message → push publish latency for hibernated or offline users.
    Push(scenario::push::PushArgs),
    /// Hibernated push client: push → reconnect → resume → message; round trips and wall time.
    Wake(scenario::wake::WakeArgs),
    /// Kill and restart the server (run by the bench) while pairs chat; counts acked messages lost.
    Chaos(scenario::chaos::ChaosArgs),
    /// Normal chat and logins, quiet and then under floods from a second address; p99 ratio.
    Hostile(scenario::hostile::HostileArgs),
    /// XEP-0363: a large file up and down over HTTPS, then many small uploads at once.
    Upload(scenario::upload::UploadArgs),
    /// Write bench accounts into a Prosody data dir (internal_hashed), before Prosody starts.
    ProsodyUsers {
        /// Prosody's data_path.
        #[arg(long)]
        data_dir: PathBuf,
        /// Virtual host.
        #[arg(long, default_value = "localhost")]
        domain: String,
        /// Users are PREFIX0..PREFIX{count-1}.
        #[arg(long, default_value = "bench")]
        prefix: String,
        /// Number of users.
        #[arg(long)]
        count: u64,
        /// Shared password.
        #[arg(long, default_value = "bench")]
        password: String,
        /// PBKDF2 iterations (Prosody's default is 10000).
        #[arg(long, default_value_t = 10000)]
        iterations: u32,
    },
    /// Print sets of JSON results side by side (left, middle, right; a server without results
    /// is left out) with the ratio of the last column to each earlier one.
    Compare {
        /// Name of the left column.
        #[arg(long, default_value = "prosody")]
        left_name: String,
        /// Name of the middle column.
        #[arg(long, default_value = "ejabberd")]
        middle_name: String,
        /// Name of the right column.
        #[arg(long, default_value = "herald")]
        right_name: String,
        /// JSON reports of the left server.
        #[arg(long, num_args = 0..)]
        left: Vec<PathBuf>,
        /// JSON reports of the middle server.
        #[arg(long, num_args = 0..)]
        middle: Vec<PathBuf>,
        /// JSON reports of the right server (a figure missing from one shows as n/a).
        #[arg(long, num_args = 0..)]
        right: Vec<PathBuf>,
    },
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build().context("building the tokio runtime")
}

fn main() -> Result<()> {
    // One crypto provider, chosen explicitly (rustls refuses to guess when features differ).
    let _ = rustls::crypto::ring::default_provider().install_default();
    report::init_epoch();
    let cli = Cli::parse();
    let (common, fut): (
        scenario::Common,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<report::Report>>>>,
    ) = match cli.cmd {
        Cmd::Login(a) => (a.common.clone(), Box::pin(scenario::login::run(a))),
        Cmd::Idle(a) => (a.common.clone(), Box::pin(scenario::idle::run(a))),
        Cmd::Messages(a) => (a.common.clone(), Box::pin(scenario::messages::run(a))),
        Cmd::Muc(a) => (a.common.clone(), Box::pin(scenario::muc::run(a))),
        Cmd::Push(a) => (a.common.clone(), Box::pin(scenario::push::run(a))),
        Cmd::Wake(a) => (a.common.clone(), Box::pin(scenario::wake::run(a))),
        Cmd::Chaos(a) => (a.common.clone(), Box::pin(scenario::chaos::run(a))),
        Cmd::Hostile(a) => (a.common.clone(), Box::pin(scenario::hostile::run(a))),
        Cmd::Upload(a) => (a.common.clone(), Box::pin(scenario::upload::run(a))),
        Cmd::ProsodyUsers {
            data_dir,
            domain,
            prefix,
            count,
            password,
            iterations,
        } => {
            prosody::write_accounts(&data_dir, &domain, &prefix, count, &password, iterations)?;
            eprintln!("wrote {count} accounts under {}", data_dir.display());
            return Ok(());
        }
        Cmd::Compare {
            left_name,
            middle_name,
            right_name,
            left,
            middle,
            right,
        } => {
            let load = |paths: &[PathBuf]| {
                paths
                    .iter()
                    .map(|p| report::load(p))
                    .collect::<Result<Vec<_>>>()
            };
            let (l, m, r) = (load(&left)?, load(&middle)?, load(&right)?);
            report::compare(&[(&left_name, &l), (&middle_name, &m), (&right_name, &r)]);
            return Ok(());
        }
    };
    let rt = runtime(common.threads)?;
    let report = rt.block_on(fut)?;
    report.print_table();
    report.write_json(common.json.as_deref())?;
    // Sessions still open (e.g. a stuck drain) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(f) = &report.failure {
        anyhow::bail!("{} failed: {f}", report.scenario);
    }
    Ok(())
}
