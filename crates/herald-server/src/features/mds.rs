//! XEP-0490 server assist (`urn:xmpp:mds:server-assist:0`, §4.5): a client that tells a
//! contact it displayed a message (a XEP-0333 marker) may put the matching
//! `<displayed xmlns='urn:xmpp:mds:displayed:0'/>` in the same message; the server takes it
//! out before the message is archived, copied or routed (`features::message`) and publishes
//! it on the account's `urn:xmpp:mds:displayed:0` PEP node with the message's verbatim `to`
//! as the item id, exactly as the client's own publish would be (notifications to the
//! account's resources, the push rules of RULES.md §14).
//!
//! Owns nothing: the node and its bounds (`[pep]`) are `features::pep`'s, the stripping is
//! `herald_xep::mds`'s.

use std::sync::Arc;

use herald_proto::{ns, Element};

use crate::features::pep;
use crate::xep::pep::Item;
use crate::Shared;

/// Publishes `displayed` as `owner`'s marker for `chat`. A node this creates gets the
/// configuration XEP-0490 asks clients for (whitelist); an existing node keeps its own.
/// The message it came in is sent whatever happens here (XEP-0490 §4.5: "continue to
/// process it normally"); a marker refused by the `[pep]` limits is logged, not answered,
/// since the message has no reply of its own to carry an error.
pub async fn assist(shared: &Arc<Shared>, owner: &str, chat: &str, displayed: Element) {
    let cfg = crate::xep::mds::node_config(shared.cfg.pep.max_items_per_node);
    let item = Item {
        id: chat.to_owned(),
        payload: displayed,
    };
    if let Err(e) = pep::publish_items(shared, owner, ns::MDS, cfg, vec![item]).await {
        tracing::warn!(%owner, error = ?e, "server-assisted displayed marker not published");
    }
}
