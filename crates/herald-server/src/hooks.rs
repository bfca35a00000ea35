//! Typed hooks: how routing hands a stanza to the features without knowing them. Each event
//! is a struct; each hook is a list of handlers, registered once at start in a fixed order
//! (`Hooks::standard` in the crate root). A handler takes the event and either consumes it
//! (returns `None`) or passes it on, possibly changed, to the next one. Routing runs the list
//! and is done; so routing names no feature module, and features may call routing without a
//! circle.
//!
//! This module owns the event shapes and the running of the lists, nothing else: it names no
//! feature, session or socket module.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_proto::jid::Jid;
use herald_proto::Element;

use crate::msg::Routed;
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
}

/// Runs `list` over `ev`: each handler in turn until one consumes it. Returns the event if
/// none did (nobody handles it: dropped by the caller).
pub async fn run<E>(list: &[Handler<E>], shared: &Arc<Shared>, mut ev: E) -> Option<E> {
    for h in list {
        ev = h(shared, ev).await?;
    }
    Some(ev)
}
