//! XEP-0388 SASL2 with XEP-0386 Bind2, XEP-0198 inline and XEP-0484 FAST on the wire: what
//! the server offers in `<authentication/>`, what a client's `<authenticate/>` asks for
//! ([`Request`]), the resource Bind2 derives from the client id ([`resource`]), and the
//! `<success/>`/`<failure/>` elements. [`crate::negotiate`] runs the exchange; the session
//! task applies the inline features.
//!
//! Offered mechanisms are the legacy ones ([`herald_proto::sasl::Mechanism`]) plus the FAST
//! mechanisms in `<fast/>` ([`fast_offered`]: `HT-SHA-256-EXPR`/`-ENDP` where the connection
//! has that channel binding, and `-NONE`; never `-UNIQ`, as `tls-unique` does not exist in
//! TLS 1.3 and the TLS library does not expose it). Tasks (`<continue/>`) are not implemented: no `<continue/>` is ever sent.
//!
//! Must not: look anything up, generate randomness, or read clocks.

use herald_proto::error::set_plain_attr;
use herald_proto::ns;
use herald_proto::sasl::{self, ht, Mechanism};
use herald_proto::Element;
use sha2::{Digest, Sha256};

/// FAST mechanisms known, most preferred first (channel binding first).
pub const FAST_MECHANISMS: &[&str] = &[ht::SHA256_EXPR, ht::SHA256_ENDP, ht::SHA256_NONE];

/// The FAST mechanisms a connection with `bindings` offers: those whose channel-binding type
/// it has (as for SCRAM-*-PLUS), and -NONE.
pub fn fast_offered(bindings: &sasl::ChannelBindings) -> Vec<&'static str> {
    FAST_MECHANISMS
        .iter()
        .copied()
        .filter(|m| match ht::channel_binding(m) {
            Some(Some(ty)) => bindings.get(ty).is_some(),
            Some(None) => true,
            None => false,
        })
        .collect()
}

/// Longest user-agent id, Bind2 tag, software or device string kept (longer ones are cut).
pub const MAX_AGENT_FIELD: usize = 256;

/// What a client's `<authenticate/>` asks for besides the SASL exchange.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The `mechanism` attribute.
    pub mechanism: String,
    /// `<initial-response/>` decoded (None: absent).
    pub initial: Option<Vec<u8>>,
    /// `<user-agent id=…>`: the stable client id (XEP-0388 §2.3; a UUID by the XEP).
    pub client_id: Option<String>,
    /// `<software/>` and `<device/>` (for logs).
    pub software: Option<String>,
    /// The device name.
    pub device: Option<String>,
    /// XEP-0386 `<bind/>`.
    pub bind: Option<BindRequest>,
    /// XEP-0198 `<resume previd h/>` inline.
    pub resume: Option<(String, u32)>,
    /// XEP-0484 `<request-token mechanism=…/>`.
    pub request_token: Option<String>,
    /// XEP-0484 `<fast/>`: this is a token authentication; `invalidate`: the token dies now.
    pub fast: Option<FastUse>,
}

/// XEP-0484 `<fast/>` in `<authenticate/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FastUse {
    /// `invalidate='true'`: the client logs out; the token used is deleted after success.
    pub invalidate: bool,
}

/// XEP-0386 `<bind/>`: the tag and the inline features asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindRequest {
    /// `<tag/>`: the client's name for itself, the first part of the resource.
    pub tag: Option<String>,
    /// XEP-0280 `<enable/>`.
    pub carbons: bool,
    /// XEP-0352: Some(true) for `<active/>`, Some(false) for `<inactive/>`.
    pub csi_active: Option<bool>,
    /// XEP-0198 `<enable/>`, as sent (the session answers it as a nonza).
    pub sm_enable: Option<Element>,
    /// Herald's inline XEP-0357 `<enable xmlns='urn:herald:push:inline:0'/>`, as sent.
    pub push_enable: Option<Element>,
}

/// Why an `<authenticate/>` is refused before the SASL exchange starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No or an empty `mechanism`.
    InvalidMechanism,
    /// `<initial-response/>` is not base64.
    IncorrectEncoding,
    /// `<resume/>` without a numeric `h`, or a FAST authentication without a client id.
    MalformedRequest,
}

impl Refused {
    /// The SASL condition (RFC 6120 §6.5).
    pub fn condition(self) -> &'static str {
        match self {
            Refused::InvalidMechanism => "invalid-mechanism",
            Refused::IncorrectEncoding => "incorrect-encoding",
            Refused::MalformedRequest => "malformed-request",
        }
    }
}

