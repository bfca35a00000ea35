//! The `herald` command line, run as a user would: exit codes, messages, and effects on the
//! store, with and without a running server.

mod common;

use common::*;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn data(env: &Env) -> PathBuf {
    env.data()
}

#[test]
fn user_lifecycle_and_errors() {
    let e = Env::new();
    assert!(e
        .ok(&["user", "add", "alice@localhost", "--password", "pw"])
        .contains("created alice@localhost"));
    // password from stdin
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["user", "add", "bob", "--config"])
        .arg(&e.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(e.ok(&["user", "list"]), "alice@localhost\nbob@localhost\n");
    assert!(e
        .fails(&["user", "add", "alice", "--password", "x"])
        .contains("already exists"));
    assert!(e
        .fails(&["user", "add", "not a jid@@", "--password", "x"])
        .contains("not a valid JID"));
    assert!(e
        .fails(&["user", "add", "carol@elsewhere.org", "--password", "x"])
        .contains("not on a domain"));
    assert!(e
        .fails(&["user", "passwd", "nobody", "--password", "x"])
        .contains("no such user"));
    e.ok(&["user", "passwd", "alice", "--password", "new"]);
    e.ok(&["user", "remove", "alice@localhost"]);
    assert!(e
        .fails(&["user", "remove", "alice@localhost"])
        .contains("no such user"));
    assert_eq!(e.ok(&["user", "list"]), "bob@localhost\n");
    // The password is never stored.
    let db = std::fs::read(data(&e).join("herald.sqlite3")).unwrap();
    assert!(!db.windows(6).any(|w| w == b"secret"));
}

#[test]
fn add_bulk_creates_the_naming_scheme() {
    let e = Env::new();
    assert!(e
        .ok(&["user", "add-bulk", "u", "250", "pw"])
        .contains("created 250"));
    let list = e.ok(&["user", "list"]);
    assert_eq!(list.lines().count(), 250);
    assert!(list.contains("u0@localhost\n") && list.contains("u249@localhost\n"));
    assert!(e
        .ok(&["user", "add-bulk", "u", "251", "pw"])
        .contains("created 1"));
}

#[test]
fn check_config_reports_file_key_and_reason() {
    let e = Env::new();
    assert!(e.ok(&["check-config"]).contains("ok"));
    let bad = e.dir.path().join("bad.toml");
    // `check-config` on `toml` written to bad.toml: (success, stderr).
    let check = |toml: &str| {
        std::fs::write(&bad, toml).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, err) = check("[c2s]\nlisen = \"x\"\n");
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("lisen"), "{err}");
    let (ok, err) = check("[push]\nmax_devices = 0\n");
    assert!(!ok && err.contains("push.max_devices"), "{err}");
    // A well-formed [cluster] table is fine; one naming a TLS Redis is not (not built in).
    let pg = "[store]\nbackend = \"postgres\"\nurl = \"postgres://h@127.0.0.1/x\"\n";
    let (ok, err) = check(&format!(
        "{pg}[cluster]\nredis = \"redis://127.0.0.1/\"\nnode = \"n1\"\n"
    ));
    assert!(ok, "{err}");
    let (ok, err) = check(&format!(
        "{pg}[cluster]\nredis = \"rediss://127.0.0.1/\"\nnode = \"n1\"\n"
    ));
    assert!(
        !ok && err.contains("cluster.redis") && err.contains("TLS"),
        "{err}"
    );
}

fn roster_line(e: &Env, user: &str, contact: &str) -> Option<String> {
    e.ok(&["roster", "list", user])
        .lines()
        .find(|l| l.starts_with(&format!("{contact}\t")))
        .map(str::to_string)
}

#[test]
fn roster_commands_between_two_users() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    e.ok(&["roster", "subscribe", "alice@localhost", "bob@localhost"]);
    assert!(roster_line(&e, "alice", "bob@localhost")
        .unwrap()
        .contains("\tboth"));
    assert!(roster_line(&e, "bob", "alice@localhost")
        .unwrap()
        .contains("\tboth"));
    e.ok(&["roster", "unsubscribe", "alice@localhost", "bob@localhost"]);
    assert!(roster_line(&e, "alice", "bob@localhost")
        .unwrap()
        .contains("\tnone"));
    assert!(roster_line(&e, "bob", "alice@localhost")
        .unwrap()
        .contains("\tnone"));
    e.ok(&["roster", "remove", "alice@localhost", "bob@localhost"]);
    assert!(roster_line(&e, "alice", "bob@localhost").is_none());
    assert!(roster_line(&e, "bob", "alice@localhost").is_none());
}

