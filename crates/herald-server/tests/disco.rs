//! XEP-0030 disco#info over the wire against the IQ table and the features served beyond it
//! (`beyond::SERVED`): the server's and an account's feature lists are exact, every table
//! line is served where it is registered and advertised where it says, nothing else is
//! advertised, every namespace served is announced somewhere, and what no line serves gets
//! `service-unavailable`. The server's XEP-0115 `<c/>` in the stream features hashes its
//! disco#info; its XEP-0157 contact addresses are a XEP-0128 form there.

mod common;

use std::collections::BTreeSet;

use common::*;
use herald_proto::Element;
use herald_server::features::iq::beyond::{Announced, SERVED};
use herald_server::features::iq::table::{lookup, TABLE};
use herald_server::features::iq::{features, Advertised, Disco, Handler, IqType, Target};

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// Alice (resource `r`) logged in; Bob exists.
async fn alice() -> (TestServer, RawClient) {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    (s, a)
}

/// Sends `iq` (whose id is `id`) and returns the answer, skipping anything else.
async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |el| {
        el.name() == "iq" && el.attr("id") == Some(id) && el.attr("type") != Some("set")
    })
    .await
}

/// The `to` attribute addressing `target` from Alice (none for her own account).
fn to(target: Target) -> &'static str {
    match target {
        Target::Server => " to='localhost'",
        Target::Own => "",
        Target::Other => " to='bob@localhost'",
        // The MUC lines are answered by the MUC feature (a room that does not exist is
        // item-not-found); their disco lists are checked in tests/muc.rs.
        Target::MucService => " to='conference.localhost'",
        Target::MucRoom => " to='nowhere@conference.localhost'",
    }
}

