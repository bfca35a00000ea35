//! Delivery rules (RFC 6121 §8): where a stanza addressed by a local entity goes — a local
//! session, a component, the server itself, or back to the sender as an error.

pub mod durable;
pub mod hooks;
pub mod msg;
pub mod router;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::transport::inbox::TrySendError;
use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::Element;
use herald_store::roles;

use crate::routing::msg::{Routed, SessionMsg};
use crate::stanza::{self, Kind};
use crate::Shared;
use router::ResourceEntry;

/// Where a domain is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Dest {
    /// Our own domain.
    Local,
    /// A configured component (the configured domain).
    Component(String),
    /// Anything else.
    Remote,
    /// The group chat service Herald serves itself (`[muc] domain`).
    Muc,
}

/// Classifies a domain.
pub fn dest(shared: &Shared, domain: &str) -> Dest {
    if shared.cfg.is_local(domain) {
        Dest::Local
    } else if shared.muc_domain.as_deref() == Some(domain) {
        Dest::Muc
    } else if let Some(c) = shared.cfg.component_for(domain) {
        Dest::Component(c.domain.clone())
    } else {
        Dest::Remote
    }
}

/// Sends an error reply for `el` back to its sender (never for errors).
pub async fn bounce(shared: &Arc<Shared>, el: &Element, cond: StanzaErrorCondition) {
    bounce_with(shared, el, cond, None, None).await
}

async fn bounce_typed(
    shared: &Arc<Shared>,
    el: &Element,
    cond: StanzaErrorCondition,
    t: ErrorType,
) {
    bounce_with(shared, el, cond, Some(t), None).await
}

/// Sends an error reply for `el` back to its sender (never for errors), with the condition's
/// default type unless `t` is given, and an optional `<text/>`. Every bounce goes through
/// here, so [`watch_bounces`] sees it.
pub async fn bounce_with(
    shared: &Arc<Shared>,
    el: &Element,
    cond: StanzaErrorCondition,
    t: Option<ErrorType>,
    text: Option<&str>,
) {
    let reply = match t {
        Some(t) => stanza::error_typed(el, cond, t, text),
        None => stanza::error(el, cond, text),
    };
    if let Some(reply) = reply {
        let _ = BOUNCED.try_with(|b| b.set(true));
        Box::pin(route(shared, reply)).await;
    }
}

tokio::task_local! {
    /// Set while [`watch_bounces`] runs a routing step: whether it sent an error back.
    static BOUNCED: std::cell::Cell<bool>;
}

/// Runs a routing step (`route`, a delivery) and tells whether it bounced the stanza back to
/// its sender. Local delivery runs in the caller's task, so a refusal anywhere on the way
/// (unknown or blocking recipient, full inbox, full offline store, no space) is seen here
/// before the caller archives the message: a bounced message is not kept in an archive.
/// An enclosing `watch_bounces` sees the bounce too. A bounce that comes later from another
/// task (a remote server's error, an s2s queue timing out) is not seen.
pub async fn watch_bounces<F: std::future::Future>(f: F) -> (F::Output, bool) {
    let (out, bounced) = BOUNCED
        .scope(std::cell::Cell::new(false), async {
            let out = f.await;
            (out, BOUNCED.with(|b| b.get()))
        })
        .await;
    if bounced {
        let _ = BOUNCED.try_with(|b| b.set(true));
    }
    (out, bounced)
}

/// Routes a stanza whose `from` is already stamped and trustworthy.
pub async fn route(shared: &Arc<Shared>, el: Element) {
    shared
        .metrics
        .stanzas_routed
        .fetch_add(1, Ordering::Relaxed);
    let to = match stanza::to(&el) {
        Ok(Some(to)) => to,
        Ok(None) => {
            // Addressed to the server itself: the sender's domain if it is ours.
            let domain = match stanza::from(&el) {
                Ok(Some(f)) if shared.cfg.is_local(f.domain().as_str()) => f.domain().to_string(),
                _ => shared.domain().to_string(),
            };
            let mut el = el;
            stanza::set(&mut el, "to", domain);
            return Box::pin(route(shared, el)).await;
        }
        Err(_) => return bounce(shared, &el, StanzaErrorCondition::JidMalformed).await,
    };
    match dest(shared, to.domain().as_str()) {
        Dest::Local => deliver_local(shared, to, el).await,
        Dest::Component(domain) => match shared.router.component(&domain) {
            Some(tx) => to_component(shared, &tx, el).await,
            None => {
                // Cluster mode: the component may be attached to another node.
                let link = match shared.cluster.get() {
                    Some(c) => c.component_link(&domain).await,
                    None => None,
                };
                match link {
                    Some(l) => {
                        if let Err(el) = l.send_component(&domain, el) {
                            bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint)
                                .await;
                        }
                    }
                    None => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
                }
            }
        },
        Dest::Remote => {
            hooks::run(&shared.hooks.to_remote, shared, hooks::ToRemote { el }).await;
        }
        Dest::Muc => {
            // Cluster mode: one node serves the rooms; a stanza routed here by another
            // node is served here whatever this node believes (no ping-pong).
            let home = match shared.cluster.get() {
                Some(c) if msg::ROUTED_HERE.try_with(|_| ()).is_err() => {
                    Box::pin(c.muc_home_link(shared)).await
                }
                _ => None,
            };
            match home {
                Some(link) => {
                    tracing::debug!(node = %link.node, "group chat stanza routed to its node");
                    let to = to.domain().to_string();
                    if let Err(el) = link.send_route(&to, el) {
                        bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
                    }
                }
                None => {
                    hooks::run(&shared.hooks.to_muc, shared, hooks::ToMuc { el }).await;
                }
            }
        }
    }
}

