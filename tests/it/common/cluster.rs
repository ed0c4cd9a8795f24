//! A real Kubernetes API server for the cluster tests: etcd and kube-apiserver on
//! loopback ports, in a temporary folder, killed when the test ends. The binaries
//! come from `./scripts/test` (built from Debian's source, cached outside the repo).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::{Addrs, ChildGuard, scrub_env, wait_for};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-spangate");
const ADMIN_TOKEN: &str = "spangate-test-admin";
const OPERATOR_TOKEN: &str = "spangate-test-operator";
/// The chart's ServiceAccount when installed as release `spangate` in namespace
/// `spangate`, as the API server names it.
pub const OPERATOR_USER: &str = "system:serviceaccount:spangate:spangate";

/// A tool that `./scripts/test` provides through an environment variable.
pub fn tool(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{variable} is not set: run ./scripts/test, which builds and installs it")
        });
    assert!(
        path.exists(),
        "{variable}={} does not exist: run ./scripts/test",
        path.display()
    );
    path
}

/// A port nobody listens on right now (etcd and kube-apiserver cannot report the
/// port they bound, so they are given one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a: SocketAddr| a.port())
        .expect("a free loopback port")
}

/// How the API server authorizes requests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    AlwaysAllow,
    Rbac,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub admin_kubeconfig: PathBuf,
    /// Authenticates as the chart's ServiceAccount.
    pub operator_kubeconfig: PathBuf,
    _etcd: ChildGuard,
    apiserver: ChildGuard,
}

impl Cluster {
    pub fn start(authorization: Authorization) -> Self {
        let kube_apiserver = tool("SPANGATE_KUBE_APISERVER");
        let etcd = tool("SPANGATE_ETCD");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (client, peer, secure) = (free_port(), free_port(), free_port());

        let etcd = ChildGuard::spawn(
            Command::new(etcd)
                .arg("--data-dir")
                .arg(root.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{peer}"),
                ]),
            &root.join("etcd.log"),
        );

