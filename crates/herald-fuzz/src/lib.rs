//! Fuzz targets for every parser of peer input: one function per target, `fn(&[u8])`, that
//! hands the bytes to the code the server runs on what a client, a peer server, a component
//! or an app server sends, and must never panic. A target may also assert an invariant the
//! server relies on (what we write reads back as what we meant); a failed assertion is a
//! crash like any other.
//!
//! Two drivers run them (see `README.md` beside this file):
//!
//! - `tests/corpus.rs`, a stable harness in `cargo test` (so in CI): every target over every
//!   file of its seed corpus `corpus/<target>/`, then a deterministic mutation pass;
//! - `fuzz/`, a `cargo fuzz` layout for coverage-guided fuzzing with libFuzzer.
//!
//! Where a parser takes an element, the target first decodes the bytes with the server's own
//! stream decoder ([`herald_proto::stream::Decoder`], inside a stream header, with limits), so
//! the parser sees what the server would hand it (namespaces normalised, at most the limits'
//! size and depth) and the fuzzer explores the XML structure; bytes that are not XML give no
//! element and are skipped. Seeds for those targets are bare stanzas without a stream header.
//!
//! | target | parsers covered |
//! |---|---|
//! | `stream` | the XML stream decoder (herald-proto `stream::Decoder`): header, stanzas, limits, restricted XML, fed in chunks of 1–64 bytes; `stream::encode` of every decoded element, which must decode again to the same element |
//! | `framing` | RFC 7395 WebSocket framing (herald-proto `framing::FramedDecoder`): the input split into messages at `0xFF` bytes (never in UTF-8), `<open/>`/`<close/>`, one complete element per message, limits; every element decoded, written through the server's `Framer`, must come out as one standalone message that decodes to the same element |
//! | `negotiate` | the c2s negotiation machine (herald-session `negotiate`, via its `run_bytes` driver): headers, STARTTLS, SASL PLAIN/SCRAM/SCRAM-PLUS (with fixed channel-binding data), throttling, bind, `<resume/>`, with its invariants (no bind before auth, no PLAIN in the clear, no -PLUS without TLS) |
//! | `sasl` | herald-proto `sasl`: PLAIN messages (`parse_plain`), SCRAM and SCRAM-PLUS client-first and client-final (`ScramServer`; -PLUS only bound to a type the connection has, no `y` where -PLUS is offered), base64 payloads, SASLprep of user names, mechanism names |
//! | `sm` | XEP-0198 nonzas (herald-session `sm_nonza`: `<enable/>`, `<r/>`, `<a h/>`, `<resume previd h/>`) against a live `StreamManagement` with queued stanzas, wrap-around counters, hibernation |
//! | `jid` | JID parsing (`Jid`, `BareJid`, `FullJid`; Herald's intake parser `address::jid`, where normalising twice changes nothing), XEP-0016 blocklist matching, component domain ownership, who may answer a push publish |
//! | `mam` | XEP-0313 query (data form fields, dates, RSM) and prefs (`herald-xep` `mam::parse_query`, `parse_prefs`; parsed prefs written and parsed again are the same), archivability, stanza-id stamping |
//! | `roster` | RFC 6121 roster get/set (`roster::parse`) |
//! | `blocking` | XEP-0191 blocklist/block/unblock (`blocking::parse`; a parsed command pushed and parsed again is the same) |
//! | `carbons` | XEP-0280 enable/disable (`carbons::parse_command`), eligibility, `<private/>` stripping, the copies |
//! | `push` | XEP-0357 enable/disable with a publish-options form (herald-push `parse_command`) and the publish built from it, app-server replies (`reply::read`), stanza classification and summary |
//! | `delay` | XEP-0082 DateTime stamps (`delay::parse_stamp`, `format_stamp`; in range, they round-trip), XEP-0203 `<delay/>` adding and stripping of spoofed stamps |
//! | `stanza_error` | stanza errors (`error::parse_stanza_error`, condition and type names), error replies, a peer's `<stream:error/>` (herald-transport `conn::peer_stream_error`) |
//! | `dialback` | XEP-0220 `db:result`/`db:verify` as an incoming s2s stream receives them (verdicts, key checks, the answers built from the peer's attributes) |
//! | `component` | the XEP-0114 handshake as the component listener reads it (header, `<handshake/>` digest) and the component's `from` domains (`component::may_send_as`) |
//! | `profile` | XEP-0054 vCard sets (`vcard::check_set`: size, PHOTO BINVAL decoding; a stored vCard parses back to itself), the XEP-0153 presence stamp (`vcard::stamp`: one `<x/>` at most, a client's `<photo/>` kept), XEP-0049 items (`private::item`) |
//! | `http` | XEP-0363 slot requests (`upload::parse_request`: a parsed slot's name is safe and its size within the limit), HTTP `Range` headers (`upload::range`: a part lies inside the file), content types, slot signatures over arbitrary terms; XEP-0215 requests (`extdisco::filter`) and the answer built from them |
//! | `stanza` | the accessors every session runs on a peer's stanza (`stanza::kind`, `to`, `from`, `strip_spoofed`, `error_reply`, `iq_result`, `Frozen`, which must thaw again) |
//! | `pep` | XEP-0060/0163 requests (`pep::parse`), node configuration and publish-options forms (`configured`, `created_with`, `check_preconditions`; a configuration stored reads back the same), XEP-0115 caps (`caps_of`, `caps_ver`, `verified_features`, `notify_nodes`) |

