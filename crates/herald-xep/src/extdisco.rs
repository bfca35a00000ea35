//! XEP-0215 External Service Discovery (`urn:xmpp:extdisco:2`) for one STUN/TURN server
//! with time-limited credentials in the TURN REST API scheme that coturn's
//! `use-auth-secret` checks: username `EXPIRY:user@domain` (EXPIRY in Unix seconds), password
//! base64(HMAC-SHA1(secret, username)). The TURN server needs only the shared secret; a
//! credential stops working at EXPIRY without anyone revoking it.

use base64::Engine as _;
use herald_proto::ns;
use herald_proto::Element;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::stanza;

/// A TURN credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `EXPIRY:user`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Unix seconds at which it stops being accepted.
    pub expires: u64,
}

/// The credential for `user` valid until `now + ttl` (Unix seconds).
pub fn credential(secret: &str, user: &str, now: u64, ttl: u64) -> Credential {
    let expires = now.saturating_add(ttl);
    let username = format!("{expires}:{user}");
    let password = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut m) => {
            m.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        }
        // HMAC takes keys of any length; unreachable in practice.
        Err(_) => String::new(),
    };
    Credential {
        username,
        password,
        expires,
    }
}

/// The services offered: STUN over UDP, TURN over UDP and TCP, in that order.
const SERVICES: &[(&str, &str)] = &[("stun", "udp"), ("turn", "udp"), ("turn", "tcp")];

/// What a `<services/>` or `<credentials/>` request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Only services of this type (`stun`, `turn`), if given.
    pub typ: Option<String>,
    /// Only this host (in `<credentials><service host/>`), if given.
    pub host: Option<String>,
}

/// Reads the filter of `<services type?/>` or `<credentials><service host type/></credentials>`.
pub fn filter(req: &Element) -> Filter {
    let svc = if req.name() == "credentials" {
        req.children().find(|c| c.is("service", ns::EXTDISCO))
    } else {
        Some(req)
    };
    Filter {
        typ: svc.and_then(|s| s.attr("type")).map(str::to_string),
        host: svc.and_then(|s| s.attr("host")).map(str::to_string),
    }
}

/// The answer: `<services/>` (or `<credentials/>` when `element` says so) listing the
/// configured server's services that match `f`; TURN entries carry `cred` and
/// `restricted='1'`. `expires` is the credential's end as an XEP-0082 DateTime.
pub fn answer(
    element: &str,
    host: &str,
    port: u16,
    cred: &Credential,
    expires: &str,
    f: &Filter,
) -> Element {
    let mut out = Element::bare(element, ns::EXTDISCO);
    let port = port.to_string();
    for (typ, transport) in SERVICES {
        if f.typ.as_deref().is_some_and(|t| t != *typ)
            || f.host.as_deref().is_some_and(|h| h != host)
        {
            continue;
        }
        let mut s = stanza::new(
            "service",
            ns::EXTDISCO,
            &[
                ("type", typ),
                ("transport", transport),
                ("host", host),
                ("port", &port),
            ],
        );
        if *typ == "turn" {
            stanza::set(&mut s, "username", cred.username.as_str());
            stanza::set(&mut s, "password", cred.password.as_str());
            stanza::set(&mut s, "expires", expires);
            stanza::set(&mut s, "restricted", "1");
        }
        out.append_child(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_rest_api_scheme() {
        // Computed independently: printf '1700000000:alice@localhost' |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64
        let c = credential("s3cret", "alice@localhost", 1_699_913_600, 86_400);
        assert_eq!(c.username, "1700000000:alice@localhost");
        assert_eq!(c.expires, 1_700_000_000);
        assert_eq!(c.password, "JmOvEuFTDA6w6K9QXNFPR8Za6bU=");
        assert_ne!(
            credential("other", "alice@localhost", 1_699_913_600, 86_400).password,
            c.password
        );
    }

    #[test]
    fn services_and_filters() {
        let c = credential("k", "a@b", 0, 60);
        let all = answer(
            "services",
            "turn.example",
            3478,
            &c,
            "1970-01-01T00:01:00Z",
            &Filter {
                typ: None,
                host: None,
            },
        );
        let kinds: Vec<(String, String)> = all
            .children()
            .map(|s| {
                (
                    s.attr("type").unwrap_or("").into(),
                    s.attr("transport").unwrap_or("").into(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("stun".into(), "udp".into()),
                ("turn".into(), "udp".into()),
                ("turn".into(), "tcp".into())
            ]
        );
        let stun = all.children().next().unwrap();
        assert_eq!(stun.attr("username"), None);
        let turn = all.children().nth(1).unwrap();
        assert_eq!(turn.attr("username"), Some("60:a@b"));
        assert_eq!(turn.attr("restricted"), Some("1"));
        assert_eq!(turn.attr("port"), Some("3478"));
        let req: Element = "<services xmlns='urn:xmpp:extdisco:2' type='turn'/>"
            .parse()
            .unwrap();
        assert_eq!(
            answer("services", "turn.example", 1, &c, "", &filter(&req))
                .children()
                .count(),
            2
        );
        let req: Element = "<credentials xmlns='urn:xmpp:extdisco:2'><service host='elsewhere' type='turn'/></credentials>".parse().unwrap();
        assert_eq!(
            answer("credentials", "turn.example", 1, &c, "", &filter(&req))
                .children()
                .count(),
            0
        );
    }
}
