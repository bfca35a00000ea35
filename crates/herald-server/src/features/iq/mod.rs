//! IQs the server answers itself: to a served domain, to an account's bare JID on the
//! account's behalf (RFC 6121 §8.5.2.1.3), and a client's own IQs (no `to`, or its bare JID).
//!
//! This module owns the answer to every such `get`/`set`: [`table`] lists each one, keyed by
//! (type, payload namespace, payload element, target), with its handler and the disco#info
//! features it serves; the dispatchers below look the key up and answer a miss with
//! `service-unavailable` (RFC 6120 §8.3.3.19). disco#info ([`disco`]) is built from the
//! table, so a feature is advertised exactly when a line serves it.
//!
//! It does not touch what a feature does: roster, blocking, MAM and push state live in
//! their modules (`crate::features::roster`, `crate::features::blocking`, `crate::features::mam`, `crate::features::push`), which
//! the table reaches through their `handle_iq`-style functions; nor does it route: IQs to
//! full JIDs and to other domains go through `crate::routing`, and `crate::c2s::session` decides
//! which IQs are the client's own. Results and errors are not answered here; those addressed
//! to the server go to the push task (replies to its publishes).
//!
//! To serve a new IQ: write its handler in a module here (declared below), or give a feature
//! module's async fn an adapter at the end of `table.rs`; then add one line per key it
//! serves to [`table::TABLE`], naming the features it makes true. disco#info follows by
//! itself; `tests/disco.rs` pins both lists, so a change in what is advertised shows there.

mod basic;
pub mod beyond;
pub mod disco;
mod extdisco;
pub mod push;
pub mod table;
mod time;
mod upload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_proto::error::StanzaErrorCondition;
use herald_proto::Element;

use crate::features::ctx::SessionCtx;
use crate::routing;
use crate::routing::hooks::{Fut, IqToLocal, ToServer};
use crate::stanza::{self, Kind};
use crate::Shared;
use herald_proto::jid::Jid;

/// A stanza addressed to a served domain; returns the reply to route, if any.
pub async fn handle_server_stanza(shared: &Arc<Shared>, el: &Element) -> Option<Element> {
    if stanza::kind(el) != Some(Kind::Iq) {
        // Messages and presence to the server itself are not acted on.
        return None;
    }
    let Some(typ) = IqType::of(el) else {
        // The server asks app servers (push publishes); their results and errors come here.
        shared.push.on_reply(el);
        return None;
    };
    answer_without_session(shared, el, typ, Target::Server, None).await
}

/// An IQ from someone else to an account's bare JID (RFC 6121 §8.5.2.1.3).
pub async fn handle_account_iq_from_other(
    shared: &Arc<Shared>,
    bare: &str,
    el: &Element,
) -> Option<Element> {
    // A result or error to a bare JID answers nothing the server asked: dropped.
    let typ = IqType::of(el)?;
    answer_without_session(shared, el, typ, Target::Other, Some(bare)).await
}

/// A client's IQ to its own account (no `to`, or its bare JID). Returns the reply for the client.
pub async fn handle_own_iq(session: &mut SessionCtx, el: &Element) -> Option<Element> {
    let Some(payload) = stanza::payload(el) else {
        return stanza::error(el, StanzaErrorCondition::BadRequest, None);
    };
    let typ = IqType::of(el)?;
    let shared = session.shared.clone();
    match table::lookup(typ, payload, Target::Own)
        .filter(|e| table::switched_on(e, &shared))
        .map(|e| e.handler)
    {
        Some(Handler::Now(f)) => Some(f(&Request {
            shared: &shared,
            iq: el,
            payload,
            target: Target::Own,
            account: Some(&session.bare),
        })),
        Some(Handler::WithSession(f)) => Some(f(session, el, payload).await),
        Some(Handler::Store(f)) => {
            let shared = session.shared.clone();
            Some(
                f(&Request {
                    shared: &shared,
                    iq: el,
                    payload,
                    target: Target::Own,
                    account: Some(&session.bare),
                })
                .await,
            )
        }
        Some(Handler::Async(f)) => {
            let shared = session.shared.clone();
            Some(f(&shared, el, payload, &session.bare).await)
        }
        Some(Handler::Muc) | None => {
            stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None)
        }
    }
}

