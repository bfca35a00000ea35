//! Rosters (RFC 6121 §2, XEP-0237 versioning): the roster IQs, roster pushes to a user's
//! interested resources, and reading/writing the subscription state herald-session's machine
//! works on (roster item + stored pending request).

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;
use herald_session::subscription::{State, Sub};
use herald_store::{roles, RosterItem, StoreError, Subscription};

use crate::features::ctx::SessionCtx;
use crate::routing::msg::Command;
use crate::routing::msg::SessionMsg;
use crate::stanza;
use crate::xep::roster::{self as xr, RosterReq};
use crate::Shared;

/// Store ⇄ state machine.
pub fn to_sub(s: Subscription) -> Sub {
    match s {
        Subscription::None => Sub::None,
        Subscription::To => Sub::To,
        Subscription::From => Sub::From,
        Subscription::Both => Sub::Both,
    }
}

/// State machine ⇄ store.
pub fn from_sub(s: Sub) -> Subscription {
    match s {
        Sub::None => Subscription::None,
        Sub::To => Subscription::To,
        Sub::From => Subscription::From,
        Sub::Both => Subscription::Both,
    }
}

/// The user's item for `contact` and the subscription state (None: no item, no request).
pub fn load_state(
    store: &roles::Roster,
    user: &str,
    contact: &str,
) -> Result<(Option<RosterItem>, Option<State>), StoreError> {
    let item = store.roster_item(user, contact)?;
    let pending_in = store.has_subscription_request(user, contact)?;
    let state = match (&item, pending_in) {
        (None, false) => None,
        (i, p) => Some(State {
            sub: i
                .as_ref()
                .map(|i| to_sub(i.subscription))
                .unwrap_or(Sub::None),
            pending_out: i.as_ref().map(|i| i.ask).unwrap_or(false),
            pending_in: p,
        }),
    };
    Ok((item, state))
}

/// An inbound subscription request to store, and the most a user may have pending.
pub struct Request<'a> {
    pub xml: &'a str,
    pub max_pending: usize,
}

/// Writes a new state; returns (version, item) when the roster item changed (for a push).
/// [`StoreError::QuotaExceeded`], with nothing written, if `request` is over its limit.
pub fn save_state(
    store: &roles::Roster,
    user: &str,
    contact: &str,
    item: Option<RosterItem>,
    old: Option<State>,
    new: Option<State>,
    request: Option<Request<'_>>,
) -> Result<Option<(u64, RosterItem)>, StoreError> {
    let old_in = old.map(|s| s.pending_in).unwrap_or(false);
    let new_in = new.map(|s| s.pending_in).unwrap_or(false);
    if new_in && !old_in {
        if let Some(r) = request {
            store.add_subscription_request(user, contact, r.xml, r.max_pending)?;
        }
    }
    if !new_in && old_in {
        store.remove_subscription_request(user, contact)?;
    }
    let Some(new) = new else { return Ok(None) };
    let (sub, ask) = new.roster_view();
    let changed = match &item {
        Some(i) => to_sub(i.subscription) != sub || i.ask != ask,
        // A request alone does not put the contact in the roster (RFC 6121 §3.1.3).
        None => sub != Sub::None || ask,
    };
    if !changed {
        return Ok(None);
    }
    let mut it = item.unwrap_or(RosterItem {
        jid: contact.to_string(),
        name: None,
        subscription: Subscription::None,
        ask: false,
        groups: Vec::new(),
    });
    it.subscription = from_sub(sub);
    it.ask = ask;
    let ver = store.set_roster_item(user, &it)?;
    Ok(Some((ver, it)))
}

/// Sends a roster push for `item` (or its removal) to every resource of `user` that asked for
/// the roster (the session filters on its own "interested" flag).
pub fn push(shared: &Shared, user: &str, ver: u64, item_el: Element) {
    for r in shared.router.resources(user) {
        let full = format!("{user}/{}", r.resource);
        let iq = xr::push(&full, ver, item_el.clone(), &format!("push{ver}"));
        let _ =
            r.tx.try_send(SessionMsg::Command(Command::RosterPush(Box::new(iq))));
    }
}

