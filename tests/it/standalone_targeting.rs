//! Targeting in a running `spangate standalone`: segments read from the folder, a
//! segment edit re-evaluating the flags that use it, an entitlement flag served
//! without steps, and rollouts made Invalid by targeting that cannot be served.

use std::path::Path;
use std::time::Duration;

use crate::common::{Spangate, wait_for};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

const PLANS: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: plans, namespace: default}
spec:
  flag:
    key: plan-features
    variants: {basic: {seats: 5}, pro: {seats: 50}, elite: {seats: 500}}
    defaultVariant: basic
  targeting:
    targets:
    - {variant: elite, values: [founder]}
    rules:
    - name: beta
      clauses: [{op: segmentMatch, values: [beta-users]}]
      variant: pro
"#;

fn segment(included: &str) -> String {
    format!(
        "apiVersion: spangate.dev/v1alpha1\nkind: Segment\nmetadata: {{name: beta-users, namespace: default}}\nspec:\n  included: [{included}]\n"
    )
}

fn post(spangate: &Spangate, path: &str, context: Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}{path}", spangate.addrs.ofrep))
        .json(&json!({ "context": context }))
        .send()
        .expect("OFREP answers");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn evaluate(spangate: &Spangate, context: Value) -> (u16, Value) {
    post(spangate, "/ofrep/v1/evaluate/flags/plan-features", context)
}

/// Evaluates `context` until `check` holds, and returns that answer. A pass writes
/// each rollout's status as it goes and publishes the flags at its end, so a status
/// can be seen a moment before the flags it describes are served.
fn evaluate_until(
    spangate: &Spangate,
    context: Value,
    what: &str,
    check: impl Fn(u16, &Value) -> bool,
) -> Value {
    wait_for(what, LIMIT, || {
        let (code, body) = evaluate(spangate, context.clone());
        check(code, &body).then_some(body)
    })
}

fn write(dir: &Path, name: &str, text: &str) {
    spangate::store::write_atomically(&dir.join(name), text.as_bytes()).unwrap();
}

#[test]
fn a_segment_edit_re_evaluates_the_flags_that_use_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "plans.yaml", PLANS);
    write(&dir, "beta.yaml", &segment("u-early"));
    let spangate = Spangate::start(&dir, &root.path().join("state"));

    let status = spangate.wait_status("plans", "the flag to be served", LIMIT, |s| {
        s["phase"] == "Serving"
    });
    assert_eq!(status["conditions"][0]["reason"], "Serving", "{status:#}");
    let body = evaluate_until(
        &spangate,
        json!({"targetingKey": "u-early"}),
        "the flag to be published",
        |code, _| code == 200,
    );
    assert_eq!(
        (&body["variant"], &body["reason"], &body["metadata"]["rule"]),
        (&json!("pro"), &json!("TARGETING_MATCH"), &json!("beta"))
    );
    assert_eq!(body["value"], json!({"seats": 50}));
    let (_, body) = evaluate(&spangate, json!({"targetingKey": "founder"}));
    assert_eq!(
        (&body["variant"], &body["metadata"]["matched"]),
        (&json!("elite"), &json!("target"))
    );
    let (_, body) = evaluate(&spangate, json!({"targetingKey": "u-late"}));
    assert_eq!(
        (&body["variant"], &body["reason"]),
        (&json!("basic"), &json!("DEFAULT"))
    );

    // Editing the segment changes who the rollout's rule matches.
    write(&dir, "beta.yaml", &segment("u-late"));
    wait_for("u-late to join the beta", LIMIT, || {
        (evaluate(&spangate, json!({"targetingKey": "u-late"})).1["variant"] == "pro").then_some(())
    });
    let (_, body) = evaluate(&spangate, json!({"targetingKey": "u-early"}));
    assert_eq!(body["variant"], "basic");

    // Deleting it leaves a rule that cannot be served: the rollout is Invalid.
    std::fs::remove_file(dir.join("beta.yaml")).unwrap();
    let status = spangate.wait_status("plans", "the rollout to be Invalid", LIMIT, |s| {
        s["phase"] == "Invalid"
    });
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.targeting.rules[0].clauses[0].values[0]: segment default/beta-users does not exist"),
        "{message}"
    );
    let body = evaluate_until(
        &spangate,
        json!({"targetingKey": "u-late"}),
        "the invalid rollout's flag to be withdrawn",
        |code, _| code == 404,
    );
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");

    // Restoring it serves the flag again.
    write(&dir, "beta.yaml", &segment("u-late"));
    spangate.wait_status("plans", "the flag to be served again", LIMIT, |s| {
        s["phase"] == "Serving"
    });
    evaluate_until(
        &spangate,
        json!({"targetingKey": "u-late"}),
        "the flag to be published again",
        |_, body| body["variant"] == "pro",
    );
}

