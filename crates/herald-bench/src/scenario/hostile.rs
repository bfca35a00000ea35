//! `hostile`: normal users chat at a fixed rate and log in steadily, first on a quiet server,
//! then while attackers flood it from a second loopback address: idle connections, pre-auth
//! garbage, oversized stanzas, password guessing, MAM storms, presence storms, subscription
//! floods and a recipient that never reads. Reports the normal users' message latency and
//! login success in both phases (and their ratio), the server's peak RSS, and what each flood
//! achieved, so a bound that fails shows up as a number, not as a crash.
//! It must not let the floods share a source address with the normal users (per-address
//! limits are part of what is measured), and it stops by itself at the end of each phase.

use super::messages::{phase, run_pair, PairCfg};
use super::Common;
use crate::conn::{self, LoginOpts, Session, Target};
use crate::report::{self, new_histogram, Progress, Report};
use crate::xml;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// One kind of flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Flood {
    /// Many TCP connections that send a stream header and then nothing, renewed when closed.
    Idle,
    /// Unauthenticated streams sending an oversized element or deep nesting before SASL.
    Garbage,
    /// An authenticated user sending stanzas above the stanza size limit, logging in again.
    Oversized,
    /// Wrong passwords for an existing attacker account and for unknown names.
    Guessing,
    /// Back-to-back MAM queries over an archive the attacker filled first.
    Mam,
    /// Presence updates flat out to a second resource of the same account that never reads.
    Presence,
    /// Subscription requests to ever new addresses.
    Subscribe,
    /// Large messages flat out to a logged-in recipient that never reads.
    Queue,
}

const ALL: [Flood; 8] = [
    Flood::Idle,
    Flood::Garbage,
    Flood::Oversized,
    Flood::Guessing,
    Flood::Mam,
    Flood::Presence,
    Flood::Subscribe,
    Flood::Queue,
];

/// Options of `hostile`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct HostileArgs {
    /// Shared target options.
    #[command(flatten)]
    pub common: Common,
    /// Normal sender/receiver pairs (users offset..offset+2P).
    #[arg(short = 'p', long, default_value_t = 20)]
    pub pairs: u64,
    /// Normal messages per second, all pairs together.
    #[arg(short = 'r', long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of each phase (quiet, then hostile).
    #[arg(short = 'd', long, default_value_t = 20)]
    pub duration: u64,
    /// Normal logins per second during each phase (users offset+2P..offset+2P+10, cycled).
    #[arg(long, default_value_t = 5.0)]
    pub login_rate: f64,
    /// Source address of every flood (a second loopback address: per-address limits apply).
    #[arg(long, default_value = "127.0.0.2")]
    pub attacker_ip: IpAddr,
    /// Floods to run in the hostile phase (default: all).
    #[arg(long, value_enum, num_args = 1.., value_delimiter = ',')]
    pub floods: Vec<Flood>,
    /// Connections the `idle` flood keeps open (or tries to).
    #[arg(long, default_value_t = 300)]
    pub idle_conns: u64,
    /// Parallel tasks of each of the `garbage` and `guessing` floods.
    #[arg(long, default_value_t = 10)]
    pub flood_tasks: u64,
    /// Skip the quiet phase (the ratio is then not reported).
    #[arg(long)]
    pub hostile_only: bool,
    /// Run the floods in a child process of this bench at this niceness (`nice -n N`), as
    /// an attacker on another machine would: the floods then take what CPU the server and
    /// the normal clients leave, instead of sharing this process's runtime (and its
    /// scheduling delays) with the normal clients. Without it the floods run in this process.
    #[arg(long)]
    pub attacker_nice: Option<i32>,
    /// Internal (the child `--attacker-nice` starts): run only the floods, for `--duration`
    /// seconds from now, and print what they did as one `FLOODS {json}` line on stdout.
    #[arg(long, hide = true)]
    pub floods_only: bool,
}

