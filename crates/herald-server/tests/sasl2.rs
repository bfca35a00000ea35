//! XEP-0388 SASL2 on c2s with XEP-0386 Bind2, XEP-0198 inline (enable in Bind2, resume in
//! SASL2) and XEP-0484 FAST, through real connections: what a client sees on each flow and on
//! every failure path (wrong password, wrong, expired and removed-account FAST tokens, a
//! resume of an unknown session, legacy binding not offered after Bind2).

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use herald_proto::sasl::ht;
use herald_proto::Element;
use herald_server::config::Dur;
use herald_server::Config;
use herald_store::FastTokenRecord;
use sasl::client::Mechanism as _;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const SASL2: &str = "urn:xmpp:sasl:2";
const BIND2: &str = "urn:xmpp:bind:0";
const SM: &str = "urn:xmpp:sm:3";
const FAST: &str = "urn:xmpp:fast:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const STREAM: &str = "http://etherx.jabber.org/streams";

const PHONE: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap()
}

async fn server(f: impl FnOnce(&mut Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        // No server-initiated <r/>: transcripts stay exact.
        c.stream_management.request_after = 100_000;
        c.stream_management.request_idle = Dur(Duration::from_secs(3600));
        f(c);
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    s
}

/// Connects and reads the features; returns the client and the SASL2 `<authentication/>`.
async fn connect(s: &TestServer) -> (RawClient, Element) {
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    let f = c.expect("features").await;
    let a = f
        .get_child("authentication", SASL2)
        .unwrap_or_else(|| panic!("no SASL2: {}", xml(&f)))
        .clone();
    (c, a)
}

/// `<user-agent/>` with this client id.
fn agent(id: &str) -> String {
    format!("<user-agent id='{id}'><software>herald tests</software><device>phone</device></user-agent>")
}

/// `<authenticate/>` with PLAIN for `user`/`password` and `inline` XML.
fn plain(user: &str, password: &str, inline: &str) -> String {
    format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>{}</initial-response>{inline}</authenticate>",
        b64(format!("\0{user}\0{password}").as_bytes())
    )
}

/// Bind2 with the tag "Phone", carbons and a resumable XEP-0198.
const BIND_ALL: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>";

/// Logs in with PLAIN, a client id and Bind2 (carbons and SM on); returns the client, the
/// `<success/>` and the features after it.
async fn login_bind2(s: &TestServer, user: &str, id: &str) -> (RawClient, Element, Element) {
    let (mut c, _) = connect(s).await;
    c.send(&plain(user, "pw", &format!("{}{BIND_ALL}", agent(id))))
        .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let f = c.element().await;
    assert!(f.is("features", STREAM), "{}", xml(&f));
    (c, ok, f)
}

fn authzid(success: &Element) -> String {
    success
        .get_child("authorization-identifier", SASL2)
        .map(|a| a.text())
        .unwrap_or_default()
}

fn sm_id(success: &Element) -> String {
    let bound = success.get_child("bound", BIND2).expect("bound");
    let e = bound.get_child("enabled", SM).expect("enabled");
    assert_eq!(e.attr("resume"), Some("true"));
    e.attr("id").expect("id").to_string()
}