fn cut(s: String) -> String {
    if s.len() <= MAX_AGENT_FIELD {
        return s;
    }
    let mut end = MAX_AGENT_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn nonempty(s: String) -> Option<String> {
    let s = s.trim().to_string();
    (!s.is_empty()).then(|| cut(s))
}

/// Parses `<authenticate xmlns='urn:xmpp:sasl:2'/>`.
pub fn parse(el: &Element) -> Result<Request, Refused> {
    let mechanism = el
        .attr("mechanism")
        .filter(|m| !m.is_empty())
        .ok_or(Refused::InvalidMechanism)?
        .to_string();
    let initial = match el.get_child("initial-response", ns::SASL2) {
        None => None,
        Some(i) => Some(sasl::decode_payload(&i.text()).map_err(|_| Refused::IncorrectEncoding)?),
    };
    let mut r = Request {
        mechanism,
        initial,
        ..Request::default()
    };
    if let Some(ua) = el.get_child("user-agent", ns::SASL2) {
        r.client_id = ua.attr("id").map(str::to_string).and_then(nonempty);
        r.software = ua
            .get_child("software", ns::SASL2)
            .and_then(|s| nonempty(s.text()));
        r.device = ua
            .get_child("device", ns::SASL2)
            .and_then(|s| nonempty(s.text()));
    }
    if let Some(b) = el.get_child("bind", ns::BIND2) {
        r.bind = Some(BindRequest {
            tag: b
                .get_child("tag", ns::BIND2)
                .and_then(|t| nonempty(t.text())),
            carbons: b.get_child("enable", ns::CARBONS).is_some(),
            csi_active: b
                .children()
                .find(|c| c.has_ns(ns::CSI))
                .and_then(|c| match c.name() {
                    "active" => Some(true),
                    "inactive" => Some(false),
                    _ => None,
                }),
            sm_enable: b.get_child("enable", ns::SM).cloned(),
            push_enable: b.get_child("enable", ns::PUSH_INLINE).cloned(),
        });
    }
    if let Some(res) = el.get_child("resume", ns::SM) {
        let h = res.attr("h").and_then(|h| h.parse::<u32>().ok());
        let Some(h) = h else {
            return Err(Refused::MalformedRequest);
        };
        r.resume = Some((res.attr("previd").unwrap_or_default().to_string(), h));
    }
    if let Some(t) = el.get_child("request-token", ns::FAST) {
        r.request_token = t.attr("mechanism").map(str::to_string);
    }
    if let Some(f) = el.get_child("fast", ns::FAST) {
        r.fast = Some(FastUse {
            invalidate: matches!(f.attr("invalidate"), Some("true") | Some("1")),
        });
    }
    Ok(r)
}

/// Whether `name` is one of the FAST mechanisms (offered on some connection).
pub fn is_fast_mechanism(name: &str) -> bool {
    FAST_MECHANISMS.contains(&name)
}

/// XEP-0386 §3: the resource of a Bind2 session: the client's tag (or "herald") and a short
/// hash of its client id, so the same client gets the same resource on every login (and a
/// reconnect replaces its own stale session instead of piling up resources) while the id
/// itself is not disclosed to contacts. None without a client id: the driver makes a random
/// one.
pub fn resource(tag: Option<&str>, client_id: Option<&str>) -> Option<String> {
    let id = client_id?;
    let digest = Sha256::digest(id.as_bytes());
    let mut hash = String::with_capacity(12);
    for b in &digest[..6] {
        hash.push_str(&format!("{b:02x}"));
    }
    let tag: String = tag
        .unwrap_or("herald")
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .take(64)
        .collect();
    let tag = if tag.is_empty() { "herald".into() } else { tag };
    Some(format!("{tag}~{hash}"))
}

/// `<authentication xmlns='urn:xmpp:sasl:2'>` offered next to legacy SASL: the mechanisms
/// and what `<authenticate/>` may carry inline (Bind2 with its own inline features, XEP-0198
/// resumption, FAST with the mechanisms in `fast` when there are any).
pub fn authentication(mechanisms: &[Mechanism], fast: &[&str]) -> Element {
    let mut a = Element::bare("authentication", ns::SASL2);
    for m in mechanisms {
        a.append_child(text_el("mechanism", ns::SASL2, m.name()));
    }
    let mut inline = Element::bare("inline", ns::SASL2);
    let mut bind = Element::bare("bind", ns::BIND2);
    let mut bind_inline = Element::bare("inline", ns::BIND2);
    for var in [ns::CARBONS, ns::CSI, ns::SM, ns::PUSH_INLINE] {
        let mut f = Element::bare("feature", ns::BIND2);
        set_plain_attr(&mut f, "var", var);
        bind_inline.append_child(f);
    }
    bind.append_child(bind_inline);
    inline.append_child(bind);
    inline.append_child(Element::bare("sm", ns::SM));
    if !fast.is_empty() {
        let mut f = Element::bare("fast", ns::FAST);
        for m in fast {
            f.append_child(text_el("mechanism", ns::FAST, m));
        }
        inline.append_child(f);
    }
    a.append_child(inline);
    a
}

/// `<challenge/>` with `data`.
pub fn challenge(data: &[u8]) -> Element {
    text_el("challenge", ns::SASL2, &sasl::encode_payload(data))
}

/// `<failure><cond xmlns='…xmpp-sasl'/><text/>?</failure>` (XEP-0388 §2.6.2: the conditions
/// are RFC 6120's, in their namespace).
pub fn failure(cond: &str, text: Option<&str>) -> Element {
    let mut f = Element::bare("failure", ns::SASL2);
    f.append_child(Element::bare(cond, ns::SASL));
    if let Some(t) = text {
        f.append_child(text_el("text", ns::SASL2, t));
    }
    f
}

/// A `<success/>` being assembled: the mechanism's additional data and what inline features
/// added so far (a FAST `<token/>`, a failed resumption's `<failed/>`); whoever finishes the
/// login (the negotiation, the Bind2 session, the resumed session) adds the authorization
/// identifier and its own results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Success {
    /// `<additional-data/>` (SCRAM's server-final message, HT's responder message).
    pub additional: Option<Vec<u8>>,
    /// Inline results in the order they are written.
    pub results: Vec<Element>,
}

