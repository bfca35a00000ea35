//! XEP-0077 in-band registration over the wire: a logged-in account changes its password
//! (other sessions end, the old password stops working) and removes itself (its data goes,
//! every session ends); before login, registration is off by default (no stream feature,
//! `service-unavailable`), and when on it creates accounts with the XEP's errors, at most
//! `max_per_ip` per address, and with XEP-0401/XEP-0445 invite tokens when invite-only.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use herald_proto::Element;
use herald_store::Invite;

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const REGISTER: &str = "jabber:iq:register";

/// Whether `user`/`password` authenticates with PLAIN (a fresh connection).
async fn can_log_in(addr: SocketAddr, user: &str, password: &str) -> bool {
    let mut c = RawClient::connect(addr).await;
    c.open("localhost").await;
    c.expect("features").await;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    let r = c.element().await;
    match r.name() {
        "success" => true,
        "failure" => false,
        _ => panic!("unexpected answer to auth: {}", xml(&r)),
    }
}

/// The answer to IQ `id`, skipping anything else.
async fn answer(c: &mut RawClient, id: &str) -> Element {
    loop {
        let el = c.element().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return el;
        }
    }
}

/// The (type, condition) of an error IQ; ("result", "") for a result.
fn outcome(r: &Element) -> (String, String) {
    let typ = r.attr("type").unwrap_or("").to_string();
    if typ == "result" {
        return (typ, String::new());
    }
    let e = child(r, "error").unwrap_or_else(|| panic!("no error: {}", xml(r)));
    let cond = e
        .children()
        .find(|c| c.has_ns(STANZAS) && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    (e.attr("type").unwrap_or("").to_string(), cond)
}

/// The stream error (condition, text) a client gets, skipping what comes before.
async fn stream_error(c: &mut RawClient) -> (String, String) {
    loop {
        let el = c.element().await;
        if el.name() != "error" || !el.children().any(|x| x.has_ns(STREAMS)) {
            continue;
        }
        let cond = el
            .children()
            .find(|x| x.has_ns(STREAMS) && x.name() != "text")
            .map(|x| x.name().to_string())
            .unwrap_or_default();
        let text = el
            .get_child("text", STREAMS)
            .map(|t| t.text())
            .unwrap_or_default();
        return (cond, text);
    }
}

fn set_credentials(id: &str, user: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{REGISTER}'><username>{user}</username><password>{password}</password></query></iq>"
    )
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_the_old_password() {
    let s = TestServer::start().await;
    s.add_user("alice", "old-pw");
    let mut phone = RawClient::login(s.c2s(), "alice", "old-pw", "phone").await;
    let mut desk = RawClient::login(s.c2s(), "alice", "old-pw", "desk").await;

    // XEP-0077 §3.1 example 4: a logged-in account is told it is registered.
    desk.send(&format!(
        "<iq type='get' id='g'><query xmlns='{REGISTER}'/></iq>"
    ))
    .await;
    let r = answer(&mut desk, "g").await;
    let q = r.get_child("query", REGISTER).expect("a query");
    assert!(q.get_child("registered", REGISTER).is_some(), "{}", xml(&r));
    assert_eq!(
        q.get_child("username", REGISTER).map(|u| u.text()),
        Some("alice".into())
    );

    // Another account's name, an empty password: refused, nothing changed.
    desk.send(&set_credentials("x1", "bob", "new-pw")).await;
    assert_eq!(
        outcome(&answer(&mut desk, "x1").await),
        ("modify".into(), "bad-request".into())
    );
    desk.send(&set_credentials("x2", "alice", "")).await;
    assert_eq!(
        outcome(&answer(&mut desk, "x2").await),
        ("modify".into(), "not-acceptable".into())
    );
    desk.send(&format!(
        "<iq type='set' id='x3'><query xmlns='{REGISTER}'><password>p</password></query></iq>"
    ))
    .await;
    assert_eq!(
        outcome(&answer(&mut desk, "x3").await),
        ("modify".into(), "bad-request".into())
    );
    assert!(can_log_in(s.c2s(), "alice", "old-pw").await);

    // The name as the user typed it is prepared before comparing.
    desk.send(&set_credentials("c", "Alice", "new-pw")).await;
    assert_eq!(outcome(&answer(&mut desk, "c").await).0, "result");
    assert_eq!(
        stream_error(&mut phone).await,
        ("not-authorized".into(), "password changed".into())
    );
    phone.expect_closed().await;
    // The session that changed it goes on.
    desk.sync("still-here").await;
    assert!(!can_log_in(s.c2s(), "alice", "old-pw").await);
    assert!(can_log_in(s.c2s(), "alice", "new-pw").await);
}

#[tokio::test]
async fn removing_ones_account_deletes_it_and_ends_every_session() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let shared = s.running.shared.clone();
    let mut bob = login_available(&s, "bob").await;
    let mut phone = RawClient::login(s.c2s(), "alice", "pw", "phone").await;
    let mut desk = RawClient::login(s.c2s(), "alice", "pw", "desk").await;
    // Something of Alice's in the store: a roster item.
    desk.send(
        "<iq type='set' id='ri'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>",
    )
    .await;
    assert_eq!(outcome(&answer(&mut desk, "ri").await).0, "result");

    desk.send(&format!(
        "<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>"
    ))
    .await;
    // XEP-0077 §3.2: the result, then the stream ends with not-authorized.
    assert_eq!(outcome(&answer(&mut desk, "rm").await).0, "result");
    assert_eq!(stream_error(&mut desk).await.0, "not-authorized");
    desk.expect_closed().await;
    assert_eq!(
        stream_error(&mut phone).await,
        ("not-authorized".into(), "account removed".into())
    );
    phone.expect_closed().await;

    wait_until("the account is deleted", || {
        !shared.store.account_exists("alice@localhost").unwrap()
    })
    .await;
    assert!(shared.store.roster("alice@localhost").unwrap().1.is_empty());
    assert!(!can_log_in(s.c2s(), "alice", "pw").await);
    // RFC 6121 §8.5.1: a message to a JID with no account.
    chat(&mut bob, "alice@localhost", "hello").await;
    let m = bob.expect("message").await;
    assert_eq!(m.attr("type"), Some("error"), "{}", xml(&m));
    assert!(xml(&m).contains("service-unavailable"), "{}", xml(&m));
}

