//! Features: what the server does with the stanzas routing hands it, one module per
//! feature, each with a header saying what it owns and what it must not touch. A feature
//! registers its stanza hooks and observers in `crate::standard_hooks` and its IQs as lines
//! of the IQ table (`iq::table`); it sees a session only as a `ctx::SessionCtx`, and routes
//! through `crate::routing`, never into another session.
pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod carbons;
pub mod ctx;
pub mod iq;
pub mod mam;
pub mod mds;
pub mod message;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod vcard;