/// Whether `el`, addressed to `to`, is an IQ to the client's own server that only its own
/// session can answer, so it is handled as one of its own IQs: XEP-0077 §3.3's example
/// addresses a password change to the server, and clients follow it (also for a removal),
/// yet it is the account's own business.
pub fn own_at_server(el: &Element, to: &Jid, own_domain: &str) -> bool {
    to.node().is_none()
        && to.resource().is_none()
        && to.domain().as_str() == own_domain
        && stanza::payload(el).is_some_and(|p| p.is("query", herald_proto::ns::REGISTER))
}

/// Answers a `get`/`set` to the server or to an account from someone else.
async fn answer_without_session(
    shared: &Arc<Shared>,
    el: &Element,
    typ: IqType,
    target: Target,
    account: Option<&str>,
) -> Option<Element> {
    let Some(payload) = stanza::payload(el) else {
        return stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None);
    };
    match table::lookup(typ, payload, target)
        .filter(|e| table::switched_on(e, shared))
        .map(|e| e.handler)
    {
        Some(Handler::Now(f)) => Some(f(&Request {
            shared,
            iq: el,
            payload,
            target,
            account,
        })),
        Some(Handler::Store(f)) => Some(
            f(&Request {
                shared,
                iq: el,
                payload,
                target,
                account,
            })
            .await,
        ),
        Some(Handler::Async(f)) => match account {
            Some(a) => Some(f(shared, el, payload, a).await),
            // Registered for accounts only: the server's domain has no owner to act for.
            None => stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None),
        },
        // Registered for `Target::Own` only (a unit test checks): nobody to run it with.
        // MUC lines are answered by the MUC feature, which routing reaches first.
        Some(Handler::WithSession(_)) | Some(Handler::Muc) | None => {
            stanza::error(el, StanzaErrorCondition::ServiceUnavailable, None)
        }
    }
}

/// The error answer to a `get`/`set` (which always has one).
fn error(el: &Element, cond: StanzaErrorCondition) -> Element {
    stanza::error(el, cond, None).unwrap_or_else(|| stanza::iq_result(el, None))
}

// In `ctx`, a leaf, so that features `iq` names (blocking) can use them too.
pub use crate::features::ctx::{store_condition, store_failed};

/// The `to_server` hook: IQs to a served domain are answered; replies to the server's
/// own requests go to the push task; other stanzas to the server are not acted on.
pub fn to_server(shared: &Arc<Shared>, ev: ToServer) -> Fut<'_, Option<ToServer>> {
    Box::pin(async move {
        if let Some(reply) = handle_server_stanza(shared, &ev.el).await {
            routing::route(shared, reply).await;
        }
        None
    })
}

/// The `iq_to_local` hook: IQs to an account's bare JID are answered on its behalf, IQs to
/// a full JID go to that resource (RFC 6121 §8.5.2, §8.5.3.2.3).
pub fn to_local(shared: &Arc<Shared>, ev: IqToLocal) -> Fut<'_, Option<IqToLocal>> {
    Box::pin(async move {
        let IqToLocal { bare, to, el } = ev;
        deliver(shared, &bare, &to, el).await;
        None
    })
}

async fn deliver(shared: &Arc<Shared>, bare: &str, to: &Jid, el: Element) {
    // XEP-0191 §3.3: nothing from a blocked JID reaches the account, and IQs get
    // `service-unavailable`, whether to a resource or to the bare JID the server answers for
    // (vCard, disco, PEP: a blocked contact learns no more than a stranger does).
    if let Ok(Some(from)) = stanza::from(&el) {
        if crate::features::blocking::inbound_blocked(shared, bare, &from).await {
            return routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await;
        }
    }
    let Some(res) = to.resource() else {
        // RFC 6121 §8.5.2.1.3: the server answers IQs to the bare JID on the account's behalf.
        if let Some(reply) = handle_account_iq_from_other(shared, bare, &el).await {
            routing::route(shared, reply).await;
        }
        return;
    };
    match shared.router.resource(bare, res.as_str()) {
        Some(r) => match routing::send_to(shared, &r, el) {
            Ok(()) => {}
            Err(Some(el)) if r.tx.is_closed() => {
                routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await
            }
            Err(Some(el)) => {
                routing::bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await
            }
            Err(None) => {}
        },
        None => routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
    }
}