/// disco#info as `to` answers it: (identities as "category/type", features), sorted.
async fn info(c: &mut RawClient, id: &str, to: &str) -> (Vec<String>, Vec<String>) {
    let r = ask(
        c,
        id,
        &format!("<iq type='get' id='{id}'{to}><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let q = r
        .get_child("query", DISCO_INFO)
        .unwrap_or_else(|| panic!("no query: {}", xml(&r)));
    let of = |name: &str, f: &dyn Fn(&Element) -> String| {
        let mut v: Vec<String> = q.children().filter(|c| c.name() == name).map(f).collect();
        v.sort();
        v
    };
    let identities = of("identity", &|i| {
        format!(
            "{}/{}",
            i.attr("category").unwrap_or(""),
            i.attr("type").unwrap_or("")
        )
    });
    let features = of("feature", &|f| f.attr("var").unwrap_or("").to_string());
    (identities, features)
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn server_and_accounts_list_exactly_their_features() {
    let (_s, mut a) = alice().await;
    let server = info(&mut a, "s", " to='localhost'").await;
    assert_eq!(server.0, ["server/im"]);
    assert_eq!(
        server.1,
        sorted(&[
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "urn:xmpp:time",
            // XEP-0191 §2 and XEP-0280 §3: discovered on the client's server.
            "urn:xmpp:blocking",
            "urn:xmpp:carbons:2",
            // XEP-0054 §2 on the server; XEP-0049 has none, Prosody lists it there.
            "vcard-temp",
            "jabber:iq:private",
            // XEP-0160: offline storage.
            "msgoffline",
            // XEP-0077: password change and removal (registration only when enabled).
            "jabber:iq:register",
        ])
    );
    let account = sorted(&[
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        // XEP-0313 §7 and XEP-0357 §5: discovered on the account's bare JID.
        "urn:xmpp:mam:2",
        "urn:xmpp:mam:2#extended",
        "urn:xmpp:mam:1",
        // XEP-0359 §5: archived messages carry the account's stanza-id.
        "urn:xmpp:sid:0",
        "urn:xmpp:push:0",
        "tigase:push:priority:0",
        // XEP-0163: every account is a PEP service; disco#items lists its nodes.
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#auto-create",
        "http://jabber.org/protocol/pubsub#create-nodes",
        "http://jabber.org/protocol/pubsub#create-and-configure",
        "http://jabber.org/protocol/pubsub#retract-items",
        "http://jabber.org/protocol/pubsub#delete-items",
        "http://jabber.org/protocol/pubsub#persistent-items",
        "http://jabber.org/protocol/pubsub#last-published",
        "http://jabber.org/protocol/pubsub#presence-notifications",
        "http://jabber.org/protocol/pubsub#auto-subscribe",
        "http://jabber.org/protocol/pubsub#filtered-notifications",
        "http://jabber.org/protocol/pubsub#access-open",
        "http://jabber.org/protocol/pubsub#access-presence",
        "http://jabber.org/protocol/pubsub#access-roster",
        "http://jabber.org/protocol/pubsub#access-whitelist",
        "http://jabber.org/protocol/pubsub#retrieve-items",
        "http://jabber.org/protocol/pubsub#item-ids",
        "http://jabber.org/protocol/pubsub#config-node",
        "http://jabber.org/protocol/pubsub#retrieve-default",
        "http://jabber.org/protocol/pubsub#delete-nodes",
        "http://jabber.org/protocol/pubsub#purge-nodes",
        // XEP-0402 §5.3: XEP-0048 bookmarks in private storage are the PEP bookmarks.
        "urn:xmpp:bookmarks:1#compat",
        // XEP-0398 §2: PEP avatars and the vCard photo are converted.
        "urn:xmpp:pep-vcard-conversion:0",
        // XEP-0490 §4.5: MDS markers inside messages are published by the server.
        "urn:xmpp:mds:server-assist:0",
        // XEP-0411 §2: XEP-0048 bookmarks in PEP are converted too.
        "urn:xmpp:bookmarks-conversion:0",
        "urn:xmpp:bookmarks:1#compat-pep",
    ]);
    // Another account's, the own account's by bare JID and without `to`: the same list.
    for (id, to) in [
        ("o", " to='bob@localhost'"),
        ("b", " to='alice@localhost'"),
        ("n", ""),
    ] {
        let (identities, features) = info(&mut a, id, to).await;
        assert_eq!(identities, ["account/registered", "pubsub/pep"], "{to}");
        assert_eq!(features, account, "{to}");
    }
}

#[tokio::test]
async fn every_table_line_is_served_and_only_the_table_is_advertised() {
    // Every switched line on (`table::switched_on`): uploads need an HTTP listener, XEP-0215
    // a `[turn]` table. With the defaults they are off (the exact lists above).
    let s = TestServer::start_with(|c| {
        c.http.listen = Some("127.0.0.1:0".parse().unwrap());
        c.turn = Some(herald_server::config::TurnConfig {
            host: "turn.localhost".into(),
            port: 3478,
            secret: "s".into(),
            ttl: herald_server::config::Dur(std::time::Duration::from_secs(3600)),
        });
    })
    .await;
    s.add_user("alice", "pw");
    s.add_user("bob", "pw");
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let mut declared = [BTreeSet::new(), BTreeSet::new()];
    for (i, e) in TABLE.iter().enumerate() {
        // The bare payload: a handler may refuse it (bad-request), but one must answer.
        let id = format!("t{i}");
        let r = ask(
            &mut a,
            &id,
            &format!(
                "<iq type='{}' id='{id}'{}><{} xmlns='{}'/></iq>",
                e.typ.as_str(),
                to(e.target),
                e.element,
                e.ns
            ),
        )
        .await;
        assert!(
            r.attr("type") == Some("result") || !xml(&r).contains("service-unavailable"),
            "{:?} {} {} {:?} is not served: {}",
            e.typ,
            e.ns,
            e.element,
            e.target,
            xml(&r)
        );
        match e.advertised {
            Advertised::OnServer(f) => declared[0].extend(f.iter().map(|f| f.to_string())),
            Advertised::OnAccount(f) => declared[1].extend(f.iter().map(|f| f.to_string())),
            Advertised::OnMucService(_) | Advertised::OnMucRoom(_) | Advertised::Nowhere => {}
        }
    }
    for s in SERVED {
        match s.announced {
            Announced::Disco(Disco::Server) => declared[0].insert(s.var.to_string()),
            Announced::Disco(Disco::Account) => declared[1].insert(s.var.to_string()),
            // The MUC service and rooms list what herald-muc serves (tests/muc.rs).
            Announced::Disco(Disco::MucService | Disco::MucRoom) => false,
            Announced::StreamFeature => false,
        };
    }
    for (disco, to, declared) in [
        (Disco::Server, " to='localhost'", &declared[0]),
        (Disco::Account, " to='bob@localhost'", &declared[1]),
    ] {
        let (_, listed) = info(&mut a, "d", to).await;
        let listed: BTreeSet<String> = listed.into_iter().collect();
        assert_eq!(&listed, declared, "{disco:?}: advertised vs registered");
    }
}

#[tokio::test]
async fn what_no_line_serves_is_service_unavailable() {
    let (_s, mut a) = alice().await;
    for (i, iq) in [
        // An unknown namespace, to each target.
        "<iq type='get'{to}><q xmlns='urn:example:unknown'/></iq>",
        // A served namespace with the wrong type or element.
        "<iq type='set' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='get' to='localhost'><query xmlns='jabber:iq:roster'/></iq>",
        "<iq type='get'><query xmlns='jabber:iq:version'/></iq>",
        "<iq type='get'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        "<iq type='set'><private xmlns='urn:xmpp:carbons:2'/></iq>",
        "<iq type='get'><block xmlns='urn:xmpp:blocking'/></iq>",
        "<iq type='set'><metadata xmlns='urn:xmpp:mam:2'/></iq>",
        // Served on the own account only.
        "<iq type='get' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='get' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>",
        // No nodes are served.
        "<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
    ]
    .iter()
    .flat_map(|iq| {
        [" to='localhost'", " to='bob@localhost'", ""]
            .iter()
            .map(move |to| iq.replace("{to}", to))
    })
    .collect::<BTreeSet<_>>()
    .into_iter()
    .enumerate()
    {
        let id = format!("u{i}");
        let r = ask(&mut a, &id, &iq.replacen("<iq ", &format!("<iq id='{id}' "), 1)).await;
        assert_eq!(r.attr("type"), Some("error"), "{iq}: {}", xml(&r));
        assert!(xml(&r).contains("service-unavailable"), "{iq}: {}", xml(&r));
    }
}

#[tokio::test]
async fn the_server_tells_its_time_in_utc() {
    let (_s, mut a) = alice().await;
    let before = herald_xep::delay::now_micros();
    let r = ask(
        &mut a,
        "time",
        "<iq type='get' id='time' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
    )
    .await;
    let after = herald_xep::delay::now_micros();
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let time = r
        .get_child("time", "urn:xmpp:time")
        .expect("a <time/> payload");
    let tzo = time.get_child("tzo", "urn:xmpp:time").map(|e| e.text());
    assert_eq!(tzo.as_deref(), Some("+00:00"));
    let utc = time
        .get_child("utc", "urn:xmpp:time")
        .map(|e| e.text())
        .unwrap_or_default();
    assert!(utc.ends_with('Z'), "{utc}");
    let at = herald_xep::delay::parse_stamp(&utc).expect("an XEP-0082 DateTime");
    assert!(
        (before..=after).contains(&at),
        "{utc} not between the ask and the answer"
    );
}

// The table's own invariants, without a server.

#[test]
fn no_key_is_registered_twice() {
    for (i, a) in TABLE.iter().enumerate() {
        for b in &TABLE[i + 1..] {
            assert!(
                (a.typ, a.ns, a.element, a.target) != (b.typ, b.ns, b.element, b.target),
                "{:?} {} {} {:?} registered twice",
                a.typ,
                a.ns,
                a.element,
                a.target
            );
        }
    }
}

#[test]
fn session_handlers_serve_only_the_own_account() {
    for e in TABLE {
        if matches!(e.handler, Handler::WithSession(_)) {
            assert_eq!(
                e.target,
                Target::Own,
                "{} {}: no session for this target",
                e.ns,
                e.element
            );
        }
    }
}

#[test]
fn accounts_advertise_the_priority_hint_notifications_carry() {
    // herald-push builds the element with the same constant (herald_proto::ns).
    assert!(features(Disco::Account).contains(&herald_proto::ns::PUSH_PRIORITY));
}

#[test]
fn lookup_matches_type_namespace_element_and_target() {
    use herald_proto::ns;
    let ping = Element::bare("ping", ns::PING);
    assert!(lookup(IqType::Get, &ping, Target::Server).is_some());
    assert!(lookup(IqType::Get, &ping, Target::Own).is_some());
    assert!(lookup(IqType::Set, &ping, Target::Server).is_none());
    assert!(lookup(IqType::Get, &ping, Target::Other).is_none());
    assert!(lookup(
        IqType::Get,
        &Element::bare("pong", ns::PING),
        Target::Server
    )
    .is_none());
    assert!(lookup(
        IqType::Get,
        &Element::bare("ping", ns::VERSION),
        Target::Server
    )
    .is_none());
}

/// Namespaces served by table lines that are announced in no disco#info: core RFC 6120/6121
/// protocol every server has (the roster's versioning is a stream feature, in `SERVED`).
const CORE: &[&str] = &["urn:ietf:params:xml:ns:xmpp-session", "jabber:iq:roster"];

#[test]
fn every_namespace_served_is_announced_and_every_announcement_has_a_module() {
    let announced: BTreeSet<&str> = features(Disco::Server)
        .into_iter()
        .chain(features(Disco::Account))
        .chain(features(Disco::MucService))
        .chain(features(Disco::MucRoom))
        .chain(
            SERVED
                .iter()
                .filter(|s| s.announced == Announced::StreamFeature)
                .map(|s| s.var),
        )
        .collect();
    // XEP-0060 announces its namespaces by their `#feature`s (`…/pubsub#publish`); a room
    // announces the admin and owner use cases by `http://jabber.org/protocol/muc`, which
    // herald-muc adds to every room's features (tests/muc.rs checks them).
    let by_feature = |ns: &str| {
        let base = ns.split('#').next().unwrap_or(ns);
        base == herald_proto::ns::MUC
            || announced
                .iter()
                .any(|a| a.starts_with(&format!("{base}#")) || *a == base)
    };
    for e in TABLE {
        assert!(
            announced.contains(e.ns) || CORE.contains(&e.ns) || by_feature(e.ns),
            "{} {} is served but announced nowhere",
            e.ns,
            e.element
        );
        if CORE.contains(&e.ns) {
            assert!(matches!(e.advertised, Advertised::Nowhere), "{}", e.ns);
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for s in SERVED {
        let text = std::fs::read_to_string(src.join(s.module))
            .unwrap_or_else(|e| panic!("{}: module {} not found: {e}", s.var, s.module));
        assert!(!text.is_empty(), "{}", s.module);
    }
    // Each feature once, whatever lists it.
    for (i, a) in SERVED.iter().enumerate() {
        assert!(SERVED[i + 1..].iter().all(|b| b.var != a.var), "{}", a.var);
        assert!(
            TABLE
                .iter()
                .all(|e| !e.features_on(Disco::Server).contains(&a.var)
                    && !e.features_on(Disco::Account).contains(&a.var)),
            "{} is both a table feature and served beyond it",
            a.var
        );
    }
}

#[tokio::test]
async fn stream_features_after_login_are_those_announced() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let (_c, f) = RawClient::authenticate(s.c2s(), "alice", "pw").await;
    let got: BTreeSet<String> = f.children().map(|c| c.ns()).collect();
    let mut want: BTreeSet<String> = SERVED
        .iter()
        .filter(|s| s.announced == Announced::StreamFeature)
        .map(|s| s.var.to_string())
        .collect();
    // RFC 6120 §7 and RFC 3921 §3: binding and the legacy session, before any feature.
    want.insert("urn:ietf:params:xml:ns:xmpp-bind".into());
    want.insert("urn:ietf:params:xml:ns:xmpp-session".into());
    assert_eq!(got, want, "{}", xml(&f));
}

/// The `<c/>` of the post-login stream features.
async fn caps_of(s: &TestServer) -> Element {
    let (_c, f) = RawClient::authenticate(s.c2s(), "alice", "pw").await;
    f.get_child("c", "http://jabber.org/protocol/caps")
        .unwrap_or_else(|| panic!("no caps: {}", xml(&f)))
        .clone()
}

/// The server's disco#info `<query/>` as Alice gets it.
async fn server_query(s: &TestServer) -> Element {
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "q").await;
    let r = ask(
        &mut a,
        "si",
        &format!("<iq type='get' id='si' to='localhost'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    r.get_child("query", DISCO_INFO)
        .unwrap_or_else(|| panic!("no query: {}", xml(&r)))
        .clone()
}

#[tokio::test]
async fn caps_in_stream_features_hash_the_disco_info_served() {
    for contact in [false, true] {
        let s = TestServer::start_with(|c| {
            if contact {
                c.contact.abuse = vec!["mailto:abuse@localhost".into()];
            }
        })
        .await;
        s.add_user("alice", "pw");
        let c = caps_of(&s).await;
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert!(c.attr("node").is_some_and(|n| !n.is_empty()));
        let q = server_query(&s).await;
        // XEP-0115 §5.4: what a client recomputes from the answer it got.
        let ver = herald_xep::caps::ver_of_info(&q).expect("a hashable disco#info");
        assert_eq!(c.attr("ver"), Some(ver.as_str()), "contact form: {contact}");
        // XEP-0115 §6.2: what a client asks to verify the hash, `node#ver`, answers the same.
        let node = format!("{}#{ver}", c.attr("node").unwrap_or(""));
        let mut a = RawClient::login(s.c2s(), "alice", "pw", "n").await;
        let r = ask(
            &mut a,
            "cn",
            &format!(
                "<iq type='get' id='cn' to='localhost'><query xmlns='{DISCO_INFO}' node='{node}'/></iq>"
            ),
        )
        .await;
        let got = r
            .get_child("query", DISCO_INFO)
            .unwrap_or_else(|| panic!("no query: {}", xml(&r)));
        assert_eq!(got.attr("node"), Some(node.as_str()));
        assert_eq!(herald_xep::caps::ver_of_info(got).as_ref(), Ok(&ver));
        // Another ver is not served.
        let r = ask(
            &mut a,
            "cx",
            &format!(
                "<iq type='get' id='cx' to='localhost'><query xmlns='{DISCO_INFO}' node='{}#AAAA'/></iq>",
                c.attr("node").unwrap_or("")
            ),
        )
        .await;
        assert!(xml(&r).contains("service-unavailable"), "{}", xml(&r));
    }
}

#[tokio::test]
async fn contact_addresses_are_a_serverinfo_form_only_when_configured() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw");
    let q = server_query(&s).await;
    assert!(
        q.get_child("x", "jabber:x:data").is_none(),
        "no [contact]: no form: {}",
        xml(&q)
    );
    let s = TestServer::start_with(|c| {
        c.contact.abuse = vec![
            "mailto:abuse@localhost".into(),
            "xmpp:abuse@localhost".into(),
        ];
        c.contact.security = vec!["https://localhost/security".into()];
    })
    .await;
    s.add_user("alice", "pw");
    let q = server_query(&s).await;
    let forms: Vec<&Element> = q
        .children()
        .filter(|c| c.is("x", "jabber:x:data"))
        .collect();
    assert_eq!(forms.len(), 1, "{}", xml(&q));
    assert_eq!(forms[0].attr("type"), Some("result"));
    let fields: Vec<(String, Option<String>, Vec<String>)> = forms[0]
        .children()
        .filter(|f| f.name() == "field")
        .map(|f| {
            (
                f.attr("var").unwrap_or("").to_string(),
                f.attr("type").map(str::to_string),
                f.children().map(|v| v.text()).collect(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            (
                "FORM_TYPE".to_string(),
                Some("hidden".to_string()),
                vec!["http://jabber.org/network/serverinfo".to_string()]
            ),
            (
                "abuse-addresses".into(),
                None,
                vec![
                    "mailto:abuse@localhost".into(),
                    "xmpp:abuse@localhost".into()
                ]
            ),
            (
                "security-addresses".into(),
                None,
                vec!["https://localhost/security".into()]
            ),
        ]
    );
}
