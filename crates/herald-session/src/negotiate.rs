//! c2s stream negotiation (RFC 6120 §4–§7) as a sans-IO state machine, server side: stream
//! headers and features, STARTTLS, SASL (SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS bound to the
//! TLS connection, whose binding types XEP-0440 advertises; SCRAM-SHA-256, SCRAM-SHA-1, PLAIN;
//! the mechanics are [`herald_proto::sasl`]'s), failure counting and delays, the throttle
//! across connections ([`crate::throttle`]: delays growing with the recent failures of the
//! account and the peer, `temporary-auth-failure` while an account is locked out; the driver
//! keeps the records and answers [`Action::LookupThrottle`]), up to the resource bind request
//! or a XEP-0198 `<resume/>`, and the negotiation deadline. XEP-0388 SASL2 (submodule `sasl2`,
//! elements in [`crate::sasl2`]) runs the same mechanisms and throttle, or a XEP-0484 FAST
//! token ([`Action::LookupFastTokens`]), and ends without a stream restart in an inline
//! resumption ([`Action::Sasl2Resume`]), a Bind2 request ([`Action::Bind2`]), or the legacy
//! bind.
//!
//! Shaped like rustls: one type per state ([`AwaitingHeader`], [`Unauthenticated`],
//! [`AwaitingTls`], [`AwaitingCredentials`], [`ScramChallenge`], [`Authenticated`],
//! [`AwaitingResume`]), each with a `handle` that consumes it and returns the next state
//! ([`Negotiation`] names them all), pushing [`Action`]s for the driver. The driver reads stream
//! events and feeds them as [`Input`]s, performs the actions in order (write, upgrade to TLS,
//! reset the decoder, look credentials up, wait, hand over), and feeds back the answers the
//! actions ask for ([`Input::TlsEstablished`], [`Input::Credentials`],
//! [`Input::ResumeFailed`]) before reading on.
//!
//! Must not: read sockets or clocks, look anything up, or log. What needs the store (the
//! account's SCRAM keys) or the session registry (the hibernated session to resume) is an
//! action whose answer comes back as an input. Time is explicit: the deadline is fixed at
//! [`Negotiation::new`] and checked against the `now` of [`Input::Tick`].

use std::time::{Duration, Instant};

