//! XEP-0191 blocking: the user's blocklist, consulted for every message and presence in
//! both directions, and the `urn:xmpp:blocking` IQs with pushes to the user's resources.

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::Jid;
use herald_proto::Element;
use herald_store::{roles, StoreError};

use crate::features::ctx::SessionCtx;
use crate::routing::hooks::{Fut, PresenceToLocal};
use crate::routing::msg::Command;
use crate::stanza;
use crate::xep::blocking::{self as xb, BlockCmd, Blocklist};
use crate::{routing, Shared};

/// The user's blocklist, shared (not copied) from the cache: it is consulted twice for every
/// message; only the IQs below change it, and they invalidate the cache. Empty when it
/// cannot be read (logged). A miss reads the store on the blocking pool: the list holds up
/// to `[blocking] max_items` JIDs.
pub async fn blocklist(shared: &Arc<Shared>, user: &str) -> Arc<Blocklist> {
    if let Some(l) = shared.blocklists.get(user) {
        return l;
    }
    let u = user.to_string();
    match shared.db(move |s: &roles::Blocks| s.blocklist(&u)).await {
        Ok(l) => shared.blocklists.put(user, Blocklist::new(l)),
        Err(e) => {
            tracing::error!(error = %e, "blocklist lookup failed");
            Arc::default()
        }
    }
}

/// Whether `user` blocked `from` (stanzas from it are not delivered).
pub async fn inbound_blocked(shared: &Arc<Shared>, user: &str, from: &Jid) -> bool {
    blocklist(shared, user).await.matches(from.as_str())
}

/// Whether `user` blocked `to` (stanzas to it are refused).
pub async fn outbound_blocked(shared: &Arc<Shared>, user: &str, to: &Jid) -> bool {
    if to.node().is_none() && shared.cfg.is_local(to.domain().as_str()) {
        return false;
    }
    blocklist(shared, user).await.matches(to.as_str())
}

/// XEP-0191 §3.5: a stanza to a blocked entity gets not-acceptable with `<blocked/>`.
pub async fn bounce_blocked(shared: &Arc<Shared>, el: &Element) {
    if let Some(mut e) = stanza::error(el, StanzaErrorCondition::NotAcceptable, None) {
        if let Some(err) = e.get_child_mut("error", herald_proto::stream::INTERNAL_NS) {
            err.append_child(Element::bare("blocked", "urn:xmpp:blocking:errors"));
        }
        // Straight to the sender's session: routed, the error would come from the blocked
        // entity and the user's own inbound blocking would swallow it.
        let target = stanza::to(&e).ok().flatten().and_then(|to| {
            let res = to.resource()?.to_string();
            shared.router.resource(&to.to_bare().to_string(), &res)
        });
        match target {
            Some(r) => {
                let _ = routing::send_to(shared, &r, e);
            }
            None => routing::route(shared, e).await,
        }
    }
}

