//! XEP-0160 offline storage: messages for a user with no available resource are stored
//! (bounded per user; over the bound the sender gets `resource-constraint`), delivered with an
//! XEP-0203 stamp at the next available presence, and deleted once delivered. Storing fires
//! push rule c. Also where undelivered stanzas of an ended session go.

use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::ns;
use herald_proto::Element;
use herald_store::roles;
use herald_store::StoreError;

use crate::routing::hooks;
use crate::routing::msg::{Command, Origin, Routed, SessionMsg};
use crate::stanza::{self, Kind};
use crate::xep::delay;
use crate::{routing, Shared};

/// Whether a message is worth keeping for later (XEP-0160 §3; XEP-0085 §5.5: standalone chat
/// states are not stored; XEP-0334 no-store / no-permanent-store hints are honoured).
pub fn worth_storing(el: &Element) -> bool {
    if el.has_child("no-store", ns::HINTS) || el.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    !el.children()
        .all(|c| c.has_ns(ns::CHATSTATES) || c.has_ns(ns::DELAY) || c.has_ns(ns::SID))
}

/// A message for `bare` found no available resource (RFC 6121 §8.5.2.2.1).
pub async fn no_available_resource(shared: &Arc<Shared>, bare: &str, r: Routed) {
    if shared.account_gone(bare) {
        // Removed while this was on its way: RFC 6121 §8.5.1, as for any unknown account.
        return routing::bounce(shared, &r.el, StanzaErrorCondition::ServiceUnavailable).await;
    }
    match stanza::typ(&r.el) {
        "groupchat" => {
            // Not stored; herald-push decides what the devices hear of it.
            let Some(id) = r.origin.id() else { return };
            let info = shared.push.info(id, &r.el);
            let ev = hooks::DeliveryFailed {
                user: bare.to_string(),
                stanza: info,
            };
            hooks::notify(&shared.hooks.delivery_failed, shared, ev);
        }
        "headline" | "error" => {}
        _ => store(shared, bare, r, true).await,
    }
}

/// Stores a message offline; `push` fires rule c for it.
async fn store(shared: &Arc<Shared>, bare: &str, r: Routed, push: bool) {
    if !worth_storing(&r.el) {
        return;
    }
    let mut el = r.el;
    delay::add_delay(
        &mut el,
        bare.rsplit('@').next().unwrap_or(shared.domain()),
        delay::now_micros(),
    );
    let Some(xml) = stanza::to_xml(&el) else {
        return;
    };
    if shared.space.is_low() {
        // Refused before the disk fills under SQLite (`[store] min_free_bytes`).
        return routing::bounce_with(
            shared,
            &el,
            StanzaErrorCondition::ResourceConstraint,
            Some(ErrorType::Wait),
            Some(LOW_SPACE),
        )
        .await;
    }
    let u = bare.to_string();
    let (max, max_bytes) = (
        shared.cfg.offline.max_per_user,
        shared.cfg.offline.max_bytes_per_user,
    );
    match shared
        .db(move |s: &roles::Offline| s.store_offline(&u, &xml, max, max_bytes))
        .await
    {
        Ok(_) => {
            shared
                .metrics
                .offline_stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(user = %bare, "stored offline");
            if !push {
                return;
            }
            let Some(id) = r.origin.id() else { return };
            let info = shared.push.info(id, &el);
            let ev = hooks::StoredOffline {
                user: bare.to_string(),
                stanza: info,
            };
            hooks::notify(&shared.hooks.stored_offline, shared, ev);
        }
        Err(StoreError::QuotaExceeded) => {
            let cond = StanzaErrorCondition::ResourceConstraint;
            let text = Some("offline storage is full");
            routing::bounce_with(shared, &el, cond, Some(ErrorType::Wait), text).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "offline store failed");
            let (cond, kind) = crate::features::ctx::store_condition(&e);
            routing::bounce_with(shared, &el, cond, Some(kind), None).await;
        }
    }
}

/// The `<text/>` of a message refused because the store's filesystem is nearly full.
pub const LOW_SPACE: &str = "the server is low on storage space";

