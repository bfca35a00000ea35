//! c2s stream negotiation (RFC 6120 §4–§7): stream headers, STARTTLS, SASL (SCRAM-SHA-256,
//! SCRAM-SHA-1, PLAIN) and resource binding, up to a bound session. The SCRAM and PLAIN
//! mechanics are herald-proto's; this module only drives them over the connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use herald_proto::error::{StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::{BareJid, FullJid};
use herald_proto::ns;
use herald_proto::sasl::{self, Mechanism, ScramHash, ScramKeys, ScramServer};
use herald_proto::stream::{StreamEvent, StreamHeader, StreamNs, INTERNAL_NS};
use herald_proto::Element;
use herald_store::roles;
use herald_store::{Credentials, ScramRecord};
use tokio::time::Instant;

use crate::conn::{self, Conn, ConnError};
use crate::msg::SessionMsg;
use crate::stanza;
use crate::Shared;

/// What negotiation produced.
pub enum Outcome {
    /// A resource was requested: bind it (the caller answers the bind IQ).
    Bind {
        /// The authenticated account.
        user: BareJid,
        /// The bind request.
        request: Element,
        /// The stream.
        conn: Box<Conn>,
    },
    /// XEP-0198: the connection was handed to a hibernated session.
    Resumed,
    /// The stream ended (error already sent or peer closed).
    Closed,
}

fn serr(c: StreamErrorCondition, text: &str) -> ConnError {
    ConnError::Stream(StreamError::new(c, Some(text.to_string())))
}

/// Negotiates a c2s stream until a bind or resume request, or failure.
pub async fn negotiate(shared: &Arc<Shared>, mut conn: Conn) -> Outcome {
    let deadline = Instant::now() + shared.cfg.c2s.negotiation_timeout.0;
    let mut user: Option<BareJid> = None;
    let mut failures = 0u32;
    let mut restart = true;
    loop {
        // One iteration per stream (a restart follows STARTTLS and SASL success), or per
        // failed resumption (the same stream goes on).
        let step = if restart {
            one_stream(shared, &mut conn, deadline, &mut user, &mut failures).await
        } else {
            elements(shared, &mut conn, deadline, &mut user, &mut failures).await
        };
        restart = true;
        match step {
            Ok(Step::Restart) => continue,
            Ok(Step::StartTls) => {
                let acceptor = conn::acceptor(&shared.tls);
                match tokio::time::timeout_at(deadline, conn.start_tls(&acceptor)).await {
                    Ok(Ok(c)) => {
                        tracing::Span::current().record("tls", true);
                        conn = c;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return Outcome::Closed;
                    }
                    Err(_) => return Outcome::Closed,
                }
            }
            Ok(Step::Bind(request)) => {
                let Some(user) = user else {
                    return Outcome::Closed;
                };
                return Outcome::Bind {
                    user,
                    request,
                    conn: Box::new(conn),
                };
            }
            Ok(Step::Resume(request)) => {
                let Some(u) = user.clone() else {
                    return Outcome::Closed;
                };
                match try_resume(shared, &u, &request, conn).await {
                    Ok(()) => return Outcome::Resumed,
                    Err(c) => {
                        conn = c;
                        restart = false;
                    }
                }
            }
            Ok(Step::Closed) => {
                conn.close().await;
                return Outcome::Closed;
            }
            Err(ConnError::Stream(e)) => {
                tracing::debug!(condition = e.condition.as_str(), text = ?e.text, "stream error");
                let from = conn.domain.clone();
                conn.fail(&from, &e).await;
                return Outcome::Closed;
            }
            Err(ConnError::Timeout) => {
                let e = StreamError::new(StreamErrorCondition::ConnectionTimeout, None);
                let from = conn.domain.clone();
                conn.fail(&from, &e).await;
                return Outcome::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection lost during negotiation");
                return Outcome::Closed;
            }
        }
    }
}

