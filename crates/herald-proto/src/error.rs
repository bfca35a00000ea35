//! Stream and stanza errors (RFC 6120 §4.9 and §8.3).
//!
//! Handlers name a condition; this module turns it into the exact XML, so nobody builds error
//! XML by hand. It must not decide *when* an error is sent (that is the caller's policy), only
//! what it looks like.

use minidom::{Element, Node};
use rxml::{Namespace, NcName};

use crate::ns;
use crate::stream::INTERNAL_NS;

/// RFC 6120 §4.9.3: defined stream error conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamErrorCondition {
    /// The entity sent XML that cannot be processed (§4.9.3.1).
    BadFormat,
    /// A namespace prefix that is not supported, or none where one is required (§4.9.3.2).
    BadNamespacePrefix,
    /// A new stream conflicts with an existing one, e.g. the resource was taken over (§4.9.3.3).
    Conflict,
    /// The peer was silent for too long (§4.9.3.4).
    ConnectionTimeout,
    /// The `to` names a domain no longer served here (§4.9.3.5).
    HostGone,
    /// The `to` names a domain not served here (§4.9.3.6).
    HostUnknown,
    /// A stanza between servers lacks `to` or `from` (§4.9.3.7).
    ImproperAddressing,
    /// The server failed in a way not the peer's fault (§4.9.3.8).
    InternalServerError,
    /// The `from` is not one the peer authenticated as (§4.9.3.9).
    InvalidFrom,
    /// The stream or content namespace is wrong (§4.9.3.10).
    InvalidNamespace,
    /// XML that does not validate against the schema (§4.9.3.11).
    InvalidXml,
    /// Data sent before the stream was authenticated, or the account was removed (§4.9.3.12).
    NotAuthorized,
    /// XML that is not well-formed (§4.9.3.13).
    NotWellFormed,
    /// A local policy was violated, e.g. a stanza too large (§4.9.3.14).
    PolicyViolation,
    /// A remote server needed for the stream could not be reached (§4.9.3.15).
    RemoteConnectionFailed,
    /// The stream must be renegotiated, e.g. credentials changed (§4.9.3.16).
    Reset,
    /// The server lacks resources to serve the stream (§4.9.3.17).
    ResourceConstraint,
    /// XML features XMPP forbids: comments, PIs, DTDs, entity references (§4.9.3.18).
    RestrictedXml,
    /// The client should connect to another host (§4.9.3.19).
    SeeOtherHost,
    /// The server is shutting down (§4.9.3.20).
    SystemShutdown,
    /// No defined condition applies; an application condition says more (§4.9.3.21).
    UndefinedCondition,
    /// An encoding other than UTF-8 (§4.9.3.22).
    UnsupportedEncoding,
    /// A required stream feature is not supported (§4.9.3.23).
    UnsupportedFeature,
    /// A first-level child the server does not understand (§4.9.3.24).
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// The element name of the condition, e.g. `"not-well-formed"`.
    pub fn as_str(self) -> &'static str {
        use StreamErrorCondition::*;
        match self {
            BadFormat => "bad-format",
            BadNamespacePrefix => "bad-namespace-prefix",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostGone => "host-gone",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            Reset => "reset",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SeeOtherHost => "see-other-host",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        use StreamErrorCondition::*;
        const ALL: [StreamErrorCondition; 25] = [
            BadFormat,
            BadNamespacePrefix,
            Conflict,
            ConnectionTimeout,
            HostGone,
            HostUnknown,
            ImproperAddressing,
            InternalServerError,
            InvalidFrom,
            InvalidNamespace,
            InvalidXml,
            NotAuthorized,
            NotWellFormed,
            PolicyViolation,
            RemoteConnectionFailed,
            Reset,
            ResourceConstraint,
            RestrictedXml,
            SeeOtherHost,
            SystemShutdown,
            UndefinedCondition,
            UnsupportedEncoding,
            UnsupportedFeature,
            UnsupportedStanzaType,
            UnsupportedVersion,
        ];
        ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A stream-level error: the stream is closed after sending it (RFC 6120 §4.9.1.1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream error {}{}", .condition.as_str(), .text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    /// The defined condition sent to the peer.
    pub condition: StreamErrorCondition,
    /// Optional human-readable detail (sent in `<text/>`; keep it free of secrets).
    pub text: Option<String>,
}

impl StreamError {
    pub fn new(c: StreamErrorCondition, text: impl Into<Option<String>>) -> Self {
        StreamError {
            condition: c,
            text: text.into(),
        }
    }

    /// `<stream:error>` as sent on the wire; it relies on the `stream` prefix declared by the
    /// stream header, so it is only valid inside a stream.
    pub fn to_xml(&self) -> String {
        self.to_xml_with("")
    }

    /// [`Self::to_xml`] with an application-specific condition (RFC 6120 §4.9.4), already
    /// serialised, written right after the defined condition.
    pub fn to_xml_with(&self, app: &str) -> String {
        let mut s = String::with_capacity(128 + app.len());
        s.push_str("<stream:error><");
        s.push_str(self.condition.as_str());
        s.push_str(" xmlns='");
        s.push_str(ns::STREAMS_ERR);
        s.push_str("'/>");
        s.push_str(app);
        if let Some(text) = &self.text {
            s.push_str("<text xmlns='");
            s.push_str(ns::STREAMS_ERR);
            s.push_str("'>");
            escape_text_into(text, &mut s);
            s.push_str("</text>");
        }
        s.push_str("</stream:error>");
        s
    }
}

fn escape_text_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // XML 1.0 §2.2: these cannot appear in a document at all.
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' => {}
            c => out.push(c),
        }
    }
}

