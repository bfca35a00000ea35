//! XEP-0363 HTTP File Upload, the pure half: the slot request and its answer, the
//! `file-too-large` error, the XEP-0128 disco form, the signature that makes a PUT URL
//! unguessable and tamper-proof, and the HTTP decisions the download side takes (which
//! `Content-Disposition`, which byte range). The server owns the files, the store and the
//! sockets.
//!
//! A slot is `/upload/ID/NAME`: ID is 128 random bits in hex (so the GET URL cannot be
//! guessed) and the only part of the path that names anything on disk (NAME never reaches
//! the filesystem, so no path traversal is possible). The PUT URL carries the slot's terms
//! (`size`, `type`, `owner`, `expires`) and an HMAC-SHA256 over all of them and the path
//! with a secret only the server knows: none can be changed without the signature failing.

use herald_proto::ns;
use herald_proto::Element;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::stanza;

/// Longest file name accepted in a slot request, in bytes.
pub const MAX_FILENAME_BYTES: usize = 255;
/// Longest content type accepted, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 127;
/// The content type of a request that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A valid slot request (XEP-0363 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRequest {
    /// The file's name as the client gave it (checked: no path separators or controls).
    pub filename: String,
    /// Its size in bytes (at least 1).
    pub size: u64,
    /// Its content type, lower-cased (`type/subtype`, optional parameters removed).
    pub content_type: String,
}

/// Why a slot request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Malformed: `bad-request` with this text.
    Bad(&'static str),
    /// Larger than the service takes: `not-acceptable` with `<file-too-large>`.
    TooLarge {
        /// The largest size accepted.
        max: u64,
    },
}

/// Parses `<request xmlns='urn:xmpp:http:upload:0' filename size content-type/>`.
pub fn parse_request(req: &Element, max_file_size: u64) -> Result<SlotRequest, RequestError> {
    let filename = req
        .attr("filename")
        .ok_or(RequestError::Bad("filename missing"))?;
    if !valid_filename(filename) {
        return Err(RequestError::Bad("unacceptable filename"));
    }
    let size: u64 = req
        .attr("size")
        .and_then(|s| s.parse().ok())
        .ok_or(RequestError::Bad("size missing or not a number"))?;
    if size == 0 {
        return Err(RequestError::Bad("size must be at least 1"));
    }
    if size > max_file_size {
        return Err(RequestError::TooLarge { max: max_file_size });
    }
    let content_type = match req.attr("content-type") {
        None | Some("") => DEFAULT_CONTENT_TYPE.to_string(),
        Some(t) => normalize_content_type(t).ok_or(RequestError::Bad("bad content-type"))?,
    };
    Ok(SlotRequest {
        filename: filename.to_string(),
        size,
        content_type,
    })
}

/// A file name a slot may carry: 1 to 255 bytes, not `.` or `..`, no `/`, `\`, control
/// characters or NUL.
pub fn valid_filename(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILENAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// `type/subtype` in RFC 7231 token characters, lower-cased; parameters (`; charset=…`) are
/// dropped (the download is served with the bare type). None if it is not one.
pub fn normalize_content_type(t: &str) -> Option<String> {
    let bare = t.split(';').next().unwrap_or("").trim();
    let (a, b) = bare.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
    };
    (bare.len() <= MAX_CONTENT_TYPE_BYTES && token(a) && token(b))
        .then(|| bare.to_ascii_lowercase())
}

/// The error's application condition for an oversized request (XEP-0363 §4, example 5).
pub fn file_too_large(max: u64) -> Element {
    let mut e = Element::bare("file-too-large", ns::HTTP_UPLOAD);
    e.append_child(stanza::text(
        "max-file-size",
        ns::HTTP_UPLOAD,
        max.to_string(),
    ));
    e
}

/// The `<slot/>` answer: where to PUT and where the file will be.
pub fn slot(put_url: &str, get_url: &str) -> Element {
    let mut s = Element::bare("slot", ns::HTTP_UPLOAD);
    s.append_child(stanza::new("put", ns::HTTP_UPLOAD, &[("url", put_url)]));
    s.append_child(stanza::new("get", ns::HTTP_UPLOAD, &[("url", get_url)]));
    s
}

