//! Federation and components: other servers (XEP-0178/0220 server-to-server, `s2s`) and
//! external components (XEP-0114, `component`). Stanzas they deliver enter
//! `crate::routing::route` once their addresses are checked; stanzas for them leave through
//! the `to_remote` hook and the router's component table.
pub mod component;
pub mod s2s;