const FLAGD_FILE: &str = r##"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "metadata": {"flagSetId": "shop"},
  "$evaluators": {
    "isStaff": {"ends_with": [{"var": "email"}, "@spangate.dev"]}
  },
  "flags": {
    "color": {
      "state": "ENABLED",
      "variants": {"red": "#f00", "green": "#0f0", "blue": "#00f"},
      "defaultVariant": "blue",
      "metadata": {"owner": "web"},
      "targeting": {"if": [
        {"$ref": "isStaff"}, "red",
        {"sem_ver": [{"var": "app"}, ">=", "2.0.0"]},
        {"fractional": [{"var": "email"}, ["green", 50], ["blue", 50]]},
        null
      ]}
    },
    "launched": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 1000]}, "on", "off"]}
    },
    "static": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
    "retired": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"},
    "code-default": {
      "state": "ENABLED",
      "variants": {"a": 1},
      "defaultVariant": null,
      "targeting": {"if": [{"==": [{"var": "plan"}, "a"]}, "a", null]}
    },
    "broken": {
      "state": "ENABLED",
      "variants": {"a": 1},
      "defaultVariant": "a",
      "targeting": {"regex_match": [{"var": "email"}, "x"]}
    },
    "typo": {
      "state": "ENABLED",
      "variants": {"a": 1},
      "defaultVariant": "a",
      "targeting": {"var": "email"}
    }
  }
}"##;

fn flag(spangate: &Spangate, key: &str, context: Value) -> (u16, Value) {
    post(
        spangate,
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        context,
    )
}

#[test]
fn a_flagd_file_is_served_with_flagds_semantics() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    let file = root.path().join("flags.json");
    write(root.path(), "flags.json", FLAGD_FILE);
    let spangate = Spangate::start_with_env(
        &dir,
        &root.path().join("state"),
        &[("SPANGATE_FLAGS", file.to_str().unwrap())],
    );
    wait_for("the flag file to be served", LIMIT, || {
        (flag(&spangate, "static", json!({})).0 == 200).then_some(())
    });

    let (code, body) = flag(&spangate, "color", json!({"email": "ann@spangate.dev"}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["variant"], &body["value"], &body["reason"]),
        (&json!("red"), &json!("#f00"), &json!("TARGETING_MATCH"))
    );
    assert_eq!(
        body["metadata"],
        json!({"flagSetId": "shop", "owner": "web", "matched": "flagd"})
    );
    let (_, body) = flag(
        &spangate,
        "color",
        json!({"email": "bob@example.com", "app": "1.9.0"}),
    );
    assert_eq!(
        (&body["variant"], &body["reason"]),
        (&json!("blue"), &json!("DEFAULT"))
    );
    let split: Vec<Value> = (0..40)
        .map(|i| {
            flag(
                &spangate,
                "color",
                json!({"email": format!("u{i}@example.com"), "app": "v2.1"}),
            )
            .1["variant"]
                .clone()
        })
        .collect();
    assert!(
        split.contains(&json!("green")) && split.contains(&json!("blue")),
        "{split:?}"
    );

    let (_, body) = flag(&spangate, "launched", json!({}));
    assert_eq!(
        (&body["variant"], &body["value"]),
        (&json!("on"), &json!(true))
    );
    let (_, body) = flag(&spangate, "static", json!({}));
    assert_eq!(
        (&body["variant"], &body["reason"]),
        (&json!("a"), &json!("STATIC"))
    );

    // Disabled, and no default variant: the client's code default (no value).
    let (code, body) = flag(&spangate, "retired", json!({}));
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"key": "retired", "reason": "DISABLED", "variant": null, "metadata": {"flagSetId": "shop"}})
    );
    let (_, body) = flag(&spangate, "code-default", json!({"plan": "b"}));
    assert_eq!(
        (body.get("value"), &body["variant"], &body["reason"]),
        (None, &json!(null), &json!("DEFAULT"))
    );
    let (_, body) = flag(&spangate, "code-default", json!({"plan": "a"}));
    assert_eq!(body["value"], 1);

    // Targeting that does not parse, and targeting that names no variant.
    let (code, body) = flag(&spangate, "broken", json!({"email": "x"}));
    assert_eq!(
        (code, &body["errorCode"]),
        (400, &json!("PARSE_ERROR")),
        "{body}"
    );
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("regex_match")
    );
    let (code, body) = flag(&spangate, "typo", json!({"email": "secret@example.com"}));
    assert_eq!(
        (code, &body["errorCode"]),
        (400, &json!("GENERAL")),
        "{body}"
    );
    assert!(
        !body.to_string().contains("secret@example.com"),
        "the context is not echoed: {body}"
    );

    // Bulk: every enabled flag; the disabled one is left out, as flagd does.
    let (code, body) = post(
        &spangate,
        "/ofrep/v1/evaluate/flags",
        json!({"email": "a@spangate.dev"}),
    );
    assert_eq!(code, 200);
    let keys: Vec<&str> = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "broken",
            "code-default",
            "color",
            "launched",
            "static",
            "typo"
        ]
    );

    // An edit is served; an edit that does not parse keeps the last good flags.
    write(
        root.path(),
        "flags.json",
        &FLAGD_FILE.replace("\"#00f\"", "\"#0000ff\""),
    );
    wait_for("the edited file to be served", LIMIT, || {
        (flag(&spangate, "color", json!({})).1["value"] == "#0000ff").then_some(())
    });
    write(
        root.path(),
        "flags.json",
        "{\"flags\": {\"static\": {\"state\": \"ON\"}}}",
    );
    wait_for("the refusal to be logged", LIMIT, || {
        spangate
            .log_text()
            .contains("cannot be served")
            .then_some(())
    });
    assert_eq!(flag(&spangate, "color", json!({})).1["value"], "#0000ff");

    // A rollout of the same key wins over the file.
    write(
        &dir,
        "static.yaml",
        "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: static}\nspec:\n  flag: {key: static, variants: {b: 2}, defaultVariant: b}\n",
    );
    wait_for("the rollout to take the key", LIMIT, || {
        (flag(&spangate, "static", json!({})).1["value"] == 2).then_some(())
    });
}