use herald_proto::error::{error_reply, StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::BareJid;
use herald_proto::ns;
use herald_proto::sasl::{self, ChannelBindings, Mechanism, ScramHash, ScramKeys, ScramServer};
use herald_proto::stream::{StreamEvent, StreamHeader, StreamNs, INTERNAL_NS};
use herald_proto::Element;

pub use crate::throttle::{Failures, Throttle};

/// Negotiation policy for one listener.
#[derive(Clone, Debug)]
pub struct Config {
    /// The local domains a stream may be for (matched ASCII case-insensitively; the stream
    /// continues under the spelling given here).
    pub domains: Vec<String>,
    /// RFC 6120 §5.3.1: STARTTLS is required (no SASL, hence no PLAIN, before it).
    pub require_encryption: bool,
    /// Failed authentications before the stream ends with `policy-violation`.
    pub max_auth_failures: u32,
    /// Wait before answering a wrong password (slows down guessing).
    pub auth_failure_delay: Duration,
    /// From the start of negotiation to a bind or resume request.
    pub timeout: Duration,
    /// Throttling across connections (delays growing with the recent failures of the account
    /// and of the peer address, account lockout); None: only the fixed `auth_failure_delay`
    /// and the per-connection limit.
    pub throttle: Option<Throttle>,
    /// A fixed SCRAM server nonce (for test vectors and fuzzing); None: a random one per
    /// exchange.
    pub scram_nonce: Option<String>,
    /// The server's XEP-0115 `<c/>`, offered among the features after authentication
    /// (XEP-0115 §6.3); None: not offered.
    pub caps: Option<Element>,
    /// XEP-0077 registration of new accounts before authentication: offered as a stream
    /// feature (with the XEP-0445 invite-token feature) where SASL is, and its IQs (and
    /// XEP-0401 `<preauth/>`) handed to the driver ([`Action::Register`]). Off: such IQs
    /// get `service-unavailable` (XEP-0077 §3.1).
    pub registration: bool,
    /// Registration IQs (answered or refused) one stream may send before authenticating;
    /// one more ends it with `policy-violation`.
    pub max_registration_requests: u32,
    /// Offer SCRAM-*-PLUS (and XEP-0440) where the TLS layer gives channel-binding data
    /// ([`Negotiation::set_channel_bindings`]); false: never, the data is ignored.
    pub channel_binding: bool,
    /// XEP-0484 FAST offered in SASL2 (tokens issued and accepted).
    pub fast: bool,
}

/// What the driver feeds the machine.
#[derive(Debug)]
pub enum Input {
    /// The next event the stream decoder produced.
    Event(StreamEvent),
    /// The decoder failed: the stream ends with this error.
    DecodeError(StreamError),
    /// Answer to [`Action::StartTls`]: the handshake succeeded (the decoder was reset).
    TlsEstablished,
    /// Answer to [`Action::LookupCredentials`]: the account's keys for the asked hash, None
    /// when the account does not exist (or the lookup failed).
    Credentials(Option<ScramKeys>),
    /// Answer to [`Action::Resume`]: no hibernated session took the stream. `last_h` is the
    /// ended session's last inbound h, when it is remembered (XEP-0198 §5 tombstones).
    ResumeFailed {
        /// For `<failed h='…'/>`.
        last_h: Option<u32>,
    },
    /// Answer to [`Action::LookupThrottle`]: the current failure records of the account and
    /// of the peer's address at `now`.
    Throttle {
        /// The account's record (default when there is none or no account name).
        account: Failures,
        /// The peer address's record.
        peer: Failures,
        /// When the records were read.
        now: Instant,
    },
    /// Time passed (the driver's read timed out at [`Negotiation::deadline`]).
    Tick(Instant),
    /// Answer to [`Action::LookupFastTokens`]: the tokens of that account and client (none
    /// when the account does not exist), and the wall-clock time in Unix milliseconds.
    FastTokens {
        /// The tokens still stored.
        tokens: Vec<FastToken>,
        /// Now, for their expiry.
        now_ms: i64,
    },
    /// Answer to [`Action::IssueFastToken`]: the new token and its expiry (XEP-0082), None
    /// when it could not be stored (the login goes on without one).
    FastTokenIssued(Option<(String, String)>),
}

/// A stored XEP-0484 token as the machine checks it: the token the driver derived from its
/// salt with the server key, or (a token from before salts, -NONE only) its hashed messages.
#[derive(Debug, Clone, PartialEq)]
pub struct FastToken {
    /// The mechanism the token is bound to.
    pub mechanism: String,
    /// The token (`herald_proto::sasl::ht::derive_token`), which the -EXPR/-ENDP messages
    /// need with each connection's channel binding; None for a token from before salts.
    pub token: Option<String>,
    /// `herald_proto::sasl::ht::verifier` of a token without salt.
    pub verifier: Vec<u8>,
    /// The server's final message for a token without salt (`ht::responder`).
    pub responder: Vec<u8>,
    /// When it was issued, Unix milliseconds.
    pub issued_at_ms: i64,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: i64,
    /// The newest token of the client (false: the previous one, still valid until the
    /// client has used the newest).
    pub current: bool,
}

/// What the machine asks the driver to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write our stream header (with a fresh id) and these features in one write. The stream
    /// is for `domain` from now on (the `from` of our header and of later stream errors).
    OpenStream {
        /// The local domain the peer asked for, as configured.
        domain: String,
        /// The peer's `from`, echoed as `to`.
        to: Option<String>,
        /// `<features/>` whose children are written inside `<stream:features>`.
        features: Element,
    },
    /// Write this element.
    Send(Element),
    /// Upgrade the socket to TLS (after `<proceed/>`), then feed [`Input::TlsEstablished`];
    /// if the handshake fails or the deadline passes, drop the connection.
    StartTls,
    /// Reset the decoder: the next thing on the stream is a new header (RFC 6120 §6.4.6).
    Restart,
    /// Look up `jid`'s SCRAM keys for `hash` and feed [`Input::Credentials`].
    LookupCredentials {
        /// The account.
        jid: BareJid,
        /// Which of its key sets.
        hash: ScramHash,
    },
    /// Read the failure records of `account` (when the name is one) and of the peer's address
    /// and feed [`Input::Throttle`]. Only with [`Config::throttle`].
    LookupThrottle {
        /// The account the authentication is for.
        account: Option<BareJid>,
    },
    /// Count a failure in the throttle records of `account` (when the name is one) and of the
    /// peer's address, at once: before the failure delay, so that attempts on other
    /// connections meanwhile see it. A wrong password, not a malformed request, nor an attempt
    /// refused while locked. Only with [`Config::throttle`].
    RecordFailure {
        /// The account the failure counts against.
        account: Option<BareJid>,
    },
    /// Wait this long before the next action.
    Delay(Duration),
    /// `jid` authenticated (for logs and metrics).
    Authenticated(BareJid),
    /// An authentication failed; `failures` so far on this connection (for logs and metrics).
    AuthFailed {
        /// Failures on this connection, this one included.
        failures: u32,
        /// The authentication identity as the client sent it (for logs), when it got that far.
        user: Option<String>,
        /// The SASL failure condition sent (`temporary-auth-failure`: locked out).
        condition: &'static str,
    },
    /// Done: bind a resource for `user` and answer `request` (an `<iq type='set'><bind/>`).
    Bind {
        /// The authenticated account.
        user: BareJid,
        /// The bind request.
        request: Element,
    },
    /// Hand the stream to `user`'s hibernated session `previd` (XEP-0198 §5); when none takes
    /// it, feed [`Input::ResumeFailed`] and go on with this stream.
    Resume {
        /// The authenticated account (the session must be its).
        user: BareJid,
        /// The resumption id asked for.
        previd: String,
        /// The client's inbound count.
        h: u32,
    },
    /// Answer this XEP-0077 registration IQ (`jabber:iq:register` query, or a XEP-0401
    /// `<preauth/>` token) before authentication, writing the reply; negotiation goes on.
    /// Only with [`Config::registration`], and over TLS unless encryption is optional.
    Register(Element),
    /// Write `<stream:features>` with the children of this `<features/>` (XEP-0388: after a
    /// SASL2 success, which restarts nothing).
    Features(Element),
    /// The peer authenticated without a stream restart (SASL2): the decoder takes the normal
    /// limits from here on.
    FullLimits,
    /// Done: bind a resource for `user` (XEP-0386 Bind2) and answer with `success` completed
    /// (the full JID, `<bound/>` with the inline features' answers).
    Bind2 {
        /// The authenticated account.
        user: BareJid,
        /// The resource derived from the client id (None: make a random one).
        resource: Option<String>,
        /// The inline features asked for.
        bind: Box<crate::sasl2::BindRequest>,
        /// The `<success/>` gathered so far.
        success: Box<crate::sasl2::Success>,
        /// The XEP-0388 client id, if the client sent one.
        client_id: Option<String>,
    },
    /// Like [`Action::Resume`], inline in SASL2 (XEP-0198 with XEP-0388): the session that
    /// takes the stream answers with `success` completed by the full JID and `<resumed/>`;
    /// when none does, feed [`Input::ResumeFailed`] and go on with this stream.
    Sasl2Resume {
        /// The authenticated account.
        user: BareJid,
        /// The resumption id asked for.
        previd: String,
        /// The client's inbound count.
        h: u32,
        /// The `<success/>` gathered so far.
        success: Box<crate::sasl2::Success>,
    },
    /// Look up `jid`'s FAST tokens for `client_id` and feed [`Input::FastTokens`].
    LookupFastTokens {
        /// The account.
        jid: BareJid,
        /// The XEP-0388 client id the tokens are bound to.
        client_id: String,
    },
    /// A FAST token authenticated: `current` (the newest) retires the previous one (the
    /// client has the newest); `invalidate` deletes the token used (the client logs out).
    FastTokenUsed {
        /// The account.
        jid: BareJid,
        /// The client id.
        client_id: String,
        /// Whether the newest token was used.
        current: bool,
        /// Whether the client asked for it to be invalidated.
        invalidate: bool,
    },
    /// Make and store a new FAST token for (`jid`, `client_id`) and feed
    /// [`Input::FastTokenIssued`].
    IssueFastToken {
        /// The account.
        jid: BareJid,
        /// The client id.
        client_id: String,
        /// The mechanism it is bound to.
        mechanism: String,
    },
    /// Done: send this stream error and close (with a header first if none was sent).
    Fail(StreamError),
    /// Done: close the stream cleanly (the peer closed its side).
    Close,
    /// Done: drop the connection without writing.
    Disconnect,
}

impl Action {
    /// Whether negotiation is over after this action (the machine is [`Negotiation::Done`]).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Action::Bind { .. }
                | Action::Bind2 { .. }
                | Action::Fail(_)
                | Action::Close
                | Action::Disconnect
        )
    }
}

/// What every state knows.
#[derive(Debug)]
struct Ctx {
    cfg: Config,
    tls: bool,
    failures: u32,
    deadline: Instant,
    /// The stream's domain, once a header was accepted.
    domain: String,
    /// The authentication under way: the identity as sent, and the account it names.
    attempt: Option<(String, Option<BareJid>)>,
    /// Its throttle records (with a throttle configured).
    records: Option<(Failures, Failures)>,
    /// Registration IQs answered on this stream (bounded by
    /// [`Config::max_registration_requests`]).
    registration_requests: u32,
    /// The TLS connection's channel-binding data, when -PLUS is offered on it (empty: not).
    bindings: ChannelBindings,
    /// The SASL2 `<authenticate/>` under way (None: legacy SASL).
    sasl2: Option<Box<crate::sasl2::Request>>,
}