/// Hands a stanza to an attached XEP-0114 component; a full queue bounces it (wait).
pub async fn to_component(shared: &Arc<Shared>, tx: &msg::ComponentTx, el: Element) {
    if tx.try_send(el.clone()).is_err() {
        bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
    }
}

/// Puts a stanza in a session's inbox under a fresh routing id.
pub fn send_to(shared: &Shared, r: &ResourceEntry, el: Element) -> Result<(), Option<Element>> {
    send_to_routed(shared, r, Routed::new(shared.next_id(), el))
}

/// Puts a routed stanza in a session's inbox, charged to its byte budget (and its
/// account's); Err(Some(el)) if full, over budget or gone.
pub fn send_to_routed(
    shared: &Shared,
    r: &ResourceEntry,
    mut routed: Routed,
) -> Result<(), Option<Element>> {
    // Weighed once here; the charge travels with the stanza through the CSI buffer and the
    // XEP-0198 queue and is given back when it leaves them.
    let cost = stanza::mem_cost(&routed.el);
    match r.tx.budget().try_charge(cost) {
        Ok(c) => routed.charge = Some(c),
        Err(over) => {
            shared.metrics.inbox_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %r.resource, ?over, cost, "session queue bytes exceeded");
            return Err(Some(routed.el));
        }
    }
    if r.hibernated && routed.durable.is_none() && stanza::kind(&routed.el) == Some(Kind::Message) {
        routed.durable = crate::routing::durable::durable_ticket();
    }
    match r.tx.try_send(SessionMsg::Stanza(Box::new(routed))) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(SessionMsg::Stanza(rt))) => {
            shared.metrics.inbox_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %r.resource, "session inbox full");
            Err(Some(rt.el))
        }
        Err(TrySendError::Closed(SessionMsg::Stanza(rt))) => Err(Some(rt.el)),
        Err(_) => Err(None),
    }
}

/// Bounces with an error of type `wait` (try again later).
pub async fn bounce_wait(shared: &Arc<Shared>, el: &Element, cond: StanzaErrorCondition) {
    bounce_typed(shared, el, cond, ErrorType::Wait).await
}

async fn user_exists(shared: &Arc<Shared>, bare: &str) -> bool {
    // A removed account's sessions may still be ending: they are no reason to deliver.
    if shared.account_gone(bare) {
        return false;
    }
    if shared.router.is_online(bare) {
        return true;
    }
    let b = bare.to_string();
    match shared.db_read(|s: &roles::Accounts| s.account_exists(&b)) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            false
        }
    }
}

async fn deliver_local(shared: &Arc<Shared>, to: Jid, el: Element) {
    if to.node().is_none() {
        // To the server's domain (or a resource of it).
        hooks::run(&shared.hooks.to_server, shared, hooks::ToServer { el }).await;
        return;
    }
    let bare = to.to_bare().to_string();
    let k = stanza::kind(&el);
    if !user_exists(shared, &bare).await {
        // RFC 6121 §8.5.1: no such user.
        match k {
            Some(Kind::Presence) => {
                if stanza::typ(&el) == "subscribe" {
                    // RFC 6121 §3.1.3 rule 1: answer unsubscribed for a user that does not exist.
                    let r = stanza::new(
                        "presence",
                        herald_proto::stream::INTERNAL_NS,
                        &[("type", "unsubscribed"), ("from", &bare)],
                    );
                    let mut r = r;
                    if let Some(f) = el.attr("from") {
                        stanza::set(&mut r, "to", f);
                        Box::pin(route(shared, r)).await;
                    }
                }
            }
            _ => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
        }
        return;
    }
    let h = &shared.hooks;
    match k {
        Some(Kind::Message) => {
            let routed = Routed::new(shared.next_id(), el);
            let ev = hooks::MessageToLocal { bare, to, routed };
            hooks::run(&h.message_to_local, shared, ev).await;
        }
        Some(Kind::Presence) => {
            let ev = hooks::PresenceToLocal { bare, to, el };
            hooks::run(&h.presence_to_local, shared, ev).await;
        }
        Some(Kind::Iq) => {
            hooks::run(&h.iq_to_local, shared, hooks::IqToLocal { bare, to, el }).await;
        }
        None => {}
    }
}