use std::time::{Duration, Instant};

use herald_proto::address;
use herald_proto::error::{
    error_reply, parse_stanza_error, ErrorType, StanzaErrorCondition, StreamErrorCondition,
};
use herald_proto::jid::{BareJid, FullJid, Jid};
use herald_proto::sasl::{self, Mechanism, ScramHash, ScramServer};
use herald_proto::stream::{self, Decoder, Limits, StreamEvent, StreamNs};
use herald_proto::{ns, Element};
use herald_session::sm::{SmConfig, SmEvent, StreamManagement};
use herald_session::sm_nonza::{self, Answer};
use herald_xep::{
    blocking, caps, carbons, component as xcomp, delay, dialback, mam, pep as xpep, private,
    register, roster, stanza, vcard,
};

/// A fuzz target: bytes in, no panic.
pub type Target = fn(&[u8]);

/// Every target with its name (the name of its corpus folder and of its `fuzz/` binary).
pub const TARGETS: &[(&str, Target)] = &[
    ("stream", stream),
    ("framing", framing),
    ("negotiate", negotiate),
    ("sasl", sasl),
    ("sm", sm),
    ("jid", jid),
    ("mam", mam),
    ("roster", roster),
    ("blocking", blocking),
    ("carbons", carbons),
    ("push", push),
    ("delay", delay),
    ("stanza_error", stanza_error),
    ("dialback", dialback),
    ("component", component),
    ("stanza", stanza),
    ("profile", profile),
    ("register", register),
    ("caps", caps),
    ("http", http),
    ("pep", pep),
    ("muc", muc),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Limits of the decoder that derives elements: the server's defaults but a smaller stanza,
/// so one input cannot cost much.
fn limits() -> Limits {
    Limits {
        max_stanza_bytes: 65_536,
        ..Limits::default()
    }
}

/// At most this many elements are taken from one input.
const MAX_ELEMENTS: usize = 64;

/// The stream header the elements of an input are decoded in.
fn header(ns: StreamNs) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' \
         xmlns:db='{}' to='localhost' version='1.0'>",
        ns.as_str(),
        ns::STREAM,
        ns::DIALBACK
    )
}

/// The top-level elements of `data` decoded as the content of a stream whose namespace is
/// `ns`, up to the first decoding error or the end of the stream.
pub fn elements_in(data: &[u8], ns: StreamNs) -> Vec<Element> {
    let mut d = Decoder::new(limits());
    d.feed(header(ns).as_bytes());
    d.feed(data);
    let mut out = Vec::new();
    while out.len() < MAX_ELEMENTS {
        match d.next_event() {
            Ok(Some(StreamEvent::Stanza(el))) => out.push(el),
            Ok(Some(StreamEvent::Header(_))) => {}
            Ok(Some(StreamEvent::End)) | Ok(None) | Err(_) => break,
        }
    }
    out
}

/// [`elements_in`] a client stream.
pub fn elements(data: &[u8]) -> Vec<Element> {
    elements_in(data, StreamNs::Client)
}

/// The element and its child elements: a payload parser is tried on both, so it sees both a
/// whole IQ and a bare payload.
fn with_children(el: &Element) -> impl Iterator<Item = &Element> {
    std::iter::once(el).chain(el.children())
}

/// Serialises as the server would before writing or storing (the result is not checked: a
/// `None` is handled by callers).
fn write(el: &Element) {
    let _ = stanza::to_xml(el);
    let mut out = Vec::new();
    stream::encode(el, StreamNs::Client, &mut out);
}

/// The XML stream decoder. The first byte chooses the chunk size (1–64 bytes per `feed`),
/// small limits (bit 6) and whether the decoder shrinks between stanzas (bit 7), as the
/// server's idle connections do; the rest is the stream, header included.
pub fn stream(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(flags & 0x3f) + 1;
    let lim = if flags & 0x40 != 0 {
        Limits {
            max_stanza_bytes: 512,
            max_depth: 4,
            max_attributes: 4,
            max_header_bytes: 256,
        }
    } else {
        limits()
    };
    let mut d = Decoder::new(lim.clone());
    let mut ns = StreamNs::Client;
    for piece in rest.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(StreamEvent::Header(h))) => ns = h.ns.unwrap_or(ns),
                Ok(Some(StreamEvent::Stanza(el))) => {
                    let _ = stanza::to_xml(&el);
                    // What the server writes must read back as the element it meant.
                    let mut out = header(ns).into_bytes();
                    stream::encode(&el, ns, &mut out);
                    let mut again = Decoder::new(Limits {
                        max_stanza_bytes: usize::MAX,
                        max_header_bytes: usize::MAX,
                        max_attributes: usize::MAX,
                        max_depth: usize::MAX,
                    });
                    again.feed(&out);
                    let mut back = None;
                    while let Ok(Some(ev)) = again.next_event() {
                        if let StreamEvent::Stanza(e) = ev {
                            back = Some(e);
                            break;
                        }
                    }
                    // Compared as text: chunked feeding may split a text node in two.
                    assert_eq!(
                        back.as_ref().and_then(stanza::to_xml),
                        stanza::to_xml(&el),
                        "encode does not round-trip"
                    );
                    if flags & 0x80 != 0 && d.is_idle() {
                        d.shrink();
                    }
                }
                Ok(Some(StreamEvent::End)) => return,
                Ok(None) => break,
                Err(e) => {
                    // A failed decoder stays failed, with the same error.
                    assert_eq!(d.next_event(), Err(e), "a failed decoder changed");
                    return;
                }
            }
        }
    }
}

