//! Presence (RFC 6121 §3–§4): subscriptions through herald-session's state machine, initial
//! presence (broadcast, probes, offline delivery, pending requests), directed presence,
//! probes, and the unavailable broadcast when a session ends.

use std::collections::HashSet;
use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::Jid;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;
use herald_session::subscription::{self as sm, SubKind};
use herald_store::roles;
use herald_store::{RosterItem, StoreError};

use crate::features::ctx::{Effect, SessionCtx};
use crate::routing::hooks::{Fut, PresenceToLocal};
use crate::stanza;
use crate::xep::roster as xr;
use crate::xep::subscription as xs;
use crate::{features::roster, routing, Shared};

/// Most JIDs one session may have sent directed presence to (each must later get its
/// unavailable).
pub const MAX_DIRECTED: usize = 1000;

pub use crate::features::ctx::SessionPresence;

/// The user's contacts with their subscription states (no names or groups), for a presence
/// broadcast and the initial probes. Read on the blocking pool at each broadcast: up to
/// `[roster] max_items` rows, and not cached, because a roster also changes outside the
/// session (the contact's answers, `herald roster`), and a stale copy would show presence to
/// someone who may no longer see it.
async fn roster_items(shared: &Arc<Shared>, user: &str) -> Vec<RosterItem> {
    let u = user.to_string();
    match shared
        .db(move |s: &roles::Roster| s.roster_subscriptions(&u))
        .await
    {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "roster load failed");
            Vec::new()
        }
    }
}

/// `user`'s roster item and subscription state for `contact` (a blocking store call).
async fn sub_state(
    shared: &Arc<Shared>,
    user: &str,
    contact: &str,
) -> Result<(Option<RosterItem>, Option<sm::State>), StoreError> {
    let (u, c) = (user.to_string(), contact.to_string());
    shared
        .db(move |s: &roles::Roster| roster::load_state(s, &u, &c))
        .await
}

/// Whether `contact` may see `user`'s presence (a store failure counts as no).
async fn contact_gets_presence(shared: &Arc<Shared>, user: &str, contact: &str) -> bool {
    sub_state(shared, user, contact)
        .await
        .ok()
        .and_then(|(_, s)| s)
        .is_some_and(|s| s.contact_gets_presence())
}

fn addressed(el: &Element, from: &str, to: &str) -> Element {
    let mut p = el.clone();
    stanza::set(&mut p, "from", from);
    stanza::set(&mut p, "to", to);
    p
}

/// A presence stanza the session's client sent (`from` already stamped).
pub async fn outbound(session: &mut SessionCtx, el: Element, to: Option<Jid>) {
    let shared = session.shared.clone();
    let typ = stanza::typ(&el).to_string();
    match (to, typ.as_str()) {
        (None, "") => available(session, el).await,
        (None, "unavailable") => {
            session.set_presence(false, 0);
            let me = session.jid.to_string();
            crate::features::pep::own_presence(&shared, &session.bare, &me, None).await;
            let items = roster_items(&shared, &session.bare).await;
            broadcast(session, &el, true, &items).await;
            session.presence.last = None;
            session.presence.directed.clear();
            session.effects.push(Effect::StopBacklog);
            // RFC 6121 §4.5: unavailable ends the presence session; the next available
            // presence is initial presence again (probes, pending requests, offline messages).
            session.presence.initial_sent = false;
        }
        (None, _) => {}
        (Some(to), "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed") => {
            if let Some(kind) = SubKind::from_presence_type(&typ) {
                subscription_out(&shared, &session.bare, el, to, kind).await;
            }
        }
        (Some(_), "probe") => {}
        (Some(to), _) => {
            // XEP-0191 §3.3: nothing is routed to a blocked entity; the client is told why.
            if crate::features::blocking::outbound_blocked(&shared, &session.bare, &to).await {
                crate::features::blocking::bounce_blocked(&shared, &el).await;
                return;
            }
            // RFC 6121 §4.6: directed presence; remember who must hear our unavailable.
            if typ.is_empty() {
                // Bounded: a client cannot grow our memory by addressing endless JIDs.
                if session.presence.directed.len() >= MAX_DIRECTED
                    && !session.presence.directed.contains(to.as_str())
                {
                    if let Some(e) = stanza::error(
                        &el,
                        herald_proto::error::StanzaErrorCondition::ResourceConstraint,
                        Some("too many directed presence recipients"),
                    ) {
                        routing::route(&shared, e).await;
                    }
                    return;
                }
                session.presence.directed.insert(to.to_string());
                // XEP-0398 §4: directed presence (a MUC join) carries the hash too.
                let mut el = el;
                crate::features::vcard::stamp(&shared, &session.bare, &mut el).await;
                routing::route(&shared, el).await;
                return;
            } else if typ == "unavailable" {
                session.presence.directed.remove(to.as_str());
            }
            routing::route(&shared, el).await;
        }
    }
}

