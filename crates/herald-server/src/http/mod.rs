//! The HTTP listeners (`[http]`): one HTTPS listener with the domain's certificate, HTTP/1.1
//! and HTTP/2 chosen by ALPN, and an optional plain one for a reverse proxy on loopback.
//! Routes: XEP-0363 uploads ([`upload`]), `/metrics` and `/health` ([`metrics`]), the invite
//! landing page ([`invite`]), XMPP over WebSocket and its XEP-0156 host-meta
//! ([`websocket`]); a new service is one more route in [`router`] (connections are served
//! with upgrades enabled; an upgraded connection leaves the HTTP count and timeouts for
//! those of the protocol it became).
//!
//! Bounded: at most `max_connections` connections at once (one beyond is closed at once), a
//! request head of at most `max_header_bytes` (beyond: 431, over HTTP/1.1 and, as the
//! header list limit, HTTP/2), `request_timeout` to send a head (and between two reads of an
//! upload body), and a connection with no bytes moving either way for `idle_timeout` is
//! closed — slowloris senders and idle keep-alives cost a slot for that long at most. At
//! shutdown each connection finishes its request in flight and closes.
//!
//! It must not parse XMPP or decide protocol rules: slot terms, signatures and ranges are
//! herald-xep's (`herald_xep::upload`).

pub mod invite;
pub mod metrics;
pub mod upload;
pub mod websocket;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::Shared;

/// What the HTTP side keeps between requests.
pub struct HttpState {
    /// The base URL clients are given (`[http] public_url`, or the bound HTTPS address);
    /// None without an HTTP listener.
    pub base_url: Option<String>,
    /// The key that signs upload slots (`data_dir/upload.key`, made on first start).
    pub upload_secret: Vec<u8>,
    /// Where uploads live: `files/ID` complete, `tmp/ID` being written.
    pub upload_dir: PathBuf,
    /// Uploads running per owner (bare JID), against `upload.max_concurrent_per_user`.
    pub(crate) uploading: Mutex<HashMap<String, usize>>,
    /// Slot ids with a PUT running: a second one gets 409.
    pub(crate) in_progress: Mutex<HashSet<String>>,
    /// Connections open, against `http.max_connections`.
    conns: Arc<Semaphore>,
    /// Counters for `/metrics`.
    pub stats: HttpStats,
}

/// HTTP counters.
#[derive(Default, Debug)]
pub struct HttpStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Uploads completed.
    pub uploads: AtomicU64,
    /// Their bytes.
    pub upload_bytes: AtomicU64,
    /// Uploads refused or failed (any status but 201).
    pub uploads_failed: AtomicU64,
    /// Downloads served (200 and 206).
    pub downloads: AtomicU64,
    /// Upload files deleted by expiry.
    pub uploads_expired: AtomicU64,
}

impl HttpState {
    /// Reads or makes the upload key and prepares the upload directories (a `tmp/` left by
    /// a crash is emptied: those uploads never completed).
    pub fn new(cfg: &crate::Config, bound: Option<SocketAddr>) -> anyhow::Result<HttpState> {
        let base_url = cfg.http.base_url(&cfg.domain, bound);
        let upload_dir = cfg.data_dir.join("upload");
        let serving = bound.is_some() || cfg.http.plain_listen.is_some();
        let upload_secret = if serving && cfg.upload.enabled {
            std::fs::create_dir_all(upload_dir.join("files"))
                .with_context(|| format!("creating {}", upload_dir.display()))?;
            let tmp = upload_dir.join("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            upload_key(&cfg.data_dir.join("upload.key"))?
        } else {
            Vec::new()
        };
        Ok(HttpState {
            base_url,
            upload_secret,
            upload_dir,
            uploading: Default::default(),
            in_progress: Default::default(),
            conns: Arc::new(Semaphore::new(cfg.http.max_connections)),
            stats: HttpStats::default(),
        })
    }

    /// Connections open now.
    pub fn open_connections(&self, max: usize) -> usize {
        max.saturating_sub(self.conns.available_permits())
    }
}

/// The upload signing key: 32 random bytes in `path` (owner-only), made if absent (a longer
/// key an operator put there is used as it is).
fn upload_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    herald_transport::secret_file::load_or_create(path, 32, true)
}

