//! One importance classification for every stanza the server might hold back or push.
//!
//! CSI (herald-session asks "is this important?") and push (what goes into the summary
//! form, which coalescing class a stanza falls in, whether a call must ring) share this
//! single judgement so the two can never disagree. It also extracts the [`Summary`]
//! (sender and body) shown in a notification.
//!
//! Must not: look at sessions, registrations or time — it sees one stanza and nothing else.

use minidom::Element;

use herald_proto::ns;

/// Payloads that make a message important although a server cannot read them
/// (clients often send encrypted messages without a body, or with a fallback body).
const ENCRYPTED_PAYLOADS: &[(&str, &str)] = &[
    // OMEMO, legacy Conversations namespace and XEP-0384 versions 0.x and 0.8+.
    (ns::OMEMO_LEGACY, "encrypted"),
    (ns::OMEMO_0, "encrypted"),
    (ns::OMEMO_2, "encrypted"),
    // XEP-0027: legacy OpenPGP.
    (ns::PGP_ENCRYPTED, "x"),
    // XEP-0373: OpenPGP for XMPP (OX).
    (ns::OPENPGP, "openpgp"),
];

/// How much a stanza matters to a sleeping device. Ordered: `Urgent > Important > Unimportant`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Importance {
    /// May wait: presence, chat states, receipts, headlines, sent carbons, subject changes.
    Unimportant,
    /// A human wants to read it: a message with a body or an encrypted payload.
    Important,
    /// Time-critical: an incoming call (Jingle Message Initiation `propose`).
    Urgent,
}

impl Importance {
    /// `true` for [`Importance::Important`] and [`Importance::Urgent`]: the CSI predicate.
    pub fn is_important(self) -> bool {
        self >= Importance::Important
    }
}

/// The classifier, with the operator's extra important payloads.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    /// (namespace, element name) of message payloads configured as important.
    pub extra_important: Vec<(String, String)>,
}

impl Classifier {
    /// XEP-0352: whether a stanza for an inactive client may be held back — only what this
    /// classification deems unimportant, and never subscription presence or IQs, which a
    /// client must see to make progress. The same verdict keeps held stanzas from pushing.
    pub fn csi_may_hold(&self, stanza: &Element) -> bool {
        match stanza.name() {
            "presence" => matches!(stanza.attr("type"), None | Some("unavailable")),
            "message" => self.classify(stanza) == Importance::Unimportant,
            _ => false,
        }
    }

    /// Judges one stanza (a `message`, `presence` or `iq` in the client namespace).
    pub fn classify(&self, stanza: &Element) -> Importance {
        if stanza.name() != "message" {
            // Presence and IQ never wake a device.
            return Importance::Unimportant;
        }
        if stanza.get_child("sent", ns::CARBONS).is_some() {
            // XEP-0280 §6: a sent carbon is the user's own message from another device.
            return Importance::Unimportant;
        }
        match received_carbon(stanza) {
            // XEP-0280 §6: a received carbon is judged by the message it carries.
            Some(inner) => self.classify_message(inner),
            None => self.classify_message(stanza),
        }
    }

    fn classify_message(&self, msg: &Element) -> Importance {
        match msg.attr("type") {
            // RFC 6121 §5.2.2: headlines are ephemeral; errors are not for humans.
            Some("headline") | Some("error") => return Importance::Unimportant,
            _ => {}
        }
        if msg.get_child("propose", ns::JMI).is_some() {
            // XEP-0353: an incoming call must ring now.
            return Importance::Urgent;
        }
        let has_payload = |ns: &str, name: &str| msg.children().any(|c| c.is(name, ns));
        if ENCRYPTED_PAYLOADS
            .iter()
            .any(|(ns, name)| has_payload(ns, name))
        {
            return Importance::Important;
        }
        if self
            .extra_important
            .iter()
            .any(|(ns, name)| has_payload(ns, name))
        {
            return Importance::Important;
        }
        // A groupchat subject change carries a subject and no body (XEP-0045 §8.1), chat
        // states and receipts carry neither: all fall through to Unimportant here.
        if body_text(msg).is_some() {
            Importance::Important
        } else {
            Importance::Unimportant
        }
    }
}