enum Step {
    Restart,
    StartTls,
    Bind(Element),
    Resume(Element),
    Closed,
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Checks an incoming stream header (RFC 6120 §4.7, §4.9.3); returns the local domain asked for.
pub fn check_header(
    h: &StreamHeader,
    expect: StreamNs,
    cfg: &crate::Config,
) -> Result<String, ConnError> {
    if h.ns != Some(expect) {
        return Err(serr(
            StreamErrorCondition::InvalidNamespace,
            "wrong default namespace for this port",
        ));
    }
    let domain = match h.to.as_deref() {
        Some(to) if cfg.is_local(to) => cfg
            .local_domains()
            .into_iter()
            .find(|d| d.eq_ignore_ascii_case(to))
            .unwrap_or_else(|| to.to_string()),
        Some(_) => {
            return Err(serr(
                StreamErrorCondition::HostUnknown,
                "this server does not serve that domain",
            ))
        }
        None => {
            return Err(serr(
                StreamErrorCondition::HostUnknown,
                "the stream header has no 'to'",
            ))
        }
    };
    let major = h
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.unwrap_or(0) < 1 {
        return Err(serr(
            StreamErrorCondition::UnsupportedVersion,
            "XMPP 1.0 is required",
        ));
    }
    Ok(domain)
}

async fn one_stream(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    deadline: Instant,
    user: &mut Option<BareJid>,
    failures: &mut u32,
) -> Result<Step, ConnError> {
    let header = match conn.next_event(remaining(deadline)).await? {
        StreamEvent::Header(h) => h,
        StreamEvent::End => return Ok(Step::Closed),
        StreamEvent::Stanza(_) => {
            return Err(serr(
                StreamErrorCondition::NotWellFormed,
                "expected a stream header",
            ))
        }
    };
    let id = conn::new_stream_id();
    // RFC 6120 §4.9.1.3: send our header before any stream error.
    let to = header.from.clone();
    let domain = check_header(&header, StreamNs::Client, &shared.cfg)?;
    if let Some(u) = user.as_ref() {
        if !u.domain().as_str().eq_ignore_ascii_case(&domain) {
            return Err(serr(
                StreamErrorCondition::HostUnknown,
                "the restarted stream changed domain",
            ));
        }
    }
    conn.domain = domain.clone();

    let require_tls = shared.cfg.c2s.require_encryption;
    let tls = conn.is_tls();
    let mut features = Element::bare("features", ns::STREAM);
    let authed = user.is_some();
    if !authed {
        if !tls {
            let mut st = Element::bare("starttls", ns::TLS);
            if require_tls {
                st.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(st);
        }
        if tls || !require_tls {
            features.append_child(mechanisms(tls || !require_tls));
        }
    } else {
        features.append_child(Element::bare("bind", ns::BIND));
        let mut sess = Element::bare("session", ns::SESSION);
        sess.append_child(Element::bare("optional", ns::SESSION));
        features.append_child(sess);
        features.append_child(Element::bare("sm", ns::SM));
        features.append_child(Element::bare("csi", ns::CSI));
        features.append_child(Element::bare("ver", ns::ROSTERVER));
    }
    conn.send_header_and_features(&domain, to.as_deref(), &id, &features)
        .await?;
    elements(shared, conn, deadline, user, failures).await
}

async fn elements(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    deadline: Instant,
    user: &mut Option<BareJid>,
    failures: &mut u32,
) -> Result<Step, ConnError> {
    let require_tls = shared.cfg.c2s.require_encryption;
    let tls = conn.is_tls();
    let authed = user.is_some();
    loop {
        let el = match conn.next_event(remaining(deadline)).await? {
            StreamEvent::Stanza(el) => el,
            StreamEvent::End => return Ok(Step::Closed),
            StreamEvent::Header(_) => {
                return Err(serr(
                    StreamErrorCondition::NotWellFormed,
                    "unexpected stream restart",
                ))
            }
        };
        if !authed && !tls && el.is("starttls", ns::TLS) {
            conn.send(&Element::bare("proceed", ns::TLS)).await?;
            return Ok(Step::StartTls);
        }
        if !authed && el.is("auth", ns::SASL) {
            if !tls && require_tls {
                // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
                sasl_failure(conn, "encryption-required", None).await?;
                continue;
            }
            match sasl_exchange(shared, conn, &el, tls || !require_tls, deadline).await? {
                Some(jid) => {
                    tracing::info!(user = %jid, "authenticated");
                    shared.metrics.logins.fetch_add(1, Ordering::Relaxed);
                    *user = Some(jid);
                    conn.restart();
                    return Ok(Step::Restart);
                }
                None => {
                    *failures += 1;
                    shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %conn.peer, failures = *failures, "authentication failed");
                    if *failures >= shared.cfg.c2s.max_auth_failures {
                        return Err(serr(
                            StreamErrorCondition::PolicyViolation,
                            "too many failed authentication attempts",
                        ));
                    }
                    continue;
                }
            }
        }
        if authed && stanza::kind(&el) == Some(stanza::Kind::Iq) {
            if let Some(p) = stanza::payload(&el) {
                if p.is("bind", ns::BIND) && stanza::typ(&el) == "set" {
                    return Ok(Step::Bind(el));
                }
            }
            // Anything else before binding: RFC 6120 §7.1 — not yet allowed.
            if let Some(reply) = stanza::error(
                &el,
                StanzaErrorCondition::NotAllowed,
                Some("bind a resource first"),
            ) {
                conn.send(&reply).await?;
            }
            continue;
        }
        if authed && el.is("resume", ns::SM) {
            return Ok(Step::Resume(el));
        }
        if authed && el.is("enable", ns::SM) {
            // XEP-0198 §3: enabling before binding is an error.
            let mut f = Element::bare("failed", ns::SM);
            f.append_child(Element::bare("unexpected-request", ns::STANZAS_ERR));
            conn.send(&f).await?;
            continue;
        }
        if stanza::kind(&el).is_some() {
            return Err(serr(
                StreamErrorCondition::NotAuthorized,
                "authenticate first",
            ));
        }
        return Err(serr(
            StreamErrorCondition::UnsupportedStanzaType,
            "unexpected element during negotiation",
        ));
    }
}

fn mechanisms(plain_ok: bool) -> Element {
    let mut m = Element::bare("mechanisms", ns::SASL);
    let mut list = vec![Mechanism::ScramSha256, Mechanism::ScramSha1];
    if plain_ok {
        list.push(Mechanism::Plain);
    }
    for mech in list {
        m.append_child(stanza::text("mechanism", ns::SASL, mech.name()));
    }
    m
}

async fn sasl_failure(conn: &mut Conn, cond: &str, text: Option<&str>) -> Result<(), ConnError> {
    let mut f = Element::bare("failure", ns::SASL);
    f.append_child(Element::bare(cond, ns::SASL));
    if let Some(t) = text {
        f.append_child(stanza::text("text", ns::SASL, t));
    }
    conn.send(&f).await
}

fn b64(data: &[u8]) -> String {
    if data.is_empty() {
        // RFC 6120 §6.4.2: empty data is sent as '='.
        "=".into()
    } else {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

fn unb64(el: &Element) -> Option<Vec<u8>> {
    let t = el.text();
    let t = t.trim();
    if t.is_empty() || t == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(t).ok()
}

fn to_keys(hash: ScramHash, r: &ScramRecord) -> ScramKeys {
    ScramKeys {
        hash,
        salt: r.salt.clone(),
        iterations: r.iterations,
        stored_key: r.stored_key.clone(),
        server_key: r.server_key.clone(),
    }
}

async fn lookup(shared: &Arc<Shared>, user: &str) -> Option<Credentials> {
    let u = user.to_string();
    match shared.db_read(|s: &roles::Accounts| s.credentials(&u)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "credential lookup failed");
            None
        }
    }
}

/// Returns Some(jid) on success; None after a (delayed) failure was sent.
async fn sasl_exchange(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    auth: &Element,
    plain_ok: bool,
    deadline: Instant,
) -> Result<Option<BareJid>, ConnError> {
    let domain = conn.domain.clone();
    let delay = shared.cfg.c2s.auth_failure_delay.0;
    let mech = auth.attr("mechanism").and_then(Mechanism::from_name);
    let Some(initial) = unb64(auth) else {
        sasl_failure(conn, "incorrect-encoding", None).await?;
        return Ok(None);
    };
    let fail = |cond: &'static str| (cond, true);
    let result: Result<BareJid, (&'static str, bool)> = match mech {
        None => Err(("invalid-mechanism", false)),
        Some(Mechanism::Plain) if !plain_ok => Err(("invalid-mechanism", false)),
        Some(Mechanism::Plain) => match sasl::parse_plain(&initial) {
            Err(e) => Err((e.condition(), false)),
            Ok((authzid, authcid, password)) => match account_jid(&authcid, &domain) {
                None => Err(fail("not-authorized")),
                Some(jid) => {
                    let creds = lookup(shared, &jid.to_string()).await;
                    let ok = creds
                        .map(|c| {
                            sasl::verify_password(&to_keys(ScramHash::Sha256, &c.sha256), &password)
                        })
                        .unwrap_or(false);
                    if !ok {
                        Err(fail("not-authorized"))
                    } else if !authzid_ok(authzid.as_deref(), &jid) {
                        Err(fail("invalid-authzid"))
                    } else {
                        conn.send(&Element::bare("success", ns::SASL)).await?;
                        Ok(jid)
                    }
                }
            },
        },
        Some(m) => {
            let hash = if m == Mechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha1
            };
            scram(shared, conn, hash, &initial, &domain, deadline).await?
        }
    };
    match result {
        Ok(jid) => Ok(Some(jid)),
        Err((cond, delayed)) => {
            if delayed {
                // Slow down password guessing; the session task is the only one waiting.
                tokio::time::sleep(delay).await;
            }
            sasl_failure(conn, cond, None).await?;
            Ok(None)
        }
    }
}

