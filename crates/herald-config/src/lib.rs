//! Herald's configuration: the TOML layer of the one configuration file.
//!
//! This crate owns every key, its type and its default. A default that a protocol rule
//! decides is taken from the pure crate that owns the rule (stream management from
//! herald-session, push from herald-push), so the number is written in one place;
//! `[store]` turns into herald-store's own options. The pure crates' configurations are
//! built here too (`Config::sm`, `Config::negotiation`, `Config::push_engine`,
//! `Config::host_push_engines`, `Config::stream_limits`), so the server never maps keys by
//! hand. Validation rejects unknown keys and bad
//! values with the file, the key and the reason (serde's `deny_unknown_fields` plus our own
//! checks).
//!
//! It must not do I/O beyond reading the file it is given, open sockets, or start anything:
//! the server (herald-server) and the transport (herald-transport, for certificates) act on
//! what it returns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or a key was unknown or of the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// toml's message, with line and key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A duration written like `"30s"`, `"72h"`, `"365d"`, at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// The longest duration any key accepts: 3650 days (ten years). Timers and deadlines add
/// durations to the current instant, and one beyond what the clock can represent would
/// panic at run time; a longer value is refused when the file is read.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86400);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration {s:?}: {e} (write e.g. \"30s\", \"10m\", \"72h\")"
            ))
        })?;
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "bad duration {s:?}: must be at most \"3650d\" (ten years)"
            )));
        }
        Ok(Dur(d))
    }
}

fn addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "bad address {s:?}: {e} (write e.g. \"127.0.0.1:5222\"; \"\" disables)"
        ))
    })
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain served.
    pub domain: String,
    /// Where the database, the generated certificate and the admin socket live.
    pub data_dir: PathBuf,
    /// How long a shutdown waits for the sessions to be saved or ended.
    pub shutdown_timeout: Dur,
    /// The database.
    pub store: StoreConfig,
    /// Client connections.
    pub c2s: C2sConfig,
    /// Certificate.
    pub tls: TlsConfig,
    /// XEP-0114 components.
    pub components: ComponentsConfig,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// XEP-0198.
    pub stream_management: SmConfig,
    /// XEP-0352.
    pub csi: CsiConfig,
    /// XEP-0313.
    pub mam: MamConfig,
    /// XEP-0160.
    pub offline: OfflineConfig,
    /// RFC 6121 rosters.
    pub roster: RosterConfig,
    /// XEP-0191 blocking.
    pub blocking: BlockingConfig,
    /// XEP-0357.
    pub push: PushConfig,
    /// Further local domains (virtual hosts), each optionally with its own certificate.
    pub hosts: Vec<HostEntry>,
    /// Server-to-server federation.
    pub s2s: S2sConfig,
    /// XEP-0054 vcard-temp.
    pub vcard: VcardConfig,
    /// XEP-0049 private XML storage.
    pub private: PrivateConfig,
    /// XEP-0157 contact addresses, published in the server's disco#info (XEP-0128).
    pub contact: ContactConfig,
    /// XEP-0077 in-band registration of new accounts, and XEP-0401 invites.
    pub registration: RegistrationConfig,
    /// The HTTP listeners (upload, metrics, health).
    pub http: HttpConfig,
    /// XEP-0363 HTTP file upload.
    pub upload: UploadConfig,
    /// XEP-0215 STUN/TURN services; absent: none.
    pub turn: Option<TurnConfig>,
    /// XEP-0484 FAST tokens (SASL2 reconnects without the password).
    pub fast: FastConfig,
    /// XEP-0163 PEP.
    pub pep: PepConfig,
    /// XEP-0045 group chat.
    pub muc: MucConfig,
    /// Cluster mode (several nodes sharing PostgreSQL and Redis); absent: one node.
    pub cluster: Option<ClusterConfig>,
}

/// `[fast]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastConfig {
    /// Whether SASL2 offers FAST (`HT-SHA-256-NONE`) and issues tokens.
    pub enabled: bool,
    /// How long a token is valid; past half of it, the next login with it gets a new one.
    pub token_lifetime: Dur,
    /// Most clients of one account holding tokens (two each: the newest and the previous);
    /// a new one beyond it ends the tokens of the client issued one longest ago.
    pub max_clients_per_account: usize,
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig {
            enabled: true,
            token_lifetime: Dur(Duration::from_secs(14 * 86400)),
            max_clients_per_account: 16,
        }
    }
}

/// `[[hosts]]`: another domain served by this server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// The domain.
    pub domain: String,
    /// PEM certificate chain for it (absent: the self-signed certificate covers it).
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// `[hosts.push]`: this host's own push options (absent keys: the top-level `[push]`'s).
    #[serde(default)]
    pub push: HostPushConfig,
}

/// `[hosts.push]`: a virtual host's overrides of `[push]`, as Prosody lets each VirtualHost
/// set its own push options (one host may put bodies in notifications, another not).
///
/// A key left out inherits the top-level `[push]` value, not the built-in default, so a
/// host only names what differs ([`HostPushConfig::merged`]). The keys in
/// [`GLOBAL_PUSH_KEYS`] are one budget or one pacing for the whole server (the push engine
/// keeps them from the primary configuration): they parse here only so that validation can
/// say why they are refused, instead of a bare "unknown field".
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPushConfig {
    /// `[push] with_body` for this host.
    pub with_body: Option<bool>,
    /// `[push] with_sender` for this host.
    pub with_sender: Option<bool>,
    /// `[push] important_body` for this host.
    pub important_body: Option<String>,
    /// `[push] max_errors` for this host.
    pub max_errors: Option<u32>,
    /// `[push] max_devices` for this host.
    pub max_devices: Option<usize>,
    /// `[push] max_hibernation_timeout` for this host.
    pub max_hibernation_timeout: Option<Dur>,
    /// `[push] coalesce_window` for this host.
    pub coalesce_window: Option<Dur>,
    /// `[push] reply_timeout` for this host.
    pub reply_timeout: Option<Dur>,
    /// `[push] wake_before_expiry` for this host.
    pub wake_before_expiry: Option<bool>,
    /// `[push] max_attempts` for this host.
    pub max_attempts: Option<u32>,
    /// `[push] retry_backoff` for this host.
    pub retry_backoff: Option<Dur>,
    /// `[push] max_pending_per_user` for this host (a user's share is per user, so each
    /// host may size it).
    pub max_pending_per_user: Option<usize>,
    /// Global: refused by validation.
    pub max_pending: Option<usize>,
    /// Global: refused by validation.
    pub max_pending_per_app_server: Option<usize>,
    /// Global: refused by validation.
    pub idle_user_ttl: Option<Dur>,
    /// Global: refused by validation.
    pub restart_wake_rate: Option<u32>,
    /// Global: refused by validation.
    pub removed_retention: Option<Dur>,
}

/// `[push]` keys that only the top-level table may set: the publish budget shared by all
/// hosts and per app server, the eviction of idle users' state (herald-push documents these
/// as taken from the primary configuration), the pacing of wake pushes after a crash, and
/// how long the one store keeps removed registrations.
pub const GLOBAL_PUSH_KEYS: &[&str] = &[
    "max_pending",
    "max_pending_per_app_server",
    "idle_user_ttl",
    "restart_wake_rate",
    "removed_retention",
];

impl HostPushConfig {
    /// The global keys this table sets (each one a configuration error).
    pub fn global_keys_set(&self) -> Vec<&'static str> {
        let set = [
            self.max_pending.is_some(),
            self.max_pending_per_app_server.is_some(),
            self.idle_user_ttl.is_some(),
            self.restart_wake_rate.is_some(),
            self.removed_retention.is_some(),
        ];
        GLOBAL_PUSH_KEYS
            .iter()
            .zip(set)
            .filter_map(|(k, s)| s.then_some(*k))
            .collect()
    }

    /// `global` with this host's overrides applied; global keys keep `global`'s values.
    pub fn merged(&self, global: &PushConfig) -> PushConfig {
        // Both destructurings are exhaustive on purpose: a key added to `[push]` does not
        // compile until it is decided whether a host may override it (a field of
        // `HostPushConfig`) or not (listed in `GLOBAL_PUSH_KEYS`).
        let PushConfig {
            with_body,
            with_sender,
            important_body,
            max_errors,
            max_devices,
            max_hibernation_timeout,
            coalesce_window,
            reply_timeout,
            wake_before_expiry,
            max_attempts,
            retry_backoff,
            max_pending,
            max_pending_per_user,
            max_pending_per_app_server,
            idle_user_ttl,
            restart_wake_rate,
            removed_retention,
        } = global.clone();
        let HostPushConfig {
            with_body: h_with_body,
            with_sender: h_with_sender,
            important_body: h_important_body,
            max_errors: h_max_errors,
            max_devices: h_max_devices,
            max_hibernation_timeout: h_max_hibernation_timeout,
            coalesce_window: h_coalesce_window,
            reply_timeout: h_reply_timeout,
            wake_before_expiry: h_wake_before_expiry,
            max_attempts: h_max_attempts,
            retry_backoff: h_retry_backoff,
            max_pending_per_user: h_max_pending_per_user,
            max_pending: _,
            max_pending_per_app_server: _,
            idle_user_ttl: _,
            restart_wake_rate: _,
            removed_retention: _,
        } = self.clone();
        PushConfig {
            with_body: h_with_body.unwrap_or(with_body),
            with_sender: h_with_sender.unwrap_or(with_sender),
            important_body: h_important_body.unwrap_or(important_body),
            max_errors: h_max_errors.unwrap_or(max_errors),
            max_devices: h_max_devices.unwrap_or(max_devices),
            max_hibernation_timeout: h_max_hibernation_timeout.unwrap_or(max_hibernation_timeout),
            coalesce_window: h_coalesce_window.unwrap_or(coalesce_window),
            reply_timeout: h_reply_timeout.unwrap_or(reply_timeout),
            wake_before_expiry: h_wake_before_expiry.unwrap_or(wake_before_expiry),
            max_attempts: h_max_attempts.unwrap_or(max_attempts),
            retry_backoff: h_retry_backoff.unwrap_or(retry_backoff),
            max_pending_per_user: h_max_pending_per_user.unwrap_or(max_pending_per_user),
            max_pending,
            max_pending_per_app_server,
            idle_user_ttl,
            restart_wake_rate,
            removed_retention,
        }
    }
}

