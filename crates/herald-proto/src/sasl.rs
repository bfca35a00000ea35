//! Server side of SASL (RFC 6120 §6): SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677),
//! their -PLUS variants with channel binding (RFC 5802 §6; the binding data comes from the
//! TLS layer as [`ChannelBindings`]) and PLAIN (RFC 4616), plus SCRAM credential derivation for
//! storage.
//!
//! Sans-IO: the caller moves bytes between these functions and `<auth/>`/`<response/>`
//! elements. We store only StoredKey/ServerKey (never a password equivalent) and compare
//! proofs in constant time. Unknown users get a deterministic fake salt so the server-first
//! message does not reveal whether an account exists. This module must not look up accounts
//! or decide policy (which mechanisms to offer, rate limits): the caller does.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Iteration count for new credentials (RFC 7677 §4 recommends at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// SASL failures, each mapping to an RFC 6120 §6.5 condition via [`SaslError::condition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The message does not follow the mechanism's syntax.
    #[error("malformed SASL request")]
    MalformedRequest,
    /// Wrong credentials, unknown user, or a failed channel-binding/nonce check.
    #[error("not authorized")]
    NotAuthorized,
    /// The authorization identity is not acceptable.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// The client aborted the exchange.
    #[error("authentication aborted")]
    Aborted,
    /// The payload is not valid base64.
    #[error("incorrect base64 encoding")]
    IncorrectEncoding,
    /// The client asked for a mechanism we do not offer.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// The mechanism is only offered over TLS.
    #[error("encryption required")]
    EncryptionRequired,
    /// The account exists but is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The credentials must be renewed.
    #[error("credentials expired")]
    CredentialsExpired,
    /// The mechanism is weaker than policy allows for this account.
    #[error("mechanism too weak")]
    MechanismTooWeak,
    /// A server-side problem (e.g. storage unavailable or unusable stored credentials).
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
    /// A username or password is not valid under SASLprep (RFC 4013).
    #[error("string rejected by SASLprep")]
    InvalidString,
    /// A -PLUS exchange asked for a channel-binding type this connection does not offer
    /// (RFC 5802 `e=unsupported-channel-binding-type`; `tls-unique`, say, which TLS 1.3 does
    /// not have).
    #[error("unsupported channel-binding type")]
    UnsupportedChannelBinding,
    /// The client sent gs2 flag `y` (it can bind but believes we cannot) although we offer
    /// -PLUS: someone stripped the -PLUS mechanisms on the way (RFC 5802 §6
    /// `e=server-does-support-channel-binding`, the server "MUST fail authentication").
    #[error("channel-binding downgrade")]
    ChannelBindingDowngrade,
}

impl SaslError {
    /// The RFC 6120 §6.5 `<failure/>` child element name.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest => "malformed-request",
            SaslError::NotAuthorized | SaslError::InvalidString => "not-authorized",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::Aborted => "aborted",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::MechanismTooWeak => "mechanism-too-weak",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
            // RFC 6120 §6.5 has no channel-binding condition: the request names something
            // this server cannot do, as Prosody answers it too.
            SaslError::UnsupportedChannelBinding => "malformed-request",
            // A possible man in the middle: the authentication fails (RFC 5802 §6).
            SaslError::ChannelBindingDowngrade => "not-authorized",
        }
    }
}

/// Decodes the character data of `<auth/>`/`<response/>`: RFC 6120 §6.4.2, `=` (or nothing)
/// is an empty response.
pub fn decode_payload(text: &str) -> Result<Vec<u8>, SaslError> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text).map_err(|_| SaslError::IncorrectEncoding)
}

/// Encodes a challenge or success payload; RFC 6120 §6.4.2: empty data is sent as `=`.
pub fn encode_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_string()
    } else {
        B64.encode(data)
    }
}

/// Hash function of a SCRAM variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so new_from_slice cannot fail; an empty result
        // would only make every comparison fail.
        match self {
            ScramHash::Sha1 => match Hmac::<Sha1>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// Stored SCRAM credentials (RFC 5802 §3): enough to verify a client, not to impersonate one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// RFC 5802 §3: SaltedPassword, then ClientKey → StoredKey and ServerKey. The password is
/// SASLprep'd first (RFC 4013, as RFC 5802 §2.2 requires).
pub fn derive_keys(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramKeys, SaslError> {
    if iterations == 0 {
        return Err(SaslError::TemporaryAuthFailure);
    }
    let prepped = stringprep::saslprep(password).map_err(|_| SaslError::InvalidString)?;
    let salted = hash.hi(prepped.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    Ok(ScramKeys {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: hash.h(&client_key),
        server_key: hash.hmac(&salted, b"Server Key"),
    })
}

/// New credentials with a random 16-byte salt and the given iteration count.
pub fn new_keys(hash: ScramHash, password: &str, iterations: u32) -> Result<ScramKeys, SaslError> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    derive_keys(hash, password, &salt, iterations)
}

/// For PLAIN: derives StoredKey from `password` and compares it in constant time.
pub fn verify_password(keys: &ScramKeys, password: &str) -> bool {
    match derive_keys(keys.hash, password, &keys.salt, keys.iterations) {
        Ok(k) => bool::from(k.stored_key.ct_eq(&keys.stored_key)),
        Err(_) => false,
    }
}

/// SASLprep (RFC 4013) for a username; empty results are rejected.
pub fn saslprep_username(s: &str) -> Result<String, SaslError> {
    let prepped = stringprep::saslprep(s).map_err(|_| SaslError::InvalidString)?;
    if prepped.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    Ok(prepped.into_owned())
}

/// Mechanisms we implement, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// The IANA-registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// RFC 4422 §3.1: mechanism names are matched exactly (they are upper case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256-PLUS" => Some(Mechanism::ScramSha256Plus),
            "SCRAM-SHA-1-PLUS" => Some(Mechanism::ScramSha1Plus),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-1" => Some(Mechanism::ScramSha1),
            "PLAIN" => Some(Mechanism::Plain),
            _ => None,
        }
    }

    /// The SCRAM hash of this mechanism, if it is SCRAM.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }

    /// Whether this is a -PLUS mechanism (SCRAM with channel binding, RFC 5802 §6).
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }
}

