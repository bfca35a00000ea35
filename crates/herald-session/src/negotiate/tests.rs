//! Table tests of the negotiation machine, fed through the real stream decoder, no sockets.

use std::time::{Duration, Instant};

use herald_proto::sasl::{self, ScramHash, ScramKeys};
use herald_proto::stream::{to_string, Decoder, Limits, StreamNs};
use proptest::prelude::*;

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
const BIND: &str = "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>";

const FEATURES_TLS_REQUIRED: &str = "open localhost [starttls(required)]";
const FEATURES_TLS_OPTIONAL: &str =
    "open localhost [starttls() mechanisms(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN) authentication(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN inline)]";
const FEATURES_SASL: &str =
    "open localhost [mechanisms(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN) authentication(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN inline)]";
const FEATURES_BOUND: &str = "open localhost [bind() session(optional) sm() csi() ver()]";
const SUCCESS_PLAIN: &str = "send <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";

fn cfg(require_encryption: bool) -> Config {
    Config {
        domains: vec!["localhost".into(), "Example.org".into()],
        require_encryption,
        max_auth_failures: 3,
        auth_failure_delay: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
        throttle: None,
        scram_nonce: None,
        caps: None,
        registration: false,
        max_registration_requests: 3,
        channel_binding: true,
        fast: false,
    }
}

/// A driver without I/O: XML text in, actions out as short strings.
struct Harness {
    m: Negotiation,
    d: Decoder,
    start: Instant,
}

impl Harness {
    fn new(cfg: Config, tls: bool) -> Self {
        let start = Instant::now();
        Harness {
            m: Negotiation::new(cfg, tls, start),
            d: Decoder::new(Limits::default()),
            start,
        }
    }

    fn input(&mut self, i: Input) -> Vec<String> {
        let mut out = Vec::new();
        let m = std::mem::replace(&mut self.m, Negotiation::Done);
        self.m = m.handle(i, &mut out);
        let restart = out
            .iter()
            .any(|a| matches!(a, Action::Restart | Action::StartTls));
        if restart {
            self.d.reset();
        }
        out.iter().map(show).collect()
    }

    /// Feeds XML text; every decoded event goes to the machine (an answer the machine asks
    /// for must be fed with [`Self::input`] before the next text).
    fn feed(&mut self, xml: &str) -> Vec<String> {
        self.d.feed(xml.as_bytes());
        let mut all = Vec::new();
        loop {
            let i = match self.d.next_event() {
                Ok(Some(ev)) => Input::Event(ev),
                Ok(None) => break,
                Err(e) => Input::DecodeError(e),
            };
            let decode_error = matches!(i, Input::DecodeError(_));
            all.extend(self.input(i));
            if decode_error || self.m.is_done() {
                break;
            }
        }
        all
    }

    /// Over TLS (direct or STARTTLS) up to the SASL features.
    fn to_sasl(cfg: Config) -> Self {
        let mut h = Harness::new(cfg, true);
        assert_eq!(h.feed(HEADER), [FEATURES_SASL]);
        h
    }

    /// Authenticated as user@localhost with PLAIN, restarted, bound features sent.
    fn authenticated() -> Self {
        let mut h = Harness::to_sasl(cfg(true));
        h.feed(&plain("user", "pencil"));
        let got = h.input(Input::Credentials(Some(keys())));
        assert_eq!(got[0], SUCCESS_PLAIN);
        assert_eq!(h.feed(HEADER), [FEATURES_BOUND]);
        h
    }
}

fn show(a: &Action) -> String {
    match a {
        Action::OpenStream {
            domain, features, ..
        } => {
            let items: Vec<String> = features
                .children()
                .map(|c| {
                    let inner: Vec<String> = c
                        .children()
                        .map(|g| {
                            if let Some(t) = g.attr("type") {
                                t.to_string()
                            } else if g.text().is_empty() {
                                g.name().to_string()
                            } else {
                                g.text()
                            }
                        })
                        .collect();
                    format!("{}({})", c.name(), inner.join(" "))
                })
                .collect();
            format!("open {domain} [{}]", items.join(" "))
        }
        Action::Send(el) => format!("send {}", to_string(el, StreamNs::Client)),
        Action::StartTls => "starttls".into(),
        Action::Restart => "restart".into(),
        Action::LookupCredentials { jid, hash } => format!("lookup {jid} {hash:?}"),
        Action::Delay(d) => format!("delay {}s", d.as_secs()),
        Action::Authenticated(j) => format!("authenticated {j}"),
        Action::AuthFailed { failures, .. } => format!("auth-failed {failures}"),
        Action::RecordFailure { account } => match account {
            Some(a) => format!("record {a}"),
            None => "record -".into(),
        },
        Action::LookupThrottle { account } => match account {
            Some(a) => format!("throttle {a}"),
            None => "throttle -".into(),
        },
        Action::Bind { user, request } => {
            format!("bind {user} {}", request.attr("id").unwrap_or_default())
        }
        Action::Resume { user, previd, h } => format!("resume {user} {previd} {h}"),
        Action::Features(f) => {
            let names: Vec<&str> = f.children().map(|c| c.name()).collect();
            format!("features [{}]", names.join(" "))
        }
        Action::FullLimits => "full-limits".into(),
        Action::Bind2 {
            user,
            resource,
            bind,
            success,
            ..
        } => {
            let results: Vec<&str> = success.results.iter().map(|c| c.name()).collect();
            format!(
                "bind2 {user} {} carbons={} [{}]",
                resource.as_deref().unwrap_or("-"),
                bind.carbons,
                results.join(" ")
            )
        }
        Action::Sasl2Resume {
            user, previd, h, ..
        } => format!("sasl2-resume {user} {previd} {h}"),
        Action::LookupFastTokens { jid, client_id } => format!("tokens {jid} {client_id}"),
        Action::FastTokenUsed {
            current,
            invalidate,
            ..
        } => format!("token-used current={current} invalidate={invalidate}"),
        Action::IssueFastToken { mechanism, .. } => format!("issue-token {mechanism}"),
        Action::Fail(e) => format!("fail {}", e.condition.as_str()),
        Action::Register(el) => format!("register {}", el.attr("id").unwrap_or("")),
        Action::Close => "close".into(),
        Action::Disconnect => "disconnect".into(),
    }
}

/// A header event, as the decoder reports one at the start of a (restarted) stream.
fn header_event() -> Input {
    let mut d = Decoder::new(Limits::default());
    d.feed(HEADER.as_bytes());
    match d.next_event() {
        Ok(Some(ev @ StreamEvent::Header(_))) => Input::Event(ev),
        other => panic!("{other:?}"),
    }
}

fn stanza_event(xml: &str) -> Input {
    Input::Event(StreamEvent::Stanza(xml.parse().unwrap()))
}

