//! Writes bench accounts straight into Prosody's `internal_hashed` file storage
//! (`DATA/<host>/accounts/<user>.dat`), because `prosodyctl register` costs a Lua start-up per
//! user. One salt for all users keeps the bench client's PBKDF2 work to one derivation.
//! It must not touch a running server's data: run it before Prosody starts.

use crate::scram::{salted_password, server_credentials};
use anyhow::{Context, Result};
use std::path::Path;

/// Prosody's datamanager escapes every non-alphanumeric byte as `%xx` in path components.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The Lua source of one account record.
pub fn account_record(salt: &str, iterations: u32, stored_hex: &str, server_hex: &str) -> String {
    format!(
        "return {{\n\t[\"iteration_count\"] = {iterations};\n\t[\"salt\"] = \"{salt}\";\n\t[\"server_key\"] = \"{server_hex}\";\n\t[\"stored_key\"] = \"{stored_hex}\";\n}};\n"
    )
}

/// Creates `{prefix}0..{prefix}{count-1}` on `domain` under Prosody's `data_dir`.
pub fn write_accounts(
    data_dir: &Path,
    domain: &str,
    prefix: &str,
    count: u64,
    password: &str,
    iterations: u32,
) -> Result<()> {
    let salt = "herald-bench-salt";
    let salted = salted_password(password, salt.as_bytes(), iterations);
    let (stored, server) = server_credentials(&salted);
    let record = account_record(salt, iterations, &hex::encode(stored), &hex::encode(server));
    let dir = data_dir.join(encode(domain)).join("accounts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for n in 0..count {
        let user = format!("{prefix}{n}").to_lowercase();
        let path = dir.join(format!("{}.dat", encode(&user)));
        std::fs::write(&path, &record).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_encoding_matches_datamanager() {
        assert_eq!(encode("localhost"), "localhost");
        assert_eq!(encode("push.localhost"), "push%2elocalhost");
    }

    #[test]
    fn record_is_a_lua_table_with_hex_keys() {
        let salted = salted_password("pencil", b"QSXCR+Q6sek8bf92", 4096);
        let (stored, server) = server_credentials(&salted);
        let r = account_record("s", 4096, &hex::encode(stored), &hex::encode(server));
        assert!(r.starts_with("return {"));
        assert!(r.contains("[\"iteration_count\"] = 4096;"));
        assert!(r.contains(&format!("[\"stored_key\"] = \"{}\";", hex::encode(stored))));
    }
}
