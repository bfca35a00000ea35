//! XEP-0045 group chat glue: the service on `[muc] domain`, its rooms in memory (the rules
//! are herald-muc's), persistent rooms in the store (`roles::Muc`), room archives in the
//! message archive under the room's bare JID (XEP-0313 on the room, history on join).
//!
//! Routing hands this module every stanza whose `to` is the MUC domain (from local sessions,
//! components and peer servers alike). Each room is behind an async lock held while its
//! actions are carried out, so every occupant sees a room's stanzas in the order the room
//! made them. A room never waits on itself: stanzas for the MUC domain produced while a lock
//! is held (an invitation to another room) are routed from a task of their own, and an error
//! stanza that finds its room locked (often the bounce of what the room is sending, in the
//! same task) waits in a bounded queue the lock's holder reads before letting go.
//!
//! Sessions: an occupant's session leaves its rooms the way RFC 6121 §4.6 makes every
//! directed presence end: when the session ends, presence sends the room its unavailable
//! presence. A hibernated session (XEP-0198) stays joined; what the room sends it is queued
//! like any stanza and pushed by rule a. A local member with no session in a room hears of
//! its messages through push rule d (`push::on_room_message`, crates/herald-push/RULES.md
//! §4a).
//!
//! It must not decide room rules (who may join, speak, kick) nor parse MUC payloads: herald-muc
//! does; nor write to sessions: it routes.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use herald_muc::{HistoryRequest, Limits, Out, Room, RoomConfig, SavedRoom};
use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::ns;
use herald_proto::Element;
use herald_store::{roles, ArchiveQuery, ArchivedMessage, MucRoom, StoreError};

use crate::features::iq::{self, table, Disco, IqType, Target};
use crate::features::push;
use crate::routing::hooks::{Fut, ToMuc};
use crate::stanza::{self, Kind};
use crate::xep::{delay, mam as xm};
use crate::{routing, Shared};

struct Entry {
    room: Arc<tokio::sync::Mutex<Room>>,
    /// Who created it (counted against `max_rooms_per_user` while it exists).
    creator: String,
}

/// Most error stanzas waiting for a busy room (all rooms together); more are dropped.
const MAX_QUEUED_ERRORS: usize = 1024;

/// How long a joining session's occupant list is paced by the session (see [`occupants`]);
/// a client that takes nothing for this long is sent the rest at once, as any burst.
const PACE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// What a room sends a session while that session is still being given the room's
/// occupant list: held behind it, in order, within the session's byte budget.
#[derive(Default)]
struct Gate {
    queue: std::collections::VecDeque<Element>,
    bytes: usize,
}

/// A gate's key: (room bare JID, session full JID).
type GateKey = (String, String);

/// The rooms and the service's bounds.
pub struct Service {
    rooms: std::sync::Mutex<HashMap<String, Entry>>,
    limits: Limits,
    /// Errors from occupants that came while their room was locked (often the bounce of what
    /// the room itself was sending): the room's holder reads them before it lets go.
    errors: std::sync::Mutex<Vec<(String, String, Element)>>,
    /// Sessions being given a room's occupant list, and what waits behind it.
    gates: std::sync::Mutex<HashMap<GateKey, Gate>>,
    /// How many gates are open: `hold` runs once per recipient of every room broadcast, and
    /// almost always no gate is open, so it reads this instead of locking `gates`. Changed
    /// only with `gates` locked; a room's own sends follow its `open_gate` in program order.
    open_gates: std::sync::atomic::AtomicUsize,
}

