//! Smoke test of `herald-bench upload` against the workspace's own `herald` binary, with tiny
//! sizes: the slot requests over XMPP, the HTTPS PUTs and the checked GETs must all succeed,
//! and every file must be on the server's disk afterwards.

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
fn a_large_file_and_small_ones_at_once_go_up_and_come_back() {
    let Some(herald) = herald_bin() else {
        eprintln!("skipped: no herald binary next to herald-bench (cargo build -p herald)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let data = dir.path().join("data");
    let cfg = dir.path().join("herald.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"domain = "localhost"
data_dir = "{data}"
[c2s]
listen = "127.0.0.1:{c2s}"
require_encryption = false
[http]
listen = "127.0.0.1:{http}"
"#,
            data = data.display()
        ),
    )
    .unwrap();
    let st = Command::new(&herald)
        .args(["user", "add-bulk", "bench", "6", "bench", "--config"])
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
    for port in [c2s, http] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "herald did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let json = dir.path().join("upload.json");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(["upload", "--big-size", "300000", "--small-size", "1000"])
        .args(["--small-count", "5", "--step-timeout", "10"])
        .args(["--port", &c2s.to_string()])
        .args(["--http-port", &http.to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "upload failed:\n{stderr}");
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
    assert!(metric("big_upload_MBps") > 0.0, "{text}");
    assert!(metric("big_download_MBps") > 0.0, "{text}");
    assert_eq!(metric("small_upload_failed"), 0.0, "{text}");
    assert!(metric("small_uploads_per_s") > 0.0, "{text}");
    // One large and five small files were stored, and nothing half-written is left.
    let count = |d: &str| {
        std::fs::read_dir(data.join("upload").join(d))
            .unwrap()
            .count()
    };
    assert_eq!((count("files"), count("tmp")), (6, 0));
}