/// The SASL condition of a SASL2 `<failure/>`.
fn condition(failure: &Element) -> String {
    assert!(failure.is("failure", SASL2), "{}", xml(failure));
    failure
        .children()
        .find(|c| c.ns() == SASL)
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn sasl2_is_offered_next_to_legacy_sasl() {
    let s = server(|_| {}).await;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    let f = c.expect("features").await;
    assert!(f.get_child("mechanisms", SASL).is_some(), "{}", xml(&f));
    let a = f.get_child("authentication", SASL2).unwrap();
    let mechs: Vec<String> = a
        .children()
        .filter(|m| m.name() == "mechanism")
        .map(|m| m.text())
        .collect();
    // SCRAM-SHA-1 stays: @xmpp/client 0.14 logs in with it.
    assert_eq!(mechs, ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    let inline = a.get_child("inline", SASL2).unwrap();
    let bind = inline.get_child("bind", BIND2).unwrap();
    let vars: Vec<&str> = bind
        .get_child("inline", BIND2)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(
        vars,
        [CARBONS, "urn:xmpp:csi:0", SM, "urn:herald:push:inline:0"]
    );
    assert!(inline.get_child("sm", SM).is_some());
    let fast = inline.get_child("fast", FAST).unwrap();
    assert_eq!(fast.children().next().unwrap().text(), "HT-SHA-256-NONE");

    // FAST off: not offered.
    let s = server(|c| c.fast.enabled = false).await;
    let (_, a) = connect(&s).await;
    let inline = a.get_child("inline", SASL2).unwrap();
    assert!(inline.get_child("fast", FAST).is_none());
}

#[tokio::test]
async fn bind2_binds_a_resource_per_client_id_with_inline_features_and_no_legacy_binding() {
    let s = server(|_| {}).await;
    let (mut c, ok, f) = login_bind2(&s, "alice", PHONE).await;
    let jid = authzid(&ok);
    assert!(jid.starts_with("alice@localhost/Phone~"), "{jid}");
    assert!(
        !jid.contains(PHONE),
        "the client id is not disclosed: {jid}"
    );
    let bound = ok.get_child("bound", BIND2).unwrap();
    assert!(
        bound.get_child("enabled", CARBONS).is_some(),
        "{}",
        xml(&ok)
    );
    sm_id(&ok);
    // No stream restart, and nothing left to negotiate: no resource binding (XEP-0386), no
    // second <enable/> for XEP-0198.
    assert!(
        f.get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .is_none(),
        "{}",
        xml(&f)
    );
    assert!(f.get_child("sm", SM).is_none(), "{}", xml(&f));
    // The session works at once: a ping, and bob's message arrives with its full JID.
    c.sync("p1").await;
    c.send("<presence/>").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    chat(&mut b, &jid, "hello").await;
    let m = c.expect("message").await;
    assert_eq!(m.attr("to"), Some(jid.as_str()));
    // Carbons are on: bob writing alice's bare JID from another of alice's sessions is
    // copied here.
    let mut other = RawClient::login(s.c2s(), "alice", "pw", "desk").await;
    chat(&mut other, "bob@localhost", "copy").await;
    let carbon = c.expect("message").await;
    assert!(
        carbon.get_child("sent", CARBONS).is_some(),
        "{}",
        xml(&carbon)
    );

    // The same client id gets the same resource: the new login replaces the old session.
    let (_c2, ok2, _) = login_bind2(&s, "alice", PHONE).await;
    assert_eq!(authzid(&ok2), jid);
    assert_eq!(c.stream_error().await, "conflict");
    // Another client id, another resource.
    let (_c3, ok3, _) = login_bind2(&s, "alice", "another-client").await;
    assert_ne!(authzid(&ok3), jid);
}

#[tokio::test]
async fn sasl2_without_bind2_goes_on_to_legacy_binding_without_restart() {
    let s = server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    c.send(&plain("alice", "pw", "")).await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    assert_eq!(authzid(&ok), "alice@localhost");
    assert!(ok.get_child("bound", BIND2).is_none());
    let f = c.element().await;
    assert!(f.is("features", STREAM), "{}", xml(&f));
    assert!(f
        .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
        .is_some());
    let r = c.bind("legacy").await;
    assert!(xml(&r).contains("alice@localhost/legacy"), "{}", xml(&r));
}

#[tokio::test]
async fn scram_sha1_in_sasl2_checks_the_server_signature() {
    let s = server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    let mut scram = sasl::client::mechanisms::Scram::<sasl::common::scram::Sha1>::new(
        "alice",
        "pw",
        sasl::common::ChannelBinding::Unsupported,
    )
    .unwrap();
    let first = scram.initial();
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-1'><initial-response>{}</initial-response>{}{BIND_ALL}</authenticate>",
        b64(&first),
        agent(PHONE)
    ))
    .await;
    let ch = c.element().await;
    assert!(ch.is("challenge", SASL2), "{}", xml(&ch));
    let resp = scram.response(&unb64(&ch.text())).unwrap();
    c.send(&format!(
        "<response xmlns='{SASL2}'>{}</response>",
        b64(&resp)
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let data = ok
        .get_child("additional-data", SASL2)
        .expect("additional-data");
    scram
        .success(&unb64(&data.text()))
        .expect("server signature");
    assert!(authzid(&ok).starts_with("alice@localhost/Phone~"));
}

#[tokio::test]
async fn a_wrong_password_in_sasl2_fails_and_may_be_retried() {
    let s = server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    c.send(&plain(
        "alice",
        "wrong",
        &format!("{}{BIND_ALL}", agent(PHONE)),
    ))
    .await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // Unknown account: the same answer.
    c.send(&plain("nobody", "pw", "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    c.send(&plain("alice", "pw", BIND_ALL)).await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    // No client id: a random resource.
    assert!(
        authzid(&ok).starts_with("alice@localhost/herald-"),
        "{}",
        xml(&ok)
    );
    // The failure limit (3) counts SASL2 like legacy SASL.
    let (mut c, _) = connect(&s).await;
    for _ in 0..2 {
        c.send(&plain("alice", "wrong", "")).await;
        assert_eq!(condition(&c.element().await), "not-authorized");
    }
    c.send(&plain("alice", "wrong", "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    assert_eq!(c.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn an_unknown_mechanism_or_bad_base64_fails() {
    let s = server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='X-NOPE'><initial-response>AA==</initial-response></authenticate>"
    ))
    .await;
    assert_eq!(condition(&c.element().await), "invalid-mechanism");
    c.send(&format!(
        "<authenticate xmlns='{SASL2}' mechanism='PLAIN'><initial-response>!!</initial-response></authenticate>"
    ))
    .await;
    assert_eq!(condition(&c.element().await), "incorrect-encoding");
}

#[tokio::test]
async fn inline_resume_delivers_what_was_missed_right_after_success() {
    let s = server(|_| {}).await;
    let (mut c, ok, _) = login_bind2(&s, "alice", PHONE).await;
    let jid = authzid(&ok);
    let id = sm_id(&ok);
    c.send("<presence/>").await;
    // Outbound: self-presence and the ping result; inbound: presence and ping.
    c.sync("before").await;
    c.kill(true);
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    chat(&mut b, &jid, "missed-1").await;
    chat(&mut b, &jid, "missed-2").await;
    b.sync("sent").await;

    let (mut c, _) = connect(&s).await;
    c.send(&plain(
        "alice",
        "pw",
        &format!(
            "{}<resume xmlns='{SM}' previd='{id}' h='2'/>{BIND_ALL}",
            agent(PHONE)
        ),
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    assert_eq!(authzid(&ok), jid);
    let r = ok
        .get_child("resumed", SM)
        .unwrap_or_else(|| panic!("{}", xml(&ok)));
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(r.attr("h"), Some("2"));
    // Resumed: nothing is bound anew.
    assert!(ok.get_child("bound", BIND2).is_none());
    // The missed messages come right after the success, before anything else.
    let mut got = Vec::new();
    loop {
        let el = c.element().await;
        if el.is("features", STREAM) {
            break;
        }
        got.push(el);
    }
    let bodies: Vec<String> = got
        .iter()
        .filter(|m| m.name() == "message")
        .filter_map(|m| m.children().find(|c| c.name() == "body").map(|b| b.text()))
        .collect();
    assert_eq!(bodies, ["missed-1", "missed-2"], "{got:?}");
    // The session goes on (an <r/> asking whether the retransmission arrived may come
    // first: XEP-0198 §5).
    chat(&mut b, &jid, "live").await;
    let m = next_unrequested(&mut c).await;
    assert!(
        m.name() == "message" && xml(&m).contains("live"),
        "{}",
        xml(&m)
    );
}

#[tokio::test]
async fn inline_resume_of_an_unknown_session_fails_and_binds_afresh() {
    let s = server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    c.send(&plain(
        "alice",
        "pw",
        &format!(
            "{}<resume xmlns='{SM}' previd='no-such-session' h='0'/>{BIND_ALL}",
            agent(PHONE)
        ),
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let failed = ok
        .get_child("failed", SM)
        .unwrap_or_else(|| panic!("{}", xml(&ok)));
    assert!(
        failed.children().any(|c| c.name() == "item-not-found"),
        "{}",
        xml(&ok)
    );
    // XEP-0198 with XEP-0388: a fresh session is bound in the same round trip.
    let jid = authzid(&ok);
    assert!(jid.starts_with("alice@localhost/Phone~"), "{jid}");
    sm_id(&ok);
    let f = c.element().await;
    assert!(f.is("features", STREAM), "{}", xml(&f));
    c.sync("works").await;
}

// ---- XEP-0484 FAST -----------------------------------------------------------------------

/// Logs in with PLAIN asking for a token; returns the token.
async fn get_token(s: &TestServer, user: &str, id: &str) -> (RawClient, String, String) {
    let (mut c, _) = connect(s).await;
    c.send(&plain(
        user,
        "pw",
        &format!(
            "{}<request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>{BIND_ALL}",
            agent(id)
        ),
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let t = ok
        .get_child("token", FAST)
        .unwrap_or_else(|| panic!("{}", xml(&ok)));
    let token = t.attr("token").unwrap().to_string();
    let expiry = t.attr("expiry").unwrap().to_string();
    (c, token, expiry)
}

/// `<authenticate/>` with HT-SHA-256-NONE for `token`.
fn fast_auth(user: &str, id: &str, token: &str, more: &str) -> String {
    let mut msg = format!("{user}\0").into_bytes();
    msg.extend_from_slice(&ht::hmac(token.as_bytes(), b"Initiator"));
    format!(
        "<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response>{}<fast xmlns='{FAST}'/>{more}</authenticate>",
        b64(&msg),
        agent(id)
    )
}

#[tokio::test]
async fn a_fast_token_logs_in_without_the_password() {
    let s = server(|_| {}).await;
    let (c, token, expiry) = get_token(&s, "alice", PHONE).await;
    assert!(
        herald_server::xep::delay::parse_stamp(&expiry).is_some(),
        "{expiry}"
    );
    drop(c);
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, BIND_ALL)).await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    // The server proves it knows the token too.
    let data = ok.get_child("additional-data", SASL2).unwrap();
    assert_eq!(
        unb64(&data.text()),
        ht::hmac(token.as_bytes(), b"Responder")
    );
    assert!(authzid(&ok).starts_with("alice@localhost/Phone~"));
    // A fresh token: no new one unasked.
    assert!(ok.get_child("token", FAST).is_none());

    // The token is bound to its client id.
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", "another-client", &token, ""))
        .await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // … and to its account.
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("bob", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // The store keeps no token.
    let rows = s
        .running
        .shared
        .store
        .fast_tokens("alice@localhost", PHONE)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows
        .iter()
        .all(|r| r.verifier != token.as_bytes() && r.responder != token.as_bytes()));
}

#[tokio::test]
async fn rotation_keeps_the_previous_token_until_the_new_one_is_used() {
    let s = server(|_| {}).await;
    let (_c, first, _) = get_token(&s, "alice", PHONE).await;
    let (_c, second, _) = get_token(&s, "alice", PHONE).await;
    assert_ne!(first, second);
    // The client may not have received the second: the first still works.
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &first, "")).await;
    assert!(c.element().await.is("success", SASL2));
    // Using the newest retires the previous.
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &second, "")).await;
    assert!(c.element().await.is("success", SASL2));
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &first, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // invalidate: the client logs out, its token dies.
    let (mut c, _) = connect(&s).await;
    let inv = fast_auth("alice", PHONE, &second, "").replace(
        &format!("<fast xmlns='{FAST}'/>"),
        &format!("<fast xmlns='{FAST}' invalidate='true'/>"),
    );
    c.send(&inv).await;
    assert!(c.element().await.is("success", SASL2));
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &second, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
}

#[tokio::test]
async fn a_wrong_fast_token_fails_like_a_wrong_password() {
    let s = server(|_| {}).await;
    let (_c, token, _) = get_token(&s, "alice", PHONE).await;
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &format!("{token}x"), ""))
        .await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // Counted like one: the third failure ends the stream.
    c.send(&fast_auth("alice", PHONE, "guess", "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    c.send(&fast_auth("alice", PHONE, "guess2", "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    assert_eq!(c.stream_error().await, "policy-violation");
    // Without a client id there is nothing to check the token against.
    let (mut c, _) = connect(&s).await;
    let no_agent = fast_auth("alice", PHONE, &token, "").replace(&agent(PHONE), "");
    c.send(&no_agent).await;
    assert_eq!(condition(&c.element().await), "malformed-request");
    // FAST off: the mechanism is unknown.
    let s = server(|c| c.fast.enabled = false).await;
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "invalid-mechanism");
}

#[tokio::test]
async fn an_expired_fast_token_says_credentials_expired() {
    let s = server(|_| {}).await;
    let token = "expired-token";
    let now = herald_server::xep::delay::now_micros() / 1000;
    s.running
        .shared
        .store
        .issue_fast_token(
            "alice@localhost",
            &FastTokenRecord {
                client_id: PHONE.into(),
                mechanism: "HT-SHA-256-NONE".into(),
                verifier: ht::verifier(token.as_bytes()),
                responder: ht::responder(token.as_bytes()),
                issued_at: now - 20_000,
                expires_at: now - 10_000,
                current: true,
                // A token from before salts: checked by its hashed messages.
                salt: None,
            },
            16,
        )
        .unwrap();
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, token, "")).await;
    assert_eq!(condition(&c.element().await), "credentials-expired");
    // The client falls back to its password on the same stream.
    c.send(&plain("alice", "pw", "")).await;
    assert!(c.element().await.is("success", SASL2));
}

#[tokio::test]
async fn tokens_end_with_the_account_the_password_and_logout_all() {
    let s = server(|_| {}).await;
    let cfg = s.running.shared.cfg.clone();
    let store = s.running.shared.store.clone();
    let alice = herald::admin::account_jid(&cfg, "alice").unwrap();

    // A password change.
    let (_c, token, _) = get_token(&s, "alice", PHONE).await;
    // The CLI blocks on the admin socket: off the runtime the server runs on.
    let (c2, s2, a2) = (cfg.clone(), store.clone(), alice.clone());
    tokio::task::spawn_blocking(move || herald::admin::change_password(&c2, &*s2, &a2, "pw"))
        .await
        .unwrap()
        .unwrap();
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");

    // `herald user logout-all`: tokens gone, sessions ended.
    let (mut live, token, _) = get_token(&s, "alice", PHONE).await;
    let (c2, s2, a2) = (cfg.clone(), store.clone(), alice.clone());
    let (tokens, ended) =
        tokio::task::spawn_blocking(move || herald::admin::logout_all(&c2, &*s2, &a2))
            .await
            .unwrap()
            .unwrap();
    assert_eq!((tokens, ended), (1, Some(1)));
    assert_eq!(live.stream_error().await, "not-authorized");
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");

    // The account's removal.
    let (_c, token, _) = get_token(&s, "alice", PHONE).await;
    let (c2, s2, a2) = (cfg.clone(), store.clone(), alice.clone());
    tokio::task::spawn_blocking(move || herald::admin::remove_account(&c2, &*s2, &a2))
        .await
        .unwrap()
        .unwrap();
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
    // … also when an account of that name exists again.
    s.add_user("alice", "pw");
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
}

#[tokio::test]
async fn a_token_is_rotated_past_half_its_life() {
    let s = server(|_| {}).await;
    let token = "old-token";
    let now = herald_server::xep::delay::now_micros() / 1000;
    s.running
        .shared
        .store
        .issue_fast_token(
            "alice@localhost",
            &FastTokenRecord {
                client_id: PHONE.into(),
                mechanism: "HT-SHA-256-NONE".into(),
                verifier: ht::verifier(token.as_bytes()),
                responder: ht::responder(token.as_bytes()),
                issued_at: now - 100_000,
                expires_at: now + 10_000,
                current: true,
                // A token from before salts: checked by its hashed messages.
                salt: None,
            },
            16,
        )
        .unwrap();
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, token, "")).await;
    let ok = c.element().await;
    let t = ok
        .get_child("token", FAST)
        .unwrap_or_else(|| panic!("{}", xml(&ok)));
    let new = t.attr("token").unwrap().to_string();
    // The new one works and retires the old one.
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, &new, "")).await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    assert!(
        ok.get_child("token", FAST).is_none(),
        "a fresh token is not rotated"
    );
    let (mut c, _) = connect(&s).await;
    c.send(&fast_auth("alice", PHONE, token, "")).await;
    assert_eq!(condition(&c.element().await), "not-authorized");
}

