//! XEP-0484 FAST tokens for the negotiation driver: the store look-ups and writes behind the
//! machine's `LookupFastTokens`, `FastTokenUsed` and `IssueFastToken` actions. Which token
//! authenticates, when one is issued or rotated, is `herald_session::negotiate`'s; the
//! tokens' crypto is `herald_proto::sasl::ht`'s. A token is never stored, only its random
//! salt: the token is derived from it with the server's key ([`crate::Shared::fast_key`]) when
//! it is issued and when it is checked. Never logged.

use std::sync::Arc;

use herald_proto::jid::BareJid;
use herald_proto::sasl::ht;
use herald_session::negotiate::{FastToken, Input};
use herald_store::{roles, FastTokenRecord};

use crate::c2s::persist::unix_millis;
use crate::Shared;

/// The tokens of `jid`'s client `client_id` ([`Input::FastTokens`]); none for a removed
/// account or when the store fails (the login then fails as with a wrong token).
pub async fn lookup(shared: &Arc<Shared>, jid: &BareJid, client_id: &str) -> Input {
    let now_ms = unix_millis();
    if shared.account_gone(jid.as_str()) {
        return Input::FastTokens {
            tokens: Vec::new(),
            now_ms,
        };
    }
    let (u, c) = (jid.to_string(), client_id.to_string());
    let tokens = match shared
        .db(move |s: &roles::FastTokens| s.fast_tokens(&u, &c))
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "FAST token lookup failed");
            Vec::new()
        }
    };
    let user = jid.as_str();
    let tokens = tokens
        .into_iter()
        .map(|t| FastToken {
            token: t.salt.as_deref().map(|salt| {
                ht::derive_token(&shared.fast_key, salt, user, client_id, &t.mechanism)
            }),
            mechanism: t.mechanism,
            verifier: t.verifier,
            responder: t.responder,
            issued_at_ms: t.issued_at,
            expires_at_ms: t.expires_at,
            current: t.current,
        })
        .collect();
    Input::FastTokens { tokens, now_ms }
}

/// A token authenticated: using the newest retires the previous; `invalidate` (the client
/// logs out) deletes the client's tokens.
pub async fn used(
    shared: &Arc<Shared>,
    jid: &BareJid,
    client_id: &str,
    current: bool,
    invalidate: bool,
) {
    if !invalidate && !current {
        return;
    }
    let (u, c) = (jid.to_string(), client_id.to_string());
    let r = shared
        .db(move |s: &roles::FastTokens| {
            if invalidate {
                s.delete_client_fast_tokens(&u, &c).map(|_| ())
            } else {
                s.retire_previous_fast_token(&u, &c)
            }
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "updating FAST tokens failed");
    }
}

/// A new token for `jid`'s client `client_id` bound to `mechanism`, stored (as its salt)
/// before the client sees it ([`Input::FastTokenIssued`]).
pub async fn issue(shared: &Arc<Shared>, jid: &BareJid, client_id: &str, mechanism: &str) -> Input {
    if shared.account_gone(jid.as_str()) {
        return Input::FastTokenIssued(None);
    }
    let salt = ht::new_salt();
    let token = ht::derive_token(&shared.fast_key, &salt, jid.as_str(), client_id, mechanism);
    let now = unix_millis();
    let life = i64::try_from(shared.cfg.fast.token_lifetime.0.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(life);
    let rec = FastTokenRecord {
        client_id: client_id.to_string(),
        mechanism: mechanism.to_string(),
        // Checked through the salt: the hashed messages are only for tokens from before.
        verifier: Vec::new(),
        responder: Vec::new(),
        salt: Some(salt),
        issued_at: now,
        expires_at,
        current: true,
    };
    let u = jid.to_string();
    let max = shared.cfg.fast.max_clients_per_account;
    match shared
        .db(move |s: &roles::FastTokens| s.issue_fast_token(&u, &rec, max))
        .await
    {
        Ok(()) => {
            let expiry = crate::xep::delay::format_stamp(expires_at.saturating_mul(1000));
            Input::FastTokenIssued(Some((token, expiry)))
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a FAST token failed");
            Input::FastTokenIssued(None)
        }
    }
}
