//! `muc`: N occupants in one XEP-0045 room, the first M of them sending groupchat messages
//! flat out with a bounded window each (or at a fixed total rate); every occupant receives
//! every message (the sender its echo). Reports deliveries per second (messages times
//! recipients) and delivery latency, with the room's archive on or off (`--archive`).
//! Bodies carry the sender, a sequence number and the send time. Each occupant task owns its
//! session; they share only counters.

use super::Common;
use crate::conn::{Inbound, LoginOpts, Session};
use crate::report::{self, new_histogram, now_nanos, Progress, Report};
use crate::xml;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const MUC: &str = "http://jabber.org/protocol/muc";

/// Options of `muc`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct MucArgs {
    /// Shared target options.
    #[command(flatten)]
    pub common: Common,
    /// Occupants (users offset..offset+N), all in one room.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub occupants: u64,
    /// Senders among them (the first M).
    #[arg(short = 'm', long, default_value_t = 5)]
    pub senders: u64,
    /// Total messages per second over all senders; flat out when absent.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Seconds of sending.
    #[arg(short = 'd', long, default_value_t = 10)]
    pub duration: u64,
    /// Flat out: a sender's messages in flight (not yet echoed back to it) before it waits.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Seconds to wait for stragglers after sending stops.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Whether the room keeps an archive (`on`/`off`), set by its owner's configuration form.
    #[arg(long, default_value = "on")]
    pub archive: String,
    /// The form field that switches archiving (Herald and Prosody:
    /// muc#roomconfig_enablearchiving; ejabberd: mam).
    #[arg(long, default_value = "muc#roomconfig_enablearchiving")]
    pub archive_field: String,
    /// The room's local part (a fresh one per run keeps runs apart).
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// The MUC service (default: conference.DOMAIN).
    #[arg(long)]
    pub muc_domain: Option<String>,
    /// Logins in flight at once while building up.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
}

struct OccResult {
    sent: u64,
    received: u64,
    errors: u64,
    last_rx_ns: u64,
    hist: Histogram<u64>,
}

/// Reads until an element `pred` accepts, within the step timeout.
async fn until(
    s: &mut Session,
    what: &'static str,
    pred: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    loop {
        let e = s.next_element(Duration::from_secs(30), what).await?;
        if xml::name(&e) == b"presence" && xml::attr(&e, "type") == Some(b"error") {
            bail!("{what}: {}", String::from_utf8_lossy(&e));
        }
        if pred(&e) {
            return Ok(e);
        }
    }
}

fn is_self_presence(e: &[u8]) -> bool {
    xml::name(e) == b"presence"
        && std::str::from_utf8(e)
            .is_ok_and(|s| s.contains("code='110'") || s.contains("code=\"110\""))
}

/// Runs the scenario.
pub async fn run(a: MucArgs) -> Result<Report> {
    if a.senders == 0 || a.senders > a.occupants {
        bail!("--senders must be between 1 and --occupants");
    }
    super::ensure_fd_budget(a.occupants)?;
    let t = a.common.target()?;
    let progress = Arc::new(Progress::default());
    let ns: Vec<u64> = (0..a.occupants).map(|i| a.common.offset + i).collect();
    let opts = LoginOpts {
        sm: false,
        presence: true,
    };
    let mut sessions = super::login_all(&t, &ns, a.concurrency, opts, &progress).await?;
    let domain = a
        .muc_domain
        .clone()
        .unwrap_or(format!("conference.{}", a.common.domain));
    let room = format!("{}@{domain}", a.room);
    let archive = matches!(a.archive.as_str(), "on" | "1" | "true");

    // The owner makes the room (locked until configured) and configures it.
    let owner = &mut sessions[0];
    owner
        .send(format!("<presence to='{room}/o0'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>").as_bytes())
        .await?;
    until(owner, "the owner's join", is_self_presence).await?;
    let form = format!(
        "<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>\
         <field var='muc#roomconfig_maxusers'><value>{}</value></field>\
         <field var='{}'><value>{}</value></field></x></query></iq>",
        a.occupants.max(1),
        a.archive_field,
        if archive { 1 } else { 0 }
    );
    owner.send(form.as_bytes()).await?;
    let r = until(owner, "the room's configuration", |e| {
        xml::attr(e, "id") == Some(b"cfg")
    })
    .await?;
    if xml::attr(&r, "type") != Some(b"result") {
        bail!("configuring the room: {}", String::from_utf8_lossy(&r));
    }
    // Everyone else joins, a few at a time.
    let mut joined = vec![sessions.remove(0)];
    for (i, mut s) in sessions.into_iter().enumerate() {
        s.send(format!("<presence to='{room}/o{}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>", i + 1).as_bytes())
            .await?;
        until(&mut s, "a join", is_self_presence)
            .await
            .with_context(|| format!("occupant {}", i + 1))?;
        joined.push(s);
    }
    // Let the joins' presence broadcasts settle so the first messages do not race them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let server0 = a.common.server_cpu();
    let ticker = report::spawn_progress("muc", progress.clone());
    let start = Instant::now();
    let start_ns = now_nanos();
    let end = start + Duration::from_secs(a.duration);
    let total_sent = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let per_sender = a.rate.map(|r| r / a.senders as f64);
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in joined.into_iter().enumerate() {
        let c = OccCfg {
            index: i as u64,
            sender: (i as u64) < a.senders,
            senders: a.senders,
            room: room.clone(),
            window: a.window.max(1),
            per_sender,
            start: start + super::messages::phase(i as u64, a.rate),
            end,
            drain: Duration::from_secs(a.drain),
        };
        set.spawn(occupant(
            s,
            c,
            total_sent.clone(),
            stopped.clone(),
            done.clone(),
            progress.clone(),
        ));
    }
    // Senders finish first (they stop at `end`); then receivers know the total to expect.
    let mut hist = new_histogram();
    let (mut sent, mut received, mut errors, mut last_rx) = (0u64, 0u64, 0u64, start_ns);
    tokio::time::sleep_until(end).await;
    done.store(true, Ordering::Release);
    while let Some(r) = set.join_next().await {
        let p = r.context("occupant task panicked")??;
        sent += p.sent;
        received += p.received;
        errors += p.errors;
        last_rx = last_rx.max(p.last_rx_ns);
        hist.add(&p.hist).ok();
    }
    let wall = start.elapsed();
    ticker.abort();
    let active =
        Duration::from_nanos(last_rx.saturating_sub(start_ns)).max(Duration::from_millis(1));
    let expected = sent * a.occupants;
    let mut r = Report::new("muc", serde_json::to_value(&a)?);
    r.add(
        "deliveries_per_s",
        received as f64 / active.as_secs_f64(),
        "deliveries/s",
    );
    r.add(
        "messages_per_s",
        sent as f64 / active.as_secs_f64(),
        "msgs/s",
    );
    r.add("sent", sent as f64, "msgs");
    r.add("delivered", received as f64, "deliveries");
    r.add(
        "missing",
        expected.saturating_sub(received) as f64,
        "deliveries",
    );
    r.add("errors", errors as f64, "msgs");
    r.add_latency("latency", &hist, true);
    if let Some(cpu) = r.add_cpu(
        cpu0,
        server0.as_ref().map(|(p, c)| (p.as_slice(), *c)),
        wall,
    ) {
        r.add(
            "deliveries_per_server_cpu_s",
            received as f64 / cpu.max(0.01),
            "deliveries/CPU-s",
        );
    }
    Ok(r)
}

