//! Delivery rules (RFC 6121 §8): where a stanza addressed by a local entity goes — a local
//! session, a component, the server itself, or back to the sender as an error.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::Element;
use herald_store::AccountStore;
use tokio::sync::mpsc::error::TrySendError;

use crate::router::{best_resources, ResourceEntry, SessionMsg};
use crate::stanza::{self, Kind};
use crate::{iq, Shared};

/// Where a domain is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Dest {
    /// Our own domain.
    Local,
    /// A configured component (the configured domain).
    Component(String),
    /// Anything else.
    Remote,
}

/// Classifies a domain.
pub fn dest(shared: &Shared, domain: &str) -> Dest {
    if domain.eq_ignore_ascii_case(shared.domain()) {
        Dest::Local
    } else if let Some(c) = shared.cfg.component_for(domain) {
        Dest::Component(c.domain.clone())
    } else {
        Dest::Remote
    }
}

/// Sends an error reply for `el` back to its sender (never for errors).
pub async fn bounce(shared: &Arc<Shared>, el: &Element, cond: StanzaErrorCondition) {
    if let Some(reply) = stanza::error(el, cond, None) {
        Box::pin(route(shared, reply)).await;
    }
}

async fn bounce_typed(
    shared: &Arc<Shared>,
    el: &Element,
    cond: StanzaErrorCondition,
    t: ErrorType,
) {
    if let Some(reply) = stanza::error_typed(el, cond, t, None) {
        Box::pin(route(shared, reply)).await;
    }
}

/// Routes a stanza whose `from` is already stamped and trustworthy.
pub async fn route(shared: &Arc<Shared>, el: Element) {
    let to = match stanza::to(&el) {
        Ok(Some(to)) => to,
        Ok(None) => {
            // Addressed to the server itself.
            let domain = shared.domain().to_string();
            let mut el = el;
            stanza::set(&mut el, "to", domain);
            return Box::pin(route(shared, el)).await;
        }
        Err(()) => return bounce(shared, &el, StanzaErrorCondition::JidMalformed).await,
    };
    match dest(shared, to.domain().as_str()) {
        Dest::Local => deliver_local(shared, to, el).await,
        Dest::Component(domain) => match shared.router.component(&domain) {
            Some(tx) => {
                if tx.try_send(el.clone()).is_err() {
                    bounce_typed(
                        shared,
                        &el,
                        StanzaErrorCondition::ResourceConstraint,
                        ErrorType::Wait,
                    )
                    .await;
                }
            }
            None => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
        },
        Dest::Remote => bounce(shared, &el, StanzaErrorCondition::RemoteServerNotFound).await,
    }
}

/// Puts a stanza in a session's inbox; Err(el) if that session is gone.
pub fn send_to(shared: &Shared, r: &ResourceEntry, el: Element) -> Result<(), Option<Element>> {
    match r.tx.try_send(SessionMsg::Stanza(el)) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(SessionMsg::Stanza(el))) => {
            shared.metrics.inbox_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %r.resource, "session inbox full");
            Err(Some(el))
        }
        Err(TrySendError::Closed(SessionMsg::Stanza(el))) => Err(Some(el)),
        Err(_) => Err(None),
    }
}

async fn user_exists(shared: &Arc<Shared>, bare: &str) -> bool {
    if shared.router.is_online(bare) {
        return true;
    }
    let b = bare.to_string();
    match shared.db(move |s| s.account_exists(&b)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            false
        }
    }
}

async fn deliver_local(shared: &Arc<Shared>, to: Jid, el: Element) {
    let Some(_node) = to.node() else {
        // To the server's domain (or a resource of it).
        if let Some(reply) = iq::handle_server_stanza(shared, &el).await {
            Box::pin(route(shared, reply)).await;
        }
        return;
    };
    let bare = to.to_bare().to_string();
    let k = stanza::kind(&el);
    if !user_exists(shared, &bare).await {
        // RFC 6121 §8.5.1: no such user.
        match k {
            Some(Kind::Presence) => {}
            _ => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
        }
        return;
    }
    if let Some(res) = to.resource() {
        if let Some(r) = shared.router.resource(&bare, res.as_str()) {
            match send_to(shared, &r, el) {
                Ok(()) => return,
                Err(Some(el)) if r.tx.is_closed() => {
                    return Box::pin(deliver_full_offline(shared, &bare, el, k)).await;
                }
                Err(Some(el)) => {
                    return bounce_typed(
                        shared,
                        &el,
                        StanzaErrorCondition::ResourceConstraint,
                        ErrorType::Wait,
                    )
                    .await
                }
                Err(None) => return,
            }
        }
        return deliver_full_offline(shared, &bare, el, k).await;
    }
    match k {
        Some(Kind::Message) => deliver_message_bare(shared, &bare, el).await,
        Some(Kind::Presence) => {
            for r in shared
                .router
                .resources(&bare)
                .iter()
                .filter(|r| r.available)
            {
                let _ = send_to(shared, r, el.clone());
            }
        }
        Some(Kind::Iq) => {
            // RFC 6121 §8.5.2.1.3: the server answers IQs to the bare JID on the account's behalf.
            if let Some(reply) = iq::handle_account_iq_from_other(shared, &bare, &el).await {
                Box::pin(route(shared, reply)).await;
            }
        }
        None => {}
    }
}

/// RFC 6121 §8.5.3.2: full JID with no such resource.
async fn deliver_full_offline(shared: &Arc<Shared>, bare: &str, el: Element, k: Option<Kind>) {
    match k {
        Some(Kind::Message) => match stanza::typ(&el) {
            "groupchat" => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
            "headline" | "error" => {}
            _ => deliver_message_bare(shared, bare, el).await,
        },
        Some(Kind::Presence) => {}
        Some(Kind::Iq) => bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
        None => {}
    }
}

/// RFC 6121 §8.5.2.1.1: a message to the bare JID.
pub async fn deliver_message_bare(shared: &Arc<Shared>, bare: &str, el: Element) {
    let list = shared.router.resources(bare);
    let t = stanza::typ(&el);
    let targets: Vec<&ResourceEntry> = match t {
        "groupchat" => {
            return bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await;
        }
        "headline" => list
            .iter()
            .filter(|r| r.available && r.priority >= 0)
            .collect(),
        _ => best_resources(&list),
    };
    if targets.is_empty() {
        return crate::session::no_available_resource(shared, bare, el).await;
    }
    let mut delivered = false;
    for r in targets {
        if send_to(shared, r, el.clone()).is_ok() {
            delivered = true;
        }
    }
    if !delivered {
        bounce_typed(
            shared,
            &el,
            StanzaErrorCondition::ResourceConstraint,
            ErrorType::Wait,
        )
        .await;
    }
}