        let key = root.join("service-accounts.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl genrsa: {out:?}");
        std::fs::write(
            root.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,admin,system:masters\n{OPERATOR_TOKEN},{OPERATOR_USER},operator-uid,\"system:serviceaccounts,system:serviceaccounts:spangate,system:authenticated\"\n"
            ),
        )
        .unwrap();
        let mode = match authorization {
            Authorization::AlwaysAllow => "AlwaysAllow",
            Authorization::Rbac => "RBAC",
        };
        let apiserver = ChildGuard::spawn(
            Command::new(kube_apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
                .arg(format!("--secure-port={secure}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--cert-dir={}", root.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    root.join("tokens.csv").display()
                ))
                .arg(format!("--authorization-mode={mode}"))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                .args([
                    "--endpoint-reconciler-type=none",
                    "--disable-admission-plugins=ServiceAccount",
                    "--service-cluster-ip-range=10.0.0.0/24",
                ]),
            &root.join("kube-apiserver.log"),
        );
        let kubeconfig = |name: &str, token: &str| {
            let path = root.join(name);
            std::fs::write(
                &path,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"https://127.0.0.1:{secure}\", insecure-skip-tls-verify: true}}}}]\nusers: [{{name: user, user: {{token: {token}}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: user, namespace: default}}}}]\ncurrent-context: test\n"
                ),
            )
            .unwrap();
            path
        };
        let mut cluster = Self {
            admin_kubeconfig: kubeconfig("admin.kubeconfig", ADMIN_TOKEN),
            operator_kubeconfig: kubeconfig("operator.kubeconfig", OPERATOR_TOKEN),
            _etcd: etcd,
            apiserver,
            dir,
        };
        wait_for(
            "the API server to be ready",
            Duration::from_secs(90),
            || {
                if let Some(status) = cluster.apiserver.exited() {
                    panic!(
                        "kube-apiserver exited ({status})\n{}",
                        cluster.apiserver.log_tail()
                    );
                }
                let out = cluster.kubectl_output(&["get", "--raw", "/readyz"]);
                out.status.success().then_some(())
            },
        );
        cluster.kubectl(&["create", "namespace", "spangate"]);
        cluster
    }

    /// Applies the CRDs and waits until they serve.
    pub fn apply_crds(&self) {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        // A 1.20 API server predates CEL rules; kubectl's schema check refuses them,
        // and the server drops them.
        self.kubectl(&["apply", "--validate=false", "-f", crds.to_str().unwrap()]);
        self.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/featurerollouts.spangate.dev",
            "crd/segments.spangate.dev",
        ]);
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        scrub_env(&mut Command::new(tool("SPANGATE_KUBECTL")))
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl as the admin; fails the test when kubectl fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` with `yaml`; the output, or kubectl's error.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        let path = self.dir.path().join(format!("apply-{}.yaml", free_port()));
        std::fs::write(&path, yaml).unwrap();
        let out = self.kubectl_output(&["apply", "-f", path.to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// The object as JSON (`kubectl get KIND NAME -o json`).
    pub fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).unwrap()
    }

    /// Runs the kubectl plugin as the admin: (exit code, output).
    pub fn plugin(&self, args: &[&str]) -> (i32, String) {
        let out = scrub_env(&mut Command::new(PLUGIN))
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl-spangate");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Starts the kubectl plugin as the admin, its output going to `<dir>/<log>.log`;
    /// killed when dropped.
    pub fn plugin_in_background(&self, args: &[&str], log: &str) -> ChildGuard {
        let mut command = Command::new(PLUGIN);
        scrub_env(&mut command)
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .args(args);
        ChildGuard::spawn(&mut command, &self.dir.path().join(format!("{log}.log")))
    }

    /// Reasons of the events about `name`, oldest first.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        let events = self.get(&["events.v1.events.k8s.io", "-n", "default"]);
        let mut items: Vec<&Value> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .collect();
        items.sort_by_key(|e| e["eventTime"].as_str().unwrap_or("").to_string());
        items
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Where the operators under test link trace IDs to.
pub const TRACE_URL_TEMPLATE: &str = "http://jaeger.example:16686/trace/{traceId}";

/// A running `spangate run`, killed on drop.
pub struct Operator {
    pub addrs: Addrs,
    pub process: ChildGuard,
}

impl Operator {
    /// Starts `spangate run` against `kubeconfig` as `identity`, competing for
    /// `lease` (none: without leader election), and waits until it listens.
    pub fn start(
        cluster: &Cluster,
        kubeconfig: &Path,
        identity: &str,
        lease: Option<&str>,
    ) -> Self {
        let ready = cluster.dir.path().join(format!("{identity}.ready.json"));
        let mut command = Command::new(super::BIN);
        command
            .arg("run")
            .args(["--otlp-grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-http-addr", "127.0.0.1:0"])
            .args(["--ofrep-addr", "127.0.0.1:0"])
            .args(["--probe-addr", "127.0.0.1:0"])
            .args(["--namespace", "spangate", "--identity", identity])
            .args(match lease {
                Some(lease) => vec!["--lease-name", lease, "--lease-duration", "3s"],
                None => vec!["--no-leader-election"],
            })
            .args(["--tick", "200ms", "--ready-file"])
            .arg(&ready);
        scrub_env(&mut command)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("SPANGATE_TRACE_URL_TEMPLATE", TRACE_URL_TEMPLATE);
        let mut process = ChildGuard::spawn(
            &mut command,
            &cluster.dir.path().join(format!("{identity}.log")),
        );
        let addrs = wait_for("the operator to listen", Duration::from_secs(60), || {
            if let Some(status) = process.exited() {
                panic!("spangate run exited ({status})\n{}", process.log_tail());
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            Some(serde_json::from_str(&text).expect("the ready file is JSON"))
        });
        Self { addrs, process }
    }

    /// `GET path` on the probe port.
    pub fn probe(&self, path: &str) -> (u16, String) {
        let response = reqwest::blocking::Client::new()
            .get(format!("http://{}{path}", self.addrs.probes))
            .send()
            .expect("the probe port answers");
        (response.status().as_u16(), response.text().unwrap())
    }

    /// OFREP evaluation of `flag` for `user` (the whole answer).
    pub fn evaluate(&self, flag: &str, user: &str) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!(
                "http://{}/ofrep/v1/evaluate/flags/{flag}",
                self.addrs.ofrep
            ))
            .json(&serde_json::json!({"context": {"targetingKey": user}}))
            .send()
            .expect("OFREP answers");
        (response.status().as_u16(), response.json().unwrap())
    }

    /// Sends `n` spans per variant of service `checkout` and flag `flag` over
    /// OTLP/HTTP JSON; every `error_every`-th span of variant `on` failed.
    pub fn send_spans(&self, flag: &str, n: usize, error_every: Option<usize>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut spans = Vec::new();
        for i in 0..n {
            for variant in ["off", "on"] {
                let failed = variant == "on" && error_every.is_some_and(|every| i % every == 0);
                spans.push(serde_json::json!({
                    "traceId": format!("{:032x}", now + (i as u128) * 2 + u128::from(variant == "on")),
                    "spanId": format!("{:016x}", i + 1),
                    "name": "POST /checkout",
                    "kind": 2,
                    "startTimeUnixNano": (now - 30_000_000).to_string(),
                    "endTimeUnixNano": now.to_string(),
                    "attributes": [
                        {"key": "feature_flag.key", "value": {"stringValue": flag}},
                        {"key": "feature_flag.result.variant", "value": {"stringValue": variant}},
                    ],
                    "status": {"code": if failed { 2 } else { 1 }},
                }));
            }
        }
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "scopeSpans": [{"spans": spans}],
        }]});
        let response = reqwest::blocking::Client::new()
            .post(format!("http://{}/v1/traces", self.addrs.otlp_http))
            .json(&body)
            .send()
            .expect("OTLP/HTTP answers");
        assert!(
            response.status().is_success(),
            "OTLP/HTTP: {}",
            response.status()
        );
    }
}