/// A stanza left unacknowledged when a session ended (XEP-0198 expiry, close, conflict):
/// never silently lost — already archived messages are dropped quietly (the client will find
/// them in MAM), others go offline if the user has no other available resource, else back to
/// the sender with `recipient-unavailable`. Sessions an admin command is ending (`herald user
/// passwd`) do not count as other resources. For a removed account nothing is kept: its
/// messages (archived ones too: the archive went with the account) and requests go back to
/// their senders with `service-unavailable`.
pub async fn undelivered(shared: &Arc<Shared>, bare: &str, o: Routed, ended: u64) {
    if o.origin == Origin::Server {
        return; // our own replies and pushes, not routed stanzas
    }
    match stanza::kind(&o.el) {
        Some(Kind::Message) => {
            if crate::xep::carbons::is_carbon(&o.el) {
                return; // a copy; the original went to its own recipient
            }
            if shared.account_gone(bare) {
                return routing::bounce(shared, &o.el, StanzaErrorCondition::ServiceUnavailable)
                    .await;
            }
            if archived_for(&o.el, bare) {
                return;
            }
            if shared.is_stopping() {
                // Shutdown: every session is ending; keep it rather than bounce it.
                return store(shared, bare, o, true).await;
            }
            let mut others = shared.router.resources(bare);
            others.retain(|r| r.session_id != ended && !shared.accounts.is_ending(r.session_id));
            if crate::routing::router::best_resources(&others).is_empty() {
                no_available_resource(shared, bare, o).await;
            } else {
                routing::bounce(shared, &o.el, StanzaErrorCondition::RecipientUnavailable).await;
            }
        }
        Some(Kind::Iq) if matches!(stanza::typ(&o.el), "get" | "set") => {
            routing::bounce(shared, &o.el, StanzaErrorCondition::ServiceUnavailable).await;
        }
        _ => {}
    }
}

/// A stanza of a session lost in a crash (see `persist`): a message is kept for the user in
/// offline storage — without a push of its own, the user's devices get one wake push — unless
/// the user's archive has it; a request gets `service-unavailable`; anything else is dropped.
pub async fn keep(shared: &Arc<Shared>, bare: &str, o: Routed) {
    if o.origin == Origin::Server {
        return;
    }
    match stanza::kind(&o.el) {
        Some(Kind::Message) => {
            if crate::xep::carbons::is_carbon(&o.el) || archived_for(&o.el, bare) {
                return;
            }
            if matches!(stanza::typ(&o.el), "groupchat" | "headline" | "error") {
                return;
            }
            store(shared, bare, o, false).await;
        }
        Some(Kind::Iq) if matches!(stanza::typ(&o.el), "get" | "set") => {
            routing::bounce(shared, &o.el, StanzaErrorCondition::ServiceUnavailable).await;
        }
        _ => {}
    }
}

/// Whether our archive stamped this message for `bare` (XEP-0359 stanza-id by=bare).
pub fn archived_for(el: &Element, bare: &str) -> bool {
    el.children()
        .any(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(bare))
}

/// Lets `session` deliver `bare`'s offline store (XEP-0160: to one resource; two resources
/// becoming available at once must not both get every message). True if it may: nobody else
/// is delivering it.
pub fn claim(shared: &Shared, bare: &str, session: u64) -> bool {
    let mut c = shared
        .offline_claims
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match c.get(bare) {
        Some(s) => *s == session,
        None => {
            c.insert(bare.to_string(), session);
            true
        }
    }
}

/// Gives back a claim this node made but the cluster refused (another node's session
/// delivers the store): nothing is handed on.
pub fn release_claim_quietly(shared: &Shared, bare: &str, session: u64) {
    let mut c = shared
        .offline_claims
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if c.get(bare) == Some(&session) {
        c.remove(bare);
    }
}

/// `session` stops delivering `bare`'s offline store: what is left (unacknowledged rows,
/// rows not read yet) goes to another reachable resource, if any; else it waits in the store
/// for the next one.
pub fn release_claim(shared: &Shared, bare: &str, session: u64) {
    {
        let mut c = shared
            .offline_claims
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if c.get(bare) != Some(&session) {
            return;
        }
        c.remove(bare);
    }
    let u = bare.to_string();
    if shared
        .db_read(|s: &roles::Offline| s.offline_count(&u))
        .unwrap_or(0)
        == 0
    {
        return;
    }
    let mut others = shared.router.resources(bare);
    others.retain(|r| r.session_id != session && !r.hibernated);
    for r in crate::routing::router::best_resources(&others) {
        // A control message: it cannot be refused for a full inbox (and if it were lost the
        // messages would only wait in the store).
        let msg = SessionMsg::Command(Command::CheckOffline);
        if r.tx.send_control(msg).is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_states_alone_are_not_stored() {
        let cs: Element = "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>".parse().unwrap();
        assert!(!worth_storing(&cs));
        let b: Element = "<message xmlns='jabber:client' type='chat'><body>x</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>".parse().unwrap();
        assert!(worth_storing(&b));
        let h: Element = "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>".parse().unwrap();
        assert!(!worth_storing(&h));
    }
}