/// `[s2s]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Incoming s2s listener (STARTTLS); absent or "": no incoming s2s.
    #[serde(deserialize_with = "addr")]
    pub listen: Option<SocketAddr>,
    /// Incoming direct TLS s2s (XEP-0368); absent or "": none.
    #[serde(deserialize_with = "addr")]
    pub direct_tls_listen: Option<SocketAddr>,
    /// No effect, kept so existing files load: incoming peers need a valid certificate or
    /// dialback whatever it says, and outgoing streams follow `insecure_outgoing`.
    pub require_valid_certs: bool,
    /// Allow Server Dialback (XEP-0220) where certificates do not verify.
    pub allow_dialback: bool,
    /// Extra trust anchors (PEM).
    pub ca_file: Option<PathBuf>,
    /// Close an idle s2s connection after this long.
    pub idle_timeout: Dur,
    /// Give up connecting to a remote domain after this long.
    pub connect_timeout: Dur,
    /// Stanzas queued per remote domain while its connection is set up.
    pub max_queue: usize,
    /// Accept any certificate on outgoing streams (we then authenticate only ourselves, by
    /// dialback); false: the receiving server must present one valid for its domain.
    pub insecure_outgoing: bool,
    /// Outgoing connections being set up (resolve, connect, TLS, authenticate) at once, for
    /// all users; a stanza that would start one more bounces with resource-constraint.
    pub max_outgoing_setups: usize,
    /// Of those, how many one local user's stanzas may have started (each for a new remote
    /// domain); stanzas from the server or a component count only against the global cap.
    pub max_outgoing_setups_per_user: usize,
    /// Dialback verifications (callbacks to an authoritative server) one incoming stream may
    /// have in progress; a request beyond gets a dialback error (policy-violation).
    pub max_dialback_verifications: usize,
    /// Dialback verifications in progress for all incoming streams together.
    pub max_dialback_verifications_total: usize,
    /// A remote domain whose connection could not be set up is not tried again for this
    /// long: its stanzas bounce at once ("0s": no memory of failures).
    pub failure_backoff: Dur,
    /// Failed domains remembered at once (when full, expired and then oldest entries go).
    pub max_failed_domains: usize,
    /// Static routes: remote domain → "host:port" (bypass DNS).
    pub routes: std::collections::BTreeMap<String, String>,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            listen: None,
            direct_tls_listen: None,
            require_valid_certs: true,
            allow_dialback: true,
            ca_file: None,
            idle_timeout: Dur(Duration::from_secs(600)),
            connect_timeout: Dur(Duration::from_secs(10)),
            max_queue: 1000,
            insecure_outgoing: false,
            max_outgoing_setups: 64,
            max_outgoing_setups_per_user: 8,
            max_dialback_verifications: 16,
            max_dialback_verifications_total: 256,
            failure_backoff: Dur(Duration::from_secs(60)),
            max_failed_domains: 10_000,
            routes: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./herald-data"),
            shutdown_timeout: Dur(Duration::from_secs(10)),
            store: StoreConfig::default(),
            c2s: C2sConfig::default(),
            tls: TlsConfig::default(),
            components: ComponentsConfig::default(),
            limits: LimitsConfig::default(),
            stream_management: SmConfig::default(),
            csi: CsiConfig::default(),
            mam: MamConfig::default(),
            offline: OfflineConfig::default(),
            roster: RosterConfig::default(),
            blocking: BlockingConfig::default(),
            push: PushConfig::default(),
            hosts: Vec::new(),
            s2s: S2sConfig::default(),
            vcard: VcardConfig::default(),
            private: PrivateConfig::default(),
            contact: ContactConfig::default(),
            registration: RegistrationConfig::default(),
            http: HttpConfig::default(),
            upload: UploadConfig::default(),
            turn: None,
            fast: FastConfig::default(),
            muc: MucConfig::default(),
            pep: PepConfig::default(),
            cluster: None,
        }
    }
}

/// `[contact]`: XEP-0157 addresses (URIs such as `mailto:…`, `xmpp:…`, `https://…`) listed
/// in the server's disco#info as a `http://jabber.org/network/serverinfo` form; the form is
/// left out when all are empty.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactConfig {
    /// `abuse-addresses`.
    pub abuse: Vec<String>,
    /// `admin-addresses`.
    pub admin: Vec<String>,
    /// `feedback-addresses`.
    pub feedback: Vec<String>,
    /// `sales-addresses`.
    pub sales: Vec<String>,
    /// `security-addresses`.
    pub security: Vec<String>,
    /// `support-addresses`.
    pub support: Vec<String>,
}

impl ContactConfig {
    /// The XEP-0157 fields, (field var, addresses), in the XEP's order.
    pub fn fields(&self) -> [(&'static str, &[String]); 6] {
        [
            ("abuse-addresses", &self.abuse),
            ("admin-addresses", &self.admin),
            ("feedback-addresses", &self.feedback),
            ("sales-addresses", &self.sales),
            ("security-addresses", &self.security),
            ("support-addresses", &self.support),
        ]
    }
}

/// `[registration]`: creating accounts over XMPP before logging in (XEP-0077 §3.1). Changing
/// one's password and removing one's account (logged in) are always allowed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether new accounts may be registered in band (off: the stream feature is not
    /// offered and a registration request gets `service-unavailable`).
    pub enabled: bool,
    /// Whether a registration needs an invite token (`herald invite create`).
    pub invite_only: bool,
    /// Most accounts registered from one IP address within `per_ip_window`; one more gets
    /// `resource-constraint` (type `wait`).
    pub max_per_ip: u32,
    /// The window `max_per_ip` counts in.
    pub per_ip_window: Dur,
    /// Most addresses whose registrations are remembered (the oldest is forgotten first).
    pub max_tracked_ips: usize,
    /// Most characters of a new account's name (before the `@`).
    pub max_username_chars: usize,
    /// Most bytes of a password given in band.
    pub max_password_bytes: usize,
    /// Most invites stored at once (used-up and expired ones are dropped first).
    pub max_invites: usize,
    /// Most registration IQs (form, submission, invite token; also refused ones) one stream
    /// may send before logging in; one more ends it with `policy-violation`.
    pub max_requests_per_stream: u32,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            invite_only: false,
            max_per_ip: 3,
            per_ip_window: Dur(Duration::from_secs(3600)),
            max_tracked_ips: 10_000,
            max_username_chars: 64,
            max_password_bytes: 1024,
            max_invites: 10_000,
            max_requests_per_stream: 10,
        }
    }
}

/// A byte size: an integer, or a string with a unit, `"100MB"` (decimal: kB, MB, GB, TB) or
/// `"64MiB"` (binary: KiB, MiB, GiB, TiB), as the issue's examples and operators write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"100MB"`, `"64 KiB"`, `"12345"`.
    pub fn parse(s: &str) -> Option<ByteSize> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "bad size {s:?} (write e.g. 1048576, \"100MB\", \"64MiB\")"
                ))
            }),
        }
    }
}

/// `[http]`: one HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN) with the domain's certificate,
/// and an optional plain one for a reverse proxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTPS listener; "" disables.
    #[serde(deserialize_with = "addr")]
    pub listen: Option<SocketAddr>,
    /// Plain HTTP listener (for a reverse proxy on the same machine); "" disables.
    #[serde(deserialize_with = "addr")]
    pub plain_listen: Option<SocketAddr>,
    /// How clients reach the listener (upload URLs); "": `https://DOMAIN:PORT` of `listen`.
    pub public_url: String,
    /// Serve `/metrics` and `/health`.
    pub metrics: bool,
    /// Serve XMPP over WebSocket (RFC 7395) on `/xmpp-websocket`, advertised by XEP-0156
    /// host-meta.
    pub websocket: bool,
    /// HTTP connections open at once (both listeners); beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers); beyond: 431, or the connection
    /// is closed.
    pub max_header_bytes: usize,
    /// Time allowed to send a request's head, and between two reads of an upload's body
    /// (slow senders are cut off: 408).
    pub request_timeout: Dur,
    /// A kept-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Dur,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(([127, 0, 0, 1], 5443).into()),
            plain_listen: None,
            public_url: String::new(),
            metrics: true,
            websocket: true,
            max_connections: 1024,
            max_header_bytes: 16384,
            request_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(120)),
        }
    }
}

impl HttpConfig {
    /// The base URL clients are given (no trailing slash), from `public_url` or, when
    /// empty, the bound HTTPS address.
    pub fn base_url(&self, domain: &str, bound: Option<SocketAddr>) -> Option<String> {
        if !self.public_url.is_empty() {
            return Some(self.public_url.trim_end_matches('/').to_string());
        }
        bound.map(|a| format!("https://{domain}:{}", a.port()))
    }
}

/// `[upload]`: XEP-0363 HTTP file upload, served on the domain itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Offer uploads (needs an HTTP listener).
    pub enabled: bool,
    /// Largest file; a slot request beyond gets `file-too-large` with this limit.
    pub max_file_size: ByteSize,
    /// Bytes of files one user keeps; a slot beyond gets `resource-constraint`.
    pub quota_per_user: ByteSize,
    /// Files older than this are deleted.
    pub expire_after: Dur,
    /// How long a slot's PUT URL stays valid.
    pub slot_ttl: Dur,
    /// PUTs of one user running at once; beyond: 429.
    pub max_concurrent_per_user: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            max_file_size: ByteSize(100_000_000),
            quota_per_user: ByteSize(1_000_000_000),
            expire_after: Dur(Duration::from_secs(30 * 86400)),
            slot_ttl: Dur(Duration::from_secs(300)),
            max_concurrent_per_user: 4,
        }
    }
}

/// `[turn]`: one STUN/TURN server with coturn's `use-auth-secret` credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// The TURN server's host name or address, as clients reach it.
    pub host: String,
    /// Its port (STUN and TURN, UDP and TCP).
    #[serde(default = "default_turn_port")]
    pub port: u16,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// How long handed-out credentials stay valid.
    #[serde(default = "default_turn_ttl")]
    pub ttl: Dur,
}

fn default_turn_port() -> u16 {
    3478
}

fn default_turn_ttl() -> Dur {
    Dur(Duration::from_secs(86400))
}

/// `[cluster]`: this node's membership in a cluster of Herald nodes that share one
/// PostgreSQL store and one Redis.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://[user:password@]host:port[/db]`).
    pub redis: String,
    /// This node's unique name in the cluster; empty (the default): the host name.
    #[serde(default)]
    pub node: String,
    /// How long a node's heartbeat stays valid without renewal; a killed node's sessions
    /// stop being routed to after this long.
    #[serde(default = "default_cluster_lease")]
    pub lease: Dur,
    /// Most stanzas waiting to be written to one other node's delivery stream; past it, a
    /// stanza for that node's sessions is refused as by a full session inbox.
    #[serde(default = "default_cluster_queue")]
    pub max_queue: usize,
    /// Most bytes (weighed as `limits.session_queue_bytes` weighs stanzas) waiting for one
    /// other node.
    #[serde(default = "default_cluster_queue_bytes")]
    pub max_queue_bytes: usize,
    /// Entries each node's delivery stream keeps at most in Redis (XADD MAXLEN ~): what a
    /// node that stops reading (stuck, or reconnecting to Redis) may find when it reads again.
    #[serde(default = "default_cluster_stream")]
    pub stream_max: usize,
}

fn default_cluster_lease() -> Dur {
    Dur(Duration::from_secs(15))
}

fn default_cluster_queue() -> usize {
    10_000
}

fn default_cluster_queue_bytes() -> usize {
    64 << 20
}

fn default_cluster_stream() -> usize {
    100_000
}

impl ClusterConfig {
    /// The node name: `node`, else the host name (from /proc/sys/kernel/hostname, else the
    /// HOSTNAME environment variable).
    pub fn node_name(&self) -> Result<String, String> {
        let name = if self.node.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            self.node.clone()
        };
        herald_cluster::check_node_name(&name)?;
        Ok(name)
    }
}

/// `[store]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// "normal": a commit survives a crash of the process (SQLite `synchronous=NORMAL`);
    /// "full": every commit is fsynced and also survives power loss (`synchronous=FULL`).
    pub durability: String,
    /// Below this many free bytes on the database's filesystem, new archive and offline
    /// writes are refused (`resource-constraint`, type wait, to the sender) until space
    /// returns, so the disk never fills under SQLite mid-transaction; 0 disables the check.
    pub min_free_bytes: u64,
    /// "sqlite" (the default: a file in `data_dir`) or "postgres" (the server at `url`).
    pub backend: String,
    /// The PostgreSQL connection URL (`postgres://user:password@host:port/database`), used
    /// when `backend = "postgres"`.
    pub url: String,
    /// Most connections to PostgreSQL held open at once (each blocking store call holds one).
    pub pool_size: u32,
    /// How long a store call waits for what it needs before the client is told
    /// `resource-constraint` (wait): SQLite's write lock held by another connection (the CLI,
    /// a backup), or a free PostgreSQL connection (and a new one's connect).
    pub busy_timeout: Dur,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: "normal".into(),
            min_free_bytes: 512 << 20,
            backend: "sqlite".into(),
            url: String::new(),
            pool_size: 16,
            busy_timeout: Dur(Duration::from_secs(5)),
        }
    }
}

/// The longest `[store] busy_timeout`.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(600);

/// Most PostgreSQL connections `[store] pool_size` may ask for (PostgreSQL's own default
/// `max_connections` is 100, shared by every client of the server).
pub const MAX_PG_POOL: u32 = 1024;

impl StoreConfig {
    /// The options to open the store with.
    pub fn options(&self) -> herald_store::StoreOptions {
        let durability = match self.durability.as_str() {
            "full" => herald_store::Durability::Full,
            _ => herald_store::Durability::Normal,
        };
        herald_store::StoreOptions {
            durability,
            busy_timeout: self.busy_timeout.0,
            ..Default::default()
        }
    }

