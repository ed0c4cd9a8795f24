//! A real `spangate standalone` process for end-to-end tests: temporary folders,
//! loopback ports chosen by the OS, and status read through `spangate get`.

pub mod cluster;
pub mod fixture;
pub mod otlp;
pub mod traffic;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// A child process that is killed when the test ends, however it ends; its stdout
/// and stderr go to a log file.
pub struct ChildGuard {
    child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` as it is; see [`scrub_env`] to keep the machine's telemetry out.
    pub fn spawn(command: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("create a log file");
        let err = out.try_clone().expect("clone a log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("query a child process")
    }

    /// Asks the process to stop (SIGTERM) and waits for it, up to `limit`.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        wait_for("the process to exit", limit, || self.exited())
    }

    /// The end of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        let start = text.len().saturating_sub(6_000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("--- {} ---\n{}", self.log.display(), &text[start..])
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The machine's own telemetry settings must not redirect the tests' spans.
pub fn scrub_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
}

/// A running `spangate standalone`, killed on drop.
pub struct Spangate {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub addrs: Addrs,
    pub process: ChildGuard,
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
        Self::start_with_env(dir, state_dir, &[])
    }

    /// Like [`Spangate::start`], with extra environment variables.
    pub fn start_with_env(dir: &Path, state_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(dir, state_dir, &[], env, None)
    }

    /// Like [`Spangate::start`], with extra command-line arguments.
    pub fn start_with_args(dir: &Path, state_dir: &Path, args: &[&str]) -> Self {
        Self::launch(dir, state_dir, args, &[], None)
    }

    /// Like [`Spangate::start_with_args`], under an open-files limit (soft and hard).
    pub fn start_with_open_files(
        dir: &Path,
        state_dir: &Path,
        args: &[&str],
        open_files: u32,
    ) -> Self {
        Self::launch(dir, state_dir, args, &[], Some(open_files))
    }

    fn launch(
        dir: &Path,
        state_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        open_files: Option<u32>,
    ) -> Self {
        let ready = state_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut command = match open_files {
            None => Command::new(BIN),
            Some(limit) => {
                // The shell sets the limit, then becomes spangate.
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                shell
            }
        };
        command
            .args(["standalone", "--dir"])
            .arg(dir)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--otlp-grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-http-addr", "127.0.0.1:0"])
            .args(["--ofrep-addr", "127.0.0.1:0"])
            .args(["--probe-addr", "127.0.0.1:0"])
            .args(["--tick", "100ms", "--ready-file"])
            .arg(&ready)
            .args(args);
        scrub_env(&mut command).envs(env.iter().copied());
        let mut process = ChildGuard::spawn(&mut command, &state_dir.with_extension("log"));
        let addrs = wait_for("the ready file", Duration::from_secs(60), || {
            if let Some(status) = process.exited() {
                panic!(
                    "spangate exited ({status}) before it was ready\n{}",
                    process.log_tail()
                );
            }
            // Written atomically: once it is there it is whole.
            let text = std::fs::read_to_string(&ready).ok()?;
            Some(serde_json::from_str(&text).expect("the ready file is JSON"))
        });
        Self {
            dir: dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            addrs,
            process,
        }
    }

    pub fn log_text(&self) -> String {
        self.process.log_tail()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// The value of the Prometheus sample `name` (with its labels, e.g.
    /// `spangate_listener_connections{listener="ofrep"}`), as `/metrics` shows it now.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics(), name)
    }

    /// `GET /metrics` on the probe port.
    pub fn metrics(&self) -> String {
        http_get(self.addrs.probes, "/metrics").1
    }

    /// The rollout as `spangate get NAME -o json` prints it.
    pub fn get(&self, name: &str) -> Value {
        get(&self.dir, &self.state_dir, name)
    }

    /// The command line of `spangate get NAME -o json`, for scripts that poll it.
    pub fn get_command(&self, name: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![BIN.into(), "get".into(), "--dir".into()];
        args.extend([
            self.dir.clone().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
        ]);
        args.extend([name.into(), "-o".into(), "json".into()]);
        args
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
                    "timed out after {limit:?} waiting for {what}; last status: {}\n{}",
                    serde_json::to_string_pretty(&doc["status"]).unwrap(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process abruptly, as a crash would.
    pub fn kill(self) {
        drop(self);
    }
}

/// The value of sample `name` (labels included) in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A plain HTTP/1.1 `GET` over a fresh connection: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: spangate\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `spangate get --dir DIR --state-dir STATE NAME -o json`.
pub fn get(dir: &Path, state_dir: &Path, name: &str) -> Value {
    let out = scrub_env(&mut Command::new(BIN))
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

/// The variant of `new-checkout` that spangate's OFREP endpoint at `ofrep` hands
/// user number `user` (in account `acct-<user % 97>`), as a service asks for it.
pub async fn checkout_variant(client: &reqwest::Client, ofrep: SocketAddr, user: u32) -> String {
    let url = format!("http://{ofrep}/ofrep/v1/evaluate/flags/new-checkout");
    let body = serde_json::json!({"context": {"targetingKey": format!("user-{user}"), "accountId": format!("acct-{}", user % 97)}});
    let answer: Value = client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["variant"]
        .as_str()
        .unwrap_or_else(|| panic!("no variant in {answer}"))
        .to_string()
}
