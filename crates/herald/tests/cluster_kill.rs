//! Cluster mode under node loss, with real processes: two `herald serve` nodes share one
//! PostgreSQL database and one Redis; node 2 is killed with SIGKILL while a client on it
//! sends. Every message node 2 acknowledged (XEP-0198) to its sender is found afterwards in
//! the recipient's archive on node 1, and a phone that was hibernated on node 2 resumes on
//! node 1 (which adopted node 2's saved sessions) and gets what was queued for it, and what
//! was sent to it after the kill, before node 1 found node 2 gone.
//!
//! Needs `HERALD_TEST_POSTGRES_URL` and `HERALD_TEST_REDIS_URL` (`.ci/run` sets both);
//! without them it prints a notice and checks nothing.

mod common;
#[path = "../../herald-server/tests/common/mod.rs"]
mod hs;
#[path = "../../herald-server/tests/common/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Server};
use hs::{next_unrequested, xml, RawClient};

const SM: &str = "urn:xmpp:sm:3";

struct Node {
    config: std::path::PathBuf,
    c2s: u16,
    server: Option<Server>,
}

fn herald(config: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn node(dir: &Path, name: &str, db: &str, redis: &str) -> Node {
    let c2s = free_port();
    let data = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\nhttp.listen = \"\"\n\
             [c2s]\nlisten = \"127.0.0.1:{c2s}\"\ndirect_tls_listen = \"\"\nrequire_encryption = false\n\
             [components]\nlisten = \"\"\n\
             [s2s]\nlisten = \"\"\ndirect_tls_listen = \"\"\n\
             [store]\nbackend = \"postgres\"\nurl = \"{db}\"\n\
             [cluster]\nredis = \"{redis}\"\nnode = \"{name}\"\nlease = \"3s\"\n",
            data.display()
        ),
    )
    .unwrap();
    Node {
        config,
        c2s,
        server: None,
    }
}

impl Node {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(Server { child });
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.c2s)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.c2s).into()
    }

    /// SIGKILL: no stop, no save, no goodbye to Redis.
    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.child.kill().unwrap();
            s.child.wait().unwrap();
        }
    }
}