impl Service {
    /// An empty service with `[muc]`'s bounds.
    pub fn new(cfg: &crate::config::Config) -> Service {
        let m = &cfg.muc;
        Service {
            rooms: Default::default(),
            errors: Default::default(),
            gates: Default::default(),
            open_gates: Default::default(),
            limits: Limits {
                max_users: m.max_occupants,
                max_affiliations: m.max_affiliations,
                max_sessions_per_occupant: cfg.limits.max_sessions_per_account,
                history_default: m.history_default,
                history_max: m.history_max,
                max_subject_bytes: m.max_subject_bytes,
                max_field_bytes: m.max_field_bytes,
                max_vcard_bytes: m.max_vcard_bytes,
                service_admins: m.admins.clone(),
                defaults: herald_muc::Defaults {
                    public: m.default_public,
                    persistent: m.default_persistent,
                    archive: m.default_archive,
                    max_users: m.occupants_default,
                },
            },
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, jid: &str) -> Option<Arc<tokio::sync::Mutex<Room>>> {
        self.map().get(jid).map(|e| e.room.clone())
    }

    /// Whether `room` is still the room held under `jid` (not gone meanwhile).
    fn is_current(&self, jid: &str, room: &Arc<tokio::sync::Mutex<Room>>) -> bool {
        self.map()
            .get(jid)
            .is_some_and(|e| Arc::ptr_eq(&e.room, room))
    }

    fn queue_error(&self, room: &str, from: String, el: Element) {
        let mut q = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < MAX_QUEUED_ERRORS {
            q.push((room.to_string(), from, el));
        }
    }

    fn take_errors(&self, room: &str) -> Vec<(String, Element)> {
        let mut q = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *q)
            .into_iter()
            .partition(|(r, _, _)| r == room);
        *q = rest;
        mine.into_iter().map(|(_, f, e)| (f, e)).collect()
    }

    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<GateKey, Gate>> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `el` (from a room, or one of its occupants) behind the occupant list its
    /// session is still being given; Err(el) back when there is none, to be sent now.
    /// Ok(Some(el)): the gate is full (the session's byte budget), and `el` must be refused.
    fn hold(&self, el: Element, max_bytes: usize) -> Result<Option<Element>, Element> {
        if self.open_gates.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(el);
        }
        let mut gates = self.gates();
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(el);
        };
        let room = from.split_once('/').map_or(from, |(b, _)| b);
        let Some(gate) = gates.get_mut(&(room.to_string(), to.to_string())) else {
            return Err(el);
        };
        let cost = stanza::mem_cost(&el);
        if !gate.queue.is_empty() && gate.bytes.saturating_add(cost) > max_bytes {
            return Ok(Some(el));
        }
        gate.bytes = gate.bytes.saturating_add(cost);
        gate.queue.push_back(el);
        Ok(None)
    }

    /// Opens a gate for `key`; false if one is open (its pacer will send what is added).
    fn open_gate(&self, key: &GateKey) -> bool {
        let mut gates = self.gates();
        if gates.contains_key(key) {
            return false;
        }
        gates.insert(key.clone(), Gate::default());
        self.open_gates
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Adds `els` to an open gate's queue, first, whatever the bound (an occupant list).
    fn extend_gate(&self, key: &GateKey, els: Vec<Element>) -> Result<(), Vec<Element>> {
        let mut gates = self.gates();
        let Some(gate) = gates.get_mut(key) else {
            return Err(els);
        };
        for el in els {
            gate.bytes = gate.bytes.saturating_add(stanza::mem_cost(&el));
            gate.queue.push_back(el);
        }
        Ok(())
    }

    /// The next stanza held behind `key`'s gate; None (and the gate is closed) when empty.
    fn next_held(&self, key: &GateKey) -> Option<Element> {
        let mut gates = self.gates();
        let gate = gates.get_mut(key)?;
        match gate.queue.pop_front() {
            Some(el) => {
                gate.bytes = gate.bytes.saturating_sub(stanza::mem_cost(&el));
                Some(el)
            }
            None => {
                if gates.remove(key).is_some() {
                    self.open_gates
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                None
            }
        }
    }

    /// Puts `from` (a real full JID) in room `room_jid` under `nick` as its `presence` asks,
    /// and sends nothing of what that makes the room say: for tests and measurements of
    /// large rooms without a connection per occupant. False when there is no such room or
    /// the room refused the join.
    #[doc(hidden)]
    pub async fn join_quietly(
        &self,
        room_jid: &str,
        from: &str,
        nick: &str,
        presence: &Element,
    ) -> bool {
        let Some(room) = self.get(room_jid) else {
            return false;
        };
        let mut room = room.lock().await;
        room.handle(
            from,
            Some(nick),
            presence,
            false,
            delay::now_micros(),
            &self.limits,
            &[],
        );
        room.is_occupant(from)
    }

    /// Sessions being given an occupant list now.
    pub fn paced_joins(&self) -> usize {
        self.gates().len()
    }

    /// Rooms held (persistent and temporary).
    pub fn room_count(&self) -> usize {
        self.map().len()
    }

    fn all(&self) -> Vec<Arc<tokio::sync::Mutex<Room>>> {
        let mut v: Vec<_> = self
            .map()
            .iter()
            .map(|(j, e)| (j.clone(), e.room.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, r)| r).collect()
    }
}

/// Loads the saved (persistent) rooms at start.
pub async fn load(shared: &Arc<Shared>) -> Result<usize, StoreError> {
    if shared.muc_domain.is_none() {
        return Ok(0);
    }
    let rooms = shared.db(|s: &roles::Muc| s.load_rooms()).await?;
    let n = rooms.len();
    let mut map = shared.muc.map();
    for r in rooms {
        let saved = SavedRoom {
            config: r.config,
            affiliations: r.affiliations,
            vcard: r.vcard,
        };
        let room = Room::from_saved(&r.jid, &saved, &shared.muc.limits);
        let creator = saved
            .affiliations
            .iter()
            .find(|(_, a)| a == "owner")
            .map(|(j, _)| j.clone())
            .unwrap_or_default();
        map.insert(
            r.jid,
            Entry {
                room: Arc::new(tokio::sync::Mutex::new(room)),
                creator,
            },
        );
    }
    Ok(n)
}

/// Cluster mode: this node took over the group chat service: the rooms as the store has
/// them now replace whatever it held (occupants included: they were another node's).
pub async fn reload(shared: &Arc<Shared>) -> Result<usize, StoreError> {
    shared.muc.map().clear();
    load(shared).await
}

/// The `to_muc` hook: every stanza for the MUC domain.
pub fn to_muc(shared: &Arc<Shared>, ev: ToMuc) -> Fut<'_, Option<ToMuc>> {
    Box::pin(async move {
        handle(shared, ev.el).await;
        None
    })
}