fn keys() -> ScramKeys {
    sasl::derive_keys(ScramHash::Sha256, "pencil", b"salt", 2).unwrap()
}

fn auth(mech: &str, payload: &[u8]) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
        sasl::encode_payload(payload)
    )
}

fn plain(user: &str, pw: &str) -> String {
    auth("PLAIN", format!("\0{user}\0{pw}").as_bytes())
}

fn failure(cond: &str) -> String {
    format!("send <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/></failure>")
}

fn response(payload: &[u8]) -> String {
    format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        sasl::encode_payload(payload)
    )
}

fn payload_of(action: &str, name: &str) -> Vec<u8> {
    let open = format!("send <{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
    let b64 = action
        .strip_prefix(&open)
        .and_then(|r| r.strip_suffix(&format!("</{name}>")))
        .unwrap_or_else(|| panic!("not a {name}: {action}"));
    sasl::decode_payload(b64).unwrap()
}

#[test]
fn plain_over_required_starttls_to_bind() {
    let mut h = Harness::new(cfg(true), false);
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_REQUIRED]);
    assert_eq!(
        h.feed(STARTTLS),
        [
            "send <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            "starttls"
        ]
    );
    assert!(h.input(Input::TlsEstablished).is_empty());
    assert!(h.m.is_tls());
    assert_eq!(h.feed(HEADER), [FEATURES_SASL]);
    assert_eq!(
        h.feed(&plain("user", "pencil")),
        ["lookup user@localhost Sha256"]
    );
    assert_eq!(
        h.input(Input::Credentials(Some(keys()))),
        [SUCCESS_PLAIN, "authenticated user@localhost", "restart"]
    );
    assert_eq!(h.feed(HEADER), [FEATURES_BOUND]);
    assert_eq!(h.feed(BIND), ["bind user@localhost b1"]);
    assert!(h.m.is_done());
    assert!(h.feed("<presence/>").is_empty());
}

#[test]
fn optional_starttls_allows_plain_in_the_clear() {
    let mut h = Harness::new(cfg(false), false);
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_OPTIONAL]);
    assert_eq!(
        h.feed(&plain("user", "pencil")),
        ["lookup user@localhost Sha256"]
    );
    let got = h.input(Input::Credentials(Some(keys())));
    assert_eq!(got[0], SUCCESS_PLAIN);
    assert!(!h.m.is_tls());
}

#[test]
fn direct_tls_offers_sasl_at_once() {
    let mut h = Harness::new(cfg(true), true);
    assert_eq!(h.feed(HEADER), [FEATURES_SASL]);
    // STARTTLS over TLS is not a thing.
    assert_eq!(h.feed(STARTTLS), ["fail unsupported-stanza-type"]);
}

#[test]
fn sasl_in_the_clear_when_encryption_is_required() {
    let mut h = Harness::new(cfg(true), false);
    h.feed(HEADER);
    for mech in ["PLAIN", "SCRAM-SHA-256", "X"] {
        // Refused, and not counted as a failed attempt.
        assert_eq!(
            h.feed(&auth(mech, b"n,,n=user,r=abc")),
            [failure("encryption-required")]
        );
    }
    assert_eq!(h.feed(STARTTLS)[1], "starttls");
}

#[test]
fn scram_sha256_rfc7677_vector() {
    let mut h = Harness::to_sasl(Config {
        scram_nonce: Some("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into()),
        ..cfg(true)
    });
    assert_eq!(
        h.feed(&auth("SCRAM-SHA-256", b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")),
        ["lookup user@localhost Sha256"]
    );
    let salt = sasl::decode_payload("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let k = sasl::derive_keys(ScramHash::Sha256, "pencil", &salt, 4096).unwrap();
    let got = h.input(Input::Credentials(Some(k)));
    assert_eq!(got.len(), 1);
    assert_eq!(
        payload_of(&got[0], "challenge"),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let got = h.feed(&response(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
          p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    ));
    assert_eq!(
        payload_of(&got[0], "success"),
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert_eq!(got[1..], ["authenticated user@localhost", "restart"]);
    assert_eq!(h.feed(HEADER), [FEATURES_BOUND]);
}

#[test]
fn scram_sha1_rfc5802_vector_and_a_wrong_proof() {
    let first = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
    let good =
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    let bad = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let salt = sasl::decode_payload("QSXCR+Q6sek8bf92").unwrap();
    let k = sasl::derive_keys(ScramHash::Sha1, "pencil", &salt, 4096).unwrap();
    let c = Config {
        scram_nonce: Some("3rfcNHYJY1ZVvWVs7j".into()),
        ..cfg(true)
    };
    let mut h = Harness::to_sasl(c.clone());
    assert_eq!(
        h.feed(&auth("SCRAM-SHA-1", first)),
        ["lookup user@localhost Sha1"]
    );
    h.input(Input::Credentials(Some(k.clone())));
    let got = h.feed(&response(good));
    assert_eq!(
        payload_of(&got[0], "success"),
        b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
    );

    let mut h = Harness::to_sasl(c);
    h.feed(&auth("SCRAM-SHA-1", first));
    h.input(Input::Credentials(Some(k)));
    assert_eq!(
        h.feed(&response(bad)),
        ["delay 1s", &failure("not-authorized"), "auth-failed 1"]
    );
}

#[test]
fn scram_for_an_unknown_or_unnamed_user_fails_after_a_challenge() {
    let mut h = Harness::to_sasl(cfg(true));
    assert_eq!(
        h.feed(&auth("SCRAM-SHA-256", b"n,,n=nobody,r=abc")),
        ["lookup nobody@localhost Sha256"]
    );
    let got = h.input(Input::Credentials(None));
    assert!(payload_of(&got[0], "challenge").starts_with(b"r=abc"));
    let got = h.feed(&response(b"c=biws,r=abc,p=AAAA"));
    assert_eq!(got[..2], ["delay 1s", &failure("not-authorized")]);

    // Not an account name at all: no lookup, still a (fake) challenge.
    let mut h = Harness::to_sasl(cfg(true));
    let got = h.feed(&auth("SCRAM-SHA-256", b"n,,n=a@b,r=abc"));
    assert!(payload_of(&got[0], "challenge").starts_with(b"r=abc"));
}

#[test]
fn sasl_failures_table() {
    // (auth element, credentials answer if a lookup is expected, expected actions)
    type Case = (String, Option<Option<ScramKeys>>, Vec<String>);
    let nf = |c: &str, n: u32, delayed: bool| {
        let mut v = Vec::new();
        if delayed {
            v.push("delay 1s".to_string());
        }
        v.push(failure(c));
        v.push(format!("auth-failed {n}"));
        v
    };
    let cases: Vec<Case> = vec![
        (
            plain("user", "wrong"),
            Some(Some(keys())),
            nf("not-authorized", 1, true),
        ),
        (
            plain("ghost", "pencil"),
            Some(None),
            nf("not-authorized", 1, true),
        ),
        (plain("a@b", "pencil"), None, nf("not-authorized", 1, true)),
        (
            auth("PLAIN", b"user\0pencil"),
            None,
            nf("malformed-request", 1, false),
        ),
        (
            auth("PLAIN", b"other@localhost\0user\0pencil"),
            Some(Some(keys())),
            nf("invalid-authzid", 1, true),
        ),
        (
            auth("DIGEST-MD5", b""),
            None,
            nf("invalid-mechanism", 1, false),
        ),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</auth>".into(),
            None,
            nf("invalid-mechanism", 1, false),
        ),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!</auth>".into(),
            None,
            nf("incorrect-encoding", 1, false),
        ),
        (
            auth("SCRAM-SHA-256", b"p=tls-unique,,n=user,r=abc"),
            None,
            nf("malformed-request", 1, false),
        ),
    ];
    for (el, creds, want) in cases {
        let mut h = Harness::to_sasl(cfg(true));
        let mut got = h.feed(&el);
        if let Some(c) = creds {
            assert_eq!(got.len(), 1, "{el}: {got:?}");
            assert!(got[0].starts_with("lookup "), "{el}: {got:?}");
            got = h.input(Input::Credentials(c));
        }
        assert_eq!(got, want, "{el}");
        assert!(matches!(h.m, Negotiation::Unauthenticated(_)), "{el}");
    }
}

fn bindings() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(vec![7; 32]),
        tls_server_end_point: Some(vec![9; 32]),
    }
}

const FEATURES_PLUS: &str = "open localhost [mechanisms(SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS \
    SCRAM-SHA-256 SCRAM-SHA-1 PLAIN) sasl-channel-binding(tls-exporter tls-server-end-point) \
    authentication(SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN inline)]";

/// Over direct TLS with channel-binding data, up to the SASL features.
fn plus_harness(cfg: Config) -> Harness {
    let mut h = Harness::new(cfg, true);
    h.m.set_channel_bindings(bindings());
    h
}

#[test]
fn plus_is_offered_where_the_connection_has_binding_data() {
    let mut h = plus_harness(cfg(true));
    assert_eq!(h.feed(HEADER), [FEATURES_PLUS]);

    // Only the types the connection has (TLS 1.2: no tls-exporter).
    let mut h = Harness::new(cfg(true), true);
    h.m.set_channel_bindings(ChannelBindings {
        tls_exporter: None,
        ..bindings()
    });
    let f = h.feed(HEADER);
    assert!(
        f[0].contains("sasl-channel-binding(tls-server-end-point) authentication("),
        "{f:?}"
    );

    // After STARTTLS: the encrypted stream's features.
    let mut h = Harness::new(cfg(true), false);
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_REQUIRED]);
    h.feed(STARTTLS);
    h.m.set_channel_bindings(bindings());
    h.input(Input::TlsEstablished);
    assert_eq!(h.feed(HEADER), [FEATURES_PLUS]);

    // Turned off, or no data (plain TCP): no -PLUS, no XEP-0440.
    let mut h = plus_harness(Config {
        channel_binding: false,
        ..cfg(true)
    });
    assert_eq!(h.feed(HEADER), [FEATURES_SASL]);
    let mut h = Harness::new(cfg(false), false);
    h.m.set_channel_bindings(ChannelBindings::default());
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_OPTIONAL]);
}

