//! RFC 6121 §3 presence-subscription state machine, as pure functions over one roster entry.
//!
//! A [`State`] is the user's view of one contact: the subscription (`none`/`to`/`from`/`both`)
//! plus the two pending flags of RFC 6121 Appendix A ("Pending Out" = the user asked and the
//! contact has not answered, shown to clients as `ask='subscribe'`; "Pending In" = the contact
//! asked and the user has not answered). [`outbound`] decides what happens when the user sends
//! a subscription stanza (Appendix A.2), [`inbound`] when the contact's stanza arrives for the
//! user (Appendix A.3), [`removal`] what a roster `remove` sends (§2.5.2). Each answer says what
//! the new state is and which actions the server must take; the server builds the stanzas.
//!
//! Decisions taken here (RFC wording cited at each function):
//! - Outbound `subscribe` and `unsubscribe` are routed in every state (A.2.1/A.2.2 say "yes"
//!   in every row): the contact's server may have lost its state, and it answers a redundant
//!   `subscribe` itself (§3.1.3 rule 2), so short-circuiting would only hide such drift.
//! - Subscription pre-approval (§3.4) is not supported: an outbound `subscribed` with no
//!   pending inbound request changes nothing and is not routed (A.2.3 rows marked \[1\]), and we
//!   do not advertise the `sub` stream feature.
//! - A pending inbound request is not visible in a roster item (§2.1.2 has no attribute for
//!   it), so a change of `pending_in` alone needs storing but no roster push: see the `push`
//!   flags and [`State::is_request_only`].
//!
//! Must not: do I/O, build XML, know about accounts (a `subscribe` to a user that does not
//! exist, §3.1.3 rule 1, is the server's business), or hold more than one entry's state.

use std::fmt;

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sub {
    /// Neither side receives the other's presence.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Sub {
    /// The attribute value as written in a roster item.
    pub fn as_str(self) -> &'static str {
        match self {
            Sub::None => "none",
            Sub::To => "to",
            Sub::From => "from",
            Sub::Both => "both",
        }
    }

    /// Parses a stored or received attribute value; `remove` and unknown values are not a
    /// subscription state, hence `None`.
    pub fn parse(s: &str) -> Option<Sub> {
        match s {
            "none" => Some(Sub::None),
            "to" => Some(Sub::To),
            "from" => Some(Sub::From),
            "both" => Some(Sub::Both),
            _ => None,
        }
    }

    fn from_flags(to: bool, from: bool) -> Sub {
        match (to, from) {
            (false, false) => Sub::None,
            (true, false) => Sub::To,
            (false, true) => Sub::From,
            (true, true) => Sub::Both,
        }
    }
}

/// The user's view of one contact (RFC 6121 §3, Appendix A): subscription plus pending flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct State {
    /// Who receives whose presence.
    pub sub: Sub,
    /// The user asked to subscribe and the contact has not answered ("ask=subscribe").
    pub pending_out: bool,
    /// The contact asked to subscribe and the user has not answered (a stored inbound request).
    pub pending_in: bool,
}

impl State {
    /// "None": no subscription, nothing pending; also what a missing roster item means.
    pub const NONE: State = State::new(Sub::None, false, false);
    /// "None + Pending Out".
    pub const NONE_PENDING_OUT: State = State::new(Sub::None, true, false);
    /// "None + Pending In".
    pub const NONE_PENDING_IN: State = State::new(Sub::None, false, true);
    /// "None + Pending Out+In".
    pub const NONE_PENDING_OUT_IN: State = State::new(Sub::None, true, true);
    /// "To".
    pub const TO: State = State::new(Sub::To, false, false);
    /// "To + Pending In".
    pub const TO_PENDING_IN: State = State::new(Sub::To, false, true);
    /// "From".
    pub const FROM: State = State::new(Sub::From, false, false);
    /// "From + Pending Out".
    pub const FROM_PENDING_OUT: State = State::new(Sub::From, true, false);
    /// "Both".
    pub const BOTH: State = State::new(Sub::Both, false, false);

    /// The nine states of RFC 6121 Appendix A.1, in the appendix's order.
    pub const ALL: [State; 9] = [
        State::NONE,
        State::NONE_PENDING_OUT,
        State::NONE_PENDING_IN,
        State::NONE_PENDING_OUT_IN,
        State::TO,
        State::TO_PENDING_IN,
        State::FROM,
        State::FROM_PENDING_OUT,
        State::BOTH,
    ];

