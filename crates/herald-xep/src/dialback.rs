//! Server Dialback (XEP-0220): key generation (XEP-0185) and the `db:result` / `db:verify`
//! elements. Pure: the network side (who asks whom) lives in herald-server's
//! `s2s::incoming` and `s2s::outgoing`.

use herald_proto::ns;
use herald_proto::Element;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::stanza;

/// XEP-0220 §8.4 / the `urn:xmpp:features:dialback` stream feature.
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// The result of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key is ours: the originating server is who it claims.
    Valid,
    /// The key is not ours.
    Invalid,
    /// The question could not be answered (unreachable, timeout, error).
    Error,
}

impl Verdict {
    /// The `type` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Error => "error",
        }
    }
}

/// XEP-0185 §3: key = HEX(HMAC-SHA256(HEX(SHA256(secret)), receiving ' ' originating ' ' id)).
pub fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let k = hex::encode(Sha256::digest(secret));
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(k.as_bytes()) else {
        // HMAC takes keys of any length; this branch is unreachable in practice.
        return String::new();
    };
    mac.update(receiving.to_ascii_lowercase().as_bytes());
    mac.update(b" ");
    mac.update(originating.to_ascii_lowercase().as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the key we would have generated (constant time).
pub fn check(
    secret: &[u8],
    receiving: &str,
    originating: &str,
    stream_id: &str,
    given: &str,
) -> bool {
    let expected = key(secret, receiving, originating, stream_id);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.trim().as_bytes()))
}

/// `<db:result from to>key</db:result>`: the originating server asks to be accepted.
pub fn result_request(from: &str, to: &str, key: &str) -> Element {
    let mut el = stanza::new("result", ns::DIALBACK, &[("from", from), ("to", to)]);
    el.append_text(key);
    el
}

/// `<db:result from to type/>`: the receiving server's answer.
pub fn result_answer(from: &str, to: &str, verdict: Verdict) -> Element {
    let mut el = stanza::new(
        "result",
        ns::DIALBACK,
        &[("from", from), ("to", to), ("type", verdict.as_str())],
    );
    if verdict == Verdict::Error {
        // XEP-0220 §2.4: the authoritative server could not be reached.
        el.append_child(herald_proto::error::error_element(
            herald_proto::error::StanzaErrorCondition::RemoteServerNotFound,
            None,
            None,
        ));
    }
    el
}

/// `<db:result from to type='error'/>`: the request named a domain we do not serve.
pub fn result_not_served(from: &str, to: &str) -> Element {
    let mut el = stanza::new(
        "result",
        ns::DIALBACK,
        &[("from", from), ("to", to), ("type", "error")],
    );
    el.append_child(error_child());
    el
}

/// `<db:result from to type='error'/>` with `policy-violation` (type `wait`): we will not
/// verify this request now because too many verifications are in progress (for this stream
/// or for everybody). XEP-0220 §2.4 makes it a dialback error, not a stream error, so the
/// domain pairs already verified on the stream keep working; the peer may ask again later.
pub fn result_busy(from: &str, to: &str) -> Element {
    use herald_proto::error::{error_element, ErrorType, StanzaErrorCondition};
    let mut el = stanza::new(
        "result",
        ns::DIALBACK,
        &[("from", from), ("to", to), ("type", "error")],
    );
    el.append_child(error_element(
        StanzaErrorCondition::PolicyViolation,
        Some(ErrorType::Wait),
        Some("too many dialback verifications in progress"),
    ));
    el
}

/// `<db:verify from to id>key</db:verify>`: the receiving server asks the authoritative one.
pub fn verify_request(from: &str, to: &str, id: &str, key: &str) -> Element {
    let mut el = stanza::new(
        "verify",
        ns::DIALBACK,
        &[("from", from), ("to", to), ("id", id)],
    );
    el.append_text(key);
    el
}

/// `<db:verify from to id type/>`: the authoritative server's answer.
pub fn verify_answer(from: &str, to: &str, id: &str, verdict: Verdict) -> Element {
    let mut el = stanza::new(
        "verify",
        ns::DIALBACK,
        &[
            ("from", from),
            ("to", to),
            ("id", id),
            ("type", verdict.as_str()),
        ],
    );
    if verdict == Verdict::Error {
        el.append_child(error_child());
    }
    el
}

/// XEP-0220 §2.4: a request or verification for a domain we do not serve is answered
/// item-not-found.
fn error_child() -> Element {
    herald_proto::error::error_element(
        herald_proto::error::StanzaErrorCondition::ItemNotFound,
        None,
        None,
    )
}

/// The verdict in an answer's `type` attribute.
pub fn verdict_of(el: &Element) -> Verdict {
    match el.attr("type") {
        Some("valid") => Verdict::Valid,
        Some("invalid") => Verdict::Invalid,
        _ => Verdict::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep_0185_example_key() {
        // The inputs of XEP-0185's example (receiving domain2.tld, originating domain1.tld);
        // the value was computed independently with Python's hmac/hashlib.
        assert_eq!(
            key(
                b"s3cr3tf0rd14lb4ck",
                "domain2.tld",
                "domain1.tld",
                "D60000229F"
            ),
            "5e598fae34b90be084fb6a4a8a543ceb33549140bac9d829ef8d734d900616e4"
        );
    }

    #[test]
    fn busy_answer_is_a_dialback_error_with_policy_violation_wait() {
        let el = result_busy("b.test", "a.test");
        assert_eq!(el.attr("type"), Some("error"));
        assert_eq!(el.attr("from"), Some("b.test"));
        assert_eq!(el.attr("to"), Some("a.test"));
        assert_eq!(verdict_of(&el), Verdict::Error);
        let err = el.children().find(|c| c.name() == "error").unwrap();
        assert_eq!(err.attr("type"), Some("wait"));
        assert!(err
            .children()
            .any(|c| c.name() == "policy-violation" && c.ns() == ns::STANZAS_ERR));
    }

    #[test]
    fn check_binds_every_input() {
        let k = key(b"s", "r.test", "o.test", "id1");
        assert!(check(b"s", "r.test", "o.test", "id1", &k));
        assert!(check(b"s", "R.test", "o.test", "id1", &k));
        assert!(!check(b"s", "r.test", "o.test", "id2", &k));
        assert!(!check(b"s", "o.test", "r.test", "id1", &k));
        assert!(!check(b"t", "r.test", "o.test", "id1", &k));
        assert!(!check(b"s", "r.test", "o.test", "id1", "00"));
    }
}