    /// Whether the store is PostgreSQL (`backend = "postgres"`).
    pub fn is_postgres(&self) -> bool {
        self.backend == "postgres"
    }

    /// The PostgreSQL options (`url`, `pool_size`).
    pub fn pg_options(&self) -> herald_store::PgOptions {
        let mut o = herald_store::PgOptions::new(&self.url);
        o.pool_size = self.pool_size;
        o.connect_timeout = self.busy_timeout.0;
        o
    }
}

/// `[c2s]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// STARTTLS listener; "" disables.
    #[serde(deserialize_with = "addr")]
    pub listen: Option<SocketAddr>,
    /// Direct TLS (XEP-0368) listener; "" disables.
    #[serde(deserialize_with = "addr")]
    pub direct_tls_listen: Option<SocketAddr>,
    /// Refuse authentication before TLS.
    pub require_encryption: bool,
    /// Close (or hibernate) a connection that sends nothing for this long.
    pub read_timeout: Dur,
    /// Send a whitespace keepalive after this long without writing.
    pub keepalive_interval: Dur,
    /// Wait this long before answering a failed authentication; doubled per recent failure of
    /// the account or of the peer address, up to `max_auth_delay`.
    pub auth_failure_delay: Dur,
    /// The longest wait before answering a failed authentication.
    pub max_auth_delay: Dur,
    /// Failed authentications of one account from one address within `auth_lockout_time`
    /// that lock the account for that address for `auth_lockout_time`
    /// (`temporary-auth-failure`); 0 never locks.
    pub auth_lockout_failures: u32,
    /// The failure-counting window and the lockout's length.
    pub auth_lockout_time: Dur,
    /// Close the stream after this many failed authentications.
    pub max_auth_failures: u32,
    /// Time allowed from TCP accept to a bound resource.
    pub negotiation_timeout: Dur,
    /// Offer SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS over TLS (channel binding with
    /// `tls-exporter` on TLS 1.3 and `tls-server-end-point`, advertised with XEP-0440);
    /// false offers only the mechanisms without binding.
    pub channel_binding: bool,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: Some(([127, 0, 0, 1], 5222).into()),
            direct_tls_listen: Some(([127, 0, 0, 1], 5223).into()),
            require_encryption: true,
            read_timeout: Dur(Duration::from_secs(300)),
            keepalive_interval: Dur(Duration::from_secs(60)),
            auth_failure_delay: Dur(Duration::from_secs(1)),
            max_auth_delay: Dur(Duration::from_secs(30)),
            auth_lockout_failures: 10,
            auth_lockout_time: Dur(Duration::from_secs(300)),
            max_auth_failures: 3,
            negotiation_timeout: Dur(Duration::from_secs(60)),
            channel_binding: true,
        }
    }
}

/// `[tls]`: both absent means a self-signed certificate in `data_dir`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[components]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// XEP-0114 listener; "" disables.
    #[serde(deserialize_with = "addr")]
    pub listen: Option<SocketAddr>,
    /// The accepted components.
    pub component: Vec<ComponentEntry>,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            listen: Some(([127, 0, 0, 1], 5347).into()),
            component: Vec::new(),
        }
    }
}

/// `[[components.component]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    /// The component's domain; it also owns every JID under it.
    pub domain: String,
    /// The shared secret of the XEP-0114 handshake.
    pub secret: String,
}

/// The smallest byte budget a queue may have (`limits.*_queue_bytes`).
pub const MIN_QUEUE_BYTES: usize = 64 << 10;

/// `[limits]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Largest stream header, in bytes.
    pub max_header_bytes: usize,
    /// Largest element accepted on a c2s stream before authentication (STARTTLS, SASL), in
    /// bytes; at most `max_stanza_bytes` applies.
    pub max_preauth_stanza_bytes: usize,
    /// Deepest element nesting accepted on a c2s stream before authentication; at most
    /// `max_depth` applies.
    pub max_preauth_depth: usize,
    /// Stanzas waiting for one session before senders get `resource-constraint`.
    pub session_inbox: usize,
    /// Sessions (connected or hibernated) one account may have; at the limit the oldest
    /// hibernated one makes room, else a new bind gets `resource-constraint`.
    pub max_sessions_per_account: usize,
    /// Open connections of every kind (c2s, s2s, components) at once; a new one beyond
    /// gets `policy-violation` and is closed.
    pub max_connections: usize,
    /// Open connections from one IP address at once; beyond: `policy-violation`.
    pub max_connections_per_ip: usize,
    /// c2s connections from one IP address not yet authenticated (TLS, SASL); beyond:
    /// `policy-violation`. Logged-in sessions do not count.
    pub max_unauthenticated_per_ip: usize,
    /// New connections (c2s, WebSocket, s2s, components) one address may open per second;
    /// beyond, a connection is closed at once without a stream error (a WebSocket upgrade
    /// gets 503). An IPv6 address counts by its /64. 0: no limit.
    pub connection_rate_per_ip: u64,
    /// New connections one address may open at once beyond that rate.
    pub connection_burst_per_ip: u64,
    /// Bytes of stanzas held for one session (inbox, XEP-0198 queue, CSI buffer), each
    /// weighed by what it costs in memory (`herald_xep::stanza::mem_cost`). A routed stanza
    /// beyond: `resource-constraint` to its sender; the XEP-0198 queue beyond (the server's
    /// own replies): the stream ends with `policy-violation`.
    pub session_queue_bytes: usize,
    /// Bytes of stanzas held for all sessions of one account together; beyond:
    /// `resource-constraint` to the sender.
    pub account_queue_bytes: usize,
    /// Bytes of stanzas waiting for one outgoing s2s connection (local, remote domain
    /// pair); beyond: `resource-constraint`.
    pub s2s_queue_bytes: usize,
    /// Bytes of stanzas waiting for one component connection; beyond: `resource-constraint`.
    pub component_queue_bytes: usize,
    /// Stanzas (and XEP-0198 nonzas) per second a bound c2s session may send; beyond, the
    /// server reads its socket more slowly (nothing is dropped). 0: no limit.
    pub c2s_stanzas_per_second: u64,
    /// Stanzas a c2s session may send at once beyond that rate.
    pub c2s_stanza_burst: u64,
    /// Bytes per second (weighed as `session_queue_bytes` weighs stanzas) a bound c2s
    /// session may send; beyond, its socket is read more slowly. 0: no limit.
    pub c2s_bytes_per_second: u64,
    /// Bytes a c2s session may send at once beyond that rate.
    pub c2s_byte_burst: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_stanza_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
            max_header_bytes: 4096,
            max_preauth_stanza_bytes: 8192,
            // SASL2 with Bind2 and an inline push enable with publish options nests six deep.
            max_preauth_depth: 6,
            session_inbox: 1024,
            max_sessions_per_account: 10,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_unauthenticated_per_ip: 20,
            connection_rate_per_ip: 20,
            connection_burst_per_ip: 200,
            session_queue_bytes: 4 << 20,
            account_queue_bytes: 16 << 20,
            s2s_queue_bytes: 8 << 20,
            component_queue_bytes: 8 << 20,
            c2s_stanzas_per_second: 100,
            c2s_stanza_burst: 1000,
            c2s_bytes_per_second: 1 << 20,
            c2s_byte_burst: 8 << 20,
        }
    }
}

/// `[stream_management]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmConfig {
    /// How long a resumable session survives its connection.
    pub hibernation_timeout: Dur,
    /// An `<r/>` unanswered this long fires the ack-delayed event.
    pub max_ack_delay: Dur,
    /// Most unacked outbound stanzas.
    pub max_queue: usize,
    /// Request an ack after this many unacked stanzas.
    pub request_after: usize,
    /// Request an ack when unacked stanzas have waited this long.
    pub request_idle: Dur,
    /// Remember the last h of expired sessions this long (for `<failed h/>`).
    pub tombstone_ttl: Dur,
}

/// Stream management owns its defaults (herald-session `SmConfig::default`); this table maps
/// onto them. Only the tombstone lifetime is the server's own.
impl Default for SmConfig {
    fn default() -> Self {
        let d = herald_session::sm::SmConfig::default();
        SmConfig {
            hibernation_timeout: Dur(d.hibernation_timeout),
            max_ack_delay: Dur(d.max_ack_delay),
            max_queue: d.max_queue,
            request_after: d.request_after,
            request_idle: Dur(d.request_idle),
            tombstone_ttl: Dur(Duration::from_secs(3600)),
        }
    }
}

/// `[csi]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsiConfig {
    /// Most stanzas held for an inactive client before the buffer is flushed.
    pub max_buffer: usize,
    /// Most bytes (as `limits.session_queue_bytes` weighs them) held for an inactive
    /// client before the buffer is flushed; less than `limits.session_queue_bytes`, so the
    /// buffer flushes before the session's budget refuses anything.
    pub max_buffer_bytes: usize,
    /// Extra payloads that make a stanza important, as "namespace element".
    pub important: Vec<String>,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            max_buffer: 256,
            max_buffer_bytes: 1 << 20,
            important: Vec::new(),
        }
    }
}

/// The largest `[mam] max_page` (and `max_ids`): a page is read, serialised and written in
/// one go, so its size bounds the memory and time one query takes.
pub const MAM_MAX_PAGE_LIMIT: usize = 1000;

/// `[mam]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Default archiving preference: always, roster or never.
    pub default: String,
    /// Archived messages older than this are deleted.
    pub max_age: Dur,
    /// Most results per query page: a larger RSM `<max/>` is clamped to it (XEP-0313 lets the
    /// server return fewer). At most [`MAM_MAX_PAGE_LIMIT`].
    pub max_page: usize,
    /// Most ids in one query's `ids` field (XEP-0313 `urn:xmpp:mam:2#extended`); more is
    /// `policy-violation`.
    pub max_ids: usize,
    /// RSM `<count/>` is given only when the query matches at most this many messages
    /// (counting walks every match, so an exact count of a large archive would make each
    /// page's cost grow with the archive); beyond it `<count/>` is left out. 0 never counts.
    pub max_count: usize,
    /// SQLite connections that serve only archive queries, so that MAM queries never hold a
    /// connection logins need (credentials, rosters, offline messages).
    pub readers: usize,
    /// Archive queries one account may have running at once (from all its sessions); one
    /// more gets `resource-constraint` (type `wait`).
    pub max_concurrent_per_user: usize,
    /// Archive queries running or waiting for a reader at once, server-wide; one more gets
    /// `resource-constraint` (type `wait`).
    pub max_concurrent: usize,
    /// How long the archive writer waits after the first write of a batch before committing:
    /// a woken writer that commits at once competes for the CPU with the delivery that woke
    /// it; waiting lets that finish and gathers more writes into the commit. Acks wait this
    /// much longer (at 1,000 msgs/s on 2 cores: p99 latency 2.4 ms with 0, 1.1-1.3 ms with 2ms).
    pub commit_delay: Dur,
    /// Most bytes (serialized stanzas) one user's archive holds. Beyond it new messages are
    /// still delivered but not archived for that user; nothing archived is evicted.
    pub max_bytes_per_user: u64,
    /// Retention deletes at most this many messages per transaction, so the store's one
    /// writer is never held for long by a large purge.
    pub purge_batch: usize,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            default: "always".into(),
            max_age: Dur(Duration::from_secs(365 * 86400)),
            max_page: 100,
            max_ids: 100,
            max_count: 1000,
            readers: 2,
            max_concurrent_per_user: 2,
            max_concurrent: 32,
            commit_delay: Dur(Duration::from_millis(2)),
            max_bytes_per_user: 256 << 20,
            purge_batch: 1000,
        }
    }
}

/// `[offline]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Most messages stored for one user.
    pub max_per_user: usize,
    /// Most bytes (serialized stanzas) stored for one user; beyond it, as beyond
    /// `max_per_user`, the sender gets `resource-constraint`.
    pub max_bytes_per_user: u64,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            max_per_user: 1000,
            max_bytes_per_user: 16 << 20,
        }
    }
}

