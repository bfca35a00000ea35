//! IQs the server answers itself: to its domain (XEP-0030 disco, XEP-0199 ping, XEP-0092
//! version), to an account's bare JID on the account's behalf, and a client's own IQs
//! without `to`.

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::ns;
use herald_proto::Element;

use herald_proto::error::ErrorType;
use herald_push::engine::{RegKey, Registration};

use crate::push::PushEvent;
use crate::session::Session;
use crate::stanza::{self, Kind};
use crate::{blocking, mam, roster, Shared};

/// Features of the server's domain.
const SERVER_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, ns::VERSION];

/// Features advertised on an account's bare JID. `PUSH_PRIORITY`: every notification carries
/// the priority hint, and a client checks the account's features (as with Prosody's
/// `mod_cloud_notify_priority_tag`) to know its app server may rely on it.
const ACCOUNT_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::PING,
    ns::PUSH,
    ns::PUSH_PRIORITY,
    ns::MAM,
    ns::MAM1,
];

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
        _ => {
            shared.push.on_reply(el);
            return None;
        }
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
pub async fn handle_own_iq(session: &mut Session, el: &Element) -> Option<Element> {
    let Some(payload) = stanza::payload(el).cloned() else {
        return stanza::error(el, StanzaErrorCondition::BadRequest, None);
    };
    let set = stanza::typ(el) == "set";
    if set && payload.is("session", ns::SESSION) {
        // RFC 3921 legacy session establishment: tolerated, nothing to do.
        return Some(stanza::iq_result(el, None));
    }
    if is_get(el, "ping", ns::PING) {
        return Some(stanza::iq_result(el, None));
    }
    if payload.is("query", ns::ROSTER) {
        return Some(roster::handle_iq(session, el).await);
    }
    if payload.has_ns(ns::BLOCKING) {
        return Some(blocking::handle_iq(session, el).await);
    }
    if payload.has_ns(ns::MAM) || payload.has_ns(ns::MAM1) {
        return Some(mam::handle_iq(session, el, &payload).await);
    }
    if set && payload.has_ns(ns::CARBONS) {
        return Some(match crate::xep::carbons::parse_command(&payload) {
            Some(cmd) => {
                let on = matches!(cmd, crate::xep::carbons::CarbonsCmd::Enable);
                session.carbons = on;
                session
                    .shared
                    .router
                    .set_carbons(&session.bare, session.id(), on);
                stanza::iq_result(el, None)
            }
            None => stanza::error(el, StanzaErrorCondition::BadRequest, None)?,
        });
    }
    if set && payload.has_ns(ns::PUSH) {
        return Some(push_command(session, el, &payload).await);
    }
    let shared = session.shared.clone();
    let bare = session.bare.clone();
    handle_account_iq_from_other(&shared, &bare, el).await
}

async fn push_command(session: &mut Session, el: &Element, payload: &Element) -> Element {
    use herald_push::request::{parse_command, PushCommand};
    let err = |c: StanzaErrorCondition, t: Option<ErrorType>| {
        herald_proto::error::error_reply(el, c, t, None)
            .unwrap_or_else(|| stanza::iq_result(el, None))
    };
    // The full JID: herald-push refuses any spelling of the account as an app server and
    // returns canonical JIDs.
    let cmd = match parse_command(payload, &session.jid().to_string()) {
        Ok(c) => c,
        Err(e) => return err(e.condition(), None),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ev = match cmd {
        PushCommand::Enable {
            jid,
            node,
            publish_options,
        } => PushEvent::Enable {
            user: session.bare.clone(),
            session: session.id(),
            reg: Registration {
                key: RegKey { jid, node },
                publish_options,
                enabled_at: crate::xep::delay::now_micros() / 1_000_000,
                resource: Some(session.jid().resource().to_string()),
                lang: el
                    .attr_ns(rxml::Namespace::xml(), "lang")
                    .or_else(|| payload.attr_ns(rxml::Namespace::xml(), "lang"))
                    .map(str::to_string),
                error_count: 0,
            },
            reply: tx,
        },
        PushCommand::Disable { jid, node } => PushEvent::Disable {
            user: session.bare.clone(),
            jid,
            node,
            reply: tx,
        },
    };
    if !session.shared.push.send_wait(ev).await {
        return err(
            StanzaErrorCondition::InternalServerError,
            Some(ErrorType::Wait),
        );
    }
    match rx.await {
        Ok(Ok(())) => stanza::iq_result(el, None),
        // The rule: a store failure changes nothing and says so.
        _ => err(
            StanzaErrorCondition::InternalServerError,
            Some(ErrorType::Wait),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_advertise_the_priority_hint_notifications_carry() {
        // herald-push builds the element with the same constant (herald_proto::ns).
        assert!(ACCOUNT_FEATURES.contains(&ns::PUSH_PRIORITY));
    }
}
