//! Operators: the server side of administration. The admin socket takes the CLI's notices
//! and requests (an account removed or its password changed, roster and push changes,
//! `herald push test`) and acts on the running server; `accounts` is what the server knows of
//! accounts those commands changed under their sessions. The CLI side, which works on the
//! store directly, is `herald::admin` in the herald crate.

pub mod accounts;
pub mod admin_socket;