/// `[roster]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RosterConfig {
    /// Most contacts in one roster.
    pub max_items: usize,
    /// Longest item name or group name, in bytes.
    pub max_field_bytes: usize,
    /// Most subscription requests waiting for one user's answer; beyond, a request from a
    /// new JID is refused with resource-constraint (anyone can send them, from any JID).
    pub max_pending_requests: usize,
    /// Most groups on one roster item; a roster set with more is refused with
    /// not-acceptable (each group is a row read with the roster).
    pub max_groups_per_item: usize,
    /// Largest stored subscription request, in bytes of XML: only `<status/>` and the
    /// XEP-0172 `<nick/>` are kept, cut to fit (a stranger's payload must not grow the store
    /// or every login of the user).
    pub max_request_bytes: usize,
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig {
            max_items: 1000,
            max_field_bytes: 1024,
            max_pending_requests: 1000,
            max_groups_per_item: 32,
            max_request_bytes: 2048,
        }
    }
}

/// `[blocking]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockingConfig {
    /// Most JIDs in one user's blocklist; a block that would go beyond is refused with
    /// resource-constraint and changes nothing (the list is held in memory and consulted for
    /// every stanza to and from the user).
    pub max_items: usize,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig { max_items: 1000 }
    }
}

/// `[vcard]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VcardConfig {
    /// Most bytes of one user's stored vCard (XEP-0054), as serialized XML, the avatar's
    /// base64 PHOTO included; a larger set is refused with not-acceptable and changes nothing.
    /// Every reader gets the vCard in one stanza, so keep it below `limits.max_stanza_bytes`
    /// (and below what peers accept).
    pub max_bytes: usize,
}

impl Default for VcardConfig {
    fn default() -> Self {
        // 192 KiB: room for a photo of ~140 KB (base64 grows it by a third), and the set, the
        // result and every reader's copy stay one stanza under the 256 KiB that Herald
        // (`limits.max_stanza_bytes`) and Prosody (`c2s_stanza_size_limit`) accept.
        VcardConfig { max_bytes: 196_608 }
    }
}

/// `[private]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateConfig {
    /// Most bytes of one stored XEP-0049 item (one element name and namespace), as
    /// serialized XML; a larger set is refused with not-acceptable.
    pub max_bytes_per_item: usize,
    /// Most items (element name and namespace pairs) one user may store; a set that would
    /// add one more is refused with resource-constraint and changes nothing.
    pub max_items: usize,
}

impl Default for PrivateConfig {
    fn default() -> Self {
        PrivateConfig {
            max_bytes_per_item: 65_536,
            max_items: 64,
        }
    }
}

/// `[pep]`: XEP-0163 personal eventing on every account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Most nodes one account may have; a publish or create beyond gets policy-violation
    /// with `<max-nodes-exceeded/>` (XEP-0060 §7.1.3) and creates nothing.
    pub max_nodes_per_user: usize,
    /// Most items one node keeps (the cap on `pubsub#max_items`; `max` means this); older
    /// items are dropped as new ones arrive.
    pub max_items_per_node: u32,
    /// Largest item payload, in bytes of XML; larger: not-acceptable with
    /// `<payload-too-big/>` (XEP-0060 §7.1.3.5).
    pub max_item_bytes: usize,
    /// Bytes of item XML one account stores across its nodes; a publish beyond gets
    /// resource-constraint and stores nothing.
    pub max_bytes_per_user: u64,
    /// XEP-0115 caps hashes remembered with their verified features, server-wide; when full
    /// the least recently inserted is forgotten (and asked again when seen).
    pub max_caps: usize,
    /// Contact resources (full JIDs whose presence an account receives) remembered per
    /// account as notification recipients; beyond, further ones get no notifications.
    pub max_recipients_per_user: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            max_nodes_per_user: 128,
            max_items_per_node: 256,
            max_item_bytes: 131_072,
            max_bytes_per_user: 4 << 20,
            max_caps: 4096,
            max_recipients_per_user: 2000,
        }
    }
}

/// `[muc]`: the XEP-0045 group chat service Herald serves itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// The service's domain; absent: `conference.` + `domain`; `""`: no group chat.
    pub domain: Option<String>,
    /// Who may create rooms: `local` (accounts of a served domain), `admins` (the JIDs in
    /// `admins`), `anyone` (remote users too).
    pub restrict_room_creation: String,
    /// Bare JIDs that own every room and may always create one.
    pub admins: Vec<String>,
    /// Rooms in all (each is held in memory); a creation beyond: `resource-constraint`.
    pub max_rooms: usize,
    /// Rooms one user owns; a creation beyond: `resource-constraint`.
    pub max_rooms_per_user: usize,
    /// `maxusers` of a new room.
    pub occupants_default: usize,
    /// The largest `maxusers` an owner may set.
    pub max_occupants: usize,
    /// Owners, admins, members and outcasts one room keeps; beyond: `resource-constraint`.
    pub max_affiliations: usize,
    /// History messages sent on join when the client asks for none in particular.
    pub history_default: usize,
    /// The most history messages sent on join.
    pub history_max: usize,
    /// Bytes of a room subject; a longer one: `not-acceptable`.
    pub max_subject_bytes: usize,
    /// Bytes of a nick, room name, description, password, reason; longer: `not-acceptable`.
    pub max_field_bytes: usize,
    /// Bytes of a room's vCard (XEP-0486 avatar) as XML; larger: `not-acceptable`.
    pub max_vcard_bytes: usize,
    /// New rooms are listed in the service's disco#items.
    pub default_public: bool,
    /// New rooms outlive their last occupant.
    pub default_persistent: bool,
    /// New rooms keep an archive (XEP-0313 on the room, history on join).
    pub default_archive: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            domain: None,
            restrict_room_creation: "local".into(),
            admins: Vec::new(),
            max_rooms: 10_000,
            max_rooms_per_user: 100,
            occupants_default: 200,
            max_occupants: 1000,
            max_affiliations: 1000,
            history_default: 20,
            history_max: 100,
            max_subject_bytes: 1024,
            max_field_bytes: 1024,
            max_vcard_bytes: 65536,
            default_public: true,
            default_persistent: false,
            default_archive: true,
        }
    }
}

impl Config {
    /// The MUC service's domain (lower case), None when group chat is off.
    pub fn muc_domain(&self) -> Option<String> {
        match &self.muc.domain {
            None => Some(format!("conference.{}", self.domain.to_ascii_lowercase())),
            Some(d) if d.is_empty() => None,
            Some(d) => Some(d.to_ascii_lowercase()),
        }
    }

