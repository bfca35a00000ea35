//! `messages`: P sender→receiver pairs exchange chat messages, at a fixed total rate or flat
//! out with a bounded window of messages in flight per pair (so "saturation" measures the
//! server's throughput, not how deep its queues can grow). Bodies carry the pair, a sequence
//! number and the send time; receivers record latency in an HDR histogram.
//! It must not share state between pairs while running: each pair task owns its two sessions.

use super::Common;
use crate::conn::{Inbound, LoginOpts, Session};
use crate::report::{self, new_histogram, now_nanos, Progress, Report};
use crate::xml;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Options of `messages`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct MessagesArgs {
    /// Shared target options.
    #[command(flatten)]
    pub common: Common,
    /// Sender/receiver pairs (users offset+2i send to offset+2i+1).
    #[arg(short = 'p', long, default_value_t = 10)]
    pub pairs: u64,
    /// Total messages per second over all pairs (pair i starts i/RATE s in, so sends are
    /// evenly spaced); flat out when absent.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Seconds of sending.
    #[arg(short = 'd', long, default_value_t = 10)]
    pub duration: u64,
    /// Flat out: messages in flight per pair before the sender waits.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Seconds to wait for stragglers after sending stops.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Logins in flight at once while building up.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
}

pub(crate) struct PairResult {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) errors: u64,
    pub(crate) last_rx_ns: u64,
    pub(crate) hist: Histogram<u64>,
}

/// Runs the scenario.
pub async fn run(a: MessagesArgs) -> Result<Report> {
    super::ensure_fd_budget(a.pairs * 2)?;
    let t = a.common.target()?;
    let progress = Arc::new(Progress::default());
    let ns: Vec<u64> = (0..a.pairs * 2).map(|i| a.common.offset + i).collect();
    let opts = LoginOpts {
        sm: false,
        presence: true,
    };
    let sessions = super::login_all(&t, &ns, a.concurrency, opts, &progress).await?;
    // Let initial presence settle so the first messages do not race it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let server0 = a.common.server_cpu();
    let ticker = report::spawn_progress("messages", progress.clone());
    let start = Instant::now();
    let start_ns = now_nanos();
    let per_pair = a.rate.map(|r| r / a.pairs.max(1) as f64);
    let mut set = tokio::task::JoinSet::new();
    let mut it = sessions.into_iter();
    let mut pair = 0u64;
    while let (Some(tx), Some(rx)) = (it.next(), it.next()) {
        let progress = progress.clone();
        let cfg = PairCfg {
            pair,
            per_pair,
            window: a.window.max(1),
            end: start + Duration::from_secs(a.duration),
            drain: Duration::from_secs(a.drain),
            start: start + phase(pair, a.rate),
        };
        set.spawn(run_pair(tx, rx, cfg, progress));
        pair += 1;
    }
    let mut hist = new_histogram();
    let (mut sent, mut received, mut errors, mut last_rx) = (0u64, 0u64, 0u64, start_ns);
    while let Some(r) = set.join_next().await {
        let p = r.context("pair task panicked")??;
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
    let mut r = Report::new("messages", serde_json::to_value(&a)?);
    r.add(
        "delivered_per_s",
        received as f64 / active.as_secs_f64(),
        "msgs/s",
    );
    r.add("sent", sent as f64, "msgs");
    r.add("received", received as f64, "msgs");
    r.add("lost", sent.saturating_sub(received) as f64, "msgs");
    r.add("errors", errors as f64, "msgs");
    r.add_latency("latency", &hist, true);
    if let Some(cpu) = r.add_cpu(
        cpu0,
        server0.as_ref().map(|(p, c)| (p.as_slice(), *c)),
        wall,
    ) {
        r.add(
            "msgs_per_server_cpu_s",
            received as f64 / cpu.max(0.01),
            "msgs/CPU-s",
        );
    }
    Ok(r)
}

/// When pair `pair`'s fixed-rate schedule starts: pairs are spread evenly over one interval
/// of the total rate, so P pairs at R msgs/s send one message every 1/R s, not P at once
/// every P/R s (a burst of P that then queues behind itself, which is not the rate asked for).
pub(crate) fn phase(pair: u64, total_rate: Option<f64>) -> Duration {
    match total_rate {
        Some(r) if r > 0.0 => Duration::from_secs_f64(pair as f64 / r),
        _ => Duration::ZERO,
    }
}

pub(crate) struct PairCfg {
    pub(crate) pair: u64,
    pub(crate) per_pair: Option<f64>,
    pub(crate) window: u64,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) drain: Duration,
}

