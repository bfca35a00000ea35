//! Reading the client's XEP-0357 `<enable/>` and `<disable/>` requests.
//!
//! Must not: touch registrations (the engine does) or build error stanzas (the server maps
//! [`PushError`] to its condition).

use minidom::Element;

use crate::classify::bare_jid;
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
    /// The app server JID is the user's own JID.
    #[error("jid must be different from ours")]
    OwnJid,
}

impl PushError {
    /// The RFC 6120 §8.3.3 condition to answer with (type `modify`).
    pub fn condition(&self) -> &'static str {
        match self {
            PushError::NotPush => "feature-not-implemented",
            PushError::MissingJid | PushError::OwnJid => "bad-request",
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
pub fn parse_command(payload: &Element, own_jid: &str) -> Result<PushCommand, PushError> {
    let enable = payload.is("enable", ns::PUSH);
    if !enable && !payload.is("disable", ns::PUSH) {
        return Err(PushError::NotPush);
    }
    let jid = match payload.attr("jid") {
        Some(j) if !j.is_empty() => j.to_owned(),
        _ => return Err(PushError::MissingJid),
    };
    let node = payload.attr("node").map(str::to_owned);
    if enable {
        if jid == own_jid || jid == bare_jid(own_jid) {
            return Err(PushError::OwnJid);
        }
        Ok(PushCommand::Enable {
            jid,
            node: node.unwrap_or_default(),
            publish_options: payload.get_child("x", ns::DATA_FORMS).cloned(),
        })
    } else {
        Ok(PushCommand::Disable { jid, node })
    }
}
