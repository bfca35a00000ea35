//! XEP-0280 carbons: a client turns copies of its account's messages on or off for its
//! session. The copying itself is in `crate::session` and `crate::message`.

use herald_proto::Element;

use super::Reply;
use crate::ctx::SessionCtx;
use crate::stanza;

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
