//! Span and log forwarding on real sockets: spans and logs come in over OTLP gRPC
//! and HTTP, go on to a backend that speaks OTLP gRPC or OTLP/HTTP, with invalid
//! spans and records left out and private attributes hidden; an absent backend costs the senders nothing, and
//! forwarding resumes once it answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::otlp::{TraceBackend, kv};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use spangate::flags::PrivateAttributes;
use spangate::ingest::{
    ForwardConfig, ForwardProtocol, IngestLimits, Ingestor, ReceiverOptions, forwarder, serve_grpc,
    serve_http,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);
const PLANTED: &str = "planted-5e2a@corp.example";

fn span_names(backend: &TraceBackend) -> Vec<String> {
    backend.spans().into_iter().map(|(_, s)| s.name).collect()
}

/// spangate's receivers, forwarding to `endpoint`; stopped with the token.
struct Receivers {
    ingestor: Arc<Ingestor>,
    grpc: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receivers(endpoint: &str, protocol: ForwardProtocol) -> Receivers {
    receivers_queueing(endpoint, protocol, ForwardConfig::DEFAULT_QUEUE_BYTES).await
}

/// [`receivers`] whose forward queue holds `queue_bytes`.
async fn receivers_queueing(
    endpoint: &str,
    protocol: ForwardProtocol,
    queue_bytes: usize,
) -> Receivers {
    let config = ForwardConfig::new(endpoint, protocol, queue_bytes).unwrap();
    let private = PrivateAttributes::parse(&["email"]).unwrap();
    let (forwarder, worker) = forwarder(config, Box::new(move || private.clone()));
    let ingestor = Arc::new(Ingestor::with_limits(
        IngestLimits::default(),
        Some(forwarder),
    ));
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, http) = (
        grpc_listener.local_addr().unwrap(),
        http_listener.local_addr().unwrap(),
    );
    let done = stop.clone();
    tokio::spawn(serve_grpc(
        grpc_listener,
        ingestor.clone(),
        ReceiverOptions::new("otlp-grpc"),
        async move { done.cancelled().await },
    ));
    let done = stop.clone();
    tokio::spawn(serve_http(
        http_listener,
        ingestor.clone(),
        ReceiverOptions::new("otlp-http"),
        async move { done.cancelled().await },
    ));
    Receivers {
        ingestor,
        grpc,
        http,
        stop,
    }
}

fn span(id: u8, name: &str) -> Span {
    Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![id; 8],
        name: name.to_string(),
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 3_000_000,
        attributes: vec![
            kv("feature_flag.key", "new-checkout"),
            kv("feature_flag.result.variant", "on"),
            kv("user.email", PLANTED),
            kv("plan", "pro"),
        ],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("vcs.ref.head.revision", "3f2c1a9"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn send_grpc(
    to: SocketAddr,
    request: ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let mut client = TraceServiceClient::connect(format!("http://{to}"))
        .await
        .expect("connect to the gRPC receiver");
    tokio::time::timeout(LIMIT, client.export(request))
        .await
        .expect("the receiver answers in time")
        .expect("the receiver accepts the batch")
        .into_inner()
}

async fn send_http(to: SocketAddr, request: ExportTraceServiceRequest) {
    let response = reqwest::Client::new()
        .post(format!("http://{to}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .timeout(LIMIT)
        .send()
        .await
        .expect("the HTTP receiver answers");
    assert!(response.status().is_success(), "{response:?}");
}

/// Waits without blocking the runtime the servers run on.
async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(value) = check() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {LIMIT:?} waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_go_on_over_grpc_and_http_without_invalid_spans_or_private_values() {
    for protocol in [ForwardProtocol::Grpc, ForwardProtocol::HttpProtobuf] {
        let received = TraceBackend::default();
        let endpoint = received.start(protocol).await;
        let spangate = receivers(&endpoint, protocol).await;

        let mut invalid = span(3, "invalid");
        invalid.span_id = vec![0; 8];
        let answer = send_grpc(
            spangate.grpc,
            request(vec![span(1, "cart"), invalid, span(2, "pay")]),
        )
        .await;
        assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);
        send_http(spangate.http, request(vec![span(4, "confirm")])).await;

        let spans = wait_until(&format!("three spans forwarded over {protocol}"), || {
            let spans: Vec<Span> = received.spans().into_iter().map(|(_, s)| s).collect();
            (spans.len() >= 3).then_some(spans)
        })
        .await;
        let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["cart", "confirm", "pay"], "{protocol}");
        let cart = spans.iter().find(|s| s.name == "cart").unwrap();
        assert_eq!(
            (cart.span_id.as_slice(), cart.end_time_unix_nano),
            ([1; 8].as_slice(), 3_000_000)
        );
        let shown = received.text();
        assert!(!shown.contains(PLANTED), "{protocol}: {shown}");
        for kept in ["user.email", "[private]", "pro", "3f2c1a9", "new-checkout"] {
            assert!(shown.contains(kept), "{protocol}: {kept} not in {shown}");
        }
        let forwarded = wait_until("the sent count", || {
            let forwarded = spangate.ingestor.stats().forwarded;
            (forwarded.sent == 3).then_some(forwarded)
        })
        .await;
        assert_eq!((forwarded.dropped, forwarded.failed), (0, 0), "{protocol}");
    }
}

fn record(id: u8, message: &str) -> LogRecord {
    LogRecord {
        event_name: "feature_flag.evaluation".to_string(),
        trace_id: vec![0x5b; 16],
        span_id: vec![id; 8],
        body: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("message", message), kv("email", PLANTED)],
            })),
        }),
        attributes: vec![
            kv("feature_flag.key", "new-checkout"),
            kv("feature_flag.result.variant", "on"),
            kv("user.email", PLANTED),
        ],
        ..Default::default()
    }
}