fn serr(c: StreamErrorCondition, text: &str) -> StreamError {
    StreamError::new(c, Some(text.to_string()))
}

/// `t + d`, saturating far in the future instead of panicking on a huge configured duration.
fn add(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(t)
}

/// The state of one negotiation.
#[derive(Debug)]
pub enum Negotiation {
    /// Waiting for a stream header.
    AwaitingHeader(AwaitingHeader),
    /// Features sent, not authenticated: STARTTLS or `<auth/>`.
    Unauthenticated(Unauthenticated),
    /// `<proceed/>` sent: the driver is upgrading the socket.
    AwaitingTls(AwaitingTls),
    /// An `<auth/>` is waiting for the throttle records.
    AwaitingThrottle(AwaitingThrottle),
    /// An `<auth/>` is waiting for the account's keys.
    AwaitingCredentials(AwaitingCredentials),
    /// A SCRAM challenge was sent: waiting for `<response/>`.
    ScramChallenge(ScramChallenge),
    /// Authenticated and restarted: waiting for a bind or resume request.
    Authenticated(Authenticated),
    /// A `<resume/>` was handed to the driver.
    AwaitingResume(AwaitingResume),
    /// A FAST authentication is waiting for the account's tokens.
    AwaitingTokens(sasl2::AwaitingTokens),
    /// A SASL2 success is waiting for its new FAST token.
    IssuingToken(sasl2::IssuingToken),
    /// Over: a final action was produced. Every input is ignored.
    Done,
}

impl Negotiation {
    /// A new negotiation on a connection accepted at `now` (`tls`: direct TLS, XEP-0368).
    pub fn new(cfg: Config, tls: bool, now: Instant) -> Self {
        let deadline = add(now, cfg.timeout);
        Negotiation::AwaitingHeader(AwaitingHeader {
            ctx: Ctx {
                domain: cfg.domains.first().cloned().unwrap_or_default(),
                cfg,
                tls,
                failures: 0,
                deadline,
                attempt: None,
                records: None,
                registration_requests: 0,
                bindings: ChannelBindings::default(),
                sasl2: None,
            },
            user: None,
        })
    }

    /// The TLS connection's channel-binding data: for direct TLS right after [`Self::new`],
    /// after STARTTLS before feeding [`Input::TlsEstablished`] (the features of the
    /// encrypted stream offer -PLUS by it). Ignored with [`Config::channel_binding`] off, or
    /// once negotiation is over.
    pub fn set_channel_bindings(&mut self, bindings: ChannelBindings) {
        let ctx = match self {
            Negotiation::AwaitingHeader(s) => &mut s.ctx,
            Negotiation::Unauthenticated(s) => &mut s.ctx,
            Negotiation::AwaitingTls(s) => &mut s.ctx,
            Negotiation::AwaitingThrottle(s) => &mut s.ctx,
            Negotiation::AwaitingCredentials(s) => &mut s.ctx,
            Negotiation::ScramChallenge(s) => &mut s.ctx,
            Negotiation::Authenticated(s) => &mut s.ctx,
            Negotiation::AwaitingResume(s) => &mut s.ctx,
            Negotiation::AwaitingTokens(s) => &mut s.ctx,
            Negotiation::IssuingToken(s) => &mut s.ctx,
            Negotiation::Done => return,
        };
        if ctx.cfg.channel_binding {
            ctx.bindings = bindings;
        }
    }

    /// When negotiation times out (None once it is over).
    pub fn deadline(&self) -> Option<Instant> {
        self.ctx().map(|c| c.deadline)
    }

    /// Whether the transport is encrypted, as far as the machine knows.
    pub fn is_tls(&self) -> bool {
        self.ctx().is_some_and(|c| c.tls)
    }

    /// Whether negotiation is over.
    pub fn is_done(&self) -> bool {
        matches!(self, Negotiation::Done)
    }

    fn ctx(&self) -> Option<&Ctx> {
        Some(match self {
            Negotiation::AwaitingHeader(s) => &s.ctx,
            Negotiation::Unauthenticated(s) => &s.ctx,
            Negotiation::AwaitingTls(s) => &s.ctx,
            Negotiation::AwaitingThrottle(s) => &s.ctx,
            Negotiation::AwaitingCredentials(s) => &s.ctx,
            Negotiation::ScramChallenge(s) => &s.ctx,
            Negotiation::Authenticated(s) => &s.ctx,
            Negotiation::AwaitingResume(s) => &s.ctx,
            Negotiation::AwaitingTokens(s) => &s.ctx,
            Negotiation::IssuingToken(s) => &s.ctx,
            Negotiation::Done => return None,
        })
    }

    /// Feeds one input; appends what to do to `out` and returns the next state. Inputs a state
    /// does not expect from a correct driver (an answer nobody asked for) change nothing.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Some(ctx) = self.ctx() else {
            return Negotiation::Done;
        };
        match input {
            Input::Tick(now) => {
                if now >= ctx.deadline {
                    out.push(Action::Fail(StreamError::new(
                        StreamErrorCondition::ConnectionTimeout,
                        None,
                    )));
                    return Negotiation::Done;
                }
                return self;
            }
            Input::DecodeError(e) => {
                out.push(Action::Fail(e));
                return Negotiation::Done;
            }
            _ => {}
        }
        match self {
            Negotiation::AwaitingHeader(s) => s.handle(input, out),
            Negotiation::Unauthenticated(s) => s.handle(input, out),
            Negotiation::AwaitingTls(s) => s.handle(input),
            Negotiation::AwaitingThrottle(s) => s.handle(input, out),
            Negotiation::AwaitingCredentials(s) => s.handle(input, out),
            Negotiation::ScramChallenge(s) => s.handle(input, out),
            Negotiation::Authenticated(s) => s.handle(input, out),
            Negotiation::AwaitingResume(s) => s.handle(input, out),
            Negotiation::AwaitingTokens(s) => s.handle(input, out),
            Negotiation::IssuingToken(s) => s.handle(input, out),
            Negotiation::Done => Negotiation::Done,
        }
    }
}

/// Checks an incoming stream header (RFC 6120 §4.7, §4.9.3): the content namespace, a `to`
/// among `domains` (returned in its configured spelling) and version 1.0 or later.
pub fn check_header(
    h: &StreamHeader,
    expect: StreamNs,
    domains: &[String],
) -> Result<String, StreamError> {
    if h.ns != Some(expect) {
        return Err(serr(
            StreamErrorCondition::InvalidNamespace,
            "wrong default namespace for this port",
        ));
    }
    let domain = match h.to.as_deref() {
        Some(to) => match domains.iter().find(|d| d.eq_ignore_ascii_case(to)) {
            Some(d) => d.clone(),
            None => {
                return Err(serr(
                    StreamErrorCondition::HostUnknown,
                    "this server does not serve that domain",
                ))
            }
        },
        None => {
            return Err(serr(
                StreamErrorCondition::HostUnknown,
                "the stream header has no 'to'",
            ))
        }
    };
    let major = h
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.unwrap_or(0) < 1 {
        return Err(serr(
            StreamErrorCondition::UnsupportedVersion,
            "XMPP 1.0 is required",
        ));
    }
    Ok(domain)
}