#[test]
fn standalone_serves_a_flag_file_without_a_rollout_folder() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "flags.json", FLAGD_FILE);
    let ready = root.path().join("ready.json");
    let mut command = std::process::Command::new(crate::common::BIN);
    command
        .args(["standalone", "--flags"])
        .arg(root.path().join("flags.json"))
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--ofrep-addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(&ready);
    let mut process = crate::common::ChildGuard::spawn(
        crate::common::scrub_env(&mut command),
        &root.path().join("log"),
    );
    let addrs: crate::common::Addrs = wait_for("the ready file", LIMIT, || {
        assert!(process.exited().is_none(), "{}", process.log_tail());
        serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()
    });
    let body: Value = reqwest::blocking::Client::new()
        .post(format!(
            "http://{}/ofrep/v1/evaluate/flags/static",
            addrs.ofrep
        ))
        .json(&json!({"context": {}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["value"], 1);
}

fn bulk_etag(spangate: &Spangate, if_none_match: Option<&str>) -> (u16, String) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!(
            "http://{}/ofrep/v1/evaluate/flags",
            spangate.addrs.ofrep
        ))
        .json(&json!({"context": {"targetingKey": "u-early"}}));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().expect("OFREP answers");
    let tag = response.headers()["etag"].to_str().unwrap().to_string();
    (response.status().as_u16(), tag)
}

#[test]
fn the_bulk_etag_changes_exactly_when_a_flag_does_and_survives_restarts() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "plans.yaml", PLANS);
    write(&dir, "beta.yaml", &segment("u-early"));
    let state = root.path().join("state");
    let spangate = Spangate::start(&dir, &state);
    spangate.wait_status("plans", "the flag to be served", LIMIT, |s| {
        s["phase"] == "Serving"
    });
    evaluate_until(
        &spangate,
        json!({"targetingKey": "u-early"}),
        "the flag to be published",
        |code, _| code == 200,
    );
    let (code, first) = bulk_etag(&spangate, None);
    assert_eq!(code, 200);
    assert_eq!(bulk_etag(&spangate, Some(&first)), (304, first.clone()));

    // A restarted process serves the same flags under the same tag.
    spangate.kill();
    let spangate = Spangate::start(&dir, &state);
    wait_for("the restarted process to serve the same tag", LIMIT, || {
        (bulk_etag(&spangate, Some(&first)).0 == 304).then_some(())
    });

    // A file that is no rollout or segment changes nothing.
    write(
        &dir,
        "notes.yaml",
        "kind: ConfigMap\nmetadata: {name: notes}\n",
    );
    // The segment a rule uses changes: so does the tag, even for a context whose
    // answer stays the same.
    write(&dir, "beta.yaml", &segment("u-early, u-late"));
    let second = wait_for("a new tag", LIMIT, || {
        let (code, tag) = bulk_etag(&spangate, Some(&first));
        (code == 200).then_some(tag)
    });
    assert_ne!(second, first);
    // Back as it was: the tag is a content hash, so the first one is valid again.
    write(&dir, "beta.yaml", &segment("u-early"));
    wait_for("the first tag again", LIMIT, || {
        (bulk_etag(&spangate, Some(&first)).0 == 304).then_some(())
    });
}
