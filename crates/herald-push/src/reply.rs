//! Reading an app server's answer to a publish (RULES.md §9): which answers are the app
//! server's verdict on the registration, which are only the path's trouble, and who may
//! answer at all.
//!
//! Must not: change registrations (the engine does, from the [`Reply`] this returns).

use herald_proto::error::{parse_stanza_error, ErrorType, StanzaErrorCondition};
use minidom::Element;

use crate::engine::Reply;

/// The outcome of an `<iq type='result'/>` or `<iq type='error'/>` answering a publish, with
/// the error type as received (for `herald push test`); None for any other stanza.
///
/// A `wait` error is temporary (RFC 6120 §8.3.2); `remote-server-not-found` and
/// `remote-server-timeout` say the path to the app server failed, not the app server. Both
/// are retried and never counted against the registration. Every other error is the app
/// server's and counts.
pub fn read(iq: &Element) -> Option<(Reply, Option<ErrorType>)> {
    match iq.attr("type") {
        Some("result") => Some((Reply::Result, None)),
        Some("error") => {
            let (t, cond) = parse_stanza_error(iq).unwrap_or((ErrorType::Cancel, None));
            let path = matches!(
                cond,
                Some(
                    StanzaErrorCondition::RemoteServerNotFound
                        | StanzaErrorCondition::RemoteServerTimeout
                )
            );
            let reply = Reply::Error {
                wait: t == ErrorType::Wait || path,
                condition: cond
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "undefined-condition".into()),
            };
            Some((reply, Some(t)))
        }
        _ => None,
    }
}

/// A publish to a local app-server component that is not connected: our outage, not the app
/// server's error. Retried like a `wait` and never counted, or a component restart would
/// remove every registration it serves.
pub fn unreachable() -> (Reply, Option<ErrorType>) {
    (
        Reply::Error {
            wait: true,
            condition: StanzaErrorCondition::RemoteServerTimeout
                .as_str()
                .to_string(),
        },
        Some(ErrorType::Wait),
    )
}

/// Whether `from` may answer an IQ sent to `to` (RFC 6120 §8.2.3): the same JID, or, for a
/// bare `to`, one of its resources. Anyone else who learnt a publish id could otherwise
/// reset, or run up to removal, another user's registration.
pub fn answers_for(from: &str, to: &str) -> bool {
    let parse = herald_proto::address::jid;
    let (Ok(from), Ok(to)) = (parse(from), parse(to)) else {
        return false;
    };
    from == to || (to.is_bare() && from.to_bare() == to.to_bare())
}