/// The stream features offered before authentication (`tls`: the transport is encrypted) or
/// after it. `bindings`: the channel-binding types to offer -PLUS with (XEP-0440).
pub fn features(
    tls: bool,
    require_tls: bool,
    authenticated: bool,
    caps: Option<&Element>,
    registration: bool,
    bindings: &ChannelBindings,
) -> Element {
    let mut features = Element::bare("features", ns::STREAM);
    if !authenticated {
        if !tls {
            let mut st = Element::bare("starttls", ns::TLS);
            if require_tls {
                st.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(st);
        }
        if tls || !require_tls {
            features.append_child(mechanisms(bindings));
            if !bindings.is_empty() {
                features.append_child(bindings.feature());
            }
            if registration {
                features.append_child(Element::bare("register", ns::REGISTER_FEATURE));
                features.append_child(Element::bare("register", ns::IBR_TOKEN));
            }
            features.append_child(crate::sasl2::authentication(&offered(bindings), &[]));
        }
    } else {
        features.append_child(Element::bare("bind", ns::BIND));
        let mut sess = Element::bare("session", ns::SESSION);
        sess.append_child(Element::bare("optional", ns::SESSION));
        features.append_child(sess);
        features.append_child(herald_proto::sm::feature());
        features.append_child(Element::bare("csi", ns::CSI));
        features.append_child(Element::bare("ver", ns::ROSTERVER));
        if let Some(c) = caps {
            features.append_child(c.clone());
        }
    }
    features
}

/// The SASL mechanisms offered, legacy and SASL2 alike, most preferred first.
const MECHANISMS: [Mechanism; 3] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
];

/// What is offered on a connection: the -PLUS ones first where it has channel-binding data,
/// as clients tend to take the first they support, then [`MECHANISMS`].
fn offered(bindings: &ChannelBindings) -> Vec<Mechanism> {
    let plus = [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus];
    let plus = plus.into_iter().filter(|_| !bindings.is_empty());
    plus.chain(MECHANISMS).collect()
}

/// Offered only where SASL is allowed at all, so PLAIN is always among them.
fn mechanisms(bindings: &ChannelBindings) -> Element {
    let mut m = Element::bare("mechanisms", ns::SASL);
    for mech in offered(bindings) {
        m.append_child(text_el("mechanism", ns::SASL, mech.name()));
    }
    m
}

fn text_el(name: &str, namespace: &str, text: &str) -> Element {
    let mut el = Element::bare(name, namespace);
    el.append_text(text);
    el
}

/// `<failure><cond/></failure>` (RFC 6120 §6.5).
fn sasl_failure(cond: &str) -> Element {
    let mut f = Element::bare("failure", ns::SASL);
    f.append_child(Element::bare(cond, ns::SASL));
    f
}

/// The character data of `<auth/>`/`<response/>` (RFC 6120 §6.4.2); None if not base64.
fn unb64(el: &Element) -> Option<Vec<u8>> {
    sasl::decode_payload(&el.text()).ok()
}

fn is_stanza(el: &Element) -> bool {
    el.ns() == INTERNAL_NS && matches!(el.name(), "message" | "presence" | "iq")
}

fn account_jid(username: &str, domain: &str) -> Option<BareJid> {
    if username.is_empty() || username.contains('@') {
        return None;
    }
    BareJid::new(&format!("{username}@{domain}")).ok()
}

fn authzid_ok(authzid: Option<&str>, jid: &BareJid) -> bool {
    match authzid {
        None | Some("") => true,
        // The peer's string, before authentication: bounded before IDNA sees it.
        Some(a) => herald_proto::address::bare(a).is_ok_and(|b| &b == jid),
    }
}

/// The stream ended or broke where only an element may come.
fn unexpected_event(ev: StreamEvent, out: &mut Vec<Action>) -> Negotiation {
    match ev {
        StreamEvent::End => out.push(Action::Close),
        _ => out.push(Action::Fail(serr(
            StreamErrorCondition::NotWellFormed,
            "unexpected stream restart",
        ))),
    }
    Negotiation::Done
}

/// Waiting for a stream header: at the start, after TLS, after SASL success.
#[derive(Debug)]
pub struct AwaitingHeader {
    ctx: Ctx,
    user: Option<BareJid>,
}

impl AwaitingHeader {
    /// A header opens the stream and sends its features; anything else ends it.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Event(ev) = input else {
            return Negotiation::AwaitingHeader(self);
        };
        let header = match ev {
            StreamEvent::Header(h) => h,
            StreamEvent::End => {
                out.push(Action::Close);
                return Negotiation::Done;
            }
            StreamEvent::Stanza(_) => {
                out.push(Action::Fail(serr(
                    StreamErrorCondition::NotWellFormed,
                    "expected a stream header",
                )));
                return Negotiation::Done;
            }
        };
        let AwaitingHeader { mut ctx, user } = self;
        let domain = match check_header(&header, StreamNs::Client, &ctx.cfg.domains) {
            Ok(d) => d,
            Err(e) => {
                out.push(Action::Fail(e));
                return Negotiation::Done;
            }
        };
        if let Some(u) = &user {
            if !u.domain().as_str().eq_ignore_ascii_case(&domain) {
                out.push(Action::Fail(serr(
                    StreamErrorCondition::HostUnknown,
                    "the restarted stream changed domain",
                )));
                return Negotiation::Done;
            }
        }
        ctx.domain = domain.clone();
        let mut features = features(
            ctx.tls,
            ctx.cfg.require_encryption,
            user.is_some(),
            ctx.cfg.caps.as_ref(),
            ctx.cfg.registration,
            &ctx.bindings,
        );
        if ctx.cfg.fast {
            sasl2::offer_fast(&mut features, &ctx.bindings);
        }
        out.push(Action::OpenStream {
            domain,
            to: header.from,
            features,
        });
        match user {
            None => Negotiation::Unauthenticated(Unauthenticated { ctx }),
            Some(user) => Negotiation::Authenticated(Authenticated { ctx, user }),
        }
    }
}

/// Features sent, not authenticated yet.
#[derive(Debug)]
pub struct Unauthenticated {
    ctx: Ctx,
}

