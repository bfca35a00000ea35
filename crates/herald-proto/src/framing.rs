//! RFC 7395 framing (XMPP over WebSocket), sans I/O: the same stream, one top-level element
//! per WebSocket text message, `<open/>` and `<close/>` in place of the stream header and
//! end tag.
//!
//! Both directions adapt the TCP codec rather than duplicate it, so every limit and rule of
//! [`crate::stream`] applies to WebSocket streams unchanged:
//! - [`FramedDecoder`] feeds each message to a [`Decoder`] whose stream header was
//!   synthesised, checks that the message held exactly one complete element, and turns
//!   `<open/>` into [`StreamEvent::Header`] and `<close/>` into [`StreamEvent::End`].
//! - [`Framer`] splits the byte stream the session writes (our own encoder's output:
//!   headers, elements, keepalives, the end tag) into messages, declaring on each element
//!   the namespaces the stream header declared on TCP (RFC 7395 §3.3.3: every message is a
//!   standalone document).

use minidom::Element;

use crate::error::{StreamError, StreamErrorCondition as Cond};
use crate::ns;
use crate::stream::{Decoder, Limits, StreamEvent, StreamHeader, StreamNs};

/// The framing namespace of `<open/>` and `<close/>` (RFC 7395 §3.3.1).
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The WebSocket subprotocol (RFC 7395 §3.1).
pub const SUBPROTOCOL: &str = "xmpp";

/// What the decoder sees before the first message of each stream (and after each restart):
/// the context a TCP stream header would give, so stanzas without `xmlns` still decode.
fn synthetic_header(sns: StreamNs) -> String {
    format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>",
        sns.as_str(),
        ns::STREAM
    )
}

fn not_well_formed(text: &str) -> StreamError {
    StreamError::new(Cond::NotWellFormed, Some(text.to_string()))
}

/// The incoming half: one WebSocket text message at a time.
#[derive(Debug)]
pub struct FramedDecoder {
    inner: Decoder,
    sns: StreamNs,
    /// `<open/>` was received since the last (re)start.
    opened: bool,
    /// `<close/>` was received: later messages are ignored.
    ended: bool,
    /// The event of the last message, not yet taken.
    ready: Option<StreamEvent>,
    /// A framing error (the inner decoder keeps its own).
    failed: Option<StreamError>,
}

impl FramedDecoder {
    /// A decoder for a stream in `sns` (c2s: [`StreamNs::Client`]).
    pub fn new(limits: Limits, sns: StreamNs) -> Self {
        let mut d = FramedDecoder {
            inner: Decoder::new(limits),
            sns,
            opened: false,
            ended: false,
            ready: None,
            failed: None,
        };
        d.prime();
        d
    }

    fn prime(&mut self) {
        self.inner.feed(synthetic_header(self.sns).as_bytes());
        // Our own header within the default limits: it decodes to a Header, which is not the
        // peer's and is dropped. Anything else would surface on the first message anyway.
        let _ = self.inner.next_event();
    }

    fn fail(&mut self, e: StreamError) -> StreamError {
        self.failed = Some(e.clone());
        self.ready = None;
        e
    }

