//! `upload`: XEP-0363 file transfer as a phone does it — a slot asked for over XMPP, then an
//! HTTPS PUT of the file and a GET of it back. Two figures: one large file's upload and
//! download throughput (default 20 MB), and many small uploads at once (default 100 × 100 KB,
//! each from its own user, as photos sent by many phones at the same moment).
//! It must not reuse HTTP connections (each transfer is a new TLS connection, as a phone's
//! is after a while asleep) and must check every byte that comes back.

use super::Common;
use crate::conn::{self, LoginOpts, Session, Target};
use crate::report::{self, new_histogram, Progress, Report};
use anyhow::{bail, Context, Result};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Options of `upload`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct UploadArgs {
    /// Shared target options (`--host`, `--domain`, users; c2s `--port` for the slots).
    #[command(flatten)]
    pub common: Common,
    /// The HTTPS port of the upload service (`[http] listen`).
    #[arg(long, default_value_t = 5443)]
    pub http_port: u16,
    /// Size of the large file, bytes (0: skip it).
    #[arg(long, default_value_t = 20_000_000)]
    pub big_size: u64,
    /// Size of each small file, bytes.
    #[arg(long, default_value_t = 100_000)]
    pub small_size: u64,
    /// Small uploads, all started at once, each by its own user (users offset+1…).
    #[arg(long, default_value_t = 100)]
    pub small_count: u64,
}

const UPLOAD_NS: &str = "urn:xmpp:http:upload:0";
/// Bytes written or read per call.
const CHUNK: usize = 64 * 1024;

/// The byte at `i` of a file of `seed`: a pattern the download is checked against without
/// keeping the file in memory.
fn byte_at(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7)) % 251) as u8
}

/// A slot's URLs, as path-and-query on the HTTPS listener.
struct Slot {
    put: String,
    get: String,
}

/// Asks for a slot and waits for it.
async fn slot(t: &Target, s: &mut Session, name: &str, size: u64) -> Result<Slot> {
    let id = format!("slot-{name}");
    let iq = format!(
        "<iq type='get' id='{id}' to='{}'><request xmlns='{UPLOAD_NS}' filename='{name}' size='{size}' content-type='application/octet-stream'/></iq>",
        t.domain
    );
    s.send(iq.as_bytes()).await?;
    let r = s.await_iq(&id, t.step_timeout, "upload slot").await?;
    let r = String::from_utf8_lossy(&r);
    let url = |el: &str| -> Result<String> {
        let at = r
            .find(&format!("<{el} "))
            .with_context(|| format!("no <{el}> in the slot: {r}"))?;
        let rest = &r[at..];
        let start = rest
            .find("url=")
            .with_context(|| format!("no url in <{el}>"))?
            + 4;
        let quote = rest[start..].chars().next().unwrap_or('\'');
        let v = &rest[start + 1..];
        let end = v.find(quote).context("unterminated url")?;
        path_of(&unescape(&v[..end]))
    };
    Ok(Slot {
        put: url("put")?,
        get: url("get")?,
    })
}

/// The five XML escapes (the slot URLs' queries have `&amp;`).
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `https://host:port/p?q` → `/p?q`.
fn path_of(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("not an HTTP URL: {url}"))?;
    Ok(rest
        .find('/')
        .map_or("/".to_string(), |i| rest[i..].to_string()))
}

/// A new HTTPS connection to the upload service.
async fn https(
    t: &Target,
    port: u16,
) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), port))
        .await
        .context("connecting to the HTTPS port")?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(t.domain.clone())?;
    let tls = tokio::time::timeout(t.step_timeout, t.connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    Ok(tls)
}

