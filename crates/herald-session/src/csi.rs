//! XEP-0352 client state indication for ONE session (Prosody's mod_csi_simple model).
//!
//! [`CsiBuffer`] holds unimportant outbound stanzas while the client says it is inactive and
//! releases them, in order, when something important goes out, when the client becomes
//! active, or when the buffer is full. Held stanzas are *not* in the stream-management queue,
//! so they neither count as unacked nor cause a push; the owner feeds what [`CsiBuffer::offer`]
//! returns to stream management and the transport.
//!
//! [`Importance`] is the one classification of "important" stanzas, shared with push
//! (`csi-is-stanza-important` in Prosody), extensible with configured payloads.
//!
//! Must not: decide importance inside the buffer (the caller passes it), touch the SM queue,
//! or drop anything: every offered stanza comes back exactly once, in order.

use std::collections::VecDeque;

use minidom::Element;

/// Stanzas held for one inactive client, generic over the stanza type.
#[derive(Debug, Clone)]
pub struct CsiBuffer<T> {
    max_buffer: usize,
    active: bool,
    held: VecDeque<T>,
}

impl<T> CsiBuffer<T> {
    /// An active buffer that holds at most `max_buffer` stanzas while inactive (default 256).
    pub fn new(max_buffer: usize) -> Self {
        CsiBuffer {
            max_buffer,
            active: true,
            held: VecDeque::new(),
        }
    }

    /// XEP-0352 §4: a session is active until the client says `<inactive/>`.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `<inactive/>`: start holding unimportant stanzas.
    pub fn set_inactive(&mut self) {
        self.active = false;
    }

    /// `<active/>`: returns the held stanzas, oldest first, to deliver now.
    pub fn set_active(&mut self) -> Vec<T> {
        self.active = true;
        self.take_held()
    }

    /// An outbound stanza; returns what to deliver now, in order. Nothing if it was held;
    /// otherwise the held stanzas followed by it (when active, important, or when holding it
    /// would exceed `max_buffer`).
    pub fn offer(&mut self, item: T, important: bool) -> Vec<T> {
        if self.active || important || self.held.len() >= self.max_buffer {
            // Held stanzas go first so the client sees everything in the order it was sent.
            let mut out = self.take_held();
            out.push(item);
            out
        } else {
            self.held.push_back(item);
            Vec::new()
        }
    }

    /// Number of stanzas held.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Remove and return the held stanzas, oldest first (e.g. hibernation expired: the owner
    /// handles them like unacked stanzas). The active/inactive state is unchanged.
    pub fn take_held(&mut self) -> Vec<T> {
        self.held.drain(..).collect()
    }
}

/// Namespaces a stanza wrapper may carry (our internal form may be any of them).
const STANZA_NS: &[&str] = &["jabber:client", "jabber:server", "jabber:component:accept"];

/// Payloads that make a message important whatever else it holds: encrypted content we
/// cannot inspect, calls, invitations.
const IMPORTANT_PAYLOADS: &[(&str, &str)] = &[
    // XEP-0384 OMEMO (legacy and :2)
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    // XEP-0373 OpenPGP for XMPP (OX)
    ("openpgp", "urn:xmpp:openpgp:0"),
    // XEP-0027 legacy PGP
    ("x", "jabber:x:encrypted"),
    // XEP-0380 explicit message encryption
    ("encryption", "urn:xmpp:eme:0"),
    // XEP-0353 Jingle Message Initiation: an incoming call must ring now
    ("propose", "urn:xmpp:jingle-message:0"),
    // XEP-0249 direct MUC invitation
    ("x", "jabber:x:conference"),
];

/// Which outbound stanzas are important enough to wake an inactive client (and to push).
///
/// Follows Prosody's mod_csi_simple: presence available/unavailable/error and chat states,
/// receipts, markers and other bodyless messages are unimportant; messages with a body,
/// subject, encrypted payload, call proposal or invitation, message errors, IQs and
/// subscription presences are important. Carbon copies are judged by the message they carry.
#[derive(Debug, Clone, Default)]
pub struct Importance {
    extra: Vec<(String, String)>,
}

impl Importance {
    /// The built-in classification.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also treat a message carrying a child `name` in namespace `ns` as important
    /// (a configured list, like Prosody's `csi_important_payloads`).
    pub fn with_payload(mut self, name: impl Into<String>, ns: impl Into<String>) -> Self {
        self.extra.push((name.into(), ns.into()));
        self
    }

    /// Whether `stanza` should be delivered to an inactive client now.
    pub fn is_important(&self, stanza: &Element) -> bool {
        match stanza.name() {
            "presence" => {
                // RFC 6121: subscription management needs the user; availability can wait.
                !matches!(stanza.attr("type"), None | Some("unavailable" | "error"))
            }
            "message" => self.message_is_important(unwrap_carbon(stanza).unwrap_or(stanza)),
            // IQs are answers the client waits for, or requests it must answer.
            _ => true,
        }
    }

    fn message_is_important(&self, msg: &Element) -> bool {
        match msg.attr("type") {
            // RFC 6121 §5.2.2: headlines are ephemeral; errors explain a failed send.
            Some("headline") => return false,
            Some("error") => return true,
            _ => {}
        }
        let ns = msg.ns();
        msg.children().any(|c| {
            let cns = c.ns();
            let content = cns == ns || STANZA_NS.contains(&cns.as_str());
            // A subject is the last step of a MUC join.
            (content && matches!(c.name(), "body" | "subject"))
                || IMPORTANT_PAYLOADS
                    .iter()
                    .any(|(name, pns)| c.name() == *name && cns == *pns)
                || self
                    .extra
                    .iter()
                    .any(|(name, pns)| c.name() == name && cns == *pns)
                || is_muc_invite(c)
        })
    }
}

/// XEP-0045 mediated invitation: `<x xmlns='…muc#user'><invite/></x>`.
fn is_muc_invite(c: &Element) -> bool {
    c.is("x", "http://jabber.org/protocol/muc#user") && c.children().any(|i| i.name() == "invite")
}

/// XEP-0280 §6: the message inside `<received/>`/`<sent/>` → `<forwarded/>`.
fn unwrap_carbon(msg: &Element) -> Option<&Element> {
    msg.children()
        .find(|c| (c.name() == "received" || c.name() == "sent") && c.ns() == "urn:xmpp:carbons:2")?
        .get_child("forwarded", "urn:xmpp:forward:0")?
        .children()
        .find(|c| c.name() == "message")
}