/// RFC 7395 framing: the first byte chooses small limits (bit 0x40); the rest is split into
/// WebSocket messages at `0xFF` bytes (which UTF-8 never holds).
pub fn framing(data: &[u8]) {
    use herald_proto::framing::{FramedDecoder, Framer, OutFrame};
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let lim = if flags & 0x40 != 0 {
        Limits {
            max_stanza_bytes: 512,
            max_depth: 4,
            max_attributes: 4,
            max_header_bytes: 256,
        }
    } else {
        limits()
    };
    let mut d = FramedDecoder::new(lim, StreamNs::Client);
    for msg in rest.split(|&b| b == 0xff).take(MAX_ELEMENTS) {
        if let Err(e) = d.feed_message(msg) {
            // A failed decoder stays failed, with the same error.
            assert_eq!(d.next_event(), Err(e), "a failed framed decoder changed");
            return;
        }
        match d.next_event() {
            Ok(Some(StreamEvent::Stanza(el))) => {
                // What the server writes is one message per element, standalone, and reads
                // back as the element it meant.
                let mut bytes = Vec::new();
                stream::encode(&el, StreamNs::Client, &mut bytes);
                let mut frames = Vec::new();
                Framer::new(StreamNs::Client).push(&bytes, &mut frames);
                let [OutFrame::Text(text)] = frames.as_slice() else {
                    panic!("one element framed as {frames:?}");
                };
                let mut again = FramedDecoder::new(
                    Limits {
                        max_stanza_bytes: usize::MAX,
                        max_header_bytes: usize::MAX,
                        max_attributes: usize::MAX,
                        max_depth: usize::MAX,
                    },
                    StreamNs::Client,
                );
                let open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
                assert!(again.feed_message(open.as_bytes()).is_ok());
                assert!(matches!(
                    again.next_event(),
                    Ok(Some(StreamEvent::Header(_)))
                ));
                assert_eq!(again.feed_message(text.as_bytes()), Ok(()), "{text}");
                let back = match again.next_event() {
                    Ok(Some(StreamEvent::Stanza(e))) => Some(e),
                    _ => None,
                };
                assert_eq!(
                    back.as_ref().and_then(stanza::to_xml),
                    stanza::to_xml(&el),
                    "framing does not round-trip: {text}"
                );
            }
            Ok(Some(StreamEvent::End)) => return,
            Ok(Some(StreamEvent::Header(_)) | None) => {}
            Err(e) => panic!("feed_message succeeded, next_event failed: {e:?}"),
        }
    }
}

/// The c2s negotiation machine, driven by herald-session's own test driver
/// ([`herald_session::negotiate::run_bytes`]): the first byte chooses the options, the
/// second the chunk size, the rest is what the client sends.
pub fn negotiate(data: &[u8]) {
    herald_session::negotiate::run_bytes(data, Instant::now());
}

/// The known account's password in [`sasl`] and its keys' salt and iteration count (one, so
/// a successful exchange costs nothing).
const SASL_PASSWORD: &str = "pencil";
const SASL_SALT: &[u8] = b"salt";
/// The fixed SCRAM server nonce of [`sasl()`].
pub const SCRAM_NONCE: &str = "fuzznonce";

