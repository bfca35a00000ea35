//! XEP-0030 service discovery. disco#info lists the features of the IQ table's lines
//! ([`super::features`]), so it cannot advertise what nothing serves; disco#items
//! lists the configured components. No nodes are served.

use herald_proto::error::StanzaErrorCondition;
use herald_proto::ns;
use herald_proto::Element;

use super::{Disco, Request, Target};
use crate::stanza;

/// A disco#info query: the server's identity and features, or an account's.
/// `pub(crate)` for the MUC feature, which builds its own identity list the same way.
pub fn info(req: &Request<'_>) -> Element {
    if req.payload.attr("node").is_some() {
        return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable);
    }
    let (identity, disco) = match req.target {
        Target::Server => (("server", "im", Some("Herald")), Disco::Server),
        Target::Own | Target::Other => (("account", "registered", None), Disco::Account),
        // Answered by the MUC feature (`Handler::Muc`), never here.
        Target::MucService | Target::MucRoom => {
            return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable)
        }
    };
    stanza::iq_result(req.iq, Some(info_query(identity, &super::features(disco))))
}

/// A disco#items query to the server: its components.
pub fn items(req: &Request<'_>) -> Element {
    if req.payload.attr("node").is_some() {
        return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable);
    }
    let mut q = Element::bare("query", ns::DISCO_ITEMS);
    for c in &req.shared.cfg.components.component {
        q.append_child(stanza::new("item", ns::DISCO_ITEMS, &[("jid", &c.domain)]));
    }
    if let Some(muc) = &req.shared.muc_domain {
        q.append_child(stanza::new("item", ns::DISCO_ITEMS, &[("jid", muc)]));
    }
    stanza::iq_result(req.iq, Some(q))
}

pub(crate) fn info_query(identity: (&str, &str, Option<&str>), features: &[&str]) -> Element {
    let mut q = Element::bare("query", ns::DISCO_INFO);
    let mut id = stanza::new(
        "identity",
        ns::DISCO_INFO,
        &[("category", identity.0), ("type", identity.1)],
    );
    if let Some(n) = identity.2 {
        stanza::set(&mut id, "name", n);
    }
    q.append_child(id);
    for f in features {
        q.append_child(stanza::new("feature", ns::DISCO_INFO, &[("var", f)]));
    }
    q
}
