//! Targeting through real OpenFeature SDKs and their OFREP providers: the Python
//! server SDK (one flag per request) and the JavaScript web SDK (every flag at once
//! from the bulk endpoint, polled with If-None-Match), against a standalone
//! spangate serving `examples/targeting` and `examples/flagd/flags.json` behind a
//! bearer token.
//!
//! `./scripts/test` installs the SDKs and names them with `SPANGATE_TEST_PYTHON` and
//! `SPANGATE_TEST_NODE_MODULES`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{ChildGuard, Spangate, scrub_env, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-9d3e";
const LIMIT: Duration = Duration::from_secs(60);

fn from_env(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!("{name} is not set: run ./scripts/test, which installs the SDKs and sets it"),
    }
}

fn examples(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(root.join("targeting")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// A spangate over the targeting examples and the flagd example file, with auth.
fn start(root: &Path) -> Spangate {
    let dir = root.join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    examples(&dir);
    let tokens = root.join("tokens");
    std::fs::write(&tokens, format!("# OFREP clients\n{TOKEN}\n")).unwrap();
    let flags = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flagd/flags.json");
    let spangate = Spangate::start_with_env(
        &dir,
        &root.join("state"),
        &[
            ("SPANGATE_FLAGS", flags.to_str().unwrap()),
            ("SPANGATE_OFREP_TOKENS_FILE", tokens.to_str().unwrap()),
        ],
    );
    spangate.wait_status("new-search", "the rollout to start", LIMIT, |s| {
        s["phase"] == "Progressing"
    });
    // The status is written during a pass, the flags published at its end.
    wait_for("the flags to be published", LIMIT, || {
        let code = reqwest::blocking::Client::new()
            .post(format!(
                "http://{}/ofrep/v1/evaluate/flags/plan-features",
                spangate.addrs.ofrep
            ))
            .bearer_auth(TOKEN)
            .json(&json!({"context": {}}))
            .send()
            .ok()?
            .status();
        (code == 200).then_some(())
    });
    spangate
}

/// Runs `evaluations` through the Python SDK with `token` ("-" for none).
fn python(spangate: &Spangate, token: &str, evaluations: &Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ofrep_evaluate.py");
    let mut child = scrub_env(&mut Command::new(from_env("SPANGATE_TEST_PYTHON")))
        .arg("-I")
        .arg(script)
        .arg(format!("http://{}", spangate.addrs.ofrep))
        .arg(token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(evaluations.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn the_python_sdk_sees_targets_rules_segments_and_errors() {
    let root = tempfile::tempdir().unwrap();
    let spangate = start(root.path());
    let eval = |flag: &str, kind: &str, default: Value, context: Value| json!({"flag": flag, "type": kind, "default": default, "context": context});
    let evaluations = json!([
        eval(
            "new-search",
            "boolean",
            json!(false),
            json!({"targetingKey": "qa-alice"})
        ),
        eval(
            "new-search",
            "boolean",
            json!(false),
            json!({"targetingKey": "u1", "accountId": "a1", "email": "x@gmail.com"})
        ),
        eval(
            "new-search",
            "boolean",
            json!(false),
            json!({"targetingKey": "u2", "accountId": "a2", "plan": "elite"})
        ),
        eval(
            "new-search",
            "boolean",
            json!(true),
            json!({"targetingKey": "vip-carol", "accountId": "a3"})
        ),
        eval(
            "new-search",
            "boolean",
            json!(true),
            json!({"targetingKey": "u3"})
        ),
        eval(
            "plan-features",
            "object",
            json!({}),
            json!({"targetingKey": "u4", "plan": "elite"})
        ),
        eval(
            "plan-features",
            "object",
            json!({}),
            json!({"targetingKey": "u5", "plan": "free"})
        ),
        eval(
            "header-color",
            "string",
            json!("none"),
            json!({"targetingKey": "u6", "email": "a@spangate.dev"})
        ),
        eval(
            "no-such-flag",
            "string",
            json!("fallback"),
            json!({"targetingKey": "u7"})
        ),
    ]);
    let r = python(&spangate, TOKEN, &evaluations);
    let summary = |i: usize| {
        (
            r[i]["value"].clone(),
            r[i]["variant"].clone(),
            r[i]["reason"].clone(),
        )
    };

    assert_eq!(
        summary(0),
        (json!(true), json!("new"), json!("TARGETING_MATCH")),
        "{:#}",
        r[0]
    );
    assert_eq!(r[0]["flag_metadata"]["matched"], "target");
    assert_eq!(r[0]["flag_metadata"]["weight"], 5.0);
    assert_eq!(r[0]["flag_metadata"]["rollout"], "default/new-search");
    assert_eq!(summary(1).0, json!(true));
    assert_eq!(r[1]["flag_metadata"]["rule"], "gmail");
    assert_eq!(r[2]["flag_metadata"]["rule"], "beta", "{:#}", r[2]);
    assert_eq!(
        summary(3),
        (json!(false), json!("old"), json!("TARGETING_MATCH"))
    );
    assert_eq!(r[3]["flag_metadata"]["matched"], "exclusion");
    // No rule matched and the split needs accountId: the SDK's default, with the code.
    assert_eq!(
        (&r[4]["value"], &r[4]["reason"]),
        (&json!(true), &json!("ERROR"))
    );
    assert_eq!(r[4]["error_code"], "TARGETING_KEY_MISSING");
    assert_eq!(r[5]["value"], json!({"seats": 500, "sso": true}));
    assert_eq!(
        summary(6),
        (
            json!({"seats": 5, "sso": false}),
            json!("basic"),
            json!("DEFAULT")
        )
    );
    assert_eq!(
        summary(7),
        (json!("#ff0000"), json!("red"), json!("TARGETING_MATCH"))
    );
    assert_eq!(
        (&r[8]["value"], &r[8]["error_code"]),
        (&json!("fallback"), &json!("FLAG_NOT_FOUND"))
    );

    // Without the token, or with another one, nothing is served.
    let one = json!([evaluations[0].clone()]);
    for token in ["-", "wrong-token"] {
        let r = python(&spangate, token, &one);
        assert_eq!(
            (&r[0]["value"], &r[0]["reason"]),
            (&json!(false), &json!("ERROR")),
            "{token}"
        );
        assert_eq!(r[0]["error_code"], "GENERAL", "{token}");
    }
}

fn segment_with(member: &str) -> String {
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/targeting/beta-users.yaml"),
    )
    .unwrap();
    original.replace(
        "[beta-tester-1, beta-tester-2]",
        &format!("[beta-tester-1, {member}]"),
    )
}

/// The JSON lines the web SDK script printed so far.
fn lines(script: &ChildGuard) -> Vec<Value> {
    std::fs::read_to_string(&script.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
#[ignore = "needs the OpenFeature web SDK: run ./scripts/test"]
fn the_web_sdk_reads_every_flag_in_bulk_and_sees_a_segment_edit() {
    let root = tempfile::tempdir().unwrap();
    let spangate = start(root.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/ofrep_web.cjs");
    let context = json!({"targetingKey": "web-user", "plan": "pro", "accountId": "acct-web"});
    let mut command = Command::new("node");
    command
        .arg(script)
        .arg(format!("http://{}", spangate.addrs.ofrep))
        .arg(context.to_string())
        .args([
            "new-search:boolean",
            "plan-features:object",
            "header-color:string",
            "no-such-flag:string",
        ])
        .env("NODE_MODULES", from_env("SPANGATE_TEST_NODE_MODULES"))
        .env("OFREP_TOKEN", TOKEN);
    let mut web = ChildGuard::spawn(scrub_env(&mut command), &root.path().join("web.log"));
    let ready = wait_for("the web SDK to be ready", LIMIT, || {
        if let Some(status) = web.exited() {
            panic!("the web SDK script exited ({status}): {}", web.log_tail());
        }
        lines(&web).into_iter().find(|l| l["event"] == "ready")
    });
    let flags = &ready["flags"];
    assert_eq!(
        flags["plan-features"]["value"],
        json!({"seats": 50, "sso": false})
    );
    assert_eq!(flags["plan-features"]["reason"], "TARGETING_MATCH");
    assert_eq!(flags["header-color"]["variant"], "blue", "{flags:#}");
    assert_eq!(flags["no-such-flag"]["errorCode"], "FLAG_NOT_FOUND");
    let before = flags["new-search"].clone();
    assert_eq!(before["metadata"]["phase"], "Progressing", "{before:#}");

    // web-user joins the beta segment: the provider's next poll sees a new ETag.
    let dir = spangate.dir.clone();
    std::fs::write(dir.join("beta-users.yaml"), segment_with("web-user")).unwrap();
    let changed = wait_for("the web SDK to see the change", LIMIT, || {
        lines(&web).into_iter().find(|l| {
            l["event"] == "changed" && l["flags"]["new-search"]["metadata"]["rule"] == "beta"
        })
    });
    let after = &changed["flags"]["new-search"];
    assert_eq!(
        (&after["value"], &after["reason"]),
        (&json!(true), &json!("TARGETING_MATCH"))
    );
    assert!(
        lines(&web).iter().all(|l| l["event"] != "error"),
        "{}",
        web.log_tail()
    );
}
