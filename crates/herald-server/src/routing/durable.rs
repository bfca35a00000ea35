//! "Durable before acked" (XEP-0198 and the archive): a session acknowledges its client's
//! stanzas only once everything they caused is on disk. Work started on the client's behalf
//! (an archive commit, a write-through into a sleeping recipient's saved queue) registers a
//! ticket here instead of being awaited; the session settles the tickets before any `<a/>`
//! or `<resumed/>`. A leaf: it knows nothing of sessions, features or sockets.

use std::sync::Arc;

/// A message on its way into a sleeping session's saved queue: the sender's session waits
/// for it like for an archive commit before it acknowledges anything, so "durable before
/// acked" holds with the archive off too. Released when dropped — by the recipient session
/// once the write-through committed, or at once where nothing is saved.
pub struct Durable(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durable")
    }
}

/// A ticket the current session's next ack waits for (None outside a session handling its
/// client's stanzas: nobody is acked for it).
pub fn durable_ticket() -> Option<Arc<Durable>> {
    DEFERRED
        .try_with(|d| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            d.push(rx);
            Arc::new(Durable(Some(tx)))
        })
        .ok()
}

/// Most archive commits one session may have waiting for the disk. Committed ones are
/// forgotten as the session goes, so this bounds only a session that outruns the writer.
pub const MAX_DEFERRED: usize = 1024;

tokio::task_local! {
    /// Set by a session task while it handles its own client's stanzas: archive commits made
    /// on the client's behalf are registered here instead of awaited, so the client's next
    /// stanza is not held behind the disk; the session settles them before it acknowledges
    /// anything (XEP-0198 `<a/>`, `<resumed/>`), so "durable before acked" still holds.
    pub static DEFERRED: Deferred;
}

pub type Committed = tokio::sync::oneshot::Receiver<()>;

/// Archive commits a session has started and not yet waited for.
#[derive(Clone, Default)]
pub struct Deferred(Arc<std::sync::Mutex<std::collections::VecDeque<Committed>>>);

impl Deferred {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Committed>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, rx: Committed) {
        self.lock().push_back(rx);
    }

    pub fn pop_oldest(&self) -> Option<Committed> {
        self.lock().pop_front()
    }

    /// How many are not committed yet; forgets the committed ones at the front (the writer
    /// commits in submission order, so they are the oldest).
    pub fn outstanding(&self) -> usize {
        let mut q = self.lock();
        while let Some(rx) = q.front_mut() {
            match rx.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => break,
                _ => {
                    q.pop_front();
                }
            }
        }
        q.len()
    }

    /// Waits until every commit started so far is durable.
    pub async fn settle(&self) {
        let all: Vec<_> = self.lock().drain(..).collect();
        for rx in all {
            let _ = rx.await;
        }
    }
}
