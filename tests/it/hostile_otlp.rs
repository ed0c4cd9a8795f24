//! The OTLP receivers attacked as a hostile or careless sender would, on real
//! sockets: requests that decode to far more memory than they weigh, more requests
//! in flight than memory allows, no token, a flood of garbage, spans nested too
//! deep or with a bad ID, spans that cannot be measured. Each shows the answer the
//! sender gets, and that spangate keeps serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Spangate;
use crate::common::otlp::{self, kv};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use spangate::analysis::{Route, Routes};
use spangate::ingest::{IngestLimits, Ingestor, ReceiverOptions, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(60);
/// gRPC status codes.
const OK: i32 = 0;
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn spangate(args: &[&str]) -> (Spangate, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("rollouts");
    std::fs::create_dir(&dir).unwrap();
    let spangate = Spangate::start_with_args(&dir, &temp.path().join("state"), args);
    (spangate, temp)
}

fn span(id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_020_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
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

/// A flagged span of the checkout rollout.
fn flagged(id: u8, variant: &str) -> Span {
    span(
        id,
        vec![
            kv("feature_flag.key", "new-cart"),
            kv("feature_flag.result.variant", variant),
        ],
    )
}

/// An attribute whose value nests `levels` deep.
fn nested(levels: usize) -> KeyValue {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".to_string())),
    };
    for _ in 1..levels {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "n".to_string(),
                    value: Some(value),
                    ..Default::default()
                }],
            })),
        };
    }
    KeyValue {
        key: "n".to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// `count` empty spans under one resource and scope, encoded by hand: 2 bytes each.
fn empty_spans(count: usize) -> Vec<u8> {
    let scope: Vec<u8> = [0x12, 0x00].repeat(count);
    let wrap = |tag: u8, inner: Vec<u8>| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend(inner);
        out
    };
    wrap(0x0a, wrap(0x12, scope))
}

/// Polls `check` until it gives a value, failing the test with `what` after the
/// deadline.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

