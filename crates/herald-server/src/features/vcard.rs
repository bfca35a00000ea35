//! XEP-0054 vcard-temp and XEP-0153 vCard-based avatars: the user's vCard, stored and served
//! to anyone who asks the account's bare JID (RFC 6121 §8.5.2.1.3: the server answers for the
//! account, online or not, local or over s2s), and the avatar hash the server puts into the
//! user's available presence (XEP-0398 §4's rule; `herald_xep::vcard::stamp`).
//!
//! Owns the per-user avatar cache (`Shared::avatars`), so presence never reads the store for
//! it. It does not broadcast presence itself (that is `presence`'s, which calls [`stamp`]):
//! when a set changes the hash, each of the user's sessions is asked to re-broadcast its last
//! presence (`Command::RebroadcastPresence`). The XEP-0398 conversion from and to PEP
//! avatars (XEP-0084) is `features::avatar`'s, which stores through [`replace`].

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::Element;
use herald_store::{roles, StoreError, StoredVcard};

use crate::routing::msg::{Command, SessionMsg};
use crate::stanza;
use crate::xep::vcard::{self as xv, Avatar};
use crate::Shared;

/// The avatar the server knows for `user`, from the cache (filled from the store on a miss;
/// most accounts never stored a vCard and cost nothing, see `know_stored` at start). A store
/// failure counts as "no vCard": presence then passes as the client sent it.
pub async fn avatar(shared: &Arc<Shared>, user: &str) -> Arc<Avatar> {
    if let Some(a) = shared.avatars.get(user) {
        return a;
    }
    let u = user.to_string();
    match shared
        .db(move |s: &roles::Vcard| s.vcard_photo_hash(&u))
        .await
    {
        Ok(h) => shared.avatars.put(user, Avatar::from_stored(h)),
        Err(e) => {
            tracing::error!(error = %e, "vCard hash lookup failed");
            Arc::default()
        }
    }
}

/// Puts `user`'s avatar hash into an available presence they send (broadcast, directed or
/// answering a probe), per XEP-0398 §4 (see `herald_xep::vcard::stamp`).
pub async fn stamp(shared: &Arc<Shared>, user: &str, presence: &mut Element) {
    let a = avatar(shared, user).await;
    xv::stamp(presence, &a);
}

fn err(iq: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    stanza::error(iq, cond, text).unwrap_or_else(|| stanza::iq_result(iq, None))
}

fn store_failed(iq: &Element, e: &StoreError) -> Element {
    tracing::error!(error = %e, "vCard store call failed");
    crate::features::ctx::store_failed(iq, e)
}

/// `get` of `<vCard xmlns='vcard-temp'/>` on an account (its own, or anyone's: the vCard is
/// public, XEP-0054 §3.2). Routing has already answered `service-unavailable` for an account
/// that does not exist (RFC 6121 §8.5.1). Never set: an empty `<vCard/>` (XEP-0054 §3.1).
pub async fn get(shared: &Arc<Shared>, iq: &Element, user: &str) -> Element {
    let user = user.to_string();
    match shared.db(move |s: &roles::Vcard| s.vcard(&user)).await {
        Ok(v) => {
            let card = v
                .and_then(|v| xv::parse_stored(&v.xml))
                .unwrap_or_else(xv::empty);
            stanza::iq_result(iq, Some(card))
        }
        Err(e) => store_failed(iq, &e),
    }
}

/// `set` of the user's own vCard: bounded by `[vcard] max_bytes` (`not-acceptable`, nothing
/// stored), a PHOTO BINVAL that is not base64 is `bad-request` (its hash is what presence
/// carries). When the avatar hash changes, every session of the user re-broadcasts its
/// presence with the new one, so contacts see the new avatar without the client's help.
pub async fn set(shared: &Arc<Shared>, iq: &Element, payload: &Element, user: &str) -> Element {
    match replace(shared, user, payload).await {
        Ok(()) => stanza::iq_result(iq, None),
        Err(ReplaceError::TooLarge) => {
            let text = format!("vCard larger than {} bytes", shared.cfg.vcard.max_bytes);
            err(iq, StanzaErrorCondition::NotAcceptable, Some(&text))
        }
        Err(ReplaceError::Invalid) => err(
            iq,
            StanzaErrorCondition::BadRequest,
            Some("the PHOTO's BINVAL is not base64"),
        ),
        Err(ReplaceError::Gone) => err(iq, StanzaErrorCondition::ServiceUnavailable, None),
        Err(ReplaceError::Store(e)) => store_failed(iq, &e),
    }
}

/// Why [`replace`] stored nothing.
#[derive(Debug)]
pub enum ReplaceError {
    /// Over `[vcard] max_bytes`.
    TooLarge,
    /// A PHOTO BINVAL that is not base64.
    Invalid,
    /// The account is being removed.
    Gone,
    /// The store failed.
    Store(StoreError),
}

/// The user's stored vCard, if any (unreadable XML counts as none).
pub async fn stored(shared: &Arc<Shared>, user: &str) -> Result<Option<Element>, StoreError> {
    let u = user.to_string();
    let v = shared.db(move |s: &roles::Vcard| s.vcard(&u)).await?;
    Ok(v.and_then(|v| xv::parse_stored(&v.xml)))
}

/// Stores `card` as `user`'s vCard (their own set, or the XEP-0398 conversion of a PEP
/// avatar), with the same bounds; when the avatar hash changes, the user's sessions
/// re-broadcast their presence.
pub async fn replace(shared: &Arc<Shared>, user: &str, card: &Element) -> Result<(), ReplaceError> {
    let user = user.to_string();
    let checked = match xv::check_set(card, shared.cfg.vcard.max_bytes) {
        Ok(c) => c,
        Err(xv::SetError::TooLarge) => return Err(ReplaceError::TooLarge),
        Err(xv::SetError::Invalid) => return Err(ReplaceError::Invalid),
    };
    // Its sessions are ending (`herald user remove`): nothing more is stored for it.
    if shared.account_gone(&user) {
        return Err(ReplaceError::Gone);
    }
    let before = avatar(shared, &user).await;
    let after = Avatar::from_stored(Some(checked.photo_hash.clone()));
    let stored = StoredVcard {
        xml: checked.xml,
        photo_hash: checked.photo_hash,
    };
    let u = user.clone();
    if let Err(e) = shared
        .db(move |s: &roles::Vcard| s.set_vcard(&u, &stored))
        .await
    {
        shared.avatars.invalidate(&user);
        return Err(ReplaceError::Store(e));
    }
    shared.avatars.invalidate(&user);
    shared.avatars.put(&user, after.clone());
    shared.cluster_invalidate(crate::Cached::Avatar, &user);
    if *before != after {
        // After the result: each session handles the command when it next reads its
        // inbox, so this client sees its result before its own presence comes back.
        for r in shared.router.resources(&user) {
            let _ =
                r.tx.send_control(SessionMsg::Command(Command::RebroadcastPresence));
        }
    }
    Ok(())
}