/// A fresh stream's pre-authentication features.
async fn preauth_stream(addr: SocketAddr, from: Option<IpAddr>) -> (RawClient, Element) {
    let mut c = match from {
        Some(ip) => RawClient::connect_from(addr, ip).await,
        None => RawClient::connect(addr).await,
    };
    c.open("localhost").await;
    let f = c.expect("features").await;
    (c, f)
}

/// Registers `user`/`password` on a fresh stream from `from`; the answer's (type, condition).
async fn register_from(
    s: &TestServer,
    from: Option<IpAddr>,
    token: Option<&str>,
    user: &str,
    password: &str,
) -> (String, String) {
    let (mut c, _) = preauth_stream(s.c2s(), from).await;
    if let Some(t) = token {
        c.send(&format!(
            "<iq type='set' id='pa' to='localhost'><preauth xmlns='urn:xmpp:pars:0' token='{t}'/></iq>"
        ))
        .await;
        let r = answer(&mut c, "pa").await;
        if r.attr("type") != Some("result") {
            return outcome(&r);
        }
    }
    c.send(&set_credentials("reg", user, password)).await;
    outcome(&answer(&mut c, "reg").await)
}

fn has_register_feature(f: &Element) -> bool {
    f.get_child("register", "http://jabber.org/features/iq-register")
        .is_some()
}

#[tokio::test]
async fn registration_is_off_by_default() {
    let s = TestServer::start().await;
    let (mut c, f) = preauth_stream(s.c2s(), None).await;
    assert!(!has_register_feature(&f), "{}", xml(&f));
    assert!(
        f.get_child("register", "urn:xmpp:ibr-token:0").is_none(),
        "{}",
        xml(&f)
    );
    // XEP-0077 §3.1: a host without in-band registration answers service-unavailable.
    c.send(&format!(
        "<iq type='get' id='g'><query xmlns='{REGISTER}'/></iq>"
    ))
    .await;
    assert_eq!(
        outcome(&answer(&mut c, "g").await),
        ("cancel".into(), "service-unavailable".into())
    );
    c.send(&set_credentials("s", "mallory", "pw")).await;
    assert_eq!(outcome(&answer(&mut c, "s").await).1, "service-unavailable");
    assert!(!s
        .running
        .shared
        .store
        .account_exists("mallory@localhost")
        .unwrap());
}

