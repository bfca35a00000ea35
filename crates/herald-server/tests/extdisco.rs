//! XEP-0215 External Service Discovery: what a client is told, and that a real coturn
//! (`turnserver` with `use-auth-secret`, started here on loopback) accepts the TURN
//! credentials Herald hands out and refuses expired or forged ones. Without coturn installed
//! the coturn test says it skipped (`.ci/run` installs it).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use herald_proto::Element;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const EXTDISCO: &str = "urn:xmpp:extdisco:2";
const SECRET: &str = "turn-s3cret";

async fn server(turn_port: Option<u16>) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.turn = turn_port.map(|port| herald_server::config::TurnConfig {
            host: "127.0.0.1".into(),
            port,
            secret: SECRET.into(),
            ttl: herald_server::config::Dur(Duration::from_secs(3600)),
        })
    })
    .await;
    s.add_user("alice", "pw");
    s
}

async fn ask(c: &mut RawClient, id: &str, iq: &str) -> Element {
    c.send(iq).await;
    c.wait_for(&format!("the answer to {id}"), |el| {
        el.name() == "iq" && el.attr("id") == Some(id)
    })
    .await
}

async fn services(c: &mut RawClient, payload: &str) -> Element {
    ask(
        c,
        "x",
        &format!("<iq type='get' id='x' to='localhost'>{payload}</iq>"),
    )
    .await
}