/// SASL messages. The first byte chooses SHA-1 (bit 0), whether the account exists
/// (bit 1), a -PLUS exchange (bit 2) and whether the connection has channel-binding data
/// (bit 3: `tls-exporter` and `tls-server-end-point`, fixed bytes); the rest is a client-first message, a newline, and a client-final message (the
/// whole rest is also tried as a PLAIN message and as `<auth/>` character data).
pub fn sasl(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if let Ok((_, authcid, password)) = sasl::parse_plain(rest) {
        if authcid == "user" {
            if let Ok(keys) = sasl::derive_keys(ScramHash::Sha256, SASL_PASSWORD, SASL_SALT, 1) {
                let _ = sasl::verify_password(&keys, &password);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = sasl::decode_payload(text);
        let _ = sasl::saslprep_username(text);
        let _ = Mechanism::from_name(text);
    }
    let (first, last) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let hash = if flags & 1 != 0 {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    };
    let bindings = if flags & 8 != 0 {
        sasl::ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: Some(vec![2; 32]),
        }
    } else {
        sasl::ChannelBindings::default()
    };
    let plus = flags & 4 != 0;
    let mut server =
        ScramServer::with_nonce(hash, SCRAM_NONCE).channel_binding(plus, bindings.clone());
    if server.client_first(first).is_err() {
        assert!(server.client_final(last).is_err(), "final without a first");
        return;
    }
    // A -PLUS exchange goes on only bound to a type the connection has, and "y" only where
    // no -PLUS is offered.
    if plus {
        let name = first
            .strip_prefix(b"p=")
            .and_then(|r| r.split(|&b| b == b',').next());
        let name = name.and_then(|n| std::str::from_utf8(n).ok()).unwrap_or("");
        assert!(bindings.get(name).is_some(), "-PLUS without binding");
    } else {
        assert!(
            !first.starts_with(b"y") || bindings.is_empty(),
            "downgrade accepted"
        );
    }
    let keys = (flags & 2 != 0)
        .then(|| sasl::derive_keys(hash, SASL_PASSWORD, SASL_SALT, 1).ok())
        .flatten();
    let known = keys.is_some();
    let server_first = server.server_first(keys);
    assert!(server_first.starts_with(b"r="), "server-first");
    if let Ok(v) = server.client_final(last) {
        // Only a proof made with the password of an existing account is accepted.
        assert!(known, "an unknown user authenticated");
        assert!(v.starts_with(b"v="), "server-final");
    }
    // The exchange is over: a second final message is refused.
    assert!(server.client_final(last).is_err(), "SCRAM accepted twice");
}

/// XEP-0198 nonzas on a bound stream. The first byte chooses counters near the 2^32 wrap
/// (bit 0), an already enabled, resumable machine (bit 1) and a queue limit (bits 4–7); each
/// element of the rest is handled as the session does: a stanza counts as inbound and queues
/// one outbound stanza, an `urn:xmpp:sm:3` element is a nonza, and a `<resume/>` is also
/// tried against a hibernated copy of the machine.
pub fn sm(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let cfg = SmConfig {
        max_queue: usize::from(flags >> 4) + 1,
        max_queue_bytes: 64 * 1024,
        request_after: 2,
        request_idle: Duration::from_secs(1),
        max_ack_delay: Duration::from_secs(5),
        hibernation_timeout: Duration::from_secs(60),
    };
    let hibernation = cfg.hibernation_timeout;
    let mut sm: StreamManagement<u32> = match (flags & 1 != 0, flags & 2 != 0) {
        (false, false) => StreamManagement::new(cfg),
        (wrap, resume) => {
            let (i, o) = if wrap {
                (u32::MAX - 2, u32::MAX - 1)
            } else {
                (0, 0)
            };
            StreamManagement::with_counters(cfg, resume, i, o)
        }
    };
    let mut now = Instant::now();
    let mut next = 0u32;
    for el in elements(rest) {
        now += Duration::from_millis(700);
        if stanza::kind(&el).is_some() {
            sm.on_inbound_stanza();
            if sm.is_enabled() && !sm.is_full() {
                let _ = sm.push_outbound(next, now);
                next = next.wrapping_add(1);
            }
        }
        if el.is("resume", ns::SM) {
            if let Ok((previd, h)) = sm_nonza::resume_request(&el) {
                let mut asleep = sm.clone();
                if asleep.hibernate(now).is_ok() {
                    let _ = sm_nonza::resume(&mut asleep, h, &previd, now);
                }
            }
        }
        let before = sm.unacked_len();
        match sm_nonza::on_nonza(&mut sm, &el, hibernation, || "sm-id".to_owned(), now) {
            Some(Ok(Answer::Acked { acked, .. })) => {
                assert_eq!(before - acked.len(), sm.unacked_len(), "acked count");
            }
            Some(Ok(Answer::HandledCountTooHigh(_))) | Some(Err(_)) => return,
            Some(Ok(_)) | None => {}
        }
        for ev in sm.poll(now) {
            if ev == SmEvent::RequestAck {
                sm.request_sent(now);
            }
        }
    }
}

/// JIDs. The input is split at the first newline into two strings `a` and `b` (both the
/// whole input without one); each is parsed every way the server parses addresses, and the
/// pair goes through the functions that compare two addresses.
pub fn jid(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = s.split_once('\n').unwrap_or((s, s));
    for x in [a, b] {
        let _ = herald_push::classify::bare_jid(x);
        // Herald hands the crate only what `address::bounded` lets through (IDNA is slow on
        // over-long labels); fuzzing the crate beyond that would measure nothing we run.
        if address::bounded(x).is_err() {
            assert!(address::jid(x).is_err());
            continue;
        }
        // The crate's own parser may accept what it cannot read back (`ß--ǟ`): only Herald's
        // intake parser, which every peer address goes through, must be stable.
        let _ = Jid::new(x).map(|j| j.to_bare().to_string());
        if let Ok(j) = address::jid(x) {
            // Stored and compared in normalised form: normalising again changes nothing.
            let text = j.to_string();
            assert_eq!(
                address::jid(&text).as_ref(),
                Ok(&j),
                "JID not stable: {x:?}"
            );
            let _ = j.to_bare().to_string();
        }
        let _ = BareJid::new(x);
        let _ = FullJid::new(x);
    }
    let blocked = blocking::Blocklist::new(address::jid(b).map(|j| j.to_string()));
    let _ = blocked.matches(a);
    let _ = xcomp::owns(a, b);
    let _ = xcomp::may_send_as(a, b, false, [b, a].into_iter());
    let _ = herald_push::reply::answers_for(a, b);
}

/// XEP-0313 query and preferences, tried on every element of the input and its children.
pub fn mam(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            let limits = mam::QueryLimits {
                max_page: 100,
                max_ids: 100,
                max_count: 1000,
            };
            if let Ok(req) = mam::parse_query(c, &limits) {
                assert!(req.query.max <= 100, "page larger than the maximum");
                write(&mam::query_form(req.ns));
            }
            if let Ok(p) = mam::parse_prefs(c) {
                let _ = mam::should_archive(&p, "roster", "juliet@capulet.lit", true);
                let written = mam::prefs_element(&c.ns(), &p, "always");
                write(&written);
                // What we store and send back reads as what was asked.
                let again = mam::parse_prefs(&written).map(|q| (q.always, q.never));
                assert_eq!(again, Ok((p.always.clone(), p.never.clone())), "prefs");
            }
        }
        let _ = mam::is_archivable(&el);
        let mut stamped = el.clone();
        mam::stamp_stanza_id(&mut stamped, "user@localhost", "archive-id");
        write(&stamped);
    }
}

