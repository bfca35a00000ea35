//! Reading the client's XEP-0357 `<enable/>` and `<disable/>` requests.
//!
//! Must not: touch registrations (the engine does) or build error stanzas (the server maps
//! [`PushError`] to its condition).

use minidom::Element;

use crate::classify::bare_jid;
use herald_proto::error::StanzaErrorCondition;
use herald_proto::jid::Jid;
use herald_proto::ns;

/// Why a push request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The payload is not `<enable/>` or `<disable/>` in `urn:xmpp:push:0`.
    #[error("not a push enable/disable request")]
    NotPush,
    /// The request has no (or an empty) `jid` attribute (XEP-0357 §5/§6: it MUST have one).
    #[error("missing jid")]
    MissingJid,
    /// The app server JID is the user's own JID (any resource, any spelling).
    #[error("jid must be different from ours")]
    OwnJid,
    /// The app server JID is not a valid JID (RFC 7622).
    #[error("malformed jid")]
    BadJid,
}

impl PushError {
    /// The RFC 6120 §8.3.3 condition to answer with (type `modify`).
    pub fn condition(&self) -> StanzaErrorCondition {
        match self {
            PushError::NotPush => StanzaErrorCondition::FeatureNotImplemented,
            PushError::MissingJid | PushError::OwnJid | PushError::BadJid => {
                StanzaErrorCondition::BadRequest
            }
        }
    }
}

/// A parsed push request.
#[derive(Clone, Debug, PartialEq)]
pub enum PushCommand {
    /// XEP-0357 §5: enable pushes to (jid, node), with optional publish-options.
    Enable {
        /// App server JID.
        jid: String,
        /// Node (empty when the client gave none; XEP-0357 says it SHOULD).
        node: String,
        /// The client's `jabber:x:data` form, copied unchanged into every publish.
        publish_options: Option<Element>,
    },
    /// XEP-0357 §6: disable (jid) or only (jid, node).
    Disable {
        /// App server JID.
        jid: String,
        /// Only this node when given.
        node: Option<String>,
    },
}

/// Parses the child of an `<iq type='set'>` sent by `own_jid` (full or bare JID).
///
/// App server JIDs come back in their canonical form (RFC 7622 preparation), so that a
/// disable matches the enable however either was spelled; an enable naming any spelling of
/// the user's own account (any resource, any case) is refused: the account is not an app
/// server, and publishing to it would loop back to the user.
pub fn parse_command(payload: &Element, own_jid: &str) -> Result<PushCommand, PushError> {
    let enable = payload.is("enable", ns::PUSH);
    if !enable && !payload.is("disable", ns::PUSH) {
        return Err(PushError::NotPush);
    }
    let raw = match payload.attr("jid") {
        Some(j) if !j.is_empty() => j,
        _ => return Err(PushError::MissingJid),
    };
    // Stored as the app server's address: refused if its normal form would not parse again.
    let jid = herald_proto::address::jid(raw).map_err(|_| PushError::BadJid)?;
    let node = payload.attr("node").map(str::to_owned);
    if enable {
        let own = own_jid
            .parse::<Jid>()
            .map(|o| o.to_bare() == jid.to_bare())
            .unwrap_or(raw == own_jid || raw == bare_jid(own_jid));
        if own {
            return Err(PushError::OwnJid);
        }
        Ok(PushCommand::Enable {
            jid: jid.to_string(),
            node: node.unwrap_or_default(),
            publish_options: payload.get_child("x", ns::DATA_FORMS).cloned(),
        })
    } else {
        Ok(PushCommand::Disable {
            jid: jid.to_string(),
            node,
        })
    }
}