fn entries(r: &Element) -> Vec<Element> {
    r.children()
        .next()
        .map(|p| p.children().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn turn_services_are_offered_only_when_configured() {
    // No [turn]: not in disco, and the request is service-unavailable.
    let s = server(None).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = ask(&mut a, "d", "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(!xml(&r).contains(EXTDISCO));
    let r = services(&mut a, &format!("<services xmlns='{EXTDISCO}'/>")).await;
    assert!(xml(&r).contains("service-unavailable"), "{}", xml(&r));

    let s = server(Some(3478)).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = ask(&mut a, "d", "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(xml(&r).contains(EXTDISCO), "{}", xml(&r));
    let before = herald_server::http::upload::unix_now();
    let r = services(&mut a, &format!("<services xmlns='{EXTDISCO}'/>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let e = entries(&r);
    let kinds: Vec<(&str, &str)> = e
        .iter()
        .map(|s| (s.attr("type").unwrap(), s.attr("transport").unwrap()))
        .collect();
    assert_eq!(kinds, [("stun", "udp"), ("turn", "udp"), ("turn", "tcp")]);
    assert_eq!(e[0].attr("password"), None, "STUN needs no credential");
    for t in &e[1..] {
        assert_eq!(t.attr("host"), Some("127.0.0.1"));
        assert_eq!(t.attr("port"), Some("3478"));
        assert_eq!(t.attr("restricted"), Some("1"));
        let (exp, user) = t.attr("username").unwrap().split_once(':').unwrap();
        assert_eq!(user, "alice@localhost");
        let exp: u64 = exp.parse().unwrap();
        assert!((before + 3600..=before + 3601).contains(&exp), "{exp}");
        let stamp = herald_xep::delay::parse_stamp(t.attr("expires").unwrap()).unwrap();
        assert_eq!(stamp, exp as i64 * 1_000_000);
        assert!(!t.attr("password").unwrap().is_empty());
    }
    // Filters: by type, and <credentials/> for one service.
    let r = services(
        &mut a,
        &format!("<services xmlns='{EXTDISCO}' type='stun'/>"),
    )
    .await;
    assert_eq!(entries(&r).len(), 1);
    let r = services(
        &mut a,
        &format!(
            "<credentials xmlns='{EXTDISCO}'><service host='127.0.0.1' type='turn'/></credentials>"
        ),
    )
    .await;
    assert_eq!(r.children().next().map(|p| p.name()), Some("credentials"));
    assert_eq!(entries(&r).len(), 2);
    let r = services(
        &mut a,
        &format!(
            "<credentials xmlns='{EXTDISCO}'><service host='elsewhere' type='turn'/></credentials>"
        ),
    )
    .await;
    assert_eq!(entries(&r).len(), 0);
}

fn free_port() -> u16 {
    // A port free for both TCP and UDP on loopback.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn installed(bin: &str) -> bool {
    std::process::Command::new(bin)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `turnutils_uclient` for one allocation with `user`/`password` (over TCP with
/// `tcp`), sending one message through the relay to the echo peer; whether it succeeded.
async fn allocate(port: u16, peer: u16, user: &str, password: &str, tcp: bool) -> (bool, String) {
    let mut cmd = Command::new("turnutils_uclient");
    if tcp {
        cmd.arg("-t");
    }
    cmd.args(["-p", &port.to_string(), "-u", user, "-w", password])
        .args(["-n", "1", "-e", "127.0.0.1", "-r", &peer.to_string(), "-X"])
        .arg("127.0.0.1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("turnutils_uclient hung")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn coturn_accepts_what_herald_hands_out_and_refuses_expired_or_forged_ones() {
    if !installed("turnserver") || !installed("turnutils_uclient") || !installed("turnutils_peer") {
        eprintln!("SKIPPED: coturn (turnserver, turnutils_uclient, turnutils_peer) is not installed; apt-get install coturn");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, peer) = (free_port(), free_port());
    // The echo peer the relay forwards to, started first: it binds at once.
    let _peer = Command::new("turnutils_peer")
        .args(["-p", &peer.to_string(), "-L", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut turn = Command::new("turnserver")
        .args(["-n", "--no-tls", "--no-dtls", "--no-cli", "--simple-log"])
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
        ])
        .args([
            "--realm=localhost",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
        ])
        .arg(format!("--listening-port={port}"))
        .args(["--allow-loopback-peers", "--log-file=stdout"])
        .arg(format!("--userdb={}", dir.path().join("turndb").display()))
        .arg(format!(
            "--pidfile={}",
            dir.path().join("turn.pid").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready once its servers and auth thread are up (it logs each).
    let mut lines = BufReader::new(turn.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("IO method (auth thread)") {
                return;
            }
        }
        panic!("turnserver exited");
    })
    .await
    .expect("turnserver never became ready");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let s = server(Some(port)).await;
    let mut a = RawClient::login(s.c2s(), "alice", "pw", "r").await;
    let r = services(
        &mut a,
        &format!("<services xmlns='{EXTDISCO}' type='turn'/>"),
    )
    .await;
    let e = entries(&r);
    let (user, password) = (
        e[0].attr("username").unwrap().to_string(),
        e[0].attr("password").unwrap().to_string(),
    );
    // Herald's credential: an allocation over UDP and over TCP.
    for tcp in [false, true] {
        let (ok, log) = allocate(port, peer, &user, &password, tcp).await;
        assert!(ok, "tcp={tcp}: coturn refused Herald's credential:\n{log}");
    }
    // Forged: another secret's password, or Herald's password for another user.
    let forged =
        herald_xep::extdisco::credential("not-the-secret", "alice@localhost", 0, 4_000_000_000);
    let (ok, log) = allocate(port, peer, &forged.username, &forged.password, false).await;
    assert!(!ok, "a forged credential was accepted:\n{log}");
    let other_user = user.replace("alice@", "mallory@");
    let (ok, log) = allocate(port, peer, &other_user, &password, false).await;
    assert!(!ok, "a credential for another user was accepted:\n{log}");
    // Expired: the right scheme and secret, but its time is up.
    let now = herald_server::http::upload::unix_now();
    let expired = herald_xep::extdisco::credential(SECRET, "alice@localhost", now - 7200, 3600);
    let (ok, log) = allocate(port, peer, &expired.username, &expired.password, false).await;
    assert!(!ok, "an expired credential was accepted:\n{log}");
}
