//! XEP-0357 push: a client enables or disables push notifications for its account. The
//! registrations and the notifications belong to the push task (`crate::features::push`); this only
//! turns the IQ into its event and its outcome into the reply.

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::{ns, Element};
use herald_push::engine::{RegKey, Registration};

use super::Reply;
use crate::features::ctx::SessionCtx;
use crate::routing::msg::PushEvent;
use crate::stanza;

/// `<enable/>` and `<disable/>` in `urn:xmpp:push:0`.
pub fn command<'a>(s: &'a mut SessionCtx, iq: &'a Element, payload: &'a Element) -> Reply<'a> {
    Box::pin(push_command(s, iq, payload))
}

async fn push_command(session: &mut SessionCtx, el: &Element, payload: &Element) -> Element {
    let lang = el
        .attr_ns(rxml::Namespace::xml(), "lang")
        .or_else(|| payload.attr_ns(rxml::Namespace::xml(), "lang"))
        .map(str::to_string);
    match run(session, payload, lang).await {
        Ok(()) => stanza::iq_result(el, None),
        Err((c, t)) => herald_proto::error::error_reply(el, c, t, None)
            .unwrap_or_else(|| stanza::iq_result(el, None)),
    }
}

/// Herald's experimental inline enable in XEP-0386 Bind2 (`urn:herald:push:inline:0`, the
/// children and attributes of XEP-0357's `<enable/>`; crates/herald-push/RULES.md §15): the
/// answer for `<bound/>`, `<enabled/>` or `<failed>` with the error an IQ would have had.
pub async fn enable_inline(session: &mut SessionCtx, el: &Element) -> Element {
    let mut payload = Element::bare("enable", ns::PUSH);
    for k in ["jid", "node"] {
        if let Some(v) = el.attr(k) {
            herald_proto::error::set_plain_attr(&mut payload, k, v);
        }
    }
    for c in el.children() {
        payload.append_child(c.clone());
    }
    match run(session, &payload, None).await {
        Ok(()) => Element::bare("enabled", ns::PUSH_INLINE),
        Err((c, t)) => {
            let mut f = Element::bare("failed", ns::PUSH_INLINE);
            f.append_child(herald_proto::error::error_element(c, t, None));
            f
        }
    }
}

/// Carries out an `<enable/>` or `<disable/>` in `urn:xmpp:push:0` for this session.
async fn run(
    session: &mut SessionCtx,
    payload: &Element,
    lang: Option<String>,
) -> Result<(), (StanzaErrorCondition, Option<ErrorType>)> {
    use herald_push::request::{parse_command, PushCommand};
    // The full JID: herald-push refuses any spelling of the account as an app server and
    // returns canonical JIDs.
    let cmd =
        parse_command(payload, &session.jid.to_string()).map_err(|e| (e.condition(), None))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ev = match cmd {
        PushCommand::Enable {
            jid,
            node,
            publish_options,
        } => PushEvent::Enable {
            user: session.bare.clone(),
            session: session.id,
            reg: Registration {
                key: RegKey { jid, node },
                publish_options,
                enabled_at: crate::xep::delay::now_micros() / 1_000_000,
                resource: Some(session.jid.resource().to_string()),
                lang,
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
    let failed = (
        StanzaErrorCondition::InternalServerError,
        Some(ErrorType::Wait),
    );
    if !session.shared.push.send_wait(ev).await {
        return Err(failed);
    }
    match rx.await {
        Ok(Ok(())) => Ok(()),
        // A store failure changes nothing and says so: resource-constraint when it is
        // transient (the database busy or unreachable), both `wait`.
        Ok(Err(e)) => {
            let (cond, kind) = crate::features::ctx::store_condition(&e);
            Err((cond, Some(kind)))
        }
        Err(_) => Err(failed),
    }
}
