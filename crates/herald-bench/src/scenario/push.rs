//! `push`: a sink app server (XEP-0114 component) answers every pubsub publish; N users
//! with stream management register for push (XEP-0357) and then vanish — socket dropped
//! without closing the stream (hibernation) or stream closed (offline); one sender then
//! messages each once. Reports publishes/s and message→publish latency, matched by node.
//! It must not count a publish that arrived before its message was sent.

use super::Common;
use crate::conn::{self, LoginOpts};
use crate::error::BenchError;
use crate::report::{self, new_histogram, now_nanos, Progress, Report};
use crate::xml::{self, Event, Framer};
use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How push users are gone when their message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Gone {
    /// XEP-0198 session hibernated: socket dropped without `</stream:stream>`.
    Hibernated,
    /// Stream closed: the message goes to offline storage.
    Offline,
}

/// Options of `push`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct PushArgs {
    /// Shared target options.
    #[command(flatten)]
    pub common: Common,
    /// Users with push enabled (offset..offset+N); user offset+N sends.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub count: u64,
    /// The sink component's domain (the push `jid`).
    #[arg(long, default_value = "push.localhost")]
    pub component_domain: String,
    /// XEP-0114 shared secret.
    #[arg(long, default_value = "bench-secret")]
    #[serde(skip)]
    pub component_secret: String,
    /// The server's component port.
    #[arg(long, default_value_t = 5347)]
    pub component_port: u16,
    /// Hibernated or offline targets.
    #[arg(long, value_enum, default_value = "hibernated")]
    pub mode: Gone,
    /// Messages per second from the sender; flat out when absent.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Seconds to wait for all publishes.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// Logins in flight at once while building up.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
}

#[derive(Default)]
struct Sink {
    /// Send time (bench nanos) of the message to user index i; 0 = not sent yet.
    sent: Vec<AtomicU64>,
    /// First matching publish time per user; 0 = none yet.
    got: Vec<AtomicU64>,
    publishes: AtomicU64,
    early: AtomicU64,
    matched: AtomicU64,
    hist: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// Parses the user index from `node-{n}` in a publish.
pub fn publish_node(iq: &[u8]) -> Option<u64> {
    let publish = xml::find_child(iq, "publish")?;
    let node = xml::attr(publish, "node")?;
    std::str::from_utf8(node.strip_prefix(b"node-")?)
        .ok()?
        .parse()
        .ok()
}

/// XEP-0114 §3: the handshake is hex(SHA-1(stream id + secret)).
pub fn handshake(stream_id: &str, secret: &str) -> String {
    hex::encode(Sha1::digest(format!("{stream_id}{secret}").as_bytes()))
}

/// Connects the sink app server as an XEP-0114 component and completes the handshake.
pub async fn connect_component(a: &PushArgs) -> Result<(TcpStream, Framer)> {
    let mut s = TcpStream::connect((a.common.host.as_str(), a.component_port))
        .await
        .with_context(|| format!("connecting to component port {}", a.component_port))?;
    s.set_nodelay(true)?;
    let hdr = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        a.component_domain
    );
    s.write_all(hdr.as_bytes()).await?;
    let mut f = Framer::new();
    let mut buf = vec![0u8; 8192];
    let deadline = Duration::from_secs(a.common.step_timeout);
    let mut sent_handshake = false;
    tokio::time::timeout(deadline, async {
        loop {
            while let Some(ev) = f.next_event()? {
                match ev {
                    Event::StreamOpen(r) => {
                        let head = f.slice(r);
                        let id =
                            xml::attr(head, "id").context("component stream header has no id")?;
                        let hs = handshake(&String::from_utf8_lossy(id), &a.component_secret);
                        s.write_all(format!("<handshake>{hs}</handshake>").as_bytes())
                            .await?;
                        sent_handshake = true;
                    }
                    Event::Element(r) => {
                        let e = f.slice(r);
                        if sent_handshake && xml::name(e) == b"handshake" {
                            return Ok(());
                        }
                        bail!("component handshake refused: {}", crate::error::snippet(e));
                    }
                    Event::StreamClose => bail!("server closed the component stream"),
                }
            }
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("server closed the component connection during handshake");
            }
            f.push(&buf[..n]);
        }
    })
    .await
    .context("component handshake timed out")??;
    Ok((s, f))
}

async fn sink_loop(
    mut s: TcpStream,
    mut f: Framer,
    sink: Arc<Sink>,
    offset: u64,
    progress: Arc<Progress>,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = String::new();
    loop {
        out.clear();
        while let Some(ev) = f.next_event()? {
            let Event::Element(r) = ev else {
                if matches!(ev, Event::StreamClose) {
                    return Ok(());
                }
                continue;
            };
            let e = f.slice(r);
            if xml::name(e) != b"iq" || !matches!(xml::attr(e, "type"), Some(b"set") | Some(b"get"))
            {
                continue;
            }
            if let Some(n) = publish_node(e) {
                let now = now_nanos();
                sink.publishes.fetch_add(1, Ordering::Relaxed);
                let idx = n.checked_sub(offset).and_then(|i| usize::try_from(i).ok());
                if let Some(i) = idx.filter(|&i| i < sink.sent.len()) {
                    let sent = sink.sent[i].load(Ordering::Acquire);
                    if sent == 0 {
                        sink.early.fetch_add(1, Ordering::Relaxed);
                    } else if sink.got[i]
                        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        sink.matched.fetch_add(1, Ordering::Relaxed);
                        progress.received.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = sink.hist.lock() {
                            if let Some(h) = h.as_mut() {
                                report::record_ns(h, now.saturating_sub(sent));
                            }
                        }
                    }
                }
            }
            // XEP-0357 §5: the app server acknowledges the publish with an IQ result.
            out.push_str(&conn::iq_result(e));
        }
        if !out.is_empty() {
            s.write_all(out.as_bytes()).await?;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(BenchError::Closed.into());
        }
        f.push(&buf[..n]);
    }
}