/// The XEP-0128 form of the service's disco#info (XEP-0363 §3): its `max-file-size`.
pub fn disco_form(max_file_size: u64) -> Element {
    let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "result")]);
    let mut f = stanza::new(
        "field",
        ns::DATA_FORMS,
        &[("var", "FORM_TYPE"), ("type", "hidden")],
    );
    f.append_child(stanza::text("value", ns::DATA_FORMS, ns::HTTP_UPLOAD));
    x.append_child(f);
    let mut f = stanza::new("field", ns::DATA_FORMS, &[("var", "max-file-size")]);
    f.append_child(stanza::text(
        "value",
        ns::DATA_FORMS,
        max_file_size.to_string(),
    ));
    x.append_child(f);
    x
}

/// What a PUT URL promises: every field is covered by its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTerms {
    /// The slot id: 32 lower-case hex digits.
    pub id: String,
    /// The file name in the path.
    pub filename: String,
    /// The exact size the PUT must have.
    pub size: u64,
    /// The content type the PUT must have.
    pub content_type: String,
    /// Who asked for the slot (bare JID): quota and concurrency are theirs.
    pub owner: String,
    /// Unix seconds after which the PUT URL is refused.
    pub expires: u64,
}

impl SlotTerms {
    /// The HMAC-SHA256 of the terms with `secret`, in hex. Fields are length-prefixed, so no
    /// two different terms have the same input.
    pub fn sign(&self, secret: &[u8]) -> String {
        hex::encode(self.digest(secret))
    }

    /// Whether `sig` (hex) is the terms' signature, compared in constant time.
    pub fn verify(&self, secret: &[u8], sig: &str) -> bool {
        use subtle::ConstantTimeEq;
        let want = self.digest(secret);
        match hex::decode(sig) {
            Ok(got) => !want.is_empty() && bool::from(got.ct_eq(&want)),
            Err(_) => false,
        }
    }

    fn digest(&self, secret: &[u8]) -> Vec<u8> {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
            // HMAC takes keys of any length; unreachable in practice, and an empty digest
            // verifies nothing.
            return Vec::new();
        };
        for part in [
            "herald-upload-v1",
            &self.id,
            &self.filename,
            &self.size.to_string(),
            &self.content_type,
            &self.owner,
            &self.expires.to_string(),
        ] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m.finalize().into_bytes().to_vec()
    }

    /// The path of the slot: `/upload/ID/NAME` (NAME percent-encoded).
    pub fn path(&self) -> String {
        format!("/upload/{}/{}", self.id, percent_encode(&self.filename))
    }

    /// The PUT URL's query: the terms and their signature.
    pub fn query(&self, secret: &[u8]) -> String {
        format!(
            "size={}&type={}&owner={}&expires={}&sig={}",
            self.size,
            percent_encode(&self.content_type),
            percent_encode(&self.owner),
            self.expires,
            self.sign(secret)
        )
    }
}

/// Whether `s` is a slot id: 32 lower-case hex digits.
pub fn valid_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a download is presented: `inline` only for media a browser shows without running
/// anything (images, audio, video), `attachment` for the rest, so an uploaded HTML or SVG
/// file cannot run script in the service's origin.
pub fn disposition(content_type: &str) -> &'static str {
    let safe = (content_type.starts_with("image/") && content_type != "image/svg+xml")
        || content_type.starts_with("audio/")
        || content_type.starts_with("video/");
    if safe {
        "inline"
    } else {
        "attachment"
    }
}

/// What a `Range` header asks of a file of `len` bytes (RFC 9110 §14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// The whole file (no header, or one we do not serve partially: several ranges, other
    /// units, malformed — RFC 9110 lets a server ignore it).
    Full,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing of the file: 416.
    Unsatisfiable,
}