impl Unauthenticated {
    /// `<starttls/>`, `<auth/>`; a stanza is `not-authorized`, anything else unsupported.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Event(ev) = input else {
            return Negotiation::Unauthenticated(self);
        };
        let el = match ev {
            StreamEvent::Stanza(el) => el,
            ev => return unexpected_event(ev, out),
        };
        let ctx = self.ctx;
        if !ctx.tls && el.is("starttls", ns::TLS) {
            out.push(Action::Send(Element::bare("proceed", ns::TLS)));
            out.push(Action::StartTls);
            return Negotiation::AwaitingTls(AwaitingTls { ctx });
        }
        if el.is("auth", ns::SASL) {
            if !ctx.tls && ctx.cfg.require_encryption {
                // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
                out.push(Action::Send(sasl_failure("encryption-required")));
                return Negotiation::Unauthenticated(Unauthenticated { ctx });
            }
            return start_sasl(ctx, &el, out);
        }
        if is_registration(&el) {
            let mut ctx = ctx;
            ctx.registration_requests += 1;
            if ctx.registration_requests > ctx.cfg.max_registration_requests {
                out.push(Action::Fail(serr(
                    StreamErrorCondition::PolicyViolation,
                    "too many registration requests",
                )));
                return Negotiation::Done;
            }
            register(&ctx, el, out);
            return Negotiation::Unauthenticated(Unauthenticated { ctx });
        }
        if el.is("authenticate", ns::SASL2) {
            return sasl2::start(ctx, &el, out);
        }
        refuse(&el, out)
    }
}

/// A `get`/`set` IQ with a XEP-0077 query or a XEP-0401 `<preauth/>`.
fn is_registration(el: &Element) -> bool {
    if !(is_stanza(el) && el.name() == "iq" && matches!(el.attr("type"), Some("get" | "set"))) {
        return false;
    }
    let mut payload = el.children();
    match (payload.next(), payload.next()) {
        (Some(p), None) => p.is("query", ns::REGISTER) || p.is("preauth", ns::PARS),
        _ => false,
    }
}

/// Answers a registration IQ before authentication: refused here when registration is off
/// (XEP-0077 §3.1: `service-unavailable`) or the stream is not encrypted where it must be
/// (`policy-violation`, as SASL would be refused); otherwise the driver's.
fn register(ctx: &Ctx, el: Element, out: &mut Vec<Action>) {
    let refusal = if !ctx.cfg.registration {
        Some((StanzaErrorCondition::ServiceUnavailable, None))
    } else if !ctx.tls && ctx.cfg.require_encryption {
        Some((
            StanzaErrorCondition::PolicyViolation,
            Some("Encryption is required"),
        ))
    } else {
        None
    };
    match refusal {
        None => out.push(Action::Register(el)),
        Some((cond, text)) => {
            if let Some(reply) = error_reply(&el, cond, None, text) {
                out.push(Action::Send(reply));
            }
        }
    }
}

/// An element negotiation does not expect ends the stream: a stanza before the session is
/// bound is `not-authorized` (RFC 6120 §6.4.5), anything else `unsupported-stanza-type`.
fn refuse(el: &Element, out: &mut Vec<Action>) -> Negotiation {
    out.push(Action::Fail(if is_stanza(el) {
        serr(StreamErrorCondition::NotAuthorized, "authenticate first")
    } else {
        serr(
            StreamErrorCondition::UnsupportedStanzaType,
            "unexpected element during negotiation",
        )
    }));
    Negotiation::Done
}

/// A parsed `<auth/>` whose identity is known.
#[derive(Debug)]
enum Started {
    Plain {
        /// None: not an account name.
        jid: Option<BareJid>,
        authzid: Option<String>,
        password: String,
    },
    Scram {
        server: ScramServer,
        hash: ScramHash,
        /// None: not an account name.
        jid: Option<BareJid>,
        authzid: Option<String>,
    },
    /// XEP-0484: a FAST token (SASL2 only).
    Token {
        /// None: not an account name.
        jid: Option<BareJid>,
        client_id: String,
        mechanism: String,
        proof: Vec<u8>,
        invalidate: bool,
    },
}

/// Answers an `<auth/>` (SASL allowed on this transport).
fn start_sasl(mut ctx: Ctx, auth: &Element, out: &mut Vec<Action>) -> Negotiation {
    ctx.sasl2 = None;
    start_mechanism(ctx, auth.attr("mechanism"), unb64(auth), out)
}

/// Starts `mechanism` with its initial response (None: not base64), for `<auth/>` and SASL2's
/// `<authenticate/>` alike.
fn start_mechanism(
    mut ctx: Ctx,
    mechanism: Option<&str>,
    initial: Option<Vec<u8>>,
    out: &mut Vec<Action>,
) -> Negotiation {
    let plain_ok = ctx.tls || !ctx.cfg.require_encryption;
    let mech = mechanism.and_then(Mechanism::from_name);
    ctx.attempt = None;
    ctx.records = None;
    let Some(initial) = initial else {
        return auth_failed(ctx, "incorrect-encoding", false, out);
    };
    let started = match mech {
        None => return auth_failed(ctx, "invalid-mechanism", false, out),
        Some(Mechanism::Plain) if !plain_ok => {
            return auth_failed(ctx, "invalid-mechanism", false, out)
        }
        // -PLUS is offered only where the connection has binding data.
        Some(m) if m.is_plus() && ctx.bindings.is_empty() => {
            return auth_failed(ctx, "invalid-mechanism", false, out)
        }
        Some(Mechanism::Plain) => match sasl::parse_plain(&initial) {
            Err(e) => return auth_failed(ctx, e.condition(), false, out),
            Ok((authzid, authcid, password)) => {
                let jid = account_jid(&authcid, &ctx.domain);
                ctx.attempt = Some((authcid, jid.clone()));
                Started::Plain {
                    jid,
                    authzid,
                    password,
                }
            }
        },
        Some(m) => {
            let hash = m.scram_hash().unwrap_or(ScramHash::Sha256);
            let server = match &ctx.cfg.scram_nonce {
                Some(n) => ScramServer::with_nonce(hash, n),
                None => ScramServer::new(hash),
            };
            // Non-empty bindings mean -PLUS is advertised: a "y" flag is then a downgrade.
            let mut server = server.channel_binding(m.is_plus(), ctx.bindings.clone());
            let (username, authzid) = match server.client_first(&initial) {
                Ok(v) => v,
                Err(e) => return auth_failed(ctx, e.condition(), false, out),
            };
            let jid = account_jid(&username, &ctx.domain);
            ctx.attempt = Some((username, jid.clone()));
            Started::Scram {
                server,
                hash,
                jid,
                authzid,
            }
        }
    };
    begin(ctx, started, out)
}

/// Goes on with a parsed authentication: the throttle records first when there is a
/// throttle, then [`proceed`].
fn begin(ctx: Ctx, started: Started, out: &mut Vec<Action>) -> Negotiation {
    if ctx.cfg.throttle.is_some() {
        let account = match &started {
            Started::Plain { jid, .. }
            | Started::Scram { jid, .. }
            | Started::Token { jid, .. } => jid.clone(),
        };
        out.push(Action::LookupThrottle { account });
        return Negotiation::AwaitingThrottle(AwaitingThrottle { ctx, started });
    }
    proceed(ctx, started, out)
}

