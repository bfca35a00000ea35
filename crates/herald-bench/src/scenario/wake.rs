//! `wake`: how fast a pushed phone gets its message (issue 18). A push-enabled client with
//! XEP-0198 hibernates (drops its socket); a sender messages it; when the push reaches the
//! sink (an XEP-0114 app server), the phone reconnects and resumes, and the bench measures
//! from TCP connect to the message: wall time and round trips. The phone talks through a
//! proxy inside the bench that counts client-visible turns (a client write after server
//! data, or the first write) and can delay each direction by `--delay-ms`, preserving
//! order, to emulate a mobile RTT without root (`tc netem` needs network namespaces).
//! Only the legacy path (SASL SCRAM + `<resume/>`) is implemented; SASL2 + FAST + inline
//! resumption is still to do.

use super::push::{self, Gone, PushArgs};
use super::Common;
use crate::conn::{self, Inbound, LoginOpts, Resumption};
use crate::report::{new_histogram, record_ns, Report};
use crate::xml::{self, Event, Framer};
use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Options of `wake`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct WakeArgs {
    /// Shared target options (the phone is user `offset`, the sender `offset+1`).
    #[command(flatten)]
    pub common: Common,
    /// Hibernate → push → reconnect cycles measured.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub iterations: u64,
    /// Delay added by the proxy in each direction, ms (50 gives a 100 ms RTT).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
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
}

/// One proxied connection's count of client-visible turns.
#[derive(Default)]
struct Turns {
    count: AtomicU64,
    /// 1 when the last bytes seen went server → client (or nothing was seen yet: 1 too, so
    /// the first client write counts as a turn).
    server_spoke: AtomicU64,
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    turns: Arc<Turns>,
    client_to_server: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        // Pass the end on: the server must see the phone's socket die to hibernate it.
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_to_server {
                if turns.server_spoke.swap(0, Ordering::AcqRel) == 1 {
                    turns.count.fetch_add(1, Ordering::AcqRel);
                }
            } else {
                turns.server_spoke.store(1, Ordering::Release);
            }
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    tokio::join!(writer, reader);
}

/// Listens on an ephemeral loopback port; every accepted connection is forwarded to
/// `upstream` and its turn counter is handed out on the returned channel.
async fn spawn_proxy(
    upstream: (String, u16),
    delay: Duration,
) -> Result<(u16, mpsc::UnboundedReceiver<Arc<Turns>>)> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = l.local_addr()?.port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let Ok(s) = TcpStream::connect((upstream.0.as_str(), upstream.1)).await else {
                continue;
            };
            let _ = (c.set_nodelay(true), s.set_nodelay(true));
            let turns = Arc::new(Turns {
                server_spoke: AtomicU64::new(1),
                ..Turns::default()
            });
            if tx.send(turns.clone()).is_err() {
                return;
            }
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            tokio::spawn(pump(cr, sw, delay, turns.clone(), true));
            tokio::spawn(pump(sr, cw, delay, turns, false));
        }
    });
    Ok((port, rx))
}

/// Acknowledges every publish the sink gets and reports when it arrived.
async fn sink_loop(
    mut s: TcpStream,
    mut f: Framer,
    tx: mpsc::UnboundedSender<Instant>,
) -> Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut out = String::new();
        while let Some(ev) = f.next_event()? {
            match ev {
                Event::StreamClose => bail!("server closed the component stream"),
                Event::StreamOpen(_) => {}
                Event::Element(r) => {
                    let e = f.slice(r);
                    if xml::name(e) == b"iq" && xml::attr(e, "type") == Some(b"set") {
                        if push::publish_node(e).is_some() {
                            let _ = tx.send(Instant::now());
                        }
                        out.push_str(&conn::iq_result(e));
                    }
                }
            }
        }
        if !out.is_empty() {
            s.write_all(out.as_bytes()).await?;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("server closed the component connection");
        }
        f.push(&buf[..n]);
    }
}