async fn available(session: &mut SessionCtx, el: Element) {
    let shared = session.shared.clone();
    let prio = el
        .get_child("priority", INTERNAL_NS)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    let initial = !session.presence.initial_sent;
    // XEP-0160 §3: offline messages go out when a resource becomes available with a
    // non-negative priority — at initial presence, or later when a negative priority is raised.
    let was_reachable = session.reachable();
    session.set_presence(true, prio);
    session.presence.initial_sent = true;
    // Kept as the client sent it: the avatar hash is put in at each sending, so a later
    // vCard change shows in re-broadcasts and probe answers.
    session.presence.last = stanza::Frozen::new(&el);
    let mut el = el;
    crate::features::vcard::stamp(&shared, &session.bare, &mut el).await;
    // Loaded once for the broadcast and, on initial presence, the probes.
    let items = roster_items(&shared, &session.bare).await;
    broadcast(session, &el, false, &items).await;
    // XEP-0163 §4.3.2: the resource gets the account's notifications its caps ask for, and
    // the last items when it newly does.
    let me = session.jid.to_string();
    crate::features::pep::own_presence(&shared, &session.bare, &me, Some(&el)).await;
    if initial {
        initial_presence(session, &items).await;
    }
    // RFC 6121 §3.1.3: pending subscription requests are redelivered at each initial
    // presence. Requests and offline messages are read in pages and go out as the client's
    // XEP-0198 queue has room; offline rows leave the store only once the client has them
    // (see `Session::start_backlog`).
    session.effects.push(Effect::StartBacklog {
        requests: initial,
        offline: prio >= 0 && !was_reachable,
    });
}

/// RFC 6121 §4.2.2: the probes only initial presence sends.
async fn initial_presence(session: &mut SessionCtx, items: &[RosterItem]) {
    let shared = session.shared.clone();
    // RFC 6121 §4.2.2: an entity is implicitly subscribed to its own presence, so the new
    // resource learns of the user's other available resources: a probe from its full JID,
    // answered by each of them (see `answer_probe`).
    let others = shared
        .router
        .resources(&session.bare)
        .iter()
        .any(|r| r.available && r.session_id != session.id);
    if others {
        let p = stanza::new(
            "presence",
            INTERNAL_NS,
            &[
                ("type", "probe"),
                ("from", &session.jid.to_string()),
                ("to", &session.bare),
            ],
        );
        routing::route(&shared, p).await;
    }
    // RFC 6121 §4.2.2: probe the contacts we are subscribed to.
    for item in items {
        let st = roster::to_sub(item.subscription);
        if matches!(
            st,
            herald_session::subscription::Sub::To | herald_session::subscription::Sub::Both
        ) {
            let p = stanza::new(
                "presence",
                INTERNAL_NS,
                &[
                    ("type", "probe"),
                    ("from", &session.bare),
                    ("to", &item.jid),
                ],
            );
            routing::route(&shared, p).await;
        }
    }
}

/// Sends the session's presence to subscribers (and directed recipients when `to_directed`)
/// and to the user's own available resources, including this one (RFC 6121 §4.2.2, §4.4.2).
async fn broadcast(
    session: &mut SessionCtx,
    el: &Element,
    to_directed: bool,
    items: &[RosterItem],
) {
    let shared = session.shared.clone();
    let me = session.jid.to_string();
    let mut sent: HashSet<String> = HashSet::new();
    // XEP-0191 §3.3: blocked entities do not get the user's presence.
    let blocked = crate::features::blocking::blocklist(&shared, &session.bare).await;
    let is_blocked = |jid: &str| blocked.matches(jid);
    for item in items {
        let st = herald_session::subscription::State {
            sub: roster::to_sub(item.subscription),
            pending_out: item.ask,
            pending_in: false,
        };
        if st.contact_gets_presence() && !is_blocked(&item.jid) {
            sent.insert(item.jid.clone());
            routing::route(&shared, addressed(el, &me, &item.jid)).await;
        }
    }
    if to_directed {
        for j in session.presence.directed.clone() {
            if !sent.contains(&j) && !is_blocked(&j) {
                routing::route(&shared, addressed(el, &me, &j)).await;
            }
        }
    }
    for r in shared.router.resources(&session.bare) {
        if r.available || r.session_id == session.id {
            let full = format!("{}/{}", session.bare, r.resource);
            let _ = routing::send_to(&shared, &r, addressed(el, &me, &full));
        }
    }
}

