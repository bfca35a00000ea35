//! `herald push test` and `herald push list` run as an operator would, against `herald
//! serve` with an app server component (a small XEP-0114 component in this test that answers
//! `result` for node `good` and `cancel`/`item-not-found` for everything else): the printed
//! table, the exit code, and the removed registrations with their reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::{Duration, Instant};

use herald_store::{PushRegistration, PushStore, Store};

mod common;

use common::*;

const APP: &str = "push.localhost";

/// The server with an app server component (`APP`) and the component port.
fn env() -> (Env, u16) {
    let components = free_port();
    let e = Env::with(&format!(
        "[components]\nlisten = \"127.0.0.1:{components}\"\n\
         [[components.component]]\ndomain = \"{APP}\"\nsecret = \"s3cret\"\n\
         [push]\nmax_errors = 1\nreply_timeout = \"5s\"\n"
    ));
    (e, components)
}

fn out(o: &Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The value of attribute `name` in the start tag that begins `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let end = tag.find('>')?;
    let head = &tag[..end];
    for q in ['"', '\''] {
        let pat = format!(" {name}={q}");
        if let Some(i) = head.find(&pat) {
            let rest = &head[i + pat.len()..];
            return rest.find(q).map(|j| rest[..j].to_string());
        }
    }
    None
}

/// Reads from `s` into `buf` until it contains `needle`.
fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never saw {needle:?} in {buf}"
        );
        match s.read(&mut chunk) {
            Ok(0) => panic!("component stream closed: {buf}"),
            Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
    }
}

/// Connects the app server component and answers every publish in a thread: `result` for
/// node `good`, `cancel`/`item-not-found` for any other.
fn app_server(components: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", components)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(format!("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{APP}'>").as_bytes())
        .unwrap();
    let mut buf = String::new();
    read_until(&mut s, &mut buf, ">");
    let header = &buf[buf.find("<stream:stream").unwrap()..];
    let id = attr(header, "id").expect("stream id");
    let digest = herald_server::federation::component::handshake_digest(&id, "s3cret");
    s.write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .unwrap();
    read_until(&mut s, &mut buf, "<handshake");
    buf.clear();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
            // Each publish is a whole `<iq …>…</iq>`; answer the complete ones.
            while let (Some(start), Some(end)) = (buf.find("<iq"), buf.find("</iq>")) {
                let iq = buf[start..end].to_string();
                buf.drain(..end + "</iq>".len());
                let (Some(id), Some(from)) = (attr(&iq, "id"), attr(&iq, "from")) else {
                    continue;
                };
                let node = iq
                    .find("<publish")
                    .and_then(|i| attr(&iq[i..], "node"))
                    .unwrap_or_default();
                let answer = if node == "good" {
                    format!("<iq type='result' id='{id}' from='{APP}' to='{from}'/>")
                } else {
                    format!("<iq type='error' id='{id}' from='{APP}' to='{from}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
                };
                if s.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
}

fn registration(node: &str) -> PushRegistration {
    PushRegistration {
        user: "bob@localhost".into(),
        jid: APP.into(),
        node: node.into(),
        publish_options_xml: None,
        enabled_at: 1,
        resource: None,
        lang: None,
        error_count: 0,
        last_push: None,
        last_result: None,
    }
}

#[test]
fn push_test_prints_each_answer_and_push_list_shows_removals() {
    let (e, components) = env();
    assert!(e
        .run(&["user", "add", "bob", "--password", "pw"])
        .status
        .success());
    {
        let store = Store::open(&e.dir.path().join("data")).unwrap();
        for node in ["bad", "good"] {
            store.upsert_push_registration(&registration(node)).unwrap();
        }
    }
    let (ok, _, err) = out(&e.run(&["push", "test", "bob"]));
    assert!(!ok && err.contains("not running"), "{err}");

    let _server = e.serve();
    app_server(components);

    // One fails: every answer is shown, and the command fails.
    let (ok, stdout, err) = out(&e.run(&["push", "test", "bob"]));
    assert!(!ok, "a failed test push must fail the command: {stdout}");
    assert!(err.contains("1 of 2 test push(es) failed"), "{err}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("APP SERVER"), "{stdout}");
    let row = |node: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(node))
            .unwrap_or_else(|| panic!("no row for {node}: {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let bad = row("bad");
    assert_eq!(
        bad[..4],
        [APP, "bad", "error", "cancel/item-not-found"],
        "{stdout}"
    );
    assert_eq!(bad[5], "ms", "{stdout}");
    assert!(bad[4].parse::<f64>().is_ok(), "{stdout}");
    let good = row("good");
    assert_eq!(good[..3], [APP, "good", "ok"], "{stdout}");
    assert!(
        good[3].parse::<f64>().is_ok() && good[4] == "ms",
        "{stdout}"
    );

    // push.max_errors is 1: that error removed the registration; `push list` says so.
    let (ok, stdout, err) = out(&e.run(&["push", "list", "bob"]));
    assert!(ok, "{err}");
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{APP}\tnode=good\t")),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("# removed in the last 7d:"), "{stdout}");
    let removed = lines.next().unwrap_or_default();
    assert!(
        removed.starts_with(&format!("{APP}\tnode=bad\tremoved=20")),
        "{stdout}"
    );
    assert!(
        removed.ends_with(
            "\treason=app server errors (last: item-not-found)\tlast_result=item-not-found\terrors=1"
        ),
        "{stdout}"
    );

    // All good: success.
    let (ok, stdout, err) = out(&e.run(&["push", "test", "bob", APP, "good"]));
    assert!(ok, "{err}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().nth(1).unwrap().contains(" ok "), "{stdout}");

    // Nothing to test, or no such user: clear errors.
    let (ok, _, err) = out(&e.run(&["push", "test", "bob", APP, "bad"]));
    assert!(
        !ok && err.contains("bob@localhost has no push registration with"),
        "{err}"
    );
    let (ok, _, err) = out(&e.run(&["push", "test", "ghost"]));
    assert!(!ok && err.contains("no such user"), "{err}");

    // The operator's removal is listed too.
    assert!(e.run(&["push", "remove", "bob", APP]).status.success());
    let (_, stdout, _) = out(&e.run(&["push", "list", "bob"]));
    assert!(
        stdout.starts_with("bob@localhost has no push registrations\n"),
        "{stdout}"
    );
    // (Its last result is what the store had: the running server writes statistics up to
    // 200 ms after a reply, so "ok" or not yet.)
    let good = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{APP}\tnode=good\tremoved=")))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        good.contains("\treason=removed by the operator\t"),
        "{stdout}"
    );
    assert!(good.ends_with("\terrors=0"), "{stdout}");
}
