//! XEP-0352 client state indication for ONE session (Prosody's mod_csi_simple model).
//!
//! [`CsiBuffer`] holds unimportant outbound stanzas while the client says it is inactive and
//! releases them, in order, when something important goes out, when the client becomes
//! active, or when the buffer is full (in count, or in bytes as the owner weighs them). Held stanzas are *not* in the stream-management queue,
//! so they neither count as unacked nor cause a push; the owner feeds what [`CsiBuffer::offer`]
//! returns to stream management and the transport.
//!
//! What is important is decided by the caller with the one classification push uses
//! (`herald_push::Classifier`, Prosody's `csi-is-stanza-important`), so CSI and push never
//! disagree about a stanza.
//!
//! Must not: decide importance inside the buffer (the caller passes it), touch the SM queue,
//! or drop anything: every offered stanza comes back exactly once, in order.

use std::collections::VecDeque;

/// Stanzas held for one inactive client, generic over the stanza type.
#[derive(Debug, Clone)]
pub struct CsiBuffer<T> {
    max_buffer: usize,
    max_bytes: usize,
    active: bool,
    /// Held stanzas with their sizes, oldest first.
    held: VecDeque<(T, usize)>,
    /// The sum of the sizes in `held`.
    held_bytes: usize,
}

impl<T> CsiBuffer<T> {
    /// An active buffer that holds at most `max_buffer` stanzas while inactive (default 256).
    pub fn new(max_buffer: usize) -> Self {
        CsiBuffer {
            max_buffer,
            max_bytes: usize::MAX,
            active: true,
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Also flush before the held stanzas' sizes (see [`Self::offer_sized`]) would pass
    /// `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// XEP-0352 §4: a session is active until the client says `<inactive/>`.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `<inactive/>`: start holding unimportant stanzas.
    pub fn set_inactive(&mut self) {
        self.active = false;
    }

    /// `<active/>`: returns the held stanzas, oldest first, to deliver now.
    pub fn set_active(&mut self) -> Vec<T> {
        self.active = true;
        self.take_held()
    }

    /// An outbound stanza; returns what to deliver now, in order. Nothing if it was held;
    /// otherwise the held stanzas followed by it (when active, important, or when holding it
    /// would exceed `max_buffer`).
    pub fn offer(&mut self, item: T, important: bool) -> Vec<T> {
        self.offer_sized(item, 0, important)
    }

    /// [`Self::offer`] for a stanza of `bytes`: also delivered, with everything held, when
    /// holding it would take the held bytes past `max_bytes`. Never refused, never dropped.
    pub fn offer_sized(&mut self, item: T, bytes: usize, important: bool) -> Vec<T> {
        let over = self.held_bytes.saturating_add(bytes) > self.max_bytes;
        if self.active || important || self.held.len() >= self.max_buffer || over {
            // Held stanzas go first so the client sees everything in the order it was sent.
            let mut out = self.take_held();
            out.push(item);
            out
        } else {
            self.held_bytes = self.held_bytes.saturating_add(bytes);
            self.held.push_back((item, bytes));
            Vec::new()
        }
    }

    /// Number of stanzas held.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Remove and return the held stanzas, oldest first (e.g. hibernation expired: the owner
    /// handles them like unacked stanzas). The active/inactive state is unchanged.
    pub fn take_held(&mut self) -> Vec<T> {
        self.held_bytes = 0;
        self.held.drain(..).map(|(t, _)| t).collect()
    }

    /// The sizes of the held stanzas, summed.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_flushes_early_and_loses_nothing() {
        let mut b = CsiBuffer::new(100).with_max_bytes(1000);
        b.set_inactive();
        assert!(b.offer_sized(1, 600, false).is_empty());
        assert!(b.offer_sized(2, 400, false).is_empty());
        assert_eq!(b.held_bytes(), 1000);
        // Holding a third would pass 1000 bytes: everything goes, in order.
        assert_eq!(b.offer_sized(3, 1, false), vec![1, 2, 3]);
        assert_eq!((b.held_len(), b.held_bytes()), (0, 0));
        assert!(
            !b.is_active(),
            "still inactive: later stanzas are held again"
        );
        assert!(b.offer_sized(4, 10, false).is_empty());
        // A stanza larger than the bound on its own is not held either.
        assert_eq!(b.offer_sized(5, 5000, false), vec![4, 5]);
        assert_eq!(b.held_bytes(), 0);
    }
}
