//! The PostgreSQL backend's plumbing: the connection pool, per-role migrations (from
//! `sql/pg/`, recorded in a `schema_version` table) and the read/write transactions every
//! role module goes through. Role logic lives in one module per role, mirroring the SQLite
//! ones, with the same contract (the conformance suite runs on both).
//!
//! All calls block, like the SQLite store's: the server calls them from `spawn_blocking`, and
//! the synchronous `postgres` client runs its own small runtime per connection.
//!
//! Concurrency: SQLite serialises every write, PostgreSQL does not. Where the SQLite store
//! relies on that (a bound checked and then written: offline quota, blocklist size, private
//! items, invites, uploads, FAST clients), the transaction first takes a transaction-scoped
//! advisory lock on that user's key (see [`lock`]), so two concurrent writers cannot both
//! pass the check. Everything else is a single statement or touches rows only its caller
//! names, which READ COMMITTED already makes safe.

mod account;
mod archive;
mod block;
mod copy;
mod fast;
mod invite;
mod muc;
mod offline;
mod pep;
mod private;
mod push;
mod roster;
mod session;
mod upload;
mod usage;
mod vcard;

use std::time::Duration;

use postgres::{IsolationLevel, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use crate::error::{Result, StoreError};

#[cfg(test)]
pub(crate) use copy::tables_for_test as copy_tables_for_test;
pub use copy::{sqlite_file, CopiedTable};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// How to reach the database ([`PgStore::open`]).
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string, e.g. `postgres://herald@127.0.0.1/herald`.
    pub url: String,
    /// Connections kept open at most (`[store] pool_size`).
    pub pool_size: u32,
    /// How long a call waits for a free connection before failing with
    /// [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
    /// Use (and create) this schema instead of the user's default search path: lets tests,
    /// or several Herald installations, share one database. Lowercase letters, digits, `_`.
    pub schema: Option<String>,
}

impl PgOptions {
    /// Whether `url` is a connection string the client can use (without connecting); the
    /// error never repeats the URL, which may hold a password.
    pub fn check_url(url: &str) -> std::result::Result<(), String> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        Ok(())
    }

    /// Default pool and timeout for `url`.
    pub fn new(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            schema: None,
        }
    }
}

/// The PostgreSQL store. Cheap to clone (the pool is shared), `Send + Sync`; every call blocks.
#[derive(Clone)]
pub struct PgStore {
    pool: std::sync::Arc<PoolOwner>,
    schema: Option<String>,
}

/// The pool, closed off any runtime when the last handle goes: closing a connection of the
/// synchronous client blocks on its own runtime, which panics on a tokio worker thread (the
/// server drops its store in async code at shutdown).
struct PoolOwner(Option<Pool>);

impl std::ops::Deref for PoolOwner {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        // Only `drop` takes it, and nothing derefs after that.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("pool used after drop"))
    }
}

impl Drop for PoolOwner {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            off_runtime(move || drop(pool));
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .field("connections", &self.pool.state().connections)
            .finish()
    }
}

/// One schema step of one role, as for SQLite: versions count per role from 1, and a change is
/// a new file, never an edit of an applied one.
struct Migration {
    role: &'static str,
    version: i64,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        role: "accounts",
        version: 1,
        sql: include_str!("../../sql/pg/accounts.sql"),
    },
    Migration {
        role: "roster",
        version: 1,
        sql: include_str!("../../sql/pg/roster.sql"),
    },
    Migration {
        role: "offline",
        version: 1,
        sql: include_str!("../../sql/pg/offline.sql"),
    },
    Migration {
        role: "blocking",
        version: 1,
        sql: include_str!("../../sql/pg/blocking.sql"),
    },
    Migration {
        role: "archive",
        version: 1,
        sql: include_str!("../../sql/pg/archive.sql"),
    },
    Migration {
        role: "push",
        version: 1,
        sql: include_str!("../../sql/pg/push.sql"),
    },
    Migration {
        role: "sessions",
        version: 1,
        sql: include_str!("../../sql/pg/sessions.sql"),
    },
    Migration {
        role: "vcard",
        version: 1,
        sql: include_str!("../../sql/pg/vcard.sql"),
    },
    Migration {
        role: "private",
        version: 1,
        sql: include_str!("../../sql/pg/private.sql"),
    },
    Migration {
        role: "invites",
        version: 1,
        sql: include_str!("../../sql/pg/invites.sql"),
    },
    Migration {
        role: "uploads",
        version: 1,
        sql: include_str!("../../sql/pg/uploads.sql"),
    },
    Migration {
        role: "fast_tokens",
        version: 1,
        sql: include_str!("../../sql/pg/fast_tokens.sql"),
    },
    Migration {
        role: "fast_tokens",
        version: 2,
        sql: include_str!("../../sql/pg/fast_tokens_2.sql"),
    },
    Migration {
        role: "pep",
        version: 1,
        sql: include_str!("../../sql/pg/pep.sql"),
    },
    Migration {
        role: "muc",
        version: 1,
        sql: include_str!("../../sql/pg/muc.sql"),
    },
    Migration {
        role: "muc",
        version: 2,
        sql: include_str!("../../sql/pg/muc_2.sql"),
    },
];

