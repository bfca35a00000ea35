//! XEP-0280 message carbons. Owns the per-session switch (the `enable`/`disable` IQs, lines
//! of the IQ table) and the copies: `sent` copies of what a client sends, `received` copies
//! of what arrives for the account, to the account's other available resources that asked
//! for them. `crate::features::message` decides when a message is copied (eligibility, `<private/>`);
//! the copies' XML is herald-xep's. Touches no session state but its flag (`SessionCtx`).

use herald_proto::Element;

use std::sync::Arc;

use crate::features::ctx::SessionCtx;
use crate::features::iq::Reply;
use crate::routing::router::ResourceEntry;
use crate::stanza;
use crate::xep::carbons as xc;
use crate::{routing, Shared};

/// `<enable xmlns='urn:xmpp:carbons:2'/>`.
pub fn enable<'a>(s: &'a mut SessionCtx, iq: &'a Element, _: &'a Element) -> Reply<'a> {
    set(s, true);
    Box::pin(std::future::ready(stanza::iq_result(iq, None)))
}

/// `<disable xmlns='urn:xmpp:carbons:2'/>`.
pub fn disable<'a>(s: &'a mut SessionCtx, iq: &'a Element, _: &'a Element) -> Reply<'a> {
    set(s, false);
    Box::pin(std::future::ready(stanza::iq_result(iq, None)))
}

/// The session's flag, and the router's copy that message routing reads.
fn set(s: &mut SessionCtx, on: bool) {
    s.set_carbons(on);
}

/// XEP-0280 §6: a `sent` copy of `el`, which the client of session `from_session` sent, to
/// each other available resource of `bare` with carbons on.
pub fn send_sent_copies(shared: &Arc<Shared>, bare: &str, from_session: u64, el: &Element) {
    if !xc::is_eligible(el) {
        return;
    }
    for r in shared.router.resources(bare) {
        if r.carbons && r.session_id != from_session && r.available {
            let full = format!("{bare}/{}", r.resource);
            let copy = xc::sent_copy(bare, &full, el);
            let _ = routing::send_to(shared, &r, copy);
        }
    }
}

/// XEP-0280 §5: a `received` copy of `el` to each available resource of `bare` in `list`
/// with carbons on that did not get the message itself (`delivered`).
pub fn send_received_copies(
    shared: &Arc<Shared>,
    bare: &str,
    list: &[ResourceEntry],
    delivered: &[&ResourceEntry],
    el: &Element,
) {
    for r in list.iter().filter(|r| r.carbons && r.available) {
        if delivered.iter().any(|t| t.session_id == r.session_id) {
            continue;
        }
        let full = format!("{bare}/{}", r.resource);
        let copy = xc::received_copy(bare, &full, el);
        let _ = routing::send_to(shared, r, copy);
    }
}