/// Goes on with a parsed `<auth/>` (not locked out): look the account up, or fail or
/// challenge at once when the name is not an account's.
fn proceed(ctx: Ctx, started: Started, out: &mut Vec<Action>) -> Negotiation {
    match started {
        Started::Plain { jid: None, .. } => auth_failed(ctx, "not-authorized", true, out),
        Started::Plain {
            jid: Some(jid),
            authzid,
            password,
        } => {
            out.push(Action::LookupCredentials {
                jid: jid.clone(),
                hash: ScramHash::Sha256,
            });
            Negotiation::AwaitingCredentials(AwaitingCredentials {
                ctx,
                pending: Pending::Plain {
                    jid,
                    authzid,
                    password,
                },
            })
        }
        Started::Scram {
            server,
            hash,
            jid: Some(jid),
            authzid,
        } => {
            out.push(Action::LookupCredentials {
                jid: jid.clone(),
                hash,
            });
            Negotiation::AwaitingCredentials(AwaitingCredentials {
                ctx,
                pending: Pending::Scram {
                    server,
                    jid,
                    authzid,
                },
            })
        }
        // Not an account name: go on with a fake salt, so the challenge reveals nothing.
        Started::Scram {
            server,
            jid: None,
            authzid,
            ..
        } => challenge(ctx, server, None, authzid, None, out),
        Started::Token { jid: None, .. } => auth_failed(ctx, "not-authorized", true, out),
        Started::Token {
            jid: Some(jid),
            client_id,
            mechanism,
            proof,
            invalidate,
        } => sasl2::lookup_tokens(ctx, jid, client_id, mechanism, proof, invalidate, out),
    }
}

/// An `<auth/>` waiting for [`Input::Throttle`]. The driver answers before it reads on.
#[derive(Debug)]
pub struct AwaitingThrottle {
    ctx: Ctx,
    started: Started,
}

impl AwaitingThrottle {
    /// A locked account gets `temporary-auth-failure` (RFC 6120 §6.5.11) whatever the
    /// credentials; otherwise the authentication goes on, its failure delay following the
    /// records.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Throttle { account, peer, now } = input else {
            return Negotiation::AwaitingThrottle(self);
        };
        let AwaitingThrottle { mut ctx, started } = self;
        if account.is_locked(now) {
            return auth_failed_as(ctx, "temporary-auth-failure", None, false, out);
        }
        ctx.records = Some((account, peer));
        proceed(ctx, started, out)
    }
}

/// Sends the SCRAM server-first message.
fn challenge(
    ctx: Ctx,
    mut server: ScramServer,
    jid: Option<BareJid>,
    authzid: Option<String>,
    keys: Option<ScramKeys>,
    out: &mut Vec<Action>,
) -> Negotiation {
    let known = keys.is_some();
    let first = server.server_first(keys);
    out.push(Action::Send(if ctx.sasl2.is_some() {
        crate::sasl2::challenge(&first)
    } else {
        text_el("challenge", ns::SASL, &sasl::encode_payload(&first))
    }));
    Negotiation::ScramChallenge(ScramChallenge {
        ctx,
        server,
        jid: jid.filter(|_| known),
        authzid,
    })
}

/// A SASL failure: the `<failure/>` (after the failure delay when `delayed`: a wrong password,
/// not a malformed request), counted; too many end the stream.
fn auth_failed(ctx: Ctx, cond: &'static str, delayed: bool, out: &mut Vec<Action>) -> Negotiation {
    let delay = delayed.then(|| failure_delay(&ctx));
    auth_failed_as(ctx, cond, delay, delayed, out)
}

/// The wait before answering a wrong password: `auth_failure_delay`, and with a throttle
/// doubled per recent failure of the account, of the peer address or on this connection.
fn failure_delay(ctx: &Ctx) -> Duration {
    let base = ctx.cfg.auth_failure_delay;
    let Some(t) = &ctx.cfg.throttle else {
        return base;
    };
    let (account, peer) = ctx.records.unwrap_or_default();
    let n = account
        .count
        .max(peer.count)
        .max(ctx.failures)
        .saturating_add(1);
    crate::throttle::failure_delay(base, t.max_delay, n)
}

/// A SASL failure after waiting `delay`; `record`: the throttle records count it.
fn auth_failed_as(
    mut ctx: Ctx,
    cond: &'static str,
    delay: Option<Duration>,
    record: bool,
    out: &mut Vec<Action>,
) -> Negotiation {
    let (user, account) = match ctx.attempt.take() {
        Some((u, a)) => (Some(u), a),
        None => (None, None),
    };
    if record && ctx.cfg.throttle.is_some() {
        out.push(Action::RecordFailure { account });
    }
    if let Some(d) = delay {
        // Slow down password guessing; the connection's task is the only one waiting.
        out.push(Action::Delay(d));
    }
    out.push(Action::Send(if ctx.sasl2.take().is_some() {
        crate::sasl2::failure(cond, None)
    } else {
        sasl_failure(cond)
    }));
    ctx.failures = ctx.failures.saturating_add(1);
    ctx.records = None;
    out.push(Action::AuthFailed {
        failures: ctx.failures,
        user,
        condition: cond,
    });
    if ctx.failures >= ctx.cfg.max_auth_failures {
        out.push(Action::Fail(serr(
            StreamErrorCondition::PolicyViolation,
            "too many failed authentication attempts",
        )));
        return Negotiation::Done;
    }
    Negotiation::Unauthenticated(Unauthenticated { ctx })
}

/// SASL success with the mechanism's final data: legacy `<success/>` and a stream restart, or
/// SASL2's completion (inline features, no restart).
fn succeed(ctx: Ctx, jid: BareJid, data: Option<Vec<u8>>, out: &mut Vec<Action>) -> Negotiation {
    if ctx.sasl2.is_some() {
        return sasl2::succeeded(ctx, jid, data, out);
    }
    out.push(Action::Send(match data {
        None => Element::bare("success", ns::SASL),
        Some(d) => text_el("success", ns::SASL, &sasl::encode_payload(&d)),
    }));
    authenticated(ctx, jid, out)
}

/// SASL success (`<success/>` already queued): restart the stream, authenticated.
fn authenticated(ctx: Ctx, jid: BareJid, out: &mut Vec<Action>) -> Negotiation {
    out.push(Action::Authenticated(jid.clone()));
    out.push(Action::Restart);
    Negotiation::AwaitingHeader(AwaitingHeader {
        ctx,
        user: Some(jid),
    })
}

/// `<proceed/>` sent; the driver upgrades the socket.
#[derive(Debug)]
pub struct AwaitingTls {
    ctx: Ctx,
}