async fn scram(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    hash: ScramHash,
    first: &[u8],
    domain: &str,
    deadline: Instant,
) -> Result<Result<BareJid, (&'static str, bool)>, ConnError> {
    let mut server = ScramServer::new(hash);
    let (username, authzid) = match server.client_first(first) {
        Ok(v) => v,
        Err(e) => return Ok(Err((e.condition(), false))),
    };
    let jid = account_jid(&username, domain);
    let keys = match &jid {
        Some(j) => lookup(shared, &j.to_string()).await.map(|c| match hash {
            ScramHash::Sha1 => to_keys(hash, &c.sha1),
            ScramHash::Sha256 => to_keys(hash, &c.sha256),
        }),
        None => None,
    };
    let known = keys.is_some();
    let challenge = server.server_first(keys);
    let mut ch = Element::bare("challenge", ns::SASL);
    ch.append_text(b64(&challenge));
    conn.send(&ch).await?;
    let resp = {
        match conn.next_event(remaining(deadline)).await? {
            StreamEvent::Stanza(el) if el.is("response", ns::SASL) => el,
            StreamEvent::Stanza(el) if el.is("abort", ns::SASL) => {
                return Ok(Err(("aborted", false)));
            }
            StreamEvent::End => return Err(ConnError::Closed),
            _ => {
                return Err(serr(
                    StreamErrorCondition::PolicyViolation,
                    "expected a SASL response",
                ))
            }
        }
    };
    let Some(data) = unb64(&resp) else {
        return Ok(Err(("incorrect-encoding", false)));
    };
    match server.client_final(&data) {
        Ok(final_msg) if known => {
            let Some(jid) = jid else {
                return Ok(Err(("not-authorized", true)));
            };
            if !authzid_ok(authzid.as_deref(), &jid) {
                return Ok(Err(("invalid-authzid", true)));
            }
            let mut s = Element::bare("success", ns::SASL);
            s.append_text(b64(&final_msg));
            conn.send(&s).await?;
            Ok(Ok(jid))
        }
        Ok(_) => Ok(Err(("not-authorized", true))),
        Err(e) => Ok(Err((e.condition(), true))),
    }
}

