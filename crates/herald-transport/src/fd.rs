//! The process's file descriptor budget: every connection is one, so the soft
//! `RLIMIT_NOFILE` is raised to the hard limit at start and a configuration that cannot fit
//! is reported (accepts would otherwise fail with "too many open files" before the
//! configured connection limit refuses anything).

/// Descriptors kept for what is not a connection: the store, the listeners, logs, the admin
/// socket, outgoing s2s and DNS.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both; warns when
/// `limits.max_connections` plus [`FD_RESERVE`] does not fit (accepts would then fail with
/// "too many open files" before the configured limit refuses anything).
#[cfg(unix)]
pub fn raise_fd_limit(max_connections: usize) {
    let (soft_before, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
            return;
        }
    };
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, soft = soft_before, hard, "cannot raise RLIMIT_NOFILE");
            soft_before
        }
    };
    tracing::info!(
        soft,
        hard,
        was = soft_before,
        "file descriptor limit (RLIMIT_NOFILE)"
    );
    if let Some(at_most) = fd_shortfall(max_connections, soft) {
        tracing::warn!(
            max_connections,
            reserve = FD_RESERVE,
            limit = soft,
            "limits.max_connections + {FD_RESERVE} exceeds the file descriptor limit: lower \
             limits.max_connections to at most {} or raise the hard RLIMIT_NOFILE \
             (ulimit -Hn, LimitNOFILE=)",
            at_most
        );
    }
}

/// When `max_connections` + [`FD_RESERVE`] descriptors do not fit in `limit`: the largest
/// `max_connections` that does.
pub fn fd_shortfall(max_connections: usize, limit: u64) -> Option<u64> {
    let wanted = (max_connections as u64).saturating_add(FD_RESERVE);
    (wanted > limit).then(|| limit.saturating_sub(FD_RESERVE))
}

#[cfg(not(unix))]
pub fn raise_fd_limit(_max_connections: usize) {}