#[tokio::test]
async fn registration_creates_accounts_with_the_xeps_errors() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.max_per_ip = 100;
        c.registration.max_username_chars = 10;
    })
    .await;
    let (mut c, f) = preauth_stream(s.c2s(), None).await;
    assert!(has_register_feature(&f), "{}", xml(&f));
    c.send(&format!(
        "<iq type='get' id='g'><query xmlns='{REGISTER}'/></iq>"
    ))
    .await;
    let r = answer(&mut c, "g").await;
    let q = r.get_child("query", REGISTER).expect("the form");
    for field in ["instructions", "username", "password"] {
        assert!(
            q.get_child(field, REGISTER).is_some(),
            "{field}: {}",
            xml(&r)
        );
    }
    // Registered on this stream, then logged in on it (XEP-0077 §3.1 then SASL).
    c.send(&set_credentials("r", "Newbie", "pw1")).await;
    assert_eq!(outcome(&answer(&mut c, "r").await).0, "result");
    let creds = base64::engine::general_purpose::STANDARD.encode("\0newbie\0pw1");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    assert_eq!(c.element().await.name(), "success");

    assert_eq!(
        register_from(&s, None, None, "newbie", "other").await,
        ("cancel".into(), "conflict".into())
    );
    for bad in ["", "a@b", "a b", "x/y", "elevenchars"] {
        assert_eq!(
            register_from(&s, None, None, bad, "pw").await,
            ("modify".into(), "not-acceptable".into()),
            "{bad:?}"
        );
    }
    assert_eq!(
        register_from(&s, None, None, "nopass", "").await,
        ("modify".into(), "not-acceptable".into())
    );
    assert!(can_log_in(s.c2s(), "newbie", "pw1").await);
    assert!(!can_log_in(s.c2s(), "newbie", "other").await);
}

#[tokio::test]
async fn registrations_per_address_are_limited_and_other_addresses_unaffected() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.max_per_ip = 2;
    })
    .await;
    let here = Some(IpAddr::from([127, 0, 0, 1]));
    let there = Some(IpAddr::from([127, 0, 0, 2]));
    assert_eq!(register_from(&s, here, None, "u1", "pw").await.0, "result");
    assert_eq!(register_from(&s, here, None, "u2", "pw").await.0, "result");
    assert_eq!(
        register_from(&s, here, None, "u3", "pw").await,
        ("wait".into(), "resource-constraint".into())
    );
    assert!(!s
        .running
        .shared
        .store
        .account_exists("u3@localhost")
        .unwrap());
    assert_eq!(register_from(&s, there, None, "u3", "pw").await.0, "result");
    // Failed attempts do not count: a conflict from elsewhere leaves its budget whole.
    assert_eq!(
        register_from(&s, there, None, "u1", "pw").await.1,
        "conflict"
    );
    assert_eq!(register_from(&s, there, None, "u4", "pw").await.0, "result");
}

/// Stores an invite with `token` the way `herald invite create` does.
fn invite(
    s: &TestServer,
    id: &str,
    token: &str,
    for_user: Option<&str>,
    expires: Option<i64>,
    uses: u32,
) {
    let inv = Invite {
        id: id.into(),
        for_user: for_user.map(str::to_string),
        created: herald_server::features::register::now_millis(),
        expires,
        uses_left: uses,
    };
    s.running
        .shared
        .store
        .create_invite(
            &herald_xep::register::token_hash(token),
            &inv,
            100,
            herald_server::features::register::now_millis(),
        )
        .unwrap();
}

