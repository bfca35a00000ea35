//! The `herald` command line: run the server and administer its data. Every command takes
//! `--config FILE` (absent: the embedded defaults) and works while the server runs (the store
//! is SQLite in WAL mode). Server logic lives in herald-server, what the administration
//! commands do in this crate's library ([`herald::admin`]); this only parses and calls them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use herald::admin;
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
    /// Manage rosters (either side may be a bare domain, which has no roster).
    #[command(subcommand)]
    Roster(RosterCmd),
    /// Manage push registrations (XEP-0357).
    #[command(subcommand)]
    Push(PushCmd),
    /// Manage invites to register an account (XEP-0401/XEP-0445; see [registration]).
    #[command(subcommand)]
    Invite(InviteCmd),
    /// Manage uploaded files (XEP-0363).
    #[command(subcommand)]
    Upload(UploadCmd),
    /// Cluster mode ([cluster]): inspect the nodes sharing this configuration's Redis.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Copy a SQLite installation into an empty PostgreSQL database (stop the server first),
    /// then count every table on both sides.
    Migrate {
        /// `sqlite:PATH`: the data directory (or its herald.sqlite3).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// `postgres:URL`, e.g. postgres:postgres://herald:PASSWORD@127.0.0.1/herald.
        #[arg(long, value_name = "postgres:URL")]
        to: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Every node that joined: up (heartbeat within the lease) or down, the age of its last
    /// heartbeat and the sessions it held then.
    Status,
}

#[derive(Subcommand)]
enum UploadCmd {
    /// Delete the files older than `upload.expire_after` (the running server does it too,
    /// periodically).
    Purge,
}

#[derive(Subcommand)]
enum InviteCmd {
    /// Create an invite; prints its id, its token, the xmpp: URI and the web page to give the invitee.
    Create {
        /// The one account it may register (user@domain or user); absent: any name.
        #[arg(long = "for", value_name = "USER")]
        for_user: Option<String>,
        /// How long it works, e.g. "7d", "12h"; absent: until used up.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// How many accounts it registers.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List stored invites (id, account it is for, created, expires, uses left, state).
    List,
    /// Delete an invite by id; its token stops working.
    Revoke {
        /// The id `invite create` or `invite list` showed.
        id: String,
    },
}

/// A duration as config files write them, at most ten years.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. \"7d\")"))?;
    if d > herald_server::config::MAX_DURATION {
        return Err("must be at most 3650d".into());
    }
    Ok(d)
}

#[derive(Subcommand)]
enum RosterCmd {
    /// Mutual subscription between USER and CONTACT.
    Subscribe {
        /// A local account or a bare domain.
        user: String,
        /// A JID or a bare domain.
        contact: String,
    },
    /// Cancel the subscriptions both ways (the items stay).
    Unsubscribe {
        /// A local account or a bare domain.
        user: String,
        /// A JID or a bare domain.
        contact: String,
    },
    /// Remove each from the other's roster.
    Remove {
        /// A local account or a bare domain.
        user: String,
        /// A JID or a bare domain.
        contact: String,
    },
    /// Show a user's roster.
    List {
        /// A local account.
        user: String,
    },
}