impl Success {
    /// `<success>` for `authzid` (a bare JID, or the full one once bound or resumed), with
    /// `more` after the results gathered.
    pub fn into_element(self, authzid: &str, more: Vec<Element>) -> Element {
        let mut s = Element::bare("success", ns::SASL2);
        if let Some(d) = &self.additional {
            s.append_child(text_el(
                "additional-data",
                ns::SASL2,
                &sasl::encode_payload(d),
            ));
        }
        s.append_child(text_el("authorization-identifier", ns::SASL2, authzid));
        for r in self.results.into_iter().chain(more) {
            s.append_child(r);
        }
        s
    }
}

/// XEP-0484 `<token xmlns='urn:xmpp:fast:0' expiry token/>`.
pub fn token(token: &str, expiry: &str) -> Element {
    let mut t = Element::bare("token", ns::FAST);
    set_plain_attr(&mut t, "expiry", expiry);
    set_plain_attr(&mut t, "token", token);
    t
}

/// XEP-0386 `<bound/>` with the inline features' answers.
pub fn bound(results: Vec<Element>) -> Element {
    let mut b = Element::bare("bound", ns::BIND2);
    for r in results {
        b.append_child(r);
    }
    b
}

/// XEP-0386 `<failed/>` instead of `<bound/>`: binding was refused with this error.
pub fn bind_failed(
    cond: herald_proto::error::StanzaErrorCondition,
    kind: herald_proto::error::ErrorType,
) -> Element {
    let mut f = Element::bare("failed", ns::BIND2);
    f.append_child(herald_proto::error::error_element(cond, Some(kind), None));
    f
}

/// The stream features after a SASL2 success that bound a resource or resumed a session:
/// nothing to negotiate any more (no resource binding: XEP-0386 §2.4 — the session is bound),
/// informational features only, and stream management only if it is not on yet.
pub fn features_after_bind(sm_on: bool) -> Element {
    let mut f = Element::bare("features", ns::STREAM);
    if !sm_on {
        f.append_child(herald_proto::sm::feature());
    }
    f.append_child(Element::bare("csi", ns::CSI));
    f.append_child(Element::bare("ver", ns::ROSTERVER));
    f
}