    /// Builds a state from its parts; see [`State::is_valid`].
    pub const fn new(sub: Sub, pending_out: bool, pending_in: bool) -> State {
        State {
            sub,
            pending_out,
            pending_in,
        }
    }

    /// The contact receives the user's presence (`from` or `both`): RFC 6121 §4.2.2 broadcast
    /// targets and §4.3.2 probe answers.
    pub fn contact_gets_presence(&self) -> bool {
        matches!(self.sub, Sub::From | Sub::Both)
    }

    /// The user is subscribed to the contact's presence (`to` or `both`): RFC 6121 §4.2.1
    /// probe targets, and which inbound presence is expected.
    pub fn user_gets_presence(&self) -> bool {
        matches!(self.sub, Sub::To | Sub::Both)
    }

    /// One of the nine states of Appendix A.1: nobody asks for what they already have
    /// (no Pending Out with `to`/`both`, no Pending In with `from`/`both`).
    pub fn is_valid(&self) -> bool {
        let asks_for_what_it_has = (self.pending_out && self.user_gets_presence())
            || (self.pending_in && self.contact_gets_presence());
        !asks_for_what_it_has
    }

    /// The entry exists only because of an unanswered inbound request ("None + Pending In"
    /// where the user never added the contact). RFC 6121 §3.1.3 does not add the requester to
    /// the roster, so the server keeps such an entry out of roster results and pushes, and may
    /// drop it once the request is gone (§3.3.3: "simply remove any record"). Whether the user
    /// added the contact is roster data this module does not see, so callers combine this
    /// with their own "added by the user" knowledge.
    pub fn is_request_only(&self) -> bool {
        *self == State::NONE_PENDING_IN
    }

    /// What a roster item shows of this state: `subscription` and whether `ask='subscribe'`.
    pub fn roster_view(&self) -> (Sub, bool) {
        (self.sub, self.pending_out)
    }

