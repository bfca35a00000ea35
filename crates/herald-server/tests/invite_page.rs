//! The invite landing page (`/invite/TOKEN`) over HTTPS: what the invited person sees,
//! registering through its form (then logging in over XMPP), its refusals, token use
//! counting, escaping and the security headers. The browser test is the interop scenario
//! `invite_page_browser` (tests/interop/scenarios_invite.py).

mod common;
#[path = "common/http.rs"]
mod http;

use common::*;
use herald_store::Invite;

async fn server(f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.http.listen = Some("127.0.0.1:0".parse().unwrap());
        c.registration.enabled = true;
        c.registration.invite_only = true;
        c.registration.max_per_ip = 100;
        f(c)
    })
    .await
}

/// Stores an invite with `token` the way `herald invite create` does.
fn invite(
    s: &TestServer,
    id: &str,
    token: &str,
    for_user: Option<&str>,
    expires: Option<i64>,
    uses: u32,
) {
    let inv = Invite {
        id: id.into(),
        for_user: for_user.map(str::to_string),
        created: herald_server::features::register::now_millis(),
        expires,
        uses_left: uses,
    };
    s.running
        .shared
        .store
        .create_invite(
            &herald_xep::register::token_hash(token),
            &inv,
            100,
            herald_server::features::register::now_millis(),
        )
        .unwrap();
}

async fn get(s: &TestServer, path: &str) -> http::Resp {
    let addr = s.running.http_addr.unwrap();
    http::request(addr, &s.running.shared.cfg.data_dir, "GET", path, &[], b"").await
}

async fn post(s: &TestServer, path: &str, form: &str, extra: &[(&str, &str)]) -> http::Resp {
    let addr = s.running.http_addr.unwrap();
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(extra);
    http::request(
        addr,
        &s.running.shared.cfg.data_dir,
        "POST",
        path,
        &h,
        form.as_bytes(),
    )
    .await
}

