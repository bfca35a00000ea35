//! The IQ table: every `get`/`set` the server answers itself, one line each, keyed by
//! (type, payload namespace, payload element, target), with its handler and the disco#info
//! features it serves. Both disco#info lists are computed from it (`features`), so a
//! feature is advertised exactly when a line serves it. A key that no line has is answered
//! `service-unavailable` by the dispatcher (`super`).

use herald_proto::ns;
use herald_proto::Element;

use crate::features::ctx::SessionCtx;
use crate::Shared;

use super::{basic, disco, extdisco, push, time, upload};
use super::{Advertised, Entry, Handler, IqType, Reply, Request, Target};
use crate::features::{avatar, bookmarks, carbons, pep, private as private_storage, vcard};
use crate::xep::mam::MAM_EXTENDED;
use herald_proto::error::StanzaErrorCondition;
use Advertised::{Nowhere, OnAccount, OnMucRoom, OnMucService, OnServer};
use Handler::{Async, Muc, Now, Store, WithSession};
use IqType::{Get, Set};
use Target::{MucRoom, MucService, Other, Own, Server};

/// Every IQ the server answers itself. To serve a new IQ, write its handler (a module of
/// `iq/` or a feature module with an adapter below) and add its line here.
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    //   type namespace          element      target  handler                         advertised in disco#info
    // The server's domain.
    iq(Get, ns::DISCO_INFO,  "query",     Server, Now(disco::info),               OnServer(&[ns::DISCO_INFO])),
    iq(Get, ns::DISCO_ITEMS, "query",     Server, Now(disco::items),              OnServer(&[ns::DISCO_ITEMS])),
    iq(Get, ns::PING,        "ping",      Server, Now(basic::pong),               OnServer(&[ns::PING])),
    iq(Get, ns::VERSION,     "query",     Server, Now(basic::version),            OnServer(&[ns::VERSION])),
    iq(Get, ns::TIME,        "time",      Server, Now(time::time),                OnServer(&[ns::TIME])),
    // An account's bare JID, asked by anyone (RFC 6121 §8.5.2.1.3) or by the account itself.
    iq(Get, ns::DISCO_INFO,  "query",     Other,  Now(disco::info),               OnAccount(&[ns::DISCO_INFO])),
    iq(Get, ns::DISCO_INFO,  "query",     Own,    Now(disco::info),               OnAccount(&[ns::DISCO_INFO])),
    // The client's own account (no `to`, or its bare JID).
    iq(Get, ns::PING,        "ping",      Own,    Now(basic::pong),               OnAccount(&[ns::PING])),
    // RFC 3921 legacy session: announced as a stream feature, not in disco.
    iq(Set, ns::SESSION,     "session",   Own,    Now(basic::legacy_session),     Nowhere),
    // RFC 6121 rosters are core; versioning (XEP-0237) is a stream feature.
    iq(Get, ns::ROSTER,      "query",     Own,    WithSession(roster),            Nowhere),
    iq(Set, ns::ROSTER,      "query",     Own,    WithSession(roster),            Nowhere),
    // XEP-0191 §2: a client asks its server's domain whether blocking is supported.
    iq(Get, ns::BLOCKING,    "blocklist", Own,    WithSession(blocking),          OnServer(&[ns::BLOCKING])),
    iq(Set, ns::BLOCKING,    "block",     Own,    WithSession(blocking),          OnServer(&[ns::BLOCKING])),
    iq(Set, ns::BLOCKING,    "unblock",   Own,    WithSession(blocking),          OnServer(&[ns::BLOCKING])),
    // XEP-0313 §7: a client asks its own bare JID about its archive.
    // XEP-0313 §6.1: `before-id`, `after-id` and `ids` are in the form and served.
    iq(Get, ns::MAM,         "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM, MAM_EXTENDED])),
    iq(Set, ns::MAM,         "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM, MAM_EXTENDED])),
    iq(Get, ns::MAM,         "prefs",     Own,    WithSession(mam),               OnAccount(&[ns::MAM])),
    iq(Set, ns::MAM,         "prefs",     Own,    WithSession(mam),               OnAccount(&[ns::MAM])),
    iq(Get, ns::MAM1,        "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM1])),
    iq(Set, ns::MAM1,        "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM1])),
    iq(Get, ns::MAM1,        "prefs",     Own,    WithSession(mam),               OnAccount(&[ns::MAM1])),
    iq(Set, ns::MAM1,        "prefs",     Own,    WithSession(mam),               OnAccount(&[ns::MAM1])),
    // XEP-0280 §3: a client asks its server's domain whether carbons are supported.
    iq(Set, ns::CARBONS,     "enable",    Own,    WithSession(carbons::enable),   OnServer(&[ns::CARBONS])),
    iq(Set, ns::CARBONS,     "disable",   Own,    WithSession(carbons::disable),  OnServer(&[ns::CARBONS])),
    // XEP-0357 §5: asked on the account's bare JID. Every notification an enabled
    // registration gets carries the Tigase priority hint, which clients look for there too.
    iq(Set, ns::PUSH,        "enable",    Own,    WithSession(push::command),     OnAccount(&[ns::PUSH, ns::PUSH_PRIORITY])),
    iq(Set, ns::PUSH,        "disable",   Own,    WithSession(push::command),     OnAccount(&[ns::PUSH])),
    // XEP-0054 §2: discovered on the server. The vCard is public: anyone reads it on the
    // account's bare JID (RFC 6121 §8.5.2.1.3), only the owner sets it (§3.3).
    iq(Get, ns::VCARD,       "vCard",     Own,    Store(vcard_get),               OnServer(&[ns::VCARD])),
    iq(Get, ns::VCARD,       "vCard",     Other,  Store(vcard_get),               OnServer(&[ns::VCARD])),
    iq(Set, ns::VCARD,       "vCard",     Own,    Store(vcard_set),               OnServer(&[ns::VCARD])),
    iq(Set, ns::VCARD,       "vCard",     Other,  Now(basic::forbidden),          Nowhere),
    // XEP-0049 defines no disco feature; Prosody's mod_private lists its namespace on the
    // server, where clients that check look. Another account's data: forbidden (§2.3).
    iq(Get, ns::PRIVATE,     "query",     Own,    Store(private),                 OnServer(&[ns::PRIVATE])),
    iq(Set, ns::PRIVATE,     "query",     Own,    Store(private),                 OnServer(&[ns::PRIVATE])),
    iq(Get, ns::PRIVATE,     "query",     Other,  Now(basic::forbidden),          Nowhere),
    iq(Set, ns::PRIVATE,     "query",     Other,  Now(basic::forbidden),          Nowhere),
    // XEP-0077 §3.2/§3.3 for a logged-in account (password change, removal); advertised on
    // the server, as Prosody does. Registration before login is the c2s negotiation's.
    iq(Get, ns::REGISTER,    "query",     Own,    WithSession(register),          OnServer(&[ns::REGISTER])),
    iq(Set, ns::REGISTER,    "query",     Own,    WithSession(register),          OnServer(&[ns::REGISTER])),
    // XEP-0363: the upload service is the domain itself (switched: `[upload]`, `[http]`).
    iq(Get, ns::HTTP_UPLOAD, "request",   Server, Now(upload::request),           OnServer(&[ns::HTTP_UPLOAD])),
    // XEP-0215 (switched: `[turn]`).
    iq(Get, ns::EXTDISCO,    "services",  Server, Now(extdisco::services),        OnServer(&[ns::EXTDISCO])),
    iq(Get, ns::EXTDISCO,    "credentials", Server, Now(extdisco::services),      OnServer(&[ns::EXTDISCO])),
    // XEP-0163 PEP on the account's bare JID: its own clients publish and manage nodes;
    // anyone (other accounts, other servers) may read what the access model admits.
    // A metadata publish also becomes the vCard photo (XEP-0398, `features::avatar`).
    // XEP-0048 bookmarks in PEP (`storage:bookmarks`) are the XEP-0402 node's (XEP-0411,
    // `features::bookmarks`, above `avatar`).
    iq(Set, ns::PUBSUB,      "pubsub",    Own,    Async(bookmarks::pubsub_set),   OnAccount(PEP_PUBLISH)),
    iq(Get, ns::PUBSUB,      "pubsub",    Own,    Async(bookmarks::pubsub_get),   OnAccount(&[PS_RETRIEVE_ITEMS, PS_ITEM_IDS])),
    iq(Get, ns::PUBSUB,      "pubsub",    Other,  Async(pep::handle),             OnAccount(&[PS_RETRIEVE_ITEMS, PS_ITEM_IDS])),
    iq(Set, ns::PUBSUB,      "pubsub",    Other,  Async(pep::handle),             Nowhere),
    iq(Get, ns::PUBSUB_OWNER, "pubsub",   Own,    Async(pep::handle),             OnAccount(&[PS_CONFIG_NODE, PS_RETRIEVE_DEFAULT])),
    iq(Set, ns::PUBSUB_OWNER, "pubsub",   Own,    Async(pep::handle),             OnAccount(&[PS_CONFIG_NODE, PS_DELETE_NODES, PS_PURGE_NODES])),
    iq(Get, ns::DISCO_ITEMS, "query",     Own,    Async(pep::disco_items),        OnAccount(&[ns::DISCO_ITEMS])),
    iq(Get, ns::DISCO_ITEMS, "query",     Other,  Async(pep::disco_items),        OnAccount(&[ns::DISCO_ITEMS])),
    // XEP-0045 group chat (`[muc] domain`): routing hands these to `features::muc`, which
    // answers a key only if it has a line here; herald-muc adds the room's muc_* features.
    iq(Get, ns::DISCO_INFO,  "query",     MucService, Muc,                        OnMucService(&[ns::DISCO_INFO])),
    iq(Get, ns::DISCO_ITEMS, "query",     MucService, Muc,                        OnMucService(&[ns::DISCO_ITEMS])),
    iq(Get, ns::PING,        "ping",      MucService, Muc,                        OnMucService(&[ns::PING])),
    iq(Get, ns::DISCO_INFO,  "query",     MucRoom, Muc,                           OnMucRoom(&[ns::DISCO_INFO])),
    iq(Get, ns::DISCO_ITEMS, "query",     MucRoom, Muc,                           OnMucRoom(&[ns::DISCO_ITEMS])),
    iq(Get, ns::PING,        "ping",      MucRoom, Muc,                           OnMucRoom(&[ns::PING])),
    iq(Get, ns::MUC_ADMIN,   "query",     MucRoom, Muc,                           Nowhere),
    iq(Set, ns::MUC_ADMIN,   "query",     MucRoom, Muc,                           Nowhere),
    iq(Get, ns::MUC_OWNER,   "query",     MucRoom, Muc,                           Nowhere),
    iq(Set, ns::MUC_OWNER,   "query",     MucRoom, Muc,                           Nowhere),
    // XEP-0486 room avatars: the room's vCard, set by owners, read by anyone.
    iq(Get, ns::VCARD,       "vCard",     MucRoom, Muc,                           OnMucRoom(&[ns::VCARD])),
    iq(Set, ns::VCARD,       "vCard",     MucRoom, Muc,                           OnMucRoom(&[ns::VCARD])),
    // XEP-0313 §5 on the room (left out of a room's disco#info when it keeps no archive).
    iq(Get, ns::MAM,         "query",     MucRoom, Muc,                           OnMucRoom(&[ns::MAM])),
    iq(Set, ns::MAM,         "query",     MucRoom, Muc,                           OnMucRoom(&[ns::MAM])),
];

// XEP-0060 §10 features of what `features::pep` serves.
const PS_RETRIEVE_ITEMS: &str = "http://jabber.org/protocol/pubsub#retrieve-items";
const PS_ITEM_IDS: &str = "http://jabber.org/protocol/pubsub#item-ids";
const PS_CONFIG_NODE: &str = "http://jabber.org/protocol/pubsub#config-node";
const PS_RETRIEVE_DEFAULT: &str = "http://jabber.org/protocol/pubsub#retrieve-default";
const PS_DELETE_NODES: &str = "http://jabber.org/protocol/pubsub#delete-nodes";
const PS_PURGE_NODES: &str = "http://jabber.org/protocol/pubsub#purge-nodes";
/// A publish auto-creates its node (with publish-options as preconditions), a retract may
/// notify, `create` makes a node; notifications follow presence and `+notify` caps; the
/// four access models are configurable; items persist.
const PEP_PUBLISH: &[&str] = &[
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
];

/// Whether a switched feature is on for this server's configuration.
pub type Switch = fn(&Shared) -> bool;

/// Lines served only when configured, by namespace: switched off, a line is as absent as
/// one never written (`service-unavailable`, not in disco#info).
pub static SWITCHED: &[(&str, Switch)] = &[
    (ns::HTTP_UPLOAD, upload::served),
    (ns::EXTDISCO, extdisco::served),
];

/// Whether `e` is served on this server (see [`SWITCHED`]).
pub fn switched_on(e: &Entry, shared: &Shared) -> bool {
    SWITCHED
        .iter()
        .find(|(ns, _)| *ns == e.ns)
        .is_none_or(|(_, on)| on(shared))
}

/// A table line (a constructor so each line stays one line).
const fn iq(
    typ: IqType,
    ns: &'static str,
    element: &'static str,
    target: Target,
    handler: Handler,
    advertised: Advertised,
) -> Entry {
    Entry {
        typ,
        ns,
        element,
        target,
        handler,
        advertised,
    }
}

/// The line serving this IQ, if any. A linear scan: the table has a few dozen lines and
/// string comparisons stop at the first differing byte, cheaper than hashing the key.
pub fn lookup(typ: IqType, payload: &Element, target: Target) -> Option<&'static Entry> {
    TABLE
        .iter()
        .find(|e| e.typ == typ && e.target == target && payload.is(e.element, e.ns))
}

// Adapters from the feature modules' async fns to `Handler::WithSession`.

fn roster<'a>(s: &'a mut SessionCtx, iq: &'a Element, _: &'a Element) -> Reply<'a> {
    Box::pin(crate::features::roster::handle_iq(s, iq))
}