/// RFC 6121 roster requests, tried on every element of the input and its children.
pub fn roster(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            let _ = roster::parse(c, 1024, 32);
        }
    }
}

/// XEP-0363 slot requests and the HTTP headers the upload side reads, XEP-0215 requests.
pub fn http(data: &[u8]) {
    use herald_xep::{extdisco, upload};
    for el in elements(data) {
        for c in with_children(&el) {
            if let Ok(r) = upload::parse_request(c, 1000) {
                assert!(upload::valid_filename(&r.filename), "{:?}", r.filename);
                assert!((1..=1000).contains(&r.size));
                assert_eq!(
                    upload::normalize_content_type(&r.content_type).as_deref(),
                    Some(r.content_type.as_str())
                );
            }
            let f = extdisco::filter(c);
            let cred = extdisco::credential("k", "a@b", 0, 60);
            write(&extdisco::answer("services", "h", 1, &cred, "", &f));
        }
    }
    let text = String::from_utf8_lossy(data);
    for len in [0, 1, 10, u64::MAX] {
        if let upload::Range::Part { start, end } = upload::range(Some(&text), len) {
            assert!(start <= end && end < len, "{text:?} {len}: {start}-{end}");
        }
    }
    let _ = upload::normalize_content_type(&text);
    let terms = upload::SlotTerms {
        id: "0123456789abcdef0123456789abcdef".into(),
        filename: text.to_string(),
        size: data.len() as u64,
        content_type: "text/plain".into(),
        owner: "a@b".into(),
        expires: 0,
    };
    assert!(
        !terms.verify(b"key", &text),
        "a signature from the input verified"
    );
    assert!(terms.verify(b"key", &terms.sign(b"key")));
}

/// XEP-0191 blocking commands, tried on every element of the input and its children.
pub fn blocking(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            let Ok(cmd) = blocking::parse(c) else {
                continue;
            };
            let push = blocking::push_element(&cmd);
            write(&push);
            if cmd != blocking::BlockCmd::List {
                // The push the user's other resources get reads as the command.
                let mut iq = stanza::new("iq", stream::INTERNAL_NS, &[("type", "set")]);
                iq.append_child(push);
                assert_eq!(blocking::parse(&iq), Ok(cmd), "blocking push");
            }
        }
    }
}

/// XEP-0054 vCards, the XEP-0153 stamp and XEP-0049 items, on every element and child.
pub fn profile(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            if let Ok(checked) = vcard::check_set(c, 4096) {
                assert!(checked.xml.len() <= 4096, "vCard over the bound");
                if c.is("vCard", ns::VCARD) {
                    assert_eq!(vcard::parse_stored(&checked.xml).as_ref(), Some(c), "vCard");
                }
            }
            let sent = vcard::advertised(c);
            for avatar in [
                vcard::Avatar::NoVcard,
                vcard::Avatar::NoPhoto,
                vcard::Avatar::Sha1("ab".into()),
            ] {
                let mut p = c.clone();
                let changed = vcard::stamp(&mut p, &avatar);
                write(&p);
                let xs = p.children().filter(|x| x.is("x", ns::VCARD_UPDATE)).count();
                if changed {
                    assert_eq!(xs, 1, "one <x/> after a stamp");
                }
                // A <photo> the client sent is never replaced.
                if sent.is_some() {
                    assert!(!changed, "stamp replaced the client's photo");
                }
            }
            if let Ok((item, name, ns)) = private::item(c) {
                assert_eq!((item.name(), item.ns()), (name.as_str(), ns));
                write(&private::result(None, item));
            }
        }
    }
}