async fn post(addr: SocketAddr, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_protobuf(addr: SocketAddr, body: Vec<u8>) -> (u16, Vec<u8>) {
    let response = post(addr, "application/x-protobuf", body).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

fn partial(body: &[u8]) -> (i64, String) {
    let partial = ExportTraceServiceResponse::decode(body)
        .unwrap()
        .partial_success
        .unwrap_or_default();
    (partial.rejected_spans, partial.error_message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_empty_spans_are_refused_by_their_decoded_size() {
    let (spangate, _temp) = spangate(&[]);
    let body = empty_spans(2_000_000);
    assert_eq!(body.len(), 4_000_010, "the size of the reported attack");

    let (status, answer) = post_protobuf(spangate.addrs.otlp_http, body.clone()).await;
    assert_eq!(status, 413);
    let refusal = RpcStatus::decode(&answer[..]).unwrap();
    assert_eq!(refusal.code, RESOURCE_EXHAUSTED);
    assert!(
        refusal.message.contains("decoded, over the limit"),
        "{}",
        refusal.message
    );

    let (code, message) = otlp::grpc_export(spangate.addrs.otlp_grpc, &body, &[]).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "{message}");

    // Four at once, as in the report: each is refused, and spangate serves on.
    let refusals = futures::future::join_all(
        (0..4).map(|_| post_protobuf(spangate.addrs.otlp_http, body.clone())),
    )
    .await;
    assert!(refusals.iter().all(|(status, _)| *status == 413));
    let good = request(vec![flagged(1, "on")]).encode_to_vec();
    let (status, answer) = post_protobuf(spangate.addrs.otlp_http, good.clone()).await;
    assert_eq!((status, partial(&answer).0), (200, 0));
    assert_eq!(
        otlp::grpc_export(spangate.addrs.otlp_grpc, &good, &[])
            .await
            .0,
        OK
    );
    assert_eq!(
        spangate.metric(
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"too_large\"}"
        ),
        Some(5.0)
    );
    assert_eq!(spangate.metric("spangate_otlp_in_flight_bytes"), Some(0.0));
}

/// Sends the headers of a request announcing `length` bytes and `sent` of them,
/// then stalls: the receiver holds what it reserved for it.
async fn stalled_upload(addr: SocketAddr, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![0x0a; sent]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_budget_are_told_to_retry() {
    let (spangate, _temp) = spangate(&[
        "--max-body-bytes",
        "4194304",
        "--max-decoded-bytes",
        "4194304",
        "--max-in-flight-bytes",
        "8388608",
    ]);
    let http = spangate.addrs.otlp_http;
    let stalled = [
        stalled_upload(http, 4_000_000, 1_000).await,
        stalled_upload(http, 4_000_000, 1_000).await,
    ];
    until("both uploads to hold their bytes", || async {
        (spangate.metric("spangate_otlp_in_flight_bytes")? >= 8_000_000.0).then_some(())
    })
    .await;

    // Half a megabyte of good spans no longer fits.
    let padding = "x".repeat(5_000);
    let big = request(
        (0..100)
            .map(|i| span(i, vec![kv("padding", &padding)]))
            .collect(),
    )
    .encode_to_vec();
    assert!(big.len() > 400_000, "{}", big.len());
    let response = post(http, "application/x-protobuf", big.clone()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["connection"],
        "close",
        "answered before the body was read"
    );
    let refusal = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(refusal.code, UNAVAILABLE, "retryable under OTLP");
    let (code, message) = otlp::grpc_export(spangate.addrs.otlp_grpc, &big, &[]).await;
    assert_eq!(code, UNAVAILABLE, "{message}");

    // The stalled senders give up; their bytes are freed and a retry gets in.
    drop(stalled);
    until("a retry to be accepted", || async {
        (post_protobuf(http, big.clone()).await.0 == 200).then_some(())
    })
    .await;
    assert!(
        spangate.metric(
            "spangate_otlp_requests_refused_total{transport=\"grpc\",reason=\"overloaded\"}"
        ) >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tokens_file_only_senders_with_a_token_are_read() {
    let temp = tempfile::tempdir().unwrap();
    let tokens = temp.path().join("otlp-tokens");
    std::fs::write(&tokens, "# collectors\ns3cret-for-otlp\n").unwrap();
    let (spangate, _dir) = spangate(&["--otlp-tokens-file", tokens.to_str().unwrap()]);
    let good = request(vec![flagged(1, "on")]).encode_to_vec();
    let url = format!("http://{}/v1/traces", spangate.addrs.otlp_http);
    let send = |authorization: Option<&'static str>| {
        let mut request = client()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(good.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };

    let response = send(None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"spangate\""
    );
    let refusal = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(refusal.code, UNAUTHENTICATED);
    let response = send(Some("Bearer wrong")).await.unwrap();
    assert_eq!(response.status(), 401);
    let response = send(Some("Bearer s3cret-for-otlp")).await.unwrap();
    assert_eq!(response.status(), 200);

    let grpc = spangate.addrs.otlp_grpc;
    assert_eq!(otlp::grpc_export(grpc, &good, &[]).await.0, UNAUTHENTICATED);
    assert_eq!(
        otlp::grpc_export(grpc, &good, &[("authorization", "Bearer nope")])
            .await
            .0,
        UNAUTHENTICATED
    );
    assert_eq!(
        otlp::grpc_export(grpc, &good, &[("authorization", "Bearer s3cret-for-otlp")])
            .await
            .0,
        OK
    );
    assert_eq!(
        spangate.metric("spangate_otlp_spans_total{outcome=\"accepted\"}"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_writes_a_few_warnings_and_counts_every_request() {
    let (spangate, _temp) = spangate(&[]);
    let garbage: Vec<u8> = (0..3_000u32).map(|i| (i * 7 + 1) as u8 | 0x80).collect();
    let started = Instant::now();
    let mut sent = 0;
    // At least 5 seconds of garbage, as in the report, in both transports.
    while started.elapsed() < Duration::from_secs(5) || sent < 200 {
        let http = post(
            spangate.addrs.otlp_http,
            "application/x-protobuf",
            garbage.clone(),
        );
        let grpc = otlp::grpc_export(spangate.addrs.otlp_grpc, &garbage, &[]);
        let (response, (code, _)) = tokio::join!(http, grpc);
        assert_eq!((response.status().as_u16(), code), (400, INVALID_ARGUMENT));
        sent += 1;
    }
    let elapsed = started.elapsed().as_secs();
    for transport in ["http", "grpc"] {
        let name = format!(
            "spangate_otlp_requests_refused_total{{transport=\"{transport}\",reason=\"malformed\"}}"
        );
        assert_eq!(spangate.metric(&name), Some(sent as f64), "{name}");
    }
    let log = spangate.log();
    // Written to a file, not a terminal: plain text a grep or a log shipper reads.
    assert!(!log.contains('\u{1b}'), "colour codes in the log file");
    let warnings = log
        .lines()
        .filter(|line| line.contains("refused an OTLP trace request"))
        .count() as u64;
    // One line per kind every 10 seconds at most.
    assert!(
        warnings <= elapsed / 10 + 2,
        "{warnings} warning lines in {elapsed} s for {sent} requests on each transport"
    );
    assert!(warnings >= 1, "the first one is written");
    let suppressed = spangate
        .metric("spangate_log_warnings_suppressed_total{event=\"otlp_request_refused_malformed\"}")
        .unwrap();
    assert_eq!(suppressed as u64 + warnings, 2 * sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_nested_too_deep_or_with_a_bad_id_is_rejected_alone() {
    let (spangate, _temp) = spangate(&[]);
    // 32 levels of protobuf nesting refused the whole batch before.
    let deep = request(vec![
        flagged(1, "on"),
        span(2, vec![nested(32)]),
        flagged(3, "off"),
    ]);
    let (status, answer) = post_protobuf(spangate.addrs.otlp_http, deep.encode_to_vec()).await;
    assert_eq!(status, 200);
    let (rejected, message) = partial(&answer);
    assert_eq!(rejected, 1);
    assert_eq!(
        message,
        "rejected 1 of 3 spans; first: span attribute values nest deeper than 16 levels"
    );
    assert_eq!(
        otlp::grpc_export(spangate.addrs.otlp_grpc, &deep.encode_to_vec(), &[])
            .await
            .0,
        OK
    );

    // 30 levels of JSON, and a span ID that is not hex.
    let mut json = serde_json::to_string(&request(vec![
        flagged(1, "on"),
        span(2, vec![nested(30)]),
        flagged(3, "off"),
        flagged(4, "off"),
    ]))
    .unwrap();
    json = json.replacen("0404040404040404", "not-hex-at-all!!", 1);
    let response = post(
        spangate.addrs.otlp_http,
        "application/json",
        json.into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "2", "{answer}");
    assert_eq!(
        spangate.metric("spangate_otlp_spans_total{outcome=\"accepted\"}"),
        Some(6.0)
    );
    assert_eq!(
        spangate.metric("spangate_otlp_spans_total{outcome=\"rejected\"}"),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_and_rejected_spans_apart() {
    let (spangate, _temp) = spangate(&[]);
    let mut zero_trace = flagged(4, "on");
    zero_trace.trace_id = vec![0; 16];
    let mut short_span_id = flagged(5, "on");
    short_span_id.span_id = vec![5; 3];
    let batch = request(vec![
        flagged(1, "on"),
        flagged(2, "off"),
        zero_trace,
        flagged(3, "on"),
        short_span_id,
    ]);
    let (status, answer) = post_protobuf(spangate.addrs.otlp_http, batch.encode_to_vec()).await;
    assert_eq!((status, partial(&answer).0), (200, 2));
    let (status, _) = post_protobuf(spangate.addrs.otlp_http, b"garbage!".to_vec()).await;
    assert_eq!(status, 400);

    let metrics = spangate.metrics();
    for (line, value) in [
        ("spangate_otlp_spans_total{outcome=\"accepted\"}", 3.0),
        ("spangate_otlp_spans_total{outcome=\"rejected\"}", 2.0),
        ("spangate_otlp_requests_total{outcome=\"ingested\"}", 1.0),
        ("spangate_otlp_requests_total{outcome=\"refused\"}", 1.0),
    ] {
        assert_eq!(
            crate::common::metric(&metrics, line),
            Some(value),
            "{line}\n{metrics}"
        );
    }
}

/// Request durations are histograms whose buckets keep a trace as exemplar: the
/// first span's for OTLP, the caller's `traceparent` for OFREP. Only OpenMetrics
/// shows them; the Prometheus text a person reads does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_carry_trace_exemplars_when_scraped_as_openmetrics() {
    let (spangate, _temp) = spangate(&[]);
    let batch = request(vec![flagged(1, "on")]);
    let (status, _) = post_protobuf(spangate.addrs.otlp_http, batch.encode_to_vec()).await;
    assert_eq!(status, 200);
    let caller = "0af7651916cd43dd8448eb211c80319c";
    let answer = client()
        .post(format!(
            "http://{}/ofrep/v1/evaluate/flags/no-such-flag",
            spangate.addrs.ofrep
        ))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{caller}-b7ad6b7169203331-01"))
        .body(r#"{"context": {"targetingKey": "u1"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 404);

    let scrape = |accept: &'static str| {
        let url = format!("http://{}/metrics", spangate.addrs.probes);
        async move {
            let response = client()
                .get(url)
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            (content_type, response.text().await.unwrap())
        }
    };
    let (content_type, text) = scrape("application/openmetrics-text;version=1.0.0").await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let first_span = "07".repeat(16);
    let exemplar = |family: &str, label: &str, trace: &str| {
        text.lines().any(|l| {
            l.starts_with(&format!("{family}_bucket{{"))
                && l.contains(label)
                && l.contains(&format!("# {{trace_id=\"{trace}\"}}"))
        })
    };
    assert!(
        exemplar(
            "spangate_otlp_request_duration_seconds",
            "transport=\"http\"",
            &first_span
        ),
        "{text}"
    );
    assert!(
        exemplar(
            "spangate_ofrep_request_duration_seconds",
            "code=\"404\"",
            caller
        ),
        "{text}"
    );
    let (content_type, text) = scrape("text/plain").await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(!text.contains("trace_id"), "{text}");
    assert_eq!(
        crate::common::metric(
            &text,
            "spangate_ofrep_request_duration_seconds_count{code=\"404\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_end_before_they_start_or_never_end_are_invalid_and_not_judged() {
    let ingestor = Arc::new(Ingestor::with_limits(IngestLimits::default(), None));
    ingestor.set_routes(Routes::new(vec![Route {
        rollout: "shop/checkout".to_string(),
        service: "checkout".to_string(),
        downstream: Vec::new(),
        flag_key: "new-cart".to_string(),
        revision: None,
        baseline_variant: "off".to_string(),
        candidate_variant: "on".to_string(),
        bucket_by: None,
        epoch: spangate::analysis::WindowEpoch(1),
        step: None,
    }]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_http(
        listener,
        ingestor.clone(),
        ReceiverOptions::new("otlp-http"),
        async {
            stopped.await.ok();
        },
    ));

    let mut backwards = flagged(1, "on");
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let mut endless = flagged(2, "on");
    endless.end_time_unix_nano = u64::MAX;
    let batch = request(vec![backwards, endless, flagged(3, "on")]);
    let (status, answer) = post_protobuf(addr, batch.encode_to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(
        partial(&answer),
        (
            2,
            "rejected 2 of 3 spans; first: end_time_unix_nano is before start_time_unix_nano"
                .to_string()
        )
    );
    let window = ingestor.window("shop/checkout", spangate::analysis::WindowEpoch(1));
    assert_eq!(
        window.candidate.samples, 1,
        "only the measurable span is judged"
    );
    let slowest = window.candidate.latency.quantile_ms(1.0).unwrap();
    assert!((slowest - 20.0).abs() < 1.0, "{slowest} ms");
}

/// What is read off `stream` until it closes (or the deadline passes).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_sent_before_the_body_say_the_connection_closes() {
    let (spangate, _temp) = spangate(&[]);
    let mut stream = TcpStream::connect(spangate.addrs.otlp_http).await.unwrap();
    stream
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/x-protobuf\r\n\
              Content-Length: 10000000000\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}
