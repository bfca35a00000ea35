//! XEP-0411 bookmarks conversion: the XEP-0048 PEP node `storage:bookmarks` (one item,
//! `current`, holding a whole `<storage xmlns='storage:bookmarks'/>`), as older clients
//! publish and read it, is a view of the XEP-0402 node `urn:xmpp:bookmarks:1`, like the
//! XEP-0048 bookmarks in XEP-0049 private storage (`features::private`). The XEP-0402 node
//! is the one copy, so the three forms cannot drift apart:
//!
//! - a publish to `storage:bookmarks` replaces the XEP-0402 items (`pep::replace_items`,
//!   bounded by `[pep]`, notified to XEP-0402 subscribers);
//! - an items request for `storage:bookmarks` is answered from the XEP-0402 items;
//! - every change of the XEP-0402 items (a XEP-0402 publish or retract, a private-XML `set`,
//!   a legacy publish) is notified to the `storage:bookmarks+notify` resources as the new
//!   `current` item (XEP-0411 §3).
//!
//! Sits above `avatar` (which it hands every other PEP set) and `pep`; owns nothing.

use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::{ns, Element};
use herald_store::{roles, StoreError};

use crate::features::iq::Reply;
use crate::features::{avatar, pep};
use crate::stanza;
use crate::xep::bookmarks as xb;
use crate::xep::pep::{self as xp, Item};
use crate::Shared;

/// The node configuration of both forms: only the owner reads bookmarks (XEP-0411 §5).
fn config(shared: &Shared) -> xp::NodeConfig {
    xb::node_config(shared.cfg.pep.max_items_per_node)
}

/// The IQ table's handler for PEP sets by the account's own clients.
pub fn pubsub_set<'a>(
    shared: &'a Arc<Shared>,
    iq: &'a Element,
    payload: &'a Element,
    owner: &'a str,
) -> Reply<'a> {
    Box::pin(async move {
        if let Some(storage) = legacy_publish(payload) {
            return publish_legacy(shared, iq, owner, storage).await;
        }
        let reply = avatar::pubsub_set(shared, iq, payload, owner).await;
        if stanza::typ(&reply) == "result" && touches_native(payload) {
            legacy_changed(shared, owner).await;
        }
        reply
    })
}

/// The IQ table's handler for PEP gets by the account's own clients.
pub fn pubsub_get<'a>(
    shared: &'a Arc<Shared>,
    iq: &'a Element,
    payload: &'a Element,
    owner: &'a str,
) -> Reply<'a> {
    Box::pin(async move {
        let legacy = payload
            .get_child("items", ns::PUBSUB)
            .is_some_and(|i| i.attr("node") == Some(xb::LEGACY_NS));
        if legacy {
            match current(shared, owner).await {
                Ok(Some(item)) => {
                    return stanza::iq_result(iq, Some(xp::items_result(xb::LEGACY_NS, &[item])))
                }
                // Neither: the PEP node as it is (one kept from before, or none).
                Ok(None) => {}
                Err(e) => return store_failed(iq, &e),
            }
        }
        pep::handle(shared, iq, payload, owner).await
    })
}

/// The `<storage/>` of a publish to the XEP-0048 PEP node.
fn legacy_publish(payload: &Element) -> Option<&Element> {
    payload
        .get_child("publish", ns::PUBSUB)
        .filter(|p| p.attr("node") == Some(xb::LEGACY_NS))
        .and_then(|p| p.get_child("item", ns::PUBSUB))
        .and_then(|i| i.get_child("storage", xb::LEGACY_NS))
}

/// Whether a (successful) set published or retracted XEP-0402 bookmarks.
fn touches_native(payload: &Element) -> bool {
    payload.children().any(|c| {
        (c.is("publish", ns::PUBSUB) || c.is("retract", ns::PUBSUB))
            && c.attr("node") == Some(xb::NODE)
    })
}

async fn publish_legacy(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    storage: &Element,
) -> Element {
    if shared.account_gone(owner) {
        return error(iq, StanzaErrorCondition::ServiceUnavailable, None);
    }
    let items: Vec<Item> = xb::to_native(storage)
        .into_iter()
        .map(|b| Item {
            id: b.jid,
            payload: b.conference,
        })
        .collect();
    match pep::replace_items(shared, owner, xb::NODE, config(shared), items).await {
        Ok(()) => {
            legacy_changed(shared, owner).await;
            stanza::iq_result(iq, Some(xp::publish_result(xb::LEGACY_NS, xb::LEGACY_ITEM)))
        }
        Err(e) => write_failed(shared, iq, e),
    }
}

/// The XEP-0048 `current` item computed from the XEP-0402 node. Without that node, what
/// private storage held from before the conversion existed (as a private-storage `get`
/// answers, XEP-0411 §4); None when there is neither.
async fn current(shared: &Arc<Shared>, owner: &str) -> Result<Option<Item>, StoreError> {
    let storage = match pep::node_items(shared, owner, xb::NODE).await? {
        Some(items) => xb::to_legacy(items.iter().map(|i| (i.id.as_str(), &i.payload))),
        None => {
            let u = owner.to_string();
            let stored = shared
                .db(move |st: &roles::Private| st.private_item(&u, "storage", xb::LEGACY_NS))
                .await?;
            match stored.and_then(|x| x.parse::<Element>().ok()) {
                Some(s) => s,
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Item {
        id: xb::LEGACY_ITEM.to_owned(),
        payload: storage,
    }))
}

/// XEP-0411 §3: the owner's bookmarks changed; the `storage:bookmarks` subscribers get the
/// new whole list.
pub async fn legacy_changed(shared: &Arc<Shared>, owner: &str) {
    match current(shared, owner).await {
        Ok(Some(item)) => {
            pep::notify_items(shared, owner, xb::LEGACY_NS, &config(shared), vec![item]).await
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%owner, error = %e, "bookmarks not read for the XEP-0048 notification")
        }
    }
}

fn error(iq: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    stanza::error(iq, cond, text).unwrap_or_else(|| stanza::iq_result(iq, None))
}

fn store_failed(iq: &Element, e: &StoreError) -> Element {
    tracing::error!(error = %e, "bookmarks store call failed");
    crate::features::ctx::store_failed(iq, e)
}

/// The answer to a XEP-0048 write (PEP or private storage) that the XEP-0402 node refused.
pub fn write_failed(shared: &Shared, iq: &Element, e: pep::WriteError) -> Element {
    match e {
        pep::WriteError::TooManyItems => {
            let text = format!("more than {} bookmarks", shared.cfg.pep.max_items_per_node);
            error(iq, StanzaErrorCondition::NotAcceptable, Some(&text))
        }
        pep::WriteError::ItemTooBig => {
            let text = format!(
                "a bookmark is larger than {} bytes",
                shared.cfg.pep.max_item_bytes
            );
            error(iq, StanzaErrorCondition::NotAcceptable, Some(&text))
        }
        pep::WriteError::TooManyNodes => error(
            iq,
            StanzaErrorCondition::ResourceConstraint,
            Some("too many PEP nodes"),
        ),
        pep::WriteError::OverQuota => stanza::error_typed(
            iq,
            StanzaErrorCondition::ResourceConstraint,
            ErrorType::Wait,
            Some("PEP storage of this account is full"),
        )
        .unwrap_or_else(|| stanza::iq_result(iq, None)),
        pep::WriteError::Store(e) => store_failed(iq, &e),
    }
}