/// Users: pairs, then the login prober's ten, then the attackers' ten.
const PROBER_USERS: u64 = 10;
/// Attacker accounts, in order: oversized sender, its target, guessing victim, MAM user, MAM
/// correspondent, presence user, subscription sender, queue sender, queue recipient, spare.
const ATTACKERS: u64 = 10;

#[derive(Default)]
struct Counts {
    /// Attempts the flood made (connections, stanzas, logins, queries).
    ops: AtomicU64,
    /// Attempts the server refused, closed or answered with an error.
    refused: AtomicU64,
    /// Attempts that got what an attacker wanted and must not (a guessed login).
    breached: AtomicU64,
}

/// What one phase measured.
struct PhaseResult {
    hist: hdrhistogram::Histogram<u64>,
    sent: u64,
    received: u64,
    logins_ok: u64,
    logins_failed: u64,
    login_hist: hdrhistogram::Histogram<u64>,
    rss_peak_kib: Option<u64>,
    floods: Vec<(Flood, Arc<Counts>)>,
}

/// Runs the scenario.
pub async fn run(a: HostileArgs) -> Result<Report> {
    super::ensure_fd_budget(a.pairs * 2 + a.idle_conns + 4 * a.flood_tasks + 64)?;
    let floods = if a.floods.is_empty() {
        ALL.to_vec()
    } else {
        a.floods.clone()
    };
    if a.floods_only {
        return floods_only(&a, &floods).await;
    }
    let t = a.common.target()?;
    let mut r = Report::new("hostile", serde_json::to_value(&a)?);
    eprintln!(
        "[hostile] uses users {}..{} (pairs, login prober, attackers)",
        a.common.offset,
        a.common.offset + a.pairs * 2 + PROBER_USERS + ATTACKERS
    );
    let quiet = if a.hostile_only {
        None
    } else {
        eprintln!("[hostile] quiet phase, {} s", a.duration);
        Some(run_phase(&a, &t, &[]).await?)
    };
    eprintln!(
        "[hostile] hostile phase, {} s, floods {floods:?}",
        a.duration
    );
    let hostile = run_phase(&a, &t, &floods).await?;
    for (name, p) in [("quiet", quiet.as_ref()), ("hostile", Some(&hostile))] {
        let Some(p) = p else { continue };
        r.add_latency(&format!("{name}_latency"), &p.hist, false);
        r.add(&format!("{name}_sent"), p.sent as f64, "msgs");
        r.add(
            &format!("{name}_lost"),
            p.sent.saturating_sub(p.received) as f64,
            "msgs",
        );
        r.add(&format!("{name}_logins_ok"), p.logins_ok as f64, "logins");
        r.add(
            &format!("{name}_logins_failed"),
            p.logins_failed as f64,
            "logins",
        );
        r.add_latency(&format!("{name}_login"), &p.login_hist, false);
        if let Some(kib) = p.rss_peak_kib {
            r.add(&format!("{name}_rss_peak"), kib as f64 / 1024.0, "MiB");
        }
    }
    if let Some(q) = &quiet {
        let (qp, hp) = (
            q.hist.value_at_quantile(0.99),
            hostile.hist.value_at_quantile(0.99),
        );
        r.add("p99_ratio", hp as f64 / qp.max(1) as f64, "hostile/quiet");
    }
    for (f, c) in &hostile.floods {
        let n = format!("{f:?}").to_lowercase();
        r.add(
            &format!("flood_{n}_ops"),
            c.ops.load(Ordering::Relaxed) as f64,
            "ops",
        );
        r.add(
            &format!("flood_{n}_refused"),
            c.refused.load(Ordering::Relaxed) as f64,
            "ops",
        );
        let b = c.breached.load(Ordering::Relaxed);
        if b > 0 {
            r.failure = Some(format!("flood {n}: {b} attempts succeeded that must not"));
        }
    }
    if hostile.logins_failed > 0 {
        r.notes.push(format!(
            "{} normal logins failed under the floods",
            hostile.logins_failed
        ));
    }
    Ok(r)
}

