//! XEP-0357 push: a client enables or disables push notifications for its account. The
//! registrations and the notifications belong to the push task (`crate::features::push`); this only
//! turns the IQ into its event and its outcome into the reply.

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::Element;
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
    use herald_push::request::{parse_command, PushCommand};
    let err = |c: StanzaErrorCondition, t: Option<ErrorType>| {
        herald_proto::error::error_reply(el, c, t, None)
            .unwrap_or_else(|| stanza::iq_result(el, None))
    };
    // The full JID: herald-push refuses any spelling of the account as an app server and
    // returns canonical JIDs.
    let cmd = match parse_command(payload, &session.jid.to_string()) {
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
            session: session.id,
            reg: Registration {
                key: RegKey { jid, node },
                publish_options,
                enabled_at: crate::xep::delay::now_micros() / 1_000_000,
                resource: Some(session.jid.resource().to_string()),
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