/// The channel-binding data (RFC 5056) of one TLS connection, by type: what a -PLUS
/// exchange's `c=` must carry after the gs2 header. Filled by the TLS layer; a type is None
/// where it is undefined for the connection (`tls-exporter` below TLS 1.3, RFC 9266 §3;
/// `tls-server-end-point` for a certificate whose signature hash is unknown, RFC 5929 §4.1). Empty on plain TCP, and where the operator
/// turned channel binding off: then no -PLUS mechanism is offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    /// RFC 9266: 32 bytes exported with the label `EXPORTER-Channel-Binding` and no context.
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 §4.1: the hash of the certificate we presented.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// RFC 9266's type name.
    pub const TLS_EXPORTER: &'static str = "tls-exporter";
    /// RFC 5929's type name.
    pub const TLS_SERVER_END_POINT: &'static str = "tls-server-end-point";

    /// The data of the type named `name`, if this connection has it. `tls-unique` never: it
    /// does not exist in TLS 1.3 and the TLS library does not expose it for 1.2.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            Self::TLS_EXPORTER => self.tls_exporter.as_deref(),
            Self::TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    /// The types this connection has, preferred first (`tls-exporter` binds to the TLS
    /// session itself, `tls-server-end-point` only to the certificate).
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (Self::TLS_EXPORTER, self.tls_exporter.is_some()),
            (
                Self::TLS_SERVER_END_POINT,
                self.tls_server_end_point.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, has)| has.then_some(name))
    }

    /// Whether there is no type at all (no -PLUS mechanism can be offered).
    pub fn is_empty(&self) -> bool {
        self.types().next().is_none()
    }

    /// XEP-0440 §3: `<sasl-channel-binding/>` listing [`Self::types`], the stream feature
    /// (also usable inside a SASL2 feature) that tells a client which type its -PLUS
    /// mechanism may use here.
    pub fn feature(&self) -> minidom::Element {
        let mut cb = minidom::Element::bare("sasl-channel-binding", crate::ns::SASL_CB);
        for t in self.types() {
            let mut el = minidom::Element::bare("channel-binding", crate::ns::SASL_CB);
            crate::error::set_plain_attr(&mut el, "type", t);
            cb.append_child(el);
        }
        cb
    }
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`. Returns (authzid, authcid after
/// SASLprep, password as sent — [`verify_password`] SASLprep's it).
pub fn parse_plain(msg: &[u8]) -> Result<(Option<String>, String, String), SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest);
    };
    fn utf8(b: &[u8]) -> Result<&str, SaslError> {
        std::str::from_utf8(b).map_err(|_| SaslError::MalformedRequest)
    }
    let (authzid, authcid, passwd) = (utf8(authzid)?, utf8(authcid)?, utf8(passwd)?);
    if authcid.is_empty() || passwd.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    let authzid = (!authzid.is_empty()).then(|| authzid.to_string());
    Ok((authzid, saslprep_username(authcid)?, passwd.to_string()))
}

/// RFC 5802 §5.1 `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, SaslError> {
    if s.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i..).unwrap_or_default();
        if let Some(r) = after.strip_prefix("=2C") {
            out.push(',');
            rest = r;
        } else if let Some(r) = after.strip_prefix("=3D") {
            out.push('=');
            rest = r;
        } else {
            return Err(SaslError::MalformedRequest);
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 §7 `printable`: %x21-2B / %x2D-7E (no comma).
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn fake_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    })
}

/// Credentials for a user who does not exist: a salt that is stable per username for the
/// life of the process (so repeated probes see the same salt, as for a real account) and
/// keys nobody can match.
fn fake_keys(hash: ScramHash, username: &str) -> ScramKeys {
    let mac = ScramHash::Sha256.hmac(fake_secret(), username.as_bytes());
    let salt = mac.get(..16).unwrap_or(&mac).to_vec();
    let mut stored_key = vec![0u8; hash.len()];
    let mut server_key = vec![0u8; hash.len()];
    rand::thread_rng().fill_bytes(&mut stored_key);
    rand::thread_rng().fill_bytes(&mut server_key);
    ScramKeys {
        hash,
        salt,
        iterations: DEFAULT_ITERATIONS,
        stored_key,
        server_key,
    }
}

#[derive(Debug)]
enum ScramState {
    Initial,
    GotClientFirst {
        gs2_header: String,
        client_first_bare: String,
        client_nonce: String,
        username: String,
    },
    SentServerFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        keys: ScramKeys,
        known: bool,
    },
    Done,
}

