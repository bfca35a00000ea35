//! XEP-0077 in-band registration. Logged in (the IQ table's lines): `get` tells the account
//! it is registered, a password change stores new SCRAM keys and ends the account's other
//! sessions (as `herald user passwd` does; this one goes on), and `<remove/>` deletes the
//! account with all its data, as `herald user remove` does: the result is written first,
//! then every session of the account ends with `not-authorized` (XEP-0077 §3.2).
//!
//! Before login (`[registration] enabled`, handed over by the c2s negotiation): the form,
//! and new accounts, at most `max_per_ip` per address and window, with a XEP-0401 invite
//! token (`<preauth/>`, XEP-0445) when `invite_only`. Payload parsing and name rules are
//! `herald_xep::register`'s, the per-address records `herald_session::registrations`'.
//! [`create`] holds every check of a new account; the invite web page (`http::invite`) calls it too.
//! Must not: bind or authenticate (the client logs in with SASL afterwards).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::ns;
use herald_proto::Element;
use herald_store::{roles, Invite, StoreError};

use crate::admin::accounts::make_credentials;
use crate::admin::admin_socket::{end_sessions, remove_user, PASSWORD_CHANGED};
use crate::features::ctx::SessionCtx;
use crate::stanza;
use crate::xep::register::{self as xr, Submit};
use crate::Shared;

/// A logged-in account's `jabber:iq:register` IQ (`get` or `set`).
pub async fn own_iq(s: &mut SessionCtx, iq: &Element, payload: &Element) -> Element {
    let node = s.jid.node().map(|n| n.to_string()).unwrap_or_default();
    if stanza::typ(iq) == "get" {
        return stanza::iq_result(iq, Some(xr::registered(&node)));
    }
    match xr::parse_submit(payload) {
        Submit::Remove => {
            let (shared, bare) = (s.shared.clone(), s.bare.clone());
            // Not awaited here: the removal waits for every session of the account to end,
            // this one included, which can only end after writing this result.
            tokio::spawn(async move {
                let r = remove_user(&shared, &bare).await;
                if !r.starts_with("ok") {
                    tracing::error!(user = %bare, result = %r, "in-band account removal failed");
                } else {
                    tracing::info!(user = %bare, "account removed by its owner");
                }
            });
            stanza::iq_result(iq, None)
        }
        Submit::Credentials { username, password } => {
            change_password(s, iq, &username, password).await
        }
        Submit::Incomplete => error(iq, StanzaErrorCondition::BadRequest, None),
    }
}

/// XEP-0077 §3.3: the username must be the account's own (Prosody answers a different one
/// with `bad-request` too).
async fn change_password(
    s: &mut SessionCtx,
    iq: &Element,
    username: &str,
    password: String,
) -> Element {
    let domain = s.jid.domain().to_string();
    let reg = &s.shared.cfg.registration;
    match xr::account(username, &domain, usize::MAX) {
        Ok(j) if j.to_string() == s.bare => {}
        _ => return error(iq, StanzaErrorCondition::BadRequest, None),
    }
    if let Err(r) = xr::password(&password, reg.max_password_bytes) {
        return error(iq, StanzaErrorCondition::NotAcceptable, Some(r.text()));
    }
    let bare = s.bare.clone();
    let stored = s
        .shared
        .db(move |st: &roles::Accounts| {
            let creds = make_credentials(&password)
                .map_err(|e| StoreError::Invalid(format!("password: {e:?}")))?;
            st.set_credentials(&bare, &creds)
        })
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, user = %s.bare, "in-band password change failed");
        return crate::features::ctx::store_failed(iq, &e);
    }
    tracing::info!(user = %s.bare, "password changed in band");
    // The account's other sessions logged in with the old password: they end, as after
    // `herald user passwd` (not awaited: they may be busy changing it too).
    let (shared, bare, me) = (s.shared.clone(), s.bare.clone(), s.id);
    tokio::spawn(async move {
        end_sessions(&shared, &bare, PASSWORD_CHANGED, Some(me)).await;
    });
    stanza::iq_result(iq, None)
}

