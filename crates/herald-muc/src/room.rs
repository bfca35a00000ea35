//! One room: occupants, affiliations, subject, configuration, and what each stanza to it does.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use herald_proto::error::{ErrorType, StanzaErrorCondition as C};
use herald_proto::ns;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::Element;
use herald_xep::stanza::{self, Kind};
use hmac::{Hmac, Mac};

use crate::config::{self, AllowPm, RoomConfig, Whois};
use crate::{Affiliation, HistoryRequest, Limits, Out, Role};

/// What a persistent room is saved as: its configuration (with subject and the secret its
/// occupant ids derive from) as text, and its affiliations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedRoom {
    /// `key=value` lines.
    pub config: String,
    /// `(bare JID, affiliation)`, every affiliation but `none`.
    pub affiliations: Vec<(String, String)>,
    /// The room's vCard (XEP-0486 avatar) as XML, if an owner set one.
    pub vcard: Option<String>,
}

/// A room's vCard (XEP-0054, set by an owner; XEP-0486 avatar): its XML and the XEP-0153
/// hash of each PHOTO, in order (what disco#info's `muc#roominfo_avatarhash` lists).
struct RoomVcard {
    xml: String,
    hashes: Vec<String>,
}

/// Why a room vCard set is refused.
enum VcardError {
    TooLarge,
    BadPhoto,
}

/// Checks a vCard an owner sets on the room: at most `max_bytes` of XML, every PHOTO's
/// BINVAL base64 (XEP-0486 §6.1: several PHOTOs are one image in several formats, and each
/// is hashed).
fn check_vcard(card: &Element, max_bytes: usize) -> Result<RoomVcard, VcardError> {
    let checked = herald_xep::vcard::check_set(card, max_bytes).map_err(|e| match e {
        herald_xep::vcard::SetError::TooLarge => VcardError::TooLarge,
        herald_xep::vcard::SetError::Invalid => VcardError::BadPhoto,
    })?;
    Ok(RoomVcard {
        hashes: photo_hashes(card).ok_or(VcardError::BadPhoto)?,
        xml: checked.xml,
    })
}

/// The SHA-1 (hex) of each PHOTO's decoded BINVAL; None if one is not base64.
fn photo_hashes(card: &Element) -> Option<Vec<String>> {
    let mut hashes = Vec::new();
    for photo in card.children().filter(|c| c.is("PHOTO", ns::VCARD)) {
        // `photo_hash` reads a vCard's first PHOTO: each is given its own.
        let mut one = Element::bare("vCard", ns::VCARD);
        one.append_child(photo.clone());
        if let Some(h) = herald_xep::vcard::photo_hash(&one).ok()? {
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
    }
    Some(hashes)
}

struct Session {
    /// The session's real full JID.
    jid: String,
    /// Its last presence, cut to what others are shown (no `to`/`from`).
    presence: Element,
}

struct Occupant {
    bare: String,
    role: Role,
    /// Oldest first; the last one's presence is the one shown.
    sessions: Vec<Session>,
}

/// One XEP-0045 room.
pub struct Room {
    jid: String,
    config: RoomConfig,
    affiliations: BTreeMap<String, Affiliation>,
    occupants: BTreeMap<String, Occupant>,
    /// Session full JID → nick.
    by_jid: HashMap<String, String>,
    /// (nick, text) of the last subject change.
    subject: Option<(String, String)>,
    /// The key occupant ids (XEP-0421) are derived with.
    secret: [u8; 32],
    /// Created with `<x xmlns='…muc'/>` and not yet configured (XEP-0045 §10.1.1).
    locked: bool,
    /// IQs forwarded to occupants and not yet answered, by the id they were sent with.
    proxied: HashMap<String, Proxied>,
    /// Source of those ids.
    next_proxy: u64,
    /// Its vCard, if an owner set one (XEP-0486).
    vcard: Option<RoomVcard>,
}

/// An IQ one occupant sent another through the room, awaiting the answer.
struct Proxied {
    /// The asking session's real JID.
    asker: String,
    /// The id it used.
    id: Option<String>,
    /// The real JID the IQ went to (only its answer counts).
    target: String,
    /// When it was sent (unix micros).
    at: i64,
}

/// IQs between occupants awaiting an answer, per room; one more waits (`resource-constraint`).
pub const MAX_PROXIED_IQS: usize = 256;
/// How long an answer to a forwarded IQ is waited for (unix micros).
const PROXY_TTL: i64 = 60_000_000;

/// Extra content of an occupant's `<item/>`.
#[derive(Default)]
struct ItemExtra<'a> {
    nick: Option<&'a str>,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
}

/// The bare form of a JID a peer gave, normalised; None if it is not one.
fn bare_jid(s: &str) -> Option<String> {
    herald_proto::address::jid(s)
        .ok()
        .map(|j| j.to_bare().to_string())
}

fn bare_of(full: &str) -> &str {
    full.split_once('/').map_or(full, |(b, _)| b)
}

fn err(el: &Element, cond: C, text: Option<&str>) -> Vec<Out> {
    stanza::error(el, cond, text)
        .map(Out::Send)
        .into_iter()
        .collect()
}

