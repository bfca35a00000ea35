//! Smoke test of `herald-bench chaos` against the workspace's own `herald` binary: two short
//! cycles (one SIGKILL, one SIGTERM) with two pairs must run to the end by themselves and
//! report consistently. It does not require that nothing is lost (that is what the scenario
//! measures, and the server may fail it), only that the exit status agrees with the report.

use std::path::PathBuf;
use std::process::Command;

/// The `herald` binary built next to `herald-bench` (`cargo test --workspace` builds both).
fn herald_bin() -> Option<PathBuf> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let p = bench.parent()?.join("herald");
    p.exists().then_some(p)
}

#[test]
fn two_short_cycles_end_to_end() {
    let Some(herald) = herald_bin() else {
        eprintln!("skipped: no herald binary next to herald-bench (cargo build -p herald)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("chaos.json");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "chaos",
            "--cycles",
            "2",
            "--pairs",
            "2",
            "--cycle-secs",
            "0.5",
            "--rate",
            "200",
            "--settle-secs",
            "0.5",
            "--settle-max",
            "20",
            "--step-timeout",
            "10",
        ])
        .arg("--server-bin")
        .arg(&herald)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
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
    assert_eq!(metric("cycles"), 2.0, "{stdout}");
    assert_eq!(metric("sigkill"), 1.0);
    assert_eq!(metric("sigterm"), 1.0);
    let (sent, acked, received) = (metric("sent"), metric("acked"), metric("received"));
    assert!(sent > 0.0 && acked > 0.0 && received > 0.0, "{stdout}");
    assert!(acked <= sent && received <= sent, "{stdout}");
    assert!(metric("restart_ms_max") > 0.0);
    let failure = v["failure"].as_str().unwrap_or_default();
    assert!(
        !failure.contains("could not be checked"),
        "{stdout}\n{stderr}"
    );
    // Lost messages are a finding, not a test failure; but then the run must say so.
    assert_eq!(metric("lost") > 0.0, !failure.is_empty(), "{stdout}");
    assert_eq!(
        out.status.success(),
        failure.is_empty(),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("lost"), "{stdout}");
}