/// Every route. A new HTTP service adds its routes here.
pub fn router(shared: &Arc<Shared>) -> axum::Router {
    let mut r = axum::Router::new();
    if shared.cfg.upload.enabled {
        r = r.route(
            "/upload/{id}/{name}",
            get(upload::get).put(upload::put).options(upload::preflight),
        );
    }
    // The invite landing page; with registration off it still shows how to join with an app.
    r = r.route(
        "/invite/{token}",
        get(invite::get)
            .post(invite::post)
            .layer(axum::extract::DefaultBodyLimit::max(
                invite::max_form_bytes(&shared.cfg.registration),
            )),
    );
    // XEP-0156 discovery; with WebSocket off it lists nothing rather than 404, so a client
    // learns there is no alternative connection method.
    r = r
        .route("/.well-known/host-meta", get(websocket::host_meta))
        .route(
            "/.well-known/host-meta.json",
            get(websocket::host_meta_json),
        );
    if shared.cfg.http.websocket {
        r = r.route(websocket::WEBSOCKET_PATH, get(websocket::upgrade));
    }
    if shared.cfg.http.metrics {
        r = r
            .route("/metrics", get(metrics::metrics))
            .route("/health", get(metrics::health));
    }
    r.fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .with_state(shared.clone())
}

/// The HTTPS server's TLS: the c2s certificates, with ALPN for HTTP/2 and HTTP/1.1.
pub fn tls_config(shared: &Shared) -> Arc<rustls::ServerConfig> {
    let mut c = (*shared.tls).clone();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(c)
}

/// Accepts HTTP connections until shutdown; `tls` None for the plain listener.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let app = router(&shared);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = shared.shutdown_signal();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, typically: back off rather than spin.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = shared.http.conns.clone().try_acquire_owned() else {
            shared
                .http
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "http connection refused: http.max_connections");
            continue;
        };
        shared
            .http
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let (shared, app, acceptor) = (shared.clone(), app.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve(shared, tcp, peer, acceptor, app).await;
        });
    }
}

async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
) {
    // Handlers that count per address (the invite form's registrations) read the peer
    // from the request (`ConnectInfo`). Behind a reverse proxy that is the proxy's address.
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    );
    let cfg = &shared.cfg.http;
    let timeout = cfg.request_timeout.0;
    match acceptor {
        None => serve_io(&shared, tcp, app).await,
        Some(a) => match tokio::time::timeout(timeout, a.accept(tcp)).await {
            Ok(Ok(tls)) => serve_io(&shared, tls, app).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "http TLS handshake failed"),
            Err(_) => tracing::debug!("http TLS handshake timed out"),
        },
    }
}

async fn serve_io<T, S>(shared: &Arc<Shared>, io: T, app: S)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let cfg = &shared.cfg.http;
    let idle = cfg.idle_timeout.0;
    let (io, activity) = Idle::new(io);
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.request_timeout.0)
        .max_buf_size(cfg.max_header_bytes);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(32);
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown_signal();
    let mut stopping = false;
    loop {
        let quiet_for = activity.quiet_for();
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "http connection ended");
                }
                return;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle.saturating_sub(quiet_for)) => {
                if activity.quiet_for() >= idle {
                    tracing::debug!("http connection idle: closed");
                    return;
                }
            }
        }
    }
}

/// An I/O stream that remembers when bytes last moved, for the idle timeout.
struct Idle<T> {
    inner: T,
    activity: Arc<Activity>,
}

struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read or write.
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

impl<T> Idle<T> {
    fn new(inner: T) -> (Idle<T>, Arc<Activity>) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        });
        (
            Idle {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
