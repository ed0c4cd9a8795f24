//! The operator's own traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spangate
//! exports a span per reconcile and per decision, over gRPC or HTTP, to a collector
//! played here by a plain OTLP receiver.

use std::time::Duration;

use crate::common::fixture::RolloutFixture;
use crate::common::otlp::{TraceBackend, attribute};
use crate::common::{Spangate, wait_for};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use spangate::ingest::ForwardProtocol;

/// The first span named `name` whose attributes include every pair of `wanted`,
/// with its resource's service.name.
fn find(backend: &TraceBackend, name: &str, wanted: &[(&str, &str)]) -> Option<(String, Span)> {
    backend.spans().into_iter().find(|(_, span)| {
        span.name == name
            && wanted
                .iter()
                .all(|(key, value)| attribute(span, key).as_deref() == Some(*value))
    })
}

fn assert_rollout_timeline(protocol: &str, endpoint: &str, received: &TraceBackend) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("checkout.yaml"),
        RolloutFixture::new("checkout")
            .analysis(json!({"minSamples": 40, "maxErrorRate": 0.5}))
            .yaml(),
    )
    .unwrap();
    let spangate = Spangate::start_with_env(
        &dir,
        &temp.path().join("state"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ],
    );
    let flag = [
        ("feature_flag.key", "new-checkout"),
        ("feature_flag.result.variant", "on"),
        ("vcs.ref.head.revision", "3f2c1a9"),
    ];
    let (service, decision) = wait_for("a decision span", Duration::from_secs(60), || {
        find(
            received,
            "decision",
            &[
                &flag[..],
                &[("reason", "Started"), ("step", "0"), ("weight", "10")],
            ]
            .concat(),
        )
    });
    assert_eq!(service, "spangate");
    assert_eq!(
        attribute(&decision, "phase").as_deref(),
        Some("Progressing")
    );
    wait_for("a reconcile span", Duration::from_secs(60), || {
        find(
            received,
            "reconcile",
            &[
                &flag[..],
                &[("rollout", "default/checkout"), ("phase", "Progressing")],
            ]
            .concat(),
        )
    });
    // The reconcile-duration histogram keeps a reconcile's trace as exemplar: the
    // IDs seen in scrapes turn up among the spans exported.
    let mut seen = std::collections::HashSet::new();
    wait_for(
        "a reconcile exemplar among the exported traces",
        Duration::from_secs(60),
        || {
            seen.extend(reconcile_exemplars(&spangate));
            received.spans().into_iter().find(|(_, span)| {
                span.name == "reconcile" && seen.contains(&hex::encode(&span.trace_id))
            })
        },
    );
    drop(spangate);
}

/// The trace IDs of the exemplars of `spangate_controller_reconcile_duration_seconds`,
/// scraped as OpenMetrics.
fn reconcile_exemplars(spangate: &Spangate) -> Vec<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(spangate.addrs.probes).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: spangate\r\nAccept: application/openmetrics-text\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("spangate_controller_reconcile_duration_seconds_bucket"))
        .filter_map(|l| Some(l.split("trace_id=\"").nth(1)?.get(..32)?.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciles_and_decisions_are_exported_over_grpc() {
    let received = TraceBackend::default();
    let endpoint = received.start(ForwardProtocol::Grpc).await;
    tokio::task::spawn_blocking(move || assert_rollout_timeline("grpc", &endpoint, &received))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciles_and_decisions_are_exported_over_http() {
    let received = TraceBackend::default();
    let endpoint = received.start(ForwardProtocol::HttpProtobuf).await;
    tokio::task::spawn_blocking(move || {
        assert_rollout_timeline("http/protobuf", &endpoint, &received)
    })
    .await
    .unwrap();
}