#[tokio::test]
async fn invite_only_registration_needs_a_valid_token() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.invite_only = true;
        c.registration.max_per_ip = 100;
    })
    .await;
    let now = herald_server::features::register::now_millis();
    invite(&s, "twice", "tok-twice", None, None, 2);
    invite(&s, "old", "tok-old", None, Some(now - 1), 5);
    invite(&s, "named", "tok-named", Some("dave@localhost"), None, 1);

    let (_, f) = preauth_stream(s.c2s(), None).await;
    assert!(has_register_feature(&f), "{}", xml(&f));
    assert!(
        f.get_child("register", "urn:xmpp:ibr-token:0").is_some(),
        "XEP-0445 feature: {}",
        xml(&f)
    );
    // No token, a forged one, an expired one.
    assert_eq!(
        register_from(&s, None, None, "mallory", "pw").await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        register_from(&s, None, Some("forged"), "mallory", "pw").await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        register_from(&s, None, Some("tok-old"), "mallory", "pw").await,
        ("auth".into(), "forbidden".into())
    );
    // A valid token, twice; then it is used up.
    assert_eq!(
        register_from(&s, None, Some("tok-twice"), "carol", "pw")
            .await
            .0,
        "result"
    );
    assert_eq!(
        register_from(&s, None, Some("tok-twice"), "erin", "pw")
            .await
            .0,
        "result"
    );
    assert_eq!(
        register_from(&s, None, Some("tok-twice"), "frank", "pw").await,
        ("auth".into(), "forbidden".into())
    );
    // An invite for one name registers only that name.
    assert_eq!(
        register_from(&s, None, Some("tok-named"), "mallory", "pw").await,
        ("auth".into(), "forbidden".into())
    );
    assert_eq!(
        register_from(&s, None, Some("tok-named"), "dave", "pw")
            .await
            .0,
        "result"
    );
    for u in ["carol", "erin", "dave"] {
        assert!(can_log_in(s.c2s(), u, "pw").await, "{u}");
    }
    let store = &s.running.shared.store;
    for u in ["mallory", "frank"] {
        assert!(
            !store.account_exists(&format!("{u}@localhost")).unwrap(),
            "{u}"
        );
    }
}

#[tokio::test]
async fn one_token_registers_one_account_per_stream() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.invite_only = true;
        c.registration.max_per_ip = 100;
    })
    .await;
    invite(&s, "many", "tok-many", None, None, 10);
    let (mut c, _) = preauth_stream(s.c2s(), None).await;
    c.send("<iq type='set' id='pa'><preauth xmlns='urn:xmpp:pars:0' token='tok-many'/></iq>")
        .await;
    assert_eq!(outcome(&answer(&mut c, "pa").await).0, "result");
    c.send(&set_credentials("a", "gina", "pw")).await;
    assert_eq!(outcome(&answer(&mut c, "a").await).0, "result");
    c.send(&set_credentials("b", "hank", "pw")).await;
    assert_eq!(outcome(&answer(&mut c, "b").await).1, "forbidden");
}

#[tokio::test]
async fn a_name_registered_again_after_its_removal_is_a_new_empty_account() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.max_per_ip = 100;
    })
    .await;
    let shared = s.running.shared.clone();
    assert_eq!(
        register_from(&s, None, None, "olga", "pw1").await.0,
        "result"
    );
    let mut o = RawClient::login(s.c2s(), "olga", "pw1", "r").await;
    o.send(
        "<iq type='set' id='ri'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>",
    )
    .await;
    assert_eq!(outcome(&answer(&mut o, "ri").await).0, "result");
    o.send(&format!(
        "<iq type='set' id='rm'><query xmlns='{REGISTER}'><remove/></query></iq>"
    ))
    .await;
    assert_eq!(outcome(&answer(&mut o, "rm").await).0, "result");
    assert_eq!(stream_error(&mut o).await.0, "not-authorized");
    wait_until("the account is deleted", || {
        !shared.store.account_exists("olga@localhost").unwrap()
    })
    .await;

    assert_eq!(
        register_from(&s, None, None, "olga", "pw2").await.0,
        "result"
    );
    assert!(!can_log_in(s.c2s(), "olga", "pw1").await);
    let mut o = RawClient::login(s.c2s(), "olga", "pw2", "r").await;
    o.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let r = answer(&mut o, "r").await;
    let q = r.get_child("query", "jabber:iq:roster").expect("a roster");
    assert_eq!(
        q.children().count(),
        0,
        "the old roster is gone: {}",
        xml(&r)
    );
    // Messages reach the new account (the removal's mark is cleared).
    o.send("<presence/>").await;
    o.sync("up").await;
    s.add_user("bob", "pw");
    let mut bob = login_available(&s, "bob").await;
    chat(&mut bob, "olga@localhost", "welcome back").await;
    let m = o.expect("message").await;
    assert_eq!(m.attr("id"), Some("welcome back"), "{}", xml(&m));
}

