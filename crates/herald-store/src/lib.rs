//! Herald's storage: role-sized traits and their embedded SQLite backend.
//!
//! Each role the server needs (accounts, roster, offline messages, blocking, the message
//! archive, push registrations, XEP-0198 sessions) is a small trait implemented by [`Store`], so a feature module
//! depends only on the role it uses and another backend (PostgreSQL later) can implement the
//! same traits and pass the same `conformance` suite (module behind the `conformance`
//! feature).
//!
//! Everything is plain data here: users are bare JID strings (`"user@domain"`, so several
//! domains can share one store), peers are JID strings, stanzas are serialized XML text. This
//! crate must not know XMPP routing or parse stanzas; deciding *what* to store is the server's
//! job, this crate only makes it durable and finds it again.
//!
//! All calls block; the async server calls them from `spawn_blocking`. The one exception is
//! [`group_commit`], the archive's batching writer: a thread of its own that commits every
//! archive write waiting at that moment in one transaction, with an async handle.
//!
//! [`cache`] holds per-user values read from the store in memory (the server keeps archive
//! preferences and blocklists there); it never touches the store itself.

mod account;
mod archive;
mod block;
pub mod cache;
mod error;
pub mod group_commit;
mod offline;
mod push;
pub mod push_stats;
mod roster;
mod session;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

pub use account::{AccountStore, Credentials, ScramRecord};
pub use archive::{ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, MamPrefs};
pub use block::BlockStore;
pub use error::{Result, StoreError};
pub use offline::{OfflineMessage, OfflineStore};
pub use push::{
    PushRegistration, PushRemoval, PushStatsUpdate, PushStore, RemovalNote, MAX_REMOVALS_PER_USER,
};
pub use roster::{RosterItem, RosterStore, Subscription};
pub use session::{SavedSession, SessionStore, SmQueued, SmSessionRecord};
pub use sqlite::{Durability, Store, StoreOptions};