#[test]
fn plus_exchanges_table() {
    let nf = |c: &str, delayed: bool| {
        let mut v = Vec::new();
        if delayed {
            v.push("delay 1s".to_string());
        }
        v.push(failure(c));
        v.push("auth-failed 1".to_string());
        v
    };
    // (channel binding on, mechanism, client-first, expected)
    let cases: Vec<(bool, &str, &[u8], Vec<String>)> = vec![
        // Bound to a type the connection has: the exchange goes on.
        (
            true,
            "SCRAM-SHA-256-PLUS",
            b"p=tls-exporter,,n=user,r=abc",
            vec!["lookup user@localhost Sha256".into()],
        ),
        (
            true,
            "SCRAM-SHA-1-PLUS",
            b"p=tls-server-end-point,,n=user,r=abc",
            vec!["lookup user@localhost Sha1".into()],
        ),
        // The client cannot bind: fine without -PLUS.
        (
            true,
            "SCRAM-SHA-256",
            b"n,,n=user,r=abc",
            vec!["lookup user@localhost Sha256".into()],
        ),
        // "y" although -PLUS is offered: a downgrade, refused.
        (
            true,
            "SCRAM-SHA-256",
            b"y,,n=user,r=abc",
            nf("not-authorized", false),
        ),
        // "y" where -PLUS is not offered is true.
        (
            false,
            "SCRAM-SHA-256",
            b"y,,n=user,r=abc",
            vec!["lookup user@localhost Sha256".into()],
        ),
        // A type we do not have.
        (
            true,
            "SCRAM-SHA-256-PLUS",
            b"p=tls-unique,,n=user,r=abc",
            nf("malformed-request", false),
        ),
        // -PLUS without binding.
        (
            true,
            "SCRAM-SHA-256-PLUS",
            b"n,,n=user,r=abc",
            nf("malformed-request", false),
        ),
        // -PLUS where it is not offered.
        (
            false,
            "SCRAM-SHA-256-PLUS",
            b"p=tls-exporter,,n=user,r=abc",
            nf("invalid-mechanism", false),
        ),
    ];
    for (on, mech, first, want) in cases {
        let mut h = plus_harness(Config {
            channel_binding: on,
            ..cfg(true)
        });
        h.feed(HEADER);
        assert_eq!(h.feed(&auth(mech, first)), want, "{mech} {first:?}");
    }

    // Another connection's binding data in c= (the proof does not matter: this is checked
    // first): a failed authentication like a wrong password.
    let mut h = plus_harness(cfg(true));
    h.feed(HEADER);
    h.feed(&auth("SCRAM-SHA-256-PLUS", b"p=tls-exporter,,n=user,r=abc"));
    let got = h.input(Input::Credentials(Some(keys())));
    let first = String::from_utf8(payload_of(&got[0], "challenge")).unwrap();
    let nonce = first.split(',').next().unwrap().trim_start_matches("r=");
    let mut c = b"p=tls-exporter,,".to_vec();
    c.extend_from_slice(&[8; 32]);
    let fin = format!(
        "c={},r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        sasl::encode_payload(&c)
    );
    assert_eq!(
        h.feed(&response(fin.as_bytes())),
        nf("not-authorized", true)
    );
}

