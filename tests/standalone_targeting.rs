//! Targeting in a running `spangate standalone`: segments read from the folder, a
//! segment edit re-evaluating the flags that use it, an entitlement flag served
//! without steps, and rollouts made Invalid by targeting that cannot be served.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Spangate, wait_for};
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
    let (code, body) = evaluate(&spangate, json!({"targetingKey": "u-early"}));
    assert_eq!(code, 200, "{body}");
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
    let (code, body) = evaluate(&spangate, json!({"targetingKey": "u-late"}));
    assert_eq!((code, &body["errorCode"]), (404, &json!("FLAG_NOT_FOUND")));

    // Restoring it serves the flag again.
    write(&dir, "beta.yaml", &segment("u-late"));
    spangate.wait_status("plans", "the flag to be served again", LIMIT, |s| {
        s["phase"] == "Serving"
    });
    assert_eq!(
        evaluate(&spangate, json!({"targetingKey": "u-late"})).1["variant"],
        "pro"
    );
}