/// The session ends while available: everyone who saw it online learns it left.
pub async fn broadcast_unavailable(session: &mut SessionCtx) {
    let p = stanza::new("presence", INTERNAL_NS, &[("type", "unavailable")]);
    session.set_ending();
    let me = session.jid.to_string();
    crate::features::pep::own_presence(&session.shared, &session.bare, &me, None).await;
    let items = roster_items(&session.shared, &session.bare).await;
    broadcast(session, &p, true, &items).await;
}

/// The session ends without ever having been available: only the entities it sent directed
/// presence to (RFC 6121 §4.6.3; group chat rooms it joined) hear that it left.
pub async fn unavailable_to_directed(session: &mut SessionCtx) {
    let shared = session.shared.clone();
    let me = session.jid.to_string();
    let p = stanza::new("presence", INTERNAL_NS, &[("type", "unavailable")]);
    for j in std::mem::take(&mut session.presence.directed) {
        routing::route(&shared, addressed(&p, &me, &j)).await;
    }
}

/// Answers a probe delivered to this session (RFC 6121 §4.3.2), if the prober may see us.
pub async fn answer_probe(session: &mut SessionCtx, probe: &Element) {
    let Ok(Some(from)) = stanza::from(probe) else {
        return;
    };
    let contact = from.to_bare().to_string();
    let shared = session.shared.clone();
    if contact == session.bare {
        // The user's own new resource (see `initial_presence`): it may always see us.
        if from.as_str() != session.jid.as_str() {
            if let Some(last) = last_presence(session).await {
                let p = addressed(&last, &session.jid.to_string(), from.as_str());
                routing::route(&shared, p).await;
            }
        }
        return;
    }
    if !contact_gets_presence(&shared, &session.bare, &contact).await {
        return;
    }
    if let Some(last) = last_presence(session).await {
        let p = addressed(&last, &session.jid.to_string(), from.as_str());
        routing::route(&shared, p).await;
    }
}

/// The session's last available presence with the user's current avatar hash.
async fn last_presence(session: &SessionCtx) -> Option<Element> {
    let mut last = session
        .presence
        .last
        .as_ref()
        .and_then(stanza::Frozen::thaw)?;
    crate::features::vcard::stamp(&session.shared, &session.bare, &mut last).await;
    Some(last)
}

/// The user's avatar hash changed (XEP-0153): an available session broadcasts its last
/// presence again, now with the new hash, to subscribers and the user's resources. Directed
/// recipients (MUC rooms) are not sent it again: XEP-0398 §5 leaves that to the client.
pub async fn rebroadcast(session: &mut SessionCtx) {
    if !session.available() {
        return;
    }
    let Some(last) = last_presence(session).await else {
        return;
    };
    let items = roster_items(&session.shared, &session.bare).await;
    broadcast(session, &last, false, &items).await;
}

/// A probe for `user` who has no available resource: answer unavailable if subscribed.
pub async fn probe_offline(shared: &Arc<Shared>, user: &str, probe: &Element) {
    let Ok(Some(from)) = stanza::from(probe) else {
        return;
    };
    if contact_gets_presence(shared, user, from.to_bare().as_str()).await {
        let p = stanza::new(
            "presence",
            INTERNAL_NS,
            &[
                ("type", "unavailable"),
                ("from", user),
                ("to", from.as_str()),
            ],
        );
        routing::route(shared, p).await;
    }
}

/// The user sends a subscription stanza to `to` (RFC 6121 §3, Appendix A.2).
pub async fn subscription_out(
    shared: &Arc<Shared>,
    user: &str,
    el: Element,
    to: Jid,
    kind: SubKind,
) {
    let contact = to.to_bare().to_string();
    if contact == user {
        return;
    }
    let (item, state) = match sub_state(shared, user, &contact).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "subscription state load failed");
            return;
        }
    };
    let out = sm::outbound(state, kind);
    if out.send_unavailable {
        roster::send_unavailable_to(shared, user, &contact).await;
    }
    if out.changed {
        let (u, c, new) = (user.to_string(), contact.clone(), out.new_state);
        let creates = item.is_none() && new.roster_view() != (sm::Sub::None, false);
        let max = shared.cfg.roster.max_items;
        match shared
            .db(move |s: &roles::Roster| {
                // The roster size limit holds for items a subscription creates as well
                // as for roster sets (RFC 6121 §2.3.3: resource-constraint).
                if creates && s.roster_len(&u)? >= max {
                    return Err(StoreError::QuotaExceeded);
                }
                roster::save_state(s, &u, &c, item, state, Some(new), None)
            })
            .await
        {
            Ok(Some((ver, it))) if out.push => {
                roster::push(shared, user, ver, xr::item_element(&it))
            }
            Ok(_) => {}
            Err(StoreError::QuotaExceeded) => {
                routing::bounce(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
                return;
            }
            Err(e) => tracing::error!(error = %e, "subscription state save failed"),
        }
    }
    if out.route {
        // RFC 6121 §3.1.2: subscription stanzas carry the user's bare JID.
        let mut p = stanza::new(
            "presence",
            INTERNAL_NS,
            &[("type", kind.as_str()), ("from", user), ("to", &contact)],
        );
        for c in el.children() {
            p.append_child(c.clone());
        }
        routing::route(shared, p).await;
    }
    if out.send_current_presence {
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
                    ("from", &format!("{user}/{}", r.resource)),
                    ("to", &contact),
                ],
            );
            routing::route(shared, p).await;
        }
    }
}