fn account_jid(username: &str, domain: &str) -> Option<BareJid> {
    if username.is_empty() || username.contains('@') {
        return None;
    }
    BareJid::new(&format!("{username}@{domain}")).ok()
}

fn authzid_ok(authzid: Option<&str>, jid: &BareJid) -> bool {
    match authzid {
        None | Some("") => true,
        Some(a) => BareJid::new(a).map(|b| &b == jid).unwrap_or(false),
    }
}

/// The full JID a bind request asks for (RFC 6120 §7.6): the requested resource after
/// resourceprep, or a generated one.
pub fn bind_jid(user: &BareJid, request: &Element) -> Result<FullJid, StanzaErrorCondition> {
    let requested = stanza::payload(request)
        .and_then(|b| b.get_child("resource", ns::BIND))
        .map(|r| r.text())
        .filter(|r| !r.trim().is_empty());
    match requested {
        Some(r) => user
            .with_resource_str(r.trim())
            .map_err(|_| StanzaErrorCondition::BadRequest),
        None => {
            let gen = format!("herald-{}", &conn::new_stream_id()[..12]);
            user.with_resource_str(&gen)
                .map_err(|_| StanzaErrorCondition::InternalServerError)
        }
    }
}

/// The bind result IQ.
pub fn bind_result(request: &Element, jid: &FullJid) -> Element {
    let mut bind = Element::bare("bind", ns::BIND);
    bind.append_child(stanza::text("jid", ns::BIND, jid.to_string()));
    let mut r = stanza::new("iq", INTERNAL_NS, &[("type", "result")]);
    if let Some(id) = request.attr("id") {
        stanza::set(&mut r, "id", id);
    }
    r.append_child(bind);
    r
}

