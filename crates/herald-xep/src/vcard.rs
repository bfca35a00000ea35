//! vCards (XEP-0054 vcard-temp) and vCard-based avatars (XEP-0153): checking a vCard the
//! owner sets, the SHA-1 of its photo, and the avatar hash the server puts in presence on the
//! user's behalf (XEP-0398 §4, the rule for servers that know the hash).
//!
//! Pure: the server reads and writes the store and caches the [`Avatar`] per user; this module
//! only decides. It does not convert to or from PEP avatars (XEP-0084/XEP-0398 conversion):
//! that would call [`photo_hash`] on a vCard built from the PEP data item, and feed the
//! metadata id into the same [`Avatar`] cache, so [`stamp`] would not change.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use herald_proto::ns;
use herald_proto::Element;
use sha1::{Digest, Sha1};

/// What the server knows of a user's avatar, from the vCard it stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Avatar {
    /// No vCard stored: the server has nothing to say, presence passes as the client sent it.
    #[default]
    NoVcard,
    /// A vCard without photo: presence says "no avatar" (`<photo/>`).
    NoPhoto,
    /// A vCard whose photo has this SHA-1 (lowercase hex).
    Sha1(String),
}

impl Avatar {
    /// From the store's answer: `None` no vCard, `Some(None)` one without photo.
    pub fn from_stored(hash: Option<Option<String>>) -> Avatar {
        match hash {
            None => Avatar::NoVcard,
            Some(None) => Avatar::NoPhoto,
            Some(Some(h)) => Avatar::Sha1(h),
        }
    }
}

/// Why a vCard set is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// Larger than `[vcard] max_bytes` as serialized XML.
    TooLarge,
    /// The PHOTO's BINVAL is not base64, or the vCard cannot be serialized.
    Invalid,
}

/// A vCard ready to store: its XML and the hash of its photo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The `<vCard xmlns='vcard-temp'>` element as XML text.
    pub xml: String,
    /// Lowercase hex SHA-1 of the decoded photo, `None` without one.
    pub photo_hash: Option<String>,
}

/// Checks a `<vCard/>` the owner sets: at most `max_bytes` of XML, a decodable photo.
pub fn check_set(vcard: &Element, max_bytes: usize) -> Result<Checked, SetError> {
    let xml = crate::stanza::to_xml(vcard).ok_or(SetError::Invalid)?;
    if xml.len() > max_bytes {
        return Err(SetError::TooLarge);
    }
    Ok(Checked {
        photo_hash: photo_hash(vcard)?,
        xml,
    })
}

/// XEP-0153 §3.1: the SHA-1 of the image data (not of its base64), in lowercase hex; `None`
/// when there is no PHOTO or its BINVAL is empty (an EXTVAL alone has no data to hash).
/// Whitespace inside BINVAL is ignored (XEP-0153 §4.5: lines of 76 characters are usual).
pub fn photo_hash(vcard: &Element) -> Result<Option<String>, SetError> {
    let Some(binval) = vcard
        .get_child("PHOTO", ns::VCARD)
        .and_then(|p| p.get_child("BINVAL", ns::VCARD))
    else {
        return Ok(None);
    };
    let b64: String = binval
        .text()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if b64.is_empty() {
        return Ok(None);
    }
    // Padding is optional in what clients send; the data is what counts.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let data = engine
        .decode(b64.as_bytes())
        .map_err(|_| SetError::Invalid)?;
    Ok(Some(hex::encode(Sha1::digest(&data))))
}

/// The empty vCard a get answers with when the user never set one (XEP-0054 §3.1 allows an
/// empty `<vCard/>` result or `item-not-found`; clients handle the empty one best).
pub fn empty() -> Element {
    Element::builder("vCard", ns::VCARD).build()
}

/// A stored vCard's XML as an element again (`None` if it does not parse).
pub fn parse_stored(xml: &str) -> Option<Element> {
    xml.parse::<Element>()
        .ok()
        .filter(|e| e.is("vCard", ns::VCARD))
}

/// Puts the user's avatar hash into an available presence, as XEP-0398 §4 tells servers
/// that know it: a presence without `<x xmlns='vcard-temp:x:update'>`, or with an empty one
/// (no `<photo>`: "not ready to advertise"), gets `<x><photo>HASH</photo></x>` (`<photo/>`
/// when the stored vCard has no photo). A `<photo>` the client sent is left alone, empty
/// or not: empty must not be touched (§4), and a different hash may be the client's newer
/// knowledge (XEP-0153 §4.3 has resources settle it). Nothing changes when no vCard is
/// stored. Returns whether the presence changed.
pub fn stamp(presence: &mut Element, avatar: &Avatar) -> bool {
    let hash = match avatar {
        Avatar::NoVcard => return false,
        Avatar::NoPhoto => None,
        Avatar::Sha1(h) => Some(h.as_str()),
    };
    let has_photo = presence
        .children()
        .filter(|c| c.is("x", ns::VCARD_UPDATE))
        .any(|x| x.get_child("photo", ns::VCARD_UPDATE).is_some());
    if has_photo {
        return false;
    }
    crate::remove_children(presence, |c| c.is("x", ns::VCARD_UPDATE));
    let photo = match hash {
        Some(h) => Element::builder("photo", ns::VCARD_UPDATE)
            .append(h.to_string())
            .build(),
        None => Element::builder("photo", ns::VCARD_UPDATE).build(),
    };
    presence.append_child(
        Element::builder("x", ns::VCARD_UPDATE)
            .append(photo)
            .build(),
    );
    true
}