/// A blocking IQ from the user's client; returns the reply.
pub async fn handle_iq(session: &mut SessionCtx, el: &Element) -> Element {
    let shared = session.shared.clone();
    let user = session.bare.clone();
    let cmd = match xb::parse(el) {
        Ok(c) => c,
        Err(cond) => {
            return stanza::error(el, cond, None).unwrap_or_else(|| stanza::iq_result(el, None))
        }
    };
    // The entries this command changes (for `unblock` without items: everything listed now).
    let changed = match &cmd {
        BlockCmd::List => Vec::new(),
        BlockCmd::Unblock(jids) if jids.is_empty() => blocklist(&shared, &user).await.sorted(),
        BlockCmd::Block(jids) | BlockCmd::Unblock(jids) => jids.clone(),
    };
    let u = user.clone();
    let r = match &cmd {
        BlockCmd::List => {
            let l = blocklist(&shared, &user).await.sorted();
            return stanza::iq_result(el, Some(xb::blocklist_element(&l)));
        }
        BlockCmd::Block(jids) => {
            let (j, max) = (jids.clone(), shared.cfg.blocking.max_items);
            shared
                .db(move |s: &roles::Blocks| s.block(&u, &j, max))
                .await
        }
        BlockCmd::Unblock(jids) if jids.is_empty() => {
            shared.db(move |s: &roles::Blocks| s.unblock_all(&u)).await
        }
        BlockCmd::Unblock(jids) => {
            let j = jids.clone();
            shared.db(move |s: &roles::Blocks| s.unblock(&u, &j)).await
        }
    };
    shared.blocklists.invalidate(&user);
    shared.cluster_invalidate(crate::Cached::Blocklist, &user);
    if let Err(StoreError::QuotaExceeded) = r {
        // `[blocking] max_items`: the list is held in memory for every stanza; nothing of
        // this block was stored, and nothing is pushed.
        return stanza::error(
            el,
            StanzaErrorCondition::ResourceConstraint,
            Some("blocklist is full"),
        )
        .unwrap_or_else(|| stanza::iq_result(el, None));
    }
    if let Err(e) = r {
        tracing::error!(error = %e, "blocklist update failed");
        return crate::features::ctx::store_failed(el, &e);
    }
    presence_effects(
        &shared,
        &user,
        &changed,
        matches!(cmd, BlockCmd::Unblock(_)),
    )
    .await;
    // XEP-0191 §3.3: push the change to every resource that asked for the list (all, here).
    let push = xb::push_element(&cmd);
    for r in shared.router.resources(&user) {
        let mut iq = stanza::new(
            "iq",
            herald_proto::stream::INTERNAL_NS,
            &[("type", "set"), ("id", "block-push")],
        );
        stanza::set(&mut iq, "to", format!("{user}/{}", r.resource));
        iq.append_child(push.clone());
        let _ =
            r.tx.try_send(crate::routing::msg::SessionMsg::Command(Command::Send(
                vec![iq],
            )));
    }
    stanza::iq_result(el, None)
}

/// The user's contacts that receive the user's presence (`from`/`both`), as bare JIDs.
async fn presence_subscribers(shared: &Arc<Shared>, user: &str) -> Vec<String> {
    let u = user.to_string();
    match shared
        .db(move |s: &roles::Roster| s.roster_subscriptions(&u))
        .await
    {
        Ok(items) => items
            .into_iter()
            .filter(|i| {
                matches!(
                    i.subscription,
                    herald_store::Subscription::From | herald_store::Subscription::Both
                )
            })
            .map(|i| i.jid)
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            Vec::new()
        }
    }
}

/// XEP-0191 §3.3: a newly blocked contact that was allowed to see the user's presence gets
/// `unavailable` (the user now looks offline to it); §3.4: an unblocked one gets the user's
/// current presence again.
async fn presence_effects(shared: &Arc<Shared>, user: &str, changed: &[String], unblocked: bool) {
    if changed.is_empty() {
        return;
    }
    let changed = Blocklist::new(changed.iter().cloned());
    let concerned = presence_subscribers(shared, user)
        .await
        .into_iter()
        .filter(|c| changed.matches(c));
    if !unblocked {
        for contact in concerned {
            crate::features::roster::send_unavailable_to(shared, user, &contact).await;
        }
        return;
    }
    let still_blocked = blocklist(shared, user).await;
    for contact in concerned {
        if still_blocked.matches(&contact) {
            continue;
        }
        // Each available resource answers a probe with its last presence (answer_probe
        // checks the subscription), which is exactly "the current presence".
        let probe = stanza::new(
            "presence",
            herald_proto::stream::INTERNAL_NS,
            &[("type", "probe"), ("from", &contact), ("to", user)],
        );
        routing::route(shared, probe).await;
    }
}

/// The `presence_to_local` hook, first: presence from a blocked entity is dropped
/// (XEP-0191 §3.3).
pub fn presence_in(shared: &Arc<Shared>, ev: PresenceToLocal) -> Fut<'_, Option<PresenceToLocal>> {
    Box::pin(async move {
        if let Ok(Some(from)) = stanza::from(&ev.el) {
            if inbound_blocked(shared, &ev.bare, &from).await {
                return None;
            }
        }
        Some(ev)
    })
}
