//! The crate's error type. Callers match on the domain variants (`NotFound`, `AlreadyExists`,
//! `QuotaExceeded`, `Busy`) to answer clients; the rest are internal failures. This module must
//! not build XMPP errors: mapping to stanza conditions is the server's job.

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The account, item, registration or archive id the call refers to does not exist.
    #[error("not found")]
    NotFound,
    /// The account (or archive id) being created already exists.
    #[error("already exists")]
    AlreadyExists,
    /// The per-user bound (e.g. offline messages) is already reached; nothing was stored.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Another connection kept the database locked longer than the busy timeout; retry later.
    #[error("database is busy (locked by another connection): {0}")]
    Busy(#[source] rusqlite::Error),
    /// A value passed in is outside what the store accepts (e.g. an unknown MAM default mode).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// Any PostgreSQL failure (the `postgres` backend).
    #[error("postgres: {0}")]
    Postgres(#[source] postgres::Error),
    /// No database connection could be had in time (server down, pool exhausted); retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The backend does not implement this role yet.
    #[error("not supported on this backend yet: {0}")]
    Unsupported(&'static str),
    /// Creating the data directory or database file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The database holds something this code cannot read (bad value, unknown or newer schema).
    #[error("corrupt or incompatible database: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True for failures that may succeed if retried later (XMPP error type `wait`).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Unavailable(_))
    }

    /// The RFC 6120 §8.3.3 stanza error condition a handler answers with by default; a
    /// handler with better context (e.g. `NotFound` of a roster item) may choose another.
    pub fn xmpp_condition(&self) -> &'static str {
        match self {
            StoreError::NotFound => "item-not-found",
            StoreError::AlreadyExists => "conflict",
            // XEP-0160 practice and issue #3: a full offline store is resource-constraint.
            StoreError::QuotaExceeded => "resource-constraint",
            StoreError::Invalid(_) => "bad-request",
            // RFC 6120 §8.3.3.18: no resources to serve it now; its default type, wait, is
            // what `is_transient` means.
            StoreError::Busy(_) | StoreError::Unavailable(_) => "resource-constraint",
            StoreError::Sqlite(_)
            | StoreError::Postgres(_)
            | StoreError::Unsupported(_)
            | StoreError::Io(_)
            | StoreError::Corrupt(_) => "internal-server-error",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    return StoreError::Busy(e);
                }
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    return StoreError::Corrupt(e.to_string());
                }
                _ => {}
            }
        }
        StoreError::Sqlite(e)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        // Lock and serialization conflicts, and a server going away, may pass on a retry.
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::ADMIN_SHUTDOWN =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ if e.is_closed() => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Postgres(e),
        }
    }
}

/// Result of every store call.
pub type Result<T> = std::result::Result<T, StoreError>;
