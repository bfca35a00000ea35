//! The SQLite backend's plumbing: opening the database file, connection settings, migrations,
//! and the writer/reader connections every role module goes through.
//!
//! Layout: one writer connection and a few reader connections, each behind its own `Mutex`.
//! In WAL mode readers see the last committed state and never wait for the writer, and SQLite
//! allows one writer at a time anyway, so a single writer connection loses nothing. Locks are
//! held for one call only. This module must not contain role logic (that lives in one module
//! per role, with its SQL in `src/sql/<role>.sql`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Result, StoreError};

/// File name of the database inside `data_dir`.
pub const DATABASE_FILE: &str = "herald.sqlite3";

/// How hard a commit works to survive a power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` (the default). In WAL mode every commit is atomic and survives a
    /// crash of the process (the WAL is written before the commit returns), and the database is
    /// never corrupted; an OS crash or power loss may lose the transactions committed since the
    /// last checkpoint. This removes the fsync from every commit, which is what makes
    /// per-message archiving cheap; it is SQLite's recommended setting for WAL.
    #[default]
    Normal,
    /// `synchronous=FULL`: fsync the WAL on every commit, so a commit also survives power loss.
    /// Costs one fsync per transaction; batch writes (`archive_batch`) amortise it.
    Full,
}

/// Tuning for [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// See [`Durability`].
    pub durability: Durability,
    /// Reader connections (at least one is opened for a file store).
    pub readers: usize,
    /// Reader connections used only by archive queries ([`crate::ArchiveStore::query_archive`]),
    /// so that however many MAM queries run, the readers above stay free for logins
    /// (credentials, rosters, offline messages). 0 shares the readers above.
    pub mam_readers: usize,
    /// How long a call waits for another connection (e.g. the CLI while the server runs) to
    /// release the write lock before failing with [`StoreError::Busy`].
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Normal,
            readers: 4,
            mam_readers: 2,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite store. Cheap to clone (an `Arc` inside), `Send + Sync`; every call blocks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Empty for the in-memory store: a private in-memory database exists only on the
    /// connection that created it, so reads go through the writer.
    readers: Vec<Mutex<Connection>>,
    /// Archive queries' own readers (empty: they share `readers`).
    mam_readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers.len())
            .field("mam_readers", &self.inner.mam_readers.len())
            .finish()
    }
}

/// One schema step of one role. Versions count per role, from 1; a later change to a role's
/// schema is a new entry (e.g. `sql/archive_2.sql`), never an edit of an applied file.
struct Migration {
    role: &'static str,
    version: i64,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        role: "accounts",
        version: 1,
        sql: include_str!("sql/accounts.sql"),
    },
    Migration {
        role: "roster",
        version: 1,
        sql: include_str!("sql/roster.sql"),
    },
    Migration {
        role: "offline",
        version: 1,
        sql: include_str!("sql/offline.sql"),
    },
    Migration {
        role: "offline",
        version: 2,
        sql: include_str!("sql/offline_2.sql"),
    },
    Migration {
        role: "blocking",
        version: 1,
        sql: include_str!("sql/blocking.sql"),
    },
    Migration {
        role: "archive",
        version: 1,
        sql: include_str!("sql/archive.sql"),
    },
    Migration {
        role: "archive",
        version: 2,
        sql: include_str!("sql/archive_2.sql"),
    },
    Migration {
        role: "archive",
        version: 3,
        sql: include_str!("sql/archive_3.sql"),
    },
    Migration {
        role: "push",
        version: 1,
        sql: include_str!("sql/push.sql"),
    },
    Migration {
        role: "push",
        version: 2,
        sql: include_str!("sql/push_2.sql"),
    },
    Migration {
        role: "sessions",
        version: 1,
        sql: include_str!("sql/sessions.sql"),
    },
    Migration {
        role: "vcard",
        version: 1,
        sql: include_str!("sql/vcard.sql"),
    },
    Migration {
        role: "private",
        version: 1,
        sql: include_str!("sql/private.sql"),
    },
    Migration {
        role: "invites",
        version: 1,
        sql: include_str!("sql/invites.sql"),
    },
    Migration {
        role: "uploads",
        version: 1,
        sql: include_str!("sql/uploads.sql"),
    },
    Migration {
        role: "fast_tokens",
        version: 1,
        sql: include_str!("sql/fast_tokens.sql"),
    },
    Migration {
        role: "fast_tokens",
        version: 2,
        sql: include_str!("sql/fast_tokens_2.sql"),
    },
    Migration {
        role: "pep",
        version: 1,
        sql: include_str!("sql/pep.sql"),
    },
    Migration {
        role: "muc",
        version: 1,
        sql: include_str!("sql/muc.sql"),
    },
    Migration {
        role: "muc",
        version: 2,
        sql: include_str!("sql/muc_2.sql"),
    },
];

/// Every table holding per-user rows, by its owner column `account`. `delete_account` clears
/// them all; a test checks that this list covers every such table in the schema.
pub(crate) const USER_TABLES: &[&str] = &[
    "accounts",
    "roster_items",
    "roster_groups",
    "roster_versions",
    "subscription_requests",
    "offline_messages",
    "offline_usage",
    "blocklist",
    "archive",
    "archive_usage",
    "mam_prefs",
    "mam_prefs_jids",
    "push_registrations",
    "push_removals",
    "sm_sessions",
    "sm_queue",
    "sm_tombstones",
    "vcards",
    "private_items",
    "fast_tokens",
    "pep_nodes",
    "pep_items",
];

/// Enough for every fixed statement of every role, so `prepare_cached` never evicts them.
const STATEMENT_CACHE: usize = 128;

