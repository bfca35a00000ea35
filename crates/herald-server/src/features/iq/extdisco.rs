//! XEP-0215 External Service Discovery on the server's domain: the `[turn]` server's STUN
//! and TURN services, TURN with a credential derived from the shared secret (coturn's
//! `use-auth-secret`), valid for `[turn] ttl`. Only local accounts are given credentials.

use herald_proto::error::StanzaErrorCondition;
use herald_proto::Element;
use herald_xep::extdisco;

use super::Request;
use crate::{stanza, Shared};

/// Whether XEP-0215 is offered: a `[turn]` table.
pub fn served(shared: &Shared) -> bool {
    shared.cfg.turn.is_some()
}

/// `<services/>` or `<credentials/>` get.
pub fn services(req: &Request<'_>) -> Element {
    let Some(turn) = &req.shared.cfg.turn else {
        return super::error(req.iq, StanzaErrorCondition::ServiceUnavailable);
    };
    let user = match stanza::from(req.iq) {
        Ok(Some(j)) if j.node().is_some() && req.shared.cfg.is_local(j.domain().as_str()) => {
            j.to_bare().to_string()
        }
        _ => return super::error(req.iq, StanzaErrorCondition::NotAllowed),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cred = extdisco::credential(&turn.secret, &user, now, turn.ttl.0.as_secs());
    let expires = herald_xep::delay::format_stamp(
        i64::try_from(cred.expires)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000),
    );
    let filter = extdisco::filter(req.payload);
    let answer = extdisco::answer(
        req.payload.name(),
        &turn.host,
        turn.port,
        &cred,
        &expires,
        &filter,
    );
    stanza::iq_result(req.iq, Some(answer))
}