/// What a stream not yet authenticated has established towards a registration: the invite
/// whose token it presented (XEP-0401 `<preauth/>`), good for one registration.
#[derive(Default, Debug)]
pub struct Preauth {
    invite: Option<Invite>,
}

/// A registration IQ before login (the negotiation machine checked that registration is on
/// and the stream encrypted where it must be). Returns the reply.
pub async fn before_login(
    shared: &Arc<Shared>,
    state: &mut Preauth,
    ip: IpAddr,
    domain: &str,
    iq: &Element,
) -> Element {
    let Some(payload) = stanza::payload(iq) else {
        return error(iq, StanzaErrorCondition::BadRequest, None);
    };
    if payload.is("preauth", ns::PARS) {
        return preauth(shared, state, iq, payload).await;
    }
    let reg = &shared.cfg.registration;
    if stanza::typ(iq) == "get" {
        let text = if reg.invite_only {
            "Registration on this server needs an invitation: open the invite link you \
             were given. Then choose a username and password."
        } else {
            "Choose a username and password for use with this service."
        };
        return stanza::iq_result(iq, Some(xr::form(text)));
    }
    let (username, password) = match xr::parse_submit(payload) {
        Submit::Credentials { username, password } => (username, password),
        // XEP-0077 §3.2: there is nothing to cancel before logging in.
        Submit::Remove => return error(iq, StanzaErrorCondition::RegistrationRequired, None),
        Submit::Incomplete => return error(iq, StanzaErrorCondition::BadRequest, None),
    };
    match create(
        shared,
        ip,
        domain,
        &username,
        password,
        state.invite.as_ref(),
    )
    .await
    {
        Ok(_) => {
            state.invite = None;
            stanza::iq_result(iq, None)
        }
        Err(r) => {
            if r.invite_gone {
                state.invite = None;
            }
            error_typed(iq, r.condition, r.kind, r.text)
        }
    }
}

/// Why [`create`] made no account: the XMPP error XEP-0077 gives for it (the invite page
/// maps it to an HTTP status).
#[derive(Debug)]
pub struct Refusal {
    /// The stanza error condition.
    pub condition: StanzaErrorCondition,
    /// Its type (`wait` for the per-address limit).
    pub kind: ErrorType,
    /// What to tell the person registering.
    pub text: Option<&'static str>,
    /// The invite was used up or revoked since it was presented.
    pub invite_gone: bool,
    /// The store failed (the request itself was fine): HTTP answers 503, not 429 or 500.
    pub store_failed: bool,
}

impl Refusal {
    fn new(condition: StanzaErrorCondition, text: Option<&'static str>) -> Refusal {
        let kind = condition.default_type();
        Refusal {
            condition,
            kind,
            text,
            invite_gone: false,
            store_failed: false,
        }
    }
}

