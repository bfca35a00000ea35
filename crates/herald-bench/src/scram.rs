//! Client side of SASL SCRAM-SHA-1 (RFC 5802) and PLAIN (RFC 4616), plus the credential
//! derivation used to pre-provision Prosody accounts.
//! It must not do I/O. The salted password is cached per (password, salt, iterations):
//! bench users share one password, and PBKDF2 on the client must not be what limits logins/s.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::sync::Mutex;

type HmacSha1 = Hmac<Sha1>;

/// (password, salt, iterations): what a salted password depends on.
type SaltKey = (String, Vec<u8>, u32);

/// Salted passwords already derived, shared by every connection of the run.
#[derive(Debug, Default)]
pub struct SaltCache {
    map: Mutex<HashMap<SaltKey, [u8; 20]>>,
}

impl SaltCache {
    /// `Hi(password, salt, iterations)` (RFC 5802 §2.2), computed once per distinct input.
    pub fn salted(&self, password: &str, salt: &[u8], iterations: u32) -> [u8; 20] {
        let key = (password.to_owned(), salt.to_vec(), iterations);
        if let Ok(map) = self.map.lock() {
            if let Some(v) = map.get(&key) {
                return *v;
            }
        }
        // Derive outside the lock: a cold start with many connections must not serialize.
        let v = salted_password(password, salt, iterations);
        if let Ok(mut map) = self.map.lock() {
            map.insert(key, v);
        }
        v
    }
}

/// PBKDF2-HMAC-SHA1, i.e. SCRAM's `Hi()`.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out);
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha1::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `(StoredKey, ServerKey)` for a salted password (RFC 5802 §3), as servers store them.
pub fn server_credentials(salted: &[u8; 20]) -> ([u8; 20], [u8; 20]) {
    let client_key = hmac(salted, b"Client Key");
    let stored: [u8; 20] = Sha1::digest(client_key).into();
    (stored, hmac(salted, b"Server Key"))
}

/// RFC 5802 §5.1: `=` and `,` in the username are escaped.
fn escape_username(u: &str) -> String {
    u.replace('=', "=3D").replace(',', "=2C")
}

/// Base64 of the PLAIN initial response: `\0user\0password`.
pub fn plain_initial(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// One SCRAM-SHA-1 exchange in progress.
#[derive(Debug)]
pub struct ScramClient {
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<[u8; 20]>,
}

impl ScramClient {
    /// Starts an exchange with the given client nonce (printable, no commas).
    pub fn new(user: &str, nonce: &str) -> Self {
        Self {
            client_first_bare: format!("n={},r={}", escape_username(user), nonce),
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    /// The client-first-message (no channel binding: `n,,`).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Consumes the server-first-message and returns the client-final-message.
    pub fn client_final(
        &mut self,
        server_first: &str,
        password: &str,
        cache: &SaltCache,
    ) -> Result<String, String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iters = None;
        for part in server_first.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = Some(B64.decode(v).map_err(|e| format!("bad salt: {e}"))?);
            } else if let Some(v) = part.strip_prefix("i=") {
                iters = Some(v.parse::<u32>().map_err(|e| format!("bad i: {e}"))?);
            } else if part.starts_with("m=") {
                return Err("mandatory extension not supported".into());
            }
        }
        let (Some(nonce), Some(salt), Some(iters)) = (nonce, salt, iters) else {
            return Err(format!("incomplete server-first: {server_first}"));
        };
        // RFC 5802 §5.1: the server nonce must extend ours, or this is not our exchange.
        if !nonce.starts_with(&self.nonce) || iters == 0 {
            return Err("server nonce does not extend the client nonce".into());
        }
        let salted = cache.salted(password, &salt, iters);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 20] = Sha1::digest(client_key).into();
        let signature = hmac(&stored, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature.iter()) {
            *p ^= s;
        }
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message (`v=...`): the server must prove it knows the key.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(format!("server error: {e}"));
        }
        let v = server_final
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or("no verifier in server-final")?;
        let got = B64.decode(v).map_err(|e| format!("bad verifier: {e}"))?;
        match self.expected_server_signature {
            Some(exp) if exp[..] == got[..] => Ok(()),
            _ => Err("server signature mismatch".into()),
        }
    }
}

/// A random SCRAM client nonce.
pub fn random_nonce() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 5802 §5: the SCRAM-SHA-1 example exchange.
    #[test]
    fn rfc5802_vector() {
        let cache = SaltCache::default();
        let mut c = ScramClient::new("user", "fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(c.client_first(), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let fin = c
            .client_final(
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "pencil",
                &cache,
            )
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert!(c
            .verify_server_final("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .is_err());
    }

    #[test]
    fn rejects_foreign_nonce_and_server_error() {
        let cache = SaltCache::default();
        let mut c = ScramClient::new("user", "abc");
        assert!(c
            .client_final("r=xyz,s=QSXCR+Q6sek8bf92,i=4096", "p", &cache)
            .is_err());
        assert!(c.verify_server_final("e=invalid-proof").is_err());
    }

    #[test]
    fn plain_and_username_escaping() {
        assert_eq!(plain_initial("u", "p"), "AHUAcA==");
        assert_eq!(
            ScramClient::new("a=b,c", "n").client_first(),
            "n,,n=a=3Db=2Cc,r=n"
        );
    }
}
