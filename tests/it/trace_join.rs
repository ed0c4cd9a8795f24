//! The variant follows the trace: `checkout` evaluates the flag, `payments` two
//! calls down carries none, its context propagated with W3C `traceparent`, and its
//! spans sent before checkout's. A `spangate standalone` process judges payments
//! through the trace join and forwards every span of an attributed trace tagged.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::common::Spangate;
use crate::common::fixture::RolloutFixture;
use crate::common::otlp::{TraceBackend, attribute};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};
use prost::Message as _;
use serde_json::Value;
use spangate::ingest::ForwardProtocol;

pub(crate) const LIMIT: Duration = Duration::from_secs(90);
/// Requests a round sends before the rollout's status is looked at.
pub(crate) const ROUND: usize = 100;

/// One service's tracer at `revision`, exporting over OTLP/gRPC to `endpoint`.
fn provider(endpoint: &str, service: &str, revision: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_span_processor(SimpleSpanProcessor::new(exporter))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("vcs.ref.head.revision", revision.to_string()))
                .build(),
        )
        .build()
}

pub(crate) struct Shop {
    checkout: SdkTracerProvider,
    payments: SdkTracerProvider,
    client: reqwest::Client,
    ofrep: std::net::SocketAddr,
    next_user: u32,
    /// Every trace sent and its variant: one checkout span and
    /// [`PAYMENTS_SPANS_PER_TRACE`] payments spans each.
    pub(crate) sent: Vec<(TraceId, String)>,
}

/// The spans payments sends in each trace: `POST /charge` and `SELECT card`.
pub(crate) const PAYMENTS_SPANS_PER_TRACE: usize = 2;

impl Shop {
    fn new(spangate: &Spangate) -> Self {
        Self::exporting_to(spangate, &format!("http://{}", spangate.addrs.otlp_grpc))
    }

    /// A shop whose services ask `spangate` for the flag and export their spans
    /// over OTLP/gRPC to `endpoint`, spangate or a collector in front of it.
    pub(crate) fn exporting_to(spangate: &Spangate, endpoint: &str) -> Self {
        Self {
            // The rollout's revision filter is checkout's: payments deploys on its own.
            checkout: provider(endpoint, "checkout", "3f2c1a9"),
            payments: provider(endpoint, "payments", "9d8e7f6"),
            client: reqwest::Client::new(),
            ofrep: spangate.addrs.ofrep,
            next_user: 0,
            sent: Vec::new(),
        }
    }

    async fn variant(&self, user: u32) -> String {
        crate::common::checkout_variant(&self.client, self.ofrep, user).await
    }

    /// `n` requests: checkout evaluates the flag and calls payments, which fails
    /// when `payments_fails` says so. Payments' spans are exported first.
    async fn round(&mut self, n: u32, payments_fails: fn(&str, u32) -> bool) {
        let checkout = self.checkout.tracer("checkout");
        let payments = self.payments.tracer("payments");
        let propagator = TraceContextPropagator::new();
        for _ in 0..n {
            let user = self.next_user;
            self.next_user += 1;
            let variant = self.variant(user).await;
            let end = SystemTime::now();
            let mut entry = checkout
                .span_builder("POST /checkout")
                .with_kind(SpanKind::Server)
                .with_start_time(end - Duration::from_millis(40))
                .with_attributes([
                    KeyValue::new("feature_flag.key", "new-checkout"),
                    KeyValue::new("feature_flag.result.variant", variant.clone()),
                    KeyValue::new("feature_flag.context.id", format!("user-{user}")),
                ])
                .start(&checkout);
            self.sent
                .push((entry.span_context().trace_id(), variant.clone()));
            // The call to payments carries the trace in a `traceparent` header.
            let mut headers = HashMap::new();
            let cx = Context::current().with_remote_span_context(entry.span_context().clone());
            propagator.inject_context(&cx, &mut headers);
            assert!(headers.contains_key("traceparent"));
            let parent = propagator.extract(&headers);
            let mut charge = payments
                .span_builder("POST /charge")
                .with_kind(SpanKind::Server)
                .with_start_time(end - Duration::from_millis(20))
                .start_with_context(&payments, &parent);
            let query = payments
                .span_builder("SELECT card")
                .with_kind(SpanKind::Client)
                .start_with_context(
                    &payments,
                    &parent.with_remote_span_context(charge.span_context().clone()),
                );
            drop(query);
            if payments_fails(&variant, user) {
                charge.set_status(Status::error("card declined"));
            }
            charge.end_with_timestamp(end - Duration::from_millis(5));
            entry.end_with_timestamp(end);
        }
        for provider in [self.payments.clone(), self.checkout.clone()] {
            tokio::task::spawn_blocking(move || provider.force_flush())
                .await
                .unwrap()
                .unwrap();
        }
    }

    pub(crate) async fn drive(
        &mut self,
        spangate: &Spangate,
        payments_fails: fn(&str, u32) -> bool,
    ) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            self.round(ROUND as u32, payments_fails).await;
            let status = spangate.get("checkout")["status"].clone();
            if status["phase"] != "Progressing" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rollout did not finish in {LIMIT:?}; status: {status:#}\nmetrics:\n{}\nlog:\n{}",
                spangate.metrics(),
                spangate.log_text()
            );
        }
    }
}