fn text_el(name: &str, namespace: &str, text: &str) -> Element {
    let mut el = Element::bare(name, namespace);
    el.append_text(text);
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn parses_everything_an_authenticate_may_carry() {
        let a = el(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'>\
            <initial-response>biwsbj11c2VyLHI9YWJj</initial-response>\
            <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'>\
              <software>AwesomeXMPP</software><device>Kiva's Phone</device></user-agent>\
            <bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag>\
              <enable xmlns='urn:xmpp:carbons:2'/><inactive xmlns='urn:xmpp:csi:0'/>\
              <enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>\
            <resume xmlns='urn:xmpp:sm:3' previd='abc' h='7'/>\
            <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>\
            </authenticate>",
        );
        let r = parse(&a).unwrap();
        assert_eq!(r.mechanism, "SCRAM-SHA-1");
        assert_eq!(r.initial.as_deref(), Some(&b"n,,n=user,r=abc"[..]));
        assert_eq!(
            r.client_id.as_deref(),
            Some("d4565fa7-4d72-4749-b3d3-740edbf87770")
        );
        assert_eq!(r.software.as_deref(), Some("AwesomeXMPP"));
        assert_eq!(r.device.as_deref(), Some("Kiva's Phone"));
        let b = r.bind.unwrap();
        assert_eq!(b.tag.as_deref(), Some("AwesomeXMPP"));
        assert!(b.carbons);
        assert_eq!(b.csi_active, Some(false));
        assert!(b.sm_enable.is_some());
        assert_eq!(r.resume, Some(("abc".to_string(), 7)));
        assert_eq!(r.request_token.as_deref(), Some("HT-SHA-256-NONE"));
        assert_eq!(r.fast, None);
    }

    #[test]
    fn refuses_what_cannot_start() {
        let cases = [
            ("<authenticate xmlns='urn:xmpp:sasl:2'/>", Refused::InvalidMechanism),
            (
                "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>!!</initial-response></authenticate>",
                Refused::IncorrectEncoding,
            ),
            (
                "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><resume xmlns='urn:xmpp:sm:3' previd='x'/></authenticate>",
                Refused::MalformedRequest,
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(parse(&el(xml)), Err(want), "{xml}");
        }
    }

    #[test]
    fn fast_invalidate_is_read() {
        let a = el(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>\
            <fast xmlns='urn:xmpp:fast:0' invalidate='true' count='3'/></authenticate>",
        );
        assert_eq!(parse(&a).unwrap().fast, Some(FastUse { invalidate: true }));
    }

    #[test]
    fn the_resource_is_stable_per_client_and_hides_its_id() {
        let a = resource(Some("Phone"), Some("id-1")).unwrap();
        assert_eq!(a, resource(Some("Phone"), Some("id-1")).unwrap());
        assert_ne!(a, resource(Some("Phone"), Some("id-2")).unwrap());
        assert!(a.starts_with("Phone~") && !a.contains("id-1"));
        assert_eq!(a.len(), "Phone~".len() + 12);
        assert!(resource(None, Some("x")).unwrap().starts_with("herald~"));
        assert!(resource(Some(" \t"), Some("x"))
            .unwrap()
            .starts_with("herald~"));
        assert_eq!(resource(Some("Phone"), None), None);
    }

    #[test]
    fn success_orders_its_children() {
        let s = Success {
            additional: Some(b"v=1".to_vec()),
            results: vec![token("t", "2030-01-01T00:00:00Z")],
        };
        let e = s.into_element("a@b/c", vec![bound(vec![])]);
        let names: Vec<&str> = e.children().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "additional-data",
                "authorization-identifier",
                "token",
                "bound"
            ]
        );
        assert_eq!(
            e.get_child("authorization-identifier", ns::SASL2)
                .unwrap()
                .text(),
            "a@b/c"
        );
    }

    #[test]
    fn offers_bind2_sm_and_fast_inline() {
        let a = authentication(&[Mechanism::ScramSha1], &[ht::SHA256_NONE]);
        let inline = a.get_child("inline", ns::SASL2).unwrap();
        let bind = inline.get_child("bind", ns::BIND2).unwrap();
        let vars: Vec<&str> = bind
            .get_child("inline", ns::BIND2)
            .unwrap()
            .children()
            .filter_map(|f| f.attr("var"))
            .collect();
        assert_eq!(vars, [ns::CARBONS, ns::CSI, ns::SM, ns::PUSH_INLINE]);
        assert!(inline.get_child("sm", ns::SM).is_some());
        let fast = inline.get_child("fast", ns::FAST).unwrap();
        assert_eq!(fast.children().next().unwrap().text(), "HT-SHA-256-NONE");
        let a = authentication(&[Mechanism::ScramSha1], &[]);
        assert!(a
            .get_child("inline", ns::SASL2)
            .unwrap()
            .get_child("fast", ns::FAST)
            .is_none());
    }

    #[test]
    fn fast_channel_binding_follows_the_connection() {
        let mut b = sasl::ChannelBindings::default();
        assert_eq!(fast_offered(&b), [ht::SHA256_NONE]);
        b.tls_server_end_point = Some(vec![1; 32]);
        assert_eq!(fast_offered(&b), [ht::SHA256_ENDP, ht::SHA256_NONE]);
        b.tls_exporter = Some(vec![2; 32]);
        assert_eq!(
            fast_offered(&b),
            [ht::SHA256_EXPR, ht::SHA256_ENDP, ht::SHA256_NONE]
        );
        assert!(!is_fast_mechanism("HT-SHA-256-UNIQ"));
    }

    #[test]
    fn features_after_bind_offer_no_binding() {
        let f = features_after_bind(true);
        assert!(f.get_child("bind", ns::BIND).is_none());
        assert!(f.get_child("sm", ns::SM).is_none());
        assert!(features_after_bind(false).get_child("sm", ns::SM).is_some());
    }
}
