//! The `herald` command line's library side: [`admin`], what the CLI does to the store and
//! asks of a running server (accounts, rosters, push registrations, `herald push test`).
//! `src/main.rs` parses the command line and calls it; herald-server's integration tests use
//! it as an operator would.

pub mod admin;
