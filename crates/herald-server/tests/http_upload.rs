//! XEP-0363 HTTP File Upload end to end: a client asks for a slot over XMPP, PUTs the file
//! over HTTPS and GETs it back (HTTP/1.1 and HTTP/2), with every refusal a client or an
//! attacker can meet, quotas across restarts and expiry.

mod common;
#[path = "common/http.rs"]
mod http;

use std::time::Duration;

use common::*;
use herald_proto::Element;
use http::{path_of, request, request_h2};

const UPLOAD: &str = "urn:xmpp:http:upload:0";

async fn server(f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.http.listen = Some("127.0.0.1:0".parse().unwrap());
        c.upload.max_file_size = herald_server::config::ByteSize(1000);
        c.upload.quota_per_user = herald_server::config::ByteSize(2500);
        f(c)
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

fn data(s: &TestServer) -> std::path::PathBuf {
    s.running.shared.cfg.data_dir.clone()
}

fn addr(s: &TestServer) -> std::net::SocketAddr {
    s.running.http_addr.unwrap()
}

async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |el| {
        el.name() == "iq" && el.attr("id") == Some(id)
    })
    .await
}

/// Asks for a slot; the answer IQ.
async fn slot_iq(c: &mut RawClient, name: &str, size: usize, ctype: &str) -> Element {
    let id = format!("slot-{name}-{size}");
    ask(
        c,
        &id,
        &format!(
            "<iq type='get' id='{id}' to='localhost'><request xmlns='{UPLOAD}' filename='{name}' size='{size}' content-type='{ctype}'/></iq>"
        ),
    )
    .await
}

/// A slot: (PUT path+query, GET path).
async fn slot(c: &mut RawClient, name: &str, size: usize, ctype: &str) -> (String, String) {
    let r = slot_iq(c, name, size, ctype).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let s = r.get_child("slot", UPLOAD).expect("a slot");
    let put = s
        .get_child("put", UPLOAD)
        .and_then(|p| p.attr("url"))
        .unwrap();
    let get = s
        .get_child("get", UPLOAD)
        .and_then(|p| p.attr("url"))
        .unwrap();
    assert!(put.starts_with("https://localhost:"), "{put}");
    assert!(get.starts_with("https://localhost:"), "{get}");
    (path_of(put), path_of(get))
}

async fn put(s: &TestServer, path: &str, ctype: &str, body: &[u8]) -> http::Resp {
    let len = body.len().to_string();
    request(
        addr(s),
        &data(s),
        "PUT",
        path,
        &[("content-type", ctype), ("content-length", &len)],
        body,
    )
    .await
}