    /// Decodes one text message. An error is a stream error to send before closing; it is
    /// returned again by [`Self::next_event`].
    pub fn feed_message(&mut self, text: &[u8]) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.ended {
            return Ok(());
        }
        if self.ready.is_some() {
            // The caller reads a message only once the last one's event was taken.
            return Err(self.fail(StreamError::new(
                Cond::InternalServerError,
                Some("message read before the last one was handled".to_string()),
            )));
        }
        self.inner.feed(text);
        let mut got = None;
        loop {
            match self.inner.next_event() {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    if got.is_some() {
                        return Err(self.fail(not_well_formed(
                            "a WebSocket message must hold exactly one element",
                        )));
                    }
                    got = Some(ev);
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        if !self.inner.is_idle() {
            return Err(self.fail(not_well_formed(
                "a WebSocket message must hold one complete element",
            )));
        }
        let el = match got {
            // Whitespace only: a keepalive, as between elements on TCP.
            None => return Ok(()),
            Some(StreamEvent::Stanza(el)) => el,
            // `</stream:stream>` closes the synthetic header: no element of its own.
            Some(StreamEvent::Header(_) | StreamEvent::End) => {
                return Err(self.fail(not_well_formed(
                    "a WebSocket message must hold one complete element",
                )))
            }
        };
        if el.is("open", FRAMING) {
            self.opened = true;
            self.ready = Some(StreamEvent::Header(header_of(&el, self.sns)));
        } else if el.is("close", FRAMING) {
            self.ended = true;
            self.ready = Some(StreamEvent::End);
        } else if el.is("stream", ns::STREAM) {
            // RFC 7395 §3.3: over WebSocket `<open/>` replaces the `<stream:stream>` wrapper,
            // which is no element a client may send (the fuzzer found one passed on as a
            // stanza, which the server's own framer would then have written as `<open/>`).
            return Err(self.fail(not_well_formed(
                "<stream:stream> is not used over WebSocket (RFC 7395): send <open/>",
            )));
        } else if !self.opened {
            // As on TCP when the first element is not `<stream:stream>` (RFC 6120 §4.9.3.10).
            return Err(self.fail(StreamError::new(
                Cond::InvalidNamespace,
                Some("expected <open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".to_string()),
            )));
        } else {
            self.ready = Some(StreamEvent::Stanza(el));
        }
        Ok(())
    }

    /// Fails the stream for a reason found outside the message text (a binary message, one
    /// over the transport's size limit): returned by the next call.
    pub fn fail_with(&mut self, e: StreamError) {
        self.fail(e);
    }

    /// The event of the last message, if not yet taken.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        Ok(self.ready.take())
    }

    /// Stream restart (after SASL success): the client sends `<open/>` again.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.restart_state();
    }

    /// Stream restart under new limits.
    pub fn reset_with(&mut self, limits: Limits) {
        self.inner.reset_with(limits);
        self.restart_state();
    }

    fn restart_state(&mut self) {
        self.opened = false;
        self.ended = false;
        self.ready = None;
        self.failed = None;
        self.prime();
    }

    /// New limits without a restart (SASL2 success).
    pub fn set_limits(&mut self, limits: Limits) {
        self.inner.set_limits(limits);
    }

    /// True when nothing is buffered.
    pub fn is_idle(&self) -> bool {
        self.ready.is_none() && self.inner.is_idle()
    }

    /// Releases spare capacity held between messages.
    pub fn shrink(&mut self) {
        self.inner.shrink();
    }
}

fn header_of(open: &Element, sns: StreamNs) -> StreamHeader {
    StreamHeader {
        ns: Some(sns),
        to: open.attr("to").map(str::to_string),
        from: open.attr("from").map(str::to_string),
        id: open.attr("id").map(str::to_string),
        version: open.attr("version").map(str::to_string),
        lang: open.attr_ns(rxml::XMLNS_XML, "lang").map(str::to_string),
    }
}

/// One outgoing WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutFrame {
    /// A text message: one complete element.
    Text(String),
    /// A write of whitespace only (a keepalive on TCP): the WebSocket sends a ping instead,
    /// which tests the connection the same way.
    Keepalive,
}

/// The outgoing half: splits what the session writes into messages.
///
/// It reads only our own encoder's output ([`crate::stream`]): attribute values and text
/// have `<` and `>` escaped, and there are no comments or CDATA sections, so a tag ends at
/// the next `>`.
#[derive(Debug)]
pub struct Framer {
    sns: StreamNs,
    /// The start of an element whose end has not been written yet (never in practice: every
    /// write holds whole elements; kept so a split write still frames correctly).
    pending: Vec<u8>,
}

impl Framer {
    /// A framer for a stream in `sns`.
    pub fn new(sns: StreamNs) -> Self {
        Framer {
            sns,
            pending: Vec::new(),
        }
    }

