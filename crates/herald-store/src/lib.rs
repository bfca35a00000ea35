//! Herald's storage: role-sized traits, their embedded SQLite backend ([`Store`]) and their
//! PostgreSQL backend ([`PgStore`]).
//!
//! Each role the server needs (accounts, roster, offline messages, blocking, the message
//! archive, push registrations, XEP-0198 sessions, vCards, private XML) is a small trait implemented by [`Store`], so a feature module
//! depends only on the role it uses and another backend (PostgreSQL, `pg/`) implements the
//! same traits and passes the same `conformance` suite (module behind the `conformance`
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
mod fast;
pub mod group_commit;
pub mod histogram;
mod invite;
mod muc;
mod offline;
mod pep;
mod pg;
mod private;
mod push;
pub mod push_stats;
mod roster;
mod session;
pub mod space;
mod sqlite;
mod upload;
mod usage;
mod vcard;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pg_tests;

pub use account::{AccountStore, Credentials, ScramRecord};
pub use archive::{ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, MamPrefs};
pub use block::BlockStore;
pub use error::{Result, StoreError};
pub use fast::{FastTokenRecord, FastTokenStore};
pub use invite::{Invite, InviteStore};
pub use muc::{MucRoom, MucStore};
pub use offline::{OfflineMessage, OfflineStore};
pub use pep::{PepItem, PepLimits, PepPublish, PepStore};
pub use pg::{sqlite_file, CopiedTable, PgOptions, PgStore};
pub use private::{PrivateItem, PrivateStore};
pub use push::{
    PushRegistration, PushRemoval, PushStatsUpdate, PushStore, RemovalNote, MAX_REMOVALS_PER_USER,
};
pub use roster::{RosterItem, RosterStore, Subscription};
pub use session::{SavedSession, SessionStore, SmQueued, SmSessionRecord};
pub use sqlite::{Durability, Store, StoreOptions};
pub use upload::{Upload, UploadStore};
pub use usage::Usage;
pub use vcard::{StoredVcard, VcardStore};

/// A whole backend: every role at once. The server holds one as `Arc<dyn Backend>` and
/// never names [`Store`], so its modules reach only the roles whose traits they import and
/// another engine plugs in by implementing the role traits. `Any` lets a test look at the
/// engine behind it.
pub trait Backend:
    AccountStore
    + ArchiveStore
    + BlockStore
    + OfflineStore
    + PushStore
    + RosterStore
    + SessionStore
    + VcardStore
    + PrivateStore
    + InviteStore
    + UploadStore
    + FastTokenStore
    + PepStore
    + MucStore
    + std::any::Any
    + Send
    + Sync
{
}

impl Backend for Store {}

/// A shared handle on a backend.
pub type SharedBackend = std::sync::Arc<dyn Backend>;

/// The roles a server module asks the backend for, as trait objects: a module names the one
/// it needs (`|s: &roles::Roster| …`), so it can reach nothing else of the store.
pub mod roles {
    use super::*;

    /// Accounts and credentials.
    pub type Accounts = dyn AccountStore + Send + Sync;
    /// The message archive and its preferences.
    pub type Archive = dyn ArchiveStore + Send + Sync;
    /// Blocklists.
    pub type Blocks = dyn BlockStore + Send + Sync;
    /// Offline messages.
    pub type Offline = dyn OfflineStore + Send + Sync;
    /// Push registrations and their statistics.
    pub type Push = dyn PushStore + Send + Sync;
    /// Rosters and subscription requests.
    pub type Roster = dyn RosterStore + Send + Sync;
    /// Saved XEP-0198 sessions, tombstones and flags.
    pub type Sessions = dyn SessionStore + Send + Sync;
    /// vCards (XEP-0054) and their avatar hashes (XEP-0153).
    pub type Vcard = dyn VcardStore + Send + Sync;
    /// Private XML storage (XEP-0049).
    pub type Private = dyn PrivateStore + Send + Sync;
    /// XEP-0363 uploads and their owners' totals.
    pub type Uploads = dyn UploadStore + Send + Sync;
    /// PEP nodes and items (XEP-0163).
    pub type Pep = dyn PepStore + Send + Sync;
    /// Saved group chat rooms.
    pub type Muc = dyn MucStore + Send + Sync;
    /// Every role, for the few operations that span several (an account's removal).
    pub type All = dyn Backend;
    /// Registration invites (XEP-0401/XEP-0445).
    pub type Invites = dyn InviteStore + Send + Sync;
    /// XEP-0484 FAST tokens.
    pub type FastTokens = dyn FastTokenStore + Send + Sync;
}

/// A role a backend plays: how to see a whole backend as it.
pub trait Role: Send + Sync {
    /// The backend in this role.
    fn of(backend: &dyn Backend) -> &Self;
}

macro_rules! role {
    ($($t:ty),*) => {$(
        impl Role for $t {
            fn of(backend: &dyn Backend) -> &Self {
                backend
            }
        }
    )*};
}

role!(
    roles::Accounts,
    roles::Archive,
    roles::Blocks,
    roles::Offline,
    roles::Push,
    roles::Roster,
    roles::Sessions,
    roles::All,
    roles::Vcard,
    roles::Private,
    roles::Invites,
    roles::Uploads,
    roles::FastTokens,
    roles::Pep,
    roles::Muc
);