/// One SCRAM exchange, server side: `client_first` → `server_first` → `client_final`.
/// Any call out of order, or any error, ends the exchange.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    /// A -PLUS exchange: the client must bind (gs2 flag `p=`).
    plus: bool,
    /// The connection's binding data; some means we advertise -PLUS on it (the caller passes
    /// it only then), which makes gs2 flag `y` a downgrade.
    bindings: Option<Box<ChannelBindings>>,
    /// The binding data the client chose in client-first (empty without binding), which `c=`
    /// must carry after the gs2 header.
    cb_data: Box<[u8]>,
    server_nonce: String,
    /// Boxed: the negotiation machine keeps this struct inline in its states, most of which
    /// are not SCRAM.
    state: Box<ScramState>,
}

impl ScramServer {
    /// With a random 24-byte server nonce.
    pub fn new(hash: ScramHash) -> Self {
        let mut n = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut n);
        Self::with_nonce(hash, &B64.encode(n))
    }

    /// With a fixed server nonce, for test vectors. It must be `printable` (RFC 5802 §7).
    pub fn with_nonce(hash: ScramHash, server_nonce: &str) -> Self {
        ScramServer {
            hash,
            plus: false,
            bindings: None,
            cb_data: Box::default(),
            server_nonce: server_nonce.to_string(),
            state: Box::new(ScramState::Initial),
        }
    }

    /// Sets the channel binding of this exchange: `plus` for a -PLUS mechanism, and the
    /// connection's binding data when -PLUS is advertised on it (empty otherwise; the default
    /// is empty and not -PLUS). A mechanism implementation for any SASL profile (RFC 6120
    /// SASL, XEP-0388 SASL2): the caller decides what is offered, this checks the exchange
    /// against it.
    pub fn channel_binding(mut self, plus: bool, bindings: ChannelBindings) -> Self {
        self.plus = plus;
        self.bindings = (!bindings.is_empty()).then(|| Box::new(bindings));
        self
    }

    /// The mechanism this exchange implements.
    pub fn mechanism(&self) -> Mechanism {
        match (self.hash, self.plus) {
            (ScramHash::Sha1, false) => Mechanism::ScramSha1,
            (ScramHash::Sha256, false) => Mechanism::ScramSha256,
            (ScramHash::Sha1, true) => Mechanism::ScramSha1Plus,
            (ScramHash::Sha256, true) => Mechanism::ScramSha256Plus,
        }
    }

    /// Parses client-first-message. The gs2 flag (RFC 5802 §6, §7): a -PLUS exchange needs
    /// `p=TYPE` with a type the connection has; otherwise `n` is fine, `y` only when we
    /// advertise no -PLUS (else it is a downgrade), `p=` is malformed. Returns (username after
    /// SASLprep, authzid if given).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<(String, Option<String>), SaslError> {
        if !matches!(*self.state, ScramState::Initial) {
            *self.state = ScramState::Done;
            return Err(SaslError::MalformedRequest);
        }
        *self.state = ScramState::Done;
        let msg = std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest)?;
        // RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let mut it = msg.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Err(SaslError::MalformedRequest);
        };
        let bindings = self.bindings.as_deref();
        let cb_data = match (cbind, self.plus) {
            ("n", false) => Vec::new(),
            // "y": the client could bind but believes we cannot. True if we offer no -PLUS;
            // if we do, the offer was stripped on the way (RFC 5802 §6).
            ("y", false) if bindings.is_none() => Vec::new(),
            ("y", false) => return Err(SaslError::ChannelBindingDowngrade),
            (flag, true) => match flag.strip_prefix("p=") {
                Some(name) if valid_cb_name(name) => match bindings.and_then(|b| b.get(name)) {
                    Some(data) => data.to_vec(),
                    None => return Err(SaslError::UnsupportedChannelBinding),
                },
                // RFC 5802 §6: a -PLUS mechanism is used with "p" only.
                _ => return Err(SaslError::MalformedRequest),
            },
            // A binding request in a mechanism without binding, or no flag at all.
            _ => return Err(SaslError::MalformedRequest),
        };
        let authzid = match authzid {
            "" => None,
            a => match a.strip_prefix("a=") {
                Some(name) => Some(decode_saslname(name)?),
                None => return Err(SaslError::MalformedRequest),
            },
        };
        let raw_authzid_len = msg.len() - cbind.len() - bare.len() - 2;
        let gs2_header = msg
            .get(..cbind.len() + raw_authzid_len + 2)
            .ok_or(SaslError::MalformedRequest)?;

        let mut attrs = bare.split(',');
        let first = attrs.next().unwrap_or_default();
        // RFC 5802 §5.1: "m" is reserved for mandatory extensions we cannot know.
        let Some(user) = first.strip_prefix("n=") else {
            return Err(SaslError::MalformedRequest);
        };
        let Some(client_nonce) = attrs.next().and_then(|a| a.strip_prefix("r=")) else {
            return Err(SaslError::MalformedRequest);
        };
        if !valid_nonce(client_nonce) {
            return Err(SaslError::MalformedRequest);
        }
        // Optional extensions: `attr-val` each; anything else is malformed.
        if !attrs.all(valid_extension) {
            return Err(SaslError::MalformedRequest);
        }
        let username = saslprep_username(&decode_saslname(user)?)?;
        self.cb_data = cb_data.into_boxed_slice();
        *self.state = ScramState::GotClientFirst {
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            client_nonce: client_nonce.to_string(),
            username: username.clone(),
        };
        Ok((username, authzid))
    }

    /// Given the user's keys (None: unknown user — continue with a deterministic fake salt so
    /// the answer does not reveal existence), returns server-first-message. Keys of another
    /// hash are treated as unknown. Out of order: returns an empty message and ends the
    /// exchange (the following `client_final` fails).
    pub fn server_first(&mut self, keys: Option<ScramKeys>) -> Vec<u8> {
        let state = std::mem::replace(&mut *self.state, ScramState::Done);
        let ScramState::GotClientFirst {
            gs2_header,
            client_first_bare,
            client_nonce,
            username,
        } = state
        else {
            return Vec::new();
        };
        let (keys, known) = match keys {
            Some(k) if k.hash == self.hash && k.iterations > 0 => (k, true),
            _ => (fake_keys(self.hash, &username), false),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let out = server_first.as_bytes().to_vec();
        *self.state = ScramState::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            keys,
            known,
        };
        out
    }

    /// client-final-message: checks channel-binding echo, nonce, proof (constant time).
    /// Ok(server-final-message `v=...`) or Err(NotAuthorized) (MalformedRequest for syntax).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let state = std::mem::replace(&mut *self.state, ScramState::Done);
        let ScramState::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            keys,
            known,
        } = state
        else {
            return Err(SaslError::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslError::MalformedRequest)?;
        // RFC 5802 §7: client-final-message = without-proof "," proof, proof last.
        let idx = msg.rfind(",p=").ok_or(SaslError::MalformedRequest)?;
        let without_proof = msg.get(..idx).ok_or(SaslError::MalformedRequest)?;
        let proof_b64 = msg.get(idx + 3..).ok_or(SaslError::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let cb = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslError::MalformedRequest)?;
        let r = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::MalformedRequest)?;
        if !attrs.all(valid_extension) {
            return Err(SaslError::MalformedRequest);
        }
        let cb = B64.decode(cb).map_err(|_| SaslError::MalformedRequest)?;
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| SaslError::MalformedRequest)?;
        // RFC 5802 §6: c= is the gs2 header followed by the channel-binding data (none
        // without binding), so a header changed on the way or a different TLS connection (a
        // man in the middle terminates his own) fails here.
        let mut expected = gs2_header.into_bytes();
        expected.extend_from_slice(&self.cb_data);
        if cb != expected || r != nonce {
            return Err(SaslError::NotAuthorized);
        }
        if proof.len() != self.hash.len() {
            return Err(SaslError::NotAuthorized);
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let computed = self.hash.h(&client_key);
        let ok = computed.ct_eq(&keys.stored_key) & Choice::from(u8::from(known));
        if !bool::from(ok) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// RFC 5802 §7 `cb-name`: 1*(ALPHA / DIGIT / "." / "-").
fn valid_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// RFC 5802 §7 `attr-val`: an ASCII letter, `=`, a value.
fn valid_extension(ext: &str) -> bool {
    matches!(ext.as_bytes(), [a, b'=', ..] if a.is_ascii_alphabetic())
}

/// XEP-0484 FAST (draft-schmaus-kitten-sasl-ht): the client proves it holds a token with
/// `HMAC-SHA-256(token, "Initiator" ‖ cb-data)`, the server answers with
/// `HMAC-SHA-256(token, "Responder" ‖ cb-data)`, where cb-data is empty for `HT-SHA-256-NONE`,
/// the RFC 9266 `tls-exporter` data for `-EXPR` and the RFC 5929 `tls-server-end-point` data
/// for `-ENDP`. The channel-binding variants need the token itself for each connection, so
/// tokens are derived from a server key and a stored random salt ([`ht::derive_token`]); tokens
/// issued before that (for -NONE only) are still recognised by the hash of their initiator
/// message ([`ht::verifier`]). `-UNIQ` (`tls-unique`) is not offered: it does not exist in
/// TLS 1.3 and the TLS library does not expose it.
pub mod ht {
    use super::*;

    /// The mechanism without channel binding.
    pub const SHA256_NONE: &str = "HT-SHA-256-NONE";
    /// With RFC 9266 `tls-exporter` channel binding.
    pub const SHA256_EXPR: &str = "HT-SHA-256-EXPR";
    /// With RFC 5929 `tls-server-end-point` channel binding.
    pub const SHA256_ENDP: &str = "HT-SHA-256-ENDP";

    /// The channel-binding type `mechanism` binds to: `Some(None)` for -NONE, None for a
    /// mechanism that is not HT-SHA-256.
    pub fn channel_binding(mechanism: &str) -> Option<Option<&'static str>> {
        match mechanism {
            SHA256_NONE => Some(None),
            SHA256_EXPR => Some(Some(ChannelBindings::TLS_EXPORTER)),
            SHA256_ENDP => Some(Some(ChannelBindings::TLS_SERVER_END_POINT)),
            _ => None,
        }
    }

    /// The client's proof for `token` with `cb_data` (empty for -NONE).
    pub fn initiator(token: &[u8], cb_data: &[u8]) -> Vec<u8> {
        hmac_parts(token, &[b"Initiator", cb_data])
    }

    /// The server's final message for `token` with `cb_data` (empty for -NONE).
    pub fn responder_cb(token: &[u8], cb_data: &[u8]) -> Vec<u8> {
        hmac_parts(token, &[b"Responder", cb_data])
    }

    /// Whether `proof` is `token`'s initiator message with `cb_data`, in constant time.
    pub fn proves(token: &[u8], cb_data: &[u8], proof: &[u8]) -> bool {
        let want = initiator(token, cb_data);
        want.len() == proof.len() && bool::from(want.as_slice().ct_eq(proof))
    }

    /// The token the server issues for a stored `salt`: `HMAC-SHA-256(key, salt ‖ user ‖
    /// client id ‖ mechanism)`, each field prefixed with its length (4 bytes, big endian) so
    /// no two field lists give the same input, as URL-safe base64 without padding. Binding the
    /// mechanism into the token is what refuses a -EXPR/-ENDP token used with -NONE.
    pub fn derive_token(
        key: &[u8],
        salt: &[u8],
        user: &str,
        client_id: &str,
        mechanism: &str,
    ) -> String {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
            return String::new();
        };
        for field in [
            salt,
            user.as_bytes(),
            client_id.as_bytes(),
            mechanism.as_bytes(),
        ] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            m.update(&len.to_be_bytes());
            m.update(field);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// A new random salt for [`derive_token`] (16 bytes).
    pub fn new_salt() -> Vec<u8> {
        let mut b = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        b
    }

    fn hmac_parts(token: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(token) else {
            return Vec::new();
        };
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    /// `HMAC-SHA-256(token, label)`.
    pub fn hmac(token: &[u8], label: &[u8]) -> Vec<u8> {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(token) else {
            return Vec::new();
        };
        m.update(label);
        m.finalize().into_bytes().to_vec()
    }

    /// What the server keeps to recognise a token's initiator message: SHA-256 of it.
    pub fn verifier_of_proof(proof: &[u8]) -> Vec<u8> {
        Sha256::digest(proof).to_vec()
    }

    /// The stored verifier of `token` (the hash of its initiator message).
    pub fn verifier(token: &[u8]) -> Vec<u8> {
        verifier_of_proof(&hmac(token, b"Initiator"))
    }

    /// The server's final message for `token`.
    pub fn responder(token: &[u8]) -> Vec<u8> {
        hmac(token, b"Responder")
    }

    /// Whether `proof` matches `verifier`, in constant time.
    pub fn matches(verifier: &[u8], proof: &[u8]) -> bool {
        let v = verifier_of_proof(proof);
        v.len() == verifier.len() && bool::from(v.as_slice().ct_eq(verifier))
    }

    /// The client's initial message: `authcid NUL initiator-hashed-token`.
    pub fn parse(msg: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let Some(nul) = msg.iter().position(|&b| b == 0) else {
            return Err(SaslError::MalformedRequest);
        };
        let (user, rest) = msg.split_at(nul);
        let proof = &rest[1..];
        let user = std::str::from_utf8(user).map_err(|_| SaslError::MalformedRequest)?;
        if user.is_empty() || proof.is_empty() {
            return Err(SaslError::MalformedRequest);
        }
        Ok((saslprep_username(user)?, proof.to_vec()))
    }

    /// A new random token (32 bytes, URL-safe base64 without padding).
    pub fn new_token() -> String {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const NONE_INITIATOR: &str =
            "3f6de92b45cddc50c601ad166458f7b5874565e399f3006b1afb03f0bb03ff88";
        const EXPR_INITIATOR: &str =
            "5d991149bd0f2ead1ebfc19442bece553b848fc88c4b5d281dd225d56891eb40";
        const EXPR_RESPONDER: &str =
            "89a846abc1a5fc12fdfc12d31b1a25fa42b804435e2282b74f3db7d46110a763";
        const DERIVED: &str = "k40WEpAwmNltsi0D57467MYBG4sDP6cxXtWvWT-Oe_A";

        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }

        #[test]
        fn channel_binding_data_follows_the_label() {
            // Fixed vectors: HMAC-SHA-256("secret-token", "Initiator") and with 32 bytes 0x01
            // of cb-data appended (computed independently with Python's hmac module).
            let none = initiator(b"secret-token", b"");
            assert_eq!(none, hmac(b"secret-token", b"Initiator"));
            assert_eq!(hex(&none), NONE_INITIATOR);
            let cb = [1u8; 32];
            assert_eq!(hex(&initiator(b"secret-token", &cb)), EXPR_INITIATOR);
            assert_eq!(hex(&responder_cb(b"secret-token", &cb)), EXPR_RESPONDER);
            assert_eq!(
                responder_cb(b"secret-token", b""),
                responder(b"secret-token")
            );
            assert!(proves(
                b"secret-token",
                &cb,
                &initiator(b"secret-token", &cb)
            ));
            assert!(!proves(
                b"secret-token",
                &[2u8; 32],
                &initiator(b"secret-token", &cb)
            ));
            assert!(!proves(
                b"secret-token",
                b"",
                &initiator(b"secret-token", &cb)
            ));
            assert!(!proves(b"secret-token", &cb, &[]));
        }

        #[test]
        fn derived_tokens_bind_every_field() {
            let key = [7u8; 32];
            let t = derive_token(&key, b"salt", "alice", "phone", SHA256_EXPR);
            assert_eq!(t, DERIVED);
            assert_eq!(t.len(), 43);
            for other in [
                derive_token(&[8u8; 32], b"salt", "alice", "phone", SHA256_EXPR),
                derive_token(&key, b"salu", "alice", "phone", SHA256_EXPR),
                derive_token(&key, b"salt", "alicf", "phone", SHA256_EXPR),
                derive_token(&key, b"salt", "alice", "phonf", SHA256_EXPR),
                derive_token(&key, b"salt", "alice", "phone", SHA256_NONE),
                // Moving bytes between fields changes the token (length prefixes).
                derive_token(&key, b"salta", "lice", "phone", SHA256_EXPR),
            ] {
                assert_ne!(t, other);
            }
            assert_eq!(channel_binding(SHA256_NONE), Some(None));
            assert_eq!(channel_binding(SHA256_EXPR), Some(Some("tls-exporter")));
            assert_eq!(
                channel_binding(SHA256_ENDP),
                Some(Some("tls-server-end-point"))
            );
            assert_eq!(channel_binding("HT-SHA-256-UNIQ"), None);
            assert_eq!(new_salt().len(), 16);
        }

        #[test]
        fn a_token_is_recognised_by_its_verifier_only() {
            let t = new_token();
            let v = verifier(t.as_bytes());
            let proof = hmac(t.as_bytes(), b"Initiator");
            assert!(matches(&v, &proof));
            assert!(!matches(&v, &hmac(b"other", b"Initiator")));
            assert!(!matches(&v, &v), "the stored verifier is not a valid proof");
            let mut msg = b"alice\0".to_vec();
            msg.extend_from_slice(&proof);
            assert_eq!(parse(&msg), Ok(("alice".to_string(), proof)));
            assert_eq!(parse(b"alice"), Err(SaslError::MalformedRequest));
            assert_eq!(parse(b"\0x"), Err(SaslError::MalformedRequest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1_SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
    const SHA256_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc5802_keys() -> ScramKeys {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        derive_keys(ScramHash::Sha1, "pencil", &salt, 4096).unwrap()
    }

    fn rfc7677_keys() -> ScramKeys {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        derive_keys(ScramHash::Sha256, "pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn rfc5802_scram_sha1_vector() {
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, SHA1_SERVER_NONCE);
        let (user, authzid) = s
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(authzid, None);
        let sf = s.server_first(Some(rfc5802_keys()));
        assert_eq!(
            sf,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let fin = s
            .client_final(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap();
        assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    #[test]
    fn rfc7677_scram_sha256_vector() {
        let mut s = ScramServer::with_nonce(ScramHash::Sha256, SHA256_SERVER_NONCE);
        s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let sf = s.server_first(Some(rfc7677_keys()));
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .to_vec()
        );
        let fin = s
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            fin,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    /// A tiny SCRAM client, to exercise paths the RFC vectors do not.
    fn client_final_for(
        hash: ScramHash,
        password: &str,
        gs2: &str,
        client_first_bare: &str,
        server_first: &[u8],
    ) -> String {
        client_final_bound(hash, password, gs2, b"", client_first_bare, server_first)
    }

    /// The same with channel-binding data after the gs2 header in `c=`.
    fn client_final_bound(
        hash: ScramHash,
        password: &str,
        gs2: &str,
        cb_data: &[u8],
        client_first_bare: &str,
        server_first: &[u8],
    ) -> String {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iters = 0;
        for a in sf.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = a.strip_prefix("s=") {
                salt = B64.decode(v).unwrap();
            } else if let Some(v) = a.strip_prefix("i=") {
                iters = v.parse().unwrap();
            }
        }
        let salted = hash.hi(password.as_bytes(), &salt, iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.h(&client_key);
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(cb_data);
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth = format!("{client_first_bare},{sf},{without_proof}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn wrong_password_fails() {
        let keys = derive_keys(ScramHash::Sha256, "secret", b"salty", 64).unwrap();
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.client_first(b"n,,n=alice,r=abc").unwrap();
        let sf = s.server_first(Some(keys.clone()));
        let fin = client_final_for(ScramHash::Sha256, "wrong", "n,,", "n=alice,r=abc", &sf);
        assert_eq!(
            s.client_final(fin.as_bytes()),
            Err(SaslError::NotAuthorized)
        );

        let mut s = ScramServer::new(ScramHash::Sha256);
        s.client_first(b"n,,n=alice,r=abc").unwrap();
        let sf = s.server_first(Some(keys));
        let fin = client_final_for(ScramHash::Sha256, "secret", "n,,", "n=alice,r=abc", &sf);
        assert!(s.client_final(fin.as_bytes()).unwrap().starts_with(b"v="));
    }

    #[test]
    fn authzid_and_y_flag() {
        let keys = derive_keys(ScramHash::Sha1, "pw", b"salt", 16).unwrap();
        let mut s = ScramServer::new(ScramHash::Sha1);
        let (user, authzid) = s
            .client_first(b"y,a=admin@x=2Cy=3Dz,n=us=3Der,r=nonce1")
            .unwrap();
        assert_eq!(user, "us=er");
        assert_eq!(authzid.as_deref(), Some("admin@x,y=z"));
        let sf = s.server_first(Some(keys));
        let gs2 = "y,a=admin@x=2Cy=3Dz,";
        let fin = client_final_for(ScramHash::Sha1, "pw", gs2, "n=us=3Der,r=nonce1", &sf);
        assert!(s.client_final(fin.as_bytes()).is_ok());
    }

    #[test]
    fn channel_binding_echo_must_match() {
        let keys = derive_keys(ScramHash::Sha1, "pw", b"salt", 16).unwrap();
        let mut s = ScramServer::new(ScramHash::Sha1);
        s.client_first(b"n,,n=u,r=n1").unwrap();
        let sf = s.server_first(Some(keys));
        // Echoes "y,," although the client sent "n,,": a downgrade attempt.
        let fin = client_final_for(ScramHash::Sha1, "pw", "y,,", "n=u,r=n1", &sf);
        assert_eq!(
            s.client_final(fin.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    fn bindings() -> ChannelBindings {
        ChannelBindings {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: Some(vec![9; 32]),
        }
    }

    /// One -PLUS exchange with `gs2` and `cb_data` in the client's `c=`; the result of
    /// client-final.
    fn plus_exchange(
        hash: ScramHash,
        gs2: &str,
        cb_data: &[u8],
        have: ChannelBindings,
    ) -> Result<Vec<u8>, SaslError> {
        let keys = derive_keys(hash, "pw", b"salt", 16).unwrap();
        let mut s = ScramServer::new(hash).channel_binding(true, have);
        s.client_first(format!("{gs2}n=u,r=n1").as_bytes())?;
        let sf = s.server_first(Some(keys));
        let fin = client_final_bound(hash, "pw", gs2, cb_data, "n=u,r=n1", &sf);
        s.client_final(fin.as_bytes())
    }

    #[test]
    fn plus_binds_to_the_connection() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            // Each type with its own data, also with an authzid in the header.
            for (gs2, data) in [
                ("p=tls-exporter,,", vec![7; 32]),
                ("p=tls-server-end-point,,", vec![9; 32]),
                ("p=tls-exporter,a=u@localhost,", vec![7; 32]),
            ] {
                let ok = plus_exchange(hash, gs2, &data, bindings());
                assert!(ok.unwrap().starts_with(b"v="), "{gs2}");
                // Another connection's data (a man in the middle's), or the other type's.
                for wrong in [vec![8; 32], vec![], data[..31].to_vec()] {
                    assert_eq!(
                        plus_exchange(hash, gs2, &wrong, bindings()),
                        Err(SaslError::NotAuthorized),
                        "{gs2} {wrong:?}"
                    );
                }
            }
            assert_eq!(
                plus_exchange(hash, "p=tls-exporter,,", &[9; 32], bindings()),
                Err(SaslError::NotAuthorized)
            );
        }
        let s = ScramServer::new(ScramHash::Sha1).channel_binding(true, bindings());
        assert_eq!(s.mechanism(), Mechanism::ScramSha1Plus);
    }

    #[test]
    fn plus_refuses_what_it_cannot_bind() {
        let only_end_point = ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: Some(vec![9; 32]),
        };
        for (gs2, have, err) in [
            // tls-unique is not offered (TLS 1.3 has none), nor a type without data.
            (
                "p=tls-unique,,",
                bindings(),
                SaslError::UnsupportedChannelBinding,
            ),
            (
                "p=tls-exporter,,",
                only_end_point,
                SaslError::UnsupportedChannelBinding,
            ),
            (
                "p=tls-exporter,,",
                ChannelBindings::default(),
                SaslError::UnsupportedChannelBinding,
            ),
            // A -PLUS mechanism without binding (RFC 5802 §6: "p" only).
            ("n,,", bindings(), SaslError::MalformedRequest),
            ("y,,", bindings(), SaslError::MalformedRequest),
            ("p=,,", bindings(), SaslError::MalformedRequest),
            ("p=tls exporter,,", bindings(), SaslError::MalformedRequest),
        ] {
            let mut s = ScramServer::new(ScramHash::Sha256).channel_binding(true, have);
            assert_eq!(
                s.client_first(format!("{gs2}n=u,r=n1").as_bytes()),
                Err(err.clone()),
                "{gs2}"
            );
        }
        assert_eq!(
            SaslError::UnsupportedChannelBinding.condition(),
            "malformed-request"
        );
    }

    #[test]
    fn y_flag_is_a_downgrade_where_plus_is_offered() {
        // We offer -PLUS on this connection: a client that says "y" did not see it.
        let mut s = ScramServer::new(ScramHash::Sha256).channel_binding(false, bindings());
        assert_eq!(
            s.client_first(b"y,,n=u,r=n1"),
            Err(SaslError::ChannelBindingDowngrade)
        );
        assert_eq!(
            SaslError::ChannelBindingDowngrade.condition(),
            "not-authorized"
        );
        // "n" is fine: the client cannot bind.
        let keys = derive_keys(ScramHash::Sha256, "pw", b"salt", 16).unwrap();
        let mut s = ScramServer::new(ScramHash::Sha256).channel_binding(false, bindings());
        s.client_first(b"n,,n=u,r=n1").unwrap();
        let sf = s.server_first(Some(keys));
        let fin = client_final_for(ScramHash::Sha256, "pw", "n,,", "n=u,r=n1", &sf);
        assert!(s.client_final(fin.as_bytes()).is_ok());
        // Binding in a mechanism without it.
        let mut s = ScramServer::new(ScramHash::Sha256).channel_binding(false, bindings());
        assert_eq!(
            s.client_first(b"p=tls-exporter,,n=u,r=n1"),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn binding_types() {
        assert_eq!(
            bindings().types().collect::<Vec<_>>(),
            ["tls-exporter", "tls-server-end-point"]
        );
        assert!(ChannelBindings::default().is_empty());
        assert_eq!(bindings().get("tls-unique"), None);
        assert_eq!(bindings().get("tls-exporter"), Some(&[7u8; 32][..]));
    }

    #[test]
    fn nonce_must_match() {
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, SHA1_SERVER_NONCE);
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        s.server_first(Some(rfc5802_keys()));
        let r =
            s.client_final(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawLXXXX,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
        assert_eq!(r, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn unknown_user_gets_stable_fake_salt_and_fails() {
        let first = |user: &str| {
            let mut s = ScramServer::new(ScramHash::Sha256);
            s.client_first(format!("n,,n={user},r=cn").as_bytes())
                .unwrap();
            let sf = String::from_utf8(s.server_first(None)).unwrap();
            (s, sf)
        };
        let (mut s, sf1) = first("ghost");
        let (_, sf2) = first("ghost");
        let (_, other) = first("phantom");
        let salt = |sf: &str| sf.split(',').nth(1).unwrap().to_string();
        assert_eq!(salt(&sf1), salt(&sf2));
        assert_ne!(salt(&sf1), salt(&other));
        assert!(sf1.ends_with(",i=4096"));
        // Same shape as a real answer: 16-byte salt.
        assert_eq!(B64.decode(&salt(&sf1)[2..]).unwrap().len(), 16);
        let fin = client_final_for(
            ScramHash::Sha256,
            "anything",
            "n,,",
            "n=ghost,r=cn",
            sf1.as_bytes(),
        );
        assert_eq!(
            s.client_final(fin.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn malformed_client_first() {
        for msg in [
            &b""[..],
            b"n,,",
            b"p=tls-unique,,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,r=abc,n=user",
            b"n,b=x,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,n=user,r=abc,=x",
            b"\xff,,n=user,r=abc",
        ] {
            let mut s = ScramServer::new(ScramHash::Sha1);
            assert_eq!(
                s.client_first(msg),
                Err(SaslError::MalformedRequest),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
        // Prohibited by SASLprep (RFC 4013 §2.3: control characters).
        let mut s = ScramServer::new(ScramHash::Sha1);
        assert_eq!(
            s.client_first("n,,n=a\u{7}b,r=abc".as_bytes()),
            Err(SaslError::InvalidString)
        );
    }

    #[test]
    fn malformed_client_final_and_order() {
        let mut s = ScramServer::new(ScramHash::Sha1);
        assert_eq!(
            s.client_final(b"c=biws,r=x,p=AAAA"),
            Err(SaslError::MalformedRequest)
        );
        assert!(s.server_first(None).is_empty());

        for msg in [
            &b"c=biws,r=x"[..],
            b"r=x,c=biws,p=AAAA",
            b"c=biws,r=x,p=!!!",
            b"c=***,r=x,p=AAAA",
            b"c=biws,p=AAAA",
        ] {
            let mut s = ScramServer::new(ScramHash::Sha1);
            s.client_first(b"n,,n=u,r=x").unwrap();
            s.server_first(None);
            assert_eq!(
                s.client_final(msg),
                Err(SaslError::MalformedRequest),
                "{msg:?}"
            );
        }
        // Second client_first after a completed exchange is refused.
        let mut s = ScramServer::new(ScramHash::Sha1);
        s.client_first(b"n,,n=u,r=x").unwrap();
        assert_eq!(
            s.client_first(b"n,,n=u,r=x"),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn plain_parsing() {
        assert_eq!(
            parse_plain(b"\0user\0pencil").unwrap(),
            (None, "user".to_string(), "pencil".to_string())
        );
        assert_eq!(
            parse_plain(b"admin@x\0user\0pen cil").unwrap(),
            (
                Some("admin@x".to_string()),
                "user".to_string(),
                "pen cil".to_string()
            )
        );
        // SASLprep maps non-ASCII spaces to ASCII space (RFC 4013 §2.1).
        assert_eq!(parse_plain("\0a\u{a0}b\0p".as_bytes()).unwrap().1, "a b");
        for bad in [
            &b""[..],
            b"user\0pencil",
            b"\0\0pencil",
            b"\0user\0",
            b"\0user\0pen\0cil",
            b"\0us\xffer\0pencil",
        ] {
            assert_eq!(
                parse_plain(bad),
                Err(SaslError::MalformedRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_verification() {
        let keys = new_keys(ScramHash::Sha256, "I\u{ad}X", 32).unwrap();
        assert_eq!(keys.salt.len(), 16);
        // RFC 4013 §3 example: soft hyphen is mapped to nothing.
        assert!(verify_password(&keys, "IX"));
        assert!(!verify_password(&keys, "ix"));
        assert!(!verify_password(&keys, "a\u{7}b"));
        let other = new_keys(ScramHash::Sha256, "IX", 32).unwrap();
        assert_ne!(keys.salt, other.salt);
        assert_eq!(
            derive_keys(ScramHash::Sha1, "x", b"s", 0),
            Err(SaslError::TemporaryAuthFailure)
        );
    }

    #[test]
    fn mechanisms_and_conditions() {
        for m in [
            Mechanism::ScramSha256Plus,
            Mechanism::ScramSha1Plus,
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
        ] {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(m.is_plus(), m.name().ends_with("-PLUS"));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(SaslError::MalformedRequest.condition(), "malformed-request");
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(SaslError::Aborted.condition(), "aborted");
        assert_eq!(decode_payload("=").unwrap(), Vec::<u8>::new());
        assert_eq!(decode_payload(" AGEAYg== ").unwrap(), b"\0a\0b");
        assert_eq!(decode_payload("#"), Err(SaslError::IncorrectEncoding));
        assert_eq!(encode_payload(b""), "=");
        assert_eq!(encode_payload(b"v=x"), "dj14");
    }
}