impl Store {
    /// Opens (creating if needed) `data_dir/herald.sqlite3` with default [`StoreOptions`].
    pub fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with(data_dir, &StoreOptions::default())
    }

    /// Opens (creating if needed) `data_dir/herald.sqlite3`, switches it to WAL and runs the
    /// migrations. Safe while another process (the server, the CLI) has it open.
    pub fn open_with(data_dir: &Path, options: &StoreOptions) -> Result<Store> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        create_private_file(&path)?;

        let mut writer = open_connection(&path, options)?;
        // WAL is a property of the file and persists; readers proceed during writes, and the
        // CLI can write while the server runs (serialised by the busy timeout).
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "cannot switch {} to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        // Checkpoints (copying the WAL back into the database, with an fsync) run inside the
        // commit that crosses the threshold. At SQLite's default of 1000 pages they dominated
        // archiving: every message touches a leaf page per index of its user, so the WAL fills
        // fast. 10000 pages (~40 MiB) measured ~3x faster for archive() and archive_batch.
        // journal_size_limit bounds the WAL file left behind after a burst.
        writer.execute_batch(
            "PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864;",
        )?;
        migrate(&mut writer)?;

        let open_readers = |n: usize| -> Result<Vec<Mutex<Connection>>> {
            let mut readers = Vec::with_capacity(n);
            for _ in 0..n {
                let conn = open_connection(&path, options)?;
                // A reader must never write: it would bypass the writer's serialisation.
                conn.execute_batch("PRAGMA query_only = ON;")?;
                readers.push(Mutex::new(conn));
            }
            Ok(readers)
        };
        let readers = open_readers(options.readers.max(1))?;
        let mam_readers = open_readers(options.mam_readers)?;
        tracing::debug!(
            path = %path.display(),
            readers = readers.len(),
            mam_readers = mam_readers.len(),
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                mam_readers,
                next_reader: AtomicUsize::new(0),
                path: Some(path),
            }),
        })
    }

    /// A private in-memory store (tests, throwaway servers): same schema and behaviour, one
    /// connection, gone when the last clone is dropped.
    pub fn open_in_memory() -> Result<Store> {
        let mut conn = Connection::open_in_memory()?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                readers: Vec::new(),
                mam_readers: Vec::new(),
                next_reader: AtomicUsize::new(0),
                path: None,
            }),
        })
    }

    /// The database file, `None` for the in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The writer connection's `PRAGMA synchronous`: 1 for NORMAL, 2 for FULL (see
    /// [`Durability`]), so a caller can check which one is in force.
    pub fn synchronous(&self) -> Result<i64> {
        Ok(lock(&self.inner.writer).query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer and commits it.
    ///
    /// IMMEDIATE takes the write lock up front, so waiting for another process goes through
    /// the busy timeout; a deferred transaction that reads first and then writes can instead
    /// fail at once with SQLITE_BUSY when another connection committed meanwhile.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a read transaction (one consistent snapshot) on a free reader connection.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        Self::read_on(self.reader(&self.inner.readers), f)
    }

    /// Like [`Store::read`] on the archive queries' own readers: a query that scans or waits
    /// there never holds a connection a login needs.
    pub(crate) fn read_mam<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let readers = if self.inner.mam_readers.is_empty() {
            &self.inner.readers
        } else {
            &self.inner.mam_readers
        };
        Self::read_on(self.reader(readers), f)
    }

    fn read_on<T>(
        mut conn: MutexGuard<'_, Connection>,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn reader<'a>(&'a self, readers: &'a [Mutex<Connection>]) -> MutexGuard<'a, Connection> {
        if readers.is_empty() {
            return lock(&self.inner.writer);
        }
        for r in readers {
            match r.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        lock(&readers[i])
    }
}

/// A panic while a connection was locked leaves it usable: the transaction guard rolled back
/// on unwind, so the poison flag carries no information worth failing every later call for.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connection(path: &Path, options: &StoreOptions) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let sync = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;"
    ))?;
    Ok(conn)
}

/// The database holds credentials (SCRAM verifiers), so a directory or file we create is
/// private to the server's user. Existing ones keep whatever mode the admin gave them.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    Ok(())
}

fn create_private_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Applies the missing migrations of every role in one IMMEDIATE transaction, so two
/// processes opening a fresh database at once cannot both apply them.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             role TEXT PRIMARY KEY NOT NULL,
             version INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    let mut roles: Vec<&str> = Vec::new();
    for m in MIGRATIONS {
        if !roles.contains(&m.role) {
            roles.push(m.role);
        }
    }
    for role in roles {
        let current: i64 = tx
            .query_row(
                "SELECT version FROM schema_version WHERE role = ?1",
                [role],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })?;
        let known = MIGRATIONS
            .iter()
            .filter(|m| m.role == role)
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        if current > known {
            return Err(StoreError::Corrupt(format!(
                "schema of role {role} is version {current}, newer than this Herald knows ({known})"
            )));
        }
        for m in MIGRATIONS
            .iter()
            .filter(|m| m.role == role && m.version > current)
        {
            tx.execute_batch(m.sql)?;
            tx.execute(
                "INSERT INTO schema_version (role, version) VALUES (?1, ?2)
                 ON CONFLICT (role) DO UPDATE SET version = excluded.version",
                rusqlite::params![role, m.version],
            )?;
            tracing::info!(role, version = m.version, "applied storage migration");
        }
    }
    tx.commit()?;
    Ok(())
}

/// Current time in unix milliseconds (stamps for offline messages and accounts).
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads a count column into a `usize`; a negative count means the file is damaged.
pub(crate) fn to_usize(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}
