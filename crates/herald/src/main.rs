//! The `herald` command line: run the server and administer its data. Every command takes
//! `--config FILE` (absent: the embedded defaults) and works while the server runs (the store
//! is SQLite in WAL mode). Server logic lives in herald-server; this only parses and calls it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use herald_server::admin;
use herald_server::Config;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald XMPP server")]
struct Cli {
    /// Configuration file (TOML). Absent: embedded defaults (domain localhost, ./herald-data).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve,
    /// Check the configuration file and exit.
    CheckConfig,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account (password from --password or the first line of stdin).
    Add {
        /// user@domain, or just the user on the configured domain.
        jid: String,
        /// The password (avoid on shared machines: prefer stdin).
        #[arg(long)]
        password: Option<String>,
    },
    /// Change an account's password (from --password or stdin).
    Passwd {
        /// user@domain or user.
        jid: String,
        /// The new password.
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account and all its data.
    Remove {
        /// user@domain or user.
        jid: String,
    },
    /// List accounts.
    List,
    /// Create PREFIX0 … PREFIX{COUNT-1} sharing one password (for benchmarks).
    AddBulk {
        /// Name prefix.
        prefix: String,
        /// How many.
        count: usize,
        /// The shared password.
        password: String,
    },
}

fn load_config(path: &Option<PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::defaults()),
    }
}

fn read_password(given: Option<String>) -> Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        bail!("empty password (give --password or a line on stdin)");
    }
    Ok(p)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let cfg = load_config(&cli.config)?;
    match cli.cmd {
        Cmd::Serve => serve(cfg),
        Cmd::CheckConfig => {
            println!(
                "{}: ok (domain {})",
                cli.config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "embedded defaults".into()),
                cfg.domain
            );
            Ok(())
        }
        Cmd::User(u) => user(cfg, u),
    }
}

fn serve(cfg: Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let running = herald_server::start(cfg).await?;
        tracing::info!("Herald is running; Ctrl-C to stop");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
        running.stop().await;
        Ok::<(), anyhow::Error>(())
    })
}

fn user(cfg: Config, cmd: UserCmd) -> Result<()> {
    let store = admin::open_store(&cfg)?;
    match cmd {
        UserCmd::Add { jid, password } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let password = read_password(password)?;
            admin::add_user(&store, &jid, &password)?;
            println!("created {jid}");
        }
        UserCmd::Passwd { jid, password } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let password = read_password(password)?;
            admin::set_password(&store, &jid, &password)?;
            println!("password changed for {jid}");
        }
        UserCmd::Remove { jid } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            admin::remove_user(&store, &jid)?;
            println!("removed {jid}");
        }
        UserCmd::List => {
            for u in admin::list_users(&store)? {
                println!("{u}");
            }
        }
        UserCmd::AddBulk {
            prefix,
            count,
            password,
        } => {
            if count == 0 {
                return Err(anyhow!("COUNT must be at least 1"));
            }
            let show = std::io::stderr().is_terminal();
            let created = admin::add_bulk(&store, &cfg, &prefix, count, &password, |done| {
                if show {
                    eprint!("\r{done}/{count}");
                }
            })?;
            if show {
                eprintln!();
            }
            println!(
                "created {created} accounts ({} already existed)",
                count - created
            );
        }
    }
    Ok(())
}