#[test]
fn too_many_failures_end_the_stream() {
    let mut h = Harness::to_sasl(cfg(true));
    for n in 1..=3 {
        h.feed(&plain("user", "wrong"));
        let got = h.input(Input::Credentials(Some(keys())));
        assert_eq!(
            got[..3],
            [
                "delay 1s",
                &failure("not-authorized"),
                &format!("auth-failed {n}")
            ]
        );
        if n < 3 {
            assert_eq!(got.len(), 3);
        } else {
            assert_eq!(got[3..], ["fail policy-violation"]);
            assert!(h.m.is_done());
        }
    }
}

#[test]
fn scram_exchange_interrupted() {
    let start = |h: &mut Harness| {
        h.feed(&auth("SCRAM-SHA-256", b"n,,n=user,r=abc"));
        h.input(Input::Credentials(Some(keys())));
    };
    let cases = [
        (
            "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            vec![failure("aborted"), "auth-failed 1".into()],
        ),
        (
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>!</response>",
            vec![failure("incorrect-encoding"), "auth-failed 1".into()],
        ),
        ("<message/>", vec!["fail policy-violation".to_string()]),
        ("</stream:stream>", vec!["disconnect".to_string()]),
    ];
    for (xml, want) in cases {
        let mut h = Harness::to_sasl(cfg(true));
        start(&mut h);
        assert_eq!(h.feed(xml), want, "{xml}");
    }
    let mut h = Harness::to_sasl(cfg(true));
    start(&mut h);
    assert_eq!(h.input(header_event()), ["fail policy-violation"]);
}

#[test]
fn before_authentication_table() {
    let cases = [
        (
            "<message to='a@localhost'><body>hi</body></message>",
            "fail not-authorized",
        ),
        ("<presence/>", "fail not-authorized"),
        (BIND, "fail not-authorized"),
        (
            "<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>",
            "fail unsupported-stanza-type",
        ),
        (
            "<enable xmlns='urn:xmpp:sm:3'/>",
            "fail unsupported-stanza-type",
        ),
        ("<foo xmlns='bar'/>", "fail unsupported-stanza-type"),
        ("</stream:stream>", "close"),
    ];
    for (xml, want) in cases {
        let mut h = Harness::to_sasl(cfg(true));
        assert_eq!(h.feed(xml), [want], "{xml}");
        assert!(h.m.is_done());
    }
    // A second header on the same stream (the decoder itself reports one inside a stream as
    // restricted XML; the machine refuses it too).
    let mut h = Harness::to_sasl(cfg(true));
    assert_eq!(h.input(header_event()), ["fail not-well-formed"]);
    let mut h = Harness::authenticated();
    assert_eq!(h.input(header_event()), ["fail not-well-formed"]);
}

#[test]
fn headers_table() {
    let header = |ns: &str, to: Option<&str>, version: Option<&str>| {
        format!(
            "<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams'{}{}>",
            to.map(|t| format!(" to='{t}'")).unwrap_or_default(),
            version
                .map(|v| format!(" version='{v}'"))
                .unwrap_or_default()
        )
    };
    let cases = [
        (
            header("jabber:client", Some("localhost"), Some("1.0")),
            FEATURES_SASL.to_string(),
        ),
        // The configured spelling is kept.
        (
            header("jabber:client", Some("EXAMPLE.ORG"), Some("1.0")),
            FEATURES_SASL.replace("localhost", "Example.org"),
        ),
        (
            header("jabber:server", Some("localhost"), Some("1.0")),
            "fail invalid-namespace".into(),
        ),
        (
            header("jabber:client", Some("elsewhere"), Some("1.0")),
            "fail host-unknown".into(),
        ),
        (
            header("jabber:client", None, Some("1.0")),
            "fail host-unknown".into(),
        ),
        (
            header("jabber:client", Some("localhost"), None),
            "fail unsupported-version".into(),
        ),
        (
            header("jabber:client", Some("localhost"), Some("0.9")),
            "fail unsupported-version".into(),
        ),
        (
            header("jabber:client", Some("localhost"), Some("2.0")),
            FEATURES_SASL.to_string(),
        ),
        // The decoder refuses a document that does not open a stream.
        (
            "<message xmlns='jabber:client'/>".into(),
            "fail invalid-namespace".into(),
        ),
        ("<<<".into(), "fail not-well-formed".into()),
        ("</stream:stream>".into(), "fail not-well-formed".into()),
    ];
    for (xml, want) in cases {
        let mut h = Harness::new(cfg(true), true);
        assert_eq!(h.feed(&xml), [want], "{xml}");
    }
    // The machine's own rule, should a decoder deliver an element first.
    let mut h = Harness::new(cfg(true), true);
    assert_eq!(
        h.input(stanza_event("<message xmlns='jabber:client'/>")),
        ["fail not-well-formed"]
    );
    let mut h = Harness::new(cfg(true), true);
    assert_eq!(h.input(Input::Event(StreamEvent::End)), ["close"]);
}

#[test]
fn after_authentication_table() {
    let cases: [(&str, &[&str], bool); 7] = [
        (BIND, &["bind user@localhost b1"], true),
        (
            "<iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>",
            &["send <iq id='q' type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>bind a resource first</text></error></iq>"],
            false,
        ),
        (
            "<iq type='get' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
            &["send <iq id='b' type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>bind a resource first</text></error></iq>"],
            false,
        ),
        (
            "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
            &["send <failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"],
            false,
        ),
        ("<message><body>x</body></message>", &["fail not-authorized"], true),
        (&auth("PLAIN", b"\0user\0pencil"), &["fail unsupported-stanza-type"], true),
        ("</stream:stream>", &["close"], true),
    ];
    for (xml, want, done) in cases {
        let mut h = Harness::authenticated();
        assert_eq!(h.feed(xml), want, "{xml}");
        assert_eq!(h.m.is_done(), done, "{xml}");
    }
}

#[test]
fn resume_paths() {
    // Handed to the driver; when no session takes it, <failed/> and the stream goes on.
    let mut h = Harness::authenticated();
    assert_eq!(
        h.feed("<resume xmlns='urn:xmpp:sm:3' previd='s1' h='4'/>"),
        ["resume user@localhost s1 4"]
    );
    assert!(matches!(h.m, Negotiation::AwaitingResume(_)));
    assert_eq!(
        h.input(Input::ResumeFailed { last_h: Some(7) }),
        ["send <failed xmlns='urn:xmpp:sm:3' h='7'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"]
    );
    assert_eq!(
        h.feed("<resume xmlns='urn:xmpp:sm:3' previd='s1' h='4'/>"),
        ["resume user@localhost s1 4"]
    );
    assert_eq!(
        h.input(Input::ResumeFailed { last_h: None }),
        ["send <failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"]
    );
    assert_eq!(h.feed(BIND), ["bind user@localhost b1"]);

    // No h: bad-request, no hand-over.
    let mut h = Harness::authenticated();
    assert_eq!(
        h.feed("<resume xmlns='urn:xmpp:sm:3' previd='s1'/>"),
        ["send <failed xmlns='urn:xmpp:sm:3'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"]
    );
    assert!(matches!(h.m, Negotiation::Authenticated(_)));
}

