//! XEP-0114 Jabber Component Protocol: the handshake digest a component proves its secret
//! with. Pure: the stream and the comparison (constant time) are the server's.

use sha1::{Digest, Sha1};

/// XEP-0114 §3: hex(SHA-1(stream id ‖ secret)), lower case.
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `jid_domain` is `domain` or a subdomain of it (ASCII case-insensitive).
pub fn owns(domain: &str, jid_domain: &str) -> bool {
    jid_domain.eq_ignore_ascii_case(domain)
        || jid_domain
            .to_ascii_lowercase()
            .strip_suffix(&domain.to_ascii_lowercase())
            .is_some_and(|p| p.ends_with('.'))
}

/// Whether the component of `domain` may send from `jid_domain` (RFC 6120 §8.1.2.1: otherwise
/// `invalid-from`): a domain it owns that is no local host (`is_local`) and belongs to no
/// other component nested under it (`components`: every configured component's domain).
pub fn may_send_as<'a>(
    domain: &str,
    jid_domain: &str,
    is_local: bool,
    mut components: impl Iterator<Item = &'a str>,
) -> bool {
    owns(domain, jid_domain)
        && !is_local
        && !components
            .any(|c| !c.eq_ignore_ascii_case(domain) && owns(c, jid_domain) && owns(domain, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_xep_0114_example_shape() {
        let d = handshake_digest("3BF96D32", "secret");
        assert_eq!(d.len(), 40);
        assert_eq!(d, handshake_digest("3BF96D32", "secret"));
        assert_ne!(d, handshake_digest("3BF96D32", "secreT"));
    }

    #[test]
    fn owns_subdomains_only() {
        assert!(owns("push.localhost", "push.localhost"));
        assert!(owns("push.localhost", "a.push.localhost"));
        assert!(!owns("push.localhost", "xpush.localhost"));
        assert!(!owns("push.localhost", "localhost"));
    }

    #[test]
    fn a_component_sends_as_its_domains_but_no_local_host_or_nested_component() {
        let comps = ["muc.example", "x.muc.example"];
        assert!(may_send_as(
            "muc.example",
            "room.muc.example",
            false,
            comps.into_iter()
        ));
        assert!(!may_send_as(
            "muc.example",
            "muc.example",
            true,
            comps.into_iter()
        ));
        assert!(!may_send_as(
            "muc.example",
            "a.x.muc.example",
            false,
            comps.into_iter()
        ));
        assert!(!may_send_as(
            "muc.example",
            "other.example",
            false,
            comps.into_iter()
        ));
    }
}