#[test]
fn roster_commands_with_bare_domains() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    // user + component domain: only the user's roster changes
    e.ok(&["roster", "subscribe", "alice@localhost", "proxy.localhost"]);
    assert!(roster_line(&e, "alice", "proxy.localhost")
        .unwrap()
        .contains("\tboth"));
    // component domain as the "user": the contact's side is updated, no crash
    e.ok(&["roster", "subscribe", "proxy.localhost", "alice@localhost"]);
    // the server's own domain on either side
    e.ok(&["roster", "subscribe", "localhost", "alice@localhost"]);
    assert!(roster_line(&e, "alice", "localhost")
        .unwrap()
        .contains("\tboth"));
    e.ok(&["roster", "subscribe", "alice@localhost", "localhost"]);
    // two bare domains: nothing has a roster, still not an error
    assert!(e
        .ok(&["roster", "subscribe", "proxy.localhost", "localhost"])
        .contains("nothing to change"));
    // remote contacts: only the local side
    e.ok(&["roster", "subscribe", "alice@localhost", "zed@example.org"]);
    assert!(roster_line(&e, "alice", "zed@example.org")
        .unwrap()
        .contains("\tboth"));
    e.ok(&[
        "roster",
        "unsubscribe",
        "proxy.localhost",
        "alice@localhost",
    ]);
    assert!(roster_line(&e, "alice", "proxy.localhost")
        .unwrap()
        .contains("\tnone"));
    e.ok(&["roster", "remove", "alice@localhost", "proxy.localhost"]);
    assert!(roster_line(&e, "alice", "proxy.localhost").is_none());
}

#[test]
fn roster_command_errors() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    assert!(e
        .fails(&["roster", "subscribe", "ghost@localhost", "alice@localhost"])
        .contains("no such user"));
    assert!(e
        .fails(&["roster", "subscribe", "alice@localhost", "@@bad"])
        .contains("not a valid JID"));
    assert!(e
        .fails(&["roster", "list", "ghost"])
        .contains("no such user"));
    assert!(e
        .fails(&["roster", "subscribe", "alice@localhost", "alice@localhost"])
        .contains("own contact"));
}

#[test]
fn push_commands_on_the_store() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    assert!(e
        .ok(&["push", "list", "alice"])
        .contains("no push registrations"));
    assert!(e
        .fails(&["push", "remove", "alice", "push.example.org"])
        .contains("no registration"));
    assert!(e.fails(&["push", "ping", "alice"]).contains("not running"));
    assert!(e.fails(&["push", "list", "ghost"]).contains("no such user"));
}