struct OccCfg {
    index: u64,
    sender: bool,
    senders: u64,
    room: String,
    window: u64,
    per_sender: Option<f64>,
    start: Instant,
    end: Instant,
    drain: Duration,
}

async fn occupant(
    mut s: Session,
    c: OccCfg,
    total_sent: Arc<AtomicU64>,
    stopped: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> Result<OccResult> {
    let mut res = OccResult {
        sent: 0,
        received: 0,
        errors: 0,
        last_rx_ns: 0,
        hist: new_histogram(),
    };
    let mut echoed = 0u64;
    let mut out = String::with_capacity(4096);
    let mut next_send = c.start;
    let mut drain_until: Option<Instant> = None;
    let mut counted = false;
    loop {
        let now = Instant::now();
        let sending = c.sender && now < c.end;
        if !sending && c.sender && !counted {
            // A sender's total counts once it has stopped.
            total_sent.fetch_add(res.sent, Ordering::AcqRel);
            stopped.fetch_add(1, Ordering::AcqRel);
            counted = true;
        }
        if !sending && done.load(Ordering::Acquire) {
            let until = *drain_until.get_or_insert(now + c.drain);
            // The total is known once every sender has stopped.
            let all_in = stopped.load(Ordering::Acquire) == c.senders
                && res.received >= total_sent.load(Ordering::Acquire);
            if now >= until || all_in {
                break;
            }
        }
        let inflight = res.sent.saturating_sub(echoed);
        let may_send = sending && (c.per_sender.is_some() || inflight <= c.window / 2);
        let wake = match (sending, c.per_sender) {
            (false, _) => Instant::now() + Duration::from_millis(50),
            (true, Some(_)) => c.end.min(next_send),
            (true, None) => c.end,
        };
        tokio::select! {
            biased;
            r = s.next() => match r? {
                Inbound::Element(e) => {
                    if xml::name(&e) != b"message" {
                        continue;
                    }
                    if xml::attr(&e, "type") == Some(b"error") {
                        res.errors += 1;
                        continue;
                    }
                    if let Some((from, _seq, t)) = super::messages::parse_body(&e) {
                        let now_ns = now_nanos();
                        report::record_ns(&mut res.hist, now_ns.saturating_sub(t));
                        res.received += 1;
                        res.last_rx_ns = now_ns;
                        progress.received.fetch_add(1, Ordering::Relaxed);
                        if from == c.index {
                            echoed += 1;
                        }
                    }
                }
                Inbound::Close => bail!("server closed occupant {}'s stream", c.index),
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = std::future::ready(()), if may_send && c.per_sender.is_none() => {}
        }
        if !may_send {
            continue;
        }
        let now = Instant::now();
        let n = match c.per_sender {
            Some(rate) => {
                let due = (now.saturating_duration_since(c.start).as_secs_f64() * rate) as u64;
                let n = due.saturating_sub(res.sent).min(256);
                next_send = c.start + Duration::from_secs_f64((res.sent + n + 1) as f64 / rate);
                n
            }
            None => c.window - inflight,
        };
        if n == 0 {
            continue;
        }
        out.clear();
        for _ in 0..n {
            let seq = res.sent;
            res.sent += 1;
            let _ = write!(
                out,
                "<message to='{}' type='groupchat' id='g{seq}'><body>{} {seq} {}</body></message>",
                c.room,
                c.index,
                now_nanos()
            );
        }
        s.send(out.as_bytes()).await?;
        progress.sent.fetch_add(n, Ordering::Relaxed);
    }
    s.close().await;
    Ok(res)
}
