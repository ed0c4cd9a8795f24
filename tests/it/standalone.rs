//! `spangate standalone` end to end: a real process on loopback, flags asked for
//! over OFREP, spans sent by the Rust `opentelemetry-otlp` exporter over gRPC and
//! HTTP, status read with `spangate get`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::common::Spangate;
use crate::common::fixture::RolloutFixture;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy)]
pub(crate) enum Transport {
    Grpc,
    Http,
}

/// The checkout service: asks for the flag over OFREP and reports each request as
/// a span through a real OTLP exporter.
pub(crate) struct Service {
    provider: SdkTracerProvider,
    client: reqwest::Client,
    ofrep: SocketAddr,
    next_user: u32,
}

/// How a request on `variant` behaves: (latency in ms, failed).
pub(crate) type Behaviour = fn(variant: &str, n: u32) -> (u64, bool);

pub(crate) fn healthy(_: &str, n: u32) -> (u64, bool) {
    (30 + (n % 20) as u64, n.is_multiple_of(100))
}

/// Half the new variant's requests fail: at the 40 spans of `minSamples` that is beyond
/// doubt at the rollout's 99% confidence, over every look (a quarter is not always).
pub(crate) fn errors_on_new_variant(variant: &str, n: u32) -> (u64, bool) {
    let (latency, failed) = healthy(variant, n);
    (latency, failed || (variant == "on" && n.is_multiple_of(2)))
}

fn slow_new_variant(variant: &str, n: u32) -> (u64, bool) {
    let (latency, failed) = healthy(variant, n);
    (
        if variant == "on" {
            latency * 4 + 300
        } else {
            latency
        },
        failed,
    )
}

impl Service {
    pub(crate) fn new(spangate: &Spangate, transport: Transport) -> Self {
        let resource = Resource::builder()
            .with_service_name("checkout")
            .with_attribute(KeyValue::new("vcs.ref.head.revision", "3f2c1a9"))
            .build();
        let exporter = match transport {
            Transport::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://{}", spangate.addrs.otlp_grpc))
                .build()
                .unwrap(),
            Transport::Http => SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("http://{}/v1/traces", spangate.addrs.otlp_http))
                .build()
                .unwrap(),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SimpleSpanProcessor::new(exporter))
            .with_resource(resource)
            .build();
        Self {
            provider,
            client: reqwest::Client::new(),
            ofrep: spangate.addrs.ofrep,
            next_user: 0,
        }
    }

    async fn variant(&self, user: u32) -> String {
        crate::common::checkout_variant(&self.client, self.ofrep, user).await
    }

    /// One round of `n` requests; spans are exported before it returns.
    async fn round(&mut self, n: u32, behaviour: Behaviour) {
        let tracer = self.provider.tracer("checkout");
        for _ in 0..n {
            let user = self.next_user;
            self.next_user += 1;
            let variant = self.variant(user).await;
            let (latency_ms, failed) = behaviour(&variant, user);
            let end = SystemTime::now();
            let mut span = tracer
                .span_builder("POST /checkout")
                .with_start_time(end - Duration::from_millis(latency_ms))
                .with_attributes([
                    KeyValue::new("feature_flag.key", "new-checkout"),
                    KeyValue::new("feature_flag.result.variant", variant),
                ])
                .start(&tracer);
            if failed {
                span.set_status(Status::error("checkout failed"));
            }
            span.end_with_timestamp(end);
        }
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .unwrap()
            .unwrap();
    }

    /// Sends rounds until the rollout's status satisfies `done`.
    pub(crate) async fn drive(
        &mut self,
        spangate: &Spangate,
        behaviour: Behaviour,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            self.round(100, behaviour).await;
            let status = spangate.get("checkout")["status"].clone();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rollout did not get there in {LIMIT:?}; status: {status:#}\nlog:\n{}",
                spangate.log_text()
            );
        }
    }
}

pub(crate) fn folders(
    rollout: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("checkout.yaml"), rollout).unwrap();
    let state = temp.path().join("state");
    (temp, dir, state)
}

pub(crate) fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or("")
}

