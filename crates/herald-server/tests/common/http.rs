//! An HTTPS test client (HTTP/1.1 or HTTP/2 by ALPN) that trusts the server's self-signed
//! certificate, built on hyper's client connections: each request opens a connection, so a
//! test sees exactly what one client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A TLS connection to `addr` trusting `data_dir/cert.pem`, offering `alpn`.
pub async fn tls(addr: SocketAddr, data_dir: &Path, alpn: &[&str]) -> TlsStream<TcpStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(data_dir.join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    c.connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS request over HTTP/1.1.
pub async fn request(
    addr: SocketAddr,
    data_dir: &Path,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let io = tls(addr, data_dir, &["http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send.send_request(build(method, uri, headers, body))
        .await
        .map(collect)
        .unwrap()
        .await
}

/// One HTTPS request over HTTP/2 (the server must pick h2 by ALPN).
pub async fn request_h2(
    addr: SocketAddr,
    data_dir: &Path,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let io = tls(addr, data_dir, &["h2"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("https://localhost:{}{uri}", addr.port());
    send.send_request(build(method, &uri, headers, body))
        .await
        .map(collect)
        .unwrap()
        .await
}

/// One plain HTTP/1.1 request.
pub async fn request_plain(addr: SocketAddr, method: &str, uri: &str) -> Resp {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send.send_request(build(method, uri, &[], b""))
        .await
        .map(collect)
        .unwrap()
        .await
}

fn build(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

async fn collect(r: hyper::Response<hyper::body::Incoming>) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// The path and query of an absolute URL.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}
