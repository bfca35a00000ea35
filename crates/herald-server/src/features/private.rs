//! XEP-0049 private XML storage: one stored element per (element name, namespace) of the
//! user's own account, bounded by `[private]` (bytes per item, items per user). Another
//! entity asking an account's bare JID gets `forbidden` (XEP-0049 §2.3 prefers it to
//! `service-unavailable`).
//!
//! Owns nothing in memory; the store role `roles::Private` keeps the items. XEP-0048
//! bookmarks (`<storage xmlns='storage:bookmarks'/>`) are the exception (XEP-0402 §5.3
//! "compat", as Prosody's mod_bookmarks): their one copy is the XEP-0402 PEP node
//! `urn:xmpp:bookmarks:1`, so a client using either form sees what the other wrote. A `get`
//! is answered from the node (converted by `herald_xep::bookmarks`); a `set` replaces the
//! node's items through `features::pep::replace_items` (so the user's other resources get
//! the XEP-0402 notifications, and those asking for the XEP-0048 PEP node the XEP-0411 one
//! from `features::bookmarks`), bounded by `[pep]`. An account with no node yet gets what
//! private storage held from before the conversion existed.

use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::Element;
use herald_store::{roles, PrivateItem, StoreError};

use crate::features::{bookmarks, pep};
use crate::stanza;
use crate::xep::bookmarks as xb;
use crate::xep::pep::Item;
use crate::xep::private::{self as xp, Refusal};
use crate::Shared;

fn err(iq: &Element, cond: StanzaErrorCondition, text: Option<&str>) -> Element {
    stanza::error(iq, cond, text).unwrap_or_else(|| stanza::iq_result(iq, None))
}

fn store_failed(iq: &Element, e: &StoreError) -> Element {
    tracing::error!(error = %e, "private storage call failed");
    crate::features::ctx::store_failed(iq, e)
}

/// `get` or `set` of `<query xmlns='jabber:iq:private'>` on the user's own account.
pub async fn query(shared: &Arc<Shared>, iq: &Element, payload: &Element, user: &str) -> Element {
    let user = user.to_string();
    let (child, name, ns) = match xp::item(payload) {
        Ok(i) => i,
        Err(Refusal::BadFormat) => {
            return err(
                iq,
                StanzaErrorCondition::BadRequest,
                Some("exactly one element, in a namespace of its own"),
            )
        }
        Err(Refusal::Reserved) => {
            return err(
                iq,
                StanzaErrorCondition::NotAcceptable,
                Some("reserved namespace"),
            )
        }
    };
    if xb::is_legacy(&name, &ns) {
        return bookmarks(shared, iq, child, user, name, ns).await;
    }
    match stanza::typ(iq) {
        "get" => {
            let (u, n, s) = (user, name, ns);
            match shared
                .db(move |st: &roles::Private| st.private_item(&u, &n, &s))
                .await
            {
                Ok(xml) => {
                    let stored = xml.and_then(|x| x.parse::<Element>().ok());
                    stanza::iq_result(iq, Some(xp::result(stored, child)))
                }
                Err(e) => store_failed(iq, &e),
            }
        }
        _ => {
            let cfg = &shared.cfg.private;
            let Some(xml) = stanza::to_xml(child) else {
                return err(iq, StanzaErrorCondition::BadRequest, None);
            };
            if xml.len() > cfg.max_bytes_per_item {
                let text = format!("item larger than {} bytes", cfg.max_bytes_per_item);
                return err(iq, StanzaErrorCondition::NotAcceptable, Some(&text));
            }
            if shared.account_gone(&user) {
                return err(iq, StanzaErrorCondition::ServiceUnavailable, None);
            }
            let item = PrivateItem { name, ns, xml };
            let max = cfg.max_items;
            match shared
                .db(move |st: &roles::Private| st.set_private_items(&user, &[item], max))
                .await
            {
                Ok(()) => stanza::iq_result(iq, None),
                // As a full blocklist or roster: wait, nothing changed.
                Err(StoreError::QuotaExceeded) => stanza::error_typed(
                    iq,
                    StanzaErrorCondition::ResourceConstraint,
                    ErrorType::Wait,
                    Some("too many private items"),
                )
                .unwrap_or_else(|| stanza::iq_result(iq, None)),
                Err(e) => store_failed(iq, &e),
            }
        }
    }
}

/// XEP-0048 bookmarks in private storage, read from and written to the XEP-0402 node.
async fn bookmarks(
    shared: &Arc<Shared>,
    iq: &Element,
    child: &Element,
    user: String,
    name: String,
    ns: String,
) -> Element {
    if stanza::typ(iq) == "get" {
        match pep::node_items(shared, &user, xb::NODE).await {
            Ok(Some(items)) => {
                let storage = xb::to_legacy(items.iter().map(|i| (i.id.as_str(), &i.payload)));
                return stanza::iq_result(iq, Some(xp::result(Some(storage), child)));
            }
            // No node yet: what was stored before the conversion, if anything.
            Ok(None) => {}
            Err(e) => return store_failed(iq, &e),
        }
        return match shared
            .db(move |st: &roles::Private| st.private_item(&user, &name, &ns))
            .await
        {
            Ok(xml) => {
                let stored = xml.and_then(|x| x.parse::<Element>().ok());
                stanza::iq_result(iq, Some(xp::result(stored, child)))
            }
            Err(e) => store_failed(iq, &e),
        };
    }
    if shared.account_gone(&user) {
        return err(iq, StanzaErrorCondition::ServiceUnavailable, None);
    }
    let items: Vec<Item> = xb::to_native(child)
        .into_iter()
        .map(|b| Item {
            id: b.jid,
            payload: b.conference,
        })
        .collect();
    let cfg = xb::node_config(shared.cfg.pep.max_items_per_node);
    match pep::replace_items(shared, &user, xb::NODE, cfg, items).await {
        Ok(()) => {
            // XEP-0411 §3: subscribers of the XEP-0048 PEP node learn of it too.
            bookmarks::legacy_changed(shared, &user).await;
            stanza::iq_result(iq, None)
        }
        Err(e) => bookmarks::write_failed(shared, iq, e),
    }
}
