//! Group commit for archive writes (storage calls go through the store's own
//! threads, which batch concurrent writes into one transaction): one writer thread takes
//! every archive write waiting at that moment and commits them together, so a burst of
//! messages costs one commit, not one per message. Each caller still waits until its own
//! message is durable, so the archive is written before the sender's message is acked.

use crate::{ArchiveStore, ArchivedMessage, StoreError};

/// The archive role the writer's thread needs.
type Archive = std::sync::Arc<dyn ArchiveStore + Send + Sync>;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Fewer writes than this waiting when the writer wakes: it waits `commit_delay` for more.
const TRICKLE: usize = 16;

/// Runs once a write is committed (or failed), on the writer thread: it must be quick and
/// must not block (send on a channel, drop a guard).
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Job {
    user: String,
    msg: ArchivedMessage,
    with_full: String,
    done: Done,
}

enum Work {
    Write(Job),
    /// Runs once everything queued before it is committed (a barrier, for shutdown).
    Flush(Done),
}

/// Handle to the writer thread.
pub struct ArchiveWriter {
    tx: Option<mpsc::Sender<Work>>,
    store: Archive,
    stats: std::sync::Arc<WriterStats>,
}

/// What the writer thread has committed, for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Messages committed.
    pub writes: AtomicU64,
    /// Transactions committed (batches).
    pub commits: AtomicU64,
    /// Time spent in those commits, microseconds.
    pub commit_micros: AtomicU64,
    /// Each commit's duration (the wait a message's archiving adds beyond `commit_delay`).
    pub commit_latency: crate::histogram::Histogram,
}

impl ArchiveWriter {
    /// Starts the writer thread (falls back to direct writes if no thread can be made);
    /// it commits `delay` after the first write of each batch (`mam.commit_delay`).
    pub fn start(store: Archive, delay: Duration) -> ArchiveWriter {
        let (tx, rx) = mpsc::channel(8192);
        let s = store.clone();
        let stats = std::sync::Arc::new(WriterStats::default());
        let st = stats.clone();
        let tx = std::thread::Builder::new()
            .name("herald-archive".into())
            .spawn(move || run(s, rx, delay, &st))
            .map(|_| tx)
            .map_err(|e| tracing::warn!(error = %e, "no archive writer thread; writing directly"))
            .ok();
        ArchiveWriter { tx, store, stats }
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues one message for `user` and returns at once; `done` runs when it is committed.
    /// Waits only while the writer's queue is full (every session then shares the wait).
    ///
    /// No task per write: the writer thread completes the write itself, so a message costs
    /// its callers neither a spawned task nor a wake-up of one.
    pub async fn submit(&self, user: String, msg: ArchivedMessage, with_full: String, done: Done) {
        let job = Work::Write(Job {
            user,
            msg,
            with_full,
            done,
        });
        let job = match &self.tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(job)) => match tx.send(job).await {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(job)) => job,
                },
                Err(mpsc::error::TrySendError::Closed(job)) => job,
            },
            None => job,
        };
        let Work::Write(job) = job else {
            return;
        };
        let s = self.store.clone();
        let Job {
            user,
            msg,
            with_full,
            done,
        } = job;
        let r = tokio::task::spawn_blocking(move || s.archive(&user, &msg, &with_full))
            .await
            .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("archive task failed: {e}"))));
        done(r);
    }
}

impl ArchiveWriter {
    /// Waits until every write queued before this call is committed (shutdown drains the
    /// writer with it).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else {
            return; // direct writes: nothing is queued
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        let barrier = Work::Flush(Box::new(move |_| {
            let _ = done.send(());
        }));
        if tx.send(barrier).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn run(store: Archive, mut rx: mpsc::Receiver<Work>, delay: Duration, stats: &WriterStats) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        drain(&mut rx, &mut jobs);
        // A trickle waits for company (`mam.commit_delay`); a backlog is committed at once,
        // or the delay would cut the writer's throughput under load.
        if jobs.len() < TRICKLE && !delay.is_zero() {
            std::thread::sleep(delay);
            drain(&mut rx, &mut jobs);
        }
        let mut items = Vec::with_capacity(jobs.len());
        let mut dones = Vec::with_capacity(jobs.len());
        let mut barriers = Vec::new();
        for j in jobs {
            match j {
                Work::Write(j) => {
                    items.push((j.user, j.msg, j.with_full));
                    dones.push(j.done);
                }
                Work::Flush(done) => barriers.push(done),
            }
        }
        if items.is_empty() {
            for b in barriers {
                b(Ok(()));
            }
            continue;
        }
        let t = std::time::Instant::now();
        let r = store.archive_batch(&items);
        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.commit_micros.fetch_add(micros, Ordering::Relaxed);
        stats.commit_latency.observe_micros(micros);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(()) => {
                stats
                    .writes
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                for d in dones {
                    d(Ok(()));
                }
            }
            Err(_) => {
                // One bad item fails the whole batch: commit them one by one so only it fails.
                for ((user, msg, with_full), d) in items.iter().zip(dones) {
                    d(store.archive(user, msg, with_full));
                }
            }
        }
        // Everything queued before each barrier was in this batch.
        for b in barriers {
            b(Ok(()));
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<Work>, jobs: &mut Vec<Work>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// Archives one message and waits for its commit.
    async fn archive(
        w: &ArchiveWriter,
        user: &str,
        msg: ArchivedMessage,
        with_full: &str,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        w.submit(
            user.to_string(),
            msg,
            with_full.to_string(),
            Box::new(move |r| {
                let _ = done.send(r);
            }),
        )
        .await;
        wait.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_all_commit_and_a_duplicate_fails_alone() {
        let store = std::sync::Arc::new(crate::Store::open_in_memory().unwrap());
        let w = std::sync::Arc::new(ArchiveWriter::start(store.clone(), Duration::ZERO));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let m = ArchivedMessage {
                    id: if i == 199 {
                        "id-0".into()
                    } else {
                        format!("id-{i}")
                    },
                    with: "b@x".into(),
                    timestamp: i,
                    stanza_xml: "<message xmlns='jabber:client'/>".into(),
                };
                archive(&w, "a@x", m, "b@x/r").await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 199);
        let page = store
            .query_archive(
                "a@x",
                &crate::ArchiveQuery {
                    max: 1000,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.items.len(), 199);
    }
}
