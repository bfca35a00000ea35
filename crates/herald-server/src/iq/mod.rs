//! IQs the server answers itself: to a served domain, to an account's bare JID on the
//! account's behalf (RFC 6121 §8.5.2.1.3), and a client's own IQs (no `to`, or its bare JID).
//!
//! This module owns the answer to every such `get`/`set`: [`table`] lists each one, keyed by
//! (type, payload namespace, payload element, target), with its handler and the disco#info
//! features it serves; the dispatchers below look the key up and answer a miss with
//! `service-unavailable` (RFC 6120 §8.3.3.19). disco#info ([`disco`]) is built from the
//! table, so a feature is advertised exactly when a line serves it.
//!
//! It does not touch what a feature does: roster, blocking, MAM and push state live in
//! their modules (`crate::roster`, `crate::blocking`, `crate::mam`, `crate::push`), which
//! the table reaches through their `handle_iq`-style functions; nor does it route: IQs to
//! full JIDs and to other domains go through `crate::routing`, and `crate::session` decides
//! which IQs are the client's own. Results and errors are not answered here; those addressed
//! to the server go to the push task (replies to its publishes).
//!
//! To serve a new IQ: write its handler in a module here (declared below), or give a feature
//! module's async fn an adapter at the end of `table.rs`; then add one line per key it
//! serves to [`table::TABLE`], naming the features it makes true. disco#info follows by
//! itself; `tests/disco.rs` pins both lists, so a change in what is advertised shows there.

mod basic;
mod carbons;
pub mod disco;
mod push;
pub mod table;

use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::Element;

use crate::ctx::SessionCtx;
use crate::stanza::{self, Kind};
use crate::Shared;
use table::{Handler, IqType, Request, Target};

/// A stanza addressed to a served domain; returns the reply to route, if any.
pub async fn handle_server_stanza(shared: &Arc<Shared>, el: &Element) -> Option<Element> {
    if stanza::kind(el) != Some(Kind::Iq) {
        // Messages and presence to the server itself are not acted on.
        return None;
    }
    let Some(typ) = IqType::of(el) else {
        // The server asks app servers (push publishes); their results and errors come here.
        shared.push.on_reply(el);
        return None;
    };
    answer_without_session(shared, el, typ, Target::Server, None)
}

/// An IQ from someone else to an account's bare JID (RFC 6121 §8.5.2.1.3).
pub async fn handle_account_iq_from_other(
    shared: &Arc<Shared>,
    bare: &str,
    el: &Element,
) -> Option<Element> {
    // A result or error to a bare JID answers nothing the server asked: dropped.
    let typ = IqType::of(el)?;
    answer_without_session(shared, el, typ, Target::Other, Some(bare))
}

/// A client's IQ to its own account (no `to`, or its bare JID). Returns the reply for the client.
pub async fn handle_own_iq(session: &mut SessionCtx, el: &Element) -> Option<Element> {
    let Some(payload) = stanza::payload(el) else {
        return stanza::error(el, StanzaErrorCondition::BadRequest, None);
    };
    let typ = IqType::of(el)?;
    match table::lookup(typ, payload, Target::Own).map(|e| e.handler) {
        Some(Handler::Now(f)) => {
            let shared = session.shared.clone();
            Some(f(&Request {
                shared: &shared,
                iq: el,
                payload,
                target: Target::Own,
                account: Some(&session.bare),
            }))
        }
        Some(Handler::WithSession(f)) => Some(f(session, el, payload).await),
        None => stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None),
    }
}

/// Answers a `get`/`set` to the server or to an account from someone else.
fn answer_without_session(
    shared: &Arc<Shared>,
    el: &Element,
    typ: IqType,
    target: Target,
    account: Option<&str>,
) -> Option<Element> {
    let Some(payload) = stanza::payload(el) else {
        return stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None);
    };
    match table::lookup(typ, payload, target).map(|e| e.handler) {
        Some(Handler::Now(f)) => Some(f(&Request {
            shared,
            iq: el,
            payload,
            target,
            account,
        })),
        // Registered for `Target::Own` only (a unit test checks): nobody to run it with.
        Some(Handler::WithSession(_)) | None => {
            stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None)
        }
    }
}

/// The error answer to a `get`/`set` (which always has one).
fn error(el: &Element, cond: StanzaErrorCondition) -> Element {
    stanza::error(el, cond, None).unwrap_or_else(|| stanza::iq_result(el, None))
}
