//! Free space on the database's filesystem, checked now and then and cached, so that archive
//! and offline writes stop with a clear error while there is still room, instead of SQLite
//! failing for lack of space in the middle of a transaction (a full disk also stops the WAL
//! checkpoint, and every other user's writes with it).
//!
//! The server calls [`FreeSpace::check`] at start and every few seconds; writers only read the
//! cached verdict ([`FreeSpace::is_low`], one atomic load).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The cached verdict on the free space of one filesystem.
#[derive(Debug)]
pub struct FreeSpace {
    /// A file or directory on the filesystem to watch; `None` (in-memory store): never low.
    path: Option<PathBuf>,
    /// Below this many available bytes new writes are refused; 0 disables the check.
    min_free: AtomicU64,
    low: AtomicBool,
    /// Available bytes at the last check (`u64::MAX` before the first or without a path).
    last_free: AtomicU64,
}

/// What a check changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Free space fell below the threshold: writes stop.
    BecameLow,
    /// Free space is back above the threshold: writes resume.
    Recovered,
}

/// The verdict for `free` available bytes against `min_free` (0: the check is off).
pub fn is_low(free: u64, min_free: u64) -> bool {
    min_free > 0 && free < min_free
}

impl FreeSpace {
    /// Watches the filesystem holding `path` (`None`: never low).
    pub fn new(path: Option<&Path>, min_free: u64) -> FreeSpace {
        FreeSpace {
            path: path.map(Path::to_path_buf),
            min_free: AtomicU64::new(min_free),
            low: AtomicBool::new(false),
            last_free: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether new writes must be refused (as of the last check).
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Acquire)
    }

    /// Available bytes at the last check.
    pub fn last_free(&self) -> u64 {
        self.last_free.load(Ordering::Relaxed)
    }

    /// Changes the threshold (takes effect at the next [`FreeSpace::check`]).
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// Measures the free space now and updates the verdict; logs a warning naming the path
    /// and the free space once per change of verdict (not at every check), and returns it.
    /// A failed measurement keeps the previous verdict (and is logged).
    pub fn check(&self) -> Option<Transition> {
        let path = self.path.as_deref()?;
        let free = match available_bytes(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot measure free space");
                return None;
            }
        };
        self.last_free.store(free, Ordering::Relaxed);
        let min_free = self.min_free.load(Ordering::Relaxed);
        let low = is_low(free, min_free);
        let was = self.low.swap(low, Ordering::AcqRel);
        match (was, low) {
            (false, true) => {
                tracing::warn!(
                    path = %path.display(),
                    free_bytes = free,
                    min_free_bytes = min_free,
                    "free space below store.min_free_bytes: archive and offline writes refused"
                );
                Some(Transition::BecameLow)
            }
            (true, false) => {
                tracing::warn!(
                    path = %path.display(),
                    free_bytes = free,
                    min_free_bytes = min_free,
                    "free space back above store.min_free_bytes: archive and offline writes resume"
                );
                Some(Transition::Recovered)
            }
            _ => None,
        }
    }
}

impl FreeSpace {
    /// Checks every `every`, forever (the caller's task is aborted at stop). A few seconds
    /// between checks is far less than a margin of hundreds of MiB takes to fill.
    pub async fn watch(&self, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
#[cfg(unix)]
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Without statvfs the check is off: the space always looks sufficient.
#[cfg(not(unix))]
pub fn available_bytes(_path: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_the_threshold() {
        assert!(!is_low(100, 0), "0 disables the check");
        assert!(is_low(99, 100));
        assert!(!is_low(100, 100));
        assert!(!is_low(u64::MAX, 1));
    }

    #[test]
    fn a_check_reports_each_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let s = FreeSpace::new(Some(dir.path()), u64::MAX);
        assert!(!s.is_low(), "nothing is refused before the first check");
        assert_eq!(s.check(), Some(Transition::BecameLow));
        assert!(s.is_low());
        assert_eq!(s.check(), None, "still low: no second warning");
        s.set_min_free(1);
        assert_eq!(s.check(), Some(Transition::Recovered));
        assert!(!s.is_low());
        assert_eq!(s.check(), None);
        s.set_min_free(0);
        assert_eq!(s.check(), None);
        assert!(!s.is_low());
    }

    #[test]
    fn an_in_memory_store_is_never_low() {
        let s = FreeSpace::new(None, u64::MAX);
        assert_eq!(s.check(), None);
        assert!(!s.is_low());
    }
}
