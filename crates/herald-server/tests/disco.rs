//! XEP-0030 disco#info over the wire against the IQ table: the server's and an account's
//! feature lists are exact, every table line is served where it is registered and
//! advertised where it says, nothing else is advertised, and what no line serves gets
//! `service-unavailable`.

mod common;

use std::collections::BTreeSet;

use common::*;
use herald_proto::Element;
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
        ])
    );
    let account = sorted(&[
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        // XEP-0313 §7 and XEP-0357 §5: discovered on the account's bare JID.
        "urn:xmpp:mam:2",
        "urn:xmpp:mam:1",
        "urn:xmpp:push:0",
        "tigase:push:priority:0",
    ]);
    // Another account's, the own account's by bare JID and without `to`: the same list.
    for (id, to) in [
        ("o", " to='bob@localhost'"),
        ("b", " to='alice@localhost'"),
        ("n", ""),
    ] {
        let (identities, features) = info(&mut a, id, to).await;
        assert_eq!(identities, ["account/registered"], "{to}");
        assert_eq!(features, account, "{to}");
    }
}

#[tokio::test]
async fn every_table_line_is_served_and_only_the_table_is_advertised() {
    let (_s, mut a) = alice().await;
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