/// Logs piped to a file or another program carry no ANSI colour codes.
#[test]
fn serve_logs_without_colour_when_stderr_is_not_a_terminal() {
    let e = Env::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config"])
        .arg(&e.config)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Server { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while !log.contains("Herald is running") {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => panic!("server did not start; stderr: {log}"),
        }
    }
    assert!(log.contains("TLS certificate"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");
}

/// Reads from `s` until `needle` appears (or panics after 10 s).
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never saw {needle:?} in {got}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("closed; got {got}"),
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    got
}

#[test]
fn roster_change_reaches_a_running_server_session() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    let _server = e.serve();
    let mut s = TcpStream::connect(("127.0.0.1", e.c2s)).unwrap();
    let open = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    s.write_all(open.as_bytes()).unwrap();
    read_until(&mut s, "</stream:features>");
    // PLAIN "\0alice\0pw"
    s.write_all(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    )
    .unwrap();
    read_until(&mut s, "success");
    s.write_all(open.as_bytes()).unwrap();
    read_until(&mut s, "</stream:features>");
    s.write_all(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq><iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>").unwrap();
    read_until(&mut s, "id='r'");
    let out = e.ok(&["roster", "subscribe", "alice@localhost", "bob@localhost"]);
    assert!(out.contains("online sessions were notified"), "{out}");
    let got = read_until(&mut s, "bob@localhost");
    assert!(
        got.contains("subscription=\"both\"") || got.contains("subscription='both'"),
        "{got}"
    );
    // The store is shared with the running server (WAL): the CLI reads what it wrote.
    assert!(roster_line(&e, "alice", "bob@localhost").is_some());
    let _ = Path::new("");
}

const STREAM: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
/// PLAIN credentials: base64 of "\0alice\0pw", "\0bob\0pw", "\0bob\0new".
const ALICE_PW: &str = "AGFsaWNlAHB3";
const BOB_PW: &str = "AGJvYgBwdw==";
const BOB_NEW: &str = "AGJvYgBuZXc=";

/// Opens a stream and sends a PLAIN `<auth/>` (the test config allows it without TLS).
fn auth(e: &Env, plain: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", e.c2s)).unwrap();
    s.write_all(STREAM.as_bytes()).unwrap();
    read_until(&mut s, "</stream:features>");
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>");
    s.write_all(auth.as_bytes()).unwrap();
    s
}

/// A client logged in, bound to `resource` and available, once the server has seen it all.
fn login(e: &Env, plain: &str, resource: &str) -> TcpStream {
    let mut s = auth(e, plain);
    read_until(&mut s, "success");
    s.write_all(STREAM.as_bytes()).unwrap();
    read_until(&mut s, "</stream:features>");
    let bind = format!("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq><presence/><iq type='get' id='ready'><ping xmlns='urn:xmpp:ping'/></iq>");
    s.write_all(bind.as_bytes()).unwrap();
    read_until(&mut s, "id='ready'");
    s
}

/// Reads until the server closes the connection (or panics after 10 s); returns what it sent.
fn read_to_close(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still open; got {got}"
        );
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return got,
        }
    }
}

/// Whether `got` holds a stream error `condition` with `text`.
fn stream_error(got: &str, condition: &str, text: &str) -> bool {
    got.split("<stream:error>")
        .nth(1)
        .is_some_and(|e| e.contains(&format!("<{condition} ")) && e.contains(text))
}

#[test]
fn removing_a_user_ends_its_session_and_its_jid_is_unavailable() {
    let e = Env::new();
    e.ok(&["user", "add", "alice", "--password", "pw"]);
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    let _server = e.serve();
    let mut bob = login(&e, BOB_PW, "phone");
    let mut alice = login(&e, ALICE_PW, "desk");
    let out = e.ok(&["user", "remove", "bob"]);
    assert!(
        out.contains("removed bob@localhost") && out.contains("ended 1 running session"),
        "{out}"
    );
    let got = read_to_close(&mut bob);
    assert!(
        stream_error(&got, "not-authorized", "account removed"),
        "{got}"
    );
    // The session was over before the command returned: the JID has no account now.
    alice
        .write_all(b"<message to='bob@localhost' id='m1' type='chat'><body>hi</body></message>")
        .unwrap();
    let got = read_until(&mut alice, "service-unavailable");
    let bounce = got
        .split("<message")
        .find(|m| m.contains("id='m1'"))
        .unwrap_or_else(|| panic!("no bounce of m1 in {got}"));
    assert!(bounce.contains("type='error'"), "{bounce}");
    assert!(bounce.contains("<error type='cancel'>"), "{bounce}");
    assert_eq!(e.ok(&["user", "list"]), "alice@localhost\n");
    assert!(e.fails(&["user", "remove", "bob"]).contains("no such user"));
}

