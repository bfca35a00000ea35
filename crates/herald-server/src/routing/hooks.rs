//! Typed hooks: how routing hands a stanza to the features, and how a feature tells others
//! what happened, without knowing them. Each event is a struct; each hook is a list of
//! handlers registered once at start in a fixed order (`standard_hooks` in the crate root).
//!
//! - Stanza hooks ([`Handler`]): a handler takes the event and either consumes it (returns
//!   `None`) or passes it on, possibly changed, to the next one. Routing runs the list and is
//!   done; so routing names no feature module, and features may call routing without a circle.
//! - Observer hooks ([`Observer`]): told after the fact (archived, stored offline, a session
//!   started, hibernated, resumed or ended); they cannot stop or change anything and must not
//!   block (the push glue turns them into events for its task).
//!
//! This module owns the event shapes and the running of the lists, nothing else: it names no
//! feature, session or socket module.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_proto::jid::Jid;
use herald_proto::Element;

use herald_push::StanzaInfo;

use crate::routing::msg::{Routed, SessionTx};
use crate::Shared;

/// A boxed future, so handlers of different modules fit one list.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler of event `E`: `Some(event)` passes it on, `None` means it was consumed.
pub type Handler<E> = for<'a> fn(&'a Arc<Shared>, E) -> Fut<'a, Option<E>>;

/// A message for an existing local account (RFC 6121 §8.5), its `from` stamped.
#[derive(Debug)]
pub struct MessageToLocal {
    /// The account.
    pub bare: String,
    /// The address it was sent to (the bare JID or one of its full JIDs).
    pub to: Jid,
    /// The message with its routing id.
    pub routed: Routed,
}

/// A presence for an existing local account, its `from` stamped.
#[derive(Debug)]
pub struct PresenceToLocal {
    /// The account.
    pub bare: String,
    /// The address it was sent to.
    pub to: Jid,
    /// The presence.
    pub el: Element,
}

/// An IQ for an existing local account (its bare JID or a full JID), its `from` stamped.
#[derive(Debug)]
pub struct IqToLocal {
    /// The account.
    pub bare: String,
    /// The address it was sent to.
    pub to: Jid,
    /// The IQ.
    pub el: Element,
}

/// A stanza to a served domain itself (or a resource of it).
#[derive(Debug)]
pub struct ToServer {
    /// The stanza.
    pub el: Element,
}

/// A stanza for a domain that is neither served nor a component's.
#[derive(Debug)]
pub struct ToRemote {
    /// The stanza.
    pub el: Element,
}

/// A stanza for the group chat service (`[muc] domain`) or one of its rooms and occupants,
/// its `from` stamped.
#[derive(Debug)]
pub struct ToMuc {
    /// The stanza.
    pub el: Element,
}

/// An observer of event `E`. It gets the event by value: the last observer of a list takes
/// it without a copy (today each list has one), the others get clones.
pub type Observer<E> = fn(&Shared, E);

/// A message was committed to `user`'s archive (push rule b).
#[derive(Clone, Debug)]
pub struct Archived {
    /// The account.
    pub user: String,
    /// What the push rules need to know of it.
    pub stanza: StanzaInfo,
}

/// A message was stored offline for `user` (push rule c).
#[derive(Clone, Debug)]
pub struct StoredOffline {
    /// The account.
    pub user: String,
    /// What the push rules need to know of it.
    pub stanza: StanzaInfo,
}

/// A message for `user` reached no session and was not stored: a groupchat message to the
/// bare JID with no resource online (RFC 6121 §8.5.2.1.1).
#[derive(Clone, Debug)]
pub struct DeliveryFailed {
    /// The account.
    pub user: String,
    /// What the push rules need to know of it.
    pub stanza: StanzaInfo,
}

/// A session was bound.
#[derive(Clone, Debug)]
pub struct SessionStarted {
    /// The account.
    pub user: String,
    /// The session's id.
    pub session: u64,
    /// Its resource.
    pub resource: String,
    /// Its inbox.
    pub tx: SessionTx,
    /// Bound through XEP-0386 Bind2 with the resource its XEP-0388 client id derives: the
    /// same device as the earlier sessions of that resource.
    pub by_client_id: bool,
}

/// A session lost its connection and waits to be resumed (XEP-0198).
#[derive(Clone, Debug)]
pub struct SessionHibernated {
    /// The session's id.
    pub session: u64,
    /// What the push rules need to know of each stanza the client has not acknowledged.
    pub unacked: Vec<StanzaInfo>,
}

/// A hibernated session was resumed.
#[derive(Clone, Debug)]
pub struct SessionResumed {
    /// The session's id.
    pub session: u64,
}

/// A session is gone for good.
#[derive(Clone, Debug)]
pub struct SessionEnded {
    /// The session's id.
    pub session: u64,
}

/// An account's PEP node got an item (published by one of its clients or by the server for
/// it), after it was stored: for features that react to what clients keep in PEP (XEP-0490
/// read markers) without PEP knowing them.
#[derive(Clone, Debug)]
pub struct PepPublished {
    /// The account.
    pub user: String,
    /// The node.
    pub node: String,
    /// The item's id.
    pub id: String,
    /// The item's payload.
    pub payload: Element,
}

/// The handlers of every hook, in the order they run.
pub struct Hooks {
    /// Messages to local accounts.
    pub message_to_local: Vec<Handler<MessageToLocal>>,
    /// Presence to local accounts.
    pub presence_to_local: Vec<Handler<PresenceToLocal>>,
    /// IQs to local accounts.
    pub iq_to_local: Vec<Handler<IqToLocal>>,
    /// Stanzas to the server itself.
    pub to_server: Vec<Handler<ToServer>>,
    /// Stanzas to other domains.
    pub to_remote: Vec<Handler<ToRemote>>,
    /// A message was archived.
    pub archived: Vec<Observer<Archived>>,
    /// A message was stored offline.
    pub stored_offline: Vec<Observer<StoredOffline>>,
    /// A message reached nobody and was not stored.
    pub delivery_failed: Vec<Observer<DeliveryFailed>>,
    /// A session was bound.
    pub session_started: Vec<Observer<SessionStarted>>,
    /// A session hibernated.
    pub session_hibernated: Vec<Observer<SessionHibernated>>,
    /// A session was resumed.
    pub session_resumed: Vec<Observer<SessionResumed>>,
    /// A session ended.
    pub session_ended: Vec<Observer<SessionEnded>>,
    /// Stanzas to the group chat service.
    pub to_muc: Vec<Handler<ToMuc>>,
    /// A PEP item was published.
    pub pep_published: Vec<Handler<PepPublished>>,
}

/// Runs `list` over `ev`: each handler in turn until one consumes it. Returns the event if
/// none did (nobody handles it: dropped by the caller).
pub async fn run<E>(list: &[Handler<E>], shared: &Arc<Shared>, mut ev: E) -> Option<E> {
    for h in list {
        ev = h(shared, ev).await?;
    }
    Some(ev)
}

/// Tells every observer in `list` of `ev`, in order.
pub fn notify<E: Clone>(list: &[Observer<E>], shared: &Shared, ev: E) {
    if let Some((last, rest)) = list.split_last() {
        for o in rest {
            o(shared, ev.clone());
        }
        last(shared, ev);
    }
}
