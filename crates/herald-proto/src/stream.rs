//! The XML stream codec: bytes ⇄ stream events, sans I/O.
//!
//! [`Decoder`] turns bytes (in chunks of any size) into a stream header, top-level elements
//! and the stream end, enforcing hard limits itself: rxml bounds tokens, not stanzas, so the
//! byte, depth, attribute and element counts are ours. Namespaces are normalised at this edge:
//! whatever the stream's content namespace (`jabber:client`, `jabber:server`,
//! `jabber:component:accept`), stanzas come out in [`INTERNAL_NS`], and [`encode`] puts them
//! back into the namespace of the stream they are written to.
//!
//! This module must not do I/O, read clocks or know about sessions: it is fed bytes and asked
//! for events, which is what makes it fuzzable.

use minidom::{Element, Node};
use rxml::error::EndOrError;
use rxml::{Namespace, NcName, Options, Parse, RawEvent, RawParser, WithOptions};

use crate::error::{StreamError, StreamErrorCondition as Cond};
use crate::ns;

/// The one internal form of stanzas: every decoded stanza is in this namespace.
pub const INTERNAL_NS: &str = ns::CLIENT;

/// Written after the last stanza to close a stream (RFC 6120 §4.4).
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// Content namespace of a stream (RFC 6120 §4.8.3, XEP-0114).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamNs {
    /// `jabber:client`
    Client,
    /// `jabber:server`
    Server,
    /// `jabber:component:accept`
    Component,
}

impl StreamNs {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamNs::Client => ns::CLIENT,
            StreamNs::Server => ns::SERVER,
            StreamNs::Component => ns::COMPONENT,
        }
    }

    pub fn from_ns(s: &str) -> Option<Self> {
        match s {
            ns::CLIENT => Some(StreamNs::Client),
            ns::SERVER => Some(StreamNs::Server),
            ns::COMPONENT => Some(StreamNs::Component),
            _ => None,
        }
    }
}

/// Hard limits of one decoder. Exceeding any of them is a `policy-violation` stream error.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Raw bytes of one top-level element (stanza or nonza), markup included.
    pub max_stanza_bytes: usize,
    /// Nesting depth inside a top-level element; the top-level element itself is depth 1.
    pub max_depth: usize,
    /// Attributes (namespace declarations included) on any one element.
    pub max_attributes: usize,
    /// Raw bytes of the XML declaration plus the `<stream:stream>` opening tag.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
            max_header_bytes: 4096,
        }
    }
}