#[test]
fn restart_after_sasl() {
    // The restarted stream must keep the domain it authenticated on.
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain("user", "pencil"));
    h.input(Input::Credentials(Some(keys())));
    assert_eq!(
        h.feed(&HEADER.replace("localhost", "example.org")),
        ["fail host-unknown"]
    );
    // A stanza where the new header belongs.
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain("user", "pencil"));
    h.input(Input::Credentials(Some(keys())));
    assert_eq!(
        h.input(stanza_event("<message xmlns='jabber:client'/>")),
        ["fail not-well-formed"]
    );
    // Bytes sent before the restart are not part of the new stream (the decoder was reset),
    // and a header on the old stream after success is a new document, so it is accepted.
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain("user", "pencil"));
    let got = h.input(Input::Credentials(Some(keys())));
    assert_eq!(got.last().map(String::as_str), Some("restart"));
    assert_eq!(h.feed(HEADER), [FEATURES_BOUND]);
}

#[test]
fn answers_nobody_asked_for_change_nothing() {
    let mut h = Harness::to_sasl(cfg(true));
    assert!(h.input(Input::TlsEstablished).is_empty());
    assert!(h.input(Input::Credentials(None)).is_empty());
    assert!(h.input(Input::ResumeFailed { last_h: None }).is_empty());
    assert!(matches!(h.m, Negotiation::Unauthenticated(_)));
}

#[test]
fn timeout() {
    let mut h = Harness::new(cfg(true), false);
    assert_eq!(h.m.deadline(), Some(h.start + Duration::from_secs(60)));
    h.feed(HEADER);
    let early = h.start + Duration::from_secs(59);
    assert!(h.input(Input::Tick(early)).is_empty());
    let late = h.start + Duration::from_secs(60);
    assert_eq!(h.input(Input::Tick(late)), ["fail connection-timeout"]);
    assert!(h.m.is_done());
    assert_eq!(h.m.deadline(), None);
    // In every waiting state.
    let mut h = Harness::authenticated();
    assert_eq!(
        h.input(Input::Tick(h.start + Duration::from_secs(61))),
        ["fail connection-timeout"]
    );
}

#[test]
fn final_actions() {
    assert!(Action::Close.is_final());
    assert!(!Action::StartTls.is_final());
    assert!(!Action::Restart.is_final());
}

#[test]
fn run_bytes_smoke() {
    // A full login through the fuzz driver: header, PLAIN, restart, bind.
    let mut data = vec![2u8, 63];
    for part in [HEADER, &plain("user", "pencil"), HEADER, BIND] {
        data.extend_from_slice(part.as_bytes());
    }
    run_bytes(&data, Instant::now());
    run_bytes(&[], Instant::now());
    run_bytes(&[7, 0, b'<'], Instant::now());
}

/// Fragments a client might send, in any order: reaches the deeper states far more often
/// than random bytes.
const FRAGMENTS: &[&str] = &[
    HEADER,
    STARTTLS,
    BIND,
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHVzZXIAcGVuY2ls</auth>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHVzZXIAd3Jvbmc=</auth>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj11c2VyLHI9YWJj</auth>",
    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9YWJjZnV6em5vbmNlLHA9QUFBQQ==</response>",
    "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    "<resume xmlns='urn:xmpp:sm:3' previd='p' h='1'/>",
    "<resume xmlns='urn:xmpp:sm:3'/>",
    "<enable xmlns='urn:xmpp:sm:3'/>",
    "<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<message/>",
    "</stream:stream>",
    "<x",
    "&bad;",
];

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        run_bytes(&data, Instant::now());
    }

    #[test]
    fn random_fragment_sequences_never_panic(
        flags in any::<u8>(),
        chunk in any::<u8>(),
        picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..24),
    ) {
        let mut data = vec![flags, chunk];
        for p in picks {
            data.extend_from_slice(FRAGMENTS[p].as_bytes());
        }
        run_bytes(&data, Instant::now());
    }
}

fn throttled() -> Config {
    Config {
        throttle: Some(Throttle {
            max_delay: Duration::from_secs(8),
            lockout_failures: 3,
            lockout_time: Duration::from_secs(60),
        }),
        ..cfg(true)
    }
}

fn rec(count: u32, locked_until: Option<Instant>) -> Failures {
    Failures {
        count,
        since: Some(Instant::now()),
        locked_until,
    }
}