fn err_typed(
    el: &Element,
    cond: StanzaErrorCondition,
    t: ErrorType,
    text: &str,
) -> Option<Element> {
    stanza::error_typed(el, cond, t, Some(text))
}

async fn handle(shared: &Arc<Shared>, el: Element) {
    if stanza::typ(&el) == "error" {
        return error(shared, el).await;
    }
    let (Ok(Some(to)), Ok(Some(from))) = (stanza::to(&el), stanza::from(&el)) else {
        return routing::bounce(shared, &el, StanzaErrorCondition::JidMalformed).await;
    };
    let Some(node) = to.node() else {
        return service_stanza(shared, &el).await;
    };
    let room_jid = format!("{}@{}", node.as_str(), to.domain().as_str());
    let nick = to.resource().map(|r| r.as_str().to_string());
    if nick.as_deref() == Some("") {
        return routing::bounce(shared, &el, StanzaErrorCondition::JidMalformed).await;
    }
    let kind = stanza::kind(&el);
    if kind == Some(Kind::Iq) && nick.is_none() {
        if let Some(typ) = IqType::of(&el) {
            let served = stanza::payload(&el)
                .and_then(|p| table::lookup(typ, p, Target::MucRoom))
                .is_some();
            if !served {
                return routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable)
                    .await;
            }
        }
    }
    let from_s = from.to_string();
    // A room can go (its last occupant left, its owner destroyed it) while this stanza
    // waits for its lock: then it is looked up (or created) again, so nobody joins a room
    // that no longer exists. Each round means another stanza emptied the room meanwhile.
    for _ in 0..3 {
        let (room, created) = match shared.muc.get(&room_jid) {
            Some(r) => (r, false),
            None => {
                let joins =
                    kind == Some(Kind::Presence) && stanza::typ(&el).is_empty() && nick.is_some();
                if !joins {
                    if kind == Some(Kind::Presence) {
                        return;
                    }
                    return routing::bounce(shared, &el, StanzaErrorCondition::ItemNotFound).await;
                }
                match create(shared, &room_jid, &from, &el) {
                    Ok(r) => r,
                    Err(reply) => {
                        if let Some(r) = reply {
                            routing::route(shared, r).await;
                        }
                        return;
                    }
                }
            }
        };
        let mut guard = room.lock().await;
        if !shared.muc.is_current(&room_jid, &room) {
            continue;
        }
        let features = iq::features(Disco::MucRoom);
        let now = delay::now_micros();
        let outs = guard.handle(
            &from_s,
            nick.as_deref(),
            &el,
            created,
            now,
            &shared.muc.limits,
            &features,
        );
        carry_out(shared, &room_jid, &mut guard, outs).await;
        return;
    }
    routing::bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await;
}

