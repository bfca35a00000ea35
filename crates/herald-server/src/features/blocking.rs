//! XEP-0191 blocking: the user's blocklist, consulted for every message and presence in
//! both directions, and the `urn:xmpp:blocking` IQs with pushes to the user's resources.

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::Jid;
use herald_proto::Element;
use herald_store::roles;

use crate::features::ctx::SessionCtx;
use crate::routing::hooks::{Fut, PresenceToLocal};
use crate::routing::msg::Command;
use crate::stanza;
use crate::xep::blocking::{self as xb, BlockCmd};
use crate::{routing, Shared};

/// The user's blocklist (normalised JIDs); empty when it cannot be read (logged).
pub async fn blocklist(shared: &Arc<Shared>, user: &str) -> Vec<String> {
    list(shared, user).await.as_ref().clone()
}

/// The blocklist, from the cache (it is consulted twice for every message; only the IQs
/// below change it, and they invalidate the cache).
async fn list(shared: &Arc<Shared>, user: &str) -> Arc<Vec<String>> {
    if let Some(l) = shared.blocklists.get(user) {
        return l;
    }
    let u = user.to_string();
    match shared.db_read(|s: &roles::Blocks| s.blocklist(&u)) {
        Ok(l) => shared.blocklists.put(user, l),
        Err(e) => {
            tracing::error!(error = %e, "blocklist lookup failed");
            Arc::new(Vec::new())
        }
    }
}

/// Whether `user` blocked `from` (stanzas from it are not delivered).
pub async fn inbound_blocked(shared: &Arc<Shared>, user: &str, from: &Jid) -> bool {
    let l = list(shared, user).await;
    !l.is_empty() && xb::matches(&l, from.as_str())
}

/// Whether `user` blocked `to` (stanzas to it are refused).
pub async fn outbound_blocked(shared: &Arc<Shared>, user: &str, to: &Jid) -> bool {
    if to.node().is_none() && shared.cfg.is_local(to.domain().as_str()) {
        return false;
    }
    let l = list(shared, user).await;
    !l.is_empty() && xb::matches(&l, to.as_str())
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
        BlockCmd::Unblock(jids) if jids.is_empty() => list(&shared, &user).await.as_ref().clone(),
        BlockCmd::Block(jids) | BlockCmd::Unblock(jids) => jids.clone(),
    };
    let u = user.clone();
    let r = match &cmd {
        BlockCmd::List => {
            let l = list(&shared, &user).await;
            return stanza::iq_result(el, Some(xb::blocklist_element(&l)));
        }
        BlockCmd::Block(jids) => {
            let j = jids.clone();
            shared.db(move |s: &roles::Blocks| s.block(&u, &j)).await
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
    if let Err(e) = r {
        tracing::error!(error = %e, "blocklist update failed");
        return stanza::error_typed(
            el,
            StanzaErrorCondition::InternalServerError,
            herald_proto::error::ErrorType::Wait,
            None,
        )
        .unwrap_or_else(|| stanza::iq_result(el, None));
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
    match shared.db(move |s: &roles::Roster| s.roster(&u)).await {
        Ok((_, items)) => items
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
    let concerned = presence_subscribers(shared, user)
        .await
        .into_iter()
        .filter(|c| xb::matches(changed, c));
    if !unblocked {
        for contact in concerned {
            crate::features::roster::send_unavailable_to(shared, user, &contact).await;
        }
        return;
    }
    let still_blocked = list(shared, user).await;
    for contact in concerned {
        if xb::matches(&still_blocked, &contact) {
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
