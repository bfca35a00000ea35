//! `chaos`: does the server keep what it acknowledged when it dies? The bench runs the server
//! itself, P senders chat to P recipients over XEP-0198 streams, and every cycle the server is
//! killed (SIGKILL and SIGTERM in turn) and started again on the same data dir while the
//! clients reconnect (resumption first, else a new session). Afterwards every message the
//! server acknowledged to its sender (`<a h/>`, `<resumed h/>`, `<failed h/>`) must be found:
//! received by its recipient, in the recipient's archive (XEP-0313), or delivered from offline
//! storage at a last login. Those found nowhere are lost, and the run fails.
//! It must stay bounded in count and time, and must stop the server it started.

pub mod book;
pub mod server;

use super::Common;
use crate::conn::{self, Authed, Inbound, LoginOpts, Resumption, Session, Target};
use crate::error::{snippet, BenchError};
use crate::report::{self, now_nanos, Progress, Report};
use crate::xml;
use anyhow::{bail, Context, Result};
use book::{PairBook, StreamAcks, Tally};
use server::Server;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Options of `chaos`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct ChaosArgs {
    /// Shared target options (host, port and domain come from the server's configuration).
    #[command(flatten)]
    pub common: Common,
    /// The `herald` binary to run (`herald serve`, `herald user add-bulk`).
    #[arg(long)]
    pub server_bin: PathBuf,
    /// Run the server with this configuration (its data dir is used as it is; the c2s port
    /// and domain are read from it). Absent: a config with a fresh data dir in a temp dir.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Sender/recipient pairs (users offset+2i send to offset+2i+1).
    #[arg(short = 'p', long, default_value_t = 20)]
    pub pairs: u64,
    /// Kill/restart cycles (odd ones SIGKILL, even ones SIGTERM).
    #[arg(long, default_value_t = 10)]
    pub cycles: u32,
    /// Seconds of traffic before each kill (and after the last restart).
    #[arg(long, default_value_t = 2.0)]
    pub cycle_secs: f64,
    /// Total messages per second over all pairs.
    #[arg(short = 'r', long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Unacknowledged messages a sender may have out before it waits.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Seconds to wait for the server to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 20)]
    pub term_timeout: u64,
    /// Seconds to wait for a started server to accept on its c2s port.
    #[arg(long, default_value_t = 30)]
    pub start_timeout: u64,
    /// After the traffic: seconds every recipient must be connected with nothing new
    /// arriving before the check.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Most seconds to wait for that settling (the check runs anyway, with a note).
    #[arg(long, default_value_t = 60)]
    pub settle_max: u64,
    /// Keep the temp dir (config, data, server log) and print where it is.
    #[arg(long)]
    pub keep_data: bool,
}

/// At most this many lost ids are listed.
const MAX_LOST_IDS: usize = 20;
/// Senders wait this long, once traffic stops, for the acknowledgement of their last messages.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(5);
/// Reconnection attempts back off from this…
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// … to this.
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// At the final login, offline messages are taken to be all delivered after this much silence…
const OFFLINE_QUIET: Duration = Duration::from_secs(1);
/// … or after this long in all.
const OFFLINE_MAX: Duration = Duration::from_secs(15);
/// Archive page size (XEP-0059 `<max/>`).
const MAM_PAGE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Senders send, everybody reconnects after a kill.
    Traffic,
    /// Senders collect their last acks and leave; recipients go on receiving.
    Stop,
    /// Recipients ack what they got and leave.
    Done,
}

#[derive(Default)]
struct Stats {
    /// New sessions bound (first logins and after a failed resumption).
    sessions: AtomicU64,
    resumed: AtomicU64,
    resume_failed: AtomicU64,
    /// Connection attempts that failed (the server was down, or died during negotiation).
    connect_errors: AtomicU64,
    /// `h` values beyond what was sent (XEP-0198 handled-count-too-high).
    ack_errors: AtomicU64,
    /// Messages whose body did not belong to the recipient's pair in this run.
    foreign: AtomicU64,
    /// Recipients connected right now.
    recipients_up: AtomicU64,
    /// When a recipient last received one of this run's messages (bench nanos).
    last_rx_ns: AtomicU64,
}