/// XEP-0280 carbons: commands, eligibility and the copies of a peer's message.
pub fn carbons(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            let _ = carbons::parse_command(c);
        }
        let eligible = carbons::is_eligible(&el);
        let _ = carbons::is_carbon(&el);
        let mut private = el.clone();
        let _ = carbons::strip_private(&mut private);
        if eligible {
            let copy = carbons::received_copy("user@localhost", "user@localhost/b", &el);
            assert!(!carbons::is_eligible(&copy), "a carbon is copied again");
            write(&copy);
            write(&carbons::sent_copy(
                "user@localhost",
                "user@localhost/b",
                &el,
            ));
        }
    }
}

/// XEP-0357: enable/disable requests (and the publish built from an enable's form), an app
/// server's replies, and what the push engine reads of a stanza.
pub fn push(data: &[u8]) {
    const OWN: &str = "user@localhost/phone";
    for el in elements(data) {
        for c in with_children(&el) {
            if let Ok(herald_push::PushCommand::Enable {
                jid,
                node,
                publish_options,
            }) = herald_push::parse_command(c, OWN)
            {
                let summary = herald_push::summarize(&el);
                let notice = herald_push::Notice {
                    count: 1,
                    sender: summary.sender,
                    body: summary.body,
                    priority: Some(herald_push::Priority::High),
                };
                let key = herald_push::engine::RegKey { jid, node };
                write(&herald_push::build_publish(
                    "localhost",
                    "push-1",
                    &key,
                    &notice,
                    publish_options.as_ref(),
                ));
            }
        }
        let _ = herald_push::reply::read(&el);
        let _ = herald_push::classify(&el);
        let _ = herald_push::caused_by(&el, OWN);
        let classifier = herald_push::Classifier {
            extra_important: vec![("urn:example".to_owned(), "ring".to_owned())],
        };
        let _ = classifier.classify(&el);
        let _ = classifier.csi_may_hold(&el);
    }
}

/// Earliest and latest instants a four-digit XEP-0082 year can express (herald-xep's range).
const STAMP_MIN: i64 = -62_167_219_200_000_000;
const STAMP_MAX: i64 = 253_402_300_799_999_999;

/// XEP-0082 stamps and XEP-0203 `<delay/>`: the input as a stamp, its first eight bytes as
/// an instant, and its elements (their `<delay stamp/>`s parsed, a delay added, spoofed
/// ones stripped).
pub fn delay(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(t) = delay::parse_stamp(s) {
            if (STAMP_MIN..=STAMP_MAX).contains(&t) {
                assert_eq!(
                    delay::parse_stamp(&delay::format_stamp(t)),
                    Some(t),
                    "{s:?}"
                );
            }
        }
    }
    if let Some(b) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let t = i64::from_le_bytes(b);
        let text = delay::format_stamp(t);
        assert_eq!(
            delay::parse_stamp(&text),
            Some(t.clamp(STAMP_MIN, STAMP_MAX)),
            "{text}"
        );
    }
    for el in elements(data) {
        for d in el.children().filter(|c| c.is("delay", ns::DELAY)) {
            let _ = d.attr("stamp").map(delay::parse_stamp);
        }
        let mut el = el;
        let _ = stanza::strip_spoofed(&mut el, |d| d.eq_ignore_ascii_case("localhost"));
        delay::add_delay(&mut el, "localhost", 1_700_000_000_000_000);
        write(&el);
    }
}

/// Stanza and stream errors a peer sends, and the error replies the server builds.
pub fn stanza_error(data: &[u8]) {
    for el in elements(data) {
        let _ = parse_stanza_error(&el);
        let _ = herald_transport::conn::peer_stream_error(&el);
        for c in with_children(&el) {
            let _ = StreamErrorCondition::parse(c.name());
            let _ = StanzaErrorCondition::parse(c.name());
            let _ = c.attr("type").map(ErrorType::parse);
        }
        for cond in [
            StanzaErrorCondition::ServiceUnavailable,
            StanzaErrorCondition::ResourceConstraint,
        ] {
            if let Some(reply) = error_reply(&el, cond, Some(ErrorType::Wait), Some("text")) {
                // What we send back reads as the error we meant.
                assert_eq!(
                    parse_stanza_error(&reply),
                    Some((ErrorType::Wait, Some(cond))),
                    "error reply"
                );
                write(&reply);
            }
        }
    }
}