fn text(r: &http::Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn uses_left(s: &TestServer, token: &str) -> u32 {
    s.running
        .shared
        .store
        .invite_by_token(&herald_xep::register::token_hash(token))
        .unwrap()
        .unwrap()
        .uses_left
}

#[tokio::test]
async fn the_page_shows_how_to_join_and_the_form_creates_an_account() {
    let s = server(|_| {}).await;
    invite(&s, "i1", "tok-any", None, None, 2);
    let r = get(&s, "/invite/tok-any").await;
    assert_eq!(r.status, 200);
    let page = text(&r);
    assert!(
        page.contains("xmpp:localhost?register;preauth=tok-any"),
        "{page}"
    );
    assert!(page.contains("<svg"), "an inline QR code: {page}");
    for url in [
        "https://conversations.im/",
        "https://monal-im.org/",
        "https://siskin.im/",
        "https://gajim.org/",
        "https://dino.im/",
    ] {
        assert!(page.contains(url), "{url} in {page}");
    }
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert!(!page.contains("<script"), "{page}");
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script allowed: {csp}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = post(
        &s,
        "/invite/tok-any",
        "username=Newbie&password=s3cret",
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert!(text(&r).contains("newbie@localhost"), "{}", text(&r));
    assert_eq!(uses_left(&s, "tok-any"), 1);
    // The account works over XMPP with the password chosen on the page.
    RawClient::login(s.c2s(), "newbie", "s3cret", "phone").await;

    // The same name again: conflict, and the invite's use is not taken.
    let r = post(&s, "/invite/tok-any", "username=newbie&password=x", &[]).await;
    assert_eq!(r.status, 409, "{}", text(&r));
    assert!(text(&r).contains("already exists"), "{}", text(&r));
    assert_eq!(uses_left(&s, "tok-any"), 1);

    // The last use, then the invite is used up: 410 for the page and the form.
    let r = post(&s, "/invite/tok-any", "username=second&password=pw2", &[]).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(uses_left(&s, "tok-any"), 0);
    assert_eq!(get(&s, "/invite/tok-any").await.status, 410);
    let r = post(&s, "/invite/tok-any", "username=third&password=pw3", &[]).await;
    assert_eq!(r.status, 410, "{}", text(&r));
    RawClient::login(s.c2s(), "second", "pw2", "phone").await;
}

#[tokio::test]
async fn unknown_and_expired_tokens_get_clear_pages() {
    let s = server(|_| {}).await;
    let now = herald_server::features::register::now_millis();
    invite(&s, "old", "tok-old", None, Some(now - 1), 5);
    let r = get(&s, "/invite/tok-old").await;
    assert_eq!(r.status, 410);
    assert!(text(&r).contains("expired"), "{}", text(&r));
    assert!(!text(&r).contains("<form"), "{}", text(&r));
    let r = get(&s, "/invite/no-such-token").await;
    assert_eq!(r.status, 404);
    assert!(text(&r).contains("not valid"), "{}", text(&r));
    let r = post(&s, "/invite/no-such-token", "username=x&password=y", &[]).await;
    assert_eq!(r.status, 404);
    let long = format!("/invite/{}", "a".repeat(500));
    assert_eq!(get(&s, &long).await.status, 404);
}

#[tokio::test]
async fn the_form_refuses_bad_input_with_the_registration_rules() {
    let s = server(|c| c.registration.max_username_chars = 10).await;
    invite(&s, "i1", "tok", None, None, 5);
    invite(&s, "named", "tok-named", Some("dave@localhost"), None, 1);
    // Name preparation and length, empty password.
    let r = post(&s, "/invite/tok", "username=a%40b&password=pw", &[]).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = post(
        &s,
        "/invite/tok",
        "username=muchtoolongname&password=pw",
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = post(&s, "/invite/tok", "username=ok&password=", &[]).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    // What was typed is shown again, escaped.
    let r = post(&s, "/invite/tok", "username=%3Cb%3E%22x&password=", &[]).await;
    assert_eq!(r.status, 400);
    let page = text(&r);
    assert!(page.contains("value=\"&lt;b&gt;&quot;x\""), "{page}");
    assert!(!page.contains("<b>\"x"), "{page}");
    assert!(page.contains("id=\"error\""), "{page}");
    assert_eq!(uses_left(&s, "tok"), 5, "refused forms take no use");
    // A --for invite registers only its name; the page shows that address.
    let page = text(&get(&s, "/invite/tok-named").await);
    assert!(page.contains("dave@localhost"), "{page}");
    assert!(
        page.contains("xmpp:dave@localhost?register;preauth=tok-named"),
        "{page}"
    );
    let r = post(&s, "/invite/tok-named", "username=eve&password=pw", &[]).await;
    assert_eq!(r.status, 403, "{}", text(&r));
    let r = post(&s, "/invite/tok-named", "username=dave&password=pw", &[]).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    // Another site's form is refused before anything is created.
    let r = post(
        &s,
        "/invite/tok",
        "username=csrf&password=pw",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post(
        &s,
        "/invite/tok",
        "username=csrf&password=pw",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post(
        &s,
        "/invite/tok",
        "username=csrf&password=pw",
        &[("origin", "null")],
    )
    .await;
    assert_eq!(r.status, 403, "an opaque origin without Sec-Fetch-Site");
    assert_eq!(uses_left(&s, "tok"), 5);
    // What chromium sends for the page's own form (Origin null under no-referrer): passes.
    let addr = s.running.http_addr.unwrap();
    let r = http::request_h2(
        addr,
        &s.running.shared.cfg.data_dir,
        "POST",
        "/invite/tok",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ],
        b"username=viah2&password=pw",
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(uses_left(&s, "tok"), 4);
    // A body beyond what the registration limits allow (10 chars, 1024 bytes): 413.
    let big = format!("username=x&password={}", "p".repeat(10_000));
    assert_eq!(post(&s, "/invite/tok", &big, &[]).await.status, 413);
}

#[tokio::test]
async fn the_form_counts_against_the_per_address_limit() {
    let s = server(|c| c.registration.max_per_ip = 1).await;
    invite(&s, "i1", "tok", None, None, 5);
    let r = post(&s, "/invite/tok", "username=one&password=pw", &[]).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let r = post(&s, "/invite/tok", "username=two&password=pw", &[]).await;
    assert_eq!(r.status, 429, "{}", text(&r));
    assert_eq!(uses_left(&s, "tok"), 4);
}

#[tokio::test]
async fn with_registration_off_the_page_has_no_form() {
    let s = server(|c| c.registration.enabled = false).await;
    invite(&s, "i1", "tok", None, None, 1);
    let r = get(&s, "/invite/tok").await;
    assert_eq!(r.status, 200);
    assert!(!text(&r).contains("<form"), "{}", text(&r));
    let r = post(&s, "/invite/tok", "username=x&password=pw", &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(uses_left(&s, "tok"), 1);
}
