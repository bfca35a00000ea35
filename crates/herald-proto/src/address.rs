//! Parsing the addresses peers give: the one way Herald turns a JID string from the wire into a
//! [`Jid`].
//!
//! Herald stores and compares addresses in their normalised string form (roster and blocklist
//! items, archive peers, routing keys) and parses that form again when it reads it back. The
//! `jid` crate (0.12.3) can accept an address whose normalised form it then refuses: it checks a
//! domain's UTS #46 hyphen rules *before* nameprep maps it, so `ß--ǟ` (hyphens at positions 2–3,
//! allowed) is accepted as `ss--ǟ` (hyphens at 3–4, reserved), which it refuses. `jid` refuses
//! such an address on intake, so nothing Herald keeps stops parsing later.
//!
//! Before any of that, [`bounded`] refuses a domain that cannot pass IDNA's DNS length rules
//! (a label over 63 characters, a name over 253) without running IDNA on it: the `idna` crate
//! decodes an `xn--` label in time quadratic in its length and checks those lengths only
//! afterwards, so a 1,800-byte label cost almost a millisecond per parse (found by the `jid`
//! fuzz target). Every address a peer gives passes through here or through [`bounded`].

use jid::{BareJid, Error, Jid};

/// Parses and normalises a peer-supplied JID, refusing one whose normalised form does not parse
/// back to itself. The error is the one the normalised form gets, so callers that map a parse
/// error to `jid-malformed` answer it the same way as any other bad address.
pub fn jid(s: &str) -> Result<Jid, Error> {
    bounded(s)?;
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

/// Refuses, cheaply, an address whose domain IDNA would refuse for its length anyway: a label of
/// more than 63 characters or a domain of more than 253 (after one trailing dot, which the
/// parser drops). An A-label is never shorter than the characters it encodes (`xn--`, the
/// ASCII ones, then at least one letter per other character), so this refuses nothing IDNA
/// (`DnsLength::Verify`, as the `jid` crate asks) would accept, except a label padded with
/// characters that UTS #46 maps to nothing, such as soft hyphens. A peer's string reaches
/// the `jid` crate only through [`jid()`], [`parse`] or [`bare`], which call this first.
pub fn bounded(s: &str) -> Result<(), Error> {
    // Where the `jid` crate finds the domain: after an `@` that comes before any `/`, and
    // before that `/`.
    let head = s.split_once('/').map_or(s, |(head, _)| head);
    let domain = head.split_once('@').map_or(head, |(_, domain)| domain);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let mut total = 0usize;
    // UTS #46 treats the ideographic and full-width full stops as dots too.
    for label in domain.split(['.', '\u{3002}', '\u{FF0E}', '\u{FF61}']) {
        let chars = label.chars().count();
        if chars > 63 {
            return Err(Error::Idna);
        }
        total += chars + 1;
    }
    if total > 254 {
        return Err(Error::Idna);
    }
    Ok(())
}

/// [`Jid::new`] behind [`bounded`]: for a peer's address that is compared, not kept (a kept one
/// goes through [`jid()`], which also refuses an unstable normal form).
pub fn parse(s: &str) -> Result<Jid, Error> {
    bounded(s)?;
    Jid::new(s)
}

/// [`BareJid::new`] behind [`bounded`], as [`parse`].
pub fn bare(s: &str) -> Result<BareJid, Error> {
    bounded(s)?;
    BareJid::new(s)
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

    #[test]
    fn refuses_over_long_domains_before_idna() {
        let label = |n: usize| "a".repeat(n);
        // At the DNS limits: accepted, by `bounded` and by the crate.
        let at_limit = [label(63), label(63), label(63), label(61)].join(".");
        assert_eq!(at_limit.len(), 253);
        assert_eq!(bounded(&format!("u@{at_limit}/r")), Ok(()));
        assert!(jid(&format!("u@{at_limit}/r")).is_ok());
        assert!(jid(&format!("u@{}./r", label(63))).is_ok());
        // One over: refused, and the crate agrees.
        for domain in [
            label(64),
            [label(63), label(63), label(63), label(62)].join("."),
        ] {
            assert_eq!(bounded(&domain), Err(Error::Idna), "{domain}");
            assert_eq!(Jid::new(&domain), Err(Error::Idna), "{domain}");
        }
        // A long `xn--` label, the shape that made IDNA slow, in every position a domain can be.
        let xn = format!("xn--{}", "ab1".repeat(300));
        for s in [
            xn.clone(),
            format!("u@{xn}"),
            format!("u@{xn}/r@x"),
            format!("{xn}/r"),
        ] {
            assert_eq!(bounded(&s), Err(Error::Idna));
            assert_eq!(jid(&s), Err(Error::Idna));
            assert_eq!(parse(&s), Err(Error::Idna));
        }
        assert_eq!(bare(&xn), Err(Error::Idna));
        assert!(bare(&format!("u@{at_limit}")).is_ok());
        // Characters, not bytes: 63 three-byte characters make a valid-length label as far as
        // this check goes (IDNA then decides), and full-width dots separate labels.
        assert_eq!(bounded(&format!("u@{}", "中".repeat(63))), Ok(()));
        assert_eq!(bounded(&format!("u@{}", "中".repeat(64))), Err(Error::Idna));
        assert_eq!(
            bounded(&format!("{}\u{3002}{}", label(60), label(60))),
            Ok(())
        );
        // A long node or resource is not the domain's business.
        assert_eq!(
            bounded(&format!("{}@example.org/{}", label(900), label(900))),
            Ok(())
        );
    }
}