/// A room and whether this join made it.
type Made = (Arc<tokio::sync::Mutex<Room>>, bool);

/// An error stanza to a room or occupant: it may say an occupant's session is gone (its
/// server bounced what the room sent), which herald-muc decides. It is often the bounce of
/// what the room is sending right now, under its lock in this very task: then it waits in a
/// bounded queue the lock's holder reads before letting go (`carry_out`).
async fn error(shared: &Arc<Shared>, el: Element) {
    let (Ok(Some(to)), Ok(Some(from))) = (stanza::to(&el), stanza::from(&el)) else {
        return;
    };
    let Some(node) = to.node() else {
        return;
    };
    let room_jid = format!("{}@{}", node.as_str(), to.domain().as_str());
    let Some(room) = shared.muc.get(&room_jid) else {
        return;
    };
    let Ok(mut guard) = room.try_lock() else {
        return shared.muc.queue_error(&room_jid, from.to_string(), el);
    };
    if !shared.muc.is_current(&room_jid, &room) {
        return;
    }
    let outs = guard.error_from_occupant(&from.to_string(), &el, &shared.muc.limits);
    carry_out(shared, &room_jid, &mut guard, outs).await;
}

/// Makes a room for a first join, if `from` may create one (`[muc]
/// restrict_room_creation`, `max_rooms`, `max_rooms_per_user`); Err(the refusal) if not.
fn create(
    shared: &Arc<Shared>,
    room_jid: &str,
    from: &Jid,
    el: &Element,
) -> Result<Made, Option<Element>> {
    let m = &shared.cfg.muc;
    let bare = from.to_bare().to_string();
    let admin = m.admins.contains(&bare);
    let allowed = admin
        || match m.restrict_room_creation.as_str() {
            "anyone" => true,
            "local" => shared.cfg.is_local(from.domain().as_str()),
            _ => false,
        };
    if !allowed {
        // XEP-0045 §10.1.1.
        return Err(stanza::error(
            el,
            StanzaErrorCondition::NotAllowed,
            Some("you may not create rooms here"),
        ));
    }
    let mut map = shared.muc.map();
    if let Some(e) = map.get(room_jid) {
        // Created by a concurrent join in between: join it.
        return Ok((e.room.clone(), false));
    }
    if map.len() >= m.max_rooms {
        return Err(err_typed(
            el,
            StanzaErrorCondition::ResourceConstraint,
            ErrorType::Wait,
            "the service has as many rooms as it may hold",
        ));
    }
    if !admin && map.values().filter(|e| e.creator == bare).count() >= m.max_rooms_per_user {
        return Err(err_typed(
            el,
            StanzaErrorCondition::ResourceConstraint,
            ErrorType::Wait,
            "you have created as many rooms as you may",
        ));
    }
    let locked = el.has_child("x", ns::MUC);
    let config = RoomConfig::new(&shared.muc.limits.defaults);
    let room = Room::new(room_jid, &bare, config, rand::random(), locked);
    let room = Arc::new(tokio::sync::Mutex::new(room));
    map.insert(
        room_jid.to_string(),
        Entry {
            room: room.clone(),
            creator: bare,
        },
    );
    tracing::info!(room = room_jid, "room created");
    Ok((room, true))
}

