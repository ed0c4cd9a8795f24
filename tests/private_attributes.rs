//! Private attributes never leave the process. A standalone spangate runs with debug
//! logs, its own traces exported and application spans forwarded; requests carry
//! planted values in private attributes (the rollout's, and the operator-wide ones)
//! that targeting uses; then every output is searched: logs, the state folder
//! (status, events), OFREP answers, and the spans exported and forwarded. Visible
//! attributes of the same requests are searched for too, to prove each output would
//! have shown a leak.

mod common;

use std::time::Duration;

use common::otlp::TraceBackend;
use common::{Spangate, wait_for};
use serde_json::{Value, json};
use spangate::ingest::ForwardProtocol;

const PLANTED: [&str; 4] = [
    "planted-email-5f1c",
    "planted-phone-77ab",
    "planted-ssn-0e9d",
    "planted-key-c4d2",
];
const VISIBLE: &str = "visible-plan-3b8e";

const ROLLOUT: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: checkout, namespace: default}
spec:
  flag: {key: new-checkout, variants: {"off": false, "on": true}, defaultVariant: "off", rolloutVariant: "on"}
  bucketBy: accountId
  service: checkout
  steps: [50, 100]
  stepDuration: 1h
  privateAttributes: [email, profile.ssn]
  targeting:
    rules:
    - name: corp
      clauses: [{attribute: email, op: endsWith, values: ["@corp.example"]}]
      variant: "on"
    - name: by-phone
      clauses: [{attribute: phone, op: startsWith, values: ["+1"]}]
      variant: "on"
"#;

/// A flag whose targeting key itself is private: `feature_flag.context.id` must
/// not be shown for it.
const OTHER: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: banner, namespace: default}
spec:
  flag: {key: banner, variants: {"a": "A", "b": "B"}, defaultVariant: "a"}
  privateAttributes: [targetingKey]
  targeting:
    rules:
    - clauses: [{attribute: plan, op: in, values: [visible-plan-3b8e]}]
      variant: "b"
"#;

fn post(spangate: &Spangate, path: &str, body: Value) -> String {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}{path}", spangate.addrs.ofrep))
        .json(&body)
        .send()
        .expect("OFREP answers");
    let headers = format!("{:?}", response.headers());
    format!("{headers}\n{}", response.text().unwrap())
}

/// An application span that carries the planted e-mail as an attribute.
fn otlp_span(spangate: &Spangate) {
    let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", "checkout")]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "checkout",
            "startTimeUnixNano": "1000000",
            "endTimeUnixNano": "2000000",
            "attributes": [
                string("feature_flag.key", "new-checkout"),
                string("feature_flag.result.variant", "on"),
                string("user.email", &format!("{}@corp.example", PLANTED[0])),
            ],
        }]}],
    }]});
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/traces", spangate.addrs.otlp_http))
        .json(&body)
        .send()
        .expect("OTLP answers");
    assert!(response.status().is_success(), "{response:?}");
}