/// RFC 6120 §8.3.2: the `type` attribute of `<error/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auth" => ErrorType::Auth,
            "cancel" => ErrorType::Cancel,
            "continue" => ErrorType::Continue,
            "modify" => ErrorType::Modify,
            "wait" => ErrorType::Wait,
            _ => return None,
        })
    }
}

/// RFC 6120 §8.3.3: defined stanza error conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StanzaErrorCondition {
    /// The request is malformed or not understood (§8.3.3.1).
    BadRequest,
    /// The request conflicts with existing state, e.g. a resource in use (§8.3.3.2).
    Conflict,
    /// The feature asked for is not implemented (§8.3.3.3).
    FeatureNotImplemented,
    /// The requester may not do this (§8.3.3.4).
    Forbidden,
    /// The recipient no longer exists at this address (§8.3.3.5).
    Gone,
    /// The server failed in a way not the requester's fault (§8.3.3.6).
    InternalServerError,
    /// The addressed item does not exist (§8.3.3.7).
    ItemNotFound,
    /// A JID in the request is not valid (§8.3.3.8).
    JidMalformed,
    /// The request violates a rule of the recipient, e.g. a forged carbon (§8.3.3.9).
    NotAcceptable,
    /// No entity may do this (§8.3.3.10).
    NotAllowed,
    /// The requester must authenticate first (§8.3.3.11).
    NotAuthorized,
    /// A local policy was violated (§8.3.3.12).
    PolicyViolation,
    /// The recipient is temporarily unavailable (§8.3.3.13).
    RecipientUnavailable,
    /// The request should go to another address (§8.3.3.14).
    Redirect,
    /// The requester must register first (§8.3.3.15).
    RegistrationRequired,
    /// The recipient's server could not be found (§8.3.3.16).
    RemoteServerNotFound,
    /// The recipient's server could not be reached in time (§8.3.3.17).
    RemoteServerTimeout,
    /// The recipient or server lacks resources, e.g. a full queue (§8.3.3.18).
    ResourceConstraint,
    /// The service is not offered here, or the recipient does not exist (§8.3.3.19).
    ServiceUnavailable,
    /// The requester must subscribe first (§8.3.3.20).
    SubscriptionRequired,
    /// No defined condition applies (§8.3.3.21).
    UndefinedCondition,
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    const ALL: [StanzaErrorCondition; 22] = {
        use StanzaErrorCondition::*;
        [
            BadRequest,
            Conflict,
            FeatureNotImplemented,
            Forbidden,
            Gone,
            InternalServerError,
            ItemNotFound,
            JidMalformed,
            NotAcceptable,
            NotAllowed,
            NotAuthorized,
            PolicyViolation,
            RecipientUnavailable,
            Redirect,
            RegistrationRequired,
            RemoteServerNotFound,
            RemoteServerTimeout,
            ResourceConstraint,
            ServiceUnavailable,
            SubscriptionRequired,
            UndefinedCondition,
            UnexpectedRequest,
        ]
    };

    /// The element name of the condition, e.g. `"service-unavailable"`.
    pub fn as_str(self) -> &'static str {
        use StanzaErrorCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives (or its examples use) for each condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaErrorCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => {
                ErrorType::Modify
            }
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                ErrorType::Wait
            }
            Conflict
            | FeatureNotImplemented
            | Gone
            | InternalServerError
            | ItemNotFound
            | NotAllowed
            | RemoteServerNotFound
            | ServiceUnavailable
            | UndefinedCondition => ErrorType::Cancel,
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

fn attr_name(name: &str) -> Option<NcName> {
    NcName::try_from(name).ok()
}

/// Sets an attribute without a namespace (names are the caller's literals; an invalid one is
/// skipped).
pub fn set_plain_attr(el: &mut Element, name: &str, value: &str) {
    if let Some(n) = attr_name(name) {
        el.attrs_mut().insert(Namespace::NONE, n, value.to_owned());
    }
}