/// A roster IQ from the session's client; returns the reply.
pub async fn handle_iq(session: &mut SessionCtx, el: &Element) -> Element {
    let shared = session.shared.clone();
    let user = session.bare.clone();
    let cfg = &shared.cfg.roster;
    let req = match xr::parse(el, cfg.max_field_bytes, cfg.max_groups_per_item) {
        Ok(r) => r,
        Err(c) => return stanza::error(el, c, None).unwrap_or_else(|| stanza::iq_result(el, None)),
    };
    match req {
        RosterReq::Get { ver } => {
            session.presence.interested = true;
            let u = user.clone();
            let (cur, items) = match shared.db(move |s: &roles::Roster| s.roster(&u)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "roster load failed");
                    return crate::features::ctx::store_failed(el, &e);
                }
            };
            // XEP-0237 §4: an up-to-date client gets an empty result; pushes follow.
            if ver.as_deref() == Some(cur.to_string().as_str()) {
                return stanza::iq_result(el, None);
            }
            stanza::iq_result(el, Some(xr::query_element(Some(cur), &items)))
        }
        RosterReq::Set(item) => {
            if item.jid == user {
                return stanza::error(
                    el,
                    StanzaErrorCondition::NotAllowed,
                    Some("you cannot add yourself"),
                )
                .unwrap_or_else(|| stanza::iq_result(el, None));
            }
            if item.remove {
                return remove(&shared, &user, &item.jid, el).await;
            }
            let (u, max) = (user.clone(), shared.cfg.roster.max_items);
            let it = item;
            let r = shared
                .db(move |s: &roles::Roster| {
                    let existing = s.roster_item(&u, &it.jid)?;
                    if existing.is_none() && s.roster_len(&u)? >= max {
                        return Err(StoreError::QuotaExceeded);
                    }
                    let mut new = existing.unwrap_or(RosterItem {
                        jid: it.jid.clone(),
                        name: None,
                        subscription: Subscription::None,
                        ask: false,
                        groups: Vec::new(),
                    });
                    new.name = it.name.clone();
                    new.groups = it.groups.clone();
                    let ver = s.set_roster_item(&u, &new)?;
                    Ok((ver, new))
                })
                .await;
            match r {
                Ok((ver, item)) => {
                    push(&shared, &user, ver, xr::item_element(&item));
                    stanza::iq_result(el, None)
                }
                Err(StoreError::QuotaExceeded) => stanza::error(
                    el,
                    StanzaErrorCondition::ResourceConstraint,
                    Some("roster is full"),
                )
                .unwrap_or_else(|| stanza::iq_result(el, None)),
                Err(e) => {
                    tracing::error!(error = %e, "roster set failed");
                    crate::features::ctx::store_failed(el, &e)
                }
            }
        }
    }
}

/// RFC 6121 §2.5: removing an item cancels subscriptions both ways.
pub async fn remove(shared: &Arc<Shared>, user: &str, contact: &str, el: &Element) -> Element {
    match remove_contact(shared, user, contact).await {
        Ok(true) => stanza::iq_result(el, None),
        Ok(false) => stanza::error(el, StanzaErrorCondition::ItemNotFound, None)
            .unwrap_or_else(|| stanza::iq_result(el, None)),
        Err(e) => {
            tracing::error!(error = %e, "roster remove failed");
            crate::features::ctx::store_failed(el, &e)
        }
    }
}

/// Removes `contact` from `user`'s roster, telling the contact as RFC 6121 §2.5.2 says.
/// Ok(false) when there was no such item.
pub async fn remove_contact(
    shared: &Arc<Shared>,
    user: &str,
    contact: &str,
) -> Result<bool, StoreError> {
    let (u, c) = (user.to_string(), contact.to_string());
    let (item, state) = shared
        .db(move |s: &roles::Roster| load_state(s, &u, &c))
        .await?;
    if item.is_none() {
        return Ok(false);
    }
    let rm = herald_session::subscription::removal(state.unwrap_or_default());
    if rm.send_unavailable {
        send_unavailable_to(shared, user, contact).await;
    }
    for (send, typ) in [
        (rm.send_unsubscribe, "unsubscribe"),
        (rm.send_unsubscribed, "unsubscribed"),
    ] {
        if send {
            let p = stanza::new(
                "presence",
                INTERNAL_NS,
                &[("type", typ), ("from", user), ("to", contact)],
            );
            crate::routing::route(shared, p).await;
        }
    }
    let (u, c) = (user.to_string(), contact.to_string());
    let ver = shared
        .db(move |s: &roles::Roster| {
            let _ = s.remove_subscription_request(&u, &c)?;
            s.remove_roster_item(&u, &c)
        })
        .await?;
    push(shared, user, ver, xr::removed_item(contact));
    Ok(true)
}

/// Presence unavailable from each of `user`'s available resources to `contact`.
pub async fn send_unavailable_to(shared: &Arc<Shared>, user: &str, contact: &str) {
    for r in shared
        .router
        .resources(user)
        .into_iter()
        .filter(|r| r.available)
    {
        let p = stanza::new(
            "presence",
            INTERNAL_NS,
            &[
                ("type", "unavailable"),
                ("from", &format!("{user}/{}", r.resource)),
                ("to", contact),
            ],
        );
        crate::routing::route(shared, p).await;
    }
}
