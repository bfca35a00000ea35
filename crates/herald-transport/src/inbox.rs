//! A session task's inbox: a bounded multi-producer, single-consumer queue that costs ~100
//! bytes while empty. Every bound session has one, so its idle size is per-session memory:
//! tokio's mpsc allocates a 32-slot block and a cache-padded channel up front (1.7 KiB), and
//! flume cannot close its receiving side while draining it (a stanza sent in that window
//! would be dropped, not handed back to its sender). Knows nothing of what it carries.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Why `try_send` gave the message back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The inbox holds `capacity` messages already.
    Full(T),
    /// The receiver closed the inbox (the session is ending).
    Closed(T),
}

struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a single VecDeque call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side; clone it freely.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inbox::Sender")
    }
}

/// The receiving side (the session task).
pub struct Receiver<T>(Arc<Shared<T>>);

/// An inbox that holds at most `capacity` messages sent with `try_send` (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            closed: false,
        }),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `msg` unless the inbox is full or closed.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.push(msg, true)
    }

    /// Queues a control message (hand over a connection, end the session, change a timer)
    /// past the capacity: each is bounded by what triggers it, and dropping one would leave
    /// a session running that should have ended or lose a client's connection. Err only when
    /// the inbox is closed.
    pub fn send_control(&self, msg: T) -> Result<(), T> {
        self.push(msg, false).map_err(|e| match e {
            TrySendError::Full(m) | TrySendError::Closed(m) => m,
        })
    }

    fn push(&self, msg: T, bounded: bool) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut s = self.0.lock();
            if s.closed {
                return Err(TrySendError::Closed(msg));
            }
            if bounded && s.queue.len() >= self.0.capacity {
                return Err(TrySendError::Full(msg));
            }
            s.queue.push_back(msg);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether the receiver closed the inbox.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

/// Capacity kept after the queue drains; a burst's larger buffer is given back.
const KEEP: usize = 8;

impl<T> Receiver<T> {
    /// The next message, waiting for one. Cancel-safe: a message is taken only when returned.
    pub async fn recv(&mut self) -> T {
        poll_fn(|cx| {
            let mut s = self.0.lock();
            match s.queue.pop_front() {
                Some(m) => {
                    if s.queue.is_empty() && s.queue.capacity() > KEEP {
                        s.queue = VecDeque::new();
                    }
                    Poll::Ready(m)
                }
                None => {
                    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes a message without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.lock().queue.pop_front()
    }

    /// Takes the next message without waiting, if there is one and `take` accepts it; a
    /// refused one stays first in the queue.
    pub fn try_recv_if(&mut self, take: impl FnOnce(&T) -> bool) -> Option<T> {
        let mut s = self.0.lock();
        if !s.queue.front().is_some_and(take) {
            return None;
        }
        let m = s.queue.pop_front();
        if s.queue.is_empty() && s.queue.capacity() > KEEP {
            s.queue = VecDeque::new();
        }
        m
    }

    /// Refuses every further send; what is queued can still be taken with `try_recv`.
    pub fn close(&mut self) {
        let mut s = self.0.lock();
        s.closed = true;
        s.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn try_recv_if_leaves_a_refused_message_first() {
        let (tx, mut rx) = bounded(4);
        for i in [1, 2, 3] {
            tx.try_send(i).unwrap();
        }
        assert_eq!(rx.try_recv_if(|m| *m < 2), Some(1));
        assert_eq!(rx.try_recv_if(|m| *m < 2), None);
        assert_eq!(rx.recv().await, 2);
        assert_eq!(rx.try_recv_if(|_| true), Some(3));
        assert_eq!(rx.try_recv_if(|_| true), None);
    }

    #[tokio::test]
    async fn delivers_in_order_and_bounds_try_send() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.clone().try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        // Control messages pass the bound.
        assert_eq!(tx.send_control(4), Ok(()));
        assert_eq!(rx.recv().await, 1);
        assert_eq!(rx.recv().await, 2);
        assert_eq!(rx.recv().await, 4);
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = bounded(4);
        let task = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send("hello").unwrap();
        assert_eq!(task.await.unwrap(), "hello");
    }

    #[tokio::test]
    async fn closing_refuses_sends_and_keeps_what_is_queued() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).unwrap();
        assert!(!tx.is_closed());
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
        assert_eq!(tx.send_control(3), Err(3));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let (tx, mut rx) = bounded(4);
        // A recv dropped while pending loses nothing sent afterwards.
        tokio::select! {
            biased;
            _ = rx.recv() => unreachable!("nothing was sent"),
            _ = std::future::ready(()) => {}
        }
        tx.try_send(7).unwrap();
        assert_eq!(rx.recv().await, 7);
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_buffer_back() {
        let (tx, mut rx) = bounded(100);
        for i in 0..64 {
            tx.try_send(i).unwrap();
        }
        for i in 0..64 {
            assert_eq!(rx.recv().await, i);
        }
        assert!(rx.0.lock().queue.capacity() <= KEEP);
    }
}
