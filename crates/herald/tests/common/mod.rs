//! Test kit for the `herald` binary: a temporary data directory with a configuration, the
//! binary run on it, and a `herald serve` that is killed when dropped.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The c2s port of the configuration.
    pub c2s: u16,
}

impl Env {
    /// Plain c2s on a free loopback port, no component listener.
    pub fn new() -> Env {
        Env::with("[components]\nlisten = \"\"\n")
    }

    /// Plain c2s on a free loopback port, then `extra` TOML (tables after `[c2s]`).
    pub fn with(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("herald.toml");
        let c2s = free_port();
        std::fs::write(
            &config,
            format!(
                "domain = \"localhost\"\ndata_dir = \"{}\"\nhttp.listen = \"\"\n\
                 [c2s]\nlisten = \"127.0.0.1:{c2s}\"\ndirect_tls_listen = \"\"\nrequire_encryption = false\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Env { dir, config, c2s }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "{args:?} should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `herald serve`, once it accepts c2s connections and its admin socket exists.
    pub fn serve(&self) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child };
        let sock = self.data().join("admin.sock");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.c2s)).is_err() || !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

/// A running `herald serve`, killed on drop.
pub struct Server {
    pub child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
