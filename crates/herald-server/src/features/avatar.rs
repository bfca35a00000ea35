//! XEP-0398 conversion between XEP-0084 PEP avatars and the vCard photo (XEP-0054/XEP-0153),
//! both directions, announced as `urn:xmpp:pep-vcard-conversion:0` on the account.
//!
//! - PEP to vCard (XEP-0398 §3.1, MUST): after the owner's publish to
//!   `urn:xmpp:avatar:metadata` succeeds, the image its first non-URL `<info/>` names is read
//!   from `urn:xmpp:avatar:data`, checked against its SHA-1 id, and stored as the vCard's
//!   PHOTO (the rest of the vCard kept); an empty `<metadata/>` (avatar disabled) removes the
//!   PHOTO. The hash in presence follows (`features::vcard::replace` re-broadcasts).
//! - vCard to PEP (§3.2, MAY, done): after the owner's vCard set with a photo succeeds, the
//!   image is published to the data node (id = SHA-1), then the metadata (one `<info/>`, the
//!   vCard's TYPE), notified like a client's publish. A vCard without photo publishes nothing.
//!
//! Each direction skips its write when the other side already holds the same image, so a
//! conversion never triggers the reverse one. Bounded by the existing limits: a photo over
//! `[pep] max_item_bytes` is not published to PEP, an image that makes the vCard exceed
//! `[vcard] max_bytes` is not put into it; the client's own request succeeds either way
//! (the conversion is the server's extra, logged when it cannot be done).
//!
//! Owns nothing; sits above `pep` and `vcard` (neither knows it), as the IQ table's handler
//! for the owner's PEP sets and vCard sets.

use std::sync::Arc;

use herald_proto::{ns, Element};
use herald_xep::pep::{Item, NodeConfig};

use crate::features::iq::Reply;
use crate::features::{pep, vcard};
use crate::stanza;
use crate::xep::avatar::{self as xa, Metadata};
use crate::xep::vcard as xv;
use crate::Shared;

fn ok(reply: &Element) -> bool {
    stanza::typ(reply) == "result"
}

/// The IQ table's handler for PEP sets on an account: `features::pep` answers; a
/// successful metadata publish by the owner is then converted to the vCard.
pub fn pubsub_set<'a>(
    shared: &'a Arc<Shared>,
    iq: &'a Element,
    payload: &'a Element,
    owner: &'a str,
) -> Reply<'a> {
    Box::pin(async move {
        let reply = pep::handle(shared, iq, payload, owner).await;
        // `pep` refuses a publish by anyone but the owner: a result is the owner's.
        if ok(&reply) {
            let meta = payload
                .get_child("publish", ns::PUBSUB)
                .filter(|p| p.attr("node") == Some(xa::METADATA_NODE))
                .and_then(|p| p.get_child("item", ns::PUBSUB))
                .and_then(|i| i.children().next());
            if let Some(meta) = meta {
                to_vcard(shared, owner, meta).await;
            }
        }
        reply
    })
}

/// The vCard set of the owner: `features::vcard` answers; a stored photo is then published
/// as the XEP-0084 avatar.
pub async fn vcard_set(
    shared: &Arc<Shared>,
    iq: &Element,
    payload: &Element,
    user: &str,
) -> Element {
    let reply = vcard::set(shared, iq, payload, user).await;
    if ok(&reply) {
        to_pep(shared, user, payload).await;
    }
    reply
}

async fn to_vcard(shared: &Arc<Shared>, owner: &str, meta: &Element) {
    let card = match vcard::stored(shared, owner).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "vCard read for avatar conversion failed");
            return;
        }
    };
    let current = card.as_ref().and_then(|c| xv::photo_hash(c).ok().flatten());
    let new = match xa::metadata(meta) {
        Metadata::Nothing => return,
        Metadata::Disabled => {
            if card
                .as_ref()
                .is_none_or(|c| c.get_child("PHOTO", ns::VCARD).is_none())
            {
                return;
            }
            xa::with_photo(card, None)
        }
        Metadata::Stored { id, mime } => {
            if current.as_deref() == Some(id.as_str()) {
                return;
            }
            let items = match pep::node_items(shared, owner, xa::DATA_NODE).await {
                Ok(i) => i.unwrap_or_default(),
                Err(e) => {
                    tracing::error!(error = %e, "avatar data read failed");
                    return;
                }
            };
            let Some(b64) = items
                .iter()
                .find(|i| i.id.eq_ignore_ascii_case(&id))
                .and_then(|i| xa::verified_data(&i.payload, &id))
            else {
                tracing::debug!(%owner, %id, "avatar metadata without matching data; vCard unchanged");
                return;
            };
            xa::with_photo(card, Some((&mime, &b64)))
        }
    };
    if let Err(e) = vcard::replace(shared, owner, &new).await {
        tracing::info!(%owner, error = ?e, "PEP avatar not converted to the vCard");
    }
}

async fn to_pep(shared: &Arc<Shared>, user: &str, card: &Element) {
    let Some((id, data, metadata)) = xa::items_for_photo(card) else {
        return;
    };
    match pep::node_items(shared, user, xa::METADATA_NODE).await {
        Ok(Some(items)) if items.last().is_some_and(|i| i.id == id) => return,
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "avatar metadata read failed");
            return;
        }
    }
    let config = NodeConfig::default_capped(shared.cfg.pep.max_items_per_node);
    // Data first: a client that sees the metadata fetches the data by its id.
    let data = Item {
        id: id.clone(),
        payload: data,
    };
    if let Err(e) =
        pep::publish_items(shared, user, xa::DATA_NODE, config.clone(), vec![data]).await
    {
        tracing::info!(%user, error = ?e, "vCard photo not converted to the PEP avatar");
        return;
    }
    let meta = Item {
        id,
        payload: metadata,
    };
    if let Err(e) = pep::publish_items(shared, user, xa::METADATA_NODE, config, vec![meta]).await {
        tracing::info!(%user, error = ?e, "vCard photo metadata not published");
    }
}
