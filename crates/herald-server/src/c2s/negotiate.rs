//! The c2s negotiation driver: runs `herald_session::negotiate`'s machine over a connection.
//! It reads stream events and feeds them in, and performs the machine's actions — writes, the
//! TLS upgrade, the decoder reset after SASL (to the normal limits), credential look-ups in the
//! store, the TLS connection's channel-binding data (for SCRAM-*-PLUS), the throttle records
//! (`herald_session::throttle::Records`, under `Shared::auth_throttle`), the failure delay, the
//! password check on the blocking pool, the hand-over of a `<resume/>` to its hibernated
//! session (also one inline in SASL2, with the `<success/>` the session completes), the FAST
//! token look-ups (`crate::c2s::fast`) — until a bind request or a Bind2 one (returned to
//! [`crate::c2s::session::start`]) or the end. Every protocol decision (features, SASL,
//! `<failure/>` conditions, failure limit, delays, lockout, stream errors) is the machine's.
//! Also here: the bind helpers (credentials are made by
//! `crate::admin::accounts::make_credentials`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald_proto::error::{StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::{BareJid, FullJid};
use herald_proto::ns;
use herald_proto::sasl::{ScramHash, ScramKeys};
use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;
use herald_session::negotiate::{Action, Input, Negotiation};
use herald_store::{roles, ScramRecord};
use tokio::time::Instant;

use crate::c2s::fast;
use crate::routing::msg::SessionMsg;
use crate::stanza;
use crate::transport::conn::{self, Conn, ConnError};
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
    /// XEP-0386 Bind2 inside SASL2: bind `resource` (or a random one) and answer `success`.
    Bind2 {
        /// The authenticated account.
        user: BareJid,
        /// The resource derived from the client id.
        resource: Option<String>,
        /// The inline features asked for.
        bind: Box<herald_session::sasl2::BindRequest>,
        /// The `<success/>` to complete.
        success: Box<herald_session::sasl2::Success>,
        /// The XEP-0388 client id.
        client_id: Option<String>,
        /// The stream.
        conn: Box<Conn>,
    },
    /// XEP-0198: the connection was handed to a hibernated session.
    Resumed,
    /// The stream ended (error already sent or peer closed).
    Closed,
}

