//! herald-muc: XEP-0045 multi-user chat rooms as a pure state machine.
//!
//! A [`Room`] takes a stanza addressed to it (or to one of its occupants), its sender's real
//! full JID and the current time, and returns what must happen as [`Out`] actions: stanzas
//! to send (already addressed), a message to archive, history to read from the archive, a
//! MAM query to run, the room to save or forget. It does no I/O, keeps no clock and spawns
//! nothing; herald-server's `features::muc` carries the actions out, in order.
//!
//! What a room remembers is bounded: occupants by `maxusers` (at most [`Limits::max_users`]),
//! sessions per occupant by [`Limits::max_sessions_per_occupant`], affiliations by
//! [`Limits::max_affiliations`], texts by [`Limits::max_field_bytes`] and
//! [`Limits::max_subject_bytes`], and of each occupant's presence only `show`, `status`,
//! `priority`, caps and the vCard photo hash are kept; a room's own vCard (XEP-0486 avatar)
//! by [`Limits::max_vcard_bytes`]. A message is never copied with the
//! room state: its broadcast clones the message once per receiving session.

pub mod config;
mod room;

pub use config::{AllowPm, Defaults, RoomConfig, Whois};
pub use room::{Room, SavedRoom, MAX_PROXIED_IQS};

use herald_proto::Element;

/// Service-wide bounds and policy every room follows.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest `maxusers` an owner may set.
    pub max_users: usize,
    /// Affiliations (owners, admins, members, outcasts) one room keeps.
    pub max_affiliations: usize,
    /// Sessions of one user that may share one nick.
    pub max_sessions_per_occupant: usize,
    /// History stanzas sent on join when the client asks for none in particular.
    pub history_default: usize,
    /// The most history stanzas sent on join, whatever the client asks.
    pub history_max: usize,
    /// Bytes of a subject.
    pub max_subject_bytes: usize,
    /// Bytes of a nick, a room name, description, password, reason or status.
    pub max_field_bytes: usize,
    /// Bytes of a room's vCard (XEP-0486 avatar included), as serialized XML.
    pub max_vcard_bytes: usize,
    /// Bare JIDs that own every room (the service's admins).
    pub service_admins: Vec<String>,
    /// What new rooms start with.
    pub defaults: Defaults,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_users: 1000,
            max_affiliations: 1000,
            max_sessions_per_occupant: 10,
            history_default: 20,
            history_max: 100,
            max_subject_bytes: 1024,
            max_field_bytes: 1024,
            max_vcard_bytes: 65536,
            service_admins: Vec::new(),
            defaults: Defaults {
                public: true,
                persistent: false,
                archive: true,
                max_users: 200,
            },
        }
    }
}

/// A history request from a join (`<history/>`, XEP-0045 §7.2.13), already clamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// The joining session.
    pub to: String,
    /// At most this many messages (the newest).
    pub max_stanzas: usize,
    /// At most this many characters of XML in all (`maxchars`), if asked.
    pub max_chars: Option<usize>,
    /// Only messages at or after this instant, unix micros (`since`, `seconds`).
    pub since: Option<i64>,
}

/// What the caller must do, in order.
#[derive(Debug)]
pub enum Out {
    /// Send this stanza (its `from` and `to` are set).
    Send(Element),
    /// Send this stanza (its `from` set, no `to`) to each of these JIDs: one copy at a time,
    /// so a room of 1,000 occupants holds one message and 1,000 addresses, not 1,000 copies.
    Broadcast {
        /// The stanza.
        stanza: Element,
        /// Its recipients (real full JIDs).
        to: Vec<String>,
    },
    /// The presence of every other occupant, for a joining session (XEP-0045 §7.2.3), each
    /// addressed to it, in order. Up to `max_users` stanzas at once: the caller sends them at
    /// the pace the session takes them, and what the room sends that session afterwards
    /// waits behind them, so their order is kept.
    Occupants {
        /// The joining session (real full JID).
        to: String,
        /// The presences, `to` set.
        presences: Vec<Element>,
    },
    /// Archive this broadcast message in the room's archive, under the room's bare JID.
    Archive {
        /// Its XEP-0359 stanza-id (`by` the room).
        id: String,
        /// The sender's real bare JID.
        with_bare: String,
        /// The sender's occupant JID (`room/nick`).
        with_full: String,
        /// The message as broadcast, without `to`.
        xml: String,
        /// Unix micros.
        timestamp: i64,
    },
    /// Send the joining session the room's history from the archive, each message with a
    /// XEP-0203 `<delay from=room/>`.
    History(HistoryRequest),
    /// Answer this XEP-0313 query (an IQ to the room) from the room's archive. `real_jids`
    /// says whether the asker may filter by a real (bare) JID.
    MamQuery {
        /// The query IQ.
        iq: Element,
        /// Whether the asker may see real JIDs.
        real_jids: bool,
    },
    /// The room's configuration, affiliations, subject or vCard changed: save it if persistent,
    /// forget the saved copy if not.
    Save,
    /// The room is gone (destroyed, or temporary and empty): forget it.
    Gone,
}

/// An affiliation (XEP-0045 §5.2), ordered by rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// None.
    None,
    /// Member.
    Member,
    /// Admin.
    Admin,
    /// Owner.
    Owner,
}

impl Affiliation {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A role (XEP-0045 §5.1), ordered by rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not in the room.
    None,
    /// May not speak in a moderated room.
    Visitor,
    /// May speak.
    Participant,
    /// May kick, grant voice.
    Moderator,
}

impl Role {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}