/// Builds `<error type=..><cond xmlns=STANZAS_ERR/>[<text>..</text>]</error>` in INTERNAL_NS.
pub fn error_element(
    cond: StanzaErrorCondition,
    kind: Option<ErrorType>,
    text: Option<&str>,
) -> Element {
    let kind = kind.unwrap_or_else(|| cond.default_type());
    let mut error = Element::bare("error", INTERNAL_NS);
    set_plain_attr(&mut error, "type", kind.as_str());
    error.append_child(Element::bare(cond.as_str(), ns::STANZAS_ERR));
    if let Some(text) = text {
        let mut t = Element::bare("text", ns::STANZAS_ERR);
        t.append_text_node(text);
        error.append_child(t);
    }
    error
}

/// Error reply to `stanza` (an Element in INTERNAL_NS: message/presence/iq): swaps to/from,
/// type='error', keeps id, for message/presence keeps the original children (RFC 6120 §8.3.1
/// allows), for iq drops the payload, appends `<error/>`. Returns None if `stanza` is itself
/// type='error' (RFC 6120 §8.3.1: never answer an error with an error) or is not a stanza.
/// `kind` None = the condition's default type.
pub fn error_reply(
    stanza: &Element,
    cond: StanzaErrorCondition,
    kind: Option<ErrorType>,
    text: Option<&str>,
) -> Option<Element> {
    if !stanza.has_ns(INTERNAL_NS) {
        return None;
    }
    let name = stanza.name();
    if !matches!(name, "message" | "presence" | "iq") {
        return None;
    }
    if stanza.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::bare(name, INTERNAL_NS);
    if let Some(from) = stanza.attr("from") {
        set_plain_attr(&mut reply, "to", from);
    }
    if let Some(to) = stanza.attr("to") {
        set_plain_attr(&mut reply, "from", to);
    }
    if let Some(id) = stanza.attr("id") {
        set_plain_attr(&mut reply, "id", id);
    }
    set_plain_attr(&mut reply, "type", "error");
    if let Some(lang) = stanza.attr_ns(rxml::XMLNS_XML, "lang") {
        if let Some(n) = attr_name("lang") {
            reply.attrs_mut().insert(Namespace::XML, n, lang.to_owned());
        }
    }
    if name != "iq" {
        // RFC 6120 §8.3.1: the error stanza MAY include the original XML. Keeping it lets
        // the sender see which message bounced.
        for node in stanza.nodes() {
            match node {
                Node::Element(e) if e.is("error", INTERNAL_NS) => {}
                n => reply.append_node(n.clone()),
            }
        }
    }
    reply.append_child(error_element(cond, kind, text));
    Some(reply)
}

