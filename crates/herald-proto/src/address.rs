//! Parsing the addresses peers give: the one way Herald turns a JID string from the wire into a
//! [`Jid`].
//!
//! Herald stores and compares addresses in their normalised string form (roster and blocklist
//! items, archive peers, routing keys) and parses that form again when it reads it back. The
//! `jid` crate (0.12.3) can accept an address whose normalised form it then refuses: it checks a
//! domain's UTS #46 hyphen rules *before* nameprep maps it, so `ß--ǟ` (hyphens at positions 2–3,
//! allowed) is accepted as `ss--ǟ` (hyphens at 3–4, reserved), which it refuses. `jid` refuses
//! such an address on intake, so nothing Herald keeps stops parsing later.

use jid::{Error, Jid};

/// Parses and normalises a peer-supplied JID, refusing one whose normalised form does not parse
/// back to itself. The error is the one the normalised form gets, so callers that map a parse
/// error to `jid-malformed` answer it the same way as any other bad address.
pub fn jid(s: &str) -> Result<Jid, Error> {
    let j = Jid::new(s)?;
    // Input already in normal form is its own re-parse (same input, same result): the second
    // parse is only paid for addresses normalisation changed.
    if j.as_str() == s {
        return Ok(j);
    }
    let again = Jid::new(j.as_str())?;
    if again == j {
        return Ok(j);
    }
    // Normalising twice changed it again: no stored form would be stable. Name the part that
    // moved, as the crate does for a part that fails its profile.
    Err(if again.node() != j.node() {
        Error::NodePrep
    } else if again.domain() != j.domain() {
        Error::NamePrep
    } else {
        Error::ResourcePrep
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_the_crate() {
        assert_eq!(
            jid("Juliet@Capulet.LIT/Balcony").map(|j| j.to_string()),
            Ok("juliet@capulet.lit/Balcony".to_owned())
        );
        assert_eq!(
            jid("example.org").map(|j| j.to_string()),
            Ok("example.org".to_owned())
        );
        assert_eq!(jid("@example.org"), Err(Error::NodeEmpty));
        assert_eq!(jid("a@b@c"), Err(Error::TooManyAts));
    }

    #[test]
    fn refuses_an_address_whose_normal_form_does_not_parse() {
        // What the crate itself does, which is the bug this module guards against: accepted,
        // normalised to a form it refuses. If an upgrade fixes it, this assertion fails and the
        // re-parse can go.
        let lax = Jid::new("ß--ǟ").map(|j| j.to_string());
        assert_eq!(lax.as_deref(), Ok("ss--ǟ"));
        assert_eq!(Jid::new("ss--ǟ"), Err(Error::Idna));

        assert_eq!(jid("ß--ǟ"), Err(Error::Idna));
        assert_eq!(jid("user@ß--ǟ/res"), Err(Error::Idna));
        assert_eq!(jid("user@ß--ǟ"), Err(Error::Idna));
        assert_eq!(jid("ß--ǟ/res"), Err(Error::Idna));
        // The same domain with no hyphen pair is fine, and comes back normalised.
        assert_eq!(
            jid("user@straße.example/res").map(|j| j.to_string()),
            Ok("user@strasse.example/res".to_owned())
        );
    }
}