/// Runs the scenario.
pub async fn run(a: PushArgs) -> Result<Report> {
    super::ensure_fd_budget(a.count + 2)?;
    let t = a.common.target()?;
    let progress = Arc::new(Progress::default());
    let offset = a.common.offset;
    let sink = Arc::new(Sink {
        sent: (0..a.count).map(|_| AtomicU64::new(0)).collect(),
        got: (0..a.count).map(|_| AtomicU64::new(0)).collect(),
        hist: Mutex::new(Some(new_histogram())),
        ..Sink::default()
    });
    let (cs, cf) = connect_component(&a).await?;
    let sink_task = tokio::spawn(sink_loop(cs, cf, sink.clone(), offset, progress.clone()));
    eprintln!(
        "component {} connected; registering {} users",
        a.component_domain, a.count
    );

    // Register and vanish, with bounded concurrency.
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.count {
        let (t, sem, progress) = (t.clone(), sem.clone(), progress.clone());
        let (domain, mode) = (a.component_domain.clone(), a.mode);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let n = offset + i;
            let r = async {
                let opts = LoginOpts {
                    sm: mode == Gone::Hibernated,
                    presence: true,
                };
                let mut s = conn::login(&t, n, opts).await?;
                let en = format!(
                    "<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='{domain}' node='node-{n}'/></iq>"
                );
                s.send(en.as_bytes()).await?;
                s.await_iq("push1", t.step_timeout, "push enable").await?;
                let jid = s.jid.clone();
                match mode {
                    Gone::Hibernated => {
                        // Nothing may stay unacked, or hibernation itself could trigger a push.
                        s.ack_all().await?;
                        s.kill();
                    }
                    Gone::Offline => s.close().await,
                }
                Ok::<_, BenchError>(jid)
            }
            .await;
            match &r {
                Ok(_) => progress.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => progress.failed.fetch_add(1, Ordering::Relaxed),
            };
            (i, r)
        });
    }
    let mut jids = vec![String::new(); a.count as usize];
    while let Some(r) = set.join_next().await {
        let (i, r) = r.context("push user task panicked")?;
        jids[i as usize] = r.with_context(|| format!("registering push user {}", offset + i))?;
    }
    // Let the server notice the dead sockets and start hibernation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early_before_send = sink.publishes.load(Ordering::Relaxed);

    let mut sender = conn::login(
        &t,
        offset + a.count,
        LoginOpts {
            sm: false,
            presence: true,
        },
    )
    .await?;
    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let server0 = a.common.server_cpu();
    let ticker = report::spawn_progress("push", progress.clone());
    let start = Instant::now();
    let first_send = now_nanos();
    let mut out = String::new();
    for (i, jid) in jids.iter().enumerate() {
        if let Some(rate) = a.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        // Hibernated sessions are still available: address the full JID. Offline users: bare.
        let to = match a.mode {
            Gone::Hibernated => jid.clone(),
            Gone::Offline => t.bare_jid(offset + i as u64),
        };
        out.clear();
        let _ = write!(
            out,
            "<message to='{to}' type='chat' id='p{i}'><body>push {i}</body></message>"
        );
        sink.sent[i].store(now_nanos(), Ordering::Release);
        sender.send(out.as_bytes()).await?;
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    while sink.matched.load(Ordering::Relaxed) < a.count
        && Instant::now() < deadline
        && !sink_task.is_finished()
    {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            r = sender.next() => { r?; }
        }
    }
    let wall = start.elapsed();
    ticker.abort();
    sender.close().await;
    if sink_task.is_finished() {
        // The sink stopped reading: the publishes still to come would count as missing.
        match sink_task.await {
            Ok(Err(e)) => return Err(e.context("the app-server sink failed")),
            Ok(Ok(())) => bail!("the server closed the app-server component stream"),
            Err(e) => bail!("the app-server sink task failed: {e}"),
        }
    }
    sink_task.abort();

    let matched = sink.matched.load(Ordering::Relaxed);
    let last = sink
        .got
        .iter()
        .map(|g| g.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let span = Duration::from_nanos(last.saturating_sub(first_send)).max(Duration::from_millis(1));
    let hist = sink
        .hist
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_else(new_histogram);
    let mut r = Report::new("push", serde_json::to_value(&a)?);
    r.add(
        "publishes_per_s",
        matched as f64 / span.as_secs_f64(),
        "publishes/s",
    );
    r.add("matched", matched as f64, "publishes");
    r.add("missing", a.count.saturating_sub(matched) as f64, "users");
    r.add(
        "publishes_total",
        sink.publishes.load(Ordering::Relaxed) as f64,
        "publishes",
    );
    r.add(
        "publishes_before_send",
        early_before_send as f64,
        "publishes",
    );
    r.add_latency("push_latency", &hist, false);
    let _ = r.add_cpu(
        cpu0,
        server0.as_ref().map(|(p, c)| (p.as_slice(), *c)),
        wall,
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_from_publish() {
        let iq = b"<iq type='set' id='x' to='push.localhost' from='localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='node-42'><item/></publish></pubsub></iq>";
        assert_eq!(publish_node(iq), Some(42));
        assert_eq!(publish_node(b"<iq type='get' id='d'><query/></iq>"), None);
    }

    // SHA-1 of the empty string is the well-known da39a3ee...; concatenation order is id then secret.
    #[test]
    fn handshake_is_hex_sha1_of_id_and_secret() {
        assert_eq!(
            handshake("", ""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(handshake("ab", "c"), hex::encode(Sha1::digest(b"abc")));
    }
}