#[test]
fn changing_a_password_ends_the_sessions_and_the_new_one_logs_in() {
    let e = Env::new();
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    let _server = e.serve();
    let mut bob = login(&e, BOB_PW, "phone");
    let out = e.ok(&["user", "passwd", "bob", "--password", "new"]);
    assert!(
        out.contains("password changed for bob@localhost")
            && out.contains("ended 1 running session"),
        "{out}"
    );
    let got = read_to_close(&mut bob);
    assert!(
        stream_error(&got, "not-authorized", "password changed"),
        "{got}"
    );
    let mut old = auth(&e, BOB_PW);
    let got = read_until(&mut old, "</failure>");
    assert!(got.contains("not-authorized"), "{got}");
    let mut bob = login(&e, BOB_NEW, "phone");
    bob.write_all(b"<iq type='get' id='again'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    read_until(&mut bob, "id='again'");
}

/// The value of `key` in `invite create`'s output (`key value` lines).
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

#[test]
fn invites_are_created_listed_and_revoked() {
    let e = Env::with("[registration]\nenabled = true\ninvite_only = true\nmax_invites = 2\n");
    let out = e.ok(&["invite", "create", "--expires", "7d", "--uses", "3"]);
    let (id, token) = (field(&out, "id"), field(&out, "token"));
    // XEP-0401 §5: the account-creation URI carries the token.
    assert_eq!(
        field(&out, "uri"),
        format!("xmpp:localhost?register;preauth={token}")
    );
    // No HTTP listener here (`http.listen = ""`, no public_url): no landing page to print
    // (the interop scenario invite_page_browser opens the `page` line of a served one).
    assert!(!out.contains("page "), "{out}");
    let named = e.ok(&["invite", "create", "--for", "bob"]);
    let named_token = field(&named, "token");
    assert_eq!(
        field(&named, "uri"),
        format!("xmpp:bob@localhost?register;preauth={named_token}")
    );
    let list = e.ok(&["invite", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    let line = list.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        line.contains("for=any") && line.contains("uses_left=3"),
        "{line}"
    );
    assert!(line.ends_with("usable"), "{line}");
    assert!(list.contains("for=bob@localhost"), "{list}");
    // registration.max_invites.
    assert!(e
        .fails(&["invite", "create"])
        .contains("registration.max_invites"));
    // Bad arguments.
    assert!(e
        .fails(&["invite", "create", "--uses", "0"])
        .contains("uses"));
    assert!(e
        .fails(&["invite", "create", "--expires", "soon"])
        .contains("7d"));
    e.ok(&["user", "add", "carol", "--password", "pw"]);
    assert!(e
        .fails(&["invite", "create", "--for", "carol"])
        .contains("already exists"));
    // Only the token's hash is stored.
    let db = std::fs::read(data(&e).join("herald.sqlite3")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
    assert!(e.ok(&["invite", "revoke", id]).contains("revoked"));
    assert!(e.fails(&["invite", "revoke", id]).contains("no invite"));
    assert_eq!(e.ok(&["invite", "list"]).lines().count(), 1);
}

#[test]
fn upload_purge_deletes_expired_files_and_keeps_the_rest() {
    use herald_store::{Upload, UploadStore};
    let e = Env::new();
    assert_eq!(e.ok(&["upload", "purge"]), "0 expired files deleted\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let files = data(&e).join("upload").join("files");
    std::fs::create_dir_all(&files).unwrap();
    {
        let store = herald_store::Store::open(&data(&e)).unwrap();
        // The default expire_after is 30 days.
        for (id, age_days) in [
            ("0123456789abcdef0123456789abcdef", 31),
            ("fedcba9876543210fedcba9876543210", 29),
        ] {
            std::fs::write(files.join(id), b"x").unwrap();
            let u = Upload {
                id: id.into(),
                owner: "alice@localhost".into(),
                filename: "a.txt".into(),
                size: 1,
                content_type: "text/plain".into(),
                created_at: now - age_days * 86_400,
            };
            store.upload_add(&u, 100).unwrap();
        }
    }
    assert_eq!(e.ok(&["upload", "purge"]), "1 expired files deleted\n");
    assert!(!files.join("0123456789abcdef0123456789abcdef").exists());
    assert!(files.join("fedcba9876543210fedcba9876543210").exists());
    let store = herald_store::Store::open(&data(&e)).unwrap();
    assert_eq!(store.upload_usage("alice@localhost").unwrap(), 1);
}

#[test]
fn logout_all_deletes_the_fast_tokens_and_ends_the_sessions() {
    let e = Env::new();
    e.ok(&["user", "add", "bob", "--password", "pw"]);
    assert!(e
        .fails(&["user", "logout-all", "nobody"])
        .contains("no such user"));
    // Without a server: the store alone.
    assert!(e
        .ok(&["user", "logout-all", "bob"])
        .contains("deleted 0 FAST token(s) of bob@localhost"));
    let _server = e.serve();
    let mut bob = login(&e, BOB_PW, "phone");
    let out = e.ok(&["user", "logout-all", "bob"]);
    assert!(out.contains("ended 1 running session"), "{out}");
    let got = read_to_close(&mut bob);
    assert!(
        stream_error(&got, "not-authorized", "logged out by an administrator"),
        "{got}"
    );
    // The password still works.
    let mut bob = login(&e, BOB_PW, "phone");
    bob.write_all(b"<iq type='get' id='again'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    read_until(&mut bob, "id='again'");
}