/// A subscription stanza from a contact arrives for local `user` (RFC 6121 §3, Appendix A.3).
pub async fn subscription_in(shared: &Arc<Shared>, user: &str, el: Element, kind: SubKind) {
    let Ok(Some(from)) = stanza::from(&el) else {
        return;
    };
    let contact = from.to_bare().to_string();
    if contact == user {
        return;
    }
    let (item, state) = match sub_state(shared, user, &contact).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "subscription state load failed");
            return;
        }
    };
    let online = shared.router.resources(user).iter().any(|r| r.available);
    let inb = sm::inbound(state, kind, online);
    if inb.send_unavailable {
        roster::send_unavailable_to(shared, user, &contact).await;
    }
    let mut p = el.clone();
    stanza::set(&mut p, "from", contact.clone());
    if inb.changed || inb.store_request || inb.remove_request {
        // Only what a client shows, bounded: the request is read again at every login.
        let stored = xs::stored_request(&p, shared.cfg.roster.max_request_bytes);
        let xml = stanza::to_xml(&stored).unwrap_or_default();
        let (u, c, new) = (user.to_string(), contact.clone(), inb.new_state);
        let max_pending = shared.cfg.roster.max_pending_requests;
        match shared
            .db(move |s: &roles::Roster| {
                let request = roster::Request {
                    xml: &xml,
                    max_pending,
                };
                roster::save_state(s, &u, &c, item, state, new, Some(request))
            })
            .await
        {
            Ok(Some((ver, it))) if inb.push => {
                roster::push(shared, user, ver, xr::item_element(&it))
            }
            Ok(_) => {}
            Err(StoreError::QuotaExceeded) => {
                // Too many requests wait for this user's answer: refused, neither stored nor
                // shown (a flood from many JIDs must not grow the store or the next login).
                tracing::info!(%user, from = %contact, "subscription request refused: too many pending");
                routing::bounce(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
                return;
            }
            Err(e) => tracing::error!(error = %e, "subscription state save failed"),
        }
    }
    if inb.deliver {
        for r in shared
            .router
            .resources(user)
            .into_iter()
            .filter(|r| r.available)
        {
            let mut q = p.clone();
            stanza::set(&mut q, "to", format!("{user}/{}", r.resource));
            let _ = routing::send_to(shared, &r, q);
        }
    }
    if let Some(reply) = inb.auto_reply {
        let r = stanza::new(
            "presence",
            INTERNAL_NS,
            &[("type", reply.as_str()), ("from", user), ("to", &contact)],
        );
        routing::route(shared, r).await;
    }
}

/// The `presence_to_local` hook: subscription states, probes, and presence to the
/// account's resources (RFC 6121 §4.3, §4.4, §8.5.3).
pub fn to_local(shared: &Arc<Shared>, ev: PresenceToLocal) -> Fut<'_, Option<PresenceToLocal>> {
    Box::pin(async move {
        let PresenceToLocal { bare, to, el } = ev;
        deliver(shared, &bare, &to, el).await;
        None
    })
}

async fn deliver(shared: &Arc<Shared>, bare: &str, to: &Jid, el: Element) {
    let typ = stanza::typ(&el).to_string();
    if let Some(kind) = herald_session::subscription::SubKind::from_presence_type(&typ) {
        return subscription_in(shared, bare, el, kind).await;
    }
    let list = shared.router.resources(bare);
    if typ == "probe" {
        let avail: Vec<_> = list.iter().filter(|r| r.available).collect();
        if avail.is_empty() {
            return probe_offline(shared, bare, &el).await;
        }
        for r in avail {
            let _ = routing::send_to(shared, r, el.clone());
        }
        return;
    }
    match to.resource() {
        // RFC 6121 §8.5.3.2.2: presence to an unavailable full JID is dropped.
        Some(res) => {
            if let Some(r) = list.iter().find(|r| r.resource == res.as_str()) {
                let _ = routing::send_to(shared, r, el);
            }
        }
        None => {
            for r in list.iter().filter(|r| r.available) {
                let _ = routing::send_to(shared, r, el.clone());
            }
        }
    }
}