/// Carries out a room's actions in order, holding its lock; then what the errors that came
/// meanwhile (bounces of these very actions, often) make the room do.
async fn carry_out(shared: &Arc<Shared>, room_jid: &str, room: &mut Room, outs: Vec<Out>) {
    let mut queue: std::collections::VecDeque<Out> = outs.into();
    loop {
        run_actions(shared, room_jid, room, &mut queue).await;
        let errors = shared.muc.take_errors(room_jid);
        if errors.is_empty() {
            return;
        }
        // Each of these removes an occupant at most: the loop ends with the room.
        for (from, el) in errors {
            queue.extend(room.error_from_occupant(&from, &el, &shared.muc.limits));
        }
    }
}

async fn run_actions(
    shared: &Arc<Shared>,
    room_jid: &str,
    room: &mut Room,
    queue: &mut std::collections::VecDeque<Out>,
) {
    // An archive write that did not happen takes its stanza-id off the broadcast that follows
    // (herald-muc stamps room messages only in broadcasts).
    let mut unarchived: Option<String> = None;
    while let Some(o) = queue.pop_front() {
        match o {
            Out::Send(el) => send(shared, el).await,
            Out::Occupants { to, presences } => occupants(shared, room_jid, to, presences).await,
            Out::Broadcast { mut stanza, to } => {
                if let Some(id) = &unarchived {
                    if stanza
                        .get_child("stanza-id", ns::SID)
                        .and_then(|s| s.attr("id"))
                        == Some(id)
                    {
                        xm::unstamp_stanza_id(&mut stanza, room_jid);
                    }
                }
                for t in to {
                    let mut el = stanza.clone();
                    stanza::set(&mut el, "to", t);
                    send(shared, el).await;
                }
                push_absent_members(shared, room, &stanza).await;
            }
            Out::Archive {
                id,
                with_bare,
                with_full,
                xml,
                timestamp,
            } => {
                if !archive(shared, room_jid, &id, with_bare, with_full, xml, timestamp).await {
                    unarchived = Some(id);
                }
            }
            Out::History(h) => history(shared, room_jid, h).await,
            Out::MamQuery { iq, real_jids } => mam_query(shared, room_jid, &iq, real_jids).await,
            Out::Save => save(shared, room).await,
            Out::Gone => {
                shared.muc.map().remove(room_jid);
                let j = room_jid.to_string();
                if let Err(e) = shared.db(move |s: &roles::Muc| s.delete_room(&j)).await {
                    tracing::error!(error = %e, room = room_jid, "forgetting a room failed");
                }
                tracing::info!(room = room_jid, "room gone");
            }
        }
    }
}

/// Push rule d (RULES.md §4a): a groupchat message from an occupant may also wake the phones
/// of the room's local members who have no session in it (members with a joined session,
/// hibernated or not, are rule a's). herald-push decides; this only names the members and
/// the sender.
async fn push_absent_members(shared: &Arc<Shared>, room: &Room, el: &Element) {
    if el.name() != "message" || stanza::typ(el) != "groupchat" {
        return;
    }
    // Messages the room says itself (from its bare JID) are notices, not a person talking.
    let Some((_, nick)) = el.attr("from").and_then(|f| f.split_once('/')) else {
        return;
    };
    let Some(sender) = room.occupant_bare(nick) else {
        return;
    };
    // Remote members are not pushed: only their own server could (out of scope, issue 16).
    let members: Vec<String> = room
        .absent_members()
        .into_iter()
        .filter(|m| {
            m.split_once('@')
                .is_some_and(|(_, d)| shared.cfg.is_local(d))
        })
        .map(str::to_owned)
        .collect();
    let members_only = room.config().members_only;
    push::on_room_message(shared, room.jid(), members_only, sender, el, members).await;
}

