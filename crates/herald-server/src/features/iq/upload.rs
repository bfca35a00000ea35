//! XEP-0363 slot requests, served on the server's own domain (the upload service is the
//! domain itself: clients find it in the server's disco#info, which Conversations, Monal,
//! Dino, Gajim and slixmpp all look at before the items, so no subdomain has to be routed).
//! A slot is handed only to local accounts; the HTTP side (`crate::http::upload`) honours it.

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::Element;
use herald_store::roles;
use herald_xep::upload::{self as xep, RequestError, SlotTerms};

use super::Request;
use crate::{stanza, Shared};

/// Whether uploads are offered: enabled, and an HTTP listener to reach.
pub fn served(shared: &Shared) -> bool {
    shared.cfg.upload.enabled && shared.http.base_url.is_some()
}

/// `<request xmlns='urn:xmpp:http:upload:0'/>` → `<slot/>` or the XEP's error.
pub fn request(req: &Request<'_>) -> Element {
    let shared = req.shared;
    let Some(base) = shared.http.base_url.as_deref().filter(|_| served(shared)) else {
        return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable);
    };
    let owner = match stanza::from(req.iq) {
        Ok(Some(j)) if j.node().is_some() && shared.cfg.is_local(j.domain().as_str()) => {
            j.to_bare().to_string()
        }
        _ => return super::error(req.iq, StanzaErrorCondition::NotAllowed),
    };
    let cfg = &shared.cfg.upload;
    let slot = match xep::parse_request(req.payload, cfg.max_file_size.0) {
        Ok(s) => s,
        Err(RequestError::Bad(why)) => {
            return stanza::error(req.iq, StanzaErrorCondition::BadRequest, Some(why))
                .unwrap_or_else(|| stanza::iq_result(req.iq, None))
        }
        Err(RequestError::TooLarge { max }) => {
            return with_app_error(
                stanza::error_typed(
                    req.iq,
                    StanzaErrorCondition::NotAcceptable,
                    ErrorType::Modify,
                    Some("file too large"),
                ),
                xep::file_too_large(max),
                req.iq,
            )
        }
    };
    // One row of running totals, found by its key.
    let used = match shared.db_read(|s: &roles::Uploads| s.upload_usage(&owner)) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "upload usage lookup failed");
            return crate::features::ctx::store_failed(req.iq, &e);
        }
    };
    if used.saturating_add(slot.size) > cfg.quota_per_user.0 {
        return stanza::error_typed(
            req.iq,
            StanzaErrorCondition::ResourceConstraint,
            ErrorType::Wait,
            Some("upload quota reached: older files must expire first"),
        )
        .unwrap_or_else(|| stanza::iq_result(req.iq, None));
    }
    let terms = SlotTerms {
        id: new_id(),
        filename: slot.filename,
        size: slot.size,
        content_type: slot.content_type,
        owner,
        expires: unix_now().saturating_add(cfg.slot_ttl.0.as_secs()),
    };
    let path = terms.path();
    let put = format!("{base}{path}?{}", terms.query(&shared.http.upload_secret));
    let get = format!("{base}{path}");
    stanza::iq_result(req.iq, Some(xep::slot(&put, &get)))
}

/// Appends the application-specific condition to an error reply's `<error/>`.
fn with_app_error(reply: Option<Element>, app: Element, iq: &Element) -> Element {
    let Some(mut reply) = reply else {
        return stanza::iq_result(iq, None);
    };
    let error = reply.children_mut().find(|c| c.name() == "error");
    if let Some(e) = error {
        e.append_child(app);
    }
    reply
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