/// XEP-0220 dialback elements on an incoming s2s stream, handled as `s2s::incoming` and
/// `s2s::outgoing` do: attributes read, the key checked, the verdict read, and the answers
/// built from the peer's attributes written.
pub fn dialback(data: &[u8]) {
    const SECRET: &[u8] = b"dialback-secret";
    for el in elements_in(data, StreamNs::Server) {
        if !el.has_ns(ns::DIALBACK) {
            continue;
        }
        let from = el.attr("from").unwrap_or_default().to_ascii_lowercase();
        let to = el.attr("to").unwrap_or_default().to_ascii_lowercase();
        let id = el.attr("id").unwrap_or_default();
        let _ = BareJid::new(&from).map(|j| j.node().is_none());
        let verdict = dialback::verdict_of(&el);
        let text = el.text();
        let ok = dialback::check(SECRET, &to, &from, id, &text);
        // The key we would give is accepted, whatever its case of domain names.
        let key = dialback::key(SECRET, &to, &from, id);
        assert!(dialback::check(SECRET, &to, &from, id, &key), "own key");
        let mut out = Vec::new();
        match el.name() {
            "result" => {
                stream::encode(
                    &dialback::result_answer(&to, &from, verdict),
                    StreamNs::Server,
                    &mut out,
                );
                stream::encode(
                    &dialback::result_not_served(&to, &from),
                    StreamNs::Server,
                    &mut out,
                );
                stream::encode(
                    &dialback::result_request(&to, &from, text.trim()),
                    StreamNs::Server,
                    &mut out,
                );
            }
            "verify" => {
                let v = if ok {
                    dialback::Verdict::Valid
                } else {
                    dialback::Verdict::Invalid
                };
                stream::encode(
                    &dialback::verify_answer(&from, &to, id, v),
                    StreamNs::Server,
                    &mut out,
                );
                stream::encode(
                    &dialback::verify_request(&to, &from, id, text.trim()),
                    StreamNs::Server,
                    &mut out,
                );
            }
            _ => {}
        }
    }
}

/// An external component's stream as the component listener reads it: the header (which
/// must be `jabber:component:accept` for `comp.localhost`), the `<handshake/>` digest over
/// the stream id, then the `from` domains of its stanzas. The input is the whole stream,
/// header included.
pub fn component(data: &[u8]) {
    const DOMAIN: &str = "comp.localhost";
    const SECRET: &str = "component-secret";
    const STREAM_ID: &str = "component-stream";
    let mut d = Decoder::new(limits());
    d.feed(data);
    let mut shook = false;
    let mut seen = 0;
    while seen < MAX_ELEMENTS {
        seen += 1;
        let el = match d.next_event() {
            Ok(Some(StreamEvent::Header(h))) => {
                if h.ns != Some(StreamNs::Component)
                    || !h.to.is_some_and(|t| t.eq_ignore_ascii_case(DOMAIN))
                {
                    return;
                }
                continue;
            }
            Ok(Some(StreamEvent::Stanza(el))) => el,
            Ok(Some(StreamEvent::End)) | Ok(None) | Err(_) => return,
        };
        if !shook {
            if el.name() != "handshake" {
                return;
            }
            let expected = xcomp::handshake_digest(STREAM_ID, SECRET);
            shook = expected == el.text().trim().to_ascii_lowercase();
            if !shook {
                return;
            }
            continue;
        }
        let mut el = el;
        if let Ok(Some(from)) = stanza::from(&el) {
            let domain = from.domain().as_str();
            let _ = xcomp::may_send_as(
                DOMAIN,
                domain,
                domain.eq_ignore_ascii_case("localhost"),
                ["comp.localhost", "sub.comp.localhost"].into_iter(),
            );
        }
        let _ = stanza::strip_spoofed(&mut el, |d| d.eq_ignore_ascii_case("localhost"));
        let mut out = Vec::new();
        stream::encode(&el, StreamNs::Client, &mut out);
    }
}

/// The stanza accessors every session runs on what a peer sends.
pub fn stanza(data: &[u8]) {
    for el in elements(data) {
        let _ = stanza::kind(&el);
        let _ = stanza::typ(&el);
        let _ = stanza::to(&el);
        let _ = stanza::from(&el);
        let _ = stanza::payload(&el);
        let _ = stanza::error(&el, StanzaErrorCondition::ServiceUnavailable, None);
        write(&stanza::iq_result(&el, stanza::payload(&el).cloned()));
        // A session keeps a client's last presence frozen; it must thaw. (Only stanzas are
        // frozen: an element in no namespace writes as text minidom will not parse back.)
        let frozen = stanza::kind(&el).and_then(|_| stanza::Frozen::new(&el));
        if let Some(frozen) = frozen {
            assert!(frozen.thaw().is_some(), "frozen element does not thaw");
            assert!(stanza::Frozen::from_saved(frozen.as_str()).is_some());
        }
        let mut el = el;
        let _ = stanza::strip_spoofed(&mut el, |d| d.eq_ignore_ascii_case("localhost"));
        write(&el);
    }
}

/// XEP-0077 registration payloads and XEP-0401 tokens, on every element and its children;
/// a name that is accepted is a prepared account JID within the limit.
pub fn register(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            if let register::Submit::Credentials { username, password } = register::parse_submit(c)
            {
                if let Ok(jid) = register::account(&username, "localhost", 16) {
                    let node = jid.node().map(|n| n.to_string()).unwrap_or_default();
                    assert!(!node.is_empty() && node.chars().count() <= 16, "{jid}");
                }
                let _ = register::password(&password, 64);
            }
            let _ = register::preauth_token(c).map(register::token_hash);
        }
    }
}

/// XEP-0115 verification strings of peers' disco#info answers (PEP `+notify` trusts them).
pub fn caps(data: &[u8]) {
    for el in elements(data) {
        for c in with_children(&el) {
            if let Ok(ver) = caps::ver_of_info(c) {
                assert_eq!(caps::ver_of_info(c), Ok(ver), "caps ver is deterministic");
            }
        }
    }
}

