//! Smoke test of `herald-bench wake` against the workspace's own `herald` binary: a few
//! hibernate → push → resume cycles through the bench's delaying proxy must finish, count the
//! legacy path's round trips (stream, SCRAM ×2, restart, resume: 5 without TLS) and take at
//! least that many emulated RTTs; then the same with SASL2 + FAST + inline resumption: 2.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `herald` binary built next to `herald-bench` (`cargo test --workspace` builds both).
fn herald_bin() -> Option<PathBuf> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let p = bench.parent()?.join("herald");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn three_wakes_through_a_delaying_proxy() {
    let Some(herald) = herald_bin() else {
        eprintln!("skipped: no herald binary next to herald-bench (cargo build -p herald)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c2s, tls, comp) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("herald.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"domain = "localhost"
data_dir = "{data}"
[c2s]
listen = "127.0.0.1:{c2s}"
direct_tls_listen = "127.0.0.1:{tls}"
require_encryption = false
[components]
listen = "127.0.0.1:{comp}"
[http]
listen = ""
[[components.component]]
domain = "push.localhost"
secret = "bench-secret"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let st = Command::new(&herald)
        .args(["user", "add-bulk", "bench", "12", "bench", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let _server = Server(
        Command::new(&herald)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The server has no readiness signal but its listening sockets.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", comp)).is_err() {
        assert!(Instant::now() < deadline, "herald did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Disjoint users per mode: the legacy phone's hibernated session must not meet the FAST one.
    for (mode, offset, rts) in [("legacy", "0", 5.0), ("fast", "10", 2.0)] {
        wake(dir.path(), c2s, comp, mode, offset, rts);
    }
}

fn wake(dir: &std::path::Path, c2s: u16, comp: u16, mode: &str, offset: &str, rts: f64) {
    let json = dir.join(format!("wake-{mode}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "wake",
            "-n",
            "3",
            "--delay-ms",
            "20",
            "--step-timeout",
            "10",
        ])
        .args(["--mode", mode, "--offset", offset])
        .args(["--port", &c2s.to_string()])
        .args(["--component-port", &comp.to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wake failed:\n{stderr}");
    let text = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let metric = |name: &str| {
        v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {text}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(metric("round_trips"), rts, "{text}");
    assert_eq!(metric("round_trips_max"), rts, "{text}");
    // Each turn costs a 40 ms emulated RTT: the proxy's delay is really applied.
    assert!(metric("wake_p50") >= rts * 40.0, "{text}");
}