/// `get` or `set`: the IQ types that ask for something (results and errors are answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    /// `type='get'`.
    Get,
    /// `type='set'`.
    Set,
}

impl IqType {
    /// The type of a request IQ; None for `result`, `error` and anything else.
    pub fn of(iq: &Element) -> Option<IqType> {
        match crate::stanza::typ(iq) {
            "get" => Some(IqType::Get),
            "set" => Some(IqType::Set),
            _ => None,
        }
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
        }
    }
}

/// To whom an IQ is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A served domain (or a resource of it).
    Server,
    /// The sender's own account: no `to`, or the sender's bare JID. Only these have the
    /// sender's session at hand.
    Own,
    /// A local account's bare JID, from anyone else (another account, a component, s2s).
    Other,
    /// The group chat service's domain (`[muc] domain`).
    MucService,
    /// A room of the group chat service (its bare JID).
    MucRoom,
}

/// Which disco#info a feature is listed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disco {
    /// The served domain's.
    Server,
    /// Every account's bare JID's (the same list whoever asks).
    Account,
    /// The group chat service's.
    MucService,
    /// Every room's (herald-muc adds what follows from the room's configuration).
    MucRoom,
}

/// Where a line's features are advertised. Not always where it is served: XEP-0280 and
/// XEP-0191 are served on the client's own account but discovered on its server's domain.
#[derive(Clone, Copy, Debug)]
pub enum Advertised {
    /// In the server's disco#info.
    OnServer(&'static [&'static str]),
    /// In every account's disco#info.
    OnAccount(&'static [&'static str]),
    /// In the group chat service's disco#info.
    OnMucService(&'static [&'static str]),
    /// In every room's disco#info.
    OnMucRoom(&'static [&'static str]),
    /// Not in disco (core protocol, or announced as a stream feature).
    Nowhere,
}

/// A session-bound handler's answer, boxed so different async fns fit one table.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Element> + Send + 'a>>;

/// How a line is answered. A handler gets only keys it is registered for, so it need not
/// check the type, namespace or element again; it returns the reply to a `get`/`set`.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Answered at once from the request and the shared state.
    Now(fn(&Request<'_>) -> Element),
    /// Needs the asking client's session (roster interest, carbons flag, push attachment) and
    /// may wait on the store or the push task: `(session, iq, payload)`. Only for
    /// [`Target::Own`]; other senders have no session here (a unit test checks).
    WithSession(for<'a> fn(&'a mut SessionCtx, &'a Element, &'a Element) -> Reply<'a>),
    /// Needs the store but not the asking client's session (a vCard read by anyone): may
    /// wait, for any target.
    Store(for<'a> fn(&'a Request<'a>) -> Reply<'a>),
    /// Acts for an account (its bare JID is the last argument) on behalf of whoever asks,
    /// the account's own client or anyone else, and may wait on the store:
    /// `(shared, iq, payload, account)`. The IQ's stamped `from` says who asks.
    Async(for<'a> fn(&'a Arc<Shared>, &'a Element, &'a Element, &'a str) -> Reply<'a>),
    /// Answered by the group chat feature (`crate::features::muc`), to which routing hands
    /// every stanza for the MUC domain; only for [`Target::MucService`] and
    /// [`Target::MucRoom`].
    Muc,
}

/// One IQ being answered by a [`Handler::Now`].
pub struct Request<'a> {
    /// The server state.
    pub shared: &'a Arc<Shared>,
    /// The IQ (its `from` is stamped and trustworthy).
    pub iq: &'a Element,
    /// Its payload, the element the line is keyed by.
    pub payload: &'a Element,
    /// To whom it is addressed.
    pub target: Target,
    /// The account's bare JID for [`Target::Own`] and [`Target::Other`].
    pub account: Option<&'a str>,
}