/// XEP-0163 PEP requests, node configuration forms and XEP-0115 caps, tried on every element
/// of the input and its children (a client's IQ payloads, a presence's `<c/>`, a caps
/// answer's `<query/>`).
pub fn pep(data: &[u8]) {
    let cap = 16;
    for el in elements(data) {
        for c in with_children(&el) {
            for set in [false, true] {
                if let Err(e) = xpep::parse(c, set) {
                    let _ = e.reply(&el);
                }
            }
            if let Ok(cfg) = xpep::NodeConfig::default().configured(c, cap) {
                assert!(cfg.max_items <= cap, "max_items beyond the cap: {cfg:?}");
                // What the store keeps reads back as the same configuration.
                assert_eq!(
                    xpep::NodeConfig::from_stored(&cfg.to_stored()),
                    Some(cfg.clone())
                );
                write(&cfg.to_form(cap));
            }
            if let Ok(cfg) = xpep::NodeConfig::created_with(Some(c), cap) {
                assert!(cfg.max_items <= cap, "max_items beyond the cap: {cfg:?}");
                // A node made from publish options meets them.
                assert!(cfg.check_preconditions(c, cap).is_ok(), "{cfg:?}");
            }
            let _ = xpep::caps_of(c);
            if let Ok(ver) = xpep::caps_ver(c) {
                let features = xpep::verified_features(c, &ver).unwrap_or_default();
                let _ = xpep::notify_nodes(&features);
            }
        }
    }
}

/// XEP-0045: every element of the input as a stanza to a room (or one of its occupants) from
/// one of three senders (the owner, a local user, a remote one), in order, against one room:
/// joins, messages, private messages, admin and owner requests, configuration forms,
/// invitations, MAM queries, history requests. Every stanza the room sends is serialisable,
/// and the saved room reads back with the same configuration.
pub fn muc(data: &[u8]) {
    use herald_muc::{Limits, Out, Room, RoomConfig};
    const ROOM: &str = "tea@conference.localhost";
    const SENDERS: [&str; 3] = ["o@localhost/a", "u@localhost/b", "v@remote.example/c"];
    let lim = Limits {
        max_users: 4,
        max_affiliations: 8,
        max_sessions_per_occupant: 2,
        ..Limits::default()
    };
    let mut room = Room::new(
        ROOM,
        "o@localhost",
        RoomConfig::new(&lim.defaults),
        [3; 32],
        true,
    );
    for (i, el) in elements(data).iter().enumerate() {
        let from = SENDERS[i % SENDERS.len()];
        let nick = stanza::to(el)
            .ok()
            .flatten()
            .and_then(|j| j.resource().map(|r| r.as_str().to_string()));
        let features = [ns::DISCO_INFO, ns::MAM];
        let outs = room.handle(from, nick.as_deref(), el, i == 0, 0, &lim, &features);
        for o in &outs {
            match o {
                Out::Send(e) | Out::Broadcast { stanza: e, .. } => write(e),
                Out::MamQuery { iq, .. } => write(iq),
                Out::Occupants { presences, .. } => presences.iter().for_each(write),
                _ => {}
            }
        }
        assert!(
            room.occupant_count() <= lim.max_users + 2,
            "occupants beyond maxusers"
        );
        if outs.iter().any(|o| matches!(o, Out::Gone)) {
            room = Room::new(
                ROOM,
                "o@localhost",
                RoomConfig::new(&lim.defaults),
                [3; 32],
                false,
            );
        }
        let back = Room::from_saved(ROOM, &room.to_saved(), &lim);
        assert_eq!(back.config(), room.config(), "saved configuration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SCRAM seeds are complete, correct exchanges, so the harness and libFuzzer start
    /// from the success path (the seeds were computed for [`SCRAM_NONCE`] and the salt and
    /// password above).
    #[test]
    fn scram_seeds_authenticate() {
        for (seed, hash) in [
            (
                &include_bytes!("../corpus/sasl/scram256-ok")[..],
                ScramHash::Sha256,
            ),
            (
                &include_bytes!("../corpus/sasl/scram1-ok")[..],
                ScramHash::Sha1,
            ),
        ] {
            let rest = &seed[1..];
            let i = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let mut server = ScramServer::with_nonce(hash, SCRAM_NONCE);
            assert!(server.client_first(&rest[..i]).is_ok());
            let keys = sasl::derive_keys(hash, SASL_PASSWORD, SASL_SALT, 1).ok();
            server.server_first(keys);
            assert!(server.client_final(&rest[i + 1..]).is_ok());
        }
    }

    /// Element-taking targets see the seeds' stanzas, in the client namespace.
    #[test]
    fn elements_are_decoded_in_the_stream_namespace() {
        let els = elements(b"<iq type='get'/><message/>");
        assert_eq!(els.len(), 2);
        assert!(els.iter().all(|e| e.ns() == stream::INTERNAL_NS));
        assert!(elements(b"not xml").is_empty());
        let db = elements_in(
            b"<db:result from='a' to='b'>k</db:result>",
            StreamNs::Server,
        );
        assert!(db.len() == 1 && db[0].is("result", ns::DIALBACK));
    }
}