/// Negotiates a c2s stream until a bind or resume request, or failure.
pub async fn negotiate(shared: &Arc<Shared>, mut conn: Conn) -> Outcome {
    let start = Instant::now();
    let mut cfg = shared.cfg.negotiation();
    cfg.caps = shared
        .server_caps
        .get_or_init(|| crate::features::iq::disco::caps(shared))
        .clone();
    let mut machine = Negotiation::new(cfg, conn.is_tls(), start.into_std());
    // Direct TLS: the handshake is done, SCRAM-*-PLUS may bind to it.
    machine.set_channel_bindings(conn.take_channel_bindings());
    let deadline = start + shared.cfg.c2s.negotiation_timeout.0;
    let mut actions = Vec::new();
    let mut preauth = crate::features::register::Preauth::default();
    loop {
        // Perform what the last input asked for; some actions are answered by an input.
        let mut answer = None;
        for action in actions.drain(..) {
            match action {
                Action::OpenStream {
                    domain,
                    to,
                    features,
                } => {
                    conn.domain = domain;
                    let id = conn::new_stream_id();
                    let from = conn.domain.clone();
                    if let Err(e) = conn
                        .send_header_and_features(&from, to.as_deref(), &id, &features)
                        .await
                    {
                        return broken(&mut conn, e).await;
                    }
                }
                Action::Send(el) => {
                    if let Err(e) = conn.send(&el).await {
                        return broken(&mut conn, e).await;
                    }
                }
                Action::StartTls => {
                    let acceptor = conn::c2s_acceptor(&shared.tls, shared.cfg.c2s.channel_binding);
                    match tokio::time::timeout_at(deadline, conn.start_tls(&acceptor)).await {
                        Ok(Ok(mut c)) => {
                            tracing::Span::current().record("tls", true);
                            // Before TlsEstablished: the encrypted stream's features offer
                            // -PLUS by it.
                            machine.set_channel_bindings(c.take_channel_bindings());
                            conn = c;
                            answer = Some(Input::TlsEstablished);
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return Outcome::Closed;
                        }
                        Err(_) => return Outcome::Closed,
                    }
                }
                // Only after SASL success: the authenticated stream gets the normal limits.
                Action::Restart => conn.restart_with(shared.limits.clone()),
                Action::LookupCredentials { jid, hash } => {
                    answer = Some(Input::Credentials(lookup(shared, &jid, hash)));
                }
                Action::LookupThrottle { account } => {
                    let now = Instant::now().into_std();
                    let (account, peer) = shared
                        .auth_throttle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(account.as_ref(), conn.peer.ip(), now);
                    answer = Some(Input::Throttle { account, peer, now });
                }
                Action::RecordFailure { account } => {
                    let now = Instant::now().into_std();
                    shared
                        .auth_throttle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .fail(account.as_ref(), conn.peer.ip(), now);
                }
                Action::Delay(d) => tokio::time::sleep(d).await,
                Action::Authenticated(jid) => {
                    tracing::info!(user = %jid, "authenticated");
                    shared.metrics.logins.fetch_add(1, Ordering::Relaxed);
                }
                Action::AuthFailed {
                    failures,
                    user,
                    condition,
                } => {
                    shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                    // One line for fail2ban (README): the name as sent, quoted and escaped.
                    tracing::warn!(
                        user = ?user.as_deref().unwrap_or(""),
                        ip = %conn.peer.ip(),
                        failures,
                        condition,
                        "authentication failed"
                    );
                }
                Action::Bind { user, request } => {
                    return Outcome::Bind {
                        user,
                        request,
                        conn: Box::new(conn),
                    }
                }
                Action::Features(f) => {
                    if let Err(e) = conn.send_features(&f).await {
                        return broken(&mut conn, e).await;
                    }
                }
                Action::FullLimits => conn.set_limits(shared.limits.clone()),
                Action::Bind2 {
                    user,
                    resource,
                    bind,
                    success,
                    client_id,
                } => {
                    return Outcome::Bind2 {
                        user,
                        resource,
                        bind,
                        success,
                        client_id,
                        conn: Box::new(conn),
                    }
                }
                Action::Sasl2Resume {
                    user,
                    previd,
                    h,
                    success,
                } => match try_resume(shared, &user, previd, h, conn, Some(success)).await {
                    Ok(()) => return Outcome::Resumed,
                    Err((c, last_h)) => {
                        conn = c;
                        answer = Some(Input::ResumeFailed { last_h });
                    }
                },
                Action::LookupFastTokens { jid, client_id } => {
                    answer = Some(fast::lookup(shared, &jid, &client_id).await);
                }
                Action::FastTokenUsed {
                    jid,
                    client_id,
                    current,
                    invalidate,
                } => fast::used(shared, &jid, &client_id, current, invalidate).await,
                Action::IssueFastToken {
                    jid,
                    client_id,
                    mechanism,
                } => {
                    answer = Some(fast::issue(shared, &jid, &client_id, &mechanism).await);
                }
                Action::Resume { user, previd, h } => {
                    match try_resume(shared, &user, previd, h, conn, None).await {
                        Ok(()) => return Outcome::Resumed,
                        Err((c, last_h)) => {
                            conn = c;
                            answer = Some(Input::ResumeFailed { last_h });
                        }
                    }
                }
                Action::Register(iq) => {
                    let domain = conn.domain.clone();
                    let reply = crate::features::register::before_login(
                        shared,
                        &mut preauth,
                        conn.peer.ip(),
                        &domain,
                        &iq,
                    )
                    .await;
                    if let Err(e) = conn.send(&reply).await {
                        return broken(&mut conn, e).await;
                    }
                }
                Action::Fail(e) => {
                    tracing::debug!(condition = e.condition.as_str(), text = ?e.text, "stream error");
                    let from = conn.domain.clone();
                    conn.fail(&from, &e).await;
                    return Outcome::Closed;
                }
                Action::Close => {
                    conn.close().await;
                    return Outcome::Closed;
                }
                Action::Disconnect => return Outcome::Closed,
            }
        }
        // Then the answer, or the next event from the peer.
        let input = match answer {
            Some(a) => a,
            None => match conn.next_event_until(deadline).await {
                Ok(ev) => Input::Event(ev),
                Err(ConnError::Stream(e)) => Input::DecodeError(e),
                Err(ConnError::Timeout) => Input::Tick(Instant::now().into_std()),
                Err(e) => return broken(&mut conn, e).await,
            },
        };
        machine = if matches!(input, Input::Credentials(_)) {
            // PLAIN derives the password's keys (PBKDF2), for an unknown account too: off the
            // async runtime.
            let step = tokio::task::spawn_blocking(move || {
                let mut actions = Vec::new();
                let m = machine.handle(input, &mut actions);
                (m, actions)
            });
            match step.await {
                Ok((m, a)) => {
                    actions = a;
                    m
                }
                Err(e) => {
                    tracing::error!(error = %e, "authentication task failed");
                    return Outcome::Closed;
                }
            }
        } else {
            machine.handle(input, &mut actions)
        };
    }
}

