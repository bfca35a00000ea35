//! Unix sockets only the owner may use (the admin socket): created without a race, peers
//! checked by uid by the caller, and a back-off for accept errors so a persistent failure
//! (out of file descriptors) does not spin.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;

/// Binds a Unix socket at `path` without a window in which another user could connect: it is
/// created in a fresh directory under `dir` only we can enter (0700), made 0600, and only then
/// renamed to `path` (replacing a stale one from a crashed process). Returns the listener and
/// the uid that owns it (the one peers must have).
pub fn bind_owner_only(dir: &Path, path: &Path) -> anyhow::Result<(UnixListener, u32)> {
    let private = dir.join(format!(".admin-{}", std::process::id()));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("admin socket: creating {}", private.display()))?;
    let result = (|| {
        let mode = std::fs::metadata(&private)?.mode();
        if mode & 0o077 != 0 {
            anyhow::bail!("{} is not owner-only (mode {mode:o})", private.display());
        }
        // Short: a Unix socket path has about 100 bytes, and this one is briefly the longer.
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp).context("binding")?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .context("making it owner-only")?;
        let uid = std::fs::metadata(&tmp)?.uid();
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("removing the stale socket")
            }
            _ => {}
        }
        std::fs::rename(&tmp, path).context("moving it into place")?;
        Ok((listener, uid))
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.with_context(|| format!("socket {}", path.display()))
}

/// How long to wait after `errors` accept failures in a row (1 or more): 10 ms doubling up to
/// one second, so a persistent failure (out of file descriptors) does not spin.
pub fn accept_backoff(errors: u32) -> Duration {
    let ms = 10u64.saturating_mul(1u64 << errors.saturating_sub(1).min(7));
    Duration::from_millis(ms.min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_and_is_capped() {
        assert_eq!(accept_backoff(0), Duration::from_millis(10));
        assert_eq!(accept_backoff(1), Duration::from_millis(10));
        assert_eq!(accept_backoff(2), Duration::from_millis(20));
        assert_eq!(accept_backoff(3), Duration::from_millis(40));
        assert_eq!(accept_backoff(7), Duration::from_millis(640));
        assert_eq!(accept_backoff(8), Duration::from_secs(1));
        assert_eq!(accept_backoff(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_owner_only_socket_replaces_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = data.join("admin.sock");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(&path, b"stale").unwrap();
        let (listener, uid) = bind_owner_only(&data, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing else is left in the directory.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("admin.sock")]);
        // It accepts at its final path, from our uid.
        let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        assert_eq!(s.peer_cred().unwrap().uid(), uid);
    }
}