fn err_typed(el: &Element, cond: C, t: ErrorType, text: Option<&str>) -> Vec<Out> {
    stanza::error_typed(el, cond, t, text)
        .map(Out::Send)
        .into_iter()
        .collect()
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What of a presence an occupant's peers are shown: `show`, `status` (cut to
/// `max_status` bytes), `priority`, XEP-0115 caps and the vCard photo hash.
fn sanitize_presence(el: &Element, max_status: usize) -> Element {
    let mut p = Element::bare("presence", INTERNAL_NS);
    for c in el.children() {
        if c.is("show", INTERNAL_NS) || c.is("priority", INTERNAL_NS) {
            p.append_child(stanza::text(c.name(), INTERNAL_NS, cut(&c.text(), 16)));
        } else if c.is("status", INTERNAL_NS) {
            p.append_child(stanza::text(
                "status",
                INTERNAL_NS,
                cut(&c.text(), max_status),
            ));
        } else if c.is("c", ns::CAPS) {
            let mut caps = Element::bare("c", ns::CAPS);
            for a in ["hash", "node", "ver"] {
                if let Some(v) = c.attr(a) {
                    stanza::set(&mut caps, a, cut(v, 256));
                }
            }
            p.append_child(caps);
        } else if c.is("x", ns::VCARD_UPDATE) {
            let mut x = Element::bare("x", ns::VCARD_UPDATE);
            if let Some(photo) = c.get_child("photo", ns::VCARD_UPDATE) {
                x.append_child(stanza::text(
                    "photo",
                    ns::VCARD_UPDATE,
                    cut(&photo.text(), 64),
                ));
            }
            p.append_child(x);
        }
    }
    p
}

fn status(code: &str) -> Element {
    stanza::new("status", ns::MUC_USER, &[("code", code)])
}

impl Room {
    /// A new room owned by `owner` (a bare JID); `locked` when created with the MUC join
    /// element, until its owner configures it or accepts the defaults.
    pub fn new(jid: &str, owner: &str, config: RoomConfig, secret: [u8; 32], locked: bool) -> Room {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(owner.to_string(), Affiliation::Owner);
        Room {
            jid: jid.to_string(),
            config,
            affiliations,
            occupants: BTreeMap::new(),
            by_jid: HashMap::new(),
            subject: None,
            secret,
            locked,
            proxied: HashMap::new(),
            next_proxy: 0,
            vcard: None,
        }
    }

    /// A room saved by [`Room::to_saved`].
    pub fn from_saved(jid: &str, saved: &SavedRoom, limits: &Limits) -> Room {
        let lines = config::parse_lines(&saved.config);
        let config = RoomConfig::from_saved(&lines, &limits.defaults);
        let mut secret = [0u8; 32];
        let mut subject = None;
        let (mut s_nick, mut s_text) = (String::new(), None);
        for (k, v) in &lines {
            match k.as_str() {
                "secret" => {
                    let bytes: Vec<u8> = (0..v.len() / 2)
                        .filter_map(|i| v.get(2 * i..2 * i + 2))
                        .filter_map(|h| u8::from_str_radix(h, 16).ok())
                        .collect();
                    if bytes.len() == 32 {
                        secret.copy_from_slice(&bytes);
                    }
                }
                "subject_nick" => s_nick = v.clone(),
                "subject" => s_text = Some(v.clone()),
                _ => {}
            }
        }
        if let Some(t) = s_text {
            subject = Some((s_nick, t));
        }
        let affiliations = saved
            .affiliations
            .iter()
            .filter_map(|(j, a)| Some((j.clone(), Affiliation::parse(a)?)))
            .filter(|(_, a)| *a != Affiliation::None)
            .collect();
        // A saved vCard was checked when set; one that no longer reads back counts as none.
        let vcard = saved.vcard.as_deref().and_then(|xml| {
            let card = herald_xep::vcard::parse_stored(xml)?;
            Some(RoomVcard {
                hashes: photo_hashes(&card)?,
                xml: xml.to_string(),
            })
        });
        Room {
            jid: jid.to_string(),
            config,
            affiliations,
            occupants: BTreeMap::new(),
            by_jid: HashMap::new(),
            subject,
            secret,
            locked: false,
            proxied: HashMap::new(),
            next_proxy: 0,
            vcard,
        }
    }

    /// What [`Room::from_saved`] reads back.
    pub fn to_saved(&self) -> SavedRoom {
        let mut text = self.config.to_saved();
        let hex: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        config::push_line(&mut text, "secret", &hex);
        if let Some((nick, s)) = &self.subject {
            config::push_line(&mut text, "subject_nick", nick);
            config::push_line(&mut text, "subject", s);
        }
        SavedRoom {
            config: text,
            affiliations: self
                .affiliations
                .iter()
                .map(|(j, a)| (j.clone(), a.as_str().to_string()))
                .collect(),
            vcard: self.vcard.as_ref().map(|v| v.xml.clone()),
        }
    }

    /// The XEP-0153 hashes of the room's avatar (its vCard's photos); empty without one.
    pub fn avatar_hashes(&self) -> &[String] {
        self.vcard.as_ref().map_or(&[], |v| v.hashes.as_slice())
    }

    /// The room's bare JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Its configuration.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Whether nobody is in it.
    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    /// Occupants (nicks) in it.
    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    /// Whether it waits for its owner's configuration.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Whether `bare` owns it (service admins are not counted).
    pub fn is_owner(&self, bare: &str) -> bool {
        self.affiliations.get(bare) == Some(&Affiliation::Owner)
    }

    /// The subject text, if one was set.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_ref().map(|(_, s)| s.as_str())
    }

    /// `bare`'s affiliation (the service's admins own every room).
    pub fn affiliation(&self, bare: &str, lim: &Limits) -> Affiliation {
        if lim.service_admins.iter().any(|a| a == bare) {
            return Affiliation::Owner;
        }
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// The XEP-0421 occupant id of a real bare JID: an HMAC of it under the room's secret,
    /// the same in every session and across restarts, telling nothing of the JID.
    pub fn occupant_id(&self, bare: &str) -> String {
        let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            // HMAC takes keys of any length; kept total rather than unwrapped.
            Err(_) => return String::new(),
        };
        mac.update(bare.as_bytes());
        let out = mac.finalize().into_bytes();
        base64::engine::general_purpose::STANDARD.encode(&out[..18])
    }

    /// Whether the real full JID `jid` is in the room (under any nick).
    pub fn is_occupant(&self, jid: &str) -> bool {
        self.by_jid.contains_key(jid)
    }

    /// Every session in the room (real full JIDs), for the server to tidy up.
    pub fn sessions(&self) -> impl Iterator<Item = &str> {
        self.by_jid.keys().map(String::as_str)
    }

    /// The room's members (affiliation member, admin or owner; bare JIDs) with no session
    /// in the room: the ones push rule d is about (a hibernated session stays joined, so
    /// its member is not among them).
    pub fn absent_members(&self) -> Vec<&str> {
        let present: std::collections::HashSet<&str> =
            self.occupants.values().map(|o| o.bare.as_str()).collect();
        self.affiliations
            .iter()
            .filter(|(_, a)| **a >= Affiliation::Member)
            .map(|(j, _)| j.as_str())
            .filter(|j| !present.contains(j))
            .collect()
    }

    /// The real bare JID of the occupant `nick`, if in the room.
    pub fn occupant_bare(&self, nick: &str) -> Option<&str> {
        self.occupants.get(nick).map(|o| o.bare.as_str())
    }

    fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{}", self.jid, nick)
    }

    fn role_for(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// Handles a stanza addressed to the room (`nick` None) or to an occupant, from the real
    /// full JID `from` (stamped by the server). `created` says the server has just made the
    /// room for this join; `features` are the IQ features the room serves (disco#info).
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        from: &str,
        nick: Option<&str>,
        el: &Element,
        created: bool,
        now: i64,
        lim: &Limits,
        features: &[&str],
    ) -> Vec<Out> {
        match (stanza::kind(el), nick) {
            (Some(Kind::Presence), Some(n)) => self.presence(from, n, el, created, now, lim),
            (Some(Kind::Presence), None) => {
                if stanza::typ(el) == "error" {
                    return Vec::new();
                }
                // A presence without a nick cannot join (XEP-0045 §7.2.1).
                err(el, C::JidMalformed, Some("a nickname is required"))
            }
            (Some(Kind::Message), None) => self.message(from, el, now, lim),
            (Some(Kind::Message), Some(n)) => self.private_message(from, n, el),
            (Some(Kind::Iq), None) => self.iq(from, el, lim, features),
            (Some(Kind::Iq), Some(n)) => self.iq_to_occupant(from, n, el, now),
            (None, _) => Vec::new(),
        }
    }

    // ---- presence ----

    fn presence(
        &mut self,
        from: &str,
        nick: &str,
        el: &Element,
        created: bool,
        now: i64,
        lim: &Limits,
    ) -> Vec<Out> {
        match stanza::typ(el) {
            "unavailable" => self.leave(from, el, lim),
            "error" => self.error_from_occupant(from, el, lim),
            "" => match self.by_jid.get(from).cloned() {
                Some(current) if current == nick => self.update_presence(from, nick, el, lim),
                Some(current) => self.change_nick(from, &current, nick, el, lim),
                None => self.join(from, nick, el, created, now, lim),
            },
            // Subscriptions and probes mean nothing to a room.
            _ => Vec::new(),
        }
    }

    fn join(
        &mut self,
        from: &str,
        nick: &str,
        el: &Element,
        created: bool,
        now: i64,
        lim: &Limits,
    ) -> Vec<Out> {
        let bare = bare_of(from);
        let aff = self.affiliation(bare, lim);
        let x = el.get_child("x", ns::MUC);
        if nick.len() > lim.max_field_bytes {
            return err(el, C::NotAcceptable, Some("nickname too long"));
        }
        if self.locked && aff != Affiliation::Owner {
            // XEP-0045 §10.1.1: nobody else enters a room awaiting its configuration.
            return err(el, C::ItemNotFound, Some("the room is not configured yet"));
        }
        if aff == Affiliation::Outcast {
            return err(el, C::Forbidden, Some("you are banned from this room"));
        }
        if self.config.members_only && aff < Affiliation::Member {
            return err(el, C::RegistrationRequired, Some("members only"));
        }
        let existing = self.occupants.get(nick);
        if existing.is_some_and(|o| o.bare != bare) {
            return err(el, C::Conflict, Some("this nickname is taken"));
        }
        if let Some(pw) = &self.config.password {
            let given = x
                .and_then(|x| x.get_child("password", ns::MUC))
                .map(|p| p.text());
            if aff < Affiliation::Admin && given.as_deref() != Some(pw.as_str()) {
                return err(el, C::NotAuthorized, Some("a password is required"));
            }
        }
        match existing {
            None if self.occupants.len() >= self.config.max_users && aff < Affiliation::Admin => {
                return err_typed(
                    el,
                    C::ServiceUnavailable,
                    ErrorType::Wait,
                    Some("the room is full"),
                )
            }
            Some(o) if o.sessions.len() >= lim.max_sessions_per_occupant => {
                return err_typed(
                    el,
                    C::ResourceConstraint,
                    ErrorType::Wait,
                    Some("too many sessions under this nickname"),
                )
            }
            _ => {}
        }
        let new_occupant = existing.is_none();
        let session = Session {
            jid: from.to_string(),
            presence: sanitize_presence(el, lim.max_field_bytes),
        };
        let role = self.role_for(aff);
        let occ = self
            .occupants
            .entry(nick.to_string())
            .or_insert_with(|| Occupant {
                bare: bare.to_string(),
                role,
                sessions: Vec::new(),
            });
        occ.sessions.push(session);
        self.by_jid.insert(from.to_string(), nick.to_string());
        let mut out = Vec::new();
        if new_occupant {
            // XEP-0045 §7.2.3: the others' presence first, then ours to them, then our own.
            let joiner_is_mod = role == Role::Moderator;
            let presences: Vec<Element> = self
                .occupants
                .iter()
                .filter(|(n, _)| n.as_str() != nick)
                .map(|(n, o)| {
                    self.presence_of(n, o, from, joiner_is_mod, &[], ItemExtra::default())
                })
                .collect();
            if !presences.is_empty() {
                out.push(Out::Occupants {
                    to: from.to_string(),
                    presences,
                });
            }
        }
        self.broadcast_presence(nick, &mut out, &[], ItemExtra::default(), Some(from));
        let mut codes = vec!["110"];
        if self.config.whois == Whois::Anyone {
            codes.push("100");
        }
        if self.config.archive {
            codes.push("170");
        }
        if created {
            codes.push("201");
        }
        if let Some(o) = self.occupants.get(nick) {
            let p = self.presence_of(nick, o, from, true, &codes, ItemExtra::default());
            out.push(Out::Send(p));
        }
        if self.config.archive && !created {
            if let Some(h) = history_request(x, from, now, lim) {
                out.push(Out::History(h));
            }
        }
        // Last, also in a new room (clients wait for it to know the join is complete).
        out.push(Out::Send(self.subject_message(from)));
        if created && self.config.persistent && !self.locked {
            // An instant room persistent by default is kept from the start (a locked one is
            // saved when its owner configures it).
            out.push(Out::Save);
        }
        out
    }

    fn update_presence(&mut self, from: &str, nick: &str, el: &Element, lim: &Limits) -> Vec<Out> {
        let p = sanitize_presence(el, lim.max_field_bytes);
        if let Some(o) = self.occupants.get_mut(nick) {
            if let Some(i) = o.sessions.iter().position(|s| s.jid == from) {
                // The session that spoke last is the one shown.
                let mut s = o.sessions.remove(i);
                s.presence = p;
                o.sessions.push(s);
            }
        }
        let mut out = Vec::new();
        self.broadcast_presence(nick, &mut out, &[], ItemExtra::default(), None);
        out
    }

    fn change_nick(
        &mut self,
        from: &str,
        old: &str,
        new: &str,
        el: &Element,
        lim: &Limits,
    ) -> Vec<Out> {
        if new.len() > lim.max_field_bytes {
            return err(el, C::NotAcceptable, Some("nickname too long"));
        }
        if self.occupants.contains_key(new) {
            return err(el, C::Conflict, Some("this nickname is taken"));
        }
        if self
            .occupants
            .get(old)
            .is_some_and(|o| o.sessions.len() > 1)
        {
            return err(
                el,
                C::NotAcceptable,
                Some("the nickname is shared by several sessions"),
            );
        }
        let mut out = Vec::new();
        // XEP-0045 §7.6: unavailable from the old nick with 303 and the new one, then the
        // new nick's presence.
        self.broadcast_unavailable(
            old,
            &mut out,
            &["303"],
            ItemExtra {
                nick: Some(new),
                ..Default::default()
            },
            None,
        );
        if let Some(mut o) = self.occupants.remove(old) {
            if let Some(s) = o.sessions.iter_mut().find(|s| s.jid == from) {
                s.presence = sanitize_presence(el, lim.max_field_bytes);
            }
            self.occupants.insert(new.to_string(), o);
        }
        self.by_jid.insert(from.to_string(), new.to_string());
        self.broadcast_presence(new, &mut out, &[], ItemExtra::default(), None);
        out
    }

    /// An error from an occupant's session for what the room sent it: a condition that says
    /// the session is not there (its server bounced a groupchat message, or its presence
    /// errs) removes that session, with status 333, so rooms do not fill with ghosts whose
    /// server lost them. A full inbox (`resource-constraint`) and the like remove nobody.
    pub fn error_from_occupant(&mut self, from: &str, el: &Element, lim: &Limits) -> Vec<Out> {
        if stanza::typ(el) != "error" || !self.by_jid.contains_key(from) {
            return Vec::new();
        }
        if stanza::kind(el) == Some(Kind::Iq) {
            // An error answering a forwarded IQ goes back to the asker.
            return self.iq_answer(from, el);
        }
        let gone = match stanza::kind(el) {
            Some(Kind::Presence) => true,
            Some(Kind::Message) => herald_proto::error::parse_stanza_error(el)
                .and_then(|(_, c)| c)
                .is_some_and(|c| {
                    matches!(
                        c,
                        C::Gone
                            | C::ItemNotFound
                            | C::RecipientUnavailable
                            | C::Redirect
                            | C::RemoteServerNotFound
                            | C::RemoteServerTimeout
                            | C::ServiceUnavailable
                    )
                }),
            _ => false,
        };
        if !gone {
            return Vec::new();
        }
        self.leave_with(from, None, &["333"], lim)
    }

    fn leave(&mut self, from: &str, el: &Element, lim: &Limits) -> Vec<Out> {
        self.leave_with(from, Some(el), &[], lim)
    }

    fn leave_with(
        &mut self,
        from: &str,
        el: Option<&Element>,
        codes: &[&str],
        lim: &Limits,
    ) -> Vec<Out> {
        let Some(nick) = self.by_jid.get(from).cloned() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let status = el
            .and_then(|el| el.get_child("status", INTERNAL_NS))
            .map(|s| cut(&s.text(), lim.max_field_bytes).to_string());
        let last = self
            .occupants
            .get(&nick)
            .is_none_or(|o| o.sessions.len() <= 1);
        if last {
            self.broadcast_unavailable(&nick, &mut out, codes, ItemExtra::default(), status);
            self.remove_occupant(&nick);
        } else {
            if let Some(o) = self.occupants.get(&nick) {
                let mut own = vec!["110"];
                own.extend_from_slice(codes);
                let mut p = self.presence_of(&nick, o, from, true, &own, ItemExtra::default());
                stanza::set(&mut p, "type", "unavailable");
                out.push(Out::Send(p));
            }
            if let Some(o) = self.occupants.get_mut(&nick) {
                o.sessions.retain(|s| s.jid != from);
            }
            self.by_jid.remove(from);
        }
        self.after_leaving(&mut out);
        out
    }

    fn remove_occupant(&mut self, nick: &str) {
        if let Some(o) = self.occupants.remove(nick) {
            for s in o.sessions {
                self.by_jid.remove(&s.jid);
            }
        }
    }

    /// A temporary room (or one never configured) goes with its last occupant.
    fn after_leaving(&mut self, out: &mut Vec<Out>) {
        if self.occupants.is_empty() && (!self.config.persistent || self.locked) {
            out.push(Out::Gone);
        }
    }

    /// The presence of occupant `nick` as `to` sees it.
    fn presence_of(
        &self,
        nick: &str,
        o: &Occupant,
        to: &str,
        viewer_is_mod: bool,
        codes: &[&str],
        extra: ItemExtra<'_>,
    ) -> Element {
        let shown = o.sessions.last();
        let mut p = shown.map_or_else(
            || Element::bare("presence", INTERNAL_NS),
            |s| s.presence.clone(),
        );
        stanza::set(&mut p, "from", self.occupant_jid(nick));
        stanza::set(&mut p, "to", to);
        self.occupant_payload(&mut p, o, o.role.as_str(), viewer_is_mod, codes, extra);
        p
    }

    fn fill_item(&self, item: &mut Element, extra: ItemExtra<'_>) {
        if let Some(n) = extra.nick {
            stanza::set(item, "nick", n);
        }
        if let Some(a) = extra.actor {
            item.append_child(stanza::new("actor", ns::MUC_USER, &[("nick", a)]));
        }
        if let Some(r) = extra.reason {
            item.append_child(stanza::text("reason", ns::MUC_USER, r));
        }
    }

    /// Sends occupant `nick`'s presence to every session in the room (theirs with 110),
    /// except `skip_self` (a joiner gets its own last, with more codes).
    fn broadcast_presence(
        &self,
        nick: &str,
        out: &mut Vec<Out>,
        codes: &[&str],
        extra: ItemExtra<'_>,
        skip_self: Option<&str>,
    ) {
        let Some(occ) = self.occupants.get(nick) else {
            return;
        };
        for (n, viewer) in &self.occupants {
            let is_mod = viewer.role == Role::Moderator;
            for s in &viewer.sessions {
                if skip_self == Some(s.jid.as_str()) {
                    continue;
                }
                let mut all: Vec<&str> = codes.to_vec();
                if n == nick {
                    all.insert(0, "110");
                }
                let e = ItemExtra {
                    nick: extra.nick,
                    actor: extra.actor,
                    reason: extra.reason,
                };
                out.push(Out::Send(
                    self.presence_of(nick, occ, &s.jid, is_mod, &all, e),
                ));
            }
        }
    }

    /// Sends `unavailable` for occupant `nick` to every session in the room (theirs with
    /// 110), with an optional status text.
    fn broadcast_unavailable(
        &self,
        nick: &str,
        out: &mut Vec<Out>,
        codes: &[&str],
        extra: ItemExtra<'_>,
        status_text: Option<String>,
    ) {
        let Some(occ) = self.occupants.get(nick) else {
            return;
        };
        for (n, viewer) in &self.occupants {
            let is_mod = viewer.role == Role::Moderator;
            for s in &viewer.sessions {
                let mut all: Vec<&str> = codes.to_vec();
                if n == nick {
                    all.insert(0, "110");
                }
                let e = ItemExtra {
                    nick: extra.nick,
                    actor: extra.actor,
                    reason: extra.reason,
                };
                let mut p = self.unavailable_of(nick, occ, &s.jid, is_mod, &all, e);
                if let Some(t) = &status_text {
                    p.append_child(stanza::text("status", INTERNAL_NS, t.as_str()));
                }
                out.push(Out::Send(p));
            }
        }
    }

    fn unavailable_of(
        &self,
        nick: &str,
        o: &Occupant,
        to: &str,
        viewer_is_mod: bool,
        codes: &[&str],
        extra: ItemExtra<'_>,
    ) -> Element {
        let mut p = stanza::new(
            "presence",
            INTERNAL_NS,
            &[
                ("from", &self.occupant_jid(nick)),
                ("to", to),
                ("type", "unavailable"),
            ],
        );
        self.occupant_payload(&mut p, o, "none", viewer_is_mod, codes, extra);
        p
    }

    /// XEP-0045 §7.2.3: the `<x xmlns='…muc#user'>` of an occupant's presence (affiliation,
    /// `role`, the real JID where the viewer may see it, `codes`) and its XEP-0421 id.
    fn occupant_payload(
        &self,
        p: &mut Element,
        o: &Occupant,
        role: &str,
        viewer_is_mod: bool,
        codes: &[&str],
        extra: ItemExtra<'_>,
    ) {
        let aff = self
            .affiliations
            .get(&o.bare)
            .copied()
            .unwrap_or(Affiliation::None);
        let mut item = stanza::new(
            "item",
            ns::MUC_USER,
            &[("affiliation", aff.as_str()), ("role", role)],
        );
        if viewer_is_mod || self.config.whois == Whois::Anyone {
            if let Some(s) = o.sessions.last() {
                stanza::set(&mut item, "jid", s.jid.as_str());
            }
        }
        self.fill_item(&mut item, extra);
        let mut x = Element::bare("x", ns::MUC_USER);
        x.append_child(item);
        for c in codes {
            x.append_child(status(c));
        }
        p.append_child(x);
        p.append_child(stanza::new(
            "occupant-id",
            ns::OCCUPANT_ID,
            &[("id", &self.occupant_id(&o.bare))],
        ));
    }

    fn subject_message(&self, to: &str) -> Element {
        let (from, text) = match &self.subject {
            Some((nick, s)) if !nick.is_empty() => (self.occupant_jid(nick), s.as_str()),
            Some((_, s)) => (self.jid.clone(), s.as_str()),
            None => (self.jid.clone(), ""),
        };
        let mut m = stanza::new(
            "message",
            INTERNAL_NS,
            &[("from", &from), ("to", to), ("type", "groupchat")],
        );
        m.append_child(stanza::text("subject", INTERNAL_NS, text));
        m
    }

    /// Removes every session of occupant `nick` with an unavailable presence carrying
    /// `codes` (kick 307, ban 301, affiliation 321, members-only 322) to them and the others.
    fn eject(
        &mut self,
        nick: &str,
        codes: &[&str],
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Out>,
    ) {
        let extra = ItemExtra {
            nick: None,
            actor,
            reason,
        };
        self.broadcast_unavailable(nick, out, codes, extra, None);
        self.remove_occupant(nick);
    }

    // ---- messages ----

    fn message(&mut self, from: &str, el: &Element, now: i64, lim: &Limits) -> Vec<Out> {
        let typ = stanza::typ(el);
        if typ == "error" {
            return Vec::new();
        }
        if let Some(x) = el.get_child("x", ns::MUC_USER) {
            if typ != "groupchat" {
                if let Some(d) = x.get_child("decline", ns::MUC_USER) {
                    return self.decline(from, d, lim);
                }
                if x.has_child("invite", ns::MUC_USER) {
                    return self.invite(from, el, x, lim);
                }
            }
        }
        let Some(nick) = self.by_jid.get(from).cloned() else {
            // XEP-0045 §7.4: only occupants speak.
            return err(
                el,
                C::NotAcceptable,
                Some("only occupants may send messages"),
            );
        };
        if typ != "groupchat" {
            return err(el, C::BadRequest, Some("send type='groupchat' to the room"));
        }
        let role = self.occupants.get(&nick).map_or(Role::None, |o| o.role);
        let subject = el.get_child("subject", INTERNAL_NS);
        if let (Some(s), false) = (subject, el.has_child("body", INTERNAL_NS)) {
            return self.change_subject(&nick, role, el, s.text(), lim);
        }
        if self.config.moderated && role < Role::Participant {
            return err(
                el,
                C::Forbidden,
                Some("visitors may not speak in this room"),
            );
        }
        let bare = bare_of(from).to_string();
        let mut msg = stanza::new(
            "message",
            INTERNAL_NS,
            &[("from", &self.occupant_jid(&nick)), ("type", "groupchat")],
        );
        if let Some(id) = el.attr("id") {
            stanza::set(&mut msg, "id", id);
        }
        for c in el.children() {
            // Stamps only the room may set are the room's own.
            if c.is("stanza-id", ns::SID)
                || c.is("occupant-id", ns::OCCUPANT_ID)
                || c.is("delay", ns::DELAY)
                || c.is("x", ns::MUC_USER)
            {
                continue;
            }
            msg.append_child(c.clone());
        }
        msg.append_child(stanza::new(
            "occupant-id",
            ns::OCCUPANT_ID,
            &[("id", &self.occupant_id(&bare))],
        ));
        let mut out = Vec::new();
        if self.config.archive && el.has_child("body", INTERNAL_NS) {
            let id = herald_xep::mam::new_archive_id();
            msg.append_child(stanza::new(
                "stanza-id",
                ns::SID,
                &[("id", &id), ("by", &self.jid)],
            ));
            if let Some(xml) = stanza::to_xml(&msg) {
                out.push(Out::Archive {
                    id,
                    with_bare: bare,
                    with_full: self.occupant_jid(&nick),
                    xml,
                    timestamp: now,
                });
            }
        }
        self.send_to_all(&msg, &mut out);
        out
    }

    fn send_to_all(&self, msg: &Element, out: &mut Vec<Out>) {
        let to = self
            .occupants
            .values()
            .flat_map(|o| o.sessions.iter().map(|s| s.jid.clone()))
            .collect();
        out.push(Out::Broadcast {
            stanza: msg.clone(),
            to,
        });
    }

    fn change_subject(
        &mut self,
        nick: &str,
        role: Role,
        el: &Element,
        text: String,
        lim: &Limits,
    ) -> Vec<Out> {
        let allowed =
            role == Role::Moderator || (self.config.change_subject && role >= Role::Participant);
        if !allowed {
            // XEP-0045 §8.1.
            return err(el, C::Forbidden, Some("you may not change the subject"));
        }
        if text.len() > lim.max_subject_bytes {
            return err(
                el,
                C::NotAcceptable,
                Some(&format!(
                    "the subject is longer than {} bytes",
                    lim.max_subject_bytes
                )),
            );
        }
        self.subject = Some((nick.to_string(), text));
        let mut out = Vec::new();
        for o in self.occupants.values() {
            for s in &o.sessions {
                out.push(Out::Send(self.subject_message(&s.jid)));
            }
        }
        out.push(Out::Save);
        out
    }

    fn invite(&mut self, from: &str, el: &Element, x: &Element, lim: &Limits) -> Vec<Out> {
        if !self.by_jid.contains_key(from) {
            return err(el, C::NotAcceptable, Some("only occupants may invite"));
        }
        let bare = bare_of(from).to_string();
        let aff = self.affiliation(&bare, lim);
        let may_add = aff >= Affiliation::Admin;
        if self.config.members_only && !may_add && !self.config.allow_invites {
            return err(
                el,
                C::Forbidden,
                Some("only admins may invite to this room"),
            );
        }
        let mut out = Vec::new();
        let mut saved = false;
        for inv in x.children().filter(|c| c.is("invite", ns::MUC_USER)) {
            let Some(to) = inv.attr("to").and_then(bare_jid) else {
                return err(el, C::JidMalformed, Some("invite to whom?"));
            };
            if self.config.members_only
                && self
                    .affiliations
                    .get(&to)
                    .is_none_or(|a| *a == Affiliation::None)
            {
                // XEP-0045 §7.8.2: an admin's invitation to a members-only room makes the
                // invitee a member (a member's, where allowed, does too).
                if self.affiliations.len() >= lim.max_affiliations {
                    return err_typed(
                        el,
                        C::ResourceConstraint,
                        ErrorType::Wait,
                        Some("too many affiliations"),
                    );
                }
                self.affiliations.insert(to.clone(), Affiliation::Member);
                saved = true;
            }
            let mut m = stanza::new("message", INTERNAL_NS, &[("from", &self.jid), ("to", &to)]);
            let mut ux = Element::bare("x", ns::MUC_USER);
            let mut i = stanza::new("invite", ns::MUC_USER, &[("from", &bare)]);
            if let Some(r) = inv.get_child("reason", ns::MUC_USER) {
                i.append_child(stanza::text(
                    "reason",
                    ns::MUC_USER,
                    cut(&r.text(), lim.max_field_bytes),
                ));
            }
            ux.append_child(i);
            if let Some(p) = &self.config.password {
                ux.append_child(stanza::text("password", ns::MUC_USER, p.as_str()));
            }
            m.append_child(ux);
            out.push(Out::Send(m));
        }
        if saved {
            out.push(Out::Save);
        }
        out
    }

    fn decline(&mut self, from: &str, d: &Element, lim: &Limits) -> Vec<Out> {
        let Some(to) = d.attr("to").and_then(bare_jid) else {
            return Vec::new();
        };
        let mut m = stanza::new("message", INTERNAL_NS, &[("from", &self.jid), ("to", &to)]);
        let mut ux = Element::bare("x", ns::MUC_USER);
        let mut dd = stanza::new("decline", ns::MUC_USER, &[("from", bare_of(from))]);
        if let Some(r) = d.get_child("reason", ns::MUC_USER) {
            dd.append_child(stanza::text(
                "reason",
                ns::MUC_USER,
                cut(&r.text(), lim.max_field_bytes),
            ));
        }
        ux.append_child(dd);
        m.append_child(ux);
        vec![Out::Send(m)]
    }

    fn private_message(&mut self, from: &str, nick: &str, el: &Element) -> Vec<Out> {
        let typ = stanza::typ(el);
        if typ == "error" {
            return Vec::new();
        }
        let Some(sender) = self.by_jid.get(from).cloned() else {
            return err(
                el,
                C::NotAcceptable,
                Some("only occupants may send messages"),
            );
        };
        if typ == "groupchat" {
            return err(
                el,
                C::BadRequest,
                Some("private messages are not groupchat"),
            );
        }
        let role = self.occupants.get(&sender).map_or(Role::None, |o| o.role);
        let allowed = match self.config.allow_pm {
            AllowPm::Anyone => true,
            AllowPm::Participants => role >= Role::Participant,
            AllowPm::Moderators => role == Role::Moderator,
            AllowPm::None => false,
        };
        if !allowed {
            return err(
                el,
                C::Forbidden,
                Some("private messages are not allowed here"),
            );
        }
        let Some(target) = self.occupants.get(nick) else {
            return err(el, C::ItemNotFound, Some("no such occupant"));
        };
        let bare = bare_of(from);
        let mut msg = stanza::new(
            "message",
            INTERNAL_NS,
            &[("from", &self.occupant_jid(&sender))],
        );
        for a in ["type", "id"] {
            if let Some(v) = el.attr(a) {
                stanza::set(&mut msg, a, v);
            }
        }
        for c in el.children() {
            if c.is("stanza-id", ns::SID)
                || c.is("occupant-id", ns::OCCUPANT_ID)
                || c.is("x", ns::MUC_USER)
            {
                continue;
            }
            msg.append_child(c.clone());
        }
        // XEP-0045 §7.5: marks it as a private message from an occupant.
        msg.append_child(Element::bare("x", ns::MUC_USER));
        msg.append_child(stanza::new(
            "occupant-id",
            ns::OCCUPANT_ID,
            &[("id", &self.occupant_id(bare))],
        ));
        target
            .sessions
            .iter()
            .map(|s| {
                let mut m = msg.clone();
                stanza::set(&mut m, "to", s.jid.as_str());
                Out::Send(m)
            })
            .collect()
    }

    // ---- IQs ----

    /// An IQ to `room/nick`. XEP-0410: a ping to one's own occupant JID is answered by the
    /// room. Other requests between occupants are forwarded (XEP-0045 §7.? IQ proxying: a
    /// vCard or version query to an occupant), under an id of the room's, and the answer goes
    /// back to the asking session with its own id; at most [`MAX_PROXIED_IQS`] wait at once,
    /// each for a minute.
    fn iq_to_occupant(&mut self, from: &str, nick: &str, el: &Element, now: i64) -> Vec<Out> {
        if !matches!(stanza::typ(el), "get" | "set") {
            return self.iq_answer(from, el);
        }
        let Some(asker_nick) = self.by_jid.get(from).cloned() else {
            // XEP-0410: not joined (also under this nick).
            return err(
                el,
                C::NotAcceptable,
                Some("only occupants may ask occupants"),
            );
        };
        if asker_nick == nick && stanza::payload(el).is_some_and(|p| p.is("ping", ns::PING)) {
            return vec![Out::Send(stanza::iq_result(el, None))];
        }
        let Some(target) = self.occupants.get(nick).and_then(|o| o.sessions.last()) else {
            return err(el, C::ItemNotFound, Some("no such occupant"));
        };
        let target = target.jid.clone();
        self.proxied
            .retain(|_, p| p.at > now.saturating_sub(PROXY_TTL));
        if self.proxied.len() >= MAX_PROXIED_IQS {
            return err_typed(
                el,
                C::ResourceConstraint,
                ErrorType::Wait,
                Some("too many requests between occupants"),
            );
        }
        self.next_proxy += 1;
        let id = format!("muc-{}", self.next_proxy);
        let mut fwd = el.clone();
        stanza::set(&mut fwd, "from", self.occupant_jid(&asker_nick));
        stanza::set(&mut fwd, "to", target.as_str());
        stanza::set(&mut fwd, "id", id.as_str());
        self.proxied.insert(
            id,
            Proxied {
                asker: from.to_string(),
                id: el.attr("id").map(String::from),
                target,
                at: now,
            },
        );
        vec![Out::Send(fwd)]
    }

    /// An occupant's answer (result or error) to an IQ the room forwarded to it: back to the
    /// asking session, from the answerer's occupant JID, with the asker's id.
    fn iq_answer(&mut self, from: &str, el: &Element) -> Vec<Out> {
        let Some(id) = el.attr("id") else {
            return Vec::new();
        };
        if self.proxied.get(id).is_none_or(|p| p.target != from) {
            return Vec::new();
        }
        let Some(p) = self.proxied.remove(id) else {
            return Vec::new();
        };
        let mut answer = el.clone();
        let answerer = match self.by_jid.get(from) {
            Some(n) => self.occupant_jid(n),
            None => self.jid.clone(),
        };
        stanza::set(&mut answer, "from", answerer);
        stanza::set(&mut answer, "to", p.asker.as_str());
        match &p.id {
            Some(i) => stanza::set(&mut answer, "id", i.as_str()),
            None => {
                answer.attrs_mut().remove(&rxml::Namespace::NONE, "id");
            }
        }
        vec![Out::Send(answer)]
    }

    fn iq(&mut self, from: &str, el: &Element, lim: &Limits, features: &[&str]) -> Vec<Out> {
        if !matches!(stanza::typ(el), "get" | "set") {
            // Results and errors answer nothing the room asked.
            return Vec::new();
        }
        let Some(payload) = stanza::payload(el) else {
            return err(el, C::BadRequest, None);
        };
        let get = stanza::typ(el) == "get";
        let bare = bare_of(from).to_string();
        let aff = self.affiliation(&bare, lim);
        match (payload.ns().as_str(), payload.name(), get) {
            (ns::DISCO_INFO, "query", true) => vec![Out::Send(self.disco_info(el, features))],
            (ns::DISCO_ITEMS, "query", true) => {
                let mut q = Element::bare("query", ns::DISCO_ITEMS);
                // XEP-0045 §6.5: occupants are listed only in a non-anonymous room, and
                // only to its occupants.
                if self.config.whois == Whois::Anyone && self.by_jid.contains_key(from) {
                    for n in self.occupants.keys() {
                        q.append_child(stanza::new(
                            "item",
                            ns::DISCO_ITEMS,
                            &[("jid", &self.occupant_jid(n))],
                        ));
                    }
                }
                vec![Out::Send(stanza::iq_result(el, Some(q)))]
            }
            (ns::PING, "ping", true) => vec![Out::Send(stanza::iq_result(el, None))],
            (ns::MAM | ns::MAM1, "query", _) => {
                if !self.config.archive {
                    return err(
                        el,
                        C::ServiceUnavailable,
                        Some("this room keeps no archive"),
                    );
                }
                if aff == Affiliation::Outcast
                    || (self.config.members_only && aff < Affiliation::Member)
                {
                    return err(el, C::Forbidden, Some("the archive is for members"));
                }
                let is_mod = self
                    .by_jid
                    .get(from)
                    .and_then(|n| self.occupants.get(n))
                    .is_some_and(|o| o.role == Role::Moderator);
                let real_jids =
                    self.config.whois == Whois::Anyone || is_mod || aff >= Affiliation::Admin;
                vec![Out::MamQuery {
                    iq: el.clone(),
                    real_jids,
                }]
            }
            (ns::MUC_ADMIN, "query", true) => self.admin_get(from, el, payload, aff),
            (ns::MUC_ADMIN, "query", false) => self.admin_set(from, el, payload, aff, lim),
            (ns::MUC_OWNER, "query", true) => {
                if aff != Affiliation::Owner {
                    return err(el, C::Forbidden, Some("only owners configure the room"));
                }
                let mut q = Element::bare("query", ns::MUC_OWNER);
                q.append_child(self.config.form(lim.max_users));
                vec![Out::Send(stanza::iq_result(el, Some(q)))]
            }
            (ns::MUC_OWNER, "query", false) => self.owner_set(el, payload, aff, lim),
            (ns::VCARD, "vCard", true) => {
                // XEP-0486 §4.4: anyone may read it, in the room or not (as its hash is in
                // the disco#info anyone may ask for).
                let card = self
                    .vcard
                    .as_ref()
                    .and_then(|v| herald_xep::vcard::parse_stored(&v.xml))
                    .unwrap_or_else(herald_xep::vcard::empty);
                vec![Out::Send(stanza::iq_result(el, Some(card)))]
            }
            (ns::VCARD, "vCard", false) => self.vcard_set(el, payload, aff, lim),
            _ => err(el, C::ServiceUnavailable, None),
        }
    }

    /// XEP-0486 §4.2: an owner sets the room's vCard (an empty one removes it); occupants
    /// hear of it with status 104 and read the new hash from disco#info. Refused whole:
    /// not an owner `forbidden`, over `max_vcard_bytes` `not-acceptable`, a PHOTO whose
    /// BINVAL is not base64 `bad-request`.
    fn vcard_set(
        &mut self,
        el: &Element,
        card: &Element,
        aff: Affiliation,
        lim: &Limits,
    ) -> Vec<Out> {
        if aff != Affiliation::Owner {
            return err(el, C::Forbidden, Some("only owners set the room's vCard"));
        }
        let new = if card.children().next().is_none() {
            None
        } else {
            match check_vcard(card, lim.max_vcard_bytes) {
                Ok(v) => Some(v),
                Err(VcardError::TooLarge) => {
                    return err(
                        el,
                        C::NotAcceptable,
                        Some(&format!(
                            "the vCard is larger than {} bytes",
                            lim.max_vcard_bytes
                        )),
                    )
                }
                Err(VcardError::BadPhoto) => {
                    return err(el, C::BadRequest, Some("the PHOTO's BINVAL is not base64"))
                }
            }
        };
        self.vcard = new;
        let mut out = vec![Out::Send(stanza::iq_result(el, None))];
        let mut m = stanza::new(
            "message",
            INTERNAL_NS,
            &[("from", &self.jid), ("type", "groupchat")],
        );
        let mut ux = Element::bare("x", ns::MUC_USER);
        ux.append_child(status("104"));
        m.append_child(ux);
        self.send_to_all(&m, &mut out);
        out.push(Out::Save);
        out
    }

    fn disco_info(&self, el: &Element, features: &[&str]) -> Element {
        let mut q = Element::bare("query", ns::DISCO_INFO);
        let name = if self.config.name.is_empty() {
            bare_of(&self.jid).split('@').next().unwrap_or("")
        } else {
            self.config.name.as_str()
        };
        q.append_child(stanza::new(
            "identity",
            ns::DISCO_INFO,
            &[("category", "conference"), ("type", "text"), ("name", name)],
        ));
        let c = &self.config;
        let mut all: Vec<&str> = features
            .iter()
            .copied()
            .filter(|f| c.archive || (*f != ns::MAM && *f != ns::MAM1))
            .collect();
        all.extend([
            ns::MUC,
            ns::OCCUPANT_ID,
            "http://jabber.org/protocol/muc#stable_id",
            "http://jabber.org/protocol/muc#self-ping-optimization",
            if c.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if c.public { "muc_public" } else { "muc_hidden" },
            if c.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if c.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if c.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if c.whois == Whois::Anyone {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
        ]);
        for f in all {
            q.append_child(stanza::new("feature", ns::DISCO_INFO, &[("var", f)]));
        }
        let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "result")]);
        let occupants = self.occupants.len().to_string();
        for (var, v) in [
            ("FORM_TYPE", "http://jabber.org/protocol/muc#roominfo"),
            ("muc#roominfo_description", c.description.as_str()),
            ("muc#roominfo_occupants", occupants.as_str()),
            ("muc#roominfo_subject", self.subject().unwrap_or("")),
            ("muc#roomconfig_roomname", c.name.as_str()),
        ] {
            let mut f = stanza::new("field", ns::DATA_FORMS, &[("var", var)]);
            f.append_child(stanza::text("value", ns::DATA_FORMS, v));
            x.append_child(f);
        }
        let hashes = self.avatar_hashes();
        if !hashes.is_empty() {
            // XEP-0486 §4.3: absent when the room has no avatar.
            let mut f = stanza::new(
                "field",
                ns::DATA_FORMS,
                &[("var", "muc#roominfo_avatarhash"), ("type", "text-multi")],
            );
            for h in hashes {
                f.append_child(stanza::text("value", ns::DATA_FORMS, h.as_str()));
            }
            x.append_child(f);
        }
        q.append_child(x);
        stanza::iq_result(el, Some(q))
    }

    fn admin_get(&self, from: &str, el: &Element, q: &Element, aff: Affiliation) -> Vec<Out> {
        let Some(item) = q.get_child("item", ns::MUC_ADMIN) else {
            return err(el, C::BadRequest, None);
        };
        let mut r = Element::bare("query", ns::MUC_ADMIN);
        if let Some(a) = item.attr("affiliation").and_then(Affiliation::parse) {
            if aff < Affiliation::Admin {
                return err(el, C::Forbidden, Some("only admins see affiliation lists"));
            }
            for (j, x) in self.affiliations.iter().filter(|(_, x)| **x == a) {
                r.append_child(stanza::new(
                    "item",
                    ns::MUC_ADMIN,
                    &[("jid", j.as_str()), ("affiliation", x.as_str())],
                ));
            }
        } else if let Some(role) = item.attr("role").and_then(Role::parse) {
            let asker = self.by_jid.get(from).and_then(|n| self.occupants.get(n));
            if asker.is_none_or(|o| o.role != Role::Moderator) {
                return err(el, C::Forbidden, Some("only moderators see role lists"));
            }
            for (n, o) in self.occupants.iter().filter(|(_, o)| o.role == role) {
                let a = self
                    .affiliations
                    .get(&o.bare)
                    .copied()
                    .unwrap_or(Affiliation::None);
                let mut i = stanza::new(
                    "item",
                    ns::MUC_ADMIN,
                    &[
                        ("nick", n.as_str()),
                        ("role", o.role.as_str()),
                        ("affiliation", a.as_str()),
                    ],
                );
                if let Some(s) = o.sessions.last() {
                    stanza::set(&mut i, "jid", s.jid.as_str());
                }
                r.append_child(i);
            }
        } else {
            return err(el, C::BadRequest, None);
        }
        vec![Out::Send(stanza::iq_result(el, Some(r)))]
    }

    fn admin_set(
        &mut self,
        from: &str,
        el: &Element,
        q: &Element,
        aff: Affiliation,
        lim: &Limits,
    ) -> Vec<Out> {
        let actor_nick = self.by_jid.get(from).cloned();
        let actor_role = actor_nick
            .as_ref()
            .and_then(|n| self.occupants.get(n))
            .map_or(Role::None, |o| o.role);
        enum Change {
            Role(String, Role),
            Aff(String, Affiliation),
        }
        let mut changes = Vec::new();
        // Every item is checked before any is applied (XEP-0045 §9: all or nothing).
        for item in q.children().filter(|c| c.is("item", ns::MUC_ADMIN)) {
            if let Some(a) = item.attr("affiliation") {
                let Some(new) = Affiliation::parse(a) else {
                    return err(el, C::BadRequest, None);
                };
                let jid = match item.attr("jid").and_then(bare_jid) {
                    Some(j) => j,
                    None => match item.attr("nick").and_then(|n| self.occupants.get(n)) {
                        Some(o) => o.bare.clone(),
                        None => return err(el, C::BadRequest, Some("which JID?")),
                    },
                };
                let old = self
                    .affiliations
                    .get(&jid)
                    .copied()
                    .unwrap_or(Affiliation::None);
                if aff < Affiliation::Admin {
                    return err(el, C::Forbidden, Some("only admins change affiliations"));
                }
                if (new >= Affiliation::Admin || old >= Affiliation::Admin)
                    && aff != Affiliation::Owner
                {
                    return err(
                        el,
                        C::NotAllowed,
                        Some("only owners change admins and owners"),
                    );
                }
                if old == Affiliation::Owner
                    && new != Affiliation::Owner
                    && self
                        .affiliations
                        .values()
                        .filter(|a| **a == Affiliation::Owner)
                        .count()
                        <= 1
                {
                    return err(el, C::Conflict, Some("the room needs an owner"));
                }
                changes.push(Change::Aff(jid, new));
            } else if let Some(r) = item.attr("role") {
                let Some(new) = Role::parse(r) else {
                    return err(el, C::BadRequest, None);
                };
                let Some(nick) = item.attr("nick") else {
                    return err(el, C::BadRequest, Some("which nick?"));
                };
                let Some(target) = self.occupants.get(nick) else {
                    return err(el, C::ItemNotFound, Some("no such occupant"));
                };
                if actor_role != Role::Moderator {
                    return err(el, C::Forbidden, Some("only moderators change roles"));
                }
                let target_aff = self.affiliation(&target.bare, lim);
                if target_aff >= Affiliation::Admin && new < Role::Moderator {
                    // XEP-0045 §8.2, §8.5: admins and owners cannot be kicked or silenced.
                    return err(el, C::NotAllowed, Some("admins and owners keep their role"));
                }
                if (new == Role::Moderator || target.role == Role::Moderator)
                    && aff < Affiliation::Admin
                {
                    return err(el, C::NotAllowed, Some("only admins change moderators"));
                }
                changes.push(Change::Role(nick.to_string(), new));
            } else {
                return err(el, C::BadRequest, None);
            }
        }
        let new_entries = changes
            .iter()
            .filter(|c| matches!(c, Change::Aff(j, a) if *a != Affiliation::None && !self.affiliations.contains_key(j)))
            .count();
        if self.affiliations.len() + new_entries > lim.max_affiliations {
            return err_typed(
                el,
                C::ResourceConstraint,
                ErrorType::Wait,
                Some("too many affiliations in this room"),
            );
        }
        let reason_of = |q: &Element| {
            q.children()
                .find_map(|i| i.get_child("reason", ns::MUC_ADMIN))
                .map(|r| cut(&r.text(), lim.max_field_bytes).to_string())
        };
        let reason = reason_of(q);
        let mut out = vec![Out::Send(stanza::iq_result(el, None))];
        let actor = actor_nick.as_deref();
        let mut save = false;
        for c in changes {
            match c {
                Change::Role(nick, Role::None) => {
                    self.eject(&nick, &["307"], actor, reason.as_deref(), &mut out);
                }
                Change::Role(nick, role) => {
                    if let Some(o) = self.occupants.get_mut(&nick) {
                        o.role = role;
                    }
                    let e = ItemExtra {
                        actor,
                        reason: reason.as_deref(),
                        nick: None,
                    };
                    self.broadcast_presence(&nick, &mut out, &[], e, None);
                }
                Change::Aff(jid, new) => {
                    save = true;
                    if new == Affiliation::None {
                        self.affiliations.remove(&jid);
                    } else {
                        self.affiliations.insert(jid.clone(), new);
                    }
                    let nicks: Vec<String> = self
                        .occupants
                        .iter()
                        .filter(|(_, o)| o.bare == jid)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for nick in nicks {
                        if new == Affiliation::Outcast {
                            self.eject(&nick, &["301"], actor, reason.as_deref(), &mut out);
                        } else if self.config.members_only && new < Affiliation::Member {
                            self.eject(&nick, &["321"], actor, reason.as_deref(), &mut out);
                        } else {
                            let role = self.role_for(new);
                            if let Some(o) = self.occupants.get_mut(&nick) {
                                o.role = role;
                            }
                            let e = ItemExtra {
                                actor,
                                reason: reason.as_deref(),
                                nick: None,
                            };
                            self.broadcast_presence(&nick, &mut out, &[], e, None);
                        }
                    }
                }
            }
        }
        if save {
            out.push(Out::Save);
        }
        self.after_leaving(&mut out);
        out
    }

    fn owner_set(&mut self, el: &Element, q: &Element, aff: Affiliation, lim: &Limits) -> Vec<Out> {
        if aff != Affiliation::Owner {
            return err(el, C::Forbidden, Some("only owners configure the room"));
        }
        if let Some(d) = q.get_child("destroy", ns::MUC_OWNER) {
            let mut out = vec![Out::Send(stanza::iq_result(el, None))];
            self.destroy(d, lim, &mut out);
            return out;
        }
        let Some(x) = q.get_child("x", ns::DATA_FORMS) else {
            return err(el, C::BadRequest, Some("a data form is expected"));
        };
        match x.attr("type") {
            Some("cancel") => {
                let mut out = vec![Out::Send(stanza::iq_result(el, None))];
                if self.locked {
                    // XEP-0045 §10.1.3: cancelling the first configuration destroys the room.
                    self.destroy(&Element::bare("destroy", ns::MUC_OWNER), lim, &mut out);
                }
                out
            }
            Some("submit") => {
                let new = match self
                    .config
                    .apply_form(x, lim.max_users, lim.max_field_bytes)
                {
                    Ok(c) => c,
                    Err(why) => return err(el, C::NotAcceptable, Some(&why)),
                };
                let old = std::mem::replace(&mut self.config, new);
                self.locked = false;
                let mut out = vec![Out::Send(stanza::iq_result(el, None))];
                if self.config.members_only && !old.members_only {
                    let gone: Vec<String> = self
                        .occupants
                        .iter()
                        .filter(|(_, o)| self.affiliation(&o.bare, lim) < Affiliation::Member)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in gone {
                        self.eject(&n, &["322"], None, None, &mut out);
                    }
                }
                // XEP-0045 §10.2.1: occupants hear of the change (104), and of logging and
                // anonymity changes.
                let mut codes = vec!["104"];
                if self.config.archive != old.archive {
                    codes.push(if self.config.archive { "170" } else { "171" });
                }
                if self.config.whois != old.whois {
                    codes.push(if self.config.whois == Whois::Anyone {
                        "172"
                    } else {
                        "173"
                    });
                }
                let mut m = stanza::new(
                    "message",
                    INTERNAL_NS,
                    &[("from", &self.jid), ("type", "groupchat")],
                );
                let mut ux = Element::bare("x", ns::MUC_USER);
                for c in codes {
                    ux.append_child(status(c));
                }
                m.append_child(ux);
                self.send_to_all(&m, &mut out);
                out.push(Out::Save);
                // Configured by an owner who is not in it: an empty room made temporary goes.
                self.after_leaving(&mut out);
                out
            }
            _ => err(el, C::BadRequest, Some("submit or cancel the form")),
        }
    }

    fn destroy(&mut self, d: &Element, lim: &Limits, out: &mut Vec<Out>) {
        let mut destroy = Element::bare("destroy", ns::MUC_USER);
        if let Some(j) = d.attr("jid").and_then(bare_jid) {
            stanza::set(&mut destroy, "jid", j);
        }
        if let Some(r) = d.get_child("reason", ns::MUC_OWNER) {
            destroy.append_child(stanza::text(
                "reason",
                ns::MUC_USER,
                cut(&r.text(), lim.max_field_bytes),
            ));
        }
        for (nick, o) in &self.occupants {
            for s in &o.sessions {
                let mut p = stanza::new(
                    "presence",
                    INTERNAL_NS,
                    &[
                        ("from", &self.occupant_jid(nick)),
                        ("to", &s.jid),
                        ("type", "unavailable"),
                    ],
                );
                let mut x = Element::bare("x", ns::MUC_USER);
                x.append_child(stanza::new(
                    "item",
                    ns::MUC_USER,
                    &[("affiliation", "none"), ("role", "none")],
                ));
                x.append_child(destroy.clone());
                p.append_child(x);
                out.push(Out::Send(p));
            }
        }
        self.occupants.clear();
        self.by_jid.clear();
        out.push(Out::Gone);
    }
}

/// The history a joiner asked for (XEP-0045 §7.2.13), clamped to the service's bounds;
/// None when it asked for none.
fn history_request(
    x: Option<&Element>,
    to: &str,
    now: i64,
    lim: &Limits,
) -> Option<HistoryRequest> {
    let h = x.and_then(|x| x.get_child("history", ns::MUC));
    let num = |a: &str| {
        h.and_then(|h| h.attr(a))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let max_stanzas = num("maxstanzas")
        .map_or(lim.history_default, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
        .min(lim.history_max);
    let max_chars = num("maxchars").map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut since = num("seconds").map(|s| {
        now.saturating_sub(i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
    });
    if let Some(s) = h
        .and_then(|h| h.attr("since"))
        .and_then(herald_xep::delay::parse_stamp)
    {
        since = Some(since.map_or(s, |x| x.max(s)));
    }
    if max_stanzas == 0 || max_chars == Some(0) {
        return None;
    }
    Some(HistoryRequest {
        to: to.to_string(),
        max_stanzas,
        max_chars,
        since,
    })
}