/// Gives a joining session the room's occupant list (XEP-0045 §7.2.3). A room of 1,000
/// occupants is 1,000 presences, beyond what a session may hold at once
/// (`limits.session_queue_bytes`, `stream_management.max_queue`): a local session is given
/// them by a task of their own at the pace it writes them out (and, with XEP-0198, has them
/// acknowledged), and everything the room sends that session meanwhile waits behind them
/// (a gate), so the order the room made is the order the client sees. The room is not held
/// meanwhile. Another server's session gets them at once (its s2s queue is bounded on its own).
async fn occupants(shared: &Arc<Shared>, room_jid: &str, to: String, presences: Vec<Element>) {
    let local = Jid::new(&to).ok().and_then(|j| {
        let res = j.resource()?.as_str().to_string();
        if !shared.cfg.is_local(j.domain().as_str()) {
            return None;
        }
        shared.router.resource(&j.to_bare().to_string(), &res)
    });
    let Some(entry) = local else {
        for p in presences {
            send(shared, p).await;
        }
        return;
    };
    let key = (room_jid.to_string(), to);
    if !shared.muc.open_gate(&key) {
        // A pacer still runs for this session (it left and joined again): behind what it has.
        if let Err(ps) = shared.muc.extend_gate(&key, presences) {
            for p in ps {
                send(shared, p).await;
            }
        }
        return;
    }
    let s = shared.clone();
    tokio::spawn(async move {
        let l = &s.cfg.limits;
        // Half the session's bounds: room for what else it is sent meanwhile.
        let max_bytes = l.session_queue_bytes / 2;
        let max_held = (s.cfg.stream_management.max_queue.min(l.session_inbox) / 2).max(1);
        let deadline = tokio::time::Instant::now() + PACE_DEADLINE;
        let tx = entry.tx;
        for p in presences {
            tx.wait_for_room(max_bytes, max_held, deadline).await;
            routing::route(&s, p).await;
        }
        while let Some(el) = s.muc.next_held(&key) {
            tx.wait_for_room(max_bytes, max_held, deadline).await;
            routing::route(&s, el).await;
        }
    });
}

/// Routes a stanza a room made. One for the MUC domain itself goes from a task of its own:
/// its room may be the one whose lock we hold. One for a session still being given an
/// occupant list waits behind it (see [`occupants`]).
async fn send(shared: &Arc<Shared>, el: Element) {
    let el = match shared.muc.hold(el, shared.cfg.limits.session_queue_bytes) {
        Ok(None) => return,
        Ok(Some(el)) => return refuse_held(shared, el).await,
        Err(el) => el,
    };
    let to_muc = stanza::to(&el)
        .ok()
        .flatten()
        .is_some_and(|t| shared.muc_domain.as_deref() == Some(t.domain().as_str()));
    if to_muc {
        let s = shared.clone();
        tokio::spawn(async move { routing::route(&s, el).await });
    } else {
        routing::route(shared, el).await;
    }
}

/// A stanza for a joining session whose held stanzas are past its byte budget: refused as a
/// session queue past its budget refuses one (`routing::send_to_routed`), then what delivery
/// does with that refusal for a full JID: a message or IQ goes back to its sender as
/// `resource-constraint` of type wait (`message::deliver`, `iq::to_local`), a presence is
/// dropped (`presence::deliver`). The sender of what the room sends is the room, or an
/// occupant through it: the room passes the error of a forwarded IQ on to the asker, and keeps
/// the session (a full queue does not say it is gone).
async fn refuse_held(shared: &Arc<Shared>, el: Element) {
    shared
        .metrics
        .inbox_full
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        to = el.attr("to"),
        "a joining session's held room stanzas exceed its byte budget"
    );
    match stanza::kind(&el) {
        Some(Kind::Message | Kind::Iq) => {
            routing::bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await
        }
        Some(Kind::Presence) | None => {}
    }
}

async fn save(shared: &Arc<Shared>, room: &Room) {
    let jid = room.jid().to_string();
    let r = if room.config().persistent {
        let saved = room.to_saved();
        let rec = MucRoom {
            jid,
            config: saved.config,
            affiliations: saved.affiliations,
            vcard: saved.vcard,
        };
        shared.db(move |s: &roles::Muc| s.save_room(&rec)).await
    } else {
        shared.db(move |s: &roles::Muc| s.delete_room(&jid)).await
    };
    if let Err(e) = r {
        tracing::error!(error = %e, room = room.jid(), "saving a room failed");
    }
}