/// The hash a presence advertises, if any (`Some("")` for an empty `<photo/>`).
pub fn advertised(presence: &Element) -> Option<String> {
    presence
        .get_child("x", ns::VCARD_UPDATE)?
        .get_child("photo", ns::VCARD_UPDATE)
        .map(|p| p.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    const PNG_B64: &str = "iVBORw0KGgo=";

    #[test]
    fn photo_hash_is_sha1_of_the_decoded_data_ignoring_whitespace_and_padding() {
        // SHA-1 of the 8 bytes 89 50 4e 47 0d 0a 1a 0a (the PNG signature).
        let want = hex::encode(Sha1::digest([
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a,
        ]));
        for binval in [PNG_B64, "iVBORw0K\n  Ggo=", "iVBORw0KGgo"] {
            let v = el(&format!(
                "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{binval}</BINVAL></PHOTO></vCard>"
            ));
            assert_eq!(photo_hash(&v), Ok(Some(want.clone())), "{binval:?}");
        }
    }

    #[test]
    fn no_photo_empty_binval_or_extval_have_no_hash() {
        for v in [
            "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>",
            "<vCard xmlns='vcard-temp'><PHOTO><BINVAL> </BINVAL></PHOTO></vCard>",
            "<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>http://x/y.png</EXTVAL></PHOTO></vCard>",
        ] {
            assert_eq!(photo_hash(&el(v)), Ok(None), "{v}");
        }
    }

    #[test]
    fn a_binval_that_is_not_base64_is_invalid() {
        let v =
            el("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>*not base64*</BINVAL></PHOTO></vCard>");
        assert_eq!(photo_hash(&v), Err(SetError::Invalid));
        assert_eq!(check_set(&v, 10_000), Err(SetError::Invalid));
    }

    #[test]
    fn check_set_bounds_the_serialized_size_and_round_trips() {
        let v = el("<vCard xmlns='vcard-temp'><FN>Juliet</FN><NICKNAME/></vCard>");
        let c = check_set(&v, 10_000).unwrap();
        assert_eq!(c.photo_hash, None);
        assert_eq!(parse_stored(&c.xml), Some(v.clone()));
        assert_eq!(check_set(&v, c.xml.len()).unwrap(), c);
        assert_eq!(check_set(&v, c.xml.len() - 1), Err(SetError::TooLarge));
    }

    #[test]
    fn parse_stored_refuses_other_elements() {
        assert_eq!(parse_stored("<x xmlns='vcard-temp'/>"), None);
        assert_eq!(parse_stored("<vCard"), None);
        assert_eq!(parse_stored("<vCard xmlns='vcard-temp'/>"), Some(empty()));
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn stamp_follows_xep_0398() {
        let sha = Avatar::Sha1(HASH.into());
        // (presence sent, avatar known, what contacts get)
        let cases: &[(&str, &Avatar, Option<&str>, bool)] = &[
            // No <x/>: the hash is added.
            ("<presence xmlns='jabber:client'/>", &sha, Some(HASH), true),
            // Empty <x/> ("not ready"): overwritten.
            (
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'/></presence>",
                &sha,
                Some(HASH),
                true,
            ),
            // Empty <photo/> is the client's "no avatar": untouched.
            (
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
                &sha,
                Some(""),
                false,
            ),
            // Another hash: the client's word stands.
            (
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>",
                &sha,
                Some("abc"),
                false,
            ),
            // A stored vCard without photo: "no avatar".
            ("<presence xmlns='jabber:client'/>", &Avatar::NoPhoto, Some(""), true),
            // Nothing stored: presence as sent.
            ("<presence xmlns='jabber:client'/>", &Avatar::NoVcard, None, false),
            (
                "<presence xmlns='jabber:client'><x xmlns='vcard-temp:x:update'/></presence>",
                &Avatar::NoVcard,
                None,
                false,
            ),
        ];
        for (sent, avatar, want, changed) in cases {
            let mut p = el(sent);
            assert_eq!(stamp(&mut p, avatar), *changed, "{sent} {avatar:?}");
            assert_eq!(advertised(&p).as_deref(), *want, "{sent} {avatar:?}");
            let xs = p.children().filter(|c| c.is("x", ns::VCARD_UPDATE)).count();
            assert!(xs <= 1, "{sent}: {xs} <x/>");
        }
    }

    #[test]
    fn stamp_keeps_other_payloads() {
        let mut p = el("<presence xmlns='jabber:client'><show>away</show><c xmlns='http://jabber.org/protocol/caps' ver='v'/></presence>");
        assert!(stamp(&mut p, &Avatar::Sha1(HASH.into())));
        assert_eq!(
            p.get_child("show", "jabber:client").map(|s| s.text()),
            Some("away".into())
        );
        assert!(p
            .get_child("c", "http://jabber.org/protocol/caps")
            .is_some());
    }
}