    /// Appends the messages `bytes` complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<OutFrame>) {
        let owned;
        let buf: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            self.pending.extend_from_slice(bytes);
            owned = std::mem::take(&mut self.pending);
            &owned
        };
        let before = out.len();
        let mut whitespace = false;
        let mut i = 0;
        while i < buf.len() {
            let Some(lt) = buf[i..].iter().position(|&b| b == b'<') else {
                whitespace |= buf[i..].iter().any(|b| b.is_ascii_whitespace());
                break;
            };
            whitespace |= buf[i..i + lt].iter().any(|b| b.is_ascii_whitespace());
            i += lt;
            let rest = &buf[i..];
            if rest.starts_with(b"<?") {
                // The XML declaration before a header: no place in a message.
                match find(rest, b"?>") {
                    Some(end) => i += end + 2,
                    None => {
                        self.pending = rest.to_vec();
                        break;
                    }
                }
            } else if is_tag(rest, b"</stream:stream") {
                match find(rest, b">") {
                    Some(end) => {
                        out.push(OutFrame::Text(format!("<close xmlns='{FRAMING}'/>")));
                        i += end + 1;
                    }
                    None => {
                        self.pending = rest.to_vec();
                        break;
                    }
                }
            } else if is_tag(rest, b"<stream:stream") {
                match find(rest, b">") {
                    Some(end) => {
                        out.push(OutFrame::Text(open_of(&rest[..end])));
                        i += end + 1;
                    }
                    None => {
                        self.pending = rest.to_vec();
                        break;
                    }
                }
            } else {
                match element_len(rest) {
                    Some(len) => {
                        out.push(OutFrame::Text(self.standalone(&rest[..len])));
                        i += len;
                    }
                    None => {
                        self.pending = rest.to_vec();
                        break;
                    }
                }
            }
        }
        if out.len() == before && whitespace && self.pending.is_empty() {
            out.push(OutFrame::Keepalive);
        }
    }

    /// The element with the declarations the stream header gave it on TCP.
    fn standalone(&self, el: &[u8]) -> String {
        let name_end = el
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
            .unwrap_or(el.len());
        let head_end = find(el, b">").unwrap_or(el.len());
        let head = &el[..head_end];
        let insert = if el[..name_end].starts_with(b"<stream:") {
            format!(" xmlns:stream='{}'", ns::STREAM)
        } else if find(head, b" xmlns='").is_some() || find(head, b" xmlns=\"").is_some() {
            String::new()
        } else {
            format!(" xmlns='{}'", self.sns.as_str())
        };
        let mut s = String::with_capacity(el.len() + insert.len());
        s.push_str(&String::from_utf8_lossy(&el[..name_end]));
        s.push_str(&insert);
        s.push_str(&String::from_utf8_lossy(&el[name_end..]));
        s
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the complete element at the start of `b`, None if it is not complete yet.
fn element_len(b: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    loop {
        let lt = i + b[i..].iter().position(|&c| c == b'<')?;
        let gt = lt + b[lt..].iter().position(|&c| c == b'>')?;
        let tag = &b[lt..=gt];
        if tag.starts_with(b"</") {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with(b"/>") {
            depth += 1;
        }
        i = gt + 1;
        if depth == 0 {
            return Some(i);
        }
    }
}

/// Whether `rest` starts with the tag name `tag` itself, not a longer name that begins with
/// it (`<stream:stream-x/>` is an element like any other, found by the fuzzer). Undecided
/// (the byte after the name has not arrived) counts as no: the element path then waits for
/// more bytes.
fn is_tag(rest: &[u8], tag: &[u8]) -> bool {
    rest.starts_with(tag)
        && rest
            .get(tag.len())
            .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'))
}

/// `<open/>` with the attributes of our `<stream:stream …` tag (`head` without its `>`),
/// namespace declarations left out.
fn open_of(head: &[u8]) -> String {
    let mut s = format!("<open xmlns='{FRAMING}'");
    let mut rest = &head[b"<stream:stream".len()..];
    loop {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else { break };
        rest = &rest[start..];
        let Some(eq) = rest.iter().position(|&b| b == b'=') else {
            break;
        };
        let name = &rest[..eq];
        let Some(&quote) = rest.get(eq + 1) else {
            break;
        };
        let Some(len) = rest[eq + 2..].iter().position(|&b| b == quote) else {
            break;
        };
        let attr = &rest[..eq + 2 + len + 1];
        if name != b"xmlns" && !name.starts_with(b"xmlns:") {
            s.push(' ');
            s.push_str(&String::from_utf8_lossy(attr));
        }
        rest = &rest[attr.len()..];
    }
    s.push_str("/>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{encode, header_xml};

    fn dec() -> FramedDecoder {
        FramedDecoder::new(Limits::default(), StreamNs::Client)
    }

    fn event(d: &mut FramedDecoder, msg: &str) -> Result<Option<StreamEvent>, StreamError> {
        d.feed_message(msg.as_bytes())?;
        d.next_event()
    }

    #[test]
    fn open_stanza_close() {
        let mut d = dec();
        let h = event(
            &mut d,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0' xml:lang='de'/>",
        )
        .unwrap();
        assert_eq!(
            h,
            Some(StreamEvent::Header(StreamHeader {
                ns: Some(StreamNs::Client),
                to: Some("example.org".into()),
                version: Some("1.0".into()),
                lang: Some("de".into()),
                ..Default::default()
            }))
        );
        let Some(StreamEvent::Stanza(m)) = event(
            &mut d,
            "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>",
        )
        .unwrap() else {
            panic!("no stanza")
        };
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "hi");
        // A keepalive message, then the close.
        assert_eq!(event(&mut d, " \n").unwrap(), None);
        assert_eq!(
            event(
                &mut d,
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
            )
            .unwrap(),
            Some(StreamEvent::End)
        );
    }

    #[test]
    fn an_element_named_like_the_header_is_an_element() {
        // Found by the fuzzer: the framer took any tag starting `<stream:stream` for the
        // header. Such an element is framed like any stream-namespace element, and reads back.
        let mut frames = Vec::new();
        Framer::new(StreamNs::Client).push(b"<stream:stream-x/>", &mut frames);
        let [OutFrame::Text(t)] = frames.as_slice() else {
            panic!("{frames:?}");
        };
        assert_eq!(
            t,
            "<stream:stream-x xmlns:stream='http://etherx.jabber.org/streams'/>"
        );
        let mut d = dec();
        event(
            &mut d,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>",
        )
        .unwrap();
        let Some(StreamEvent::Stanza(el)) = event(&mut d, t).unwrap() else {
            panic!("not read back as an element");
        };
        assert!(el.is("stream-x", ns::STREAM));
        // The header itself, split after its name, is still the header.
        let mut frames = Vec::new();
        let mut f = Framer::new(StreamNs::Client);
        f.push(b"<stream:stream", &mut frames);
        assert!(frames.is_empty());
        f.push(b" xmlns='jabber:client' to='x' version='1.0'>", &mut frames);
        assert!(
            matches!(frames.as_slice(), [OutFrame::Text(t)] if t.starts_with("<open ")),
            "{frames:?}"
        );
    }

    #[test]
    fn a_stream_stream_element_is_refused() {
        // Found by the fuzzer: `<stream:stream/>` as a message after `<open/>` came out as a
        // stanza named like the header.
        for first in [true, false] {
            let mut d = dec();
            if first {
                event(
                    &mut d,
                    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>",
                )
                .unwrap();
            }
            let e = event(&mut d, "<stream:stream/>").unwrap_err();
            assert_eq!(e.condition, Cond::NotWellFormed);
        }
    }

    #[test]
    fn restart_expects_a_new_open() {
        let mut d = dec();
        event(
            &mut d,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>",
        )
        .unwrap();
        d.reset();
        let e = event(&mut d, "<iq xmlns='jabber:client' type='get' id='1'/>").unwrap_err();
        assert_eq!(e.condition, Cond::InvalidNamespace);
        d.reset();
        assert!(matches!(
            event(
                &mut d,
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>"
            ),
            Ok(Some(StreamEvent::Header(_)))
        ));
    }

    #[test]
    fn a_message_is_one_complete_element() {
        let open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>";
        for bad in [
            "<message xmlns='jabber:client'>",
            "<message xmlns='jabber:client'/><message xmlns='jabber:client'/>",
            "</stream:stream>",
            "<message xmlns='jabber:client'/><mess",
            "hello",
        ] {
            let mut d = dec();
            event(&mut d, open).unwrap();
            let e = event(&mut d, bad).unwrap_err();
            assert_eq!(e.condition, Cond::NotWellFormed, "{bad}");
            // Sticky.
            assert!(d.next_event().is_err());
        }
    }

    #[test]
    fn stream_limits_apply() {
        let mut d = FramedDecoder::new(
            Limits {
                max_stanza_bytes: 100,
                ..Limits::default()
            },
            StreamNs::Client,
        );
        event(
            &mut d,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>",
        )
        .unwrap();
        let big = format!(
            "<message xmlns='jabber:client'><body>{}</body></message>",
            "a".repeat(200)
        );
        assert_eq!(
            event(&mut d, &big).unwrap_err().condition,
            Cond::PolicyViolation
        );
    }

    fn frames(bytes: &str) -> Vec<OutFrame> {
        let mut f = Framer::new(StreamNs::Client);
        let mut out = Vec::new();
        f.push(bytes.as_bytes(), &mut out);
        out
    }

    fn text(s: &str) -> OutFrame {
        OutFrame::Text(s.to_string())
    }

    #[test]
    fn header_and_features_become_open_and_standalone_features() {
        let mut bytes = header_xml(
            StreamNs::Client,
            Some("example.org"),
            None,
            Some("abc"),
            true,
            Some("en"),
            &[],
        );
        bytes.push_str(
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        );
        assert_eq!(
            frames(&bytes),
            vec![
                text("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='abc' version='1.0' xml:lang='en'/>"),
                text("<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"),
            ]
        );
    }

    #[test]
    fn stanzas_get_their_namespace_and_each_its_message() {
        let parse = |to: &str| -> Element {
            format!(
                "<message xmlns='jabber:client' to='{to}'><body>1 &lt; 2 &gt; 0</body></message>"
            )
            .parse()
            .unwrap()
        };
        let mut bytes = Vec::new();
        encode(&parse("a@b/c"), StreamNs::Client, &mut bytes);
        encode(&parse("d@e"), StreamNs::Client, &mut bytes);
        bytes.extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
        bytes.extend_from_slice(
            b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
        );
        let out = frames(&String::from_utf8(bytes).unwrap());
        assert_eq!(
            out,
            vec![
                text("<message xmlns='jabber:client' to='a@b/c'><body>1 &lt; 2 &gt; 0</body></message>"),
                text("<message xmlns='jabber:client' to='d@e'><body>1 &lt; 2 &gt; 0</body></message>"),
                text("<r xmlns='urn:xmpp:sm:3'/>"),
                text("<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"),
                text("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            ]
        );
        // Every message decodes on its own.
        let mut d = dec();
        event(
            &mut d,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        )
        .unwrap();
        for f in &out[..3] {
            let OutFrame::Text(t) = f else { panic!() };
            assert!(
                matches!(event(&mut d, t), Ok(Some(StreamEvent::Stanza(_)))),
                "{t}"
            );
        }
    }

    #[test]
    fn whitespace_is_a_keepalive_and_split_writes_are_joined() {
        assert_eq!(frames(" "), vec![OutFrame::Keepalive]);
        let mut f = Framer::new(StreamNs::Client);
        let mut out = Vec::new();
        f.push(b"<presence><sho", &mut out);
        assert!(out.is_empty());
        f.push(b"w>away</show></presence>", &mut out);
        assert_eq!(
            out,
            vec![text(
                "<presence xmlns='jabber:client'><show>away</show></presence>"
            )]
        );
    }
}