fn failed_checks(status: &Value) -> Vec<String> {
    serde_json::from_value(status["lastVerdict"]["failedChecks"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_variant_is_promoted_through_every_step() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    let mut service = Service::new(&spangate, Transport::Grpc);
    let status = service
        .drive(&spangate, healthy, |s| phase(s) != "Progressing")
        .await;
    assert_eq!(phase(&status), "Promoted", "{status:#}");
    assert_eq!(status["weight"], 100.0);
    let reasons: Vec<&str> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Started", "StepAdvanced", "Promoted"]);
    // Everyone now gets the new variant.
    for user in 0..50 {
        assert_eq!(service.variant(user).await, "on");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variant_with_more_errors_is_rolled_back() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    let mut service = Service::new(&spangate, Transport::Http);
    let status = service
        .drive(&spangate, errors_on_new_variant, |s| {
            phase(s) != "Progressing"
        })
        .await;
    assert_eq!(phase(&status), "RolledBack", "{status:#}");
    assert_eq!(status["weight"], 0.0);
    let checks = failed_checks(&status);
    assert!(checks.contains(&"maxErrorRate".to_string()), "{checks:?}");
    assert!(!checks.iter().any(|c| c.contains("Latency")), "{checks:?}");
    let verdict = &status["lastVerdict"];
    assert!(verdict["candidate"]["errors"].as_u64().unwrap() > 0);
    assert!(!verdict["exemplarTraceIds"].as_array().unwrap().is_empty());
    // Everyone is back on the old variant.
    for user in 0..50 {
        assert_eq!(service.variant(user).await, "off");
    }
}

/// Exported to a collector, the decision to roll back says why: each check's
/// numbers and outcome, and the failing traces to look at, and nothing else noisy.
#[tokio::test(flavor = "multi_thread")]
async fn the_rollback_decision_span_carries_the_evidence() {
    let received = crate::common::otlp::TraceBackend::default();
    let endpoint = received
        .start(spangate::ingest::ForwardProtocol::Grpc)
        .await;
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start_with_env(
        &dir,
        &state,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let mut service = Service::new(&spangate, Transport::Grpc);
    let status = service
        .drive(&spangate, errors_on_new_variant, |s| {
            phase(s) != "Progressing"
        })
        .await;
    assert_eq!(phase(&status), "RolledBack", "{status:#}");
    let verdict = &status["lastVerdict"];
    let decision = crate::common::wait_for(
        "the RolledBack decision span",
        Duration::from_secs(60),
        || {
            received.spans().into_iter().find_map(|(_, span)| {
                (span.name == "decision"
                    && crate::common::otlp::attribute(&span, "reason").as_deref()
                        == Some("RolledBack"))
                .then_some(span)
            })
        },
    );
    let attribute = |key: &str| crate::common::otlp::attribute(&decision, key);
    assert_eq!(
        attribute("spangate.check.maxErrorRate.outcome").as_deref(),
        Some("Fail"),
        "{decision:?}"
    );
    assert_eq!(
        attribute("spangate.check.maxErrorRate.service").as_deref(),
        Some("checkout")
    );
    assert_eq!(
        attribute("spangate.verdict.message").as_deref(),
        verdict["message"].as_str()
    );
    let value = |key: &str| {
        decision
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    assert_eq!(
        value("spangate.check.maxErrorRate.threshold"),
        Some(Any::DoubleValue(0.08)),
        "the fixture's maxErrorRate"
    );
    let Some(Any::ArrayValue(ids)) = value("spangate.exemplar_trace_ids") else {
        panic!("no exemplar trace IDs in {decision:?}");
    };
    let ids: Vec<Option<String>> = ids
        .values
        .iter()
        .map(|v| crate::common::otlp::text(v.value.as_ref()?))
        .collect();
    let expected: Vec<Option<String>> = verdict["exemplarTraceIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().map(str::to_string))
        .collect();
    assert_eq!(ids, expected);
    // The whole run is one trace: a `rollout` root span, every decision its child.
    let trace_id = status["traceId"].as_str().expect("status.traceId");
    let root_id = status["traceRootSpanId"]
        .as_str()
        .expect("status.traceRootSpanId");
    let spans = received.spans();
    assert!(
        spans.iter().any(|(_, span)| span.name == "rollout"
            && hex::encode(&span.trace_id) == trace_id
            && hex::encode(&span.span_id) == root_id),
        "no rollout span {trace_id}/{root_id}"
    );
    let decisions: Vec<_> = spans
        .iter()
        .filter(|(_, span)| span.name == "decision")
        .collect();
    let reasons: Vec<Option<String>> = decisions
        .iter()
        .map(|(_, span)| crate::common::otlp::attribute(span, "reason"))
        .collect();
    assert!(
        reasons.contains(&Some("Started".to_string())),
        "{reasons:?}"
    );
    for (_, span) in &decisions {
        assert_eq!(hex::encode(&span.trace_id), trace_id, "{span:?}");
        assert_eq!(hex::encode(&span.parent_span_id), root_id, "{span:?}");
    }
    for noise in [
        "code.file.path",
        "code.line.number",
        "code.module.name",
        "thread.id",
        "thread.name",
        "busy_ns",
        "idle_ns",
    ] {
        assert!(value(noise).is_none(), "{noise} in {decision:?}");
    }
}

/// With `--trace-url-template` (here from its environment variable), what status
/// says is linked: each span the verdict points at, failing and slowest, and the
/// rollout's own trace; the rollback's event links to a failing request, and
/// `spangate get` prints the links.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_trace_url_template_status_events_and_get_carry_links() {
    const TEMPLATE: &str = "http://jaeger.example:16686/trace/{traceId}?uiFind={spanId}";
    let link = |trace: &str, span: &str| {
        TEMPLATE
            .replace("{traceId}", trace)
            .replace("{spanId}", span)
    };
    let received = crate::common::otlp::TraceBackend::default();
    let endpoint = received
        .start(spangate::ingest::ForwardProtocol::Grpc)
        .await;
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start_with_env(
        &dir,
        &state,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("SPANGATE_TRACE_URL_TEMPLATE", TEMPLATE),
        ],
    );
    let mut service = Service::new(&spangate, Transport::Http);
    let status = service
        .drive(&spangate, errors_on_new_variant, |s| {
            phase(s) != "Progressing"
        })
        .await;
    assert_eq!(phase(&status), "RolledBack", "{status:#}");

    let exemplars = status["lastVerdict"]["exemplarSpans"].as_array().unwrap();
    let whys: Vec<&str> = exemplars
        .iter()
        .map(|e| e["why"].as_str().unwrap())
        .collect();
    assert!(
        whys.contains(&"Error") && whys.contains(&"Slowest"),
        "{whys:?}"
    );
    for exemplar in exemplars {
        let (trace, span) = (
            exemplar["traceId"].as_str().unwrap(),
            exemplar["spanId"].as_str().unwrap(),
        );
        assert_eq!(exemplar["traceUrl"], link(trace, span), "{exemplar}");
    }
    let failing = exemplars.iter().find(|e| e["why"] == "Error").unwrap();
    let rollout_trace = link(
        status["traceId"].as_str().expect("status.traceId"),
        status["traceRootSpanId"].as_str().unwrap(),
    );
    assert_eq!(status["traceUrl"], rollout_trace.as_str());

    let events = std::fs::read_to_string(state.join("events.jsonl")).unwrap();
    let rollback: Value = events
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["reason"] == "RolledBack")
        .unwrap_or_else(|| panic!("no RolledBack event in {events}"));
    assert!(
        rollback["note"].as_str().unwrap().ends_with(&format!(
            "; failed trace {}",
            failing["traceUrl"].as_str().unwrap()
        )),
        "{rollback}"
    );

    let get = |format: &str| {
        let out = crate::common::scrub_env(&mut std::process::Command::new(crate::common::BIN))
            .args(["get", "--dir"])
            .arg(&dir)
            .arg("--state-dir")
            .arg(&state)
            .args(["checkout", "-o", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let wide = get("wide");
    let first = exemplars[0]["traceUrl"].as_str().unwrap();
    assert!(wide.lines().next().unwrap().contains("TRACE"), "{wide}");
    assert!(wide.contains(first), "{wide}");
    let yaml = get("yaml");
    for exemplar in exemplars {
        let url = exemplar["traceUrl"].as_str().unwrap();
        assert!(yaml.contains(&format!("traceUrl: {url}")), "{yaml}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variant_with_higher_p99_latency_is_rolled_back() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    let mut service = Service::new(&spangate, Transport::Grpc);
    let status = service
        .drive(&spangate, slow_new_variant, |s| phase(s) != "Progressing")
        .await;
    assert_eq!(phase(&status), "RolledBack", "{status:#}");
    // The first latency check to be sure stops the rollout; the other may not be
    // sure yet at that look.
    let checks = failed_checks(&status);
    assert!(
        checks
            .iter()
            .any(|c| c == "maxLatencyMs.p99" || c == "maxLatencyIncrease"),
        "{checks:?}"
    );
    assert!(
        !checks.iter().any(|c| c.contains("ErrorRate")),
        "{checks:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_in_the_middle_resumes_at_the_same_step() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    let mut service = Service::new(&spangate, Transport::Grpc);
    let before = service
        .drive(&spangate, healthy, |s| s["currentStep"] == 1)
        .await;
    assert_eq!(before["weight"], 50.0);
    spangate.kill();

    let spangate = Spangate::start(&dir, &state);
    // The restarted process serves the same step before it sees a single span.
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "http://{}/ofrep/v1/evaluate/flags/new-checkout",
            spangate.addrs.ofrep
        ))
        .json(&json!({"context": {"targetingKey": "u", "accountId": "acct-1"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["metadata"]["step"], 1, "{answer}");
    assert_eq!(answer["metadata"]["weight"], 50.0, "{answer}");
    let after = spangate.get("checkout")["status"].clone();
    assert_eq!(
        (after["currentStep"].clone(), after["stepStartedAt"].clone()),
        (
            before["currentStep"].clone(),
            before["stepStartedAt"].clone()
        )
    );
    let restarts = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["reason"] == "Started")
        .count();
    assert_eq!(restarts, 1, "the rollout must not start over: {after:#}");

    let mut service = Service::new(&spangate, Transport::Grpc);
    let done = service
        .drive(&spangate, healthy, |s| phase(s) != "Progressing")
        .await;
    assert_eq!(phase(&done), "Promoted");
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_edits_are_picked_up_and_invalid_files_say_what_is_wrong() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    spangate.wait_status("checkout", "Progressing", LIMIT, |s| {
        phase(s) == "Progressing"
    });

    std::fs::write(dir.join("broken.yaml"), "apiVersion: spangate.dev/v1alpha1\nkind: FeatureRollout\nmetadata: {name: broken}\nspec: {flag: [\n").unwrap();
    let broken = spangate.wait_status("broken", "an Invalid parse error", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    assert!(
        broken["message"].as_str().unwrap().contains("broken.yaml"),
        "{broken:#}"
    );

    let rollout = RolloutFixture::new("other").flag("other-flag");
    std::fs::write(
        dir.join("other.yaml"),
        rollout.clone().steps([50, 10]).yaml(),
    )
    .unwrap();
    let other = spangate.wait_status("other", "Invalid steps", LIMIT, |s| phase(s) == "Invalid");
    let message = other["message"].as_str().unwrap();
    assert!(
        message.contains("spec.steps must increase, but steps[1] (10) is not above steps[0] (50)"),
        "{message}"
    );
    let ready = other["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );

    std::fs::write(dir.join("other.yaml"), rollout.steps([10, 50]).yaml()).unwrap();
    let fixed = spangate.wait_status("other", "the fixed rollout to start", LIMIT, |s| {
        phase(s) == "Progressing"
    });
    assert_eq!(fixed["weight"], 10.0);
    assert_eq!(spangate.get("other")["metadata"]["generation"], 2);

    // A second rollout of the same flag is refused, naming the first.
    std::fs::write(
        dir.join("twin.yaml"),
        RolloutFixture::new("twin").steps([10]).yaml(),
    )
    .unwrap();
    let twin = spangate.wait_status("twin", "a flag-key conflict", LIMIT, |s| {
        phase(s) == "Invalid"
    });
    assert!(
        twin["message"]
            .as_str()
            .unwrap()
            .contains("already rolled out by default/checkout"),
        "{twin:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_protocol_errors_and_serving_goes_on() {
    let (_temp, dir, state) = folders(&RolloutFixture::new("checkout").yaml());
    let spangate = Spangate::start(&dir, &state);
    spangate.wait_status("checkout", "Progressing", LIMIT, |s| {
        phase(s) == "Progressing"
    });
    let client = reqwest::Client::new();

    let otlp = client
        .post(format!("http://{}/v1/traces", spangate.addrs.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff, 0x0f, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(otlp.status(), 400);

    let ofrep_url = format!(
        "http://{}/ofrep/v1/evaluate/flags/new-checkout",
        spangate.addrs.ofrep
    );
    let bad = client
        .post(&ofrep_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["errorCode"], "PARSE_ERROR");
    let missing = client
        .post(&ofrep_url)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["errorCode"],
        "TARGETING_KEY_MISSING"
    );
    let unknown = client
        .post(format!(
            "http://{}/ofrep/v1/evaluate/flags/nope",
            spangate.addrs.ofrep
        ))
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // Still serving: a good span batch is counted and a good evaluation answers.
    let mut service = Service::new(&spangate, Transport::Http);
    service.round(100, healthy).await;
    let status = spangate.get("checkout")["status"].clone();
    assert_eq!(phase(&status), "Progressing");
    let health = client
        .get(format!("http://{}/healthz", spangate.addrs.probes))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{}/readyz", spangate.addrs.probes))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