async fn run_phase(a: &HostileArgs, t: &Arc<Target>, floods: &[Flood]) -> Result<PhaseResult> {
    let progress = Arc::new(Progress::default());
    let off = a.common.offset;
    let ns: Vec<u64> = (0..a.pairs * 2).map(|i| off + i).collect();
    let opts = LoginOpts {
        sm: false,
        presence: true,
    };
    let sessions = super::login_all(t, &ns, 20, opts, &progress).await?;
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(a.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let (mut flood_set, mut counts, child) = match a.attacker_nice {
        Some(nice) if !floods.is_empty() => {
            let child = spawn_attacker(nice)?;
            (tokio::task::JoinSet::new(), Vec::new(), Some(child))
        }
        _ => {
            let (set, counts) = start_floods(a, floods, end, &stop)?;
            (set, counts, None)
        }
    };
    let server_pid = a.common.server_pid.first().copied();
    let sampler = tokio::spawn(async move {
        let mut peak = None::<u64>;
        let Some(pid) = server_pid else { return peak };
        while Instant::now() < end {
            if let Ok(kib) = report::rss_kib(pid) {
                peak = Some(peak.map_or(kib, |p| p.max(kib)));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        peak
    });
    let prober = tokio::spawn(probe_logins(
        t.clone(),
        off + a.pairs * 2,
        a.login_rate,
        start,
        end,
    ));
    let per_pair = Some(a.rate / a.pairs.max(1) as f64);
    let mut set = tokio::task::JoinSet::new();
    let mut it = sessions.into_iter();
    let mut pair = 0u64;
    while let (Some(tx), Some(rx)) = (it.next(), it.next()) {
        let cfg = PairCfg {
            pair,
            per_pair,
            window: 64,
            start: start + phase(pair, Some(a.rate)),
            end,
            drain: Duration::from_secs(5),
        };
        set.spawn(run_pair(tx, rx, cfg, progress.clone()));
        pair += 1;
    }
    let mut hist = new_histogram();
    let (mut sent, mut received) = (0, 0);
    while let Some(r) = set.join_next().await {
        let p = r.context("pair task panicked")??;
        sent += p.sent;
        received += p.received;
        hist.add(&p.hist).ok();
    }
    stop.store(true, Ordering::Relaxed);
    while flood_set.join_next().await.is_some() {}
    if let Some(child) = child {
        counts = attacker_counts(child, floods).await?;
    }
    let (logins_ok, logins_failed, login_hist) = prober.await.context("login prober")?;
    let rss_peak_kib = sampler.await.unwrap_or(None);
    Ok(PhaseResult {
        hist,
        sent,
        received,
        logins_ok,
        logins_failed,
        login_hist,
        rss_peak_kib,
        floods: counts,
    })
}

/// Starts every flood of `floods` in this process, each until `end` (or `stop`). Floods
/// that need an account log in first, so the phase's clock measures the flood.
#[allow(clippy::type_complexity)]
fn start_floods(
    a: &HostileArgs,
    floods: &[Flood],
    end: Instant,
    stop: &Arc<AtomicBool>,
) -> Result<(tokio::task::JoinSet<()>, Vec<(Flood, Arc<Counts>)>)> {
    let at = Arc::new(attacker_target(
        &a.common,
        a.attacker_ip,
        &a.common.password,
    )?);
    let base = a.common.offset + a.pairs * 2 + PROBER_USERS;
    let mut set = tokio::task::JoinSet::new();
    let mut counts = Vec::new();
    for &f in floods {
        let c = Arc::new(Counts::default());
        counts.push((f, c.clone()));
        let ctx = FloodCtx {
            t: at.clone(),
            base,
            counts: c,
            a: a.clone(),
            stop: stop.clone(),
        };
        set.spawn(async move {
            let _ = tokio::time::timeout_at(end, run_flood(f, ctx)).await;
        });
    }
    Ok((set, counts))
}

/// The child of `--attacker-nice`: the floods alone, for `--duration` seconds from now (plus
/// the half second the parent waits before its clients start), then one `FLOODS` line.
async fn floods_only(a: &HostileArgs, floods: &[Flood]) -> Result<Report> {
    let end = Instant::now() + Duration::from_millis(500) + Duration::from_secs(a.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let (mut set, counts) = start_floods(a, floods, end, &stop)?;
    while set.join_next().await.is_some() {}
    let mut out = serde_json::Map::new();
    for (f, c) in &counts {
        out.insert(
            format!("{f:?}"),
            serde_json::json!([
                c.ops.load(Ordering::Relaxed),
                c.refused.load(Ordering::Relaxed),
                c.breached.load(Ordering::Relaxed)
            ]),
        );
    }
    println!("FLOODS {}", serde_json::Value::Object(out));
    Ok(Report::new("hostile-floods", serde_json::Value::Null))
}

/// Starts this bench again as `nice -n NICE herald-bench <same arguments> --floods-only`,
/// minus the options only the parent uses (`--attacker-nice`, `--json`).
fn spawn_attacker(nice: i32) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("this bench's path")?;
    let mut args = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--attacker-nice" || arg == "--json" {
            it.next();
        } else if !(arg.starts_with("--attacker-nice=") || arg.starts_with("--json=")) {
            args.push(arg);
        }
    }
    tokio::process::Command::new("nice")
        .arg("-n")
        .arg(nice.to_string())
        .arg(exe)
        .args(args)
        .arg("--floods-only")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the attacker process (nice)")
}

/// Waits for the attacker child and reads its `FLOODS` line back into counts.
async fn attacker_counts(
    child: tokio::process::Child,
    floods: &[Flood],
) -> Result<Vec<(Flood, Arc<Counts>)>> {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("the attacker process did not end")?
        .context("waiting for the attacker process")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("FLOODS "))
        .context("the attacker process printed no FLOODS line")?;
    let v: serde_json::Value = serde_json::from_str(line).context("the FLOODS line")?;
    Ok(floods
        .iter()
        .map(|&f| {
            let n = |i: usize| v[format!("{f:?}")][i].as_u64().unwrap_or(0);
            let c = Counts {
                ops: AtomicU64::new(n(0)),
                refused: AtomicU64::new(n(1)),
                breached: AtomicU64::new(n(2)),
            };
            (f, Arc::new(c))
        })
        .collect())
}