#[derive(Subcommand)]
enum PushCmd {
    /// A user's registrations: app server, node, time enabled, last push, last result, errors;
    /// then those the server removed recently, why and when (push.removed_retention).
    List {
        /// A local account.
        user: String,
    },
    /// Remove a user's registrations with APPSERVER_JID (only NODE if given).
    Remove {
        /// A local account.
        user: String,
        /// The app server JID.
        appserver_jid: String,
        /// Only this node.
        node: Option<String>,
    },
    /// Push (without a message) to every registration of USER; needs the running server.
    Ping {
        /// A local account.
        user: String,
    },
    /// Send a test push to each registration of USER (only APPSERVER_JID, only NODE, when
    /// given) through the running server and show each app server's answer and the
    /// round-trip time; fails if any failed or timed out.
    Test {
        /// A local account.
        user: String,
        /// Only registrations with this app server JID.
        appserver_jid: Option<String>,
        /// Only this node.
        node: Option<String>,
    },
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
    /// Change an account's password (from --password or stdin); ends its running sessions.
    Passwd {
        /// user@domain or user.
        jid: String,
        /// The new password.
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account and all its data; ends its running sessions first.
    Remove {
        /// user@domain or user.
        jid: String,
    },
    /// Log every device of an account out: delete its XEP-0484 FAST tokens and end its
    /// running sessions (each client logs in with the password again).
    LogoutAll {
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
    // Colour only for a person at a terminal: not in a log file, a pipe or journald, nor
    // when NO_COLOR is set to anything but "" (https://no-color.org).
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
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

/// `herald migrate`: the copy with a progress line per table on stderr, then the count of
/// every table in the source and, read again after the commit, in PostgreSQL.
fn migrate(from: &str, to: &str) -> Result<()> {
    let Some(path) = from.strip_prefix("sqlite:") else {
        bail!("--from must be sqlite:PATH");
    };
    let Some(url) = to.strip_prefix("postgres:") else {
        bail!("--to must be postgres:URL");
    };
    herald_store::PgOptions::check_url(url).map_err(|e| anyhow!("--to: {e}"))?;
    let path = std::path::Path::new(path);
    // Not the URL in messages: it may hold a password.
    let dst = herald_store::PgStore::open(&herald_store::PgOptions::new(url))
        .context("opening the PostgreSQL store (--to)")?;
    let tty = std::io::stderr().is_terminal();
    let copied = dst
        .copy_from_sqlite(path, |table, done, total| {
            admin::migrate_progress(&mut std::io::stderr(), tty, table, done, total);
        })
        .with_context(|| {
            format!(
                "copying {} (nothing was committed)",
                herald_store::sqlite_file(path).display()
            )
        })?;
    let report = admin::migrate_report(&copied);
    print!("{}", report.text);
    if !report.ok {
        bail!("the counts differ: check the tables marked MISMATCH");
    }
    Ok(())
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
        Cmd::Migrate { from, to } => migrate(&from, &to),
        Cmd::User(u) => user(cfg, u),
        Cmd::Roster(r) => roster(cfg, r),
        Cmd::Push(p) => push(cfg, p),
        Cmd::Cluster(ClusterCmd::Status) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            print!("{}", rt.block_on(herald_server::cluster::status(&cfg))?);
            Ok(())
        }
        Cmd::Invite(i) => invite(cfg, i),
        Cmd::Upload(UploadCmd::Purge) => {
            let store = admin::open_store(&cfg)?;
            let store = &*store;
            let n = herald_server::http::upload::purge(
                store,
                &cfg.data_dir.join("upload"),
                cfg.upload.expire_after.0,
                herald_server::http::upload::unix_now(),
            )?;
            println!("{n} expired files deleted");
            Ok(())
        }
    }
}

fn invite(cfg: Config, cmd: InviteCmd) -> Result<()> {
    let store = admin::open_store(&cfg)?;
    let store = &*store;
    match cmd {
        InviteCmd::Create {
            for_user,
            expires,
            uses,
        } => {
            let for_user = for_user.map(|u| admin::account_jid(&cfg, &u)).transpose()?;
            let (id, token, uri) =
                admin::create_invite(&cfg, store, for_user.as_ref(), expires, uses)?;
            println!("id {id}");
            println!("token {token}");
            println!("uri {uri}");
            // The landing page (`/invite/TOKEN`) for people without a client yet; only when
            // an HTTP listener or a public URL says where it is reachable.
            if let Some(base) = cfg.http.base_url(&cfg.domain, cfg.http.listen) {
                println!("page {base}/invite/{token}");
            }
            if !cfg.registration.enabled {
                eprintln!(
                    "note: [registration] enabled = false: the invite works once registration is enabled"
                );
            }
        }
        InviteCmd::List => {
            let now = herald_server::xep::delay::now_micros() / 1000;
            for i in herald_store::InviteStore::invites(store)? {
                let state = if i.usable(now) {
                    "usable"
                } else if i.uses_left == 0 {
                    "used-up"
                } else {
                    "expired"
                };
                println!(
                    "{}\tfor={}\tcreated={}\texpires={}\tuses_left={}\t{}",
                    i.id,
                    i.for_user.as_deref().unwrap_or("any"),
                    admin::unix_time_ms(i.created),
                    i.expires
                        .map(admin::unix_time_ms)
                        .unwrap_or_else(|| "never".into()),
                    i.uses_left,
                    state
                );
            }
        }
        InviteCmd::Revoke { id } => match herald_store::InviteStore::revoke_invite(store, &id) {
            Ok(()) => println!("revoked {id}"),
            Err(herald_store::StoreError::NotFound) => bail!("no invite {id}"),
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

fn roster(cfg: Config, cmd: RosterCmd) -> Result<()> {
    let store = admin::open_store(&cfg)?;
    let store = &*store;
    let (user, contact, action) = match cmd {
        RosterCmd::List { user } => {
            let jid = admin::account_jid(&cfg, &user)?;
            if !herald_store::AccountStore::account_exists(store, &jid.to_string())? {
                return Err(anyhow!("{jid}: no such user"));
            }
            let (ver, items) = herald_store::RosterStore::roster(store, &jid.to_string())?;
            println!("# roster of {jid}, version {ver}");
            for i in items {
                println!(
                    "{}\t{}{}\t{}\t{}",
                    i.jid,
                    i.subscription,
                    if i.ask { "+ask" } else { "" },
                    i.name.unwrap_or_default(),
                    i.groups.join(",")
                );
            }
            return Ok(());
        }
        RosterCmd::Subscribe { user, contact } => (user, contact, admin::RosterAction::Subscribe),
        RosterCmd::Unsubscribe { user, contact } => {
            (user, contact, admin::RosterAction::Unsubscribe)
        }
        RosterCmd::Remove { user, contact } => (user, contact, admin::RosterAction::Remove),
    };
    let a = admin::party(&cfg, store, &user)?;
    let b = admin::party(&cfg, store, &contact)?;
    let changed = admin::roster_action(store, &a, &b, action)?;
    let mut live = false;
    for (u, c) in &changed {
        live |= admin::notify(&cfg, &format!("roster-changed {u} {c}")).is_some();
    }
    if changed.is_empty() {
        println!("nothing to change: neither side has a roster here");
    } else {
        for (u, c) in &changed {
            println!("updated {u}'s roster entry for {c}");
        }
        if live {
            println!("online sessions were notified");
        }
    }
    Ok(())
}

fn push(cfg: Config, cmd: PushCmd) -> Result<()> {
    let store = admin::open_store(&cfg)?;
    let store = &*store;
    let known = |u: &str| -> Result<String> {
        let jid = admin::account_jid(&cfg, u)?.to_string();
        if !herald_store::AccountStore::account_exists(store, &jid)? {
            return Err(anyhow!("{jid}: no such user"));
        }
        Ok(jid)
    };
    match cmd {
        PushCmd::List { user } => {
            let jid = known(&user)?;
            let regs = herald_store::PushStore::push_registrations(store, &jid)?;
            if regs.is_empty() {
                println!("{jid} has no push registrations");
            }
            let removed = admin::removed_push(&cfg, store, &jid)?;
            for r in regs {
                println!(
                    "{}\tnode={}\tenabled={}\tlast_push={}\tlast_result={}\terrors={}",
                    r.jid,
                    r.node,
                    admin::unix_time(r.enabled_at),
                    r.last_push
                        .map(admin::unix_time)
                        .unwrap_or_else(|| "never".into()),
                    r.last_result.unwrap_or_else(|| "-".into()),
                    r.error_count
                );
            }
            if !removed.is_empty() {
                println!(
                    "# removed in the last {}:",
                    humantime_secs(cfg.push.removed_retention.0.as_secs())
                );
            }
            for r in removed {
                println!(
                    "{}\tnode={}\tremoved={}\treason={}\tlast_result={}\terrors={}",
                    r.jid,
                    r.node,
                    admin::unix_time(r.removed_at),
                    r.reason,
                    r.last_result.unwrap_or_else(|| "-".into()),
                    r.error_count
                );
            }
        }
        PushCmd::Remove {
            user,
            appserver_jid,
            node,
        } => {
            let jid = known(&user)?;
            let n = admin::remove_push(&cfg, store, &jid, &appserver_jid, node.as_deref())?;
            if n == 0 {
                return Err(anyhow!(
                    "{jid} has no registration with {appserver_jid}{}",
                    node.map(|n| format!(" node {n}")).unwrap_or_default()
                ));
            }
            println!("removed {n} registration(s)");
        }
        PushCmd::Ping { user } => {
            let jid = known(&user)?;
            match admin::notify(&cfg, &format!("push-ping {jid}")) {
                Some(r) if r.starts_with("ok") => {
                    println!(
                        "pushed to {} registration(s)",
                        r.trim_start_matches("ok").trim()
                    );
                }
                Some(r) => return Err(anyhow!("server said: {r}")),
                None => {
                    return Err(anyhow!(
                        "the server is not running (no admin socket in {})",
                        cfg.data_dir.display()
                    ))
                }
            }
        }
        PushCmd::Test {
            user,
            appserver_jid,
            node,
        } => {
            let jid = admin::account_jid(&cfg, &user)?;
            known(&user)?;
            let results = admin::push_test(&cfg, &jid, appserver_jid.as_deref(), node.as_deref())?;
            print!("{}", test_table(&results));
            let failed = results.iter().filter(|r| !r.outcome.is_ok()).count();
            if failed > 0 {
                return Err(anyhow!(
                    "{failed} of {} test push(es) failed",
                    results.len()
                ));
            }
        }
    }
    Ok(())
}

/// `herald push test`'s table: app server, node, answer, round-trip time.
fn test_table(results: &[herald_push::diag::TestResult]) -> String {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            [
                r.jid.clone(),
                r.node.clone(),
                r.outcome.to_string(),
                r.rtt_us
                    .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["APP SERVER", "NODE", "RESULT", "RTT"].map(str::to_string);
    let mut width = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A whole number of seconds as "7d", "36h", "90m" or "45s".
fn humantime_secs(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
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
    let store = &*store;
    match cmd {
        UserCmd::Add { jid, password } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let password = read_password(password)?;
            admin::add_user(store, &jid, &password)?;
            println!("created {jid}");
        }
        UserCmd::Passwd { jid, password } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let password = read_password(password)?;
            let ended = admin::change_password(&cfg, store, &jid, &password)?;
            println!("password changed for {jid}");
            if let Some(n) = ended {
                println!("ended {n} running session(s)");
            }
        }
        UserCmd::Remove { jid } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let ended = admin::remove_account(&cfg, store, &jid)?;
            println!("removed {jid}");
            if let Some(n) = ended {
                println!("ended {n} running session(s)");
            }
        }
        UserCmd::LogoutAll { jid } => {
            let jid = admin::account_jid(&cfg, &jid)?;
            let (tokens, ended) = admin::logout_all(&cfg, store, &jid)?;
            println!("deleted {tokens} FAST token(s) of {jid}");
            if let Some(n) = ended {
                println!("ended {n} running session(s)");
            }
        }
        UserCmd::List => {
            for u in admin::list_users(store)? {
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
            let created = admin::add_bulk(store, &cfg, &prefix, count, &password, |done| {
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