impl AwaitingTls {
    /// [`Input::TlsEstablished`]: a new stream starts, encrypted.
    pub fn handle(self, input: Input) -> Negotiation {
        match input {
            Input::TlsEstablished => {
                let mut ctx = self.ctx;
                ctx.tls = true;
                Negotiation::AwaitingHeader(AwaitingHeader { ctx, user: None })
            }
            _ => Negotiation::AwaitingTls(self),
        }
    }
}

#[derive(Debug)]
enum Pending {
    Plain {
        jid: BareJid,
        authzid: Option<String>,
        password: String,
    },
    Scram {
        server: ScramServer,
        jid: BareJid,
        authzid: Option<String>,
    },
}

/// An `<auth/>` waiting for [`Input::Credentials`]. The driver answers before it reads on.
#[derive(Debug)]
pub struct AwaitingCredentials {
    ctx: Ctx,
    pending: Pending,
}

impl AwaitingCredentials {
    /// PLAIN: verify the password; SCRAM: send the challenge.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Credentials(keys) = input else {
            return Negotiation::AwaitingCredentials(self);
        };
        let ctx = self.ctx;
        match self.pending {
            Pending::Plain {
                jid,
                authzid,
                password,
            } => {
                // An unknown account costs the same derivation as a known one: PLAIN's timing
                // does not tell whether the account exists.
                let ok = match keys {
                    Some(k) => sasl::verify_password(&k, &password),
                    None => {
                        let _ = sasl::verify_password(&dummy_keys(), &password);
                        false
                    }
                };
                if !ok {
                    auth_failed(ctx, "not-authorized", true, out)
                } else if !authzid_ok(authzid.as_deref(), &jid) {
                    auth_failed(ctx, "invalid-authzid", true, out)
                } else {
                    succeed(ctx, jid, None, out)
                }
            }
            Pending::Scram {
                server,
                jid,
                authzid,
            } => challenge(ctx, server, Some(jid), authzid, keys, out),
        }
    }
}

/// Keys no password matches, derived like a real account's (the default iteration count).
fn dummy_keys() -> ScramKeys {
    ScramKeys {
        hash: ScramHash::Sha256,
        salt: b"herald-no-such-account".to_vec(),
        iterations: sasl::DEFAULT_ITERATIONS,
        stored_key: vec![0; 32],
        server_key: vec![0; 32],
    }
}

/// A SCRAM challenge is out: `<response/>` or `<abort/>` next.
#[derive(Debug)]
pub struct ScramChallenge {
    ctx: Ctx,
    server: ScramServer,
    /// The account, when it exists.
    jid: Option<BareJid>,
    authzid: Option<String>,
}

impl ScramChallenge {
    /// Checks the client's proof.
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Event(ev) = input else {
            return Negotiation::ScramChallenge(self);
        };
        let ScramChallenge {
            ctx,
            mut server,
            jid,
            authzid,
        } = self;
        let sasl_ns = if ctx.sasl2.is_some() {
            ns::SASL2
        } else {
            ns::SASL
        };
        let resp = match ev {
            StreamEvent::Stanza(el) if el.is("response", sasl_ns) => el,
            StreamEvent::Stanza(el) if el.is("abort", sasl_ns) => {
                return auth_failed(ctx, "aborted", false, out);
            }
            StreamEvent::End => {
                out.push(Action::Disconnect);
                return Negotiation::Done;
            }
            _ => {
                out.push(Action::Fail(serr(
                    StreamErrorCondition::PolicyViolation,
                    "expected a SASL response",
                )));
                return Negotiation::Done;
            }
        };
        let Some(data) = unb64(&resp) else {
            return auth_failed(ctx, "incorrect-encoding", false, out);
        };
        match (server.client_final(&data), jid) {
            (Ok(final_msg), Some(jid)) => {
                if !authzid_ok(authzid.as_deref(), &jid) {
                    return auth_failed(ctx, "invalid-authzid", true, out);
                }
                succeed(ctx, jid, Some(final_msg), out)
            }
            (Ok(_), None) => auth_failed(ctx, "not-authorized", true, out),
            (Err(e), _) => auth_failed(ctx, e.condition(), true, out),
        }
    }
}

/// Authenticated, features (bind, sm, …) sent: waiting for a bind or resume request.
#[derive(Debug)]
pub struct Authenticated {
    ctx: Ctx,
    user: BareJid,
}

impl Authenticated {
    /// The account that authenticated.
    pub fn user(&self) -> &BareJid {
        &self.user
    }

    /// A bind request ends negotiation; `<resume/>` goes to the driver; other IQs are
    /// `not-allowed` and `<enable/>` fails until a resource is bound (RFC 6120 §7.1,
    /// XEP-0198 §3).
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::Event(ev) = input else {
            return Negotiation::Authenticated(self);
        };
        let el = match ev {
            StreamEvent::Stanza(el) => el,
            ev => return unexpected_event(ev, out),
        };
        if el.is("iq", INTERNAL_NS) {
            let is_bind = el.children().next().is_some_and(|p| p.is("bind", ns::BIND));
            if is_bind && el.attr("type") == Some("set") {
                out.push(Action::Bind {
                    user: self.user,
                    request: el,
                });
                return Negotiation::Done;
            }
            // Anything else before binding: RFC 6120 §7.1 — not yet allowed.
            if let Some(reply) = error_reply(
                &el,
                StanzaErrorCondition::NotAllowed,
                None,
                Some("bind a resource first"),
            ) {
                out.push(Action::Send(reply));
            }
            return Negotiation::Authenticated(self);
        }
        if el.is("resume", ns::SM) {
            return match crate::sm_nonza::resume_request(&el) {
                Ok((previd, h)) => {
                    out.push(Action::Resume {
                        user: self.user.clone(),
                        previd,
                        h,
                    });
                    Negotiation::AwaitingResume(AwaitingResume {
                        ctx: self.ctx,
                        user: self.user,
                        sasl2: None,
                    })
                }
                Err(failed) => {
                    out.push(Action::Send(failed));
                    Negotiation::Authenticated(self)
                }
            };
        }
        if el.is("enable", ns::SM) {
            out.push(Action::Send(crate::sm_nonza::enable_before_bind()));
            return Negotiation::Authenticated(self);
        }
        refuse(&el, out)
    }
}

/// [`Action::Resume`] is out; the driver either hands the stream over (negotiation is over,
/// the machine is dropped) or answers [`Input::ResumeFailed`].
#[derive(Debug)]
pub struct AwaitingResume {
    ctx: Ctx,
    user: BareJid,
    /// SASL2: the `<success/>` a failed resumption completes (with `<failed/>`).
    sasl2: Option<Box<crate::sasl2::Success>>,
}