/// Reads `<error/>` of an error stanza: (type, condition) if present. A missing or unknown
/// `type` falls back to the condition's default type; without either, None.
pub fn parse_stanza_error(stanza: &Element) -> Option<(ErrorType, Option<StanzaErrorCondition>)> {
    let error = stanza.children().find(|c| c.is("error", INTERNAL_NS))?;
    let cond = error
        .children()
        .filter(|c| c.has_ns(ns::STANZAS_ERR) && c.name() != "text")
        .find_map(|c| StanzaErrorCondition::parse(c.name()));
    let kind = error
        .attr("type")
        .and_then(ErrorType::parse)
        .or_else(|| cond.map(StanzaErrorCondition::default_type))?;
    Some((kind, cond))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn condition_names_round_trip() {
        for c in StanzaErrorCondition::ALL {
            assert_eq!(StanzaErrorCondition::parse(c.as_str()), Some(c));
        }
        assert_eq!(StanzaErrorCondition::parse("nope"), None);
        assert_eq!(
            StreamErrorCondition::parse("not-well-formed"),
            Some(StreamErrorCondition::NotWellFormed)
        );
        for t in ["auth", "cancel", "continue", "modify", "wait"] {
            assert_eq!(ErrorType::parse(t).map(ErrorType::as_str), Some(t));
        }
    }

    #[test]
    fn default_types_follow_rfc6120() {
        use StanzaErrorCondition::*;
        assert_eq!(ServiceUnavailable.default_type(), ErrorType::Cancel);
        assert_eq!(BadRequest.default_type(), ErrorType::Modify);
        assert_eq!(NotAuthorized.default_type(), ErrorType::Auth);
        assert_eq!(ResourceConstraint.default_type(), ErrorType::Wait);
        assert_eq!(RecipientUnavailable.default_type(), ErrorType::Wait);
        assert_eq!(ItemNotFound.default_type(), ErrorType::Cancel);
    }

    #[test]
    fn stream_error_xml() {
        let e = StreamError::new(StreamErrorCondition::NotWellFormed, None);
        assert_eq!(
            e.to_xml(),
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
        let e = StreamError::new(
            StreamErrorCondition::PolicyViolation,
            Some("too <big> & bad".to_string()),
        );
        assert_eq!(
            e.to_xml(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too &lt;big&gt; &amp; bad</text></stream:error>"
        );
        assert_eq!(
            e.to_string(),
            "stream error policy-violation: too <big> & bad"
        );
    }

    #[test]
    fn iq_error_reply_drops_payload_and_swaps_addresses() {
        let iq = el(
            "<iq xmlns='jabber:client' type='get' id='q1' from='a@b/c' to='b'>\
                     <query xmlns='jabber:iq:version'/></iq>",
        );
        let r = error_reply(&iq, StanzaErrorCondition::ServiceUnavailable, None, None).unwrap();
        assert_eq!(r.name(), "iq");
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("q1"));
        assert_eq!(r.attr("to"), Some("a@b/c"));
        assert_eq!(r.attr("from"), Some("b"));
        let children: Vec<_> = r.children().collect();
        assert_eq!(children.len(), 1);
        let err = children[0];
        assert!(err.is("error", INTERNAL_NS));
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("service-unavailable", ns::STANZAS_ERR));
        assert!(!err.has_child("text", ns::STANZAS_ERR));
        assert_eq!(
            parse_stanza_error(&r),
            Some((
                ErrorType::Cancel,
                Some(StanzaErrorCondition::ServiceUnavailable)
            ))
        );
    }

    #[test]
    fn message_error_reply_keeps_children_and_text() {
        let m = el(
            "<message xmlns='jabber:client' type='chat' id='m1' from='a@b/c' to='d@e' \
                    xml:lang='en'><body>hi</body></message>",
        );
        let r = error_reply(
            &m,
            StanzaErrorCondition::RecipientUnavailable,
            Some(ErrorType::Cancel),
            Some("gone fishing"),
        )
        .unwrap();
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("to"), Some("a@b/c"));
        assert_eq!(r.attr("from"), Some("d@e"));
        assert_eq!(r.attr_ns(rxml::XMLNS_XML, "lang"), Some("en"));
        assert_eq!(r.get_child("body", INTERNAL_NS).unwrap().text(), "hi");
        let err = r.get_child("error", INTERNAL_NS).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert_eq!(
            err.get_child("text", ns::STANZAS_ERR).unwrap().text(),
            "gone fishing"
        );
        assert_eq!(
            parse_stanza_error(&r),
            Some((
                ErrorType::Cancel,
                Some(StanzaErrorCondition::RecipientUnavailable)
            ))
        );
    }

    #[test]
    fn never_answers_an_error_or_a_non_stanza() {
        let m = el("<message xmlns='jabber:client' type='error' from='a@b'><error type='cancel'>\
                    <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
        assert!(error_reply(&m, StanzaErrorCondition::BadRequest, None, None).is_none());
        let r = el("<r xmlns='urn:xmpp:sm:3'/>");
        assert!(error_reply(&r, StanzaErrorCondition::BadRequest, None, None).is_none());
        let foreign = el("<message xmlns='jabber:server'/>");
        assert!(error_reply(&foreign, StanzaErrorCondition::BadRequest, None, None).is_none());
    }

    #[test]
    fn presence_without_addresses() {
        let p = el("<presence xmlns='jabber:client' type='subscribe'/>");
        let r = error_reply(&p, StanzaErrorCondition::Forbidden, None, None).unwrap();
        assert_eq!(r.attr("to"), None);
        assert_eq!(r.attr("from"), None);
        assert_eq!(r.attr("id"), None);
        assert_eq!(
            parse_stanza_error(&r),
            Some((ErrorType::Auth, Some(StanzaErrorCondition::Forbidden)))
        );
    }

    #[test]
    fn parse_stanza_error_edge_cases() {
        assert_eq!(
            parse_stanza_error(&el("<message xmlns='jabber:client'/>")),
            None
        );
        let unknown = el("<iq xmlns='jabber:client' type='error'><error type='wait'>\
                          <x-custom xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
        assert_eq!(parse_stanza_error(&unknown), Some((ErrorType::Wait, None)));
        let no_type = el("<iq xmlns='jabber:client' type='error'><error>\
                          <conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
        assert_eq!(
            parse_stanza_error(&no_type),
            Some((ErrorType::Cancel, Some(StanzaErrorCondition::Conflict)))
        );
        let nothing = el("<iq xmlns='jabber:client' type='error'><error/></iq>");
        assert_eq!(parse_stanza_error(&nothing), None);
    }
}