/// One line of the table.
#[derive(Clone, Copy)]
pub struct Entry {
    /// `get` or `set`.
    pub typ: IqType,
    /// The payload's namespace.
    pub ns: &'static str,
    /// The payload's element name.
    pub element: &'static str,
    /// To whom it is addressed.
    pub target: Target,
    /// Who answers.
    pub handler: Handler,
    /// The disco#info features this line serves.
    pub advertised: Advertised,
}

impl Entry {
    /// The features this line adds to `disco`'s list.
    pub fn features_on(&self, disco: Disco) -> &'static [&'static str] {
        match (self.advertised, disco) {
            (Advertised::OnServer(f), Disco::Server)
            | (Advertised::OnAccount(f), Disco::Account)
            | (Advertised::OnMucService(f), Disco::MucService)
            | (Advertised::OnMucRoom(f), Disco::MucRoom) => f,
            _ => &[],
        }
    }
}

/// The features `disco` lists: those of every line, in table order, then those served
/// outside the table ([`beyond::SERVED`]), each once.
pub fn features(disco: Disco) -> Vec<&'static str> {
    features_of(disco, table::TABLE.iter())
}

/// The features `disco` lists on this server: those of the lines switched on
/// ([`table::switched_on`]).
pub fn features_served(disco: Disco, shared: &crate::Shared) -> Vec<&'static str> {
    features_of(
        disco,
        table::TABLE
            .iter()
            .filter(|e| table::switched_on(e, shared)),
    )
}

fn features_of<'a>(disco: Disco, lines: impl Iterator<Item = &'a Entry>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let beyond = beyond::SERVED
        .iter()
        .filter(|s| s.announced == beyond::Announced::Disco(disco))
        .map(|s| &s.var);
    for f in lines.flat_map(|e| e.features_on(disco)).chain(beyond) {
        if !out.contains(f) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::StoreError;

    fn busy() -> StoreError {
        // What rusqlite gives when another connection holds the lock past the busy timeout.
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        StoreError::from(e)
    }

    /// The `<error type=…>` and condition of an answer.
    fn answer(el: &Element) -> (String, String) {
        let err = el.get_child("error", herald_proto::stream::INTERNAL_NS);
        let kind = err.and_then(|e| e.attr("type")).unwrap_or_default();
        let cond = err
            .and_then(|e| {
                e.children()
                    .find(|c| c.ns() == herald_proto::ns::STANZAS_ERR && c.name() != "text")
            })
            .map(|c| c.name().to_string())
            .unwrap_or_default();
        (kind.to_string(), cond)
    }

    #[test]
    fn a_transient_store_failure_asks_the_client_to_retry() {
        let iq: Element = "<iq xmlns='jabber:client' type='get' id='r1' from='a@b/c' to='a@b'>\
             <query xmlns='jabber:iq:roster'/></iq>"
            .parse()
            .unwrap();
        let transient = [
            busy(),
            StoreError::Unavailable("no connection in 5 s".into()),
        ];
        for e in &transient {
            assert!(
                matches!(e, StoreError::Busy(_) | StoreError::Unavailable(_)),
                "{e:?}"
            );
            let reply = store_failed(&iq, e);
            assert_eq!(reply.attr("type"), Some("error"));
            assert_eq!(reply.attr("id"), Some("r1"));
            assert_eq!(
                answer(&reply),
                ("wait".into(), "resource-constraint".into()),
                "{e:?}"
            );
        }
        let lasting = [
            StoreError::Corrupt("unknown schema 9".into()),
            StoreError::Unsupported("roster"),
            StoreError::Io(std::io::Error::other("disk")),
        ];
        for e in &lasting {
            assert_eq!(
                answer(&store_failed(&iq, e)),
                ("wait".into(), "internal-server-error".into()),
                "{e:?}"
            );
        }
    }
}