/// Creates account `username`@`domain` registered from `ip`, with `invite` if one was
/// presented: every check of in-band registration (invite-only, name preparation and
/// length, password length, the invite's account name, the per-address limit, the invite's
/// uses) in one place, for the XEP-0077 IQ and the invite web page alike. Returns the
/// new account's bare JID.
pub async fn create(
    shared: &Arc<Shared>,
    ip: IpAddr,
    domain: &str,
    username: &str,
    password: String,
    invite: Option<&Invite>,
) -> Result<String, Refusal> {
    let reg = &shared.cfg.registration;
    if reg.invite_only && invite.is_none() {
        return Err(Refusal::new(
            StanzaErrorCondition::Forbidden,
            Some("Registration on this server is by invitation only"),
        ));
    }
    let jid = xr::account(username, domain, reg.max_username_chars)
        .map_err(|r| Refusal::new(StanzaErrorCondition::NotAcceptable, Some(r.text())))?;
    xr::password(&password, reg.max_password_bytes)
        .map_err(|r| Refusal::new(StanzaErrorCondition::NotAcceptable, Some(r.text())))?;
    let user = jid.to_string();
    if let Some(inv) = invite {
        if inv.for_user.as_deref().is_some_and(|u| u != user) {
            return Err(Refusal::new(
                StanzaErrorCondition::Forbidden,
                Some("This invitation is for another account name"),
            ));
        }
    }
    // Taken before creating, so that concurrent attempts from one address cannot all pass;
    // given back if no account is created.
    let taken_at = Instant::now();
    let allowed = shared
        .registrations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(ip, taken_at);
    if !allowed {
        tracing::warn!(%ip, "registration refused: too many from this address");
        return Err(Refusal {
            condition: StanzaErrorCondition::ResourceConstraint,
            kind: ErrorType::Wait,
            text: Some("Too many registrations from this address; try again later"),
            invite_gone: false,
            store_failed: false,
        });
    }
    let invite_id = invite.map(|i| i.id.clone());
    let u = user.clone();
    let created = shared
        .db(move |s: &roles::All| {
            if s.account_exists(&u)? {
                return Err(StoreError::AlreadyExists);
            }
            if let Some(id) = &invite_id {
                if !s.use_invite(id, now_millis())? {
                    // Used up or revoked since it was presented.
                    return Err(StoreError::NotFound);
                }
            }
            let creds = make_credentials(&password)
                .map_err(|e| StoreError::Invalid(format!("password: {e:?}")))?;
            s.create_account(&u, &creds)
        })
        .await;
    if created.is_err() {
        shared
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(ip, taken_at);
    }
    match created {
        Ok(()) => {
            let invite = invite.map(|i| i.id.clone());
            tracing::info!(%user, %ip, invite = ?invite, "account registered");
            Ok(user)
        }
        Err(StoreError::AlreadyExists) => Err(Refusal::new(
            StanzaErrorCondition::Conflict,
            Some("The requested username already exists"),
        )),
        Err(StoreError::NotFound) => Err(Refusal {
            invite_gone: true,
            ..Refusal::new(StanzaErrorCondition::Forbidden, Some(INVALID_INVITE))
        }),
        Err(e) => {
            tracing::error!(error = %e, %user, "registration failed");
            // Transient (the database busy or unreachable): resource-constraint, else
            // internal-server-error; both `wait`, the same request may succeed later.
            let (condition, kind) = crate::features::ctx::store_condition(&e);
            Err(Refusal {
                condition,
                kind,
                text: Some("The account cannot be created right now; try again later"),
                invite_gone: false,
                store_failed: true,
            })
        }
    }
}

const INVALID_INVITE: &str = "The invite token is invalid, expired or used up";

/// XEP-0401 §5 (as XEP-0445 uses it): a token presented before registering. A valid one is
/// remembered for this stream; anything else is `forbidden` (what Prosody answers).
async fn preauth(
    shared: &Arc<Shared>,
    state: &mut Preauth,
    iq: &Element,
    payload: &Element,
) -> Element {
    if stanza::typ(iq) != "set" {
        return error(iq, StanzaErrorCondition::BadRequest, None);
    }
    let Some(token) = xr::preauth_token(payload) else {
        return error(iq, StanzaErrorCondition::BadRequest, None);
    };
    let hash = xr::token_hash(token);
    let found = shared
        .db(move |s: &roles::Invites| s.usable_invite(&hash, now_millis()))
        .await;
    match found {
        Ok(Some(inv)) => {
            state.invite = Some(inv);
            stanza::iq_result(iq, None)
        }
        Ok(None) => {
            state.invite = None;
            error(iq, StanzaErrorCondition::Forbidden, Some(INVALID_INVITE))
        }
        Err(e) => {
            tracing::error!(error = %e, "invite lookup failed");
            crate::features::ctx::store_failed(iq, &e)
        }
    }
}

fn error(iq: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    stanza::error(iq, cond, text).unwrap_or_else(|| stanza::iq_result(iq, None))
}

fn error_typed(
    iq: &Element,
    cond: StanzaErrorCondition,
    kind: ErrorType,
    text: Option<&str>,
) -> Element {
    stanza::error_typed(iq, cond, kind, text).unwrap_or_else(|| stanza::iq_result(iq, None))
}

/// Milliseconds since the epoch (invite expiry).
pub fn now_millis() -> i64 {
    herald_xep::delay::now_micros() / 1000
}
