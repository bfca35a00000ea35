//! Answers that need nothing but the request: XEP-0199 ping, XEP-0092 version, RFC 3921
//! legacy session establishment, and `forbidden` for requests only the account may make.

use herald_proto::ns;
use herald_proto::Element;

use super::Request;
use crate::stanza;

/// XEP-0199: an empty result.
pub fn pong(req: &Request<'_>) -> Element {
    stanza::iq_result(req.iq, None)
}

/// XEP-0092: the software's name and version (no OS: it tells an attacker more than a user).
pub fn version(req: &Request<'_>) -> Element {
    let mut q = Element::bare("query", ns::VERSION);
    q.append_child(stanza::text("name", ns::VERSION, "Herald"));
    q.append_child(stanza::text(
        "version",
        ns::VERSION,
        env!("CARGO_PKG_VERSION"),
    ));
    stanza::iq_result(req.iq, Some(q))
}

/// A request only the account itself may make, from someone else (another account's
/// vCard set, XEP-0054 §3.3; its private data, XEP-0049 §2.3).
pub fn forbidden(req: &Request<'_>) -> Element {
    super::error(req.iq, herald_proto::error::StanzaErrorCondition::Forbidden)
}

/// RFC 3921 legacy session establishment: old clients still send it; nothing to do.
pub fn legacy_session(req: &Request<'_>) -> Element {
    stanza::iq_result(req.iq, None)
}