    /// The state's name as written in RFC 6121 Appendix A (e.g. "None + Pending Out+In").
    pub fn name(&self) -> &'static str {
        match (self.sub, self.pending_out, self.pending_in) {
            (Sub::None, false, false) => "None",
            (Sub::None, true, false) => "None + Pending Out",
            (Sub::None, false, true) => "None + Pending In",
            (Sub::None, true, true) => "None + Pending Out+In",
            (Sub::To, false, false) => "To",
            (Sub::To, false, true) => "To + Pending In",
            (Sub::From, false, false) => "From",
            (Sub::From, true, false) => "From + Pending Out",
            (Sub::Both, false, false) => "Both",
            _ => "invalid",
        }
    }

    fn flags(self) -> Flags {
        Flags {
            to: self.user_gets_presence(),
            from: self.contact_gets_presence(),
            out: self.pending_out,
            inb: self.pending_in,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The four subscription presence types (RFC 6121 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    /// Ask for the other side's presence.
    Subscribe,
    /// Approve the other side's request.
    Subscribed,
    /// Stop receiving the other side's presence (or withdraw a request).
    Unsubscribe,
    /// Cancel the other side's subscription (or deny its request).
    Unsubscribed,
}

impl SubKind {
    /// The four kinds, for exhaustive iteration.
    pub const ALL: [SubKind; 4] = [
        SubKind::Subscribe,
        SubKind::Subscribed,
        SubKind::Unsubscribe,
        SubKind::Unsubscribed,
    ];

    /// The presence `type` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }

    /// The kind for a presence `type` attribute value; other presence types are `None`.
    pub fn from_presence_type(s: &str) -> Option<SubKind> {
        match s {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }
}

/// The state as four independent flags, which is how the RFC's rules are phrased.
#[derive(Clone, Copy)]
struct Flags {
    to: bool,
    from: bool,
    out: bool,
    inb: bool,
}

impl Flags {
    fn state(self) -> State {
        State::new(Sub::from_flags(self.to, self.from), self.out, self.inb)
    }
}

/// The user (a local account) sends a subscription stanza to the contact (RFC 6121 §3.1.2,
/// §3.1.5, §3.2.2, §3.3.2 and Appendix A.2 "outbound").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The user's roster state after.
    pub new_state: State,
    /// The state changed (or the item is created): store it.
    pub changed: bool,
    /// What a roster item shows (`subscription`, `ask`) changed, or the item is created: send
    /// a roster push to the user's interested resources. False when only `pending_in` moved,
    /// which no roster item shows.
    pub push: bool,
    /// Send the stanza on to the contact (its server), stamped with the user's bare JID.
    pub route: bool,
    /// The roster item did not exist and must be created (subscribe to someone not in the
    /// roster, §3.1.2).
    pub create_item: bool,
    /// The user cancelled the contact's subscription (outbound `unsubscribed` from
    /// `from`/`both`): send presence `unavailable` from each of the user's available resources
    /// to the contact, BEFORE routing the `unsubscribed` (§3.2.2: "while the user is still
    /// subscribed").
    pub send_unavailable: bool,
    /// The user approved (outbound `subscribed` answering a request): after routing it, send
    /// the user's current presence from each available resource to the contact (§3.1.5).
    pub send_current_presence: bool,
    /// A stored inbound request from the contact was answered: delete it, and stop
    /// redelivering it at login.
    pub remove_request: bool,
}

/// What the user's server does with a subscription stanza the user sends to the contact.
/// `current` is the user's entry for the contact, `None` when there is no roster item.
pub fn outbound(current: Option<State>, kind: SubKind) -> Outbound {
    let old = current.unwrap_or_default();
    let mut f = old.flags();
    let mut route = false;
    let mut send_unavailable = false;
    let mut send_current_presence = false;
    let mut remove_request = false;
    let mut create_item = false;
    match kind {
        SubKind::Subscribe => {
            // A.2.1: routed in every state. §3.1.2: the server creates the item if needed and
            // marks it pending out unless the user is already subscribed ("To", "To + Pending
            // In", "Both": no state change, the contact's server auto-replies).
            route = true;
            create_item = current.is_none();
            if !f.to {
                f.out = true;
            }
        }
        SubKind::Unsubscribe => {
            // A.2.2: routed in every state; §3.3.2: the user's subscription and any pending
            // request of theirs end.
            route = true;
            f.to = false;
            f.out = false;
        }
        SubKind::Subscribed => {
            // §3.1.5 / A.2.3: an approval only means something when the contact asked
            // ("None + Pending In", "None + Pending Out+In", "To + Pending In"). Otherwise it
            // would be a pre-approval (§3.4), which we do not support: ignore, do not route.
            // In "From"/"From + Pending Out"/"Both" §3.4.2 rule 1 says silently ignore anyway.
            if f.inb {
                route = true;
                f.from = true;
                f.inb = false;
                send_current_presence = true;
                remove_request = true;
            }
        }
        SubKind::Unsubscribed => {
            // §3.2.2 / A.2.4: cancels the contact's subscription ("From", "From + Pending Out",
            // "Both") or denies their pending request (the Pending In states); in "None",
            // "None + Pending Out" and "To" there is nothing to cancel: not routed.
            if f.from || f.inb {
                route = true;
                send_unavailable = f.from;
                remove_request = f.inb;
                f.from = false;
                f.inb = false;
            }
        }
    }
    let new_state = f.state();
    Outbound {
        new_state,
        changed: create_item || new_state != old,
        push: create_item || new_state.roster_view() != old.roster_view(),
        route,
        create_item,
        send_unavailable,
        send_current_presence,
        remove_request,
    }
}

/// The contact's subscription stanza arrives for the user (RFC 6121 §3.1.3, §3.1.6, §3.2.3,
/// §3.3.3 and Appendix A.3 "inbound").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The user's entry after; `None` = still no roster item. `Some` with `current == None`
    /// means a request-only entry is created ([`State::is_request_only`]).
    pub new_state: Option<State>,
    /// The state changed: store it.
    pub changed: bool,
    /// What a roster item shows changed: send a roster push to the user's interested
    /// resources (§3.1.6, §3.2.3, §3.3.3). Never set by an inbound `subscribe`, which only
    /// records a pending request (§3.1.3 has no roster push).
    pub push: bool,
    /// Appendix A.3's "DELIVER?" column: deliver the stanza to the user's available resources
    /// (interested resources for `subscribe`), if any are online.
    pub deliver: bool,
    /// A new `subscribe` arrived while no resource is available: keep the complete stanza and
    /// deliver it when the user next has an available resource (§3.1.3 rule 4). Whatever is
    /// stored, the server keeps redelivering at each new available resource while
    /// `pending_in` stays set (§3.1.3: "until the contact either approves or denies"), and
    /// keeps one request per contact.
    pub store_request: bool,
    /// The server answers the contact on the user's behalf, from the user's bare JID:
    /// `subscribed` when the contact re-subscribes while already subscribed (§3.1.3 rule 2,
    /// A.3.1 rows marked *). This machine never asks for `unsubscribed`: the RFC's only case
    /// is a request to a user that does not exist (§3.1.3 rule 1), which the server handles.
    pub auto_reply: Option<SubKind>,
    /// A stored pending request from the contact is now moot (the contact withdrew it with
    /// `unsubscribe`): delete it and stop redelivering it.
    pub remove_request: bool,
    /// The contact unsubscribed from the user's presence while subscribed: send presence
    /// `unavailable` from each of the user's available resources to the contact (§3.3.3).
    pub send_unavailable: bool,
}

/// What the user's server does with a subscription stanza from the contact. `current` is the
/// user's entry for the contact (`None` = no roster item); `user_online` is whether the user
/// has at least one available resource.
pub fn inbound(current: Option<State>, kind: SubKind, user_online: bool) -> Inbound {
    let old = current.unwrap_or_default();
    let mut f = old.flags();
    let mut deliver = false;
    let mut store_request = false;
    let mut auto_reply = None;
    let mut remove_request = false;
    let mut send_unavailable = false;
    match kind {
        SubKind::Subscribe => {
            if f.from {
                // §3.1.3 rule 2 / A.3.1 "From", "From + Pending Out", "Both": the contact
                // already has the subscription (its server may have lost state): answer for
                // the user, do not bother the user.
                auto_reply = Some(SubKind::Subscribed);
            } else if f.inb {
                // A.3.1 "None + Pending In", "None + Pending Out+In", "To + Pending In": the
                // request is already recorded; §3.1.3 keeps and delivers only one.
            } else {
                // §3.1.3 rules 3/4 / A.3.1 "None", "None + Pending Out", "To".
                f.inb = true;
                deliver = true;
                store_request = !user_online;
            }
        }
        SubKind::Subscribed => {
            // §3.1.6 / A.3.3: only an answer to our pending request counts ("None + Pending
            // Out", "None + Pending Out+In", "From + Pending Out"); otherwise silently ignore.
            if f.out {
                f.to = true;
                f.out = false;
                deliver = true;
            }
        }
        SubKind::Unsubscribe => {
            // §3.3.3 / A.3.2: delivered when the contact was subscribed ("From", "From +
            // Pending Out", "Both") or had a pending request (the Pending In states, which the
            // request withdrawal removes); otherwise silently ignored.
            if f.from || f.inb {
                send_unavailable = f.from;
                remove_request = f.inb;
                f.from = false;
                f.inb = false;
                deliver = true;
            }
        }
        SubKind::Unsubscribed => {
            // §3.2.3 / A.3.4: delivered when the user was subscribed ("To", "To + Pending In",
            // "Both") or had asked (the Pending Out states: a denial); otherwise ignored.
            if f.to || f.out {
                f.to = false;
                f.out = false;
                deliver = true;
            }
        }
    }
    let after = f.state();
    // No roster item and nothing to record: there is still no item.
    let new_state = if current.is_none() && after == State::NONE {
        None
    } else {
        Some(after)
    };
    let old_view = current.map(|s| s.roster_view());
    let new_view = new_state.map(|s| s.roster_view());
    Inbound {
        new_state,
        changed: new_state != current,
        // A request-only entry shows nothing in the roster, so creating one pushes nothing.
        push: match (old_view, new_view) {
            (Some(o), Some(n)) => o != n,
            _ => false,
        },
        deliver,
        store_request,
        auto_reply,
        remove_request,
        send_unavailable,
    }
}

/// Roster "remove" by the user (RFC 6121 §2.5.2): what to send to the contact before the item
/// is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Send `unsubscribe`: the user was subscribed to the contact or had asked to be.
    pub send_unsubscribe: bool,
    /// Send `unsubscribed`: the contact was subscribed to the user or had a pending request.
    pub send_unsubscribed: bool,
    /// The contact was receiving the user's presence: send `unavailable` from each available
    /// resource to the contact before the `unsubscribed` (§3.2.2).
    pub send_unavailable: bool,
}

/// What removing the contact from the user's roster sends to the contact. §2.5.2: the server
/// sends `unsubscribe` if the user had a subscription to the contact and `unsubscribed` if the
/// contact had one to the user. Pending requests are withdrawn/denied the same way, because
/// A.2.2 and A.2.4 route those stanzas in the pending states and a request left dangling would
/// resurrect a roster item the user just removed.
pub fn removal(current: State) -> Removal {
    Removal {
        send_unsubscribe: current.user_gets_presence() || current.pending_out,
        send_unsubscribed: current.contact_gets_presence() || current.pending_in,
        send_unavailable: current.contact_gets_presence(),
    }
}