/// Parses `"{pair} {seq} {sent_ns}"` from a message body.
pub fn parse_body(msg: &[u8]) -> Option<(u64, u64, u64)> {
    let body = xml::text(xml::find_child(msg, "body")?)?;
    let s = std::str::from_utf8(body).ok()?;
    let mut it = s.split(' ').map(|x| x.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

pub(crate) async fn run_pair(
    mut tx: Session,
    mut rx: Session,
    c: PairCfg,
    progress: Arc<Progress>,
) -> Result<PairResult> {
    let mut res = PairResult {
        sent: 0,
        received: 0,
        errors: 0,
        last_rx_ns: 0,
        hist: new_histogram(),
    };
    let to = rx.jid.clone();
    let mut out = String::with_capacity(4096);
    let mut sending = true;
    let mut drain_until = c.end + c.drain;
    let mut next_send = c.start;
    loop {
        let now = Instant::now();
        if sending && now >= c.end {
            sending = false;
            drain_until = now + c.drain;
        }
        if !sending && (res.received >= res.sent || now >= drain_until) {
            break;
        }
        let inflight = res.sent.saturating_sub(res.received);
        // Flat out refills the window only once half of it is delivered, so writes batch.
        let may_send = sending && (c.per_pair.is_some() || inflight <= c.window / 2);
        let wake = match (sending, c.per_pair) {
            (false, _) => drain_until,
            (true, Some(_)) => c.end.min(next_send),
            (true, None) => c.end,
        };
        tokio::select! {
            biased;
            r = rx.next() => match r? {
                Inbound::Element(e) => {
                    if xml::name(&e) != b"message" {
                        continue;
                    }
                    if xml::attr(&e, "type") == Some(b"error") {
                        res.errors += 1;
                        continue;
                    }
                    if let Some((p, _seq, t)) = parse_body(&e) {
                        if p == c.pair {
                            let now_ns = now_nanos();
                            report::record_ns(&mut res.hist, now_ns.saturating_sub(t));
                            res.received += 1;
                            res.last_rx_ns = now_ns;
                            progress.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Inbound::Close => anyhow::bail!("server closed the receiver's stream"),
            },
            r = tx.next() => match r? {
                Inbound::Element(e) => {
                    if xml::name(&e) == b"message" && xml::attr(&e, "type") == Some(b"error") {
                        res.errors += 1;
                    }
                }
                Inbound::Close => anyhow::bail!("server closed the sender's stream"),
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = std::future::ready(()), if may_send && c.per_pair.is_none() => {}
        }
        if !may_send {
            continue;
        }
        let now = Instant::now();
        let n = match c.per_pair {
            Some(rate) => {
                let due = (now.saturating_duration_since(c.start).as_secs_f64() * rate) as u64;
                // Cap a burst after a stall so one wakeup does not flood the server.
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
                "<message to='{to}' type='chat' id='m{seq}'><body>{} {seq} {}</body></message>",
                c.pair,
                now_nanos()
            );
        }
        tx.send(out.as_bytes()).await?;
        progress.sent.fetch_add(n, Ordering::Relaxed);
    }
    tx.close().await;
    rx.close().await;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_pairs_are_spread_over_one_interval() {
        // 20 pairs at 1000 msgs/s: pair i starts i ms in, so together they send every 1 ms.
        assert_eq!(phase(0, Some(1000.0)), Duration::ZERO);
        assert_eq!(phase(7, Some(1000.0)), Duration::from_millis(7));
        assert_eq!(phase(19, Some(1000.0)), Duration::from_millis(19));
        // Flat out has no schedule.
        assert_eq!(phase(7, None), Duration::ZERO);
        assert_eq!(phase(7, Some(0.0)), Duration::ZERO);
    }

    #[test]
    fn body_roundtrip() {
        let m = b"<message from='a@d/r' to='b@d/r' type='chat' id='m7'><body>3 7 123456</body></message>";
        assert_eq!(parse_body(m), Some((3, 7, 123456)));
        assert_eq!(parse_body(b"<message><body>hello</body></message>"), None);
        assert_eq!(parse_body(b"<message/>"), None);
    }
}