async fn get(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> http::Resp {
    request(addr(s), &data(s), "GET", path, headers, b"").await
}

/// Files in `upload/files` and `upload/tmp`.
fn on_disk(s: &TestServer) -> (usize, usize) {
    let n = |d: &str| {
        std::fs::read_dir(data(s).join("upload").join(d))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    (n("files"), n("tmp"))
}

fn error_of(r: &Element) -> (String, Vec<String>) {
    let e = r.get_child("error", "jabber:client").expect("an error");
    let names = e.children().map(|c| c.name().to_string()).collect();
    (e.attr("type").unwrap_or("").to_string(), names)
}

#[tokio::test]
async fn a_photo_goes_up_and_comes_back_with_the_right_headers() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let body = b"0123456789";
    let (p, g) = slot(&mut a, "photo 1.jpg", body.len(), "image/jpeg").await;
    assert!(g.starts_with("/upload/"), "{g}");
    assert!(g.ends_with("/photo%201.jpg"), "{g}");
    let r = put(&s, &p, "image/jpeg", body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(on_disk(&s), (1, 0));

    // Anyone with the URL gets it (Bob's client, a browser), with its type and headers.
    let r = get(&s, &g, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(
        r.header("content-disposition"),
        Some("inline; filename*=UTF-8''photo%201.jpg")
    );
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let etag = r.header("etag").unwrap().to_string();

    // Revalidation, ranges, HEAD.
    let r = get(&s, &g, &[("if-none-match", &etag)]).await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(&s, &g, &[("range", "bytes=2-4")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"234");
    assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
    let r = get(&s, &g, &[("range", "bytes=-3")]).await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"789"[..]));
    let r = get(&s, &g, &[("range", "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    let r = request(addr(&s), &data(&s), "HEAD", &g, &[], b"").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("10"));

    // The same over HTTP/2.
    let r = request_h2(addr(&s), &data(&s), "GET", &g, &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &body[..]));
    // An upload over HTTP/2 too (clients such as OkHttp negotiate it).
    let (p2, g2) = slot(&mut a, "voice.ogg", 5, "audio/ogg").await;
    let r = request_h2(
        addr(&s),
        &data(&s),
        "PUT",
        &p2,
        &[("content-type", "audio/ogg"), ("content-length", "5")],
        b"hello",
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = request_h2(addr(&s), &data(&s), "GET", &g2, &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

    // CORS preflight for a web client's PUT.
    let r = request(
        addr(&s),
        &data(&s),
        "OPTIONS",
        &p,
        &[
            ("origin", "https://web.example"),
            ("access-control-request-method", "PUT"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PUT"));

    // Another name under the same id, or an unknown id: nothing.
    let other = format!("{}/other.jpg", g.rsplit_once('/').unwrap().0);
    assert_eq!(get(&s, &other, &[]).await.status, 404);
    let unknown = "/upload/0123456789abcdef0123456789abcdef/photo%201.jpg";
    assert_eq!(get(&s, unknown, &[]).await.status, 404);
}

#[tokio::test]
async fn what_a_browser_would_run_is_served_as_an_attachment() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let body = b"<script>alert(1)</script>";
    let (p, g) = slot(&mut a, "x.html", body.len(), "text/html").await;
    assert_eq!(put(&s, &p, "text/html", body).await.status, 201);
    let r = get(&s, &g, &[]).await;
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename*=UTF-8''x.html")
    );
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));
}

#[tokio::test]
async fn slot_requests_get_the_xeps_errors() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    // Too large: not-acceptable with <file-too-large><max-file-size/>.
    let r = slot_iq(&mut a, "big.bin", 1001, "application/octet-stream").await;
    let (typ, names) = error_of(&r);
    assert_eq!(typ, "modify");
    assert!(names.contains(&"not-acceptable".to_string()), "{}", xml(&r));
    let max = r
        .get_child("error", "jabber:client")
        .and_then(|e| e.get_child("file-too-large", UPLOAD))
        .and_then(|e| e.get_child("max-file-size", UPLOAD))
        .map(|e| e.text());
    assert_eq!(max.as_deref(), Some("1000"), "{}", xml(&r));
    // Malformed: bad-request.
    for (name, size, ctype) in [
        ("a/b", 1, "text/plain"),
        ("..", 1, "text/plain"),
        ("ok", 0, "text/plain"),
        ("ok", 1, "not a type"),
    ] {
        let r = slot_iq(&mut a, name, size, ctype).await;
        assert!(
            error_of(&r).1.contains(&"bad-request".to_string()),
            "{name}: {}",
            xml(&r)
        );
    }
    // The quota (2500): two files of 1000 fit, a third does not (resource-constraint, wait).
    for i in 0..2 {
        let (p, _) = slot(&mut a, &format!("f{i}"), 1000, "application/octet-stream").await;
        let r = put(&s, &p, "application/octet-stream", &[7u8; 1000]).await;
        assert_eq!(r.status, 201);
    }
    let r = slot_iq(&mut a, "f2", 1000, "application/octet-stream").await;
    assert_eq!(
        error_of(&r),
        (
            "wait".to_string(),
            vec!["resource-constraint".to_string(), "text".to_string()]
        )
    );
    // Still fits: 500 bytes.
    let (p, _) = slot(&mut a, "small", 500, "application/octet-stream").await;
    // Bob's quota is his own.
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    slot(&mut b, "f", 1000, "application/octet-stream").await;
    // The quota survives a restart: Alice's 2000 bytes are still counted.
    let s = s.restart().await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = slot_iq(&mut a, "f3", 1000, "application/octet-stream").await;
    assert!(error_of(&r).1.contains(&"resource-constraint".to_string()));
    // A slot handed out before the restart is still good (the key is kept in data_dir).
    let r = put(&s, &p, "application/octet-stream", &[1u8; 500]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let (p, g) = slot(&mut a, "note.txt", 10, "text/plain").await;
    let t = "text/plain";
    // Wrong size, either way.
    assert_eq!(put(&s, &p, t, b"012345678").await.status, 400);
    assert_eq!(put(&s, &p, t, b"0123456789A").await.status, 400);
    // Wrong type.
    assert_eq!(put(&s, &p, "text/html", b"0123456789").await.status, 400);
    // No Content-Length (chunked).
    let io = http::tls(addr(&s), &data(&s), &["http/1.1"]).await;
    let r = raw_exchange(
        io,
        &format!("PUT {p} HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 411"), "{r}");
    // Tampered terms or signature, or no signature at all.
    for (from, to) in [
        ("size=10", "size=11"),
        ("type=text%2Fplain", "type=text%2Fhtml"),
        ("owner=alice%40localhost", "owner=bob%40localhost"),
        ("&sig=", "&sig=00"),
        ("note.txt", "note.txu"),
    ] {
        let bad = p.replacen(from, to, 1);
        assert_ne!(bad, p);
        let r = put(&s, &bad, t, b"0123456789").await;
        assert!(matches!(r.status, 403 | 400), "{from}: {}", r.status);
    }
    let unsigned = p.split('?').next().unwrap().to_string();
    assert_eq!(put(&s, &unsigned, t, b"0123456789").await.status, 403);
    // Path traversal: the name never reaches the filesystem, the id is 32 hex digits.
    for path in [
        "/upload/../../etc/passwd",
        "/upload/..%2F..%2Fetc/passwd",
        "/upload/0123456789abcdef0123456789abcdef/..%2F..%2Fupload.key",
        "/upload/%2E%2E/upload.key",
    ] {
        let r = put(&s, path, t, b"0123456789").await;
        assert!(matches!(r.status, 403 | 404 | 400), "{path}: {}", r.status);
        assert_ne!(get(&s, path, &[]).await.status, 200, "{path}");
    }
    // Expired: a slot signed with the server's key whose time is up.
    let key = std::fs::read(data(&s).join("upload.key")).unwrap();
    let expired = herald_xep::upload::SlotTerms {
        id: "00112233445566778899aabbccddeeff".into(),
        filename: "old.txt".into(),
        size: 10,
        content_type: "text/plain".into(),
        owner: "alice@localhost".into(),
        expires: herald_server::http::upload::unix_now() - 1,
    };
    let ep = format!("{}?{}", expired.path(), expired.query(&key));
    assert_eq!(put(&s, &ep, t, b"0123456789").await.status, 403);
    // Nothing was stored by any of these.
    assert_eq!(on_disk(&s), (0, 0));
    assert_eq!(get(&s, &g, &[]).await.status, 404);
    // The right one works once; a second PUT is a conflict and changes nothing.
    assert_eq!(put(&s, &p, t, b"0123456789").await.status, 201);
    assert_eq!(put(&s, &p, t, b"ABCDEFGHIJ").await.status, 409);
    assert_eq!(get(&s, &g, &[]).await.body, b"0123456789");
    assert_eq!(on_disk(&s), (1, 0));
}

/// Writes `req` and reads until the server closes; the response text.
async fn raw_exchange<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: T,
    req: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    io.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough for these tests.
                if String::from_utf8_lossy(&out).contains("\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn abandoned_and_slow_uploads_leave_nothing_and_one_user_runs_few_at_once() {
    let s = server(|c| {
        c.upload.max_concurrent_per_user = 1;
        c.http.request_timeout = herald_server::config::Dur(Duration::from_millis(500));
    })
    .await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let (p1, g1) = slot(&mut a, "one.bin", 100, "application/octet-stream").await;
    let (p2, _) = slot(&mut a, "two.bin", 100, "application/octet-stream").await;
    let head = |p: &str| {
        format!("PUT {p} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: 100\r\n\r\n")
    };
    use tokio::io::AsyncWriteExt;
    // A PUT that sends half its body and stalls: it holds Alice's one upload…
    let mut stalled = http::tls(addr(&s), &data(&s), &["http/1.1"]).await;
    stalled.write_all(head(&p1).as_bytes()).await.unwrap();
    stalled.write_all(&[0u8; 50]).await.unwrap();
    stalled.flush().await.unwrap();
    wait_until("the upload started", || on_disk(&s).1 == 1).await;
    // …so a second one at the same time is refused (429), and nothing of it is kept.
    assert_eq!(
        put(&s, &p2, "application/octet-stream", &[1u8; 100])
            .await
            .status,
        429
    );
    // The stalled one is cut off after request_timeout (408) and its half file removed.
    let r = raw_exchange(stalled, "").await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    wait_until("the partial file removed", || on_disk(&s) == (0, 0)).await;
    // A client that goes away mid-body leaves nothing either.
    let mut gone = http::tls(addr(&s), &data(&s), &["http/1.1"]).await;
    gone.write_all(head(&p1).as_bytes()).await.unwrap();
    gone.write_all(&[0u8; 10]).await.unwrap();
    gone.flush().await.unwrap();
    wait_until("the upload started", || on_disk(&s).1 == 1).await;
    drop(gone);
    wait_until("the partial file removed", || on_disk(&s) == (0, 0)).await;
    // The slot is still good afterwards, and the user's upload slot was given back.
    assert_eq!(
        put(&s, &p2, "application/octet-stream", &[1u8; 100])
            .await
            .status,
        201
    );
    assert_eq!(
        put(&s, &p1, "application/octet-stream", &[2u8; 100])
            .await
            .status,
        201
    );
    assert_eq!(get(&s, &g1, &[]).await.body, vec![2u8; 100]);
}

#[tokio::test]
async fn slow_or_oversized_request_heads_and_too_many_connections_are_cut_off() {
    let s = server(|c| {
        c.http.request_timeout = herald_server::config::Dur(Duration::from_millis(500));
        c.http.max_header_bytes = 8192;
        c.http.max_connections = 3;
    })
    .await;
    // Oversized head: 431, never served, over HTTP/1.1 and HTTP/2 alike; a head just under
    // the limit is served.
    let big = "x".repeat(20_000);
    let io = http::tls(addr(&s), &data(&s), &["http/1.1"]).await;
    let r = raw_exchange(
        io,
        &format!("GET /health HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let r = http::request_h2(
        addr(&s),
        &data(&s),
        "GET",
        "/health",
        &[("x-big", &big)],
        b"",
    )
    .await;
    assert_eq!(r.status, 431);
    let fits = "x".repeat(7_000);
    assert_eq!(get(&s, "/health", &[("x-big", &fits)]).await.status, 200);
    let r = http::request_h2(
        addr(&s),
        &data(&s),
        "GET",
        "/health",
        &[("x-big", &fits)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    // Slowloris: half a head, then nothing: closed after request_timeout.
    let io = http::tls(addr(&s), &data(&s), &["http/1.1"]).await;
    let t = std::time::Instant::now();
    let r = raw_exchange(io, "GET /health HTTP/1.1\r\nhost: local").await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // max_connections: three held open, a fourth is closed at once; one freed, it works.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(http::tls(addr(&s), &data(&s), &["http/1.1"]).await);
    }
    wait_until("three connections counted", || {
        s.running.shared.http.open_connections(3) == 3
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(addr(&s)).await.unwrap();
    let mut tcp = tcp;
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut b)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(held.pop());
    wait_until("a connection freed", || {
        s.running.shared.http.open_connections(3) == 2
    })
    .await;
    assert_eq!(get(&s, "/health", &[]).await.status, 200);
}

#[tokio::test]
async fn expired_files_are_deleted_with_their_quota() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let (p, g) = slot(&mut a, "old.bin", 1000, "application/octet-stream").await;
    assert_eq!(
        put(&s, &p, "application/octet-stream", &[1u8; 1000])
            .await
            .status,
        201
    );
    let shared = &s.running.shared;
    let dir = shared.http.upload_dir.clone();
    let after = shared.cfg.upload.expire_after.0;
    let now = herald_server::http::upload::unix_now();
    let store = shared.store.clone();
    // Not yet expired: nothing goes.
    let n = herald_server::http::upload::purge(&*store, &dir, after, now).unwrap();
    assert_eq!(n, 0);
    // expire_after later: the file and its row go, and its bytes leave the quota.
    let n = herald_server::http::upload::purge(&*store, &dir, after, now + after.as_secs() + 1)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(on_disk(&s), (0, 0));
    assert_eq!(get(&s, &g, &[]).await.status, 404);
    assert_eq!(
        herald_store::UploadStore::upload_usage(&*store, "alice@localhost").unwrap(),
        0
    );
}

#[tokio::test]
async fn the_service_is_advertised_with_its_limit_only_when_served() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = ask(
        &mut a,
        "d",
        "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let q = r
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert!(q
        .children()
        .any(|f| f.name() == "feature" && f.attr("var") == Some(UPLOAD)));
    let form = q
        .get_child("x", "jabber:x:data")
        .expect("the XEP-0128 form");
    let fields = form_fields(form);
    assert_eq!(fields.get("FORM_TYPE").map(String::as_str), Some(UPLOAD));
    assert_eq!(
        fields.get("max-file-size").map(String::as_str),
        Some("1000")
    );

    // Without an HTTP listener: not advertised, and a request is service-unavailable.
    let s2 = TestServer::start().await;
    s2.add_user("alice", "pw");
    let mut a = RawClient::login(s2.c2s(), "alice", "pw", "r").await;
    let r = ask(
        &mut a,
        "d",
        "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(!xml(&r).contains(UPLOAD), "{}", xml(&r));
    let r = slot_iq(&mut a, "a.txt", 1, "text/plain").await;
    assert!(error_of(&r).1.contains(&"service-unavailable".to_string()));
}

#[tokio::test]
async fn a_put_beyond_a_quota_reached_since_the_slot_is_413_and_leaves_nothing() {
    let s = server(|_| {}).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let t = "application/octet-stream";
    // Three slots of 1000 are handed out while nothing is stored (quota 2500)…
    let mut slots = Vec::new();
    for i in 0..3 {
        slots.push(slot(&mut a, &format!("f{i}"), 1000, t).await);
    }
    // …two fill the quota, the third PUT no longer fits.
    for (p, _) in &slots[..2] {
        assert_eq!(put(&s, p, t, &[7u8; 1000]).await.status, 201);
    }
    let (p, g) = &slots[2];
    assert_eq!(put(&s, p, t, &[7u8; 1000]).await.status, 413);
    assert_eq!(on_disk(&s), (2, 0));
    assert_eq!(get(&s, g, &[]).await.status, 404);
}