/// Reads a response head; (status, Content-Length, body bytes already read).
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u16, Option<u64>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad status line: {head}"))?;
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            });
            return Ok((status, len, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            bail!("response head too large");
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// PUTs `size` bytes of pattern `seed`; fails unless 201.
async fn put(t: &Target, port: u16, path: &str, size: u64, seed: u64) -> Result<()> {
    let mut io = https(t, port).await?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n",
        t.domain
    );
    io.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let n = (size - sent).min(CHUNK as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(seed, sent + k as u64);
        }
        io.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    io.flush().await?;
    let (status, _, _) = read_head(&mut io).await?;
    if status != 201 {
        bail!("PUT answered {status}");
    }
    Ok(())
}

/// GETs a file and checks its length and every byte against pattern `seed`.
async fn get(t: &Target, port: u16, path: &str, size: u64, seed: u64) -> Result<()> {
    let mut io = https(t, port).await?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        t.domain
    );
    io.write_all(head.as_bytes()).await?;
    io.flush().await?;
    let (status, len, first) = read_head(&mut io).await?;
    if status != 200 || len != Some(size) {
        bail!("GET answered {status} with length {len:?}, not {size}");
    }
    let check = |at: &mut u64, data: &[u8]| -> Result<()> {
        for (k, b) in data.iter().enumerate() {
            if *b != byte_at(seed, *at + k as u64) {
                bail!("byte {} differs from what was uploaded", *at + k as u64);
            }
        }
        *at += data.len() as u64;
        Ok(())
    };
    let mut at = 0u64;
    check(&mut at, &first)?;
    let mut buf = vec![0u8; CHUNK];
    while at < size {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            bail!("download cut short at {at} of {size} bytes");
        }
        check(&mut at, &buf[..n])?;
    }
    if at != size {
        bail!("download longer than {size} bytes");
    }
    Ok(())
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// Runs the scenario.
pub async fn run(a: UploadArgs) -> Result<Report> {
    let t = a.common.target()?;
    super::ensure_fd_budget(a.small_count * 2)?;
    let cpu0 = report::cpu_seconds("self").unwrap_or(0.0);
    let server0 = a.common.server_cpu();
    let start = Instant::now();
    let mut r = Report::new("upload", serde_json::to_value(&a)?);
    let port = a.http_port;
    if a.big_size > 0 {
        let mut s = conn::login(&t, a.common.offset, LoginOpts::default()).await?;
        let sl = slot(&t, &mut s, "big.bin", a.big_size).await?;
        s.close().await;
        let t0 = Instant::now();
        put(&t, port, &sl.put, a.big_size, 1)
            .await
            .context("large upload")?;
        let up = t0.elapsed();
        let t0 = Instant::now();
        get(&t, port, &sl.get, a.big_size, 1)
            .await
            .context("large download")?;
        let down = t0.elapsed();
        r.add("big_upload_MBps", mb_per_s(a.big_size, up), "MB/s");
        r.add("big_download_MBps", mb_per_s(a.big_size, down), "MB/s");
        r.add("big_upload_s", up.as_secs_f64(), "s");
        r.add("big_download_s", down.as_secs_f64(), "s");
    }
    if a.small_count > 0 {
        // Every user logs in and gets its slot first, so only the HTTP part is timed; a few
        // logins at a time, under the server's unauthenticated-connections-per-address limit.
        let users: Vec<u64> = (1..=a.small_count).map(|i| a.common.offset + i).collect();
        let progress = Arc::new(Progress::default());
        let sessions = super::login_all(&t, &users, 8, LoginOpts::default(), &progress).await?;
        let mut slots = Vec::with_capacity(sessions.len());
        for (i, mut s) in sessions.into_iter().enumerate() {
            slots.push(slot(&t, &mut s, &format!("small{i}.bin"), a.small_size).await?);
            s.close().await;
        }
        let go = Arc::new(tokio::sync::Barrier::new(slots.len()));
        let mut set = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for (i, sl) in slots.into_iter().enumerate() {
            let (t, go, size) = (t.clone(), go.clone(), a.small_size);
            set.spawn(async move {
                go.wait().await;
                let s0 = Instant::now();
                let r = put(&t, port, &sl.put, size, 100 + i as u64).await;
                (r.map(|_| s0.elapsed()), sl, i)
            });
        }
        let mut h = new_histogram();
        let mut done = Vec::new();
        let mut failed = 0u64;
        let mut first_error = None;
        while let Some(j) = set.join_next().await {
            let (res, sl, i) = j.context("upload task panicked")?;
            match res {
                Ok(d) => {
                    report::record_ns(&mut h, d.as_nanos() as u64);
                    done.push((sl, i));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        let wall = t0.elapsed();
        let ok = done.len() as u64;
        r.add(
            "small_uploads_per_s",
            ok as f64 / wall.as_secs_f64(),
            "uploads/s",
        );
        r.add(
            "small_upload_MBps",
            mb_per_s(ok * a.small_size, wall),
            "MB/s",
        );
        r.add("small_upload_failed", failed as f64, "uploads");
        r.add_latency("small_upload_latency", &h, false);
        // Each small file comes back intact.
        for (sl, i) in &done {
            get(&t, port, &sl.get, a.small_size, 100 + *i as u64)
                .await
                .context("small download")?;
        }
        if let Some(e) = first_error {
            r.failure = Some(format!("{failed} small uploads failed; first: {e}"));
        }
    }
    let wall = start.elapsed();
    r.add("wall_s", wall.as_secs_f64(), "s");
    r.add_cpu(
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
    fn slot_urls_become_request_paths() {
        let u = unescape("https://localhost:5443/upload/ab/f.bin?size=3&amp;sig=00");
        assert_eq!(path_of(&u).unwrap(), "/upload/ab/f.bin?size=3&sig=00");
        assert!(path_of("ftp://x/y").is_err());
    }
}
