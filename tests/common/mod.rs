//! A real `spangate standalone` process for end-to-end tests: temporary folders,
//! loopback ports chosen by the OS, and status read through `spangate get`.

#![allow(dead_code)] // each test binary uses a different part of this harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_spangate");

/// Addresses from the ready file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub ofrep: SocketAddr,
    pub probes: SocketAddr,
}

/// A running `spangate standalone`, killed on drop.
pub struct Spangate {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub addrs: Addrs,
    child: Child,
    log: PathBuf,
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Spangate {
    /// Starts spangate on `dir` (with state in `state_dir`) and waits until it listens.
    pub fn start(dir: &Path, state_dir: &Path) -> Self {
        let ready = state_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = state_dir.with_extension("log");
        let child = Command::new(BIN)
            .args(["standalone", "--dir"])
            .arg(dir)
            .arg("--state-dir")
            .arg(state_dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--ofrep-addr",
                "127.0.0.1:0",
                "--probe-addr",
                "127.0.0.1:0",
                "--tick",
                "100ms",
                "--ready-file",
            ])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn spangate");
        let mut me = Self {
            dir: dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            addrs: Addrs {
                otlp_grpc: ([0, 0, 0, 0], 0).into(),
                otlp_http: ([0, 0, 0, 0], 0).into(),
                ofrep: ([0, 0, 0, 0], 0).into(),
                probes: ([0, 0, 0, 0], 0).into(),
            },
            child,
            log,
        };
        me.addrs = wait_for("the ready file", Duration::from_secs(30), || {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("spangate exited with {status}: {}", me.log_text());
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str(&text).ok()
        });
        me
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The rollout as `spangate get NAME -o json` prints it.
    pub fn get(&self, name: &str) -> Value {
        get(&self.dir, &self.state_dir, name)
    }

    /// Waits until the rollout's status satisfies `check`; returns that status.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let doc = self.get(name);
            if check(&doc["status"]) {
                return doc["status"].clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}; last status: {}\nlog:\n{}",
                    serde_json::to_string_pretty(&doc["status"]).unwrap(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process abruptly, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spangate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `spangate get --dir DIR --state-dir STATE NAME -o json`.
pub fn get(dir: &Path, state_dir: &Path, name: &str) -> Value {
    let out = Command::new(BIN)
        .args(["get", "--dir"])
        .arg(dir)
        .arg("--state-dir")
        .arg(state_dir)
        .args([name, "-o", "json"])
        .output()
        .expect("run spangate get");
    assert!(
        out.status.success(),
        "spangate get {name} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("get prints JSON")
}

/// A rollout file for the checkout service; `extra` is appended to the spec.
pub fn rollout_yaml(name: &str, steps: &str, analysis: &str) -> String {
    format!(
        r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {{name: {name}, namespace: default}}
spec:
  flag: {{key: new-checkout, variants: {{"off": false, "on": true}}, defaultVariant: "off", rolloutVariant: "on"}}
  bucketBy: accountId
  service: checkout
  revision: 3f2c1a9
  steps: {steps}
  stepDuration: 0s
  analysis: {analysis}
"#
    )
}