/// Polls `herald cluster status` (from `config`) until `pred` holds for its output.
async fn status_until(config: &Path, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = config.to_path_buf();
        let out = tokio::task::spawn_blocking(move || herald(&c, &["cluster", "status"]))
            .await
            .unwrap();
        if pred(&out) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not reached\n{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn line_has(out: &str, node: &str, state: &str) -> bool {
    out.lines()
        .any(|l| l.split_whitespace().next() == Some(node) && l.contains(&format!(" {state} ")))
}

/// Message ids (with `bob`) in `alice`'s archive, through MAM on `c`.
async fn archived_ids(c: &mut RawClient) -> Vec<String> {
    c.send(
        "<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>bob@localhost</value></field></x>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>200</max></set></query></iq>",
    )
    .await;
    let mut ids = Vec::new();
    loop {
        let el = c
            .wait_for("an archive result", |e| {
                e.attr("id") == Some("mam") || e.get_child("result", "urn:xmpp:mam:2").is_some()
            })
            .await;
        if el.attr("id") == Some("mam") {
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            return ids;
        }
        let id = el
            .get_child("result", "urn:xmpp:mam:2")
            .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
            .and_then(|f| f.get_child("message", "jabber:client"))
            .and_then(|m| m.attr("id"))
            .unwrap_or_default()
            .to_string();
        ids.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_acknowledged_message_and_its_sleeping_phone_resumes_elsewhere() {
    let Some(db) = pg::database("cluster_kill") else {
        return;
    };
    let Ok(redis_base) = std::env::var("HERALD_TEST_REDIS_URL") else {
        eprintln!("cluster_kill: skipped, HERALD_TEST_REDIS_URL is not set");
        return;
    };
    let redis = format!("{}/5", redis_base.trim_end_matches('/'));
    {
        let client = redis::Client::open(redis.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHDB").query_async(&mut c).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut n1 = node(dir.path(), "k-n1", &db.url, &redis);
    let mut n2 = node(dir.path(), "k-n2", &db.url, &redis);
    for u in ["alice", "bob", "carol", "dave"] {
        herald(
            &n1.config,
            &["user", "add", &format!("{u}@localhost"), "--password", "pw"],
        );
    }
    n1.start();
    n2.start();
    status_until(&n1.config, "both nodes up", |o| {
        line_has(o, "k-n1", "up") && line_has(o, "k-n2", "up")
    })
    .await;

    // alice reads on n1. carol's phone sleeps on n2 with a message from dave queued.
    let mut alice = RawClient::login(n1.addr(), "alice", "pw", "desk").await;
    alice.send("<presence/>").await;
    let mut phone = RawClient::login(n2.addr(), "carol", "pw", "phone").await;
    phone
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = next_unrequested(&mut phone).await;
    let previd = enabled.attr("id").unwrap().to_string();
    phone.send("<presence/>").await;
    phone
        .send("<iq type='get' id='ready'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    phone
        .wait_for("ready", |e| e.attr("id") == Some("ready"))
        .await;
    phone.kill(true);
    let mut dave = RawClient::login(n2.addr(), "dave", "pw", "d").await;
    dave.send(
        "<message to='carol@localhost' type='chat' id='for-carol'><body>sleeping</body></message>\
         <iq type='get' id='sent'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    dave.wait_for("sent", |e| e.attr("id") == Some("sent"))
        .await;

    // bob on n2 sends to alice on n1, asking for an ack after each message; n2 dies under him.
    let mut bob = RawClient::login(n2.addr(), "bob", "pw", "b").await;
    bob.send(&format!("<enable xmlns='{SM}'/>")).await;
    assert_eq!(next_unrequested(&mut bob).await.name(), "enabled");
    let mut acked = 0u32;
    for i in 1..=200u32 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='b{i}'><body>{i}</body></message><r xmlns='{SM}'/>"
        ))
        .await;
        let a = bob.wait_for("an ack", |e| e.is("a", SM)).await;
        acked = a.attr("h").and_then(|h| h.parse().ok()).unwrap_or(acked);
        if i == 20 {
            n2.kill();
            break;
        }
    }
    assert!(acked >= 20, "acked {acked}");
    drop(bob);
    // Sent while n1 still takes n2 for alive: it goes to n2's delivery stream, which the
    // node adopting n2's sessions reads before removing it.
    alice
        .send(
            "<message to='carol@localhost' type='chat' id='after-kill'><body>still there?</body></message>\
             <iq type='get' id='sent2'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    alice
        .wait_for("sent2", |e| e.attr("id") == Some("sent2"))
        .await;

    // n1 finds n2 gone within the lease.
    status_until(&n1.config, "n2 down", |o| !line_has(o, "k-n2", "up")).await;

    // Every message n2 acknowledged is in alice's archive.
    let got = archived_ids(&mut alice).await;
    for i in 1..=acked {
        assert!(
            got.contains(&format!("b{i}")),
            "b{i} was acknowledged but is not archived; archive has {got:?}"
        );
    }

    // carol's phone resumes through n1, which adopted n2's saved sessions; the message
    // queued while it slept on n2 arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut back, resumed) = loop {
        let (mut c, _) = RawClient::authenticate(n1.addr(), "carol", "pw").await;
        c.send(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"))
            .await;
        let r = next_unrequested(&mut c).await;
        if r.name() == "resumed" || Instant::now() > deadline {
            break (c, r);
        }
        // Not adopted yet (the sweep runs every lease/3): try again.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(resumed.name(), "resumed", "{}", xml(&resumed));
    let m = back
        .wait_for("the queued message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("id"), Some("for-carol"), "{}", xml(&m));
    let m = back
        .wait_for("the message sent after the kill", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("id"), Some("after-kill"), "{}", xml(&m));
    n1.kill();
}