impl AwaitingResume {
    /// No session took the stream: `<failed/>`, and the stream goes on (it may bind).
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::ResumeFailed { last_h } = input else {
            return Negotiation::AwaitingResume(self);
        };
        if let Some(success) = self.sasl2 {
            return sasl2::resume_failed(self.ctx, self.user, *success, last_h, out);
        }
        out.push(Action::Send(crate::sm_nonza::resume_unknown(last_h)));
        Negotiation::Authenticated(Authenticated {
            ctx: self.ctx,
            user: self.user,
        })
    }
}

/// Runs a whole negotiation over `bytes` as a driver would, answering every action at once
/// with fixed credentials (user `user`, password `pencil`, keys with one iteration), and
/// checks its invariants: no panic, nothing after a final action, a bind or resume only after
/// an authentication, PLAIN never offered in the clear when encryption is required. For the
/// fuzz target `negotiate` and the proptest below; the first two bytes choose the options.
/// `start` is when the connection was accepted (any instant will do).
#[doc(hidden)]
pub fn run_bytes(data: &[u8], start: Instant) {
    use herald_proto::stream::{Decoder, Limits};

    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk, rest)) = rest.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let cfg = Config {
        domains: vec!["localhost".into(), "example.org".into()],
        require_encryption: flags & 1 != 0,
        max_auth_failures: u32::from(flags >> 5) + 1,
        auth_failure_delay: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
        throttle: (flags & 8 != 0).then(|| Throttle {
            max_delay: Duration::from_secs(30),
            lockout_failures: 2,
            lockout_time: Duration::from_secs(60),
        }),
        scram_nonce: Some("fuzznonce".into()),
        caps: None,
        registration: flags & 16 != 0,
        max_registration_requests: 4,
        channel_binding: flags & 16 != 0,
        fast: flags & 16 != 0,
    };
    // Fixed binding data, as if from the TLS layer (ignored unless the flag turned it on).
    let bindings = || ChannelBindings {
        tls_exporter: Some(vec![1; 32]),
        tls_server_end_point: Some(vec![2; 32]),
    };
    let require = cfg.require_encryption;
    let mut m = Negotiation::new(cfg, flags & 2 != 0, start);
    if m.is_tls() {
        m.set_channel_bindings(bindings());
    }
    let mut d = Decoder::new(Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
        max_attributes: 16,
        max_header_bytes: 1024,
    });
    let mut authenticated = false;
    let mut out = Vec::new();
    let mut answers = std::collections::VecDeque::new();
    let mut ticks = 0u32;
    for piece in rest.chunks(chunk) {
        d.feed(piece);
        loop {
            let input = match answers.pop_front() {
                Some(i) => i,
                None => match d.next_event() {
                    Ok(Some(ev)) => Input::Event(ev),
                    Ok(None) => break,
                    Err(e) => Input::DecodeError(e),
                },
            };
            m = m.handle(input, &mut out);
            for a in out.drain(..) {
                match a {
                    Action::OpenStream { features, .. } => {
                        let plain = features
                            .get_child("mechanisms", ns::SASL)
                            .is_some_and(|ms| ms.children().any(|c| c.text() == "PLAIN"));
                        assert!(!(plain && require && !m.is_tls()), "PLAIN in the clear");
                        let plus = features
                            .get_child("mechanisms", ns::SASL)
                            .is_some_and(|ms| ms.children().any(|c| c.text().ends_with("-PLUS")));
                        assert!(!plus || m.is_tls(), "-PLUS without TLS");
                    }
                    Action::StartTls => {
                        d.reset();
                        m.set_channel_bindings(bindings());
                        answers.push_back(Input::TlsEstablished);
                    }
                    Action::Restart => d.reset(),
                    Action::LookupCredentials { jid, hash } => {
                        let keys = (jid.node().is_some_and(|n| n.as_str() == "user"))
                            .then(|| sasl::derive_keys(hash, "pencil", b"salt", 1).ok())
                            .flatten();
                        answers.push_back(Input::Credentials(keys));
                    }
                    Action::Authenticated(_) => authenticated = true,
                    Action::Bind { .. } => assert!(authenticated, "bind before auth"),
                    Action::Resume { h, .. } => {
                        assert!(authenticated, "resume before auth");
                        answers.push_back(Input::ResumeFailed { last_h: Some(h) });
                    }
                    Action::LookupThrottle { account } => {
                        // The account "locked" is locked out.
                        let locked = account
                            .and_then(|j| j.node().map(|n| n.as_str() == "locked"))
                            .unwrap_or(false);
                        let account = Failures {
                            count: 3,
                            since: Some(start),
                            locked_until: locked.then(|| start + Duration::from_secs(3600)),
                        };
                        answers.push_back(Input::Throttle {
                            account,
                            peer: Failures::default(),
                            now: start,
                        });
                    }
                    Action::Register(_) => assert!(!authenticated, "registration after auth"),
                    Action::Bind2 { .. } => assert!(authenticated, "bind2 before auth"),
                    Action::Sasl2Resume { h, .. } => {
                        assert!(authenticated, "resume before auth");
                        answers.push_back(Input::ResumeFailed { last_h: Some(h) });
                    }
                    Action::LookupFastTokens { jid, .. } => {
                        // user's token is "token", issued at 0, expiring at 1000; the clock
                        // reads 10.
                        let t = b"token";
                        let tokens = (jid.node().is_some_and(|n| n.as_str() == "user"))
                            .then(|| FastToken {
                                mechanism: sasl::ht::SHA256_NONE.into(),
                                token: None,
                                verifier: sasl::ht::verifier(t),
                                responder: sasl::ht::responder(t),
                                issued_at_ms: 0,
                                expires_at_ms: 1000,
                                current: true,
                            })
                            .into_iter()
                            .collect();
                        answers.push_back(Input::FastTokens { tokens, now_ms: 10 });
                    }
                    Action::IssueFastToken { .. } => {
                        answers.push_back(Input::FastTokenIssued(Some((
                            "t".into(),
                            "2030-01-01T00:00:00Z".into(),
                        ))));
                    }
                    Action::FastTokenUsed { .. } => {}
                    Action::Send(_)
                    | Action::Features(_)
                    | Action::FullLimits
                    | Action::RecordFailure { .. }
                    | Action::Delay(_)
                    | Action::AuthFailed { .. }
                    | Action::Fail(_)
                    | Action::Close
                    | Action::Disconnect => {}
                }
            }
            if m.is_done() {
                assert!(answers.is_empty(), "an answer was asked for after the end");
                return;
            }
        }
        if flags & 4 != 0 {
            ticks += 1;
            m = m.handle(
                Input::Tick(start + Duration::from_secs(u64::from(ticks) * 7)),
                &mut out,
            );
            if m.is_done() {
                assert!(
                    matches!(out.as_slice(), [Action::Fail(e)] if e.condition == StreamErrorCondition::ConnectionTimeout)
                );
                return;
            }
            assert!(out.is_empty());
        }
    }
}

mod sasl2;
pub use sasl2::{AwaitingTokens, IssuingToken};

#[cfg(test)]
mod tests;