/// Runs the scenario.
pub async fn run(a: WakeArgs) -> Result<Report> {
    let direct = a.common.target()?;
    let delay = Duration::from_millis(a.delay_ms);
    let (proxy_port, mut conns) =
        spawn_proxy((a.common.host.clone(), a.common.port), delay).await?;
    let mut via = a.common.clone();
    via.host = "127.0.0.1".into();
    via.port = proxy_port;
    let phone_t = via.target()?;
    let step = direct.step_timeout;

    let pa = PushArgs {
        common: a.common.clone(),
        count: 1,
        component_domain: a.component_domain.clone(),
        component_secret: a.component_secret.clone(),
        component_port: a.component_port,
        mode: Gone::Hibernated,
        rate: None,
        timeout: a.common.step_timeout,
        concurrency: 1,
    };
    let (cs, cf) = push::connect_component(&pa).await?;
    let (ptx, mut pushes) = mpsc::unbounded_channel();
    let sink = tokio::spawn(sink_loop(cs, cf, ptx));

    let phone_n = a.common.offset;
    let mut sender = conn::login(
        &direct,
        phone_n + 1,
        LoginOpts {
            sm: false,
            presence: true,
        },
    )
    .await?;
    let mut phone = conn::login(
        &phone_t,
        phone_n,
        LoginOpts {
            sm: true,
            presence: true,
        },
    )
    .await?;
    let en = format!(
        "<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='{}' node='node-{phone_n}'/></iq>",
        a.component_domain
    );
    phone.send(en.as_bytes()).await?;
    phone.await_iq("push1", step, "push enable").await?;

    let (mut wall, mut rts) = (new_histogram(), Vec::new());
    let mut push_ns = new_histogram();
    for i in 0..a.iterations {
        let jid = phone.jid.clone();
        let previd = phone
            .sm_id
            .clone()
            .context("the server offered no SM resumption id")?;
        // Nothing may stay unacked, or hibernation itself could trigger a push.
        phone.ack_all().await?;
        let h = phone.h_in;
        phone.kill();
        // Let the server see the socket die and hibernate the session; a message sent before
        // that would go to the old socket and never be pushed.
        tokio::time::sleep(Duration::from_millis(300) + 2 * delay).await;
        while pushes.try_recv().is_ok() {}
        while conns.try_recv().is_ok() {}
        let id = format!("w{i}");
        let msg =
            format!("<message to='{jid}' type='chat' id='{id}'><body>wake {i}</body></message>");
        let sent = Instant::now();
        sender.send(msg.as_bytes()).await?;
        let pushed = tokio::time::timeout(step, pushes.recv())
            .await
            .context("no push reached the sink")?
            .context("the sink stopped")?;
        record_ns(
            &mut push_ns,
            pushed.saturating_duration_since(sent).as_nanos() as u64,
        );
        // The phone wakes on the push: measured from TCP connect to the message.
        let t0 = Instant::now();
        let authed = conn::authenticate(&phone_t, phone_n).await?;
        let turns = tokio::time::timeout(step, conns.recv())
            .await
            .context("the proxy saw no connection")?
            .context("the proxy stopped")?;
        let mut s = match authed.resume(&phone_t, &jid, &previd, h).await? {
            Resumption::Resumed { session, .. } => session,
            Resumption::Failed { .. } => bail!("resumption failed in iteration {i}"),
        };
        loop {
            match tokio::time::timeout(step, s.next())
                .await
                .context("message not delivered after resume")??
            {
                Inbound::Element(e)
                    if xml::name(&e) == b"message"
                        && xml::attr(&e, "id") == Some(id.as_bytes()) =>
                {
                    break
                }
                Inbound::Element(_) => {}
                Inbound::Close => bail!("the server closed the resumed stream"),
            }
        }
        record_ns(&mut wall, t0.elapsed().as_nanos() as u64);
        rts.push(turns.count.load(Ordering::Acquire));
        phone = s;
        // Drain the sender's stream so nothing piles up there.
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), sender.next()).await {}
    }
    sink.abort();
    sender.close().await;
    phone.close().await;

    let mut r = Report::new("wake", serde_json::to_value(&a)?);
    let n = rts.len().max(1) as f64;
    r.add(
        "round_trips",
        rts.iter().sum::<u64>() as f64 / n,
        "round trips",
    );
    r.add(
        "round_trips_max",
        rts.iter().copied().max().unwrap_or(0) as f64,
        "round trips",
    );
    r.add_latency("wake", &wall, false);
    r.add_latency("push", &push_ns, false);
    Ok(r)
}
