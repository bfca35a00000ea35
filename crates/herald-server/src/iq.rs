//! IQs the server answers itself: to its domain (XEP-0030 disco, XEP-0199 ping, XEP-0092
//! version), to an account's bare JID on the account's behalf, and a client's own IQs
//! without `to`.

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::FullJid;
use herald_proto::ns;
use herald_proto::Element;

use crate::stanza::{self, Kind};
use crate::Shared;

/// Features of the server's domain.
const SERVER_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, ns::VERSION];

/// Features advertised on an account's bare JID.
const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::PING];

fn disco_info(identity: (&str, &str, Option<&str>), features: &[&str]) -> Element {
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

fn is_get(el: &Element, name: &str, namespace: &str) -> bool {
    stanza::typ(el) == "get" && stanza::payload(el).is_some_and(|p| p.is(name, namespace))
}

/// A stanza addressed to the server's domain; returns the reply to route, if any.
pub async fn handle_server_stanza(shared: &Arc<Shared>, el: &Element) -> Option<Element> {
    if stanza::kind(el) != Some(Kind::Iq) {
        // Messages and presence to the server itself are not acted on.
        return None;
    }
    match stanza::typ(el) {
        "get" | "set" => {}
        _ => return None,
    }
    let node = stanza::payload(el).and_then(|p| p.attr("node"));
    if node.is_none() && is_get(el, "query", ns::DISCO_INFO) {
        return Some(stanza::iq_result(
            el,
            Some(disco_info(
                ("server", "im", Some("Herald")),
                SERVER_FEATURES,
            )),
        ));
    }
    if node.is_none() && is_get(el, "query", ns::DISCO_ITEMS) {
        let mut q = Element::bare("query", ns::DISCO_ITEMS);
        for c in &shared.cfg.components.component {
            q.append_child(stanza::new("item", ns::DISCO_ITEMS, &[("jid", &c.domain)]));
        }
        return Some(stanza::iq_result(el, Some(q)));
    }
    if is_get(el, "ping", ns::PING) {
        return Some(stanza::iq_result(el, None));
    }
    if is_get(el, "query", ns::VERSION) {
        let mut q = Element::bare("query", ns::VERSION);
        q.append_child(stanza::text("name", ns::VERSION, "Herald"));
        q.append_child(stanza::text(
            "version",
            ns::VERSION,
            env!("CARGO_PKG_VERSION"),
        ));
        return Some(stanza::iq_result(el, Some(q)));
    }
    stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None)
}

/// An IQ from someone else to an account's bare JID (RFC 6121 §8.5.2.1.3).
pub async fn handle_account_iq_from_other(
    _shared: &Arc<Shared>,
    _bare: &str,
    el: &Element,
) -> Option<Element> {
    match stanza::typ(el) {
        "get" | "set" => {}
        _ => return None,
    }
    if is_get(el, "query", ns::DISCO_INFO)
        && stanza::payload(el).and_then(|p| p.attr("node")).is_none()
    {
        return Some(stanza::iq_result(
            el,
            Some(disco_info(
                ("account", "registered", None),
                ACCOUNT_FEATURES,
            )),
        ));
    }
    stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None)
}

/// A client's IQ to its own account (no `to`, or its bare JID). Returns the reply for the client.
pub async fn handle_own_iq(shared: &Arc<Shared>, jid: &FullJid, el: &Element) -> Option<Element> {
    let payload = stanza::payload(el)?;
    if stanza::typ(el) == "set" && payload.is("session", ns::SESSION) {
        // RFC 3921 legacy session establishment: tolerated, nothing to do.
        return Some(stanza::iq_result(el, None));
    }
    if is_get(el, "ping", ns::PING) {
        return Some(stanza::iq_result(el, None));
    }
    let bare = jid.to_bare().to_string();
    handle_account_iq_from_other(shared, &bare, el).await
}