fn blocking<'a>(s: &'a mut SessionCtx, iq: &'a Element, _: &'a Element) -> Reply<'a> {
    Box::pin(crate::features::blocking::handle_iq(s, iq))
}

fn mam<'a>(s: &'a mut SessionCtx, iq: &'a Element, payload: &'a Element) -> Reply<'a> {
    Box::pin(crate::features::mam::handle_iq(s, iq, payload))
}

// Adapters to `Handler::Store`: the account is set for `Own` and `Other` lines.

fn vcard_get<'a>(r: &'a Request<'a>) -> Reply<'a> {
    Box::pin(async move {
        match r.account {
            Some(a) => vcard::get(r.shared, r.iq, a).await,
            None => super::error(r.iq, StanzaErrorCondition::ServiceUnavailable),
        }
    })
}

fn vcard_set<'a>(r: &'a Request<'a>) -> Reply<'a> {
    Box::pin(async move {
        match r.account {
            Some(a) => avatar::vcard_set(r.shared, r.iq, r.payload, a).await,
            None => super::error(r.iq, StanzaErrorCondition::ServiceUnavailable),
        }
    })
}

fn private<'a>(r: &'a Request<'a>) -> Reply<'a> {
    Box::pin(async move {
        match r.account {
            Some(a) => private_storage::query(r.shared, r.iq, r.payload, a).await,
            None => super::error(r.iq, StanzaErrorCondition::ServiceUnavailable),
        }
    })
}

fn register<'a>(s: &'a mut SessionCtx, iq: &'a Element, payload: &'a Element) -> Reply<'a> {
    Box::pin(crate::features::register::own_iq(s, iq, payload))
}