/// Decides a `Range` header for a file of `len` bytes.
pub fn range(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => Range::Unsatisfiable,
            Some(n) if len > 0 => Range::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => Range::Unsatisfiable,
            None => Range::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return Range::Full;
            };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                None => Range::Full,
                Some(end) if end < start => Range::Full,
                Some(_) if start >= len => Range::Unsatisfiable,
                Some(end) => Range::Part {
                    start,
                    end: end.min(len - 1),
                },
            }
        }
        (true, true) => Range::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(attrs: &str) -> Element {
        format!("<request xmlns='urn:xmpp:http:upload:0' {attrs}/>")
            .parse()
            .unwrap()
    }

    #[test]
    fn slot_requests() {
        assert_eq!(
            parse_request(
                &req("filename='très bien.jpg' size='23456' content-type='image/JPEG; q=1'"),
                100_000
            ),
            Ok(SlotRequest {
                filename: "très bien.jpg".into(),
                size: 23456,
                content_type: "image/jpeg".into()
            })
        );
        assert_eq!(
            parse_request(&req("filename='a' size='1'"), 1).map(|r| r.content_type),
            Ok(DEFAULT_CONTENT_TYPE.into())
        );
        assert_eq!(
            parse_request(&req("filename='a' size='101'"), 100),
            Err(RequestError::TooLarge { max: 100 })
        );
        for bad in [
            "size='1'",
            "filename='' size='1'",
            "filename='..' size='1'",
            "filename='a/b' size='1'",
            "filename='a\\b' size='1'",
            "filename='a&#10;b' size='1'",
            "filename='a' size='0'",
            "filename='a' size='-1'",
            "filename='a' size='x'",
            "filename='a'",
            "filename='a' size='1' content-type='text'",
            "filename='a' size='1' content-type='te xt/plain'",
            "filename='a' size='1' content-type='/plain'",
        ] {
            assert!(
                matches!(parse_request(&req(bad), 100), Err(RequestError::Bad(_))),
                "{bad}"
            );
        }
        let long = "x".repeat(256);
        assert!(parse_request(&req(&format!("filename='{long}' size='1'")), 9).is_err());
    }

    fn terms() -> SlotTerms {
        SlotTerms {
            id: "0123456789abcdef0123456789abcdef".into(),
            filename: "a b.txt".into(),
            size: 10,
            content_type: "text/plain".into(),
            owner: "alice@localhost".into(),
            expires: 1000,
        }
    }

    #[test]
    fn signatures_cover_every_term() {
        let t = terms();
        let sig = t.sign(b"secret");
        assert!(t.verify(b"secret", &sig));
        assert!(!t.verify(b"other", &sig));
        assert!(!t.verify(b"secret", "zz"));
        assert!(!t.verify(b"secret", ""));
        let changed: [fn(&mut SlotTerms); 6] = [
            |t| t.id = "1123456789abcdef0123456789abcdef".into(),
            |t| t.filename = "a b.txu".into(),
            |t| t.size = 11,
            |t| t.content_type = "text/html".into(),
            |t| t.owner = "bob@localhost".into(),
            |t| t.expires = 1001,
        ];
        for f in changed {
            let mut t2 = terms();
            f(&mut t2);
            assert!(!t2.verify(b"secret", &sig), "{t2:?}");
        }
        // Length prefixes: moving a byte between fields changes the input.
        let mut a = terms();
        a.content_type = "text/plain1".into();
        a.owner = "0".into();
        let mut b = terms();
        b.content_type = "text/plain".into();
        b.owner = "10".into();
        assert_ne!(a.sign(b"k"), b.sign(b"k"));
        assert_eq!(
            t.path(),
            "/upload/0123456789abcdef0123456789abcdef/a%20b.txt"
        );
        assert!(t
            .query(b"k")
            .starts_with("size=10&type=text%2Fplain&owner=alice%40localhost&expires=1000&sig="));
    }

    #[test]
    fn ids_and_dispositions() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "..",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        for (t, d) in [
            ("image/png", "inline"),
            ("audio/ogg", "inline"),
            ("video/mp4", "inline"),
            ("image/svg+xml", "attachment"),
            ("text/html", "attachment"),
            ("application/octet-stream", "attachment"),
        ] {
            assert_eq!(disposition(t), d, "{t}");
        }
    }

    #[test]
    fn ranges() {
        use Range::*;
        for (h, len, want) in [
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Part { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=5-100"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Part { start: 0, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=4-2"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=x-1"), 10, Full),
            (Some("bytes=-"), 10, Full),
        ] {
            assert_eq!(range(h, len), want, "{h:?}");
        }
    }

    #[test]
    fn forms_and_errors() {
        let f = disco_form(1234);
        let xml = crate::stanza::to_xml(&f).unwrap();
        assert!(xml.contains("urn:xmpp:http:upload:0"), "{xml}");
        assert!(xml.contains("<value>1234</value>"), "{xml}");
        let e = crate::stanza::to_xml(&file_too_large(99)).unwrap();
        assert!(e.contains("<max-file-size>99</max-file-size>"), "{e}");
    }
}
