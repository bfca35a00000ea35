//! Administration used by the CLI: accounts (and later rosters and push registrations),
//! directly on the store so it works whether the server runs or not.

use anyhow::{anyhow, bail, Context, Result};
use herald_proto::jid::BareJid;
use herald_store::{AccountStore, Store, StoreError};

use crate::negotiate::make_credentials;
use crate::Config;

/// Opens the configured store.
pub fn open_store(cfg: &Config) -> Result<Store> {
    Store::open(&cfg.data_dir)
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))
}

/// Parses `user@domain` or `user` into an account JID of the configured domain.
pub fn account_jid(cfg: &Config, s: &str) -> Result<BareJid> {
    let full = if s.contains('@') {
        s.to_string()
    } else {
        format!("{s}@{}", cfg.domain)
    };
    let jid = BareJid::new(&full).map_err(|e| anyhow!("{s:?} is not a valid JID: {e}"))?;
    if jid.node().is_none() {
        bail!("{s:?} has no user part");
    }
    if !cfg.is_local(jid.domain().as_str()) {
        bail!(
            "{s:?} is not on a domain this server serves ({})",
            cfg.local_domains().join(", ")
        );
    }
    Ok(jid)
}

/// Creates an account.
pub fn add_user(store: &Store, jid: &BareJid, password: &str) -> Result<()> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    match store.create_account(&jid.to_string(), &creds) {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists) => bail!("{jid} already exists"),
        Err(e) => Err(e.into()),
    }
}

/// Changes a password.
pub fn set_password(store: &Store, jid: &BareJid, password: &str) -> Result<()> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    match store.set_credentials(&jid.to_string(), &creds) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => bail!("{jid}: no such user"),
        Err(e) => Err(e.into()),
    }
}

/// Deletes an account with all its data.
pub fn remove_user(store: &Store, jid: &BareJid) -> Result<()> {
    match store.delete_account(&jid.to_string()) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => bail!("{jid}: no such user"),
        Err(e) => Err(e.into()),
    }
}

/// All accounts.
pub fn list_users(store: &Store) -> Result<Vec<String>> {
    Ok(store.list_accounts()?)
}

/// Creates PREFIX0..PREFIX{count-1}. The password's SCRAM keys are derived once and shared
/// (same salt): these are load-test accounts, and deriving 100k × 2 × 4096 PBKDF2 rounds
/// would take minutes.
pub fn add_bulk(
    store: &Store,
    cfg: &Config,
    prefix: &str,
    count: usize,
    password: &str,
    mut progress: impl FnMut(usize),
) -> Result<usize> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    // Validate the naming scheme once, on the largest name.
    account_jid(cfg, &format!("{prefix}{}", count.saturating_sub(1)))?;
    let mut created = 0;
    let batch = 5000;
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let accounts: Vec<_> = (start..end)
            .map(|n| (format!("{prefix}{n}@{}", cfg.domain), creds.clone()))
            .collect();
        created += store.create_accounts_bulk(&accounts)?;
        start = end;
        progress(end);
    }
    Ok(created)
}