/// The peer's `<stream:stream>` opening tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// The declared default (content) namespace.
    pub ns: Option<StreamNs>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`
    pub lang: Option<String>,
}

/// What the decoder produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The opening tag is complete (sent before any child).
    Header(StreamHeader),
    /// A complete top-level element, namespace-normalised.
    Stanza(Element),
    /// `</stream:stream>`: nothing more will be decoded from this document.
    End,
}

/// An element opening tag whose attributes are still arriving.
#[derive(Debug)]
struct Head {
    prefix: Option<NcName>,
    local: NcName,
    default_decl: Option<String>,
    decls: Vec<(NcName, String)>,
    attrs: Vec<(Option<NcName>, NcName, String)>,
    n_attrs: usize,
}

/// Namespace declarations made by one open element.
#[derive(Debug, Default)]
struct Scope {
    default: Option<String>,
    prefixes: Vec<(NcName, String)>,
}

#[derive(Debug)]
enum Phase {
    /// Before the stream header is complete.
    Prolog,
    /// Header seen; top-level elements follow.
    Open(StreamNs),
    /// `</stream:stream>` seen.
    Ended,
    /// A stream error was returned; it is returned again on every call.
    Failed(StreamError),
}

/// Incremental, sans-IO XML stream decoder with hard limits.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    parser: RawParser,
    buf: Vec<u8>,
    pos: usize,
    phase: Phase,
    head: Option<Box<Head>>,
    scopes: Vec<Scope>,
    stack: Vec<Element>,
    /// Bytes consumed since the last boundary (end of header, end of a top-level element or
    /// whitespace between them): the size of what is being parsed now.
    count: usize,
    /// Elements in the current top-level element.
    elements: usize,
    /// Nothing but whitespace has been seen since the document began.
    at_document_start: bool,
    /// The last bytes handed to rxml, oldest first: what a syntax error is judged by when
    /// the buffer they were in is gone (`has_declaration`).
    recent: [u8; RECENT],
}

/// How many consumed bytes `Decoder::recent` keeps.
const RECENT: usize = 8;

/// rxml's own ceiling on one token (name, attribute value, text chunk; longer text is split).
const MAX_TOKEN: usize = 8192;

/// Each decoded element costs ~200 bytes of heap however small its markup, so a stanza made of
/// `<a/>`s could inflate 50×. Capping elements per stanza bounds the inflation.
const MIN_BYTES_PER_ELEMENT: usize = 16;

fn new_parser() -> RawParser {
    let mut p = RawParser::with_options(Options {
        max_token_length: MAX_TOKEN,
        ..Options::default()
    });
    // Eager text lets whitespace keepalives be consumed at once, so an idle decoder holds no
    // partial token and its scratch space can be released.
    p.set_text_buffering(false);
    p
}

fn policy(text: &str) -> StreamError {
    StreamError::new(Cond::PolicyViolation, Some(text.to_string()))
}

fn is_xml_whitespace(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Whether `bytes` hold a markup declaration (`<!DOCTYPE`, `<!ENTITY`, `<!ELEMENT`,
/// `<!ATTLIST`, `<!NOTATION`): `<!` and an upper-case letter. rxml reports these as a syntax
/// error; RFC 6120 §11.1 calls them restricted XML. (`<!--` and `<![CDATA[` do not match.)
fn has_declaration(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w[0] == b'<' && w[1] == b'!' && w[2].is_ascii_uppercase())
}

/// Keeps the last bytes of `consumed` at the end of `recent`.
fn remember(recent: &mut [u8; RECENT], consumed: &[u8]) {
    let n = consumed.len().min(RECENT);
    recent.rotate_left(n);
    recent[RECENT - n..].copy_from_slice(&consumed[consumed.len() - n..]);
}

fn map_rxml_error(e: rxml::Error) -> StreamError {
    let cond = match e {
        rxml::Error::RestrictedXml("long name or reference" | "event too long") => {
            Cond::PolicyViolation
        }
        // RFC 6120 §4.9.3.22: non-UTF-8 declaration or bytes.
        rxml::Error::RestrictedXml("only utf-8 encoding is allowed")
        | rxml::Error::InvalidUtf8Byte(_) => Cond::UnsupportedEncoding,
        // RFC 6120 §11.1: comments, processing instructions, DTDs, entity declarations.
        rxml::Error::RestrictedXml(_) | rxml::Error::UndeclaredEntity => Cond::RestrictedXml,
        rxml::Error::UndeclaredNamespacePrefix(_) => Cond::BadNamespacePrefix,
        _ => Cond::NotWellFormed,
    };
    StreamError::new(cond, Some(e.to_string()))
}

fn lookup_ns<'a>(scopes: &'a [Scope], prefix: Option<&str>) -> Option<&'a str> {
    match prefix {
        None => Some(
            scopes
                .iter()
                .rev()
                .find_map(|s| s.default.as_deref())
                .unwrap_or(""),
        ),
        Some("xml") => Some(rxml::XMLNS_XML),
        Some(p) => scopes.iter().rev().find_map(|s| {
            s.prefixes
                .iter()
                .find(|(k, _)| k.as_str() == p)
                .map(|(_, v)| v.as_str())
        }),
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            parser: new_parser(),
            buf: Vec::new(),
            pos: 0,
            phase: Phase::Prolog,
            head: None,
            scopes: Vec::new(),
            stack: Vec::new(),
            count: 0,
            elements: 0,
            at_document_start: true,
            recent: [0; RECENT],
        }
    }

    /// Whether the bytes around where rxml stopped hold a markup declaration.
    fn declaration_near_pos(&self) -> bool {
        let ahead = self.buf.get(self.pos..).unwrap_or_default();
        let ahead = ahead.get(..RECENT).unwrap_or(ahead);
        let mut around = [0u8; 2 * RECENT];
        around[..RECENT].copy_from_slice(&self.recent);
        around[RECENT..RECENT + ahead.len()].copy_from_slice(ahead);
        has_declaration(&around[..RECENT + ahead.len()])
    }

    /// Appends bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Ended | Phase::Failed(_)) {
            return;
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Stream restart (RFC 6120 §5.4.3.3 after STARTTLS, §6.4.6 after SASL success): a new
    /// document begins with the next bytes fed. Bytes buffered but not yet decoded are
    /// dropped: after STARTTLS they arrived in plaintext and must not be trusted.
    pub fn reset(&mut self) {
        self.parser = new_parser();
        self.buf = Vec::new();
        self.pos = 0;
        self.phase = Phase::Prolog;
        self.head = None;
        self.scopes = Vec::new();
        self.stack = Vec::new();
        self.count = 0;
        self.elements = 0;
        self.at_document_start = true;
        self.recent = [0; RECENT];
    }

    /// Stream restart under new limits (after SASL success, the pre-authentication budget
    /// gives way to the full one): [`Self::reset`], then `limits` apply.
    pub fn reset_with(&mut self, limits: Limits) {
        self.reset();
        self.limits = limits;
    }

    /// New limits for what follows, without a restart (XEP-0388: SASL2 success does not
    /// restart the stream, yet the pre-authentication budget must give way to the full one).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// True when no partial data is buffered: the caller may free its own buffers.
    pub fn is_idle(&self) -> bool {
        self.pos >= self.buf.len()
            && self.stack.is_empty()
            && self.head.is_none()
            && self.count == 0
    }

    /// Releases spare capacity held between stanzas.
    pub fn shrink(&mut self) {
        if self.pos >= self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        } else {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.shrink_to_fit();
        }
        self.stack.shrink_to_fit();
        self.scopes.shrink_to_fit();
        self.parser.release_temporaries();
    }

    /// Heap bytes held by the decoder's own buffers (not counting rxml's scratch space, which
    /// [`Self::shrink`] also releases). For memory tests and metrics.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
            + self.stack.capacity() * std::mem::size_of::<Element>()
            + self.scopes.capacity() * std::mem::size_of::<Scope>()
    }

    /// The next event, `Ok(None)` when more bytes are needed. After an `Err` the decoder stays
    /// failed and returns the same error.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        loop {
            match &self.phase {
                Phase::Failed(e) => return Err(e.clone()),
                Phase::Ended => {
                    self.buf = Vec::new();
                    self.pos = 0;
                    return Ok(None);
                }
                Phase::Prolog | Phase::Open(_) => {}
            }
            let limit = match self.phase {
                Phase::Prolog => self.limits.max_header_bytes,
                _ => self.limits.max_stanza_bytes,
            };
            if self.at_document_start {
                // XML 1.0 §2.8 allows whitespace before the root element when there is no
                // XML declaration, which rxml rejects; some peers send a keepalive just
                // before (re)opening the stream. Skip it here; it still counts as header.
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                let ws = rest
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .count();
                self.pos += ws;
                self.count = self.count.saturating_add(ws);
                if self.count > limit {
                    return Err(self.fail(policy("stream header too large")));
                }
                if ws < rest.len() {
                    self.at_document_start = false;
                }
            }
            // Called even with nothing buffered: rxml may hold queued events (the end of a
            // `<x/>` comes after its head) that only a parse call releases.
            let avail = self.buf.get(self.pos..).unwrap_or_default();
            // Hand rxml no more than one byte past the budget, so an oversized element is
            // caught as soon as it crosses the limit rather than after it is buffered.
            let allowed = limit.saturating_sub(self.count).saturating_add(1);
            let mut slice = avail.get(..allowed).unwrap_or(avail);
            let before = slice.len();
            let result = self.parser.parse(&mut slice, false);
            let consumed = before - slice.len();
            if let Some(c) = self.buf.get(self.pos..self.pos + consumed) {
                remember(&mut self.recent, c);
            }
            self.pos += consumed;
            self.count = self.count.saturating_add(consumed);
            if self.count > limit {
                let what = match self.phase {
                    Phase::Prolog => "stream header too large",
                    _ => "stanza too large",
                };
                return Err(self.fail(policy(what)));
            }
            let (outcome, stalled) = match result {
                Ok(Some(ev)) => (self.handle(ev), false),
                // Ok(None) is rxml's end of document, which only `at_eof` produces; treat it
                // like a request for more bytes.
                Ok(None) | Err(EndOrError::NeedMoreData) => (Ok(None), consumed == 0),
                Err(EndOrError::Error(e)) => {
                    let mut err = map_rxml_error(e);
                    if err.condition == Cond::NotWellFormed && self.declaration_near_pos() {
                        err = StreamError::new(
                            Cond::RestrictedXml,
                            Some("DTDs (<!DOCTYPE, <!ENTITY …) are not allowed".to_string()),
                        );
                    }
                    (Err(err), false)
                }
            };
            match outcome {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) if stalled => {
                    if self.pos >= self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn fail(&mut self, e: StreamError) -> StreamError {
        self.phase = Phase::Failed(e.clone());
        self.buf = Vec::new();
        self.pos = 0;
        self.head = None;
        self.scopes = Vec::new();
        self.stack = Vec::new();
        self.parser = new_parser();
        e
    }

    fn handle(&mut self, ev: RawEvent) -> Result<Option<StreamEvent>, StreamError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, (prefix, local)) => {
                if let Phase::Open(_) = self.phase {
                    if self.stack.is_empty() {
                        self.elements = 0;
                    }
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(policy("element nesting too deep"));
                    }
                    self.elements += 1;
                    if self.elements
                        > (self.limits.max_stanza_bytes / MIN_BYTES_PER_ELEMENT).max(64)
                    {
                        return Err(policy("too many elements"));
                    }
                }
                self.head = Some(Box::new(Head {
                    prefix,
                    local,
                    default_decl: None,
                    decls: Vec::new(),
                    attrs: Vec::new(),
                    n_attrs: 0,
                }));
                Ok(None)
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                let max_attributes = self.limits.max_attributes;
                let Some(head) = self.head.as_mut() else {
                    return Err(not_well_formed("attribute outside an element head"));
                };
                head.n_attrs += 1;
                if head.n_attrs > max_attributes {
                    return Err(policy("too many attributes"));
                }
                // XML Namespaces §3: the xmlns namespace is never declared (rxml checks the
                // XML namespace, not this one); a peer that could would have us write
                // declarations other parsers refuse.
                if value == rxml::XMLNS_XMLNS
                    && (prefix.is_none() && local.as_str() == "xmlns"
                        || prefix.as_ref().is_some_and(|p| p.as_str() == "xmlns"))
                {
                    return Err(not_well_formed("the xmlns namespace declared"));
                }
                match prefix {
                    None if local.as_str() == "xmlns" => {
                        if head.default_decl.is_some() {
                            return Err(not_well_formed("duplicate attribute"));
                        }
                        head.default_decl = Some(value);
                    }
                    Some(p) if p.as_str() == "xmlns" => {
                        if head.decls.iter().any(|(k, _)| *k == local) {
                            return Err(not_well_formed("duplicate attribute"));
                        }
                        // rxml already checked that `xml` may only be bound to its own
                        // namespace; lookups answer it without a declaration.
                        if local.as_str() != "xml" {
                            head.decls.push((local, value));
                        }
                    }
                    prefix => head.attrs.push((prefix, local, value)),
                }
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                let Some(head) = self.head.take() else {
                    return Err(not_well_formed("element head close without head"));
                };
                let head = *head;
                self.scopes.push(Scope {
                    default: head.default_decl,
                    prefixes: head.decls,
                });
                match self.phase {
                    Phase::Prolog => self.open_stream(head.prefix, head.local, head.attrs),
                    Phase::Open(sns) => {
                        let el = self.build_element(sns, head.prefix, head.local, head.attrs)?;
                        self.stack.push(el);
                        Ok(None)
                    }
                    Phase::Ended | Phase::Failed(_) => Ok(None),
                }
            }
            RawEvent::ElementFoot(_) => {
                self.scopes.pop();
                match self.stack.pop() {
                    Some(el) => match self.stack.last_mut() {
                        Some(parent) => {
                            parent.append_child(el);
                            Ok(None)
                        }
                        None => {
                            self.count = 0;
                            Ok(Some(StreamEvent::Stanza(el)))
                        }
                    },
                    None => {
                        self.phase = Phase::Ended;
                        self.count = 0;
                        Ok(Some(StreamEvent::End))
                    }
                }
            }
            RawEvent::Text(_, text) => {
                match self.stack.last_mut() {
                    Some(top) => top.append_text(text),
                    None => {
                        // RFC 6120 §4.6.1: whitespace between top-level elements is a
                        // keepalive; anything else has no place at stream level.
                        if !is_xml_whitespace(&text) {
                            return Err(not_well_formed("text at stream level"));
                        }
                        self.count = 0;
                    }
                }
                Ok(None)
            }
        }
    }

    fn open_stream(
        &mut self,
        prefix: Option<NcName>,
        local: NcName,
        attrs: Vec<(Option<NcName>, NcName, String)>,
    ) -> Result<Option<StreamEvent>, StreamError> {
        let root_ns = lookup_ns(&self.scopes, prefix.as_ref().map(|p| p.as_str()));
        let Some(root_ns) = root_ns else {
            return Err(StreamError::new(
                Cond::BadNamespacePrefix,
                Some("undeclared prefix on stream element".to_string()),
            ));
        };
        // RFC 6120 §4.9.3.10: wrong stream namespace (or not a stream at all).
        if root_ns != ns::STREAM || local.as_str() != "stream" {
            return Err(StreamError::new(
                Cond::InvalidNamespace,
                Some("expected <stream:stream/>".to_string()),
            ));
        }
        let content = self
            .scopes
            .last()
            .and_then(|s| s.default.as_deref())
            .and_then(StreamNs::from_ns);
        // RFC 6120 §4.8.2 and §4.9.3.10: the content namespace must be one we serve.
        let Some(content) = content else {
            return Err(StreamError::new(
                Cond::InvalidNamespace,
                Some("unsupported content namespace".to_string()),
            ));
        };
        let mut header = StreamHeader {
            ns: Some(content),
            ..StreamHeader::default()
        };
        for (p, name, value) in attrs {
            match p.as_ref().map(|p| p.as_str()) {
                None => match name.as_str() {
                    "to" => header.to = Some(value),
                    "from" => header.from = Some(value),
                    "id" => header.id = Some(value),
                    "version" => header.version = Some(value),
                    _ => {}
                },
                Some("xml") if name.as_str() == "lang" => header.lang = Some(value),
                Some(p) => {
                    if lookup_ns(&self.scopes, Some(p)).is_none() {
                        return Err(StreamError::new(
                            Cond::BadNamespacePrefix,
                            Some("undeclared attribute prefix".to_string()),
                        ));
                    }
                }
            }
        }
        self.phase = Phase::Open(content);
        self.count = 0;
        Ok(Some(StreamEvent::Header(header)))
    }

    fn build_element(
        &self,
        sns: StreamNs,
        prefix: Option<NcName>,
        local: NcName,
        attrs: Vec<(Option<NcName>, NcName, String)>,
    ) -> Result<Element, StreamError> {
        let Some(el_ns) = lookup_ns(&self.scopes, prefix.as_ref().map(|p| p.as_str())) else {
            return Err(StreamError::new(
                Cond::BadNamespacePrefix,
                Some("undeclared element prefix".to_string()),
            ));
        };
        // `<xml:foo/>` is well-formed (the prefix is bound without a declaration) but an
        // element in the XML namespace cannot be written back: the serializer would have to
        // declare it as a default namespace, which XML Namespaces §3 forbids, and the
        // recipient's parser would end its stream. No protocol puts elements there.
        if el_ns == rxml::XMLNS_XML {
            return Err(StreamError::new(
                Cond::BadNamespacePrefix,
                Some("element in a reserved namespace".to_string()),
            ));
        }
        // Normalisation: the stream's content namespace becomes the internal one, at any
        // depth, so a stanza looks the same whichever kind of stream carried it.
        let el_ns = if el_ns == sns.as_str() {
            INTERNAL_NS
        } else {
            el_ns
        };
        let mut el = Element::bare(local.as_str(), el_ns);
        for (p, name, value) in attrs {
            let attr_ns = match p {
                None => Namespace::NONE,
                Some(p) if p.as_str() == "xml" => Namespace::XML,
                Some(p) => match lookup_ns(&self.scopes, Some(p.as_str())) {
                    Some(uri) => Namespace::from(uri.to_owned()),
                    None => {
                        return Err(StreamError::new(
                            Cond::BadNamespacePrefix,
                            Some("undeclared attribute prefix".to_string()),
                        ))
                    }
                },
            };
            // XML Namespaces §6.3: no two attributes may have the same expanded name.
            if el.attrs_mut().insert(attr_ns, name, value).is_some() {
                return Err(not_well_formed("duplicate attribute"));
            }
        }
        Ok(el)
    }
}

fn not_well_formed(text: &str) -> StreamError {
    StreamError::new(Cond::NotWellFormed, Some(text.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// The opening stream header we send (RFC 6120 §4.7). Attribute values are escaped.
/// `extra_xmlns` adds prefix declarations, e.g. `[("db", ns::DIALBACK)]`.
pub fn header_xml(
    ns: StreamNs,
    from: Option<&str>,
    to: Option<&str>,
    id: Option<&str>,
    version: bool,
    lang: Option<&str>,
    extra_xmlns: &[(&str, &str)],
) -> String {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape_attr(ns.as_str(), &mut out);
    out.extend_from_slice(b"' xmlns:stream='");
    out.extend_from_slice(crate::ns::STREAM.as_bytes());
    out.push(b'\'');
    for (prefix, uri) in extra_xmlns {
        out.extend_from_slice(b" xmlns:");
        escape_attr(prefix, &mut out);
        out.extend_from_slice(b"='");
        escape_attr(uri, &mut out);
        out.push(b'\'');
    }
    for (name, value) in [("from", from), ("to", to), ("id", id)] {
        if let Some(v) = value {
            write_attr(name.as_bytes(), v, &mut out);
        }
    }
    if version {
        out.extend_from_slice(b" version='1.0'");
    }
    if let Some(lang) = lang {
        write_attr(b"xml:lang", lang, &mut out);
    }
    out.push(b'>');
    bytes_to_string(out)
}

/// Serialises one top-level element for a stream whose content namespace is `ns`. Elements in
/// [`INTERNAL_NS`] are written in `ns` (recursively); others keep their namespace.
pub fn encode(el: &Element, ns: StreamNs, out: &mut Vec<u8>) {
    let target = ns.as_str();
    write_element(el, target, target, out);
}

/// [`encode`] into a fresh `String`.
pub fn to_string(el: &Element, ns: StreamNs) -> String {
    let mut out = Vec::with_capacity(256);
    encode(el, ns, &mut out);
    bytes_to_string(out)
}

fn bytes_to_string(out: Vec<u8>) -> String {
    // Everything written comes from `&str`s, split only at ASCII bytes, so this cannot fail;
    // the lossy path is a belt for a broken invariant, not a code path.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn write_attr(name: &[u8], value: &str, out: &mut Vec<u8>) {
    out.push(b' ');
    out.extend_from_slice(name);
    out.extend_from_slice(b"='");
    escape_attr(value, out);
    out.push(b'\'');
}

/// `parent_ns` is the default namespace in scope where `el` is written.
fn write_element(el: &Element, target: &str, parent_ns: &str, out: &mut Vec<u8>) {
    let owned;
    let (el_ns, in_stream_ns): (&str, bool) = if el.has_ns(INTERNAL_NS) {
        (target, false)
    } else if el.has_ns(parent_ns) {
        (parent_ns, false)
    } else if el.has_ns(ns::STREAM) {
        (parent_ns, true)
    } else {
        owned = el.ns();
        (owned.as_str(), false)
    };
    let name = el.name().as_bytes();
    out.push(b'<');
    if in_stream_ns {
        // The stream header declares the `stream` prefix (RFC 6120 §4.8.5).
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(name);
    if !in_stream_ns && el_ns != parent_ns {
        out.extend_from_slice(b" xmlns='");
        escape_attr(el_ns, out);
        out.push(b'\'');
    }
    let mut generated = 0usize;
    for ((attr_ns, attr_name), value) in el.attrs().iter() {
        if attr_ns.is_none() {
            if attr_name.as_str() == "xmlns" {
                // Namespaces are written from the element's namespace, never from a stray
                // attribute that would contradict it.
                continue;
            }
            write_attr(attr_name.as_bytes(), value, out);
        } else if attr_ns.as_str() == rxml::XMLNS_XML {
            out.extend_from_slice(b" xml:");
            out.extend_from_slice(attr_name.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(value, out);
            out.push(b'\'');
        } else {
            // Rare: a namespaced attribute needs a prefix; declare one right here.
            let prefix = format!("a{generated}");
            generated += 1;
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(attr_ns.as_str(), out);
            out.extend_from_slice(b"' ");
            out.extend_from_slice(prefix.as_bytes());
            out.push(b':');
            out.extend_from_slice(attr_name.as_bytes());
            out.extend_from_slice(b"='");
            escape_attr(value, out);
            out.push(b'\'');
        }
    }
    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for node in nodes {
        match node {
            Node::Element(child) => write_element(child, target, el_ns, out),
            Node::Text(text) => escape_text(text, out),
        }
    }
    out.extend_from_slice(b"</");
    if in_stream_ns {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(name);
    out.push(b'>');
}

/// XML 1.0 §2.2: C0 controls other than tab, LF and CR cannot be represented; they are
/// dropped rather than producing a document the peer must reject.
#[inline]
fn is_forbidden_control(b: u8) -> bool {
    b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')
}

fn escape_text(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            // XML 1.0 §2.11: a literal CR would be normalised away by the reader.
            b'\r' => b"&#xD;",
            b if is_forbidden_control(b) => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

fn escape_attr(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
            // XML 1.0 §3.3.3: literal whitespace in attribute values is normalised to spaces.
            b'\t' => b"&#x9;",
            b'\n' => b"&#xA;",
            b'\r' => b"&#xD;",
            b if is_forbidden_control(b) => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}
