//! Server secrets kept in the data directory (the HTTP upload signing key, the XEP-0484 FAST
//! token key): random bytes made on first start, owner-only, read on later starts so what was
//! signed or issued before a restart stays valid.

use std::path::Path;

use anyhow::Context as _;
use rand::RngCore as _;

/// The secret in `path`: read it if it exists (at least `len` bytes, exactly `len` unless
/// `longer_ok`), else make `len` random bytes and write them with mode 0600 (through a
/// temporary file and a rename, so a crash never leaves a short key).
pub fn load_or_create(path: &Path, len: usize, longer_ok: bool) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(k) if k.len() == len || (longer_ok && k.len() > len) => return Ok(k),
        Ok(k) => anyhow::bail!(
            "{}: {} bytes, expected {len} (delete it to make a new one)",
            path.display(),
            k.len()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut k = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut k);
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&k)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_read_and_a_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fast.key");
        let k = load_or_create(&p, 32, false).unwrap();
        assert_eq!(k.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            load_or_create(&p, 32, false).unwrap(),
            k,
            "read, not remade"
        );
        std::fs::write(&p, [1u8; 33]).unwrap();
        let e = load_or_create(&p, 32, false).unwrap_err().to_string();
        assert!(e.contains("33 bytes, expected 32"), "{e}");
        assert_eq!(load_or_create(&p, 32, true).unwrap(), vec![1u8; 33]);
        std::fs::write(&p, [1u8; 5]).unwrap();
        assert!(load_or_create(&p, 32, true).is_err());
    }
}