#[test]
fn throttle_table_delay_and_lockout() {
    let t = Instant::now();
    let later = t + Duration::from_secs(30);
    // (account record, peer record, now, password, what follows the records)
    let wrong = |d: &str| {
        vec![
            "record user@localhost".into(),
            format!("delay {d}"),
            failure("not-authorized"),
            "auth-failed 1".into(),
        ]
    };
    let locked = vec![failure("temporary-auth-failure"), "auth-failed 1".into()];
    let cases: Vec<(Failures, Failures, Instant, &str, Vec<String>)> = vec![
        // No record: the base delay.
        (
            Failures::default(),
            Failures::default(),
            t,
            "wrong",
            wrong("1s"),
        ),
        // Doubling per recent failure of the account, of the peer, capped at max_delay.
        (rec(1, None), Failures::default(), t, "wrong", wrong("2s")),
        (rec(2, None), rec(1, None), t, "wrong", wrong("4s")),
        (Failures::default(), rec(3, None), t, "wrong", wrong("8s")),
        (Failures::default(), rec(30, None), t, "wrong", wrong("8s")),
        // Locked: temporary-auth-failure, even with the right password, and no delay.
        (
            rec(3, Some(later)),
            Failures::default(),
            t,
            "pencil",
            locked.clone(),
        ),
        (rec(3, Some(later)), Failures::default(), t, "wrong", locked),
    ];
    for (i, (account, peer, now, pw, want)) in cases.into_iter().enumerate() {
        let mut h = Harness::to_sasl(throttled());
        assert_eq!(
            h.feed(&plain("user", pw)),
            ["throttle user@localhost"],
            "case {i}"
        );
        let mut got = h.input(Input::Throttle { account, peer, now });
        if got == ["lookup user@localhost Sha256"] {
            got = h.input(Input::Credentials(Some(keys())));
        }
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn an_expired_lock_lets_the_right_password_in() {
    let t = Instant::now();
    let mut h = Harness::to_sasl(throttled());
    h.feed(&plain("user", "pencil"));
    let account = rec(3, Some(t + Duration::from_secs(60)));
    let got = h.input(Input::Throttle {
        account,
        peer: Failures::default(),
        now: t + Duration::from_secs(60),
    });
    assert_eq!(got, ["lookup user@localhost Sha256"]);
    let got = h.input(Input::Credentials(Some(keys())));
    assert_eq!(got[0], SUCCESS_PLAIN);
}

#[test]
fn a_locked_account_is_refused_before_any_scram_challenge() {
    let t = Instant::now();
    let mut h = Harness::to_sasl(throttled());
    assert_eq!(
        h.feed(&auth("SCRAM-SHA-256", b"n,,n=user,r=abcdef")),
        ["throttle user@localhost"]
    );
    let got = h.input(Input::Throttle {
        account: rec(5, Some(t + Duration::from_secs(1))),
        peer: Failures::default(),
        now: t,
    });
    assert_eq!(
        got,
        [failure("temporary-auth-failure"), "auth-failed 1".into()]
    );
}

#[test]
fn auth_failed_names_the_attempt_and_what_the_records_count() {
    let mut h = Harness::to_sasl(throttled());
    h.feed(&plain("user", "wrong"));
    let mut out = Vec::new();
    let m = std::mem::replace(&mut h.m, Negotiation::Done);
    let m = m.handle(
        Input::Throttle {
            account: Failures::default(),
            peer: Failures::default(),
            now: Instant::now(),
        },
        &mut out,
    );
    out.clear();
    let _ = m.handle(Input::Credentials(None), &mut out);
    assert!(
        matches!(out.first(), Some(Action::RecordFailure { account: Some(a) }) if a.to_string() == "user@localhost"),
        "{out:?}"
    );
    let Some(Action::AuthFailed {
        user, condition, ..
    }) = out.last()
    else {
        panic!("{out:?}");
    };
    assert_eq!(user.as_deref(), Some("user"));
    assert_eq!(*condition, "not-authorized");
    // A malformed request is not recorded (and not delayed).
    let mut h = Harness::to_sasl(throttled());
    let got = h.feed("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!</auth>");
    assert_eq!(got, [failure("incorrect-encoding"), "auth-failed 1".into()]);
}

#[test]
fn caps_are_offered_after_authentication_only() {
    let caps = Element::bare("c", herald_proto::ns::CAPS);
    let mut h = Harness::to_sasl(Config {
        caps: Some(caps),
        ..cfg(true)
    });
    h.feed(&plain("user", "pencil"));
    let got = h.input(Input::Credentials(Some(keys())));
    assert_eq!(got[0], SUCCESS_PLAIN);
    assert_eq!(
        h.feed(HEADER),
        ["open localhost [bind() session(optional) sm() csi() ver() c()]"]
    );
}

#[test]
fn registration_before_authentication() {
    const GET: &str = "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>";
    const PREAUTH: &str =
        "<iq type='set' id='p1' to='localhost'><preauth xmlns='urn:xmpp:pars:0' token='t'/></iq>";
    // Off (the default): not offered, and the IQ is service-unavailable; the stream goes on.
    let mut h = Harness::to_sasl(cfg(true));
    let got = h.feed(GET);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("send <iq") && got[0].contains("service-unavailable"),
        "{got:?}"
    );
    assert!(!h.m.is_done());
    // On: offered beside SASL, with the XEP-0445 token feature; IQs go to the driver.
    let on = Config {
        registration: true,
        ..cfg(true)
    };
    let mut h = Harness::new(on.clone(), true);
    assert_eq!(
        h.feed(HEADER),
        ["open localhost [mechanisms(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN) register() register() authentication(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN inline)]"]
    );
    assert_eq!(h.feed(GET), ["register r1"]);
    assert_eq!(h.feed(PREAUTH), ["register p1"]);
    // Then SASL as usual, and no registration feature after it.
    h.feed(&plain("user", "pencil"));
    let got = h.input(Input::Credentials(Some(keys())));
    assert_eq!(got[0], SUCCESS_PLAIN);
    assert_eq!(h.feed(HEADER), [FEATURES_BOUND]);
    // Before TLS where it is required: not offered, and refused like SASL would be.
    let mut h = Harness::new(on, false);
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_REQUIRED]);
    let got = h.feed(GET);
    assert!(got[0].contains("policy-violation"), "{got:?}");
    assert!(!h.m.is_done());
    // Registration IQs on one stream are bounded (3 here; two were sent).
    let mut h = Harness::new(
        Config {
            registration: true,
            ..cfg(true)
        },
        true,
    );
    h.feed(HEADER);
    for id in ["a", "b", "c"] {
        assert_eq!(h.feed(&GET.replace("r1", id)), [format!("register {id}")]);
    }
    assert_eq!(h.feed(GET), ["fail policy-violation"]);
    // Refused ones count too (registration off).
    let mut h = Harness::to_sasl(cfg(true));
    for _ in 0..3 {
        assert!(h.feed(GET)[0].contains("service-unavailable"));
    }
    assert_eq!(h.feed(GET), ["fail policy-violation"]);
    // Another payload, or a result, is still a stanza before authentication.
    let mut h = Harness::new(
        Config {
            registration: true,
            ..cfg(true)
        },
        true,
    );
    h.feed(HEADER);
    assert_eq!(
        h.feed("<iq type='result' id='x'><query xmlns='jabber:iq:register'/></iq>"),
        ["fail not-authorized"]
    );
}

// ---- XEP-0388 SASL2 ----------------------------------------------------------------------

const AGENT: &str = "<user-agent id='client-1'/>";
const BIND2: &str =
    "<bind xmlns='urn:xmpp:bind:0'><tag>T</tag><enable xmlns='urn:xmpp:carbons:2'/></bind>";

fn authenticate(mech: &str, payload: &[u8], inline: &str) -> String {
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mech}'><initial-response>{}</initial-response>{inline}</authenticate>",
        sasl::encode_payload(payload)
    )
}

fn plain2(user: &str, pw: &str, inline: &str) -> String {
    authenticate("PLAIN", format!("\0{user}\0{pw}").as_bytes(), inline)
}

fn failure2(cond: &str) -> String {
    format!("send <failure xmlns='urn:xmpp:sasl:2'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>")
}

fn fast_cfg() -> Config {
    Config {
        fast: true,
        ..cfg(true)
    }
}

fn ht_msg(user: &str, token: &str) -> Vec<u8> {
    let mut m = format!("{user}\0").into_bytes();
    m.extend_from_slice(&sasl::ht::hmac(token.as_bytes(), b"Initiator"));
    m
}

fn token(t: &str, issued: i64, expires: i64, current: bool) -> FastToken {
    FastToken {
        mechanism: "HT-SHA-256-NONE".into(),
        token: None,
        verifier: sasl::ht::verifier(t.as_bytes()),
        responder: sasl::ht::responder(t.as_bytes()),
        issued_at_ms: issued,
        expires_at_ms: expires,
        current,
    }
}