pub(crate) fn folders() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    let rollout = RolloutFixture::new("checkout")
        .downstream_services(&["payments"])
        .yaml();
    std::fs::write(dir.join("checkout.yaml"), rollout).unwrap();
    let state = temp.path().join("state");
    (temp, dir, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_downstream_service_failing_only_in_the_new_variants_traces_rolls_it_back() {
    let (_temp, dir, state) = folders();
    let received = TraceBackend::default();
    let endpoint = received.start(ForwardProtocol::Grpc).await;
    let spangate = Spangate::start_with_args(&dir, &state, &["--forward-endpoint", &endpoint]);
    let mut shop = Shop::new(&spangate);
    let status = shop
        .drive(&spangate, |variant, n| variant == "on" && n % 2 == 0)
        .await;
    assert_eq!(status["phase"], "RolledBack", "{status:#}");
    let verdict = &status["lastVerdict"];
    let message = verdict["message"].as_str().unwrap();
    assert!(
        message.starts_with("payments: error rate of on"),
        "{message}"
    );
    let failing: Vec<&Value> = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["outcome"] == "Fail")
        .collect();
    assert!(!failing.is_empty());
    assert!(
        failing.iter().all(|check| check["service"] == "payments"),
        "{verdict:#}"
    );
    assert!(
        spangate
            .metric("spangate_trace_join_spans_waited_total")
            .unwrap()
            > 0.0
    );
    assert!(
        spangate
            .metric("spangate_trace_join_spans_redundant_total")
            .unwrap()
            > 0.0
    );

    // Payments' spans of the new variant's traces reached the backend tagged.
    let tagged = |span: &Span| {
        attribute(span, "feature_flag.result.variant").as_deref() == Some("on")
            && attribute(span, "spangate.rollout").as_deref() == Some("default/checkout")
    };
    let payments_on = crate::common::wait_for("payments' spans tagged on", LIMIT, || {
        let spans = received.spans();
        let on: Vec<Span> = spans
            .into_iter()
            .filter(|(service, span)| service == "payments" && tagged(span))
            .map(|(_, span)| span)
            .collect();
        (on.len() >= 20).then_some(on)
    });
    for span in &payments_on {
        assert_eq!(
            attribute(span, "feature_flag.key").as_deref(),
            Some("new-checkout")
        );
        assert!(
            span.attributes.iter().any(|kv| kv.key == "spangate.step"),
            "{span:?}"
        );
    }
    assert!(
        spangate
            .metric("spangate_forward_spans_tagged_total")
            .unwrap()
            > 0.0
    );

    // A span of a trace that records no flag goes on byte for byte.
    let untouched = Span {
        trace_id: vec![0x5e; 16],
        span_id: vec![0x5e; 8],
        name: "GET /search".to_string(),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        attributes: vec![crate::common::otlp::kv("http.route", "/search")],
        ..Default::default()
    };
    let body = request_of("search", untouched.clone()).encode_to_vec();
    let (code, message) =
        crate::common::otlp::grpc_export(spangate.addrs.otlp_grpc, &body, &[]).await;
    assert_eq!(code, 0, "{message}");
    let forwarded = crate::common::wait_for("the untouched span forwarded", LIMIT, || {
        received
            .spans()
            .into_iter()
            .find(|(_, span)| span.trace_id == untouched.trace_id)
    });
    assert_eq!(
        forwarded.1.encode_to_vec(),
        untouched.encode_to_vec(),
        "{:?}",
        forwarded.1
    );
}

/// A request of one span of `service`.
fn request_of(
    service: &str,
    span: Span,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(ProtoResource {
                attributes: vec![crate::common::otlp::kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_downstream_service_lets_the_rollout_promote() {
    let (_temp, dir, state) = folders();
    let spangate = Spangate::start(&dir, &state);
    let mut shop = Shop::new(&spangate);
    let status = shop.drive(&spangate, |_, n| n % 100 == 0).await;
    assert_eq!(status["phase"], "Promoted", "{status:#}");
    let verdict = &status["lastVerdict"];
    let payments_checks = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["service"] == "payments")
        .count();
    assert!(payments_checks > 0, "{verdict:#}");
}

/// A flood of `payments` spans whose traces never record the flag: the join lets
/// the oldest go within its budget, counts them, and the process keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_traces_that_never_resolve_stays_within_the_joins_budget() {
    const BUDGET: usize = 256 * 1024;
    let (_temp, dir, state) = folders();
    let spangate =
        Spangate::start_with_args(&dir, &state, &["--trace-join-memory", &BUDGET.to_string()]);
    let mut traces = 0_u64;
    for request in 0..40_u64 {
        let spans = (0..500_u64)
            .map(|i| {
                traces += 1;
                let mut trace_id = vec![0x42; 16];
                trace_id[..8].copy_from_slice(&(request * 1_000 + i + 1).to_le_bytes());
                Span {
                    trace_id,
                    span_id: vec![7; 8],
                    start_time_unix_nano: 1_000,
                    end_time_unix_nano: 2_000,
                    ..Default::default()
                }
            })
            .collect();
        let mut body = request_of("payments", Span::default());
        body.resource_spans[0].scope_spans[0].spans = spans;
        let body = body.encode_to_vec();
        let (code, message) =
            crate::common::otlp::grpc_export(spangate.addrs.otlp_grpc, &body, &[]).await;
        assert_eq!(code, 0, "{message}");
    }
    let memory = spangate.metric("spangate_trace_join_memory_bytes").unwrap();
    assert!(memory <= BUDGET as f64, "{memory} bytes held");
    let held = spangate.metric("spangate_trace_join_traces").unwrap();
    let evicted = spangate
        .metric("spangate_trace_join_traces_evicted_total")
        .unwrap();
    assert!(evicted > 0.0);
    assert_eq!(held + evicted, traces as f64);
    assert_eq!(
        spangate.metric("spangate_trace_join_spans_unresolved_total"),
        Some(evicted)
    );
    // Still serving: the rollout answers and the flag is evaluated.
    assert_eq!(spangate.get("checkout")["status"]["phase"], "Progressing");
}
