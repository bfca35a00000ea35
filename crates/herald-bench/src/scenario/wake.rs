//! `wake`: how fast a pushed phone gets its message (issue 18). A push-enabled client with
//! XEP-0198 hibernates (drops its socket); a sender messages it; when the push reaches the
//! sink (an XEP-0114 app server), the phone reconnects and resumes, and the bench measures
//! from TCP connect to the message: wall time and round trips. The phone talks through a
//! proxy inside the bench that counts client-visible turns (a client write after server
//! data, or the first write) and can delay each direction by `--delay-ms`, preserving
//! order, to emulate a mobile RTT without root (`tc netem` needs network namespaces).
//! Two modes: `legacy` (SASL with `--auth`, stream restart, `<resume/>`) and `fast` (XEP-0388
//! SASL2 with an XEP-0484 `HT-SHA-256-NONE` token and XEP-0198 resumption inline; the first
//! login, with PLAIN, obtains the token).

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

/// How the phone logs in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum WakeMode {
    /// RFC 6120 SASL, stream restart, XEP-0198 `<resume/>`.
    Legacy,
    /// SASL2 + FAST token + inline resumption.
    Fast,
}

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
    /// Legacy SASL + resume, or SASL2 + FAST + inline resume.
    #[arg(long, value_enum, default_value = "legacy")]
    pub mode: WakeMode,
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

/// The `token` of an XEP-0484 `<token/>` in a SASL2 success.
fn fast_token(success: &[u8]) -> Option<String> {
    let t = xml::find_child(success, "token")?;
    Some(String::from_utf8_lossy(xml::attr(t, "token")?).into_owned())
}

/// HT-SHA-256-NONE's initiator message: HMAC-SHA-256 keyed by the token over "Initiator"
/// (no channel binding data with -NONE).
fn ht_proof(token: &[u8]) -> Result<Vec<u8>> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(token)
        .map_err(|e| anyhow::anyhow!("FAST token unusable as an HMAC key: {e}"))?;
    m.update(b"Initiator");
    Ok(m.finalize().into_bytes().to_vec())
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
    // The proxy forwards to `--port` only.
    via.ports.clear();
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
    let client_id = format!("wake-{:016x}", rand::random::<u64>());
    let agent = format!("<user-agent id='{client_id}'/>");
    let mut token = String::new();
    let mut phone = match a.mode {
        WakeMode::Legacy => {
            conn::login(
                &phone_t,
                phone_n,
                LoginOpts {
                    sm: true,
                    presence: true,
                },
            )
            .await?
        }
        WakeMode::Fast => {
            let user = phone_t.user(phone_n);
            let initial = format!("\0{user}\0{}", a.common.password);
            let extra = format!(
                "{agent}<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/><bind xmlns='urn:xmpp:bind:0'><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>"
            );
            let (mut s, ok) = conn::sasl2(
                &phone_t,
                "PLAIN",
                initial.as_bytes(),
                &extra,
                &phone_t.bare_jid(phone_n),
            )
            .await?;
            token = fast_token(&ok).context("no FAST token in the SASL2 success")?;
            let enabled = xml::find_child(&ok, "enabled")
                .context("no inline SM <enabled/> in the SASL2 success")?;
            s.sm = true;
            s.sm_id = xml::attr(enabled, "id").map(|id| String::from_utf8_lossy(id).into_owned());
            s.send(b"<presence/>").await?;
            s
        }
    };
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
        let mut s = match a.mode {
            WakeMode::Legacy => {
                let authed = conn::authenticate(&phone_t, phone_n).await?;
                match authed.resume(&phone_t, &jid, &previd, h).await? {
                    Resumption::Resumed { session, .. } => session,
                    Resumption::Failed { .. } => bail!("resumption failed in iteration {i}"),
                }
            }
            WakeMode::Fast => {
                let mut initial = phone_t.user(phone_n).into_bytes();
                initial.push(0);
                initial.extend_from_slice(&ht_proof(token.as_bytes())?);
                let extra = format!(
                    "{agent}<fast xmlns='urn:xmpp:fast:0'/><resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
                );
                let (mut s, ok) =
                    conn::sasl2(&phone_t, "HT-SHA-256-NONE", &initial, &extra, &jid).await?;
                if xml::find_child(&ok, "resumed").is_none() {
                    bail!(
                        "inline resumption failed in iteration {i}: {}",
                        String::from_utf8_lossy(&ok)
                    );
                }
                // XEP-0484: the server may rotate the token with any success.
                if let Some(t) = fast_token(&ok) {
                    token = t;
                }
                s.jid = jid.clone();
                s.sm = true;
                s.sm_id = Some(previd.clone());
                s.h_in = h;
                s
            }
        };
        let turns = tokio::time::timeout(step, conns.recv())
            .await
            .context("the proxy saw no connection")?
            .context("the proxy stopped")?;
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