/// Classifies with [`Classifier::default()`] (no extra payloads).
pub fn classify(stanza: &Element) -> Importance {
    Classifier::default().classify(stanza)
}

/// Whether the device of the session `full_jid` caused `stanza` itself, so it tells that
/// device nothing new and must never wake it (RULES: "the device's own echo"):
///
/// - the reflection of its own presence (RFC 6121 §4.2.2: the server sends the user's
///   presence back to the resource that sent it), whatever its type;
/// - an IQ result or error: only ever the answer to a request the device sent;
/// - a message error: the bounce of a message the device sent.
///
/// Anyone else's stanza (another resource's presence, a sent carbon, a message) is not.
pub fn caused_by(stanza: &Element, full_jid: &str) -> bool {
    match stanza.name() {
        "presence" => stanza.attr("from") == Some(full_jid),
        "iq" => matches!(stanza.attr("type"), Some("result") | Some("error")),
        "message" => stanza.attr("type") == Some("error"),
        _ => false,
    }
}

/// Whether a stanza queued for the session `full_jid` must never wake its device: the
/// device's own echo ([`caused_by`]) or a PEP notification ([`is_pep_event`]). What
/// `StanzaInfo::own` means to the engine (RULES.md §5).
pub fn never_wakes(stanza: &Element, full_jid: &str) -> bool {
    caused_by(stanza, full_jid) || is_pep_event(stanza)
}

/// Whether `stanza` is a XEP-0163 PEP notification: a headline carrying a pubsub `<event/>`
/// (avatars, OMEMO device lists, moods, …). It never wakes a device: it is state the
/// client reads when it is back, from the XEP-0198 queue it stays in (or, after a new
/// session, from the last items the server sends at its presence), and a contact's many
/// small updates must not keep a phone awake. Unimportant anyway (a headline).
pub fn is_pep_event(stanza: &Element) -> bool {
    stanza.name() == "message"
        && stanza.attr("type") == Some("headline")
        && stanza
            .children()
            .any(|c| c.is("event", "http://jabber.org/protocol/pubsub#event"))
}

/// Sender and body to show in a push for this stanza.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Bare JID of the sender (of the carried message for received carbons).
    pub sender: Option<String>,
    /// The first non-empty body (of the carried message for received carbons).
    pub body: Option<String>,
}

/// Extracts the [`Summary`] of a stanza; received carbons are unwrapped.
pub fn summarize(stanza: &Element) -> Summary {
    let msg = if stanza.name() == "message" {
        received_carbon(stanza).unwrap_or(stanza)
    } else {
        stanza
    };
    Summary {
        sender: msg.attr("from").map(|f| bare_jid(f).to_owned()),
        body: if msg.name() == "message" {
            body_text(msg)
        } else {
            None
        },
    }
}

/// The bare part of a JID string: everything before the first `/` (RFC 7622 §3.1).
pub fn bare_jid(jid: &str) -> &str {
    match jid.find('/') {
        Some(i) => &jid[..i],
        None => jid,
    }
}

/// The message inside `<received xmlns='urn:xmpp:carbons:2'><forwarded><message/>`.
fn received_carbon(stanza: &Element) -> Option<&Element> {
    let forwarded = stanza
        .get_child("received", ns::CARBONS)?
        .get_child("forwarded", ns::FORWARD)?;
    // The carried message is in the client namespace; tolerate the outer one too in case
    // the caller normalised differently.
    let outer_ns = stanza.ns();
    forwarded
        .children()
        .find(|c| c.name() == "message" && (c.ns() == ns::CLIENT || c.ns() == outer_ns))
}

/// First body with non-whitespace text, in the message's own namespace.
fn body_text(msg: &Element) -> Option<String> {
    let ns = msg.ns();
    msg.children()
        .filter(|c| c.name() == "body" && c.ns() == ns)
        .map(|c| c.text())
        .find(|t| !t.trim().is_empty())
}
