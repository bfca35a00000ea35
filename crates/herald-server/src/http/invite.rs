//! The invite landing page (`/invite/TOKEN`, issue 17 item 5): what a person given an
//! invite link opens on their phone. It shows the account address (for `--for` invites) or
//! the domain, a QR code of the XEP-0401 `xmpp:` URI for a client on another device, links
//! to install common clients and, when `[registration] enabled`, a form to pick a username
//! and password.
//!
//! The form goes through [`crate::features::register::create`], the same checks as
//! in-band registration (invite-only, name preparation, lengths, the per-address limit, the
//! invite's uses). CSRF: the token in the path is the authorisation; only POST creates, and
//! a request whose `Origin` is another site (or `Sec-Fetch-Site` says cross-site) is
//! refused. Unknown tokens are 404, expired or used-up ones 410. Plain HTML and CSS, no
//! script: the CSP allows only the page's own stylesheet (by hash) and no script at all.
//!
//! Must not: decide registration rules (that is `features::register`) or keep tokens.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_proto::error::StanzaErrorCondition;
use herald_store::{roles, Invite};
use serde::Deserialize;

use crate::features::register::{self, now_millis};
use crate::xep::register as xr;
use crate::Shared;

/// Tokens `herald invite create` makes are 22 characters; anything much longer is not one
/// and is refused before touching the store.
const MAX_TOKEN_CHARS: usize = 128;

/// Largest form body accepted: a username of `max_username_chars` (up to 4 bytes each) and
/// a password of `max_password_bytes`, every byte percent-encoded, plus field names; beyond:
/// 413. Follows the registration limits, so it needs no key of its own.
pub fn max_form_bytes(reg: &crate::config::RegistrationConfig) -> usize {
    reg.max_username_chars
        .saturating_mul(4)
        .saturating_add(reg.max_password_bytes)
        .saturating_mul(3)
        .saturating_add(256)
}

/// Clients to install: name, platforms, official site.
const CLIENTS: &[(&str, &str, &str)] = &[
    ("Conversations", "Android", "https://conversations.im/"),
    ("Monal", "iPhone, iPad, Mac", "https://monal-im.org/"),
    ("Siskin IM", "iPhone, iPad", "https://siskin.im/"),
    ("Gajim", "Windows, Linux", "https://gajim.org/"),
    ("Dino", "Linux", "https://dino.im/"),
];

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:1rem auto;\
padding:0 1rem;color:#222;background:#fafafa;line-height:1.4}\
h1{font-size:1.5rem}.addr{font-weight:bold;word-break:break-all}\
.qr svg{width:14rem;height:14rem;display:block;margin:1rem 0}\
.open{display:inline-block;padding:.6rem 1rem;background:#2a6;color:#fff;border-radius:.3rem;\
text-decoration:none}ul{padding-left:1.2rem}label{display:block;margin:.6rem 0 .2rem}\
input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}\
button{margin-top:1rem;font-size:1rem;padding:.5rem 1rem}\
.error{background:#fdd;border:1px solid #c66;padding:.5rem}\
.ok{background:#dfd;border:1px solid #6a6;padding:.5rem}";

/// The CSP: no script at all, the one inline stylesheet by its hash, no framing, forms
/// only to this origin.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let h = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(CSS));
        format!(
            "default-src 'none'; style-src 'sha256-{h}'; img-src 'self' data:; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
    })
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
        escape(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(csp()) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page carries a live token: no cache keeps it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unknown() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Invitation not found",
        "<h1>Invitation not found</h1><p class=\"error\">This invitation link is not valid. \
         Check that you copied all of it, or ask the person who invited you for a new one.</p>",
    )
}

fn gone() -> Response {
    page(
        StatusCode::GONE,
        "Invitation expired",
        "<h1>This invitation has expired or was already used</h1><p class=\"error\">Ask the \
         person who invited you for a new invitation link.</p>",
    )
}

/// The invite behind `token`: Err is the page to answer instead (404, 410, 500).
async fn lookup(shared: &Arc<Shared>, token: &str) -> Result<Invite, Response> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(unknown());
    }
    let hash = xr::token_hash(token);
    let found = shared
        .db(move |s: &roles::Invites| s.invite_by_token(&hash))
        .await;
    match found {
        Ok(Some(inv)) if inv.usable(now_millis()) => Ok(inv),
        Ok(Some(_)) => Err(gone()),
        Ok(None) => Err(unknown()),
        Err(e) => {
            tracing::error!(error = %e, "invite lookup failed");
            Err(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "<h1>Something went wrong</h1><p>Try again later.</p>",
            ))
        }
    }
}