#[tokio::test]
async fn registration_requests_per_stream_are_bounded() {
    for enabled in [true, false] {
        let s = TestServer::start_with(|c| {
            c.registration.enabled = enabled;
            c.registration.max_requests_per_stream = 2;
        })
        .await;
        let (mut c, _) = preauth_stream(s.c2s(), None).await;
        for id in ["g1", "g2"] {
            c.send(&format!(
                "<iq type='get' id='{id}'><query xmlns='{REGISTER}'/></iq>"
            ))
            .await;
            answer(&mut c, id).await;
        }
        c.send(&format!(
            "<iq type='get' id='g3'><query xmlns='{REGISTER}'/></iq>"
        ))
        .await;
        assert_eq!(
            c.stream_error().await,
            "policy-violation",
            "enabled: {enabled}"
        );
    }
}

#[tokio::test]
async fn password_change_and_removal_addressed_to_the_server_are_the_accounts_own() {
    // XEP-0077 §3.3's example addresses a password change to the server's domain.
    let s = TestServer::start().await;
    s.add_user("alice", "old-pw");
    let mut a = RawClient::login(s.c2s(), "alice", "old-pw", "r").await;
    a.send(&format!(
        "<iq type='get' id='g' to='localhost'><query xmlns='{REGISTER}'/></iq>"
    ))
    .await;
    let r = answer(&mut a, "g").await;
    assert!(
        r.get_child("query", REGISTER)
            .and_then(|q| q.get_child("registered", REGISTER))
            .is_some(),
        "{}",
        xml(&r)
    );
    assert_eq!(r.attr("from"), Some("localhost"), "{}", xml(&r));
    a.send(&set_credentials("c", "alice", "new-pw").replacen("<iq ", "<iq to='localhost' ", 1))
        .await;
    assert_eq!(outcome(&answer(&mut a, "c").await).0, "result");
    assert!(can_log_in(s.c2s(), "alice", "new-pw").await);
    a.send(&format!(
        "<iq type='set' id='rm' to='localhost'><query xmlns='{REGISTER}'><remove/></query></iq>"
    ))
    .await;
    assert_eq!(outcome(&answer(&mut a, "rm").await).0, "result");
    assert_eq!(stream_error(&mut a).await.0, "not-authorized");
    let shared = s.running.shared.clone();
    wait_until("the account is deleted", || {
        !shared.store.account_exists("alice@localhost").unwrap()
    })
    .await;
    // Another account's JID is not the server: nobody answers for Bob.
    s.add_user("bob", "pw");
    s.add_user("carol", "pw");
    let mut c = RawClient::login(s.c2s(), "carol", "pw", "r").await;
    c.send(&set_credentials("x", "bob", "evil").replacen("<iq ", "<iq to='bob@localhost' ", 1))
        .await;
    assert_eq!(outcome(&answer(&mut c, "x").await).1, "service-unavailable");
    assert!(can_log_in(s.c2s(), "bob", "pw").await);
}

#[tokio::test]
async fn a_busy_store_answers_resource_constraint_wait_and_creates_nothing() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.max_per_ip = 100;
        // `[store] busy_timeout`, shortened from its 5 s so the wait below is short.
        c.store.busy_timeout = herald_config::Dur(Duration::from_millis(300));
    })
    .await;
    // Once what the server writes at start is written (an account created)…
    assert_eq!(
        register_from(&s, None, None, "early", "pw").await.0,
        "result"
    );
    // …another process holds the database's write lock past the server's busy timeout:
    // a transient failure, which the client may retry (RFC 6120 §8.3.3.18).
    let path = s.dir.path().join("data").join("herald.sqlite3");
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert_eq!(
        register_from(&s, None, None, "patient", "pw").await,
        ("wait".into(), "resource-constraint".into())
    );
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(!s
        .running
        .shared
        .store
        .account_exists("patient@localhost")
        .unwrap());
    // The same request once the lock is gone.
    assert_eq!(
        register_from(&s, None, None, "patient", "pw").await.0,
        "result"
    );
    assert!(can_log_in(s.c2s(), "patient", "pw").await);
}
