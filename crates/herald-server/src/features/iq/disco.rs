//! XEP-0030 service discovery. disco#info lists the features of the IQ table's lines and
//! of [`super::beyond::SERVED`] ([`super::features`]), so it cannot advertise what nothing
//! serves; the server's also carries the XEP-0157 contact addresses (`[contact]`) as a
//! XEP-0128 form. disco#items lists the configured components. No nodes are served.
//! The server's XEP-0115 `<c/>` ([`caps`]) is hashed from the same disco#info.

use herald_proto::error::StanzaErrorCondition;
use herald_proto::ns;
use herald_proto::Element;

use super::{Disco, Request, Target};
use crate::stanza;

/// A disco#info query: the server's identity and features, or an account's.
/// `pub(crate)` for the MUC feature, which builds its own identity list the same way.
pub fn info(req: &Request<'_>) -> Element {
    if let Some(node) = req.payload.attr("node") {
        // XEP-0115 §6.2: the node named by the server's own `<c/>` (`NODE#ver`) answers
        // what the hash covers; no other node is served.
        let q = (req.target == Target::Server)
            .then(|| server_info(req.shared))
            .filter(|q| caps_node(q).as_deref() == Some(node));
        return match q {
            Some(mut q) => {
                stanza::set(&mut q, "node", node);
                stanza::iq_result(req.iq, Some(q))
            }
            None => super::error(req.iq, StanzaErrorCondition::ServiceUnavailable),
        };
    }
    let q = match req.target {
        Target::Server => server_info(req.shared),
        Target::Own | Target::Other => {
            let mut q = info_query(
                ("account", "registered", None),
                &super::features_served(Disco::Account, req.shared),
            );
            // XEP-0163 §6.1: every account is a PEP service (`features::pep`).
            let pep = stanza::new(
                "identity",
                ns::DISCO_INFO,
                &[("category", "pubsub"), ("type", "pep")],
            );
            q.append_child(pep);
            q
        }
        // Answered by the MUC feature (`Handler::Muc`), never here.
        Target::MucService | Target::MucRoom => {
            return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable)
        }
    };
    stanza::iq_result(req.iq, Some(q))
}

/// The server's disco#info `<query/>`: identity, the features of what is switched on and,
/// when `[contact]` has any, the XEP-0157 `serverinfo` form.
pub fn server_info(shared: &crate::Shared) -> Element {
    let mut q = info_query(
        ("server", "im", Some("Herald")),
        &super::features_served(Disco::Server, shared),
    );
    // XEP-0363 §3: the domain is also the upload service: its `store/file` identity (which
    // slixmpp, among others, looks for) and its limit, as an XEP-0128 form.
    if super::upload::served(shared) {
        let id = stanza::new(
            "identity",
            ns::DISCO_INFO,
            &[
                ("category", "store"),
                ("type", "file"),
                ("name", "HTTP File Upload"),
            ],
        );
        insert_after_identities(&mut q, id);
        q.append_child(herald_xep::upload::disco_form(
            shared.cfg.upload.max_file_size.0,
        ));
    }
    if let Some(form) = serverinfo_form(&shared.cfg.contact) {
        q.append_child(form);
    }
    q
}

/// XEP-0157: the contact addresses as a XEP-0128 form, with only the fields that have
/// addresses; None when no address is configured.
fn serverinfo_form(contact: &crate::config::ContactConfig) -> Option<Element> {
    let fields: Vec<_> = contact
        .fields()
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .collect();
    if fields.is_empty() {
        return None;
    }
    let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "result")]);
    let mut ft = stanza::new(
        "field",
        ns::DATA_FORMS,
        &[("var", "FORM_TYPE"), ("type", "hidden")],
    );
    ft.append_child(stanza::text("value", ns::DATA_FORMS, ns::SERVERINFO));
    x.append_child(ft);
    for (var, addrs) in fields {
        let mut f = stanza::new("field", ns::DATA_FORMS, &[("var", var)]);
        for a in addrs {
            f.append_child(stanza::text("value", ns::DATA_FORMS, a.as_str()));
        }
        x.append_child(f);
    }
    Some(x)
}

/// The server's XEP-0115 `<c/>` for its stream features (§6.3): `ver` hashed from
/// [`server_info`], so it changes exactly when what disco#info answers changes.
pub fn caps(shared: &crate::Shared) -> Option<Element> {
    match crate::xep::caps::ver_of_info(&server_info(shared)) {
        Ok(ver) => Some(crate::xep::caps::element(crate::xep::caps::NODE, &ver)),
        Err(e) => {
            // features() lists each feature once and there is one identity and one form.
            tracing::error!(error = ?e, "the server's disco#info cannot be hashed");
            None
        }
    }
}

/// `NODE#ver` for the server's disco#info `q` (XEP-0115 §6.2).
fn caps_node(q: &Element) -> Option<String> {
    let ver = crate::xep::caps::ver_of_info(q).ok()?;
    Some(format!("{}#{ver}", crate::xep::caps::NODE))
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

/// Puts `id` after the identities already in `q` (identities come before features).
fn insert_after_identities(q: &mut Element, id: Element) {
    let nodes = q.take_nodes();
    let mut placed = false;
    for node in nodes {
        let is_identity = node.as_element().is_some_and(|e| e.name() == "identity");
        if !is_identity && !placed {
            q.append_child(id.clone());
            placed = true;
        }
        q.append_node(node);
    }
    if !placed {
        q.append_child(id);
    }
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