/// The invite's landing page with, when registration is on, the form (`error` and the
/// username typed are shown again after a refused submission).
fn landing(
    shared: &Shared,
    inv: &Invite,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
    typed: &str,
) -> Response {
    let domain = &shared.cfg.domain;
    let uri_jid = inv.for_user.as_deref().unwrap_or(domain);
    let uri = xr::invite_uri(uri_jid, token);
    let qr = match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .quiet_zone(true)
                .build();
            // The renderer writes a standalone file; inline SVG needs no XML declaration.
            let svg = svg.find("<svg").map(|i| &svg[i..]).unwrap_or("");
            format!("<div class=\"qr\" role=\"img\" aria-label=\"QR code of the invitation\">{svg}</div>")
        }
        Err(_) => String::new(),
    };
    let what = match &inv.for_user {
        Some(u) => format!(
            "<p>You are invited to use the chat address <span class=\"addr\" id=\"address\">{}</span>.</p>",
            escape(u)
        ),
        None => format!(
            "<p>You are invited to create a chat account on <span class=\"addr\" id=\"address\">{}</span>.</p>",
            escape(domain)
        ),
    };
    let clients: String = CLIENTS
        .iter()
        .map(|(name, platforms, url)| {
            format!(
                "<li><a href=\"{}\" rel=\"noreferrer\">{}</a> ({})</li>",
                escape(url),
                escape(name),
                escape(platforms)
            )
        })
        .collect();
    let form = if shared.cfg.registration.enabled {
        let err = error
            .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
            .unwrap_or_default();
        let (value, fixed) = match &inv.for_user {
            Some(u) => (u.split('@').next().unwrap_or("").to_string(), " readonly"),
            None => (typed.to_string(), ""),
        };
        format!(
            "<h2>Or create your account here</h2>{err}\
             <form method=\"post\" action=\"/invite/{tok}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" value=\"{v}\" required maxlength=\"{max_u}\" autocomplete=\"username\"{fixed}>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"new-password\">\
             <button type=\"submit\" id=\"create\">Create account</button></form>\
             <p>Then log in with your client using <b>username@{d}</b> and this password.</p>",
            tok = escape(token),
            v = escape(&value),
            max_u = shared.cfg.registration.max_username_chars,
            d = escape(domain),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>You have been invited to chat</h1>{what}\
         <h2>On this phone</h2><ol><li>Install a chat app:<ul>{clients}</ul></li>\
         <li><a class=\"open\" id=\"open\" href=\"{uri}\">Open the invitation in the app</a></li></ol>\
         <h2>On another device</h2><p>Scan this code with the app:</p>{qr}{form}",
        uri = escape(&uri),
    );
    page(status, "Invitation", &body)
}

/// `GET /invite/TOKEN`.
pub async fn get(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    match lookup(&shared, &token).await {
        Ok(inv) => landing(&shared, &inv, &token, StatusCode::OK, None, ""),
        Err(r) => r,
    }
}

/// The registration form's fields.
#[derive(Deserialize)]
pub struct Fields {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Whether the request comes from another site. Browsers that send `Sec-Fetch-Site` are
/// judged by it alone: with this page's `no-referrer` policy chromium sends `Origin: null`
/// even for its own form. Others by `Origin`, which must name the host the request was sent
/// to (`Host`, or over HTTP/2 the URI's authority). Requests with neither (non-browser
/// clients) pass: the token authorises them.
fn cross_site(headers: &HeaderMap, uri: &Uri) -> bool {
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return true;
    };
    let same =
        text("host") == Some(authority) || uri.authority().map(|a| a.as_str()) == Some(authority);
    !same
}

/// `POST /invite/TOKEN`: creates the account.
pub async fn post(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    if cross_site(&headers, &uri) {
        tracing::info!(%peer, "invite form refused: cross-site request");
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            "<h1>Refused</h1><p class=\"error\">This form can only be sent from its own page.</p>",
        );
    }
    let inv = match lookup(&shared, &token).await {
        Ok(inv) => inv,
        Err(r) => return r,
    };
    if !shared.cfg.registration.enabled {
        return page(
            StatusCode::FORBIDDEN,
            "Registration closed",
            "<h1>Registration is closed</h1><p class=\"error\">This server does not create \
             accounts on the web. Open the invitation in a chat app instead.</p>",
        );
    }
    let domain = shared.cfg.domain.clone();
    match register::create(
        &shared,
        peer.ip(),
        &domain,
        &f.username,
        f.password,
        Some(&inv),
    )
    .await
    {
        Ok(user) => page(
            StatusCode::CREATED,
            "Account created",
            &format!(
                "<h1>Your account is ready</h1><p class=\"ok\">Your chat address is \
                 <span class=\"addr\" id=\"address\">{}</span>.</p><p>Install one of these apps \
                 and log in with this address and the password you chose:</p><ul>{}</ul>",
                escape(&user),
                CLIENTS
                    .iter()
                    .map(|(name, platforms, url)| format!(
                        "<li><a href=\"{}\" rel=\"noreferrer\">{}</a> ({})</li>",
                        escape(url),
                        escape(name),
                        escape(platforms)
                    ))
                    .collect::<String>()
            ),
        ),
        Err(r) if r.invite_gone => gone(),
        Err(r) => {
            let status = match r.condition {
                // RFC 9110 §15.6.4: the server cannot handle it now (its store), not the
                // client's rate (429) nor a fault in its request.
                _ if r.store_failed => StatusCode::SERVICE_UNAVAILABLE,
                StanzaErrorCondition::Conflict => StatusCode::CONFLICT,
                StanzaErrorCondition::Forbidden => StatusCode::FORBIDDEN,
                StanzaErrorCondition::ResourceConstraint => StatusCode::TOO_MANY_REQUESTS,
                StanzaErrorCondition::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            let text = r.text.unwrap_or("The account could not be created");
            landing(&shared, &inv, &token, status, Some(text), &f.username)
        }
    }
}