/// A target like the normal one but connecting from `ip`, with its own password.
fn attacker_target(c: &Common, ip: IpAddr, password: &str) -> Result<Target> {
    let mut c = c.clone();
    c.password = password.to_string();
    let t = c.target()?;
    let mut t = Arc::try_unwrap(t).map_err(|_| anyhow::anyhow!("target shared"))?;
    t.source = Some(ip);
    Ok(t)
}

/// Logs the prober's users in at `rate` per second from `start` to `end` (presence, then a
/// clean close), at most 16 at once; counts successes and failures and times each login.
async fn probe_logins(
    t: Arc<Target>,
    base: u64,
    rate: f64,
    start: Instant,
    end: Instant,
) -> (u64, u64, hdrhistogram::Histogram<u64>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut next = start;
    let mut k = 0u64;
    while next < end {
        tokio::time::sleep_until(next).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let t = t.clone();
        let n = base + k % PROBER_USERS;
        set.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let opts = LoginOpts {
                sm: false,
                presence: true,
            };
            let r = conn::login(&t, n, opts).await;
            let took = t0.elapsed();
            match r {
                Ok(s) => {
                    s.close().await;
                    Ok(took)
                }
                Err(e) => Err(e),
            }
        });
        k += 1;
        next += interval;
    }
    let (mut ok, mut failed, mut h) = (0, 0, new_histogram());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(took)) => {
                ok += 1;
                report::record_ns(&mut h, took.as_nanos() as u64);
            }
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("[hostile] a normal login failed: {e}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (ok, failed, h)
}

struct FloodCtx {
    t: Arc<Target>,
    base: u64,
    counts: Arc<Counts>,
    a: HostileArgs,
    stop: Arc<AtomicBool>,
}

