//! XEP-0084 user avatars and their XEP-0398 conversion to and from the vCard photo
//! (XEP-0054/XEP-0153): reading a metadata publish, checking the data item against its id,
//! putting the image into a vCard, and the data and metadata items for a vCard's photo.
//!
//! Pure: `features::avatar` reads and writes the PEP nodes and the vCard.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use herald_proto::{ns, Element};
use sha1::{Digest, Sha1};

use crate::stanza;

/// The XEP-0084 data node (base64 image per item, id = its SHA-1).
pub const DATA_NODE: &str = "urn:xmpp:avatar:data";
/// The XEP-0084 metadata node.
pub const METADATA_NODE: &str = "urn:xmpp:avatar:metadata";
/// Announced on the account (XEP-0398 §2).
pub const CONVERSION_FEATURE: &str = "urn:xmpp:pep-vcard-conversion:0";

/// What a metadata item says the avatar is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// `<metadata/>` without `<info/>`: the avatar is disabled (XEP-0084 §4.5).
    Disabled,
    /// The image in the data node under `id`, of this MIME type (XEP-0398 §3.1: the first
    /// `<info/>` that does not point to an external URL).
    Stored {
        /// The data item's id (SHA-1 of the image).
        id: String,
        /// `type`, e.g. `image/png`.
        mime: String,
    },
    /// Only external URLs, or not a metadata payload: nothing to convert.
    Nothing,
}

/// Reads a metadata payload.
pub fn metadata(payload: &Element) -> Metadata {
    if !payload.is("metadata", METADATA_NODE) {
        return Metadata::Nothing;
    }
    let infos: Vec<&Element> = crate::children_named(payload, "info", METADATA_NODE).collect();
    if infos.is_empty() {
        return Metadata::Disabled;
    }
    infos
        .into_iter()
        .find(|i| i.attr("url").is_none())
        .and_then(|i| {
            Some(Metadata::Stored {
                id: i.attr("id")?.to_ascii_lowercase(),
                mime: i.attr("type").unwrap_or("image/png").to_string(),
            })
        })
        .unwrap_or(Metadata::Nothing)
}

fn engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// The base64 text of a data item's payload, if it is `<data xmlns='urn:xmpp:avatar:data'>`
/// whose image hashes to `id` (XEP-0398 §3.1: "SHOULD verify"; a mismatch converts nothing).
pub fn verified_data(payload: &Element, id: &str) -> Option<String> {
    if !payload.is("data", DATA_NODE) {
        return None;
    }
    let b64: String = payload
        .text()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = engine().decode(b64.as_bytes()).ok()?;
    if bytes.is_empty() || hex::encode(Sha1::digest(&bytes)) != id {
        return None;
    }
    Some(b64)
}

/// `vcard` (or an empty one) with its PHOTO replaced by the image (`None`: removed).
pub fn with_photo(vcard: Option<Element>, photo: Option<(&str, &str)>) -> Element {
    let mut card = vcard.unwrap_or_else(|| Element::builder("vCard", ns::VCARD).build());
    crate::remove_children(&mut card, |c| c.is("PHOTO", ns::VCARD));
    if let Some((mime, b64)) = photo {
        let mut p = stanza::new("PHOTO", ns::VCARD, &[]);
        p.append_child(stanza::text("TYPE", ns::VCARD, mime));
        p.append_child(stanza::text("BINVAL", ns::VCARD, b64));
        card.append_child(p);
    }
    card
}

/// A vCard's photo as XEP-0084 items: (id, data payload, metadata payload); `None` without
/// a decodable, non-empty BINVAL.
pub fn items_for_photo(vcard: &Element) -> Option<(String, Element, Element)> {
    let photo = vcard.get_child("PHOTO", ns::VCARD)?;
    let b64: String = photo
        .get_child("BINVAL", ns::VCARD)?
        .text()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = engine().decode(b64.as_bytes()).ok()?;
    if bytes.is_empty() {
        return None;
    }
    let id = hex::encode(Sha1::digest(&bytes));
    let mime = photo
        .get_child("TYPE", ns::VCARD)
        .map(|t| t.text())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "image/png".to_string());
    let data = stanza::text("data", DATA_NODE, b64);
    let mut metadata = stanza::new("metadata", METADATA_NODE, &[]);
    let len = bytes.len().to_string();
    metadata.append_child(stanza::new(
        "info",
        METADATA_NODE,
        &[("id", &id), ("bytes", &len), ("type", mime.trim())],
    ));
    Some((id, data, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    // SHA-1 of the three bytes "abc".
    const ABC: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    #[test]
    fn metadata_picks_the_stored_image() {
        let m = el(&format!(
            "<metadata xmlns='{METADATA_NODE}'>\
             <info id='x' type='image/gif' url='https://e.example/a.gif' bytes='1'/>\
             <info id='{}' type='image/jpeg' bytes='3'/></metadata>",
            ABC.to_uppercase()
        ));
        assert_eq!(
            metadata(&m),
            Metadata::Stored {
                id: ABC.into(),
                mime: "image/jpeg".into()
            }
        );
        assert_eq!(
            metadata(&el(&format!("<metadata xmlns='{METADATA_NODE}'/>"))),
            Metadata::Disabled
        );
        let only_url = format!(
            "<metadata xmlns='{METADATA_NODE}'><info id='x' url='https://e.example/a'/></metadata>"
        );
        assert_eq!(metadata(&el(&only_url)), Metadata::Nothing);
        assert_eq!(metadata(&el("<mood xmlns='x'/>")), Metadata::Nothing);
    }

    #[test]
    fn data_must_hash_to_its_id() {
        let d = el(&format!("<data xmlns='{DATA_NODE}'>YW\nJj</data>"));
        assert_eq!(verified_data(&d, ABC).as_deref(), Some("YWJj"));
        assert_eq!(verified_data(&d, "00"), None);
        let bad = el(&format!("<data xmlns='{DATA_NODE}'>!!!</data>"));
        assert_eq!(verified_data(&bad, ABC), None);
    }

    #[test]
    fn photo_goes_into_the_vcard_and_back_out() {
        let card =
            el("<vCard xmlns='vcard-temp'><FN>A</FN><PHOTO><EXTVAL>u</EXTVAL></PHOTO></vCard>");
        let new = with_photo(Some(card), Some(("image/png", "YWJj")));
        assert_eq!(
            new.get_child("FN", ns::VCARD).map(|f| f.text()).as_deref(),
            Some("A")
        );
        assert_eq!(new.children().filter(|c| c.name() == "PHOTO").count(), 1);
        assert_eq!(
            crate::vcard::photo_hash(&new).ok().flatten().as_deref(),
            Some(ABC)
        );
        let (id, data, meta) = items_for_photo(&new).unwrap();
        assert_eq!(id, ABC);
        assert_eq!(verified_data(&data, ABC).as_deref(), Some("YWJj"));
        let info = meta.get_child("info", METADATA_NODE).unwrap();
        assert_eq!(info.attr("bytes"), Some("3"));
        assert_eq!(info.attr("type"), Some("image/png"));
        let gone = with_photo(Some(new), None);
        assert!(gone.get_child("PHOTO", ns::VCARD).is_none());
        assert!(items_for_photo(&gone).is_none());
    }
}
