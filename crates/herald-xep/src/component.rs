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
}