#[test]
fn sasl2_offer_follows_the_transport_and_fast_setting() {
    let mut h = Harness::new(cfg(true), false);
    assert_eq!(h.feed(HEADER), [FEATURES_TLS_REQUIRED]);
    let mut h = Harness::new(fast_cfg(), true);
    assert_eq!(
        h.feed(HEADER),
        ["open localhost [mechanisms(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN) authentication(SCRAM-SHA-256 SCRAM-SHA-1 PLAIN inline)]"]
    );
    // SASL2 before TLS where TLS is required: encryption-required, the stream goes on.
    let mut h = Harness::new(cfg(true), false);
    h.feed(HEADER);
    assert_eq!(
        h.feed(&plain2("user", "pencil", "")),
        [failure2("encryption-required")]
    );
    assert!(matches!(h.m, Negotiation::Unauthenticated(_)));
}

#[test]
fn sasl2_plain_with_bind2_ends_negotiation_without_restart() {
    let mut h = Harness::to_sasl(cfg(true));
    assert_eq!(
        h.feed(&plain2("user", "pencil", &format!("{AGENT}{BIND2}"))),
        ["lookup user@localhost Sha256"]
    );
    let resource = crate::sasl2::resource(Some("T"), Some("client-1")).unwrap();
    assert_eq!(
        h.input(Input::Credentials(Some(keys()))),
        [
            "authenticated user@localhost".to_string(),
            "full-limits".into(),
            format!("bind2 user@localhost {resource} carbons=true []"),
        ]
    );
    assert!(h.m.is_done());
}

#[test]
fn sasl2_without_bind2_continues_to_legacy_binding() {
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain2("user", "pencil", ""));
    assert_eq!(
        h.input(Input::Credentials(Some(keys()))),
        [
            "authenticated user@localhost",
            "full-limits",
            "send <success xmlns='urn:xmpp:sasl:2'><authorization-identifier>user@localhost</authorization-identifier></success>",
            "features [bind session sm csi ver]",
        ]
    );
    assert_eq!(h.feed(BIND), ["bind user@localhost b1"]);
}

#[test]
fn sasl2_scram_challenge_and_failures() {
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&authenticate("SCRAM-SHA-256", b"n,,n=user,r=abcdef", ""));
    let got = h.input(Input::Credentials(Some(keys())));
    assert!(
        got[0].starts_with("send <challenge xmlns='urn:xmpp:sasl:2'>"),
        "{got:?}"
    );
    // A legacy <response/> is not SASL2's: the stream ends.
    assert_eq!(
        h.feed(&response(b"c=biws,r=x,p=x")),
        ["fail policy-violation"]
    );
    // A wrong proof, answered in SASL2's <failure/>, delayed.
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&authenticate("SCRAM-SHA-256", b"n,,n=user,r=abcdef", ""));
    let got = h.input(Input::Credentials(Some(keys())));
    let first = String::from_utf8(payload_of2(&got[0], "challenge")).unwrap();
    let nonce = first.split(',').next().unwrap().trim_start_matches("r=");
    let resp = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(
        h.feed(&format!(
            "<response xmlns='urn:xmpp:sasl:2'>{}</response>",
            sasl::encode_payload(resp.as_bytes())
        )),
        [
            "delay 1s".to_string(),
            failure2("not-authorized"),
            "auth-failed 1".into()
        ]
    );
    // The table of refusals before any exchange.
    for (xml, want) in [
        (authenticate("X-NOPE", b"x", ""), "invalid-mechanism"),
        (
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>!</initial-response></authenticate>".to_string(),
            "incorrect-encoding",
        ),
        (plain2("user", "pencil", "<resume xmlns='urn:xmpp:sm:3' previd='x'/>"), "malformed-request"),
        (authenticate("HT-SHA-256-NONE", &ht_msg("user", "t"), AGENT), "invalid-mechanism"),
    ] {
        let mut h = Harness::to_sasl(cfg(true));
        assert_eq!(h.feed(&xml), [failure2(want), "auth-failed 1".into()], "{xml}");
    }
}

fn payload_of2(action: &str, name: &str) -> Vec<u8> {
    let open = format!("send <{name} xmlns='urn:xmpp:sasl:2'>");
    let b64 = action
        .strip_prefix(&open)
        .and_then(|r| r.strip_suffix(&format!("</{name}>")))
        .unwrap_or_else(|| panic!("not a {name}: {action}"));
    sasl::decode_payload(b64).unwrap()
}

#[test]
fn sasl2_inline_resume_then_fresh_bind_when_it_fails() {
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain2(
        "user",
        "pencil",
        &format!("{AGENT}<resume xmlns='urn:xmpp:sm:3' previd='s1' h='3'/>{BIND2}"),
    ));
    assert_eq!(
        h.input(Input::Credentials(Some(keys()))),
        [
            "authenticated user@localhost",
            "full-limits",
            "sasl2-resume user@localhost s1 3"
        ]
    );
    let resource = crate::sasl2::resource(Some("T"), Some("client-1")).unwrap();
    assert_eq!(
        h.input(Input::ResumeFailed { last_h: Some(2) }),
        [format!(
            "bind2 user@localhost {resource} carbons=true [failed]"
        )]
    );
    // Without Bind2: <failed/> inside the success, then legacy binding.
    let mut h = Harness::to_sasl(cfg(true));
    h.feed(&plain2(
        "user",
        "pencil",
        "<resume xmlns='urn:xmpp:sm:3' previd='s1' h='3'/>",
    ));
    h.input(Input::Credentials(Some(keys())));
    let got = h.input(Input::ResumeFailed { last_h: None });
    assert!(got[0].contains("<failed xmlns='urn:xmpp:sm:3'>"), "{got:?}");
    assert_eq!(got[1], "features [bind session sm csi ver]");
}