struct Ctx {
    t: Arc<Target>,
    /// Written into every body, so an earlier run's messages are never counted.
    tag: String,
    books: Vec<Mutex<PairBook>>,
    /// The cycle now running (messages are stamped with it).
    cycle: AtomicU32,
    stats: Stats,
    progress: Arc<Progress>,
    interval: Duration,
    window: usize,
}

impl Ctx {
    fn book(&self, pair: u64) -> std::sync::MutexGuard<'_, PairBook> {
        let m = &self.books[pair as usize];
        // A panicking holder cannot leave a book half-updated in a way that matters here.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the scenario.
pub async fn run(a: ChaosArgs) -> Result<Report> {
    if a.pairs == 0 || a.rate <= 0.0 || a.cycle_secs <= 0.0 {
        bail!("--pairs, --rate and --cycle-secs must be positive");
    }
    super::ensure_fd_budget(a.pairs * 2 + 8)?;
    let tmp = tempfile::Builder::new()
        .prefix("herald-chaos.")
        .tempdir()
        .context("creating a temp dir")?;
    let cfg = match &a.config {
        Some(c) => server::read_config(c, tmp.path().join("herald.log"))?,
        None => server::write_config(tmp.path(), &a.common.domain, server::free_port()?)?,
    };
    let mut common = a.common.clone();
    common.host = cfg.c2s.ip().to_string();
    common.port = cfg.c2s.port();
    common.domain = cfg.domain.clone();
    let users = common.offset + 2 * a.pairs;
    eprintln!(
        "[chaos] {} users on {} ({}), server log {}",
        users,
        cfg.c2s,
        cfg.config.display(),
        cfg.log.display()
    );
    server::add_users(
        &a.server_bin,
        &cfg,
        &common.user_prefix,
        users,
        &common.password,
    )
    .await?;
    let mut srv = Server::new(a.server_bin.clone(), cfg);
    let outcome = match srv.start(Duration::from_secs(a.start_timeout)).await {
        Ok(took) => {
            eprintln!(
                "[chaos] server pid {} accepting after {:.0} ms",
                srv.pid().unwrap_or(0),
                took.as_secs_f64() * 1e3
            );
            // The report shows where the server really listened.
            let eff = ChaosArgs {
                common: common.clone(),
                ..a.clone()
            };
            drive(&eff, &mut srv).await
        }
        Err(e) => Err(e),
    };
    if srv.pid().is_some() {
        if let Err(e) = srv.terminate(Duration::from_secs(a.term_timeout)).await {
            eprintln!("[chaos] stopping the server: {e:#}");
        }
    }
    let kept = if a.keep_data {
        let p = tmp.keep();
        eprintln!("[chaos] kept {}", p.display());
        Some(p)
    } else {
        drop(tmp);
        None
    };
    let mut r = outcome?;
    match kept {
        Some(p) => r.notes.push(format!(
            "data, config and server log kept in {}",
            p.display()
        )),
        None if r.failure.is_some() => r
            .notes
            .push("the data dir and server log are gone: run with --keep-data to keep them".into()),
        None => {}
    }
    Ok(r)
}

/// What the cycles did to the server.
#[derive(Default)]
struct Kills {
    sigkill: u64,
    sigterm: u64,
    sigterm_timeouts: u64,
    restarts: Vec<Duration>,
    sigterm_exits: Vec<Duration>,
    /// What ended each cycle, by cycle.
    how: Vec<&'static str>,
}

/// Everything between the first start and the final stop of the server.
async fn drive(a: &ChaosArgs, srv: &mut Server) -> Result<Report> {
    let common = &a.common;
    let t = common.target()?;
    let progress = Arc::new(Progress::default());
    let ctx = Arc::new(Ctx {
        t: t.clone(),
        tag: format!("{:08x}", rand::random::<u32>()),
        books: (0..a.pairs).map(|_| Mutex::new(PairBook::new())).collect(),
        cycle: AtomicU32::new(0),
        stats: Stats::default(),
        progress: progress.clone(),
        interval: Duration::from_secs_f64(a.pairs as f64 / a.rate).max(Duration::from_micros(100)),
        window: a.window.max(1),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Traffic);
    let mut senders = tokio::task::JoinSet::new();
    let mut recipients = tokio::task::JoinSet::new();
    for pair in 0..a.pairs {
        let su = common.offset + 2 * pair;
        let ru = su + 1;
        recipients.spawn(recipient(ctx.clone(), pair, ru, phase_rx.clone()));
        senders.spawn(sender(
            ctx.clone(),
            pair,
            su,
            t.bare_jid(ru),
            phase_rx.clone(),
        ));
    }
    let ticker = report::spawn_progress("chaos", progress.clone());
    let cycle = Duration::from_secs_f64(a.cycle_secs);
    let mut k = Kills::default();
    let started = Instant::now();
    for c in 0..a.cycles {
        tokio::time::sleep(cycle).await;
        // Messages sent from here on belong to the next cycle.
        ctx.cycle.store(c + 1, Ordering::Relaxed);
        let (how, stopped) = if c % 2 == 0 {
            k.sigkill += 1;
            ("SIGKILL", srv.kill().await?)
        } else {
            k.sigterm += 1;
            let s = srv.terminate(Duration::from_secs(a.term_timeout)).await?;
            k.sigterm_exits.push(s.took);
            k.sigterm_timeouts += u64::from(s.timed_out);
            ("SIGTERM", s)
        };
        k.how.push(how);
        let took = srv
            .start(Duration::from_secs(a.start_timeout))
            .await
            .with_context(|| format!("restarting the server after {how} (cycle {})", c + 1))?;
        k.restarts.push(took);
        eprintln!(
            "[chaos] cycle {}/{}: {how}, exited in {:.0} ms{}, accepting again after {:.0} ms",
            c + 1,
            a.cycles,
            stopped.took.as_secs_f64() * 1e3,
            if stopped.timed_out {
                " (SIGTERM timed out: killed)"
            } else {
                ""
            },
            took.as_secs_f64() * 1e3
        );
    }
    // Traffic once more after the last restart, so every client has come back at least once.
    tokio::time::sleep(cycle).await;
    let traffic = started.elapsed();
    let _ = phase_tx.send(Phase::Stop);
    eprintln!("[chaos] traffic stopped; senders collect their last acks");
    let senders_bound = FINAL_ACK_WAIT + t.step_timeout + Duration::from_secs(5);
    if tokio::time::timeout(senders_bound, async {
        while senders.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        eprintln!("[chaos] senders still busy after {senders_bound:?}; stopped");
        senders.abort_all();
    }

    // Settle: every recipient connected, and nothing new for settle_secs.
    let mut notes = Vec::new();
    let settle_from = Instant::now();
    let quiet = Duration::from_secs_f64(a.settle_secs.max(0.0));
    loop {
        let since_rx = Duration::from_nanos(
            now_nanos().saturating_sub(ctx.stats.last_rx_ns.load(Ordering::Relaxed)),
        );
        let all_up = ctx.stats.recipients_up.load(Ordering::Relaxed) == a.pairs;
        if all_up && since_rx >= quiet && settle_from.elapsed() >= quiet {
            break;
        }
        if settle_from.elapsed() >= Duration::from_secs(a.settle_max) {
            notes.push(format!(
                "settle: not quiet after {} s ({} of {} recipients connected); checked anyway",
                a.settle_max,
                ctx.stats.recipients_up.load(Ordering::Relaxed),
                a.pairs
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = phase_tx.send(Phase::Done);
    if tokio::time::timeout(Duration::from_secs(10), async {
        while recipients.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        recipients.abort_all();
    }
    ticker.abort();

    // The check: a last login per recipient (offline messages), then its archive.
    eprintln!("[chaos] checking: a last login and an archive query per recipient");
    let mut checks = tokio::task::JoinSet::new();
    for pair in 0..a.pairs {
        let ru = common.offset + 2 * pair + 1;
        let ctx = ctx.clone();
        let max_pages = ctx.book(pair).sent() / MAM_PAGE + 100;
        let bound = OFFLINE_MAX + t.step_timeout * 2 + Duration::from_secs(max_pages);
        checks.spawn(async move {
            let r = tokio::time::timeout(bound, final_check(&ctx, pair, ru, max_pages)).await;
            let r = match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("timed out after {bound:?}")),
            };
            (pair, r)
        });
    }
    let mut check = Checked {
        notes,
        ..Checked::default()
    };
    while let Some(j) = checks.join_next().await {
        let (pair, r) = j.context("check task panicked")?;
        match r {
            Ok(p) => check.pages += p,
            Err(e) => check.errors.push(format!("pair {pair}: {e:#}")),
        }
    }

    let mut tally = Tally::default();
    for pair in 0..a.pairs {
        tally.add(pair, &ctx.book(pair), MAX_LOST_IDS);
    }
    build_report(a, &ctx, &k, &tally, traffic, check)
}

/// How the final check went.
#[derive(Default)]
struct Checked {
    /// Archive pages read.
    pages: u64,
    /// Remarks for the report.
    notes: Vec<String>,
    /// Recipients that could not be checked, and why.
    errors: Vec<String>,
}

fn build_report(
    a: &ChaosArgs,
    ctx: &Ctx,
    k: &Kills,
    tally: &Tally,
    traffic: Duration,
    check: Checked,
) -> Result<Report> {
    let Checked {
        pages,
        mut notes,
        errors: check_errors,
    } = check;
    let s = &ctx.stats;
    let ld = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut r = Report::new("chaos", serde_json::to_value(a)?);
    r.add("cycles", k.how.len() as f64, "cycles");
    r.add("sigkill", k.sigkill as f64, "kills");
    r.add("sigterm", k.sigterm as f64, "stops");
    r.add("sigterm_timeouts", k.sigterm_timeouts as f64, "stops");
    r.add("traffic_s", traffic.as_secs_f64(), "s");
    r.add("sent", tally.sent as f64, "msgs");
    r.add("acked", tally.acked as f64, "msgs");
    r.add("received", tally.received as f64, "msgs");
    r.add("archive_only", tally.archive_only as f64, "msgs");
    r.add("lost", tally.lost as f64, "msgs");
    r.add("duplicates", tally.duplicates as f64, "msgs");
    r.add("bounced", tally.bounced as f64, "msgs");
    r.add("received_unacked", tally.received_unacked as f64, "msgs");
    r.add(
        "received_at_last_login",
        tally.received_at_final_login as f64,
        "msgs",
    );
    r.add("archived", tally.archived as f64, "msgs");
    r.add("acked_unarchived", tally.acked_unarchived as f64, "msgs");
    r.add(
        "archive_duplicates",
        tally.archive_duplicates as f64,
        "msgs",
    );
    r.add(
        "unknown",
        (tally.unknown + s.foreign.load(Ordering::Relaxed)) as f64,
        "msgs",
    );
    let mut restarts = k.restarts.clone();
    restarts.sort();
    r.add("restart_ms_p50", median(&restarts).map_or(0.0, ms), "ms");
    r.add(
        "restart_ms_max",
        restarts.last().copied().map_or(0.0, ms),
        "ms",
    );
    r.add(
        "sigterm_exit_ms_max",
        k.sigterm_exits.iter().max().copied().map_or(0.0, ms),
        "ms",
    );
    r.add("sessions", ld(&s.sessions), "sessions");
    r.add("resumed", ld(&s.resumed), "sessions");
    r.add("resume_failed", ld(&s.resume_failed), "sessions");
    r.add("connect_errors", ld(&s.connect_errors), "attempts");
    r.add("ack_errors", ld(&s.ack_errors), "acks");
    r.add("mam_pages", pages as f64, "pages");

    if tally.lost > 0 {
        let mut line = format!("lost: {}", tally.lost_ids.join(" "));
        if tally.lost > tally.lost_ids.len() as u64 {
            let _ = write!(
                line,
                " (and {} more)",
                tally.lost - tally.lost_ids.len() as u64
            );
        }
        notes.push(line);
        let by: Vec<String> = tally
            .lost_by_cycle
            .iter()
            .map(|(c, n)| {
                let how = k.how.get(*c as usize).copied().unwrap_or("no kill");
                format!("cycle {} (then {how}): {n}", c + 1)
            })
            .collect();
        notes.push(format!(
            "lost by the cycle they were sent in: {}",
            by.join(", ")
        ));
    }
    for e in &check_errors {
        notes.push(format!("check failed for {e}"));
    }
    r.notes = notes;
    let mut failures = Vec::new();
    if tally.lost > 0 {
        failures.push(format!(
            "{} of {} acknowledged messages lost",
            tally.lost, tally.acked
        ));
    }
    if !check_errors.is_empty() {
        failures.push(format!(
            "{} recipient(s) could not be checked",
            check_errors.len()
        ));
    }
    if !failures.is_empty() {
        r.failure = Some(failures.join("; "));
    }
    Ok(r)
}

/// The median of sorted durations.
fn median(sorted: &[Duration]) -> Option<Duration> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Sleeps for `d`, or less if the phase changes.
async fn pause(phase: &mut watch::Receiver<Phase>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = phase.changed() => {}
    }
}

/// What a hibernated session needs to be resumed.
struct Prev {
    jid: String,
    previd: String,
    /// Stanzas we handled from it.
    h_in: u32,
}

impl Prev {
    fn of(s: &Session) -> Option<Prev> {
        Some(Prev {
            jid: s.jid.clone(),
            previd: s.sm_id.clone()?,
            h_in: s.h_in,
        })
    }
}

/// Authenticates, then resumes `prev` if there is one. Ok(Ok(session)) if resumed (with the
/// server's `h`), Ok(Err(authed)) if there was nothing to resume or resumption failed (with
/// `<failed h/>` if given); `prev` is consumed once the server has answered.
async fn reconnect(
    ctx: &Ctx,
    user: u64,
    prev: &mut Option<Prev>,
) -> Result<std::result::Result<(Session, u32), (Authed, Option<u32>)>, BenchError> {
    let authed = conn::authenticate(&ctx.t, user).await?;
    let Some(p) = prev.as_ref() else {
        return Ok(Err((authed, None)));
    };
    let (jid, previd, h) = (p.jid.clone(), p.previd.clone(), p.h_in);
    let r = authed.resume(&ctx.t, &jid, &previd, h).await?;
    *prev = None;
    Ok(match r {
        Resumption::Resumed { session, h } => {
            ctx.stats.resumed.fetch_add(1, Ordering::Relaxed);
            Ok((session, h))
        }
        Resumption::Failed { authed, h } => {
            ctx.stats.resume_failed.fetch_add(1, Ordering::Relaxed);
            Err((authed, h))
        }
    })
}

/// Applies the server's `h` to a sender stream and records what it acknowledges.
fn apply_ack(ctx: &Ctx, pair: u64, acks: &mut StreamAcks, h: u32) {
    match acks.ack(h) {
        Ok(ns) if ns.is_empty() => {}
        Ok(ns) => {
            let mut b = ctx.book(pair);
            for n in ns {
                b.acked(n);
            }
        }
        Err(_) => {
            ctx.stats.ack_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Acks and bounces reaching a sender.
fn on_sender_element(ctx: &Ctx, pair: u64, acks: &mut StreamAcks, e: &[u8]) {
    match xml::name(e) {
        b"a" => {
            if let Some(h) = conn::attr_u32(e, "h") {
                apply_ack(ctx, pair, acks, h);
            }
        }
        b"message" if xml::attr(e, "type") == Some(b"error") => {
            let id = xml::attr(e, "id").map(String::from_utf8_lossy);
            if let Some((p, n)) = id.as_deref().and_then(book::parse_id) {
                if p == pair {
                    ctx.book(pair).bounced(n);
                }
            }
        }
        _ => {}
    }
}

enum End {
    /// The phase moved on.
    Stop,
    /// The connection died.
    Lost,
}

async fn sender(
    ctx: Arc<Ctx>,
    pair: u64,
    user: u64,
    to: String,
    mut phase: watch::Receiver<Phase>,
) {
    // The stream to resume, and the acknowledgement state of its messages.
    let mut prev: Option<Prev> = None;
    let mut old_acks: Option<StreamAcks> = None;
    let mut backoff = RECONNECT_MIN;
    while *phase.borrow() == Phase::Traffic {
        let r = tokio::time::timeout(
            ctx.t.step_timeout,
            connect_sender(&ctx, pair, user, &mut prev, &mut old_acks),
        )
        .await;
        let (mut s, mut acks) = match r {
            Ok(Ok(x)) => x,
            _ => {
                ctx.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.failed.fetch_add(1, Ordering::Relaxed);
                pause(&mut phase, backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_MIN;
        ctx.progress.ok.fetch_add(1, Ordering::Relaxed);
        match sender_stream(&ctx, pair, &to, &mut s, &mut acks, &mut phase).await {
            End::Lost => {
                prev = Prev::of(&s);
                old_acks = prev.as_ref().map(|_| acks);
            }
            End::Stop => {
                // Traffic is over: ask for the last acks, wait a little, leave cleanly.
                if s.send(b"<r xmlns='urn:xmpp:sm:3'/>").await.is_ok() {
                    let until = Instant::now() + FINAL_ACK_WAIT;
                    while acks.unacked() > 0 {
                        match tokio::time::timeout_at(until, s.next()).await {
                            Ok(Ok(Inbound::Element(e))) => {
                                on_sender_element(&ctx, pair, &mut acks, &e)
                            }
                            _ => break,
                        }
                    }
                }
                s.close().await;
                return;
            }
        }
    }
}

/// A sender's stream: the old one resumed (its acks counting on from the server's `h`), or a
/// new session with SM (after applying `<failed h/>` to the old one, if given).
async fn connect_sender(
    ctx: &Ctx,
    pair: u64,
    user: u64,
    prev: &mut Option<Prev>,
    old_acks: &mut Option<StreamAcks>,
) -> Result<(Session, StreamAcks), BenchError> {
    let r = reconnect(ctx, user, prev).await?;
    // From here the server has answered any resumption: the old stream is settled.
    let old = old_acks.take();
    match r {
        Ok((s, h)) => {
            let mut acks = old.unwrap_or_default();
            apply_ack(ctx, pair, &mut acks, h);
            // Not sent again: the stream counts on from the server's h.
            acks.rewind_to_acked();
            Ok((s, acks))
        }
        Err((authed, h)) => {
            if let (Some(mut acks), Some(h)) = (old, h) {
                apply_ack(ctx, pair, &mut acks, h);
            }
            let opts = LoginOpts {
                sm: true,
                presence: false,
            };
            let s = authed.bind(&ctx.t, user, opts).await?;
            ctx.stats.sessions.fetch_add(1, Ordering::Relaxed);
            Ok((s, StreamAcks::new()))
        }
    }
}

/// Sends on one stream until it dies or traffic stops: one message and an ack request per
/// tick, while fewer than `window` messages wait for their ack.
async fn sender_stream(
    ctx: &Ctx,
    pair: u64,
    to: &str,
    s: &mut Session,
    acks: &mut StreamAcks,
    phase: &mut watch::Receiver<Phase>,
) -> End {
    let mut tick = tokio::time::interval(ctx.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut out = String::with_capacity(256);
    loop {
        if *phase.borrow() != Phase::Traffic {
            return End::Stop;
        }
        tokio::select! {
            r = phase.changed() => {
                if r.is_err() {
                    return End::Stop;
                }
            }
            r = s.next() => match r {
                Ok(Inbound::Element(e)) => on_sender_element(ctx, pair, acks, &e),
                Ok(Inbound::Close) | Err(_) => return End::Lost,
            },
            _ = tick.tick() => {
                if acks.unacked() >= ctx.window {
                    continue;
                }
                let n = ctx.book(pair).next(ctx.cycle.load(Ordering::Relaxed));
                out.clear();
                let _ = write!(
                    out,
                    "<message to='{to}' type='chat' id='{}'><body>{}</body></message><r xmlns='urn:xmpp:sm:3'/>",
                    book::message_id(pair, n),
                    book::body(pair, n, &ctx.tag)
                );
                // Counted before the write: a message that may have reached the server takes
                // its place in the stream's count whether or not the write completed.
                acks.sent_message(n);
                ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
                if s.send(out.as_bytes()).await.is_err() {
                    return End::Lost;
                }
            }
        }
    }
}

async fn recipient(ctx: Arc<Ctx>, pair: u64, user: u64, mut phase: watch::Receiver<Phase>) {
    let mut prev: Option<Prev> = None;
    let mut backoff = RECONNECT_MIN;
    while *phase.borrow() != Phase::Done {
        let r = tokio::time::timeout(ctx.t.step_timeout, async {
            match reconnect(&ctx, user, &mut prev).await? {
                Ok((s, _h)) => Ok(s),
                Err((authed, _h)) => {
                    // A new session: initial presence also brings stored offline messages.
                    let opts = LoginOpts {
                        sm: true,
                        presence: true,
                    };
                    let s = authed.bind(&ctx.t, user, opts).await?;
                    ctx.stats.sessions.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, BenchError>(s)
                }
            }
        })
        .await;
        let mut s = match r {
            Ok(Ok(s)) => s,
            _ => {
                ctx.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                ctx.progress.failed.fetch_add(1, Ordering::Relaxed);
                pause(&mut phase, backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_MIN;
        ctx.progress.ok.fetch_add(1, Ordering::Relaxed);
        ctx.stats.recipients_up.fetch_add(1, Ordering::Relaxed);
        let end = recipient_stream(&ctx, pair, &mut s, &mut phase).await;
        ctx.stats.recipients_up.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Lost => prev = Prev::of(&s),
            End::Stop => {
                // Everything received is acknowledged, so nothing is left queued for us.
                let _ = s.ack_all().await;
                s.close().await;
                return;
            }
        }
    }
}

/// Receives on one stream until it dies or the run is done; `<r/>` is answered by
/// [`Session::next`] with what was handed to us so far, i.e. recorded.
async fn recipient_stream(
    ctx: &Ctx,
    pair: u64,
    s: &mut Session,
    phase: &mut watch::Receiver<Phase>,
) -> End {
    loop {
        if *phase.borrow() == Phase::Done {
            return End::Stop;
        }
        tokio::select! {
            r = phase.changed() => {
                if r.is_err() {
                    return End::Stop;
                }
            }
            r = s.next() => match r {
                Ok(Inbound::Element(e)) => {
                    on_recipient_element(ctx, pair, &e, false);
                }
                Ok(Inbound::Close) | Err(_) => return End::Lost,
            },
        }
    }
}

/// Records a message reaching a recipient: live, from offline storage, or (`<result/>`) from
/// its archive. Returns true if it was one of this pair's messages.
fn on_recipient_element(ctx: &Ctx, pair: u64, e: &[u8], final_login: bool) -> bool {
    if xml::name(e) != b"message" || xml::attr(e, "type") == Some(b"error") {
        return false;
    }
    let archived = xml::find_child(e, "result").is_some();
    let Some(text) = xml::find_child(e, "body").and_then(xml::text) else {
        return false;
    };
    let text = String::from_utf8_lossy(text);
    match book::parse_body(&text, &ctx.tag) {
        Some((p, n)) if p == pair => {
            let mut b = ctx.book(pair);
            if archived {
                b.archived(n);
            } else {
                b.received(n, final_login);
                drop(b);
                ctx.progress.received.fetch_add(1, Ordering::Relaxed);
                ctx.stats.last_rx_ns.store(now_nanos(), Ordering::Relaxed);
            }
            true
        }
        _ => {
            // Another run's message (a reused data dir) is expected in an archive; anything
            // else is not.
            if !archived {
                ctx.stats.foreign.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
    }
}

/// The last look for one recipient: a fresh login with initial presence (stored offline
/// messages come now), then the whole archive page by page. Returns the pages read.
async fn final_check(ctx: &Ctx, pair: u64, user: u64, max_pages: u64) -> Result<u64> {
    let opts = LoginOpts {
        sm: false,
        presence: true,
    };
    let mut s = conn::login(&ctx.t, user, opts)
        .await
        .context("last login")?;
    let until = Instant::now() + OFFLINE_MAX;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(OFFLINE_QUIET.min(left), s.next()).await {
            Err(_) => break,
            Ok(Ok(Inbound::Element(e))) => {
                on_recipient_element(ctx, pair, &e, true);
            }
            Ok(Ok(Inbound::Close)) => bail!("the server closed the last login's stream"),
            Ok(Err(e)) => return Err(e).context("last login"),
        }
    }
    let mut after: Option<String> = None;
    let mut pages = 0u64;
    loop {
        if pages >= max_pages {
            bail!("archive still incomplete after {pages} pages");
        }
        pages += 1;
        let qid = format!("chaos-q{pages}");
        let cursor = after
            .as_ref()
            .map(|a| format!("<after>{a}</after>"))
            .unwrap_or_default();
        let q = format!(
            "<iq type='set' id='{qid}'><query xmlns='urn:xmpp:mam:2' queryid='{qid}'>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>urn:xmpp:mam:2</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>{MAM_PAGE}</max>{cursor}</set>\
             </query></iq>"
        );
        s.send(q.as_bytes()).await?;
        let iq = loop {
            let e = s.next_element(ctx.t.step_timeout, "archive query").await?;
            if xml::name(&e) == b"iq" && xml::attr(&e, "id") == Some(qid.as_bytes()) {
                if xml::attr(&e, "type") != Some(b"result") {
                    bail!("archive query refused: {}", snippet(&e));
                }
                break e;
            }
            on_recipient_element(ctx, pair, &e, true);
        };
        let fin = xml::find_child(&iq, "fin")
            .with_context(|| format!("archive result without <fin/>: {}", snippet(&iq)))?;
        if matches!(xml::attr(fin, "complete"), Some(b"true") | Some(b"1")) {
            break;
        }
        let last = xml::find_child(fin, "last")
            .and_then(xml::text)
            .map(|l| String::from_utf8_lossy(l).into_owned());
        match last {
            Some(l) if after.as_deref() != Some(l.as_str()) => after = Some(l),
            _ => bail!("archive paging stalled: incomplete page without a new <last/>"),
        }
    }
    s.close().await;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[ms(5)]), Some(ms(5)));
        assert_eq!(median(&[ms(1), ms(2), ms(9)]), Some(ms(2)));
        assert_eq!(median(&[ms(1), ms(3), ms(5), ms(9)]), Some(ms(4)));
    }
}
