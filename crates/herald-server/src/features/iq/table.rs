//! The IQ table: every `get`/`set` the server answers itself, one line each, keyed by
//! (type, payload namespace, payload element, target), with its handler and the disco#info
//! features it serves. Both disco#info lists are computed from it ([`features`]), so a
//! feature is advertised exactly when a line serves it. A key that no line has is answered
//! `service-unavailable` by the dispatcher (`super`).

use herald_proto::ns;
use herald_proto::Element;

use crate::features::ctx::SessionCtx;

use super::{basic, disco, push, time};
use super::{Advertised, Entry, Handler, IqType, Reply, Target};
use crate::features::carbons;
use Advertised::{Nowhere, OnAccount, OnMucRoom, OnMucService, OnServer};
use Handler::{Muc, Now, WithSession};
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
    iq(Get, ns::MAM,         "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM])),
    iq(Set, ns::MAM,         "query",     Own,    WithSession(mam),               OnAccount(&[ns::MAM])),
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
    // XEP-0313 §5 on the room (left out of a room's disco#info when it keeps no archive).
    iq(Get, ns::MAM,         "query",     MucRoom, Muc,                           OnMucRoom(&[ns::MAM])),
    iq(Set, ns::MAM,         "query",     MucRoom, Muc,                           OnMucRoom(&[ns::MAM])),
];

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