// ---- Push registrations follow the client id (RULES.md §10) ---------------------------------

const PUSH_INLINE: &str = "urn:herald:push:inline:0";

/// Bind2 with the tag "Phone", XEP-0198, and (when `push`) the inline push enable to the fake
/// app server with node `n1` and publish options.
fn bind_with_push(push: bool) -> String {
    let enable = if push {
        format!(
            "<enable xmlns='{PUSH_INLINE}' jid='{APP_DOMAIN}' node='n1'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>s3</value></field></x></enable>"
        )
    } else {
        String::new()
    };
    format!(
        "<bind xmlns='{BIND2}'><tag>Phone</tag><enable xmlns='{SM}' resume='true'/>{enable}</bind>"
    )
}

async fn phone_login(s: &TestServer, push: bool) -> (RawClient, Element) {
    let (mut c, _) = connect(s).await;
    c.send(&plain(
        "alice",
        "pw",
        &format!("{}{}", agent(PHONE), bind_with_push(push)),
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let f = c.element().await;
    assert!(f.is("features", STREAM), "{}", xml(&f));
    (c, ok)
}

#[tokio::test]
async fn push_enabled_inline_follows_the_device_across_logins_by_client_id() {
    let (s, mut app) = push_server(|c| {
        c.stream_management.request_after = 100_000;
        c.stream_management.request_idle = Dur(Duration::from_secs(3600));
    })
    .await;
    // One round trip: authenticated, bound, XEP-0198 and push on.
    let (mut c, ok) = phone_login(&s, true).await;
    let bound = ok.get_child("bound", BIND2).unwrap();
    assert!(
        bound.get_child("enabled", PUSH_INLINE).is_some(),
        "{}",
        xml(&ok)
    );
    let regs = s
        .running
        .shared
        .store
        .push_registrations("alice@localhost")
        .unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].node, "n1");
    assert!(regs[0]
        .publish_options_xml
        .as_deref()
        .unwrap_or("")
        .contains("s3"));
    // The phone logs out; the registration stays, without a session.
    c.send("</stream:stream>").await;
    c.expect_closed().await;

    // It comes back with the same client id and no <enable/>: its registration is its
    // session's again, so a message it receives while connected pushes nothing (rule b is
    // for registrations without a session)…
    let (mut c, ok) = phone_login(&s, false).await;
    let jid = authzid(&ok);
    c.send("<presence/>").await;
    let mut b = RawClient::login(s.c2s(), "bob", "pw", "r").await;
    chat(&mut b, &jid, "live").await;
    let m = c.expect("message").await;
    assert!(xml(&m).contains("live"));
    // Rule b runs once the archive committed the message.
    b.sync("sent").await;
    s.running.shared.archive.flush().await;
    app.assert_quiet(&s).await;
    // …and when its connection dies with that message unacknowledged, rule a wakes it.
    c.kill(true);
    let p = app.next().await;
    assert_eq!(p.node, "n1");
    assert_eq!(p.count(), 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_bad_inline_push_enable_fails_inside_bound_and_the_login_goes_on() {
    let (s, _app) = push_server(|_| {}).await;
    let (mut c, _) = connect(&s).await;
    c.send(&plain(
        "alice",
        "pw",
        &format!(
            "{}<bind xmlns='{BIND2}'><enable xmlns='{PUSH_INLINE}' node='n'/></bind>",
            agent(PHONE)
        ),
    ))
    .await;
    let ok = c.element().await;
    assert!(ok.is("success", SASL2), "{}", xml(&ok));
    let failed = ok
        .get_child("bound", BIND2)
        .and_then(|b| b.get_child("failed", PUSH_INLINE))
        .unwrap_or_else(|| panic!("{}", xml(&ok)));
    assert!(xml(failed).contains("bad-request"), "{}", xml(failed));
    assert!(s
        .running
        .shared
        .store
        .push_registrations("alice@localhost")
        .unwrap()
        .is_empty());
    c.element().await; // features
    c.sync("works").await;
}