/// Writes a room message to the room's archive and waits for the commit (so the sender's
/// acknowledgement, a MAM query or a join's history that follow find it). False when it was
/// not archived: the store is low on space, the room's archive is over `[mam]
/// max_bytes_per_user`, or the write failed.
async fn archive(
    shared: &Arc<Shared>,
    room_jid: &str,
    id: &str,
    with_bare: String,
    with_full: String,
    xml: String,
    timestamp: i64,
) -> bool {
    if shared.space.is_low() {
        return false;
    }
    let used = shared
        .db_read(|s: &roles::Archive| s.archive_usage(room_jid))
        .map(|u| u.bytes)
        .unwrap_or(0);
    if used.saturating_add(xml.len() as u64) > shared.cfg.mam.max_bytes_per_user {
        tracing::debug!(room = room_jid, "room archive quota reached");
        return false;
    }
    let msg = ArchivedMessage {
        id: id.to_string(),
        with: with_bare,
        timestamp,
        stanza_xml: xml,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done: crate::group_commit::Done = Box::new(move |r| {
        let _ = tx.send(r);
    });
    shared
        .archive
        .submit(room_jid.to_string(), msg, with_full, done)
        .await;
    match rx.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, room = room_jid, "archiving a room message failed");
            false
        }
        Err(_) => false,
    }
}

/// Sends a joining session the history it asked for, from the room's archive (XEP-0045
/// §7.2.13), each message stamped with a XEP-0203 delay from the room.
async fn history(shared: &Arc<Shared>, room_jid: &str, h: HistoryRequest) {
    let q = ArchiveQuery {
        before_id: Some(String::new()),
        start: h.since,
        max: h.max_stanzas,
        ..ArchiveQuery::default()
    };
    let room = room_jid.to_string();
    let page = match shared
        .db(move |s: &roles::Archive| s.query_archive(&room, &q))
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, room = room_jid, "reading room history failed");
            return;
        }
    };
    // `maxchars`: the newest messages whose XML fits, in order.
    let mut keep = page.items.len();
    if let Some(max) = h.max_chars {
        let mut total = 0usize;
        keep = 0;
        for m in page.items.iter().rev() {
            total = total.saturating_add(m.stanza_xml.chars().count());
            if total > max {
                break;
            }
            keep += 1;
        }
    }
    let skip = page.items.len() - keep;
    for m in page.items.into_iter().skip(skip) {
        let Ok(mut el) = Element::from_str(&m.stanza_xml) else {
            continue;
        };
        stanza::set(&mut el, "to", h.to.as_str());
        delay::add_delay(&mut el, room_jid, m.timestamp);
        send(shared, el).await;
    }
}

/// Answers a XEP-0313 query to the room from its archive: results then the `<fin/>`, all
/// from the room. A filter on a real JID needs the right to see real JIDs.
async fn mam_query(shared: &Arc<Shared>, room_jid: &str, iq: &Element, real_jids: bool) {
    let reply = mam_answer(shared, room_jid, iq, real_jids).await;
    send(shared, reply).await;
}