/// Key of the advisory lock that serialises migrations between processes opening the same
/// database at once (an arbitrary constant: "herald" in ASCII).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

impl PgStore {
    /// Connects, creates the schema if [`PgOptions::schema`] names one, and applies the
    /// missing migrations.
    pub fn open(options: &PgOptions) -> Result<PgStore> {
        off_runtime(|| Self::open_here(options))
    }

    fn open_here(options: &PgOptions) -> Result<PgStore> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("store url: {e}")))?;
        if let Some(schema) = &options.schema {
            if schema.is_empty()
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(StoreError::Invalid(format!("schema name {schema:?}")));
            }
            // Every connection of the pool starts with this search path.
            config.options(&format!("-c search_path={schema}"));
        }
        config.connect_timeout(options.connect_timeout);
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            // r2d2's own log of failed connects goes through `log`, which Herald does not
            // collect: the error reaches the caller instead.
            .build(manager)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = PgStore {
            pool: std::sync::Arc::new(PoolOwner(Some(pool))),
            schema: options.schema.clone(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        if let Some(schema) = &self.schema {
            // Checked in `open`: only [a-z0-9_], so it needs no quoting.
            conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        }
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        // `IF NOT EXISTS` on an existing table is a NOTICE, which every CLI command would
        // otherwise print: this transaction reports warnings and worse only.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_version (
                 role TEXT PRIMARY KEY,
                 version BIGINT NOT NULL
             )",
        )?;
        let mut roles: Vec<&str> = Vec::new();
        for m in MIGRATIONS {
            if !roles.contains(&m.role) {
                roles.push(m.role);
            }
        }
        for role in roles {
            let current: i64 = tx
                .query_opt(
                    "SELECT version FROM schema_version WHERE role = $1",
                    &[&role],
                )?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0);
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
                tx.batch_execute(m.sql)?;
                tx.execute(
                    "INSERT INTO schema_version (role, version) VALUES ($1, $2)
                     ON CONFLICT (role) DO UPDATE SET version = excluded.version",
                    &[&role, &m.version],
                )?;
                tracing::info!(role, version = m.version, "applied postgres migration");
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs `f` in one READ COMMITTED transaction and commits it.
    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: one consistent snapshot, as a
    /// SQLite read transaction gives.
    pub(crate) fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            let mut tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// Runs `f`, which blocks on the `postgres` client, where that is allowed.
///
/// The synchronous client drives its connection with a runtime of its own and panics when
/// called on a thread that is running tokio tasks. The server calls the store from
/// `spawn_blocking` (no runtime there: `f` runs as is), but a call made straight from async
/// code (a test, an operator command, a path that forgot `spawn_blocking`) must not crash:
/// on a multi-thread runtime's worker `block_in_place` hands the worker's tasks to another
/// thread while `f` blocks; a current-thread runtime cannot do that, so `f` runs on a
/// short-lived thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// Serialises, until the end of `tx`, every transaction that takes the same `(scope, key)`:
/// what SQLite's single writer gives for a check followed by a write.
pub(crate) fn lock(tx: &mut Transaction<'_>, scope: &str, key: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("{scope}\u{1}{key}")],
    )?;
    Ok(())
}

/// A count column as a `usize`; negative means the database is damaged.
pub(crate) fn to_usize(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

/// A `u32` column (h counters, error counts, iterations), stored as BIGINT because
/// PostgreSQL has no unsigned type.
pub(crate) fn to_u32(n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("value {n} out of range")))
}

/// A limit given as `usize`, as the BIGINT a LIMIT takes.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl crate::Backend for PgStore {}
