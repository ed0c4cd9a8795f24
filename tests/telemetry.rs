//! The operator's own traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spangate
//! exports a span per reconcile and per decision, over gRPC or HTTP, to a collector
//! played here by a plain OTLP receiver.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Spangate, rollout_yaml, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// Every span received, with its resource's service.name.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }

    /// The first span named `name` whose attributes include every pair of `wanted`.
    fn find(&self, name: &str, wanted: &[(&str, &str)]) -> Option<(String, Span)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, span)| {
                span.name == name
                    && wanted
                        .iter()
                        .all(|(key, value)| attribute(span, key).as_deref() == Some(*value))
            })
            .cloned()
    }
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn grpc_collector(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

async fn http_collector(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                received.add(ExportTraceServiceRequest::decode(body).unwrap());
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn assert_rollout_timeline(protocol: &str, endpoint: &str, received: &Received) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("checkout.yaml"),
        rollout_yaml("checkout", "[10, 50, 100]", "{minSamples: 40}"),
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
        received.find(
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
        received.find(
            "reconcile",
            &[
                &flag[..],
                &[("rollout", "default/checkout"), ("phase", "Progressing")],
            ]
            .concat(),
        )
    });
    drop(spangate);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciles_and_decisions_are_exported_over_grpc() {
    let received = Received::default();
    let endpoint = grpc_collector(received.clone()).await;
    tokio::task::spawn_blocking(move || assert_rollout_timeline("grpc", &endpoint, &received))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciles_and_decisions_are_exported_over_http() {
    let received = Received::default();
    let endpoint = http_collector(received.clone()).await;
    tokio::task::spawn_blocking(move || {
        assert_rollout_timeline("http/protobuf", &endpoint, &received)
    })
    .await
    .unwrap();
}