#[test]
fn fast_tokens_table() {
    let now = 1_000_000;
    let fresh = token("tok", now - 10, now + 1000, true);
    // (tokens stored, token presented, what happens after the look-up)
    let cases: Vec<(Vec<FastToken>, &str, Vec<String>)> = vec![
        (
            vec![fresh.clone()],
            "tok",
            vec![
                "token-used current=true invalidate=false".into(),
                "authenticated user@localhost".into(),
                "full-limits".into(),
                "send <success xmlns='urn:xmpp:sasl:2'><additional-data>".into(),
                "features [bind session sm csi ver]".into(),
            ],
        ),
        (
            vec![fresh.clone()],
            "wrong",
            vec![
                "delay 1s".into(),
                failure2("not-authorized"),
                "auth-failed 1".into(),
            ],
        ),
        (
            vec![],
            "tok",
            vec![
                "delay 1s".into(),
                failure2("not-authorized"),
                "auth-failed 1".into(),
            ],
        ),
        (
            vec![token("tok", now - 2000, now - 1, true)],
            "tok",
            vec![failure2("credentials-expired"), "auth-failed 1".into()],
        ),
        // Past half its life: a new token is issued with the success.
        (
            vec![token("tok", now - 900, now + 100, false)],
            "tok",
            vec![
                "token-used current=false invalidate=false".into(),
                "authenticated user@localhost".into(),
                "issue-token HT-SHA-256-NONE".into(),
            ],
        ),
    ];
    for (tokens, presented, want) in cases {
        let mut h = Harness::to_sasl(fast_cfg());
        assert_eq!(
            h.feed(&authenticate(
                "HT-SHA-256-NONE",
                &ht_msg("user", presented),
                &format!("{AGENT}<fast xmlns='urn:xmpp:fast:0'/>")
            )),
            ["tokens user@localhost client-1"]
        );
        let got = h.input(Input::FastTokens {
            tokens,
            now_ms: now,
        });
        let got: Vec<String> = got
            .iter()
            .map(|g| match g.find("<additional-data>") {
                Some(i) => g[..i + "<additional-data>".len()].to_string(),
                None => g.clone(),
            })
            .collect();
        assert_eq!(got, want, "{presented}");
    }
    // Without a client id: malformed-request, before any look-up.
    let mut h = Harness::to_sasl(fast_cfg());
    assert_eq!(
        h.feed(&authenticate("HT-SHA-256-NONE", &ht_msg("user", "tok"), "")),
        [failure2("malformed-request"), "auth-failed 1".into()]
    );
    // A token is asked for with a password login; it joins the success.
    let mut h = Harness::to_sasl(fast_cfg());
    h.feed(&plain2(
        "user",
        "pencil",
        &format!("{AGENT}<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>"),
    ));
    assert_eq!(
        h.input(Input::Credentials(Some(keys()))),
        [
            "authenticated user@localhost",
            "issue-token HT-SHA-256-NONE"
        ]
    );
    let got = h.input(Input::FastTokenIssued(Some((
        "T0K".into(),
        "2030-01-01T00:00:00Z".into(),
    ))));
    assert_eq!(got[0], "full-limits");
    assert!(
        got[1]
            .contains("<token xmlns='urn:xmpp:fast:0' expiry='2030-01-01T00:00:00Z' token='T0K'/>"),
        "{got:?}"
    );
    // invalidate: the token dies, and no new one is issued.
    let mut h = Harness::to_sasl(fast_cfg());
    h.feed(&authenticate(
        "HT-SHA-256-NONE",
        &ht_msg("user", "tok"),
        &format!("{AGENT}<fast xmlns='urn:xmpp:fast:0' invalidate='true'/><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>"),
    ));
    let got = h.input(Input::FastTokens {
        tokens: vec![token("tok", now - 900, now + 100, true)],
        now_ms: now,
    });
    assert_eq!(got[0], "token-used current=true invalidate=true");
    assert!(!got.iter().any(|g| g.starts_with("issue-token")), "{got:?}");
}

fn ht_cb_msg(user: &str, token: &str, cb: &[u8]) -> Vec<u8> {
    let mut m = format!("{user}\0").into_bytes();
    m.extend_from_slice(&sasl::ht::initiator(token.as_bytes(), cb));
    m
}

fn derived(mechanism: &str, t: &str, now: i64) -> FastToken {
    FastToken {
        mechanism: mechanism.into(),
        token: Some(t.into()),
        verifier: Vec::new(),
        responder: Vec::new(),
        issued_at_ms: now - 10,
        expires_at_ms: now + 1000,
        current: true,
    }
}

/// -EXPR/-ENDP: the proof includes this connection's channel binding, the answer too; a
/// proof made on another connection, a channel-bound token used with -NONE, and a mechanism
/// whose channel binding this connection lacks all fail.
#[test]
fn fast_channel_bound_tokens() {
    let now = 1_000_000;
    let (exporter, endpoint) = (vec![7u8; 32], vec![9u8; 32]);
    // (mechanism, cb-data the client used, token stored, the responder message if it succeeds)
    type Case<'a> = (&'a str, Vec<u8>, FastToken, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            sasl::ht::SHA256_EXPR,
            exporter.clone(),
            derived(sasl::ht::SHA256_EXPR, "tok", now),
            Some(sasl::ht::responder_cb(b"tok", &exporter)),
        ),
        (
            sasl::ht::SHA256_ENDP,
            endpoint.clone(),
            derived(sasl::ht::SHA256_ENDP, "tok", now),
            Some(sasl::ht::responder_cb(b"tok", &endpoint)),
        ),
        // Replayed from another TLS connection (other exporter data).
        (
            sasl::ht::SHA256_EXPR,
            vec![8u8; 32],
            derived(sasl::ht::SHA256_EXPR, "tok", now),
            None,
        ),
        // An -EXPR token used with -NONE: refused (downgrade).
        (
            sasl::ht::SHA256_NONE,
            Vec::new(),
            derived(sasl::ht::SHA256_EXPR, "tok", now),
            None,
        ),
        // A derived -NONE token works without channel binding.
        (
            sasl::ht::SHA256_NONE,
            Vec::new(),
            derived(sasl::ht::SHA256_NONE, "tok", now),
            Some(sasl::ht::responder_cb(b"tok", b"")),
        ),
    ];
    for (mechanism, cb, stored, want) in cases {
        let mut h = Harness::new(fast_cfg(), true);
        h.m.set_channel_bindings(bindings());
        h.feed(HEADER);
        assert_eq!(
            h.feed(&authenticate(
                mechanism,
                &ht_cb_msg("user", "tok", &cb),
                AGENT
            )),
            ["tokens user@localhost client-1"],
            "{mechanism}"
        );
        let got = h.input(Input::FastTokens {
            tokens: vec![stored],
            now_ms: now,
        });
        match want {
            Some(responder) => {
                assert_eq!(got[0], "token-used current=true invalidate=false");
                let data = format!(
                    "<additional-data>{}</additional-data>",
                    sasl::encode_payload(&responder)
                );
                assert!(got[3].contains(&data), "{mechanism}: {got:?}");
            }
            None => assert_eq!(
                got,
                [
                    "delay 1s".to_string(),
                    failure2("not-authorized"),
                    "auth-failed 1".into()
                ],
                "{mechanism}"
            ),
        }
    }
    // A connection without tls-exporter does not offer -EXPR: refused before any look-up.
    let mut h = Harness::new(fast_cfg(), true);
    h.m.set_channel_bindings(ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(endpoint),
    });
    h.feed(HEADER);
    assert_eq!(
        h.feed(&authenticate(
            sasl::ht::SHA256_EXPR,
            &ht_cb_msg("user", "tok", &exporter),
            AGENT
        )),
        [failure2("invalid-mechanism"), "auth-failed 1".into()]
    );
}
