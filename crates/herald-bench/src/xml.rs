//! Minimal XMPP stream framing: splits the byte stream into the stream header, top-level
//! elements and the stream close, by scanning `<`/`>` with quote awareness and a depth count.
//! It must not build a DOM or validate XML: the load client has to stay far cheaper than any
//! server it measures, and it only ever needs a handful of tags and attributes.

use crate::error::{BenchError, Result};
use std::ops::Range;

/// A top-level element bigger than this is treated as a server fault, so a broken peer cannot
/// make the client buffer without bound.
const MAX_ELEMENT: usize = 1 << 20;

/// What the framer found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream ...>`; the range covers the opening tag.
    StreamOpen(Range<usize>),
    /// One complete top-level element (stanza or nonza).
    Element(Range<usize>),
    /// `</stream:stream>`.
    StreamClose,
}

/// Incremental framer over bytes read from the server.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes before this index are consumed and dropped on the next `push`.
    consumed: usize,
    /// Where scanning resumes.
    scan: usize,
    depth: u32,
    elem_start: usize,
}

impl Framer {
    /// A framer for a fresh stream (also used after STARTTLS/SASL stream restarts).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if self.consumed > 0 {
            // Drop consumed bytes lazily so ranges handed out stay valid until the next push.
            self.buf.drain(..self.consumed);
            self.scan -= self.consumed;
            self.elem_start = self.elem_start.saturating_sub(self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The bytes of a range returned by [`Framer::next_event`] (valid until the next `push`).
    pub fn slice(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Returns the next complete event, or `None` if more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            let Some(off) = self.buf[self.scan..].iter().position(|&b| b == b'<') else {
                if self.depth <= 1 {
                    // Whitespace keepalives between stanzas are not worth keeping.
                    self.scan = self.buf.len();
                    self.consumed = self.scan;
                }
                return Ok(None);
            };
            let lt = self.scan + off;
            let rest = &self.buf[lt..];
            if rest.len() < 2 {
                return Ok(None);
            }
            if rest.starts_with(b"<?") {
                match find(rest, b"?>") {
                    Some(e) => {
                        self.scan = lt + e + 2;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            if rest.starts_with(b"<!") {
                let end_pat: &[u8] = if rest.starts_with(b"<![CDATA[") {
                    b"]]>"
                } else {
                    b"-->"
                };
                match find(rest, end_pat) {
                    Some(e) => {
                        self.scan = lt + e + end_pat.len();
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let Some(gt) = tag_end(rest) else {
                if self.buf.len() - self.elem_start > MAX_ELEMENT {
                    return Err(BenchError::Xml("element too large"));
                }
                return Ok(None);
            };
            let tag_end_abs = lt + gt + 1;
            self.scan = tag_end_abs;
            if rest[1] == b'/' {
                if self.depth == 0 {
                    return Err(BenchError::Xml("close tag without open"));
                }
                self.depth -= 1;
                match self.depth {
                    0 => {
                        self.consumed = tag_end_abs;
                        return Ok(Some(Event::StreamClose));
                    }
                    1 => {
                        self.consumed = tag_end_abs;
                        return Ok(Some(Event::Element(self.elem_start..tag_end_abs)));
                    }
                    _ => continue,
                }
            }
            let self_closing = rest[gt - 1] == b'/';
            match (self.depth, self_closing) {
                (0, _) => {
                    self.depth = 1;
                    self.consumed = tag_end_abs;
                    return Ok(Some(Event::StreamOpen(lt..tag_end_abs)));
                }
                (1, true) => {
                    self.consumed = tag_end_abs;
                    return Ok(Some(Event::Element(lt..tag_end_abs)));
                }
                (1, false) => {
                    self.elem_start = lt;
                    self.depth = 2;
                }
                (_, true) => {}
                (_, false) => self.depth += 1,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Index of the `>` closing the tag that starts at `tag[0] == '<'`, skipping quoted values.
fn tag_end(tag: &[u8]) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &b) in tag.iter().enumerate().skip(1) {
        if quote != 0 {
            if b == quote {
                quote = 0;
            }
        } else if b == b'"' || b == b'\'' {
            quote = b;
        } else if b == b'>' {
            return Some(i);
        }
    }
    None
}

/// Local name (prefix stripped) of the element that starts `elem`.
pub fn name(elem: &[u8]) -> &[u8] {
    let body = elem.strip_prefix(b"<").unwrap_or(elem);
    let end = body
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(body.len());
    let qname = &body[..end];
    match qname.iter().position(|&b| b == b':') {
        Some(c) => &qname[c + 1..],
        None => qname,
    }
}

/// Value of attribute `attr` on the first start tag of `elem` (no entity decoding).
pub fn attr<'a>(elem: &'a [u8], attr: &str) -> Option<&'a [u8]> {
    let tag = &elem[..tag_end(elem).unwrap_or(elem.len())];
    let a = attr.as_bytes();
    let mut i = 0;
    while let Some(off) = find(&tag[i..], a) {
        let at = i + off;
        i = at + a.len();
        let before_ok = at > 0 && tag[at - 1].is_ascii_whitespace();
        let mut j = at + a.len();
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        if !before_ok || tag.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        let q = *tag.get(j)?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        let start = j + 1;
        let len = tag[start..].iter().position(|&b| b == q)?;
        return Some(&tag[start..start + len]);
    }
    None
}

/// The first descendant element with local name `child` (`<child` or `<p:child`), as the slice
/// from its `<` to the end of `elem`; enough for [`attr`] and [`text`].
pub fn find_child<'a>(elem: &'a [u8], child: &str) -> Option<&'a [u8]> {
    let mut i = 1;
    while let Some(off) = elem[i..].iter().position(|&b| b == b'<') {
        let at = i + off;
        i = at + 1;
        if elem.get(at + 1) == Some(&b'/') {
            continue;
        }
        if name(&elem[at..]) == child.as_bytes() {
            return Some(&elem[at..]);
        }
    }
    None
}

/// Character data of the element that starts `elem` up to its first child or end tag.
pub fn text(elem: &[u8]) -> Option<&[u8]> {
    let gt = tag_end(elem)?;
    if elem[gt - 1] == b'/' {
        return Some(&[]);
    }
    let rest = &elem[gt + 1..];
    let end = rest.iter().position(|&b| b == b'<')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: &mut Framer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(ev) = f.next_event().unwrap() {
            out.push(match ev {
                Event::StreamOpen(r) => format!("OPEN {}", String::from_utf8_lossy(f.slice(r))),
                Event::Element(r) => String::from_utf8_lossy(f.slice(r)).into_owned(),
                Event::StreamClose => "CLOSE".into(),
            });
        }
        out
    }

    #[test]
    fn frames_header_stanzas_and_close_across_splits() {
        let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='a>b'>\
            <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features> \
            <r xmlns='urn:xmpp:sm:3'/><message to='x' type=\"chat\"><body>1 2 3</body></message>\
            </stream:stream>";
        // Feed one byte at a time: every split point must give the same frames.
        let mut f = Framer::new();
        let mut got = Vec::new();
        for b in input.as_bytes() {
            f.push(std::slice::from_ref(b));
            got.extend(collect(&mut f));
        }
        assert_eq!(
            got,
            vec![
                "OPEN <stream:stream xmlns='jabber:client' id='a>b'>".to_string(),
                "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>".into(),
                "<r xmlns='urn:xmpp:sm:3'/>".into(),
                "<message to='x' type=\"chat\"><body>1 2 3</body></message>".into(),
                "CLOSE".into(),
            ]
        );
    }

    #[test]
    fn unbalanced_close_is_an_error() {
        let mut f = Framer::new();
        f.push(b"</oops>");
        assert!(f.next_event().is_err());
    }

    #[test]
    fn attributes_children_and_text() {
        let e =
            b"<iq type='result' id=\"b1\" xml:id='no'><bind xmlns='x'><jid>u@d/r</jid></bind></iq>";
        assert_eq!(name(e), b"iq");
        assert_eq!(attr(e, "id"), Some(&b"b1"[..]));
        assert_eq!(attr(e, "type"), Some(&b"result"[..]));
        assert_eq!(attr(e, "to"), None);
        let jid = find_child(e, "jid").unwrap();
        assert_eq!(text(jid), Some(&b"u@d/r"[..]));
        assert_eq!(name(b"<stream:features>"), b"features");
        assert!(find_child(e, "session").is_none());
    }
}