    /// Whether `domain` is the MUC service's.
    pub fn is_muc(&self, domain: &str) -> bool {
        self.muc_domain()
            .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// `[push]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Put the real message body in the notification.
    pub with_body: bool,
    /// Put the sender's JID in the notification.
    pub with_sender: bool,
    /// Body placeholder for important stanzas when `with_body` is off ("" for none).
    pub important_body: String,
    /// Errors from the app server after which a registration is removed.
    pub max_errors: u32,
    /// Most registrations per user; the oldest is evicted.
    pub max_devices: usize,
    /// How long a push-enabled hibernated session stays resumable before its first important push.
    pub max_hibernation_timeout: Dur,
    /// A leading push opens a window of this length; important stanzas inside it get one
    /// catch-up push at its end (at most two pushes per window and registration).
    pub coalesce_window: Dur,
    /// How long a publish waits for the app server's answer.
    pub reply_timeout: Dur,
    /// Push once more shortly before a push-enabled hibernated session expires.
    pub wake_before_expiry: bool,
    /// Attempts of one publish in all, on `wait` errors and reply timeouts.
    pub max_attempts: u32,
    /// Delay before the first retry, doubled for each further one.
    pub retry_backoff: Dur,
    /// Publishes awaiting an answer or a retry, over all users and app servers.
    pub max_pending: usize,
    /// One user's share of `max_pending`; beyond it that user's next push per registration
    /// waits for a free slot (others are not affected).
    pub max_pending_per_user: usize,
    /// One app server's (domain's) share of `max_pending`.
    pub max_pending_per_app_server: usize,
    /// How long the push state of a user with no session and nothing pending stays in
    /// memory.
    pub idle_user_ttl: Dur,
    /// After a crash, wake pushes per second to the users whose sessions were lost.
    pub restart_wake_rate: u32,
    /// How long removed registrations (why and when) stay listed by `herald push list`.
    pub removed_retention: Dur,
}

/// The push engine owns its defaults (herald-push `PushConfig::default`); this table maps
/// onto them. Only the server's own keys (restart wake rate, removal history) are set here.
impl Default for PushConfig {
    fn default() -> Self {
        let d = herald_push::PushConfig::default();
        PushConfig {
            with_body: d.with_body,
            with_sender: d.with_sender,
            important_body: d.important_body,
            max_errors: d.max_errors,
            max_devices: d.max_devices,
            max_hibernation_timeout: Dur(d.max_hibernation_timeout),
            coalesce_window: Dur(d.coalesce_window),
            reply_timeout: Dur(d.reply_timeout),
            wake_before_expiry: d.wake_before_expiry,
            max_attempts: d.max_attempts,
            retry_backoff: Dur(d.retry_backoff),
            max_pending: d.max_pending,
            max_pending_per_user: d.max_pending_per_user,
            max_pending_per_app_server: d.max_pending_per_app_server,
            idle_user_ttl: Dur(d.idle_user_ttl),
            restart_wake_rate: 100,
            removed_retention: Dur(Duration::from_secs(7 * 86400)),
        }
    }
}

/// The rules of a push table (`[push]`, or a host's merged one): the failing key (without
/// its table) and why.
fn check_push(p: &PushConfig, sm: &SmConfig) -> Result<(), (&'static str, String)> {
    let at_least_one = [
        ("max_devices", p.max_devices == 0),
        ("max_errors", p.max_errors == 0),
        ("max_attempts", p.max_attempts == 0),
        ("max_pending", p.max_pending == 0),
        ("max_pending_per_user", p.max_pending_per_user == 0),
        (
            "max_pending_per_app_server",
            p.max_pending_per_app_server == 0,
        ),
        ("restart_wake_rate", p.restart_wake_rate == 0),
    ];
    if let Some((k, _)) = at_least_one.iter().find(|(_, zero)| *zero) {
        return Err((k, "must be at least 1".into()));
    }
    if p.retry_backoff.0.is_zero() {
        return Err(("retry_backoff", "must be more than 0".into()));
    }
    if p.max_hibernation_timeout.0 < sm.hibernation_timeout.0 {
        return Err((
            "max_hibernation_timeout",
            "must not be shorter than stream_management.hibernation_timeout".into(),
        ));
    }
    Ok(())
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// The embedded defaults, validated.
    pub fn defaults() -> Config {
        Config::default()
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        if jid::BareJid::new(&self.domain)
            .ok()
            .filter(|j| j.node().is_none())
            .is_none()
        {
            return Err(bad(
                "domain",
                format!("{:?} is not a valid domain", self.domain),
            ));
        }
        if !matches!(self.store.durability.as_str(), "normal" | "full") {
            return Err(bad(
                "store.durability",
                format!("{:?}: expected normal or full", self.store.durability),
            ));
        }
        match self.store.backend.as_str() {
            "sqlite" => {}
            "postgres" => {
                if self.store.url.is_empty() {
                    return Err(bad(
                        "store.url",
                        "backend = \"postgres\" needs url = \"postgres://…\"".into(),
                    ));
                }
                herald_store::PgOptions::check_url(&self.store.url)
                    .map_err(|e| bad("store.url", e))?;
            }
            other => {
                return Err(bad(
                    "store.backend",
                    format!("{other:?}: expected sqlite or postgres"),
                ))
            }
        }
        // The pool refuses a zero wait (it would never hand out a connection), and a call
        // waiting minutes holds a blocking thread and its client that long.
        if !(Duration::from_millis(100)..=MAX_BUSY_TIMEOUT).contains(&self.store.busy_timeout.0) {
            return Err(bad(
                "store.busy_timeout",
                format!("{:?}: expected 100ms to 10m", self.store.busy_timeout.0),
            ));
        }
        if !(1..=MAX_PG_POOL).contains(&self.store.pool_size) {
            return Err(bad(
                "store.pool_size",
                format!("{}: expected 1 to {MAX_PG_POOL}", self.store.pool_size),
            ));
        }
        if let Some(c) = &self.cluster {
            if !self.store.is_postgres() {
                return Err(bad(
                    "cluster",
                    "cluster mode needs [store] backend = \"postgres\" (every node must share \
                     one database; SQLite is one machine's file)"
                        .into(),
                ));
            }
            if !c.redis.starts_with("redis://") {
                // rediss:// (TLS) would need the redis crate's TLS stack, which this build
                // leaves out: keep Redis on a private network or loopback.
                return Err(bad(
                    "cluster.redis",
                    format!(
                        "{:?}: expected redis://[user:password@]host:port[/db] (TLS to Redis \
                         is not built in)",
                        c.redis
                    ),
                ));
            }
            if !c.node.is_empty() {
                herald_cluster::check_node_name(&c.node).map_err(|e| bad("cluster.node", e))?;
            }
            for (v, name) in [
                (c.max_queue, "cluster.max_queue"),
                (c.max_queue_bytes, "cluster.max_queue_bytes"),
                (c.stream_max, "cluster.stream_max"),
            ] {
                if v == 0 {
                    return Err(bad(name, "must be at least 1".into()));
                }
            }
            if !(herald_cluster::lease::MIN_LEASE..=herald_cluster::lease::MAX_LEASE)
                .contains(&c.lease.0)
            {
                return Err(bad(
                    "cluster.lease",
                    format!(
                        "{:?}: expected {:?} to {:?}",
                        c.lease.0,
                        herald_cluster::lease::MIN_LEASE,
                        herald_cluster::lease::MAX_LEASE
                    ),
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(bad(
                "tls",
                "set both `cert` and `key`, or neither (self-signed)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        seen.insert(self.domain.to_ascii_lowercase());
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("hosts[{i}].domain");
            if jid::BareJid::new(&h.domain)
                .ok()
                .filter(|j| j.node().is_none())
                .is_none()
            {
                return Err(bad(&key, format!("{:?} is not a valid domain", h.domain)));
            }
            if !seen.insert(h.domain.to_ascii_lowercase()) {
                return Err(bad(&key, format!("{:?} is listed twice", h.domain)));
            }
            if h.cert.is_some() != h.key.is_some() {
                return Err(bad(
                    &format!("hosts[{i}]"),
                    "set both `cert` and `key`, or neither".into(),
                ));
            }
        }
        for (d, target) in &self.s2s.routes {
            let key = format!("s2s.routes.{d:?}");
            if jid::BareJid::new(d)
                .ok()
                .filter(|j| j.node().is_none())
                .is_none()
            {
                return Err(bad(&key, format!("{d:?} is not a valid domain")));
            }
            if self.is_local(d) {
                return Err(bad(&key, "a local domain needs no route".into()));
            }
            let ok = target
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(bad(&key, format!("{target:?}: write \"host:port\"")));
            }
        }
        for (key, v) in [
            ("s2s.max_queue", self.s2s.max_queue),
            ("s2s.max_outgoing_setups", self.s2s.max_outgoing_setups),
            (
                "s2s.max_outgoing_setups_per_user",
                self.s2s.max_outgoing_setups_per_user,
            ),
            (
                "s2s.max_dialback_verifications",
                self.s2s.max_dialback_verifications,
            ),
            (
                "s2s.max_dialback_verifications_total",
                self.s2s.max_dialback_verifications_total,
            ),
            ("s2s.max_failed_domains", self.s2s.max_failed_domains),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        for (i, c) in self.components.component.iter().enumerate() {
            let key = format!("components.component[{i}].domain");
            if jid::BareJid::new(&c.domain)
                .ok()
                .filter(|j| j.node().is_none())
                .is_none()
            {
                return Err(bad(&key, format!("{:?} is not a valid domain", c.domain)));
            }
            if c.domain == self.domain {
                return Err(bad(
                    &key,
                    "a component cannot take the server's own domain".into(),
                ));
            }
            if !seen.insert(c.domain.clone()) {
                return Err(bad(&key, format!("{:?} is listed twice", c.domain)));
            }
            if c.secret.is_empty() {
                return Err(bad(
                    &format!("components.component[{i}].secret"),
                    "must not be empty".into(),
                ));
            }
        }
        if self.c2s.max_auth_delay.0 < self.c2s.auth_failure_delay.0 {
            return Err(bad(
                "c2s.max_auth_delay",
                "must be at least c2s.auth_failure_delay".into(),
            ));
        }
        if self.c2s.auth_lockout_time.0.is_zero() {
            return Err(bad("c2s.auth_lockout_time", "must be more than 0".into()));
        }
        let l = &self.limits;
        if l.max_stanza_bytes < 4096 {
            return Err(bad(
                "limits.max_stanza_bytes",
                "must be at least 4096".into(),
            ));
        }
        if l.max_depth < 4 {
            return Err(bad("limits.max_depth", "must be at least 4".into()));
        }
        if l.max_attributes < 8 {
            return Err(bad("limits.max_attributes", "must be at least 8".into()));
        }
        if l.max_header_bytes < 512 {
            return Err(bad(
                "limits.max_header_bytes",
                "must be at least 512".into(),
            ));
        }
        if l.max_preauth_stanza_bytes < 1024 {
            return Err(bad(
                "limits.max_preauth_stanza_bytes",
                "must be at least 1024".into(),
            ));
        }
        if l.max_preauth_depth < 2 {
            return Err(bad("limits.max_preauth_depth", "must be at least 2".into()));
        }
        if l.session_inbox == 0 {
            return Err(bad("limits.session_inbox", "must be at least 1".into()));
        }
        if l.max_sessions_per_account == 0 {
            return Err(bad(
                "limits.max_sessions_per_account",
                "must be at least 1".into(),
            ));
        }
        for (key, v) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            (
                "limits.max_unauthenticated_per_ip",
                l.max_unauthenticated_per_ip,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        // A burst that does not let a reconnecting phone (or a few behind one NAT) in at
        // once would refuse ordinary clients, not floods.
        if l.connection_rate_per_ip > 0 && l.connection_burst_per_ip < 10 {
            return Err(bad(
                "limits.connection_burst_per_ip",
                "must be at least 10".into(),
            ));
        }
        // A burst below what one login sends (or one large stanza weighs) would slow every
        // client down, not just floods.
        if l.c2s_stanzas_per_second > 0 && l.c2s_stanza_burst < 50 {
            return Err(bad("limits.c2s_stanza_burst", "must be at least 50".into()));
        }
        if l.c2s_bytes_per_second > 0 && l.c2s_byte_burst < MIN_QUEUE_BYTES as u64 {
            return Err(bad(
                "limits.c2s_byte_burst",
                format!("must be at least {MIN_QUEUE_BYTES} (64 KiB)"),
            ));
        }
        // Smaller budgets would refuse ordinary traffic; the largest stanza always passes
        // an empty queue whatever the budget, so none depends on max_stanza_bytes.
        for (key, v) in [
            ("limits.session_queue_bytes", l.session_queue_bytes),
            ("limits.s2s_queue_bytes", l.s2s_queue_bytes),
            ("limits.component_queue_bytes", l.component_queue_bytes),
        ] {
            if v < MIN_QUEUE_BYTES {
                return Err(bad(
                    key,
                    format!("must be at least {MIN_QUEUE_BYTES} (64 KiB)"),
                ));
            }
        }
        if l.account_queue_bytes < l.session_queue_bytes {
            return Err(bad(
                "limits.account_queue_bytes",
                "must be at least limits.session_queue_bytes".into(),
            ));
        }
        if self.csi.max_buffer_bytes == 0 || self.csi.max_buffer_bytes >= l.session_queue_bytes {
            return Err(bad(
                "csi.max_buffer_bytes",
                "must be more than 0 and less than limits.session_queue_bytes (the buffer \
                 flushes before the session's budget refuses stanzas)"
                    .into(),
            ));
        }
        if self.stream_management.max_queue == 0 {
            return Err(bad(
                "stream_management.max_queue",
                "must be at least 1".into(),
            ));
        }
        if self.stream_management.request_after == 0 {
            return Err(bad(
                "stream_management.request_after",
                "must be at least 1".into(),
            ));
        }
        if !matches!(self.mam.default.as_str(), "always" | "roster" | "never") {
            return Err(bad(
                "mam.default",
                format!("{:?}: expected always, roster or never", self.mam.default),
            ));
        }
        if self.mam.commit_delay.0 > Duration::from_secs(1) {
            return Err(bad("mam.commit_delay", "must be at most 1s".into()));
        }
        if self.mam.max_page == 0 || self.mam.max_page > MAM_MAX_PAGE_LIMIT {
            return Err(bad(
                "mam.max_page",
                format!("must be between 1 and {MAM_MAX_PAGE_LIMIT}"),
            ));
        }
        if self.mam.max_ids == 0 || self.mam.max_ids > MAM_MAX_PAGE_LIMIT {
            return Err(bad(
                "mam.max_ids",
                format!("must be between 1 and {MAM_MAX_PAGE_LIMIT}"),
            ));
        }
        if self.mam.max_count > 1_000_000 {
            return Err(bad("mam.max_count", "must be at most 1000000".into()));
        }
        if self.mam.readers == 0 || self.mam.readers > 64 {
            return Err(bad("mam.readers", "must be between 1 and 64".into()));
        }
        if self.mam.max_concurrent_per_user == 0 {
            return Err(bad(
                "mam.max_concurrent_per_user",
                "must be at least 1".into(),
            ));
        }
        if self.mam.max_concurrent < self.mam.max_concurrent_per_user {
            return Err(bad(
                "mam.max_concurrent",
                "must be at least mam.max_concurrent_per_user".into(),
            ));
        }
        for (key, v) in [
            ("mam.max_bytes_per_user", self.mam.max_bytes_per_user),
            (
                "offline.max_bytes_per_user",
                self.offline.max_bytes_per_user,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !(1..=100_000).contains(&self.mam.purge_batch) {
            return Err(bad(
                "mam.purge_batch",
                "must be between 1 and 100000".into(),
            ));
        }
        for (i, s) in self.csi.important.iter().enumerate() {
            if s.split_whitespace().count() != 2 {
                return Err(bad(
                    &format!("csi.important[{i}]"),
                    format!("{s:?}: write \"namespace element\""),
                ));
            }
        }
        if self.shutdown_timeout.0.is_zero() {
            return Err(bad("shutdown_timeout", "must be more than 0".into()));
        }
        if self.fast.token_lifetime.0 < Duration::from_secs(60) {
            return Err(bad("fast.token_lifetime", "must be at least \"1m\"".into()));
        }
        if !(1..=1000).contains(&self.fast.max_clients_per_account) {
            return Err(bad(
                "fast.max_clients_per_account",
                "must be between 1 and 1000".into(),
            ));
        }
        for (key, v) in [
            (
                "roster.max_groups_per_item",
                self.roster.max_groups_per_item,
            ),
            ("blocking.max_items", self.blocking.max_items),
            ("private.max_items", self.private.max_items),
            ("pep.max_nodes_per_user", self.pep.max_nodes_per_user),
            ("pep.max_item_bytes", self.pep.max_item_bytes),
            ("pep.max_caps", self.pep.max_caps),
            (
                "pep.max_recipients_per_user",
                self.pep.max_recipients_per_user,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        // Below this not even an empty vCard or item with its wrapper fits. No upper bound
        // against `limits.max_stanza_bytes`: a set larger than that never arrives anyway, and a
        // file that lowered only the stanza limit keeps loading.
        for (key, v) in [
            ("vcard.max_bytes", self.vcard.max_bytes),
            (
                "private.max_bytes_per_item",
                self.private.max_bytes_per_item,
            ),
        ] {
            if v < 64 {
                return Err(bad(key, "must be at least 64".into()));
            }
        }
        if self.pep.max_items_per_node == 0 {
            return Err(bad("pep.max_items_per_node", "must be at least 1".into()));
        }
        if (self.pep.max_item_bytes as u64) > self.pep.max_bytes_per_user {
            return Err(bad(
                "pep.max_bytes_per_user",
                "must be at least pep.max_item_bytes".into(),
            ));
        }
        // Room for `<presence type='subscribe'/>` and a short status: below it every request
        // would lose its text.
        if self.roster.max_request_bytes < 256 {
            return Err(bad(
                "roster.max_request_bytes",
                "must be at least 256".into(),
            ));
        }
        for (var, addrs) in self.contact.fields() {
            let key = format!("contact.{}", var.trim_end_matches("-addresses"));
            for (i, a) in addrs.iter().enumerate() {
                if !a.split_once(':').is_some_and(|(scheme, rest)| {
                    !scheme.is_empty()
                        && scheme
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                        && !rest.is_empty()
                }) {
                    return Err(bad(
                        &format!("{key}[{i}]"),
                        format!("{a:?}: write a URI such as \"mailto:abuse@example.org\" or \"xmpp:admin@example.org\""),
                    ));
                }
            }
        }
        let r = &self.registration;
        for (key, v) in [
            ("registration.max_per_ip", r.max_per_ip as usize),
            ("registration.max_tracked_ips", r.max_tracked_ips),
            ("registration.max_invites", r.max_invites),
            (
                "registration.max_requests_per_stream",
                r.max_requests_per_stream as usize,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !(1..=1023).contains(&r.max_username_chars) {
            return Err(bad(
                "registration.max_username_chars",
                "must be between 1 and 1023 (RFC 7622 §3.3.1)".into(),
            ));
        }
        if !(8..=65_536).contains(&r.max_password_bytes) {
            return Err(bad(
                "registration.max_password_bytes",
                "must be between 8 and 65536".into(),
            ));
        }
        if r.per_ip_window.0.is_zero() {
            return Err(bad(
                "registration.per_ip_window",
                "must be more than 0".into(),
            ));
        }
        let h = &self.http;
        if h.max_connections == 0 {
            return Err(bad("http.max_connections", "must be at least 1".into()));
        }
        // hyper's HTTP/1 read buffer, which bounds the request head, takes no less than 8 KiB.
        if !(8192..=1 << 20).contains(&h.max_header_bytes) {
            return Err(bad(
                "http.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            ));
        }
        for (key, d) in [
            ("http.request_timeout", h.request_timeout),
            ("http.idle_timeout", h.idle_timeout),
        ] {
            if d.0.is_zero() {
                return Err(bad(key, "must be more than 0".into()));
            }
        }
        let url_ok = h.public_url.is_empty()
            || h.public_url.starts_with("https://")
            || h.public_url.starts_with("http://");
        if !url_ok {
            return Err(bad(
                "http.public_url",
                format!(
                    "{:?}: write e.g. \"https://example.org:5443\"",
                    h.public_url
                ),
            ));
        }
        let u = &self.upload;
        if u.max_file_size.0 == 0 {
            return Err(bad("upload.max_file_size", "must be at least 1".into()));
        }
        if u.quota_per_user.0 < u.max_file_size.0 {
            return Err(bad(
                "upload.quota_per_user",
                "must be at least upload.max_file_size".into(),
            ));
        }
        if u.expire_after.0.is_zero() || u.slot_ttl.0.is_zero() {
            let key = if u.slot_ttl.0.is_zero() {
                "upload.slot_ttl"
            } else {
                "upload.expire_after"
            };
            return Err(bad(key, "must be more than 0".into()));
        }
        if u.max_concurrent_per_user == 0 {
            return Err(bad(
                "upload.max_concurrent_per_user",
                "must be at least 1".into(),
            ));
        }
        if let Some(t) = &self.turn {
            if t.host.is_empty() {
                return Err(bad("turn.host", "must not be empty".into()));
            }
            if t.secret.is_empty() {
                return Err(bad("turn.secret", "must not be empty".into()));
            }
            if t.port == 0 {
                return Err(bad("turn.port", "must be more than 0".into()));
            }
            if t.ttl.0 < Duration::from_secs(60) {
                return Err(bad("turn.ttl", "must be at least 60s".into()));
            }
        }
        if let Some(d) = self.muc_domain() {
            if jid::BareJid::new(&d)
                .ok()
                .filter(|j| j.node().is_none())
                .is_none()
            {
                return Err(bad("muc.domain", format!("{d:?} is not a valid domain")));
            }
            if self.is_local(&d) || self.component_for(&d).is_some() {
                return Err(bad(
                    "muc.domain",
                    format!("{d:?} is already served (a host or a component)"),
                ));
            }
        }
        if !matches!(
            self.muc.restrict_room_creation.as_str(),
            "local" | "admins" | "anyone"
        ) {
            return Err(bad(
                "muc.restrict_room_creation",
                format!(
                    "{:?}: expected local, admins or anyone",
                    self.muc.restrict_room_creation
                ),
            ));
        }
        for (i, a) in self.muc.admins.iter().enumerate() {
            if jid::BareJid::new(a)
                .ok()
                .filter(|j| j.node().is_some())
                .is_none()
            {
                return Err(bad(
                    &format!("muc.admins[{i}]"),
                    format!("{a:?} is not a bare JID"),
                ));
            }
        }
        let m = &self.muc;
        for (key, v) in [
            ("muc.max_rooms", m.max_rooms),
            ("muc.max_rooms_per_user", m.max_rooms_per_user),
            ("muc.occupants_default", m.occupants_default),
            ("muc.max_occupants", m.max_occupants),
            ("muc.max_affiliations", m.max_affiliations),
            ("muc.history_max", m.history_max),
            ("muc.max_subject_bytes", m.max_subject_bytes),
            ("muc.max_field_bytes", m.max_field_bytes),
            ("muc.max_vcard_bytes", m.max_vcard_bytes),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if m.occupants_default > m.max_occupants {
            return Err(bad(
                "muc.occupants_default",
                "must not exceed muc.max_occupants".into(),
            ));
        }
        if m.history_default > m.history_max {
            return Err(bad(
                "muc.history_default",
                "must not exceed muc.history_max".into(),
            ));
        }
        // A MAM page on the room answers at most mam.max_page; history is read as one page.
        if m.history_max > 1000 {
            return Err(bad("muc.history_max", "must be at most 1000".into()));
        }
        let sm = &self.stream_management;
        check_push(&self.push, sm).map_err(|(k, r)| bad(&format!("push.{k}"), r))?;
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(k) = h.push.global_keys_set().first() {
                return Err(bad(
                    &format!("hosts[{i}].push.{k}"),
                    "is global (one for the whole server): set it in [push], not per host".into(),
                ));
            }
            // The merged result, under the same rules as `[push]`: only this host's own
            // keys can fail here, the inherited ones passed above.
            check_push(&h.push.merged(&self.push), sm)
                .map_err(|(k, r)| bad(&format!("hosts[{i}].push.{k}"), r))?;
        }
        Ok(())
    }

    /// The stream decoder's limits (`[limits]`), for every connection's parser.
    pub fn stream_limits(&self) -> herald_proto::stream::Limits {
        herald_proto::stream::Limits {
            max_stanza_bytes: self.limits.max_stanza_bytes,
            max_depth: self.limits.max_depth,
            max_attributes: self.limits.max_attributes,
            max_header_bytes: self.limits.max_header_bytes,
        }
    }

    /// The decoder limits of a c2s stream before authentication: `[limits]` with the
    /// pre-authentication size and depth (never more than the normal ones). The element budget
    /// follows from the size.
    pub fn preauth_stream_limits(&self) -> herald_proto::stream::Limits {
        let mut l = self.stream_limits();
        l.max_stanza_bytes = l.max_stanza_bytes.min(self.limits.max_preauth_stanza_bytes);
        l.max_depth = l.max_depth.min(self.limits.max_preauth_depth);
        l
    }

    /// The XEP-0198 machine's configuration (`[stream_management]`).
    /// The inbound rate limits of a logged-in c2s session (`[limits] c2s_*`).
    pub fn c2s_rate(&self) -> herald_session::rate::RateLimits {
        let l = &self.limits;
        herald_session::rate::RateLimits {
            stanzas_per_second: l.c2s_stanzas_per_second,
            stanza_burst: l.c2s_stanza_burst,
            bytes_per_second: l.c2s_bytes_per_second,
            byte_burst: l.c2s_byte_burst,
        }
    }

    pub fn sm(&self) -> herald_session::sm::SmConfig {
        let c = &self.stream_management;
        herald_session::sm::SmConfig {
            max_queue: c.max_queue,
            max_queue_bytes: self.limits.session_queue_bytes,
            request_after: c.request_after,
            request_idle: c.request_idle.0,
            max_ack_delay: c.max_ack_delay.0,
            hibernation_timeout: c.hibernation_timeout.0,
        }
    }

    /// The c2s negotiation machine's configuration (`[c2s]`, every local domain).
    pub fn negotiation(&self) -> herald_session::negotiate::Config {
        let c = &self.c2s;
        herald_session::negotiate::Config {
            domains: self.local_domains(),
            require_encryption: c.require_encryption,
            max_auth_failures: c.max_auth_failures,
            auth_failure_delay: c.auth_failure_delay.0,
            timeout: c.negotiation_timeout.0,
            throttle: Some(self.auth_throttle()),
            scram_nonce: None,
            // Hashed from the server's disco#info, which only the server builds.
            caps: None,
            registration: self.registration.enabled,
            max_registration_requests: self.registration.max_requests_per_stream,
            channel_binding: c.channel_binding,
            fast: self.fast.enabled,
        }
    }

    /// The authentication throttle's policy (`[c2s] max_auth_delay`, `auth_lockout_*`).
    pub fn auth_throttle(&self) -> herald_session::throttle::Throttle {
        let c = &self.c2s;
        herald_session::throttle::Throttle {
            max_delay: c.max_auth_delay.0,
            lockout_failures: c.auth_lockout_failures,
            lockout_time: c.auth_lockout_time.0,
        }
    }

    /// The push engine's configuration for the primary domain (`[push]`).
    pub fn push_engine(&self) -> herald_push::PushConfig {
        self.push_engine_with(&self.domain, &self.push)
    }

    /// Each virtual host's push engine configuration, by domain: `[push]` with the host's
    /// `[hosts.push]` overrides, publishing from the host's domain (the app server answers
    /// there, and its users' pushes must come from their own server).
    pub fn host_push_engines(&self) -> Vec<(String, herald_push::PushConfig)> {
        self.hosts
            .iter()
            .map(|h| {
                // The engine finds a user's host by the domain of the user's (prepared, so
                // lower-case) bare JID: key it by the prepared form of the configured spelling.
                let domain = jid::BareJid::new(&h.domain)
                    .map(|j| j.domain().to_string())
                    .unwrap_or_else(|_| h.domain.to_ascii_lowercase());
                let c = self.push_engine_with(&domain, &h.push.merged(&self.push));
                (domain, c)
            })
            .collect()
    }

    fn push_engine_with(&self, domain: &str, p: &PushConfig) -> herald_push::PushConfig {
        herald_push::PushConfig {
            domain: domain.to_string(),
            with_body: p.with_body,
            with_sender: p.with_sender,
            important_body: p.important_body.clone(),
            max_errors: p.max_errors,
            max_devices: p.max_devices,
            hibernation_timeout: self.stream_management.hibernation_timeout.0,
            max_hibernation_timeout: p.max_hibernation_timeout.0,
            coalesce_window: p.coalesce_window.0,
            reply_timeout: p.reply_timeout.0,
            wake_before_expiry: p.wake_before_expiry,
            max_attempts: p.max_attempts,
            retry_backoff: p.retry_backoff.0,
            max_pending: p.max_pending,
            max_pending_per_user: p.max_pending_per_user,
            max_pending_per_app_server: p.max_pending_per_app_server,
            idle_user_ttl: p.idle_user_ttl.0,
            ..herald_push::PushConfig::default()
        }
    }

    /// Every domain served locally (the primary first).
    pub fn local_domains(&self) -> Vec<String> {
        let mut v = vec![self.domain.clone()];
        v.extend(self.hosts.iter().map(|h| h.domain.clone()));
        v
    }

    /// Whether `domain` is served locally.
    pub fn is_local(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.domain)
            || self
                .hosts
                .iter()
                .any(|h| domain.eq_ignore_ascii_case(&h.domain))
    }

    /// The configured component whose domain is `domain` or a parent of it.
    pub fn component_for(&self, domain: &str) -> Option<&ComponentEntry> {
        self.components.component.iter().find(|c| {
            domain == c.domain
                || domain
                    .strip_suffix(c.domain.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.limits.max_stanza_bytes, 262_144);
        assert!(c.c2s.require_encryption);
        assert_eq!(
            c.stream_management.hibernation_timeout.0,
            Duration::from_secs(600)
        );
        assert_eq!(
            c.push.max_hibernation_timeout.0,
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(c.mam.max_age.0, Duration::from_secs(365 * 86400));
        assert_eq!(c.push.removed_retention.0, Duration::from_secs(7 * 86400));
        assert_eq!(c.store.durability, "normal");
        assert_eq!(
            c.store.options().durability,
            herald_store::Durability::Normal
        );
        assert_eq!(c.store.min_free_bytes, 512 * 1024 * 1024);
        assert_eq!(c.mam.max_bytes_per_user, 256 * 1024 * 1024);
        assert_eq!(c.mam.purge_batch, 1000);
        assert_eq!(c.offline.max_bytes_per_user, 16 * 1024 * 1024);
        let c = Config::parse(
            "[store]\nmin_free_bytes = 0\n[mam]\nmax_bytes_per_user = 1024\npurge_batch = 10\n\
             [offline]\nmax_bytes_per_user = 2048\n",
            "q.toml",
        )
        .unwrap();
        assert_eq!(c.store.min_free_bytes, 0, "0 disables the free-space check");
        assert_eq!(c.mam.max_bytes_per_user, 1024);
        assert_eq!(c.mam.purge_batch, 10);
        assert_eq!(c.offline.max_bytes_per_user, 2048);
    }

    #[test]
    fn store_backend_parses() {
        let c = Config::parse("", "t.toml").unwrap();
        assert!(!c.store.is_postgres(), "sqlite is the default");
        let c = Config::parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://herald@db.example/herald\"\npool_size = 4\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.store.is_postgres());
        let o = c.store.pg_options();
        assert_eq!(
            (o.url.as_str(), o.pool_size),
            ("postgres://herald@db.example/herald", 4)
        );
    }

    #[test]
    fn store_busy_timeout_parses_within_bounds() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.store.options().busy_timeout, Duration::from_secs(5));
        assert_eq!(c.store.pg_options().connect_timeout, Duration::from_secs(5));
        let c = Config::parse(
            "[store]
busy_timeout = \"30s\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.store.options().busy_timeout, Duration::from_secs(30));
        assert_eq!(
            c.store.pg_options().connect_timeout,
            Duration::from_secs(30)
        );
        for bad in ["0s", "50ms", "11m"] {
            let text = format!("[store]\nbusy_timeout = \"{bad}\"\n");
            match Config::parse(&text, "t.toml") {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "store.busy_timeout"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn cluster_parses() {
        assert!(Config::parse("", "t.toml").unwrap().cluster.is_none());
        let c = Config::parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://h/x\"\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode = \"n1\"\n",
            "t.toml",
        )
        .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!(cl.lease.0, Duration::from_secs(15));
        assert_eq!(cl.node_name().unwrap(), "n1");
    }

    #[test]
    fn store_durability_parses() {
        for (text, want) in [
            ("[store]\n", herald_store::Durability::Normal),
            (
                "[store]\ndurability = \"normal\"\n",
                herald_store::Durability::Normal,
            ),
            (
                "[store]\ndurability = \"full\"\n",
                herald_store::Durability::Full,
            ),
        ] {
            let c = Config::parse(text, "t.toml").unwrap();
            assert_eq!(c.store.options().durability, want, "{text:?}");
        }
    }

    #[test]
    fn issue_keys_parse() {
        let text = r#"
domain = "example.test"
data_dir = "/tmp/x"
[c2s]
listen = "127.0.0.1:0"
direct_tls_listen = ""
require_encryption = false
[tls]
cert = "a.pem"
key = "b.pem"
[components]
listen = "127.0.0.1:5347"
[[components.component]]
domain = "push.example.test"
secret = "s3cret"
[limits]
max_stanza_bytes = 65536
[stream_management]
hibernation_timeout = "600s"
max_ack_delay = "30s"
max_queue = 500
[csi]
max_buffer = 256
[mam]
default = "roster"
max_age = "365d"
[offline]
max_per_user = 1000
[push]
with_body = false
with_sender = false
important_body = "New Message!"
max_errors = 16
max_devices = 5
max_hibernation_timeout = "72h"
coalesce_window = "1s"
reply_timeout = "30s"
wake_before_expiry = true
removed_retention = "7d"
"#;
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(c.c2s.direct_tls_listen, None);
        assert_eq!(
            c.component_for("push.example.test").unwrap().secret,
            "s3cret"
        );
        assert_eq!(
            c.component_for("a.push.example.test").unwrap().secret,
            "s3cret"
        );
        assert!(c.component_for("xpush.example.test").is_none());
        assert_eq!(c.mam.default, "roster");
        assert_eq!(c.push.removed_retention.0, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn preauth_limits_never_exceed_the_normal_ones() {
        let c = Config::parse(
            "[limits]\nmax_stanza_bytes = 4096\nmax_preauth_stanza_bytes = 8192\n",
            "conf.toml",
        )
        .unwrap();
        let l = c.preauth_stream_limits();
        assert_eq!(l.max_stanza_bytes, 4096);
        // SASL2 + Bind2 + an inline push enable with publish options nest six deep.
        assert_eq!(l.max_depth, 6);
        assert_eq!(
            Config::default().preauth_stream_limits().max_stanza_bytes,
            8192
        );
    }

    #[test]
    fn auth_throttle_defaults() {
        let t = Config::default().auth_throttle();
        assert_eq!(t.max_delay, Duration::from_secs(30));
        assert_eq!(t.lockout_failures, 10);
        assert_eq!(t.lockout_time, Duration::from_secs(300));
        assert!(Config::default().negotiation().throttle.is_some());
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = Config::parse("[c2s]\nlisten_port = 5\n", "conf.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("conf.toml"), "{e}");
        assert!(e.contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_with_reason() {
        for (text, key) in [
            (
                "[stream_management]\nmax_ack_delay = \"soon\"\n",
                "max_ack_delay",
            ),
            ("[c2s]\nlisten = \"nowhere\"\n", "listen"),
            ("[c2s]\nmax_auth_delay = \"0s\"\n", "c2s.max_auth_delay"),
            (
                "[c2s]\nauth_lockout_time = \"0s\"\n",
                "c2s.auth_lockout_time",
            ),
            (
                "[limits]\nmax_preauth_stanza_bytes = 100\n",
                "limits.max_preauth_stanza_bytes",
            ),
            (
                "[limits]\nmax_preauth_depth = 1\n",
                "limits.max_preauth_depth",
            ),
            ("[mam]\ndefault = \"sometimes\"\n", "mam.default"),
            ("[mam]\ncommit_delay = \"5s\"\n", "mam.commit_delay"),
            ("[mam]\nmax_page = 1001\n", "mam.max_page"),
            ("[mam]\nmax_page = 0\n", "mam.max_page"),
            ("[mam]\nmax_ids = 0\n", "mam.max_ids"),
            ("[mam]\nmax_ids = 5000\n", "mam.max_ids"),
            ("[mam]\nmax_count = 2000000\n", "mam.max_count"),
            ("[mam]\nreaders = 0\n", "mam.readers"),
            (
                "[mam]\nmax_concurrent_per_user = 0\n",
                "mam.max_concurrent_per_user",
            ),
            (
                "[mam]\nmax_concurrent_per_user = 4\nmax_concurrent = 3\n",
                "mam.max_concurrent",
            ),
            ("domain = \"a@b\"\n", "domain"),
            ("[tls]\ncert = \"x.pem\"\n", "tls"),
            ("[limits]\nmax_stanza_bytes = 10\n", "max_stanza_bytes"),
            (
                "[[components.component]]\ndomain = \"p.localhost\"\nsecret = \"\"\n",
                "secret",
            ),
            ("max_stanza_bytes = 10\n", "max_stanza_bytes"),
            (
                "[limits]\nmax_sessions_per_account = 0\n",
                "limits.max_sessions_per_account",
            ),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            (
                "[limits]\nsession_queue_bytes = 1000\n",
                "limits.session_queue_bytes",
            ),
            (
                "[limits]\ns2s_queue_bytes = 1000\n",
                "limits.s2s_queue_bytes",
            ),
            (
                "[limits]\ncomponent_queue_bytes = 1000\n",
                "limits.component_queue_bytes",
            ),
            (
                "[limits]\naccount_queue_bytes = 100000\n",
                "limits.account_queue_bytes",
            ),
            (
                "[csi]\nmax_buffer_bytes = 4194304\n",
                "csi.max_buffer_bytes",
            ),
            (
                "[limits]\nmax_connections_per_ip = 0\n",
                "limits.max_connections_per_ip",
            ),
            (
                "[limits]\nmax_unauthenticated_per_ip = 0\n",
                "limits.max_unauthenticated_per_ip",
            ),
            (
                "[limits]\nconnection_burst_per_ip = 5\n",
                "limits.connection_burst_per_ip",
            ),
            (
                "[s2s]\nmax_outgoing_setups = 0\n",
                "s2s.max_outgoing_setups",
            ),
            (
                "[s2s]\nmax_outgoing_setups_per_user = 0\n",
                "s2s.max_outgoing_setups_per_user",
            ),
            (
                "[s2s]\nmax_dialback_verifications = 0\n",
                "s2s.max_dialback_verifications",
            ),
            (
                "[s2s]\nmax_dialback_verifications_total = 0\n",
                "s2s.max_dialback_verifications_total",
            ),
            ("[s2s]\nmax_failed_domains = 0\n", "s2s.max_failed_domains"),
            ("[push]\nmax_attempts = 0\n", "push.max_attempts"),
            ("[push]\nmax_pending = 0\n", "push.max_pending"),
            (
                "[push]\nmax_pending_per_user = 0\n",
                "push.max_pending_per_user",
            ),
            ("[push]\nrestart_wake_rate = 0\n", "push.restart_wake_rate"),
            ("shutdown_timeout = \"0s\"\n", "shutdown_timeout"),
            ("[push]\nretry_backoff = \"0s\"\n", "push.retry_backoff"),
            ("[store]\ndurability = \"off\"\n", "store.durability"),
            ("[store]\nbackend = \"mysql\"\n", "store.backend"),
            ("[cluster]\nredis = \"redis://127.0.0.1\"\n", "cluster"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://h/x\"\n[cluster]\nredis = \"http://x\"\n",
                "cluster.redis",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://h/x\"\n[cluster]\nredis = \"redis://x\"\nnode = \"a b\"\n",
                "cluster.node",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://h/x\"\n[cluster]\nredis = \"redis://x\"\nlease = \"1s\"\n",
                "cluster.lease",
            ),
            ("[cluster]\n", "redis"),
            ("[store]\nbackend = \"postgres\"\n", "store.url"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://h:1:2:3/x?bogus=1\"\n",
                "store.url",
            ),
            ("[store]\npool_size = 0\n", "store.pool_size"),
            ("[store]\npool_size = 100000\n", "store.pool_size"),
            ("[store]\ndurability = \"FULL\"\n", "store.durability"),
            ("[store]\nfsync = true\n", "fsync"),
            ("[store]\nmin_free_bytes = -1\n", "min_free_bytes"),
            ("[mam]\nmax_bytes_per_user = 0\n", "mam.max_bytes_per_user"),
            ("[mam]\npurge_batch = 0\n", "mam.purge_batch"),
            ("[mam]\npurge_batch = 100001\n", "mam.purge_batch"),
            (
                "[offline]\nmax_bytes_per_user = 0\n",
                "offline.max_bytes_per_user",
            ),
            (
                "[roster]\nmax_groups_per_item = 0\n",
                "roster.max_groups_per_item",
            ),
            (
                "[roster]\nmax_request_bytes = 100\n",
                "roster.max_request_bytes",
            ),
            ("[blocking]\nmax_items = 0\n", "blocking.max_items"),
            ("[vcard]\nmax_bytes = 10\n", "vcard.max_bytes"),
            ("[private]\nmax_items = 0\n", "private.max_items"),
            (
                "[private]\nmax_bytes_per_item = 0\n",
                "private.max_bytes_per_item",
            ),
            (
                "[contact]\nabuse = [\"abuse@example.org\"]\n",
                "contact.abuse[0]",
            ),
            ("[contact]\nsupport = [\"mailto:\"]\n", "contact.support[0]"),
            (
                "[registration]\nmax_per_ip = 0\n",
                "registration.max_per_ip",
            ),
            (
                "[registration]\nmax_invites = 0\n",
                "registration.max_invites",
            ),
            (
                "[registration]\nmax_username_chars = 2000\n",
                "registration.max_username_chars",
            ),
            (
                "[registration]\nper_ip_window = \"0s\"\n",
                "registration.per_ip_window",
            ),
            ("[pep]\nmax_nodes_per_user = 0\n", "pep.max_nodes_per_user"),
            ("[pep]\nmax_items_per_node = 0\n", "pep.max_items_per_node"),
            ("[pep]\nmax_bytes_per_user = 10\n", "pep.max_bytes_per_user"),
            ("[pep]\nmax_caps = 0\n", "pep.max_caps"),
        ] {
            let e = Config::parse(text, "f.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
            assert!(e.contains("f.toml"), "{text:?} → {e}");
        }
    }

    #[test]
    fn durations_have_an_upper_bound() {
        for (text, key) in [
            (
                "[stream_management]\nhibernation_timeout = \"200000000000000d\"\n",
                "hibernation_timeout",
            ),
            ("[mam]\nmax_age = \"3651d\"\n", "max_age"),
            ("shutdown_timeout = \"11years\"\n", "shutdown_timeout"),
            ("[push]\nreply_timeout = \"200000000000000d\"\n", "reply_timeout"),
            (
                "[[hosts]]\ndomain = \"b.example\"\n[hosts.push]\ncoalesce_window = \"200000000000000d\"\n",
                "coalesce_window",
            ),
        ] {
            let e = Config::parse(text, "d.toml").unwrap_err().to_string();
            assert!(e.contains("d.toml"), "{text:?} → {e}");
            assert!(e.contains(key), "{text:?} → {e}");
            assert!(e.contains("at most"), "{text:?} → {e}");
        }
        let c = Config::parse("[mam]\nmax_age = \"3650d\"\n", "d.toml").unwrap();
        assert_eq!(c.mam.max_age.0, MAX_DURATION);
    }

    #[test]
    fn connection_limits_have_defaults_and_can_be_set() {
        let d = Config::defaults();
        assert_eq!(d.limits.max_connections, 10_000);
        assert_eq!(d.limits.max_connections_per_ip, 100);
        assert_eq!(d.limits.max_unauthenticated_per_ip, 20);
        let c = Config::parse(
            "[limits]\nmax_connections = 5\nmax_connections_per_ip = 4\nmax_unauthenticated_per_ip = 2\n",
            "l.toml",
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.limits.max_connections_per_ip, 4);
        assert_eq!(c.limits.max_unauthenticated_per_ip, 2);
    }

    const TWO_HOSTS: &str = r#"
domain = "example.com"
[push]
important_body = "You have mail"
max_errors = 4
coalesce_window = "3s"
max_pending = 77
[[hosts]]
domain = "full.example"
[hosts.push]
with_body = true
with_sender = true
[[hosts]]
domain = "plain.example"
"#;

    #[test]
    fn a_host_push_table_overrides_only_what_it_names_and_inherits_the_rest_from_push() {
        let c = Config::parse(TWO_HOSTS, "t.toml").unwrap();
        let full = c.hosts[0].push.merged(&c.push);
        assert!(full.with_body);
        assert!(full.with_sender);
        // Inherited from [push], not the built-in defaults.
        assert_eq!(full.important_body, "You have mail");
        assert_eq!(full.max_errors, 4);
        assert_eq!(full.coalesce_window.0, Duration::from_secs(3));
        assert_eq!(full.max_pending, 77);
        // Untouched keys are [push]'s (which here are the defaults).
        assert_eq!(full.max_devices, c.push.max_devices);
        assert_eq!(full.reply_timeout, c.push.reply_timeout);
        // The primary and a host without a table keep [push] as it is.
        assert!(!c.push.with_body && !c.push.with_sender);
        let plain = c.hosts[1].push.merged(&c.push);
        assert!(!plain.with_body && !plain.with_sender);
        assert_eq!(plain.important_body, "You have mail");
        assert_eq!(plain.coalesce_window.0, Duration::from_secs(3));
    }

    #[test]
    fn every_overridable_key_parses_in_a_host_table() {
        let text = r#"
[[hosts]]
domain = "full.example"
[hosts.push]
with_body = true
with_sender = true
important_body = ""
max_errors = 2
max_devices = 3
max_hibernation_timeout = "24h"
coalesce_window = "5s"
reply_timeout = "10s"
wake_before_expiry = false
max_attempts = 7
retry_backoff = "2s"
max_pending_per_user = 9
"#;
        let c = Config::parse(text, "t.toml").unwrap();
        let m = c.hosts[0].push.merged(&c.push);
        assert!(m.with_body && m.with_sender && !m.wake_before_expiry);
        assert_eq!(m.important_body, "");
        assert_eq!((m.max_errors, m.max_devices, m.max_attempts), (2, 3, 7));
        assert_eq!(m.max_hibernation_timeout.0, Duration::from_secs(24 * 3600));
        assert_eq!(m.coalesce_window.0, Duration::from_secs(5));
        assert_eq!(m.reply_timeout.0, Duration::from_secs(10));
        assert_eq!(m.retry_backoff.0, Duration::from_secs(2));
        assert_eq!(m.max_pending_per_user, 9);
    }

    #[test]
    fn global_push_keys_are_refused_in_a_host_table() {
        for key in GLOBAL_PUSH_KEYS {
            let value = if matches!(*key, "idle_user_ttl" | "removed_retention") {
                "\"5m\""
            } else {
                "10"
            };
            let text = format!(
                "[[hosts]]\ndomain = \"a.example\"\n[[hosts]]\ndomain = \"b.example\"\n[hosts.push]\n{key} = {value}\n"
            );
            let e = Config::parse(&text, "f.toml").unwrap_err().to_string();
            assert!(e.contains(&format!("hosts[1].push.{key}")), "{e}");
            assert!(e.contains("global"), "{e}");
            assert!(e.contains("[push]"), "{e}");
            assert!(e.contains("f.toml"), "{e}");
            // The same key is fine at the top level.
            Config::parse(&format!("[push]\n{key} = {value}\n"), "f.toml").unwrap();
        }
    }

    #[test]
    fn a_host_push_table_is_validated_like_push() {
        for (table, key) in [
            ("max_errors = 0", "hosts[0].push.max_errors"),
            ("max_devices = 0", "hosts[0].push.max_devices"),
            ("max_attempts = 0", "hosts[0].push.max_attempts"),
            (
                "max_pending_per_user = 0",
                "hosts[0].push.max_pending_per_user",
            ),
            ("retry_backoff = \"0s\"", "hosts[0].push.retry_backoff"),
            (
                "max_hibernation_timeout = \"1m\"",
                "hosts[0].push.max_hibernation_timeout",
            ),
            // Wrong types and unknown keys: serde names the key.
            ("with_body = \"yes\"", "with_body"),
            ("coalesce_window = \"soon\"", "coalesce_window"),
            ("with_bodies = true", "with_bodies"),
        ] {
            let text = format!("[[hosts]]\ndomain = \"a.example\"\n[hosts.push]\n{table}\n");
            let e = Config::parse(&text, "f.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{table:?} → {e}");
            assert!(e.contains("f.toml"), "{table:?} → {e}");
        }
        // The merged result is checked, not the table alone: a host that only shortens
        // the extended hibernation is measured against the global hibernation timeout.
        let text = "[stream_management]\nhibernation_timeout = \"2h\"\n[[hosts]]\ndomain = \"a.example\"\n[hosts.push]\nmax_hibernation_timeout = \"1h\"\n";
        let e = Config::parse(text, "f.toml").unwrap_err().to_string();
        assert!(e.contains("hosts[0].push.max_hibernation_timeout"), "{e}");
        // An unknown key is named, with its line.
        let e = Config::parse(
            "[[hosts]]\ndomain = \"a.example\"\n[hosts.push]\nmax_pendng = 1\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `max_pendng`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn http_upload_and_turn_keys() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.http.listen, Some(([127, 0, 0, 1], 5443).into()));
        assert_eq!(c.upload.max_file_size, ByteSize(100_000_000));
        assert_eq!(c.upload.quota_per_user, ByteSize(1_000_000_000));
        assert!(c.turn.is_none());
        let c = Config::parse(
            "[http]\nlisten = \"\"\npublic_url = \"https://up.example/\"\n\
             [upload]\nmax_file_size = \"2MiB\"\nquota_per_user = 5000000\n\
             [turn]\nhost = \"turn.example\"\nsecret = \"s\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.http.listen, None);
        assert_eq!(
            c.http.base_url("localhost", None).as_deref(),
            Some("https://up.example")
        );
        assert_eq!(c.upload.max_file_size, ByteSize(2 << 20));
        let t = c.turn.unwrap();
        assert_eq!((t.port, t.ttl.0), (3478, Duration::from_secs(86400)));
        for (text, key) in [
            ("[upload]\nmax_file_size = \"lots\"", "max_file_size"),
            ("[upload]\nmax_file_size = 0", "upload.max_file_size"),
            (
                "[upload]\nquota_per_user = \"1MB\"",
                "upload.quota_per_user",
            ),
            ("[http]\npublic_url = \"ftp://x\"", "http.public_url"),
            ("[http]\nmax_header_bytes = 10", "http.max_header_bytes"),
            ("[turn]\nhost = \"t\"\nsecret = \"\"", "turn.secret"),
            (
                "[turn]\nhost = \"t\"\nsecret = \"s\"\nttl = \"1s\"",
                "turn.ttl",
            ),
        ] {
            let e = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }

    #[test]
    fn byte_sizes() {
        for (s, n) in [
            ("0", 0),
            ("100MB", 100_000_000),
            ("1 GB", 1_000_000_000),
            ("64KiB", 65536),
            ("3mib", 3 << 20),
        ] {
            assert_eq!(ByteSize::parse(s), Some(ByteSize(n)), "{s}");
        }
        for s in ["", "MB", "1.5MB", "-1", "1PB", "99999999999TB"] {
            assert_eq!(ByteSize::parse(s), None, "{s}");
        }
    }

    #[test]
    fn muc_domain_defaults_to_conference_and_bad_values_are_rejected() {
        let d = Config::defaults();
        assert_eq!(d.muc_domain().as_deref(), Some("conference.localhost"));
        assert!(d.is_muc("Conference.localhost"));
        let off = Config::parse("[muc]\ndomain = \"\"\n", "m.toml").unwrap();
        assert_eq!(off.muc_domain(), None);
        let c = Config::parse("[muc]\ndomain = \"rooms.localhost\"\n", "m.toml").unwrap();
        assert!(c.is_muc("rooms.localhost"));
        for (text, key) in [
            ("[muc]\ndomain = \"localhost\"\n", "muc.domain"),
            ("[muc]\ndomain = \"a b\"\n", "muc.domain"),
            (
                "[muc]\nrestrict_room_creation = \"nobody\"\n",
                "muc.restrict_room_creation",
            ),
            ("[muc]\nadmins = [\"localhost\"]\n", "muc.admins[0]"),
            ("[muc]\nmax_occupants = 0\n", "muc.max_occupants"),
            ("[muc]\nmax_rooms = 0\n", "muc.max_rooms"),
            ("[muc]\noccupants_default = 2000\n", "muc.occupants_default"),
            ("[muc]\nhistory_default = 500\n", "muc.history_default"),
            (
                "[muc]\nhistory_max = 5000\nhistory_default = 1\n",
                "muc.history_max",
            ),
            ("[muc]\nmax_subject_bytes = 0\n", "muc.max_subject_bytes"),
        ] {
            let e = Config::parse(text, "m.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }
}