fn read_tree(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, out);
        } else {
            out.push_str(&format!("--- {}\n", path.display()));
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_private_values_appear_in_no_output() {
    let received = TraceBackend::default();
    let endpoint = received.start(ForwardProtocol::Grpc).await;
    tokio::task::spawn_blocking(move || search_every_output(&endpoint, &received))
        .await
        .unwrap();
}

fn search_every_output(endpoint: &str, received: &TraceBackend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("checkout.yaml"), ROLLOUT).unwrap();
    std::fs::write(dir.join("banner.yaml"), OTHER).unwrap();
    let state = temp.path().join("state");
    let mut spangate = Spangate::start_with_env(
        &dir,
        &state,
        &[
            ("RUST_LOG", "debug"),
            ("SPANGATE_PRIVATE_ATTRIBUTES", "phone"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            // Application spans go on to the same backend as spangate's own.
            ("SPANGATE_FORWARD_ENDPOINT", endpoint),
        ],
    );
    spangate.wait_status(
        "checkout",
        "the rollout to start",
        Duration::from_secs(30),
        |s| s["phase"] == "Progressing",
    );
    // The status is written during a pass, the flags published at its end.
    wait_for("the flags to be published", Duration::from_secs(30), || {
        let answer = post(
            &spangate,
            "/ofrep/v1/evaluate/flags/banner",
            json!({"context": {"targetingKey": "visible-user-1"}}),
        );
        answer.contains("\"value\"").then_some(())
    });

    let context = json!({
        "targetingKey": "visible-user-1",
        "accountId": "acct-1",
        "email": format!("{}@corp.example", PLANTED[0]),
        "phone": PLANTED[1],
        "profile": {"ssn": PLANTED[2], "city": "visible-city"},
        "plan": VISIBLE,
    });
    let mut answers = String::new();
    let single = post(
        &spangate,
        "/ofrep/v1/evaluate/flags/new-checkout",
        json!({ "context": context }),
    );
    assert!(
        single.contains("\"rule\":\"corp\""),
        "targeting used the private e-mail: {single}"
    );
    answers.push_str(&single);
    let mut by_phone = context.clone();
    by_phone["email"] = json!("nobody@elsewhere.example");
    by_phone["phone"] = json!(format!("+1-{}", PLANTED[1]));
    let phone = post(
        &spangate,
        "/ofrep/v1/evaluate/flags/new-checkout",
        json!({ "context": by_phone }),
    );
    assert!(
        phone.contains("\"rule\":\"by-phone\""),
        "targeting used the private phone: {phone}"
    );
    answers.push_str(&phone);
    answers.push_str(&post(
        &spangate,
        "/ofrep/v1/evaluate/flags",
        json!({ "context": context }),
    ));
    // An error answer, and a flag whose targeting key itself is private.
    let mut no_account = context.clone();
    no_account["email"] = json!("someone@elsewhere.example");
    no_account.as_object_mut().unwrap().remove("accountId");
    no_account["phone"] = json!(PLANTED[1]);
    answers.push_str(&post(
        &spangate,
        "/ofrep/v1/evaluate/flags/new-checkout",
        json!({ "context": no_account }),
    ));
    let mut secret_key = context.clone();
    secret_key["targetingKey"] = json!(PLANTED[3]);
    answers.push_str(&post(
        &spangate,
        "/ofrep/v1/evaluate/flags/banner",
        json!({ "context": secret_key }),
    ));
    otlp_span(&spangate);

    // The evaluation spans arrive with the visible attributes: spans are searched.
    wait_for(
        "an exported evaluation span",
        Duration::from_secs(60),
        || {
            let text = received.text();
            (text.contains("ofrep.evaluate") && text.contains(VISIBLE)).then_some(())
        },
    );
    // The application's span is forwarded, its e-mail hidden.
    wait_for(
        "the forwarded application span",
        Duration::from_secs(60),
        || received.text().contains("user.email").then_some(()),
    );
    // A clean stop flushes every span still queued.
    let exit = spangate.process.terminate(Duration::from_secs(30));
    assert!(exit.success(), "spangate did not stop cleanly: {exit}");

    let logs = std::fs::read_to_string(&spangate.process.log).unwrap();
    let mut state_files = String::new();
    read_tree(&state, &mut state_files);
    let spans = received.text();
    assert!(
        logs.contains(VISIBLE) && logs.contains("visible-city"),
        "debug logs show evaluations"
    );
    assert!(
        logs.contains("\\\"[private]\\\"") || logs.contains("[private]"),
        "redactions are shown"
    );
    assert!(
        spans.contains("visible-city") && spans.contains("[private]"),
        "spans show contexts, redacted"
    );
    assert!(state_files.contains("events.jsonl") && state_files.contains("Progressing"));
    for planted in PLANTED {
        for (output, text) in [
            ("logs", &logs),
            ("state folder", &state_files),
            ("OFREP answers", &answers),
            ("exported spans", &spans),
        ] {
            assert!(
                !text.contains(planted),
                "{planted} leaked into the {output}:\n{}",
                excerpt(text, planted)
            );
        }
    }
}

fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(300)
        .map_or(0, |(i, _)| i);
    let end = text[at..]
        .char_indices()
        .nth(300)
        .map_or(text.len(), |(i, _)| at + i);
    text[start..end].to_string()
}