/// A write failed (or a read, other than a decoder error or the deadline, which the machine
/// answers): a write that timed out still gets `connection-timeout`.
async fn broken(conn: &mut Conn, e: ConnError) -> Outcome {
    if let ConnError::Timeout = e {
        let e = StreamError::new(StreamErrorCondition::ConnectionTimeout, None);
        let from = conn.domain.clone();
        conn.fail(&from, &e).await;
    } else {
        tracing::debug!(error = %e, "connection lost during negotiation");
    }
    Outcome::Closed
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

/// `jid`'s keys for `hash`; None for an unknown account or a failed look-up.
fn lookup(shared: &Arc<Shared>, jid: &BareJid, hash: ScramHash) -> Option<ScramKeys> {
    let u = jid.to_string();
    let creds = match shared.db_read(|s: &roles::Accounts| s.credentials(&u)) {
        Ok(c) => c?,
        Err(e) => {
            tracing::error!(error = %e, "credential lookup failed");
            return None;
        }
    };
    Some(match hash {
        ScramHash::Sha1 => to_keys(hash, &creds.sha1),
        ScramHash::Sha256 => to_keys(hash, &creds.sha256),
    })
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
        None => random_jid(user),
    }
}

/// `user` with a generated resource (RFC 6120 §7.6: the server's choice).
pub fn random_jid(user: &BareJid) -> Result<FullJid, StanzaErrorCondition> {
    let gen = format!("herald-{}", &conn::new_stream_id()[..12]);
    user.with_resource_str(&gen)
        .map_err(|_| StanzaErrorCondition::InternalServerError)
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

/// XEP-0198 §5: tries to hand `conn` to the hibernated session `previd` of `user` (the
/// negotiation machine parsed the request). Err((conn, last_h)) when it cannot: no session of
/// `user`'s has that id (or it ended on the way), with the ended session's last h when
/// remembered; the machine answers `<failed/>` and the stream may go on to bind.
/// Ok(()) when the session took the connection (or the connection was lost on the way).
pub async fn try_resume(
    shared: &Arc<Shared>,
    user: &BareJid,
    previd: String,
    h: u32,
    conn: Conn,
    sasl2: Option<Box<herald_session::sasl2::Success>>,
) -> Result<(), (Conn, Option<u32>)> {
    // Cluster mode: a session hibernated on another node is brought here first.
    if shared.resumable_get(&previd).is_none()
        && shared.cluster.get().is_some()
        && crate::c2s::persist::take_over(shared, user.as_str(), &previd).await
    {
        tracing::info!(
            previd,
            "session taken over from another node for resumption"
        );
    }
    match shared.resumable_get(&previd) {
        Some(e) if e.bare == user.to_string() => {
            match e.tx.send_control(SessionMsg::Resume {
                conn: Box::new(conn),
                h,
                previd: previd.clone(),
                sasl2,
            }) {
                Ok(()) => Ok(()),
                Err(msg) => {
                    // The session ended between lookup and hand-over.
                    let SessionMsg::Resume { conn, .. } = msg else {
                        return Ok(());
                    };
                    Err((*conn, shared.tombstone_take(&previd, user.as_str())))
                }
            }
        }
        _ => Err((conn, shared.tombstone_take(&previd, user.as_str()))),
    }
}