fn logs(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_go_on_over_grpc_and_http_without_invalid_records_or_private_values() {
    for protocol in [ForwardProtocol::Grpc, ForwardProtocol::HttpProtobuf] {
        let received = TraceBackend::default();
        let endpoint = received.start(protocol).await;
        let spangate = receivers(&endpoint, protocol).await;

        let mut invalid = record(3, "invalid");
        invalid.trace_id = vec![0; 16];
        let mut client = LogsServiceClient::connect(format!("http://{}", spangate.grpc))
            .await
            .unwrap();
        let answer = tokio::time::timeout(
            LIMIT,
            client.export(logs(vec![record(1, "cart"), invalid, record(2, "pay")])),
        )
        .await
        .expect("the receiver answers in time")
        .unwrap()
        .into_inner();
        assert_eq!(answer.partial_success.unwrap().rejected_log_records, 1);
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/logs", spangate.http))
            .header("content-type", "application/x-protobuf")
            .body(logs(vec![record(4, "confirm")]).encode_to_vec())
            .timeout(LIMIT)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
        // Spans still go on beside them.
        send_http(spangate.http, request(vec![span(5, "beside")])).await;

        let forwarded = wait_until(&format!("logs forwarded over {protocol}"), || {
            let forwarded = spangate.ingestor.stats().forwarded;
            (forwarded.log_records_sent == 3 && forwarded.sent == 1).then_some(forwarded)
        })
        .await;
        assert_eq!(
            (forwarded.log_records_dropped, forwarded.log_records_failed),
            (0, 0)
        );
        let mut span_ids: Vec<u8> = received
            .logs()
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|r| r.span_id[0])
            .collect();
        span_ids.sort();
        assert_eq!(span_ids, [1, 2, 4], "{protocol}");
        assert_eq!(span_names(&received), ["beside"], "{protocol}");
        let shown = format!("{:?}", received.logs());
        assert!(!shown.contains(PLANTED), "{protocol}: {shown}");
        for kept in ["user.email", "[private]", "confirm", "new-checkout"] {
            assert!(shown.contains(kept), "{protocol}: {kept} not in {shown}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_backend_costs_senders_nothing_and_forwarding_resumes() {
    // A port nothing listens on yet: taken from the OS, then let go.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let spangate = receivers(&format!("http://{port}"), ForwardProtocol::Grpc).await;

    let answer = send_grpc(spangate.grpc, request(vec![span(1, "lost")])).await;
    assert_eq!(
        answer.partial_success, None,
        "the sender is told all is well"
    );
    send_http(spangate.http, request(vec![span(2, "lost")])).await;
    wait_until("both failed exports to be counted", || {
        (spangate.ingestor.stats().forwarded.failed == 2).then_some(())
    })
    .await;
    assert_eq!(spangate.ingestor.stats().spans_accepted, 2);

    let received = TraceBackend::default();
    let listener = TcpListener::bind(port)
        .await
        .expect("the port is free again");
    received.serve(listener, ForwardProtocol::Grpc);
    // Each export after the backend is up reconnects; the first may still race it.
    tokio::time::timeout(LIMIT, async {
        while !span_names(&received).iter().any(|name| name == "found") {
            send_http(spangate.http, request(vec![span(10, "found")])).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("forwarding resumes within the limit");
    // The backend keeps a batch before spangate reads its answer and counts it.
    let forwarded = wait_until("the sent count", || {
        let forwarded = spangate.ingestor.stats().forwarded;
        (forwarded.sent >= 1).then_some(forwarded)
    })
    .await;
    assert!(
        forwarded.sent >= 1 && forwarded.failed >= 2,
        "{forwarded:?}"
    );
    assert!(span_names(&received).iter().all(|name| name == "found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_holds_no_more_than_the_queue_bytes() {
    // Accepts connections and reads nothing, answers nothing.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = black_hole.accept().await {
            held.push(connection);
        }
    });
    const QUEUE_BYTES: usize = 2 * 1024 * 1024;
    for protocol in [ForwardProtocol::Grpc, ForwardProtocol::HttpProtobuf] {
        let spangate = receivers_queueing(&endpoint, protocol, QUEUE_BYTES).await;
        // 20 batches of about 450 kB each, several times the queue.
        let padding = "x".repeat(4_000);
        let batch = || {
            request(
                (1..=100)
                    .map(|i| {
                        let mut span = span(i, "big");
                        span.attributes.push(kv("padding", &padding));
                        span
                    })
                    .collect(),
            )
        };
        for _ in 0..20 {
            send_http(spangate.http, batch()).await;
            let held = spangate.ingestor.stats().forwarded.queue_bytes;
            assert!(held <= QUEUE_BYTES as u64, "{protocol}: {held} bytes held");
        }
        let forwarded = wait_until("batches to be dropped", || {
            let forwarded = spangate.ingestor.stats().forwarded;
            (forwarded.dropped > 0).then_some(forwarded)
        })
        .await;
        assert_eq!(forwarded.sent, 0, "{protocol}");
        assert_eq!(forwarded.dropped % 100, 0, "whole batches: {forwarded:?}");
        assert_eq!(forwarded.queue_limit_bytes, QUEUE_BYTES as u64);
        assert_eq!(
            spangate.ingestor.stats().spans_accepted,
            2_000,
            "every sender answered"
        );
    }
}
