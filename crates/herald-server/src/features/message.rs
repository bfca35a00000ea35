//! Message handling around routing: what happens to a message a client sends (XEP-0490
//! server assist, blocking, carbons `sent` copies, archiving for the sender) and to a message arriving for a local
//! user (blocking, archiving for the recipient with rule b, delivery, carbons `received`
//! copies, offline storage).

use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::Element;

use crate::features::carbons;
use crate::features::ctx::SessionCtx;
use crate::features::mds;
use crate::routing::hooks::{Fut, MessageToLocal};
use crate::routing::msg::Routed;
use crate::routing::router::{best_resources, ResourceEntry};
use crate::stanza;
use crate::xep::carbons as xc;
use crate::{features::blocking, features::mam, features::offline, routing, Shared};

/// A message sent by the session's client (already stamped with `from`, `to` set).
pub async fn outbound(session: &mut SessionCtx, mut el: Element) {
    let shared = session.shared.clone();
    if xc::is_carbon(&el) {
        // XEP-0280 §11: clients must not forge carbons.
        routing::bounce(&shared, &el, StanzaErrorCondition::NotAcceptable).await;
        return;
    }
    // XEP-0490 §6: the server-assist marker leaves the message before it is archived,
    // copied or routed (the contact must not learn our stanza-ids); the message goes on.
    if let Some(displayed) = crate::xep::mds::take_assist(&mut el) {
        // §5.2: the verbatim `to` is the item id (the session set it when it was absent).
        if let Some(chat) = el.attr("to").map(str::to_owned) {
            mds::assist(&shared, &session.bare, &chat, displayed).await;
        }
    }
    // XEP-0280 §8: the sending server delivers <private/> as it is (the recipient's server
    // must see it too, to make no copies of its own); it only withholds `sent` copies.
    let private = el.has_child("private", herald_proto::ns::CARBONS);
    let to = match stanza::to(&el) {
        Ok(Some(t)) => t,
        _ => return routing::bounce(&shared, &el, StanzaErrorCondition::JidMalformed).await,
    };
    if blocking::outbound_blocked(&shared, &session.bare, &to).await {
        blocking::bounce_blocked(&shared, &el).await;
        return;
    }
    let Ok(archive) = mam::stamp_outgoing(&shared, &session.bare, &to, &el).await else {
        return low_space(&shared, &el).await;
    };
    if !private {
        carbons::send_sent_copies(&shared, &session.bare, session.id, &el);
    }
    let ((), bounced) = routing::watch_bounces(routing::route(&shared, el)).await;
    // A message that came straight back as an error (unknown or blocking recipient, full
    // offline store, …) was not sent: it stays out of the sender's archive.
    if let (Some(p), false) = (archive, bounced) {
        mam::commit(&shared, p).await;
    }
}

/// A message that would be archived while the store is nearly out of space: refused.
async fn low_space(shared: &Arc<Shared>, el: &Element) {
    let cond = StanzaErrorCondition::ResourceConstraint;
    let text = Some(offline::LOW_SPACE);
    routing::bounce_with(shared, el, cond, Some(ErrorType::Wait), text).await
}

/// A message for local user `bare`, addressed to `to` (bare or full).
pub async fn inbound(shared: &Arc<Shared>, bare: &str, to: &Jid, r: Routed) {
    let Routed { origin, mut el, .. } = r;
    // Routing gives every message for a local user a routing id.
    let Some(id) = origin.id() else { return };
    if let Ok(Some(from)) = stanza::from(&el) {
        if blocking::inbound_blocked(shared, bare, &from).await {
            // XEP-0191 §3.3: not delivered; messages and IQs get service-unavailable.
            routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await;
            return;
        }
    }
    // XEP-0280 §8: no `received` copies of a private message; the recipient's server
    // removes <private/> before delivery.
    let copy = xc::is_eligible(&el);
    xc::strip_private(&mut el);
    // Archived after delivery: see mam::stamp_incoming.
    let Ok(archive) = mam::stamp_incoming(shared, bare, id, &mut el).await else {
        return low_space(shared, &el).await;
    };
    let delivery = Box::pin(deliver(shared, bare, to, id, el, copy));
    let ((), bounced) = routing::watch_bounces(delivery).await;
    // Refused (full inbox, full offline store): the recipient does not have it, so neither
    // does their archive, and the sender's retry will not be archived twice.
    if let (Some(p), false) = (archive, bounced) {
        mam::commit(shared, p).await;
    }
}

/// RFC 6121 §8.5: delivery of a message for local `bare` to its resources, else offline.
async fn deliver(shared: &Arc<Shared>, bare: &str, to: &Jid, id: u64, el: Element, copy: bool) {
    let list = shared.router.resources(bare);
    let (targets, full_target): (Vec<&ResourceEntry>, bool) = match to.resource() {
        Some(res) => match list.iter().find(|e| e.resource == res.as_str()) {
            Some(e) => (vec![e], true),
            None => match stanza::typ(&el) {
                // RFC 6121 §8.5.3.2.1
                "groupchat" => {
                    return routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable)
                        .await
                }
                "headline" | "error" => return,
                _ => (best_resources(&list), false),
            },
        },
        None => match stanza::typ(&el) {
            "groupchat" => {
                if best_resources(&list).is_empty() {
                    return offline::no_available_resource(shared, bare, Routed::new(id, el)).await;
                }
                return routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable)
                    .await;
            }
            "headline" => (
                list.iter()
                    .filter(|r| r.available && r.priority >= 0)
                    .collect(),
                false,
            ),
            _ => (best_resources(&list), false),
        },
    };
    if targets.is_empty() {
        return offline::no_available_resource(shared, bare, Routed::new(id, el)).await;
    }
    let mut delivered = false;
    for t in &targets {
        if routing::send_to_routed(shared, t, Routed::new(id, el.clone())).is_ok() {
            delivered = true;
        }
    }
    if !delivered {
        let gone = targets.iter().all(|t| t.tx.is_closed());
        if gone && !full_target {
            return offline::no_available_resource(shared, bare, Routed::new(id, el)).await;
        }
        return routing::bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
    }
    if copy {
        carbons::send_received_copies(shared, bare, &list, &targets, &el);
    }
}

/// A message another cluster node routed to a session of this node that has ended since:
/// delivered again by the RFC 6121 rules among the account's sessions (the caller's scope
/// keeps it on this node), without the archiving and carbons the sending node already did.
pub async fn deliver_forwarded(shared: &Arc<Shared>, bare: &str, to: &Jid, el: Element) {
    deliver(shared, bare, to, shared.next_id(), el, false).await
}

/// The `message_to_local` hook: blocking, carbons, archive and delivery or offline storage.
pub fn to_local(shared: &Arc<Shared>, ev: MessageToLocal) -> Fut<'_, Option<MessageToLocal>> {
    Box::pin(async move {
        let MessageToLocal { bare, to, routed } = ev;
        inbound(shared, &bare, &to, routed).await;
        None
    })
}