async fn mam_answer(
    shared: &Arc<Shared>,
    room_jid: &str,
    iq: &Element,
    real_jids: bool,
) -> Element {
    let err = |cond, text: Option<&str>| {
        stanza::error(iq, cond, text).unwrap_or_else(|| stanza::iq_result(iq, None))
    };
    let Some(payload) = stanza::payload(iq) else {
        return err(StanzaErrorCondition::BadRequest, None);
    };
    let pns = if payload.has_ns(ns::MAM1) {
        ns::MAM1
    } else {
        ns::MAM
    };
    if stanza::typ(iq) == "get" {
        return stanza::iq_result(iq, Some(xm::query_form(pns)));
    }
    let limits = xm::QueryLimits {
        max_page: shared.cfg.mam.max_page,
        max_ids: shared.cfg.mam.max_ids,
        max_count: shared.cfg.mam.max_count,
    };
    let req = match xm::parse_query(payload, &limits) {
        Ok(r) => r,
        Err((c, text)) => return err(c, Some(&text)),
    };
    if req.query.with.as_deref().is_some_and(|w| !w.contains('/')) && !real_jids {
        return err(
            StanzaErrorCondition::Forbidden,
            Some("in this room only moderators filter by real JID"),
        );
    }
    let asker = iq.attr("from").unwrap_or("").to_string();
    let asker_bare = asker.split('/').next().unwrap_or("").to_string();
    let _admitted = match shared.mam_queries.admit(&asker_bare) {
        Ok(a) => a,
        Err(refusal) => {
            return stanza::error_typed(
                iq,
                StanzaErrorCondition::ResourceConstraint,
                ErrorType::Wait,
                Some(refusal.text()),
            )
            .unwrap_or_else(|| stanza::iq_result(iq, None))
        }
    };
    let _reader = shared.mam_queries.readers().acquire().await.ok();
    let (room, q) = (room_jid.to_string(), req.query.clone());
    let page = match shared
        .db(move |s: &roles::Archive| s.query_archive(&room, &q))
        .await
    {
        Ok(p) => p,
        Err(StoreError::NotFound) => {
            return err(
                StanzaErrorCondition::ItemNotFound,
                Some("no such archive id"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "room archive query failed");
            return crate::features::ctx::store_failed(iq, &e);
        }
    };
    let mut items = page.items.clone();
    if req.flip {
        items.reverse();
    }
    for m in &items {
        let Ok(original) = Element::from_str(&m.stanza_xml) else {
            continue;
        };
        let mut r = xm::result_message(
            &asker,
            req.queryid.as_deref(),
            req.ns,
            &m.id,
            m.timestamp,
            original,
        );
        stanza::set(&mut r, "from", room_jid);
        send(shared, r).await;
    }
    let first = page.items.first().map(|m| m.id.as_str());
    let last = page.items.last().map(|m| m.id.as_str());
    stanza::iq_result(
        iq,
        Some(xm::fin(req.ns, first, last, page.count, page.complete)),
    )
}

/// A stanza to the service's domain itself: disco and ping; the rest is not served.
async fn service_stanza(shared: &Arc<Shared>, el: &Element) {
    if stanza::kind(el) != Some(Kind::Iq) {
        return;
    }
    let Some(typ) = IqType::of(el) else {
        return;
    };
    let Some(payload) = stanza::payload(el) else {
        return routing::bounce(shared, el, StanzaErrorCondition::BadRequest).await;
    };
    if table::lookup(typ, payload, Target::MucService).is_none() || payload.attr("node").is_some() {
        return routing::bounce(shared, el, StanzaErrorCondition::ServiceUnavailable).await;
    }
    let reply = if payload.is("query", ns::DISCO_INFO) {
        let mut features = iq::features(Disco::MucService);
        features.extend([ns::MUC, ns::OCCUPANT_ID]);
        if shared.cfg.muc.default_archive {
            features.push(ns::MAM);
        }
        let q = iq::disco::info_query(("conference", "text", Some("Chatrooms")), &features);
        stanza::iq_result(el, Some(q))
    } else if payload.is("query", ns::DISCO_ITEMS) {
        let mut q = Element::bare("query", ns::DISCO_ITEMS);
        // XEP-0045 §6.3: the public rooms (each is locked only briefly, between its own
        // stanzas).
        for r in shared.muc.all() {
            let r = r.lock().await;
            let c = r.config();
            if c.public && !r.is_locked() {
                let mut item = stanza::new("item", ns::DISCO_ITEMS, &[("jid", r.jid())]);
                if !c.name.is_empty() {
                    stanza::set(&mut item, "name", c.name.as_str());
                }
                q.append_child(item);
            }
        }
        stanza::iq_result(el, Some(q))
    } else {
        stanza::iq_result(el, None)
    };
    routing::route(shared, reply).await;
}
