//! The commands that only read: `get`, `export`, `crd`, the exit codes scripts rely
//! on, and options refused before anything starts.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{BIN, ChildGuard, wait_for};

fn spangate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run spangate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn examples() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rollouts/new-checkout.yaml"
    );
    std::fs::copy(example, temp.path().join("new-checkout.yaml")).unwrap();
    temp
}

#[test]
fn get_prints_a_table_like_kubectl_and_documents_on_request() {
    let dir = examples();
    let path = dir.path().to_str().unwrap();
    let out = spangate(&["get", "--dir", path]);
    assert!(out.status.success());
    let text = stdout(&out);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "PHASE",
            "STEP",
            "WEIGHT",
            "VERDICT",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["default", "new-checkout", "Pending"]);

    let out = spangate(&["get", "--dir", path, "new-checkout", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kind"], "FeatureRollout");
    assert_eq!(doc["spec"]["flag"]["key"], "new-checkout");
    assert_eq!(doc["metadata"]["generation"], 1);

    let out = spangate(&["get", "--dir", path, "-o", "yaml"]);
    let list: serde_json::Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    // Looking writes nothing.
    assert!(!dir.path().join(".spangate").exists());
}

#[test]
fn a_missing_rollout_or_folder_is_an_error_that_says_which() {
    let dir = examples();
    let out = spangate(&["get", "--dir", dir.path().to_str().unwrap(), "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rollout \"nope\" not found"));
    let out = spangate(&["get", "--dir", "/nonexistent-spangate-folder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-spangate-folder"));
    let out = spangate(&["get", "--output", "xml", "--dir", "."]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn a_forward_endpoint_spangate_cannot_reach_is_refused_before_anything_listens() {
    let dir = examples();
    let path = dir.path().to_str().unwrap();
    for (endpoint, says) in [
        ("https://jaeger:4317", "uses https"),
        ("jaeger:4317", "must look like http://host:port"),
        ("http://jaeger:4318/v1/traces", "without a path"),
    ] {
        // Were the endpoint accepted, the process would serve: bound the wait.
        let log = dir.path().join("forward.log");
        let mut process = ChildGuard::spawn(
            Command::new(BIN).args([
                "standalone",
                "--dir",
                path,
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--ofrep-addr",
                "127.0.0.1:0",
                "--probe-addr",
                "127.0.0.1:0",
                "--forward-endpoint",
                endpoint,
            ]),
            &log,
        );
        let status = wait_for(
            "spangate to refuse the endpoint",
            Duration::from_secs(30),
            || process.exited(),
        );
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(1), "{endpoint}: {stderr}");
        assert!(
            stderr.contains("--forward-endpoint") && stderr.contains(says),
            "{endpoint}: {stderr}"
        );
    }
}

#[test]
fn limits_that_cannot_work_are_refused_at_startup_with_the_reason() {
    let dir = examples();
    let path = dir.path().to_str().unwrap();
    let standalone = |extra: &[&str]| {
        let mut args = vec![
            "standalone",
            "--dir",
            path,
            "--otlp-grpc-addr",
            "127.0.0.1:0",
        ];
        args.extend([
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--ofrep-addr",
            "127.0.0.1:0",
        ]);
        args.extend(["--probe-addr", "127.0.0.1:0"]);
        args.extend(extra);
        // Were the value accepted, the process would serve: bound the wait.
        let log = dir.path().join("limits.log");
        let mut process = ChildGuard::spawn(Command::new(BIN).args(&args), &log);
        let status = wait_for(
            "spangate to refuse the value",
            Duration::from_secs(30),
            || process.exited(),
        );
        (status.code(), std::fs::read_to_string(&log).unwrap())
    };
    // A rate of 0 would refuse every request: a usage error (exit code 2).
    let (code, stderr) = standalone(&["--ofrep-rate-limit", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--ofrep-rate-limit")
            && stderr.contains("must be at least 1 request a second"),
        "{stderr}"
    );
    for flag in [
        "--otlp-max-connections",
        "--max-decoded-bytes",
        "--forward-queue-bytes",
    ] {
        let (code, stderr) = standalone(&[flag, "0"]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("must be at least 1"), "{flag}: {stderr}");
    }
    let (code, stderr) = standalone(&["--shutdown-timeout", "0s"]);
    assert_eq!(code, Some(2), "{stderr}");
    // Limits that cannot work together: an error that names the flags.
    let (code, stderr) = standalone(&["--max-in-flight-bytes", "1000"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--max-in-flight-bytes (1000) must hold"),
        "{stderr}"
    );
}

#[test]
fn export_prints_a_flagd_flag_set() {
    let dir = examples();
    let out = spangate(&["export", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flag = &set["flags"]["new-checkout"];
    assert_eq!(flag["state"], "ENABLED");
    assert_eq!(flag["defaultVariant"], "off");
    assert_eq!(flag["variants"]["on"], true);
}

#[test]
fn export_writes_targeting_as_jsonlogic_and_segments_as_evaluators() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/targeting");
    let state = tempfile::tempdir().unwrap();
    let out = spangate(&[
        "export",
        "--dir",
        dir,
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segment = &set["$evaluators"]["segment:default/beta-users"];
    assert_eq!(
        segment["if"][0]["in"][1],
        serde_json::json!(["churned-customer"])
    );
    let search = &set["flags"]["new-search"]["targeting"]["if"];
    assert_eq!(
        search[0],
        serde_json::json!({"in": [{"var": "targetingKey"}, ["qa-alice", "qa-bob"]]})
    );
    assert!(
        search
            .to_string()
            .contains(r#"{"$ref":"segment:default/beta-users"}"#)
    );
    assert!(
        search
            .to_string()
            .contains(r#"{"ends_with":[{"var":"email"},"@gmail.com"]}"#)
    );
    let plans = &set["flags"]["plan-features"];
    assert_eq!(plans["defaultVariant"], "basic");
    assert!(plans["targeting"].to_string().contains("sem_ver"));
}

#[test]
fn export_names_the_flags_flagd_cannot_express_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("regex.yaml"),
        "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: regex}\nspec:\n  flag: {key: by-regex, variants: {a: 1, b: 2}, defaultVariant: a}\n  targeting:\n    rules: [{name: corp, clauses: [{attribute: email, op: matches, values: [\"@corp\\\\.\"]}], variant: b}]\n",
    )
    .unwrap();
    let out = spangate(&["export", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flag \"by-regex\" is not exported: rule \"corp\": the matches clause on email has no JsonLogic equivalent"),
        "{stderr}"
    );
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["flags"], serde_json::json!({}));
}

#[test]
fn crd_prints_what_crds_holds() {
    let out = spangate(&["crd"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for (name, yaml) in spangate::api::crd_files() {
        assert!(text.contains(&yaml), "{name} missing from spangate crd");
    }
}

#[test]
fn a_taken_address_names_the_listener_and_the_flag_that_moves_it() {
    let dir = examples();
    let path = dir.path().to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (flag, serves) in [
        ("--ofrep-addr", "OFREP"),
        ("--probe-addr", "probes and metrics"),
    ] {
        let mut args = vec!["standalone", "--dir", path];
        for listener in [
            "--otlp-grpc-addr",
            "--otlp-http-addr",
            "--ofrep-addr",
            "--probe-addr",
        ] {
            let addr = if listener == flag {
                taken_addr.as_str()
            } else {
                "127.0.0.1:0"
            };
            args.extend([listener, addr]);
        }
        // The address is taken before the process starts, so it stops at once.
        let out = spangate(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot listen for {serves} on {taken_addr}; is another spangate running? \
                 choose another address with {flag}: "
            )),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn every_serving_flag_can_be_set_from_the_environment() {
    // The shared group gives standalone and run the same variables; a bad value
    // in one is refused with the variable's flag named.
    for command in ["standalone", "run"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .expect("run spangate");
        let help = stdout(&out);
        for variable in [
            "SPANGATE_OTLP_GRPC_ADDR",
            "SPANGATE_TICK",
            "SPANGATE_MAX_BODY_BYTES",
            "SPANGATE_READY_FILE",
            "SPANGATE_PRIVATE_ATTRIBUTES",
            "SPANGATE_MAX_IN_FLIGHT_BYTES",
            "SPANGATE_SHUTDOWN_TIMEOUT",
            "SPANGATE_FORWARD_QUEUE_BYTES",
            "SPANGATE_NOTIFY_WEBHOOKS",
            "SPANGATE_NOTIFY_CA_FILE",
        ] {
            assert!(help.contains(variable), "{command} --help lacks {variable}");
        }
    }
    let dir = examples();
    let out = Command::new(BIN)
        .args(["standalone", "--dir", dir.path().to_str().unwrap()])
        .env("SPANGATE_TICK", "soon")
        .output()
        .expect("run spangate");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tick"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_trace_url_template_that_cannot_make_links_is_refused_with_the_reason() {
    let dir = examples();
    for (template, reason) in [
        ("http://jaeger:16686/search", "{traceId}"),
        ("jaeger:16686/trace/{traceId}", "http:// or https://"),
        (
            "http://jaeger/trace/{trace_id}",
            "{trace_id} is not a placeholder",
        ),
    ] {
        for command in ["standalone", "run"] {
            let mut spangate = Command::new(BIN);
            spangate.args([command, "--trace-url-template", template]);
            if command == "standalone" {
                spangate.args(["--dir", dir.path().to_str().unwrap()]);
            }
            let out = spangate.output().expect("run spangate");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {template}: {stderr}");
            assert!(
                stderr.contains("--trace-url-template") && stderr.contains(reason),
                "{command} {template}: {stderr}"
            );
        }
    }
}

#[test]
fn a_notify_webhook_that_is_not_http_is_refused_with_the_reason() {
    let dir = examples();
    for command in ["standalone", "run"] {
        for (how, value) in [
            ("flag", "ftp://hooks/x"),
            ("env", "https://ok/hook,hooks/x"),
        ] {
            let mut spangate = Command::new(BIN);
            spangate.arg(command);
            if how == "flag" {
                spangate.args(["--notify-webhook", value]);
            } else {
                // The variable holds several URLs, comma-separated, each checked.
                spangate.env("SPANGATE_NOTIFY_WEBHOOKS", value);
            }
            if command == "standalone" {
                spangate.args(["--dir", dir.path().to_str().unwrap()]);
            }
            let out = spangate.output().expect("run spangate");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {value}: {stderr}");
            assert!(
                stderr.contains("--notify-webhook")
                    && stderr.contains(if how == "flag" {
                        "http:// or https://"
                    } else {
                        "not a URL"
                    }),
                "{command} {value}: {stderr}"
            );
        }
    }
}