impl FloodCtx {
    fn op(&self) {
        self.counts.ops.fetch_add(1, Ordering::Relaxed);
    }
    fn refused(&self) {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
    }
    fn jid(&self, i: u64) -> String {
        self.t.bare_jid(self.base + i)
    }
    /// Reads what has already arrived (reflections, bounces) without waiting for more,
    /// counting errors as refusals.
    async fn drain_errors(&self, s: &mut Session) {
        while let Ok(Ok(conn::Inbound::Element(e))) =
            tokio::time::timeout(Duration::from_millis(1), s.next()).await
        {
            if xml::attr(&e, "type") == Some(b"error") {
                self.refused();
            }
        }
    }

    async fn login(&self, i: u64) -> Option<Session> {
        let opts = LoginOpts {
            sm: false,
            presence: true,
        };
        match conn::login(&self.t, self.base + i, opts).await {
            Ok(s) => Some(s),
            Err(_) => {
                self.refused();
                // A refused login (a limit, a lockout) is retried after a pause, not in a
                // tight loop that would measure the bench rather than the server.
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        }
    }
}

async fn run_flood(f: Flood, c: FloodCtx) {
    let c = Arc::new(c);
    match f {
        Flood::Idle => {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..c.a.idle_conns {
                set.spawn(idle_conn(c.clone()));
            }
            while set.join_next().await.is_some() {}
        }
        Flood::Garbage => {
            let mut set = tokio::task::JoinSet::new();
            for k in 0..c.a.flood_tasks {
                set.spawn(garbage(c.clone(), k));
            }
            while set.join_next().await.is_some() {}
        }
        Flood::Guessing => {
            let mut set = tokio::task::JoinSet::new();
            for k in 0..c.a.flood_tasks {
                set.spawn(guessing(c.clone(), k));
            }
            while set.join_next().await.is_some() {}
        }
        Flood::Oversized => oversized(c).await,
        Flood::Mam => mam(c).await,
        Flood::Presence => presence(c).await,
        Flood::Subscribe => subscribe(c).await,
        Flood::Queue => queue(c).await,
    }
}

/// Reads until the server closes the connection (or the phase ends).
async fn read_to_close(tcp: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn idle_conn(c: Arc<FloodCtx>) {
    while !c.stop.load(Ordering::Relaxed) {
        c.op();
        let Ok(mut tcp) = c.t.connect().await else {
            c.refused();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let _ = tcp.write_all(conn::header(&c.t.domain).as_bytes()).await;
        read_to_close(&mut tcp).await;
        c.refused();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn garbage(c: Arc<FloodCtx>, k: u64) {
    let mut big = String::from("<message><body>");
    big.push_str(&"x".repeat(64 * 1024));
    let deep = "<a>".repeat(64);
    let mut i = 0u64;
    while !c.stop.load(Ordering::Relaxed) {
        c.op();
        let Ok(mut tcp) = c.t.connect().await else {
            c.refused();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let payload = if (i + k).is_multiple_of(2) {
            &big
        } else {
            &deep
        };
        let _ = tcp.write_all(conn::header(&c.t.domain).as_bytes()).await;
        let _ = tcp.write_all(payload.as_bytes()).await;
        read_to_close(&mut tcp).await;
        c.refused();
        i += 1;
    }
}

async fn guessing(c: Arc<FloodCtx>, k: u64) {
    // Guesses go to attacker account 2 and to names that do not exist, never to the normal
    // users: a per-account lockout is meant to lock the guessed account.
    let Ok(wrong) = attacker_target(
        &c.a.common,
        c.t.source.unwrap_or(c.a.attacker_ip),
        "not-the-password",
    ) else {
        return;
    };
    let mut i = 0u64;
    while !c.stop.load(Ordering::Relaxed) {
        c.op();
        let n = if (i + k).is_multiple_of(2) {
            c.base + 2
        } else {
            1_000_000_000 + k * 1_000_000 + i
        };
        match conn::authenticate(&wrong, n).await {
            Ok(_) => {
                c.counts.breached.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => c.refused(),
        }
        i += 1;
    }
}

async fn oversized(c: Arc<FloodCtx>) {
    let to = c.jid(1);
    let mut msg = format!("<message to='{to}' type='chat'><body>");
    msg.push_str(&"y".repeat(300 * 1024));
    msg.push_str("</body></message>");
    while !c.stop.load(Ordering::Relaxed) {
        let Some(mut s) = c.login(0).await else {
            continue;
        };
        c.op();
        if s.send(msg.as_bytes()).await.is_err() {
            c.refused();
            continue;
        }
        loop {
            match s.next().await {
                Ok(conn::Inbound::Element(_)) => {}
                _ => {
                    c.refused();
                    break;
                }
            }
        }
    }
}

async fn mam(c: Arc<FloodCtx>) {
    let Some(mut s) = c.login(3).await else {
        return;
    };
    // Fill the archive first (both parties' archives get these).
    let to = c.jid(4);
    let mut out = String::new();
    for i in 0..500 {
        let _ = write!(
            out,
            "<message to='{to}' type='chat'><body>archived {i}</body></message>"
        );
    }
    if s.send(out.as_bytes()).await.is_err() {
        return;
    }
    let mut id = 0u64;
    let mut inflight = 0u32;
    const WINDOW: u32 = 16;
    while !c.stop.load(Ordering::Relaxed) {
        out.clear();
        while inflight < WINDOW {
            id += 1;
            inflight += 1;
            c.op();
            let _ = write!(
                out,
                "<iq type='set' id='q{id}'><query xmlns='urn:xmpp:mam:2' queryid='q{id}'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query></iq>"
            );
        }
        if s.send(out.as_bytes()).await.is_err() {
            return;
        }
        loop {
            let Ok(conn::Inbound::Element(e)) = s.next().await else {
                return;
            };
            if xml::name(&e) == b"iq" {
                inflight = inflight.saturating_sub(1);
                if xml::attr(&e, "type") == Some(b"error") {
                    c.refused();
                }
                break;
            }
        }
    }
}

async fn presence(c: Arc<FloodCtx>) {
    // A second resource of the same account that never reads: every broadcast is for it.
    let Some(_sink) = c.login(5).await else {
        return;
    };
    let Some(mut s) = c.login(5).await else {
        return;
    };
    let mut out = String::new();
    let mut i = 0u64;
    while !c.stop.load(Ordering::Relaxed) {
        out.clear();
        for _ in 0..50 {
            i += 1;
            c.op();
            let _ = write!(out, "<presence><status>storm {i}</status></presence>");
        }
        if s.send(out.as_bytes()).await.is_err() {
            c.refused();
            return;
        }
        // Drain what comes back (own reflections, errors) without waiting for it.
        c.drain_errors(&mut s).await;
    }
}

async fn subscribe(c: Arc<FloodCtx>) {
    let Some(mut s) = c.login(6).await else {
        return;
    };
    let mut out = String::new();
    let mut i = 0u64;
    let domain = c.t.domain.clone();
    while !c.stop.load(Ordering::Relaxed) {
        out.clear();
        for _ in 0..50 {
            i += 1;
            c.op();
            let _ = write!(
                out,
                "<presence type='subscribe' to='nobody{i}@{domain}'/>\
                 <presence type='subscribe' to='{}'/>",
                c.jid(9)
            );
        }
        if s.send(out.as_bytes()).await.is_err() {
            c.refused();
            return;
        }
        c.drain_errors(&mut s).await;
    }
}

async fn queue(c: Arc<FloodCtx>) {
    let Some(_deaf) = c.login(8).await else {
        return;
    };
    let Some(mut s) = c.login(7).await else {
        return;
    };
    let to = c.jid(8);
    let mut msg = format!("<message to='{to}' type='chat'><body>");
    msg.push_str(&"z".repeat(64 * 1024));
    msg.push_str("</body></message>");
    while !c.stop.load(Ordering::Relaxed) {
        c.op();
        if s.send(msg.as_bytes()).await.is_err() {
            c.refused();
            return;
        }
        c.drain_errors(&mut s).await;
    }
}