/// XEP-0198 §5: tries to hand `conn` to the hibernated session `previd` of `user`.
/// Err(conn) when it cannot: `<failed/>` has been sent and the stream may go on to bind.
/// Ok(()) when the session took the connection (or the connection was lost on the way).
pub async fn try_resume(
    shared: &Arc<Shared>,
    user: &BareJid,
    request: &Element,
    mut conn: Conn,
) -> Result<(), Conn> {
    let previd = request.attr("previd").unwrap_or_default().to_string();
    let failed = |h: Option<u32>, cond: &str| {
        let mut f = Element::bare("failed", ns::SM);
        if let Some(h) = h {
            stanza::set(&mut f, "h", h.to_string());
        }
        f.append_child(Element::bare(cond, ns::STANZAS_ERR));
        f
    };
    let Some(h) = request.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
        let _ = conn.send(&failed(None, "bad-request")).await;
        return Err(conn);
    };
    match shared.resumable_get(&previd) {
        Some(e) if e.bare == user.to_string() => {
            match e.tx.send_control(SessionMsg::Resume {
                conn: Box::new(conn),
                h,
                previd: previd.clone(),
            }) {
                Ok(()) => Ok(()),
                Err(msg) => {
                    // The session ended between lookup and hand-over.
                    let SessionMsg::Resume { conn, .. } = msg else {
                        return Ok(());
                    };
                    let mut conn = *conn;
                    let last = shared.tombstone_take(&previd, user.as_str());
                    let _ = conn.send(&failed(last, "item-not-found")).await;
                    Err(conn)
                }
            }
        }
        _ => {
            let last = shared.tombstone_take(&previd, user.as_str());
            let _ = conn.send(&failed(last, "item-not-found")).await;
            Err(conn)
        }
    }
}
