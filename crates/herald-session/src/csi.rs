//! XEP-0352 client state indication for ONE session (Prosody's mod_csi_simple model).
//!
//! [`CsiBuffer`] holds unimportant outbound stanzas while the client says it is inactive and
//! releases them, in order, when something important goes out, when the client becomes
//! active, or when the buffer is full. Held stanzas are *not* in the stream-management queue,
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
    active: bool,
    held: VecDeque<T>,
}

impl<T> CsiBuffer<T> {
    /// An active buffer that holds at most `max_buffer` stanzas while inactive (default 256).
    pub fn new(max_buffer: usize) -> Self {
        CsiBuffer {
            max_buffer,
            active: true,
            held: VecDeque::new(),
        }
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
        if self.active || important || self.held.len() >= self.max_buffer {
            // Held stanzas go first so the client sees everything in the order it was sent.
            let mut out = self.take_held();
            out.push(item);
            out
        } else {
            self.held.push_back(item);
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
        self.held.drain(..).collect()
    }
}
