//! What the running server knows of accounts an admin command changed under their sessions
//! (`herald user remove`, `herald user passwd`): which accounts were removed — nothing may be
//! stored for them any more and their JIDs no longer reach sessions that are still ending — and
//! which sessions are being ended, so that their queues are not handed to one another. Knows
//! nothing of sessions or the store; `Shared::account_gone` combines this with the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use herald_proto::error::{StreamError, StreamErrorCondition};
use herald_proto::sasl::{new_keys, SaslError, ScramHash, DEFAULT_ITERATIONS};
use herald_store::{Credentials, ScramRecord};

use crate::msg::{SessionMsg, SessionTx};

/// Where the removal of an account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Its sessions are being ended; the store still has the account, but it is gone.
    Ending,
    /// Deleted from the store: gone for as long as the store has no such account (one
    /// created again under the same JID is a new account).
    Deleted,
}

/// Accounts removed and sessions being ended by admin commands while the server runs.
/// Accounts stay marked until created again (a handful per run); sessions only while they end.
#[derive(Default)]
pub struct AccountChanges {
    /// Marked accounts: the usual case (none) costs one atomic load per check.
    removed_count: AtomicUsize,
    removed: Mutex<HashMap<String, Removal>>,
    ending_count: AtomicUsize,
    ending: Mutex<HashSet<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccountChanges {
    /// Marks `bare` as removed (or moves its mark on to `state`).
    pub fn mark_removed(&self, bare: &str, state: Removal) {
        let mut m = lock(&self.removed);
        m.insert(bare.to_string(), state);
        self.removed_count.store(m.len(), Ordering::SeqCst);
    }

    /// Clears the mark of `bare` if it is in `state` (a removal that failed, or an account
    /// created again); false if it was not.
    pub fn unmark_removed(&self, bare: &str, state: Removal) -> bool {
        let mut m = lock(&self.removed);
        if m.get(bare) != Some(&state) {
            return false;
        }
        m.remove(bare);
        self.removed_count.store(m.len(), Ordering::SeqCst);
        true
    }

    /// The mark of `bare`, if any.
    pub fn removal(&self, bare: &str) -> Option<Removal> {
        if self.removed_count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        lock(&self.removed).get(bare).copied()
    }

    /// These sessions are being ended by an admin command.
    pub fn begin_ending(&self, ids: &[u64]) {
        let mut s = lock(&self.ending);
        s.extend(ids.iter().copied());
        self.ending_count.store(s.len(), Ordering::SeqCst);
    }

    /// These sessions are over.
    pub fn finish_ending(&self, ids: &[u64]) {
        let mut s = lock(&self.ending);
        for id in ids {
            s.remove(id);
        }
        self.ending_count.store(s.len(), Ordering::SeqCst);
    }

    /// Whether session `id` is being ended by an admin command (so it is no place to hand
    /// another ending session's stanzas to).
    pub fn is_ending(&self, id: u64) -> bool {
        self.ending_count.load(Ordering::SeqCst) != 0 && lock(&self.ending).contains(&id)
    }
}

/// The stream error text of sessions ended by `herald user remove`.
pub const ACCOUNT_REMOVED: &str = "account removed";

/// Makes stored credentials from a password (both SCRAM hashes; never the password itself).
pub fn make_credentials(password: &str) -> Result<Credentials, SaslError> {
    let rec = |h| -> Result<ScramRecord, SaslError> {
        let k = new_keys(h, password, DEFAULT_ITERATIONS)?;
        Ok(ScramRecord {
            salt: k.salt,
            iterations: k.iterations,
            stored_key: k.stored_key,
            server_key: k.server_key,
        })
    };
    Ok(Credentials {
        sha1: rec(ScramHash::Sha1)?,
        sha256: rec(ScramHash::Sha256)?,
    })
}

pub fn not_authorized(text: &str) -> SessionMsg {
    SessionMsg::Kick(StreamError::new(
        StreamErrorCondition::NotAuthorized,
        Some(text.to_string()),
    ))
}

/// A session was just bound for `user`: if the account is being removed (its login raced
/// the removal), it ends at once, like the account's other sessions.
pub fn on_bind(shared: &crate::Shared, user: &str, tx: &SessionTx) {
    if shared.account_gone(user) {
        let _ = tx.send_control(not_authorized(ACCOUNT_REMOVED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_move_on_and_clear_only_from_the_state_asked() {
        let a = AccountChanges::default();
        assert_eq!(a.removal("u@d"), None);
        a.mark_removed("u@d", Removal::Ending);
        assert_eq!(a.removal("u@d"), Some(Removal::Ending));
        assert_eq!(a.removal("v@d"), None);
        assert!(!a.unmark_removed("u@d", Removal::Deleted));
        a.mark_removed("u@d", Removal::Deleted);
        assert!(a.unmark_removed("u@d", Removal::Deleted));
        assert_eq!(a.removal("u@d"), None);
    }

    #[test]
    fn ending_sessions_are_known_until_finished() {
        let a = AccountChanges::default();
        assert!(!a.is_ending(1));
        a.begin_ending(&[1, 2]);
        assert!(a.is_ending(1) && a.is_ending(2) && !a.is_ending(3));
        a.finish_ending(&[1]);
        assert!(!a.is_ending(1) && a.is_ending(2));
        a.finish_ending(&[2]);
        assert!(!a.is_ending(2));
    }
}
