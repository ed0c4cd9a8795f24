//! The OTLP logs receivers of a running `spangate standalone`: `feature_flag.evaluation`
//! log events sent over gRPC (the tonic client OTLP exporters use) and OTLP/HTTP
//! (protobuf, JSON, gzip) are read and counted in `/metrics`; invalid records are
//! rejected alone in the partial success; whole requests are refused with the same
//! answers as trace requests.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::otlp::{self, kv};
use crate::common::{Spangate, wait_for};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);
/// gRPC status codes.
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

/// A `feature_flag.evaluation` event in span `id` of trace 0x5b….
fn evaluation(id: u8, variant: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_000_000,
        event_name: "feature_flag.evaluation".to_string(),
        trace_id: vec![0x5b; 16],
        span_id: vec![id; 8],
        attributes: vec![
            kv("feature_flag.key", "new-checkout"),
            kv("feature_flag.result.variant", variant),
            kv("feature_flag.context.id", "user-42"),
        ],
        ..Default::default()
    }
}

/// The same event as SDKs older than `event_name` write it.
fn legacy_evaluation(id: u8) -> LogRecord {
    let mut record = evaluation(id, "off");
    record.event_name.clear();
    record.attributes = vec![
        kv("event.name", "feature_flag.evaluation"),
        kv("feature_flag.key", "new-checkout"),
        kv("feature_flag.variant", "off"),
    ];
    record
}

fn plain_log(message: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_000_000,
        severity_text: "INFO".to_string(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(message.to_string())),
        }),
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// Posts `body` to `/v1/logs`; the status and the answer's bytes.
async fn post(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Vec<u8>) {
    let mut request = client().post(format!("http://{addr}/v1/logs")).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn grpc_client(addr: SocketAddr) -> LogsServiceClient<tonic::transport::Channel> {
    tokio::time::timeout(
        DEADLINE,
        LogsServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connected before the deadline")
    .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Waits until the metric `name` reaches `value`, without blocking the runtime.
async fn metric_reaches(spangate: &Spangate, name: &str, value: f64) {
    tokio::time::timeout(DEADLINE, async {
        while spangate.metric(name) < Some(value) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{name} never reached {value}: {:?}\n{}",
            spangate.metric(name),
            spangate.metrics()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_events_over_grpc_and_http_are_read_and_counted() {
    let (spangate, _temp) = spangate(&[]);
    let mut no_trace = evaluation(9, "on");
    no_trace.trace_id.clear();
    no_trace.span_id.clear();
    let batch = logs(vec![
        evaluation(1, "on"),
        legacy_evaluation(2),
        no_trace,
        plain_log("checkout started"),
    ]);

    // gRPC, as OTLP exporters send it: tonic's client, gzip.
    let mut grpc = grpc_client(spangate.addrs.otlp_grpc)
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let answer = grpc.export(batch.clone()).await.unwrap().into_inner();
    assert_eq!(answer, ExportLogsServiceResponse::default());

    // OTLP/HTTP: protobuf, gzipped protobuf, JSON.
    let http = spangate.addrs.otlp_http;
    let protobuf = batch.encode_to_vec();
    let (status, answer) = post(http, &[PROTOBUF], protobuf.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        ExportLogsServiceResponse::decode(&answer[..]).unwrap(),
        ExportLogsServiceResponse::default()
    );
    let gzipped = gzip(&protobuf);
    let (status, _) = post(http, &[PROTOBUF, ("content-encoding", "gzip")], gzipped).await;
    assert_eq!(status, 200);
    let (status, answer) = post(http, &[JSON], serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!((status, &answer[..]), (200, &b"{}"[..]));

    metric_reaches(
        &spangate,
        "spangate_otlp_log_requests_total{outcome=\"ingested\"}",
        4.0,
    )
    .await;
    for (name, value) in [
        (
            "spangate_otlp_log_records_total{outcome=\"accepted\"}",
            16.0,
        ),
        ("spangate_otlp_log_records_total{outcome=\"rejected\"}", 0.0),
        ("spangate_otlp_log_evaluations_read_total", 8.0),
        ("spangate_otlp_log_evaluations_unattributed_total", 4.0),
        // Logs are not spans: the trace families do not move.
        ("spangate_otlp_requests_total{outcome=\"ingested\"}", 0.0),
        ("spangate_otlp_spans_total{outcome=\"accepted\"}", 0.0),
    ] {
        assert_eq!(spangate.metric(name), Some(value), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_log_records_are_rejected_alone() {
    let (spangate, _temp) = spangate(&[]);
    let mut short_trace = evaluation(2, "on");
    short_trace.trace_id = vec![1, 2, 3];
    let mut zero_span = evaluation(3, "on");
    zero_span.span_id = vec![0; 8];
    let mut deep = evaluation(4, "on");
    deep.attributes.push(nested(17));
    let batch = logs(vec![evaluation(1, "on"), short_trace, zero_span, deep]);

    let mut grpc = grpc_client(spangate.addrs.otlp_grpc).await;
    let partial = grpc
        .export(batch.clone())
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_log_records, 3);
    assert_eq!(
        partial.error_message,
        "rejected 3 of 4 log records; first: log record attribute values nest deeper than 16 levels"
    );

    let (status, answer) = post(
        spangate.addrs.otlp_http,
        &[JSON],
        serde_json::to_vec(&batch).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], "3",
        "{answer}"
    );

    metric_reaches(
        &spangate,
        "spangate_otlp_log_records_total{outcome=\"rejected\"}",
        6.0,
    )
    .await;
    assert_eq!(
        spangate.metric("spangate_otlp_log_records_total{outcome=\"accepted\"}"),
        Some(2.0)
    );
    assert_eq!(
        spangate.metric("spangate_otlp_log_evaluations_read_total"),
        Some(2.0)
    );
}

/// Sends the headers of a logs request announcing `length` bytes and a few of
/// them, then stalls: the receiver holds what it reserved for it.
async fn stalled_upload(addr: SocketAddr, token: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: spangate\r\nContent-Type: application/x-protobuf\r\n\
         Authorization: {token}\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0x0a; 100]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_requests_are_refused_as_trace_requests_are() {
    let temp = tempfile::tempdir().unwrap();
    let tokens = temp.path().join("otlp-tokens");
    std::fs::write(&tokens, "s3cret-for-logs\n").unwrap();
    let (spangate, _dir) = spangate(&[
        "--otlp-tokens-file",
        tokens.to_str().unwrap(),
        "--max-body-bytes",
        "1048576",
        "--max-decoded-bytes",
        "1048576",
        "--max-in-flight-bytes",
        "2097152",
    ]);
    const TOKEN: (&str, &str) = ("authorization", "Bearer s3cret-for-logs");
    let (http, grpc) = (spangate.addrs.otlp_http, spangate.addrs.otlp_grpc);
    let path = otlp::LOGS_EXPORT_PATH;
    let good = logs(vec![evaluation(1, "on")]).encode_to_vec();
    let refusal = |answer: &[u8]| RpcStatus::decode(answer).unwrap();

    // No token.
    let (status, answer) = post(http, &[PROTOBUF], good.clone()).await;
    assert_eq!((status, refusal(&answer).code), (401, UNAUTHENTICATED));
    let (code, _) = otlp::grpc_call(grpc, path, &good, &[]).await;
    assert_eq!(code, UNAUTHENTICATED);

    // Malformed.
    let broken = vec![0x0a, 0x05, 0x12];
    let (status, answer) = post(http, &[PROTOBUF, TOKEN], broken.clone()).await;
    assert_eq!((status, refusal(&answer).code), (400, INVALID_ARGUMENT));
    let (code, message) = otlp::grpc_call(grpc, path, &broken, &[TOKEN]).await;
    assert_eq!(code, INVALID_ARGUMENT, "{message}");
    assert!(message.starts_with("invalid OTLP protobuf"), "{message}");

    // A body over the limit, and a small one that decodes to too much.
    let (status, _) = post(http, &[PROTOBUF, TOKEN], vec![0; 2_000_000]).await;
    assert_eq!(status, 413);
    let mut empty_records = Vec::new();
    for _ in 0..200_000 {
        empty_records.extend_from_slice(&[0x12, 0x00]);
    }
    let wrap = |tag: u8, inner: Vec<u8>| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(&inner);
        out
    };
    let expensive = wrap(0x0a, wrap(0x12, empty_records));
    let (status, answer) = post(http, &[PROTOBUF, TOKEN], expensive.clone()).await;
    let answer = refusal(&answer);
    assert_eq!((status, answer.code), (413, RESOURCE_EXHAUSTED));
    assert!(
        answer.message.contains("decoded, over the limit"),
        "{}",
        answer.message
    );
    let (code, _) = otlp::grpc_call(grpc, path, &expensive, &[TOKEN]).await;
    assert_eq!(code, RESOURCE_EXHAUSTED);

    // Two stalled uploads hold the in-flight budget: the next is told to retry.
    let stalled = [
        stalled_upload(http, TOKEN.1, 1_000_000).await,
        stalled_upload(http, TOKEN.1, 1_000_000).await,
    ];
    metric_reaches(&spangate, "spangate_otlp_in_flight_bytes", 2_000_000.0).await;
    let mut request = client()
        .post(format!("http://{http}/v1/logs"))
        .header(PROTOBUF.0, PROTOBUF.1)
        .header(TOKEN.0, TOKEN.1)
        .body(vec![0x0a; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(request.status(), 503);
    assert_eq!(request.headers()["retry-after"], "1");
    let answer = refusal(&request.bytes().await.unwrap());
    assert_eq!(answer.code, UNAVAILABLE);
    drop(stalled);
    wait_for("the stalled uploads' bytes to be freed", DEADLINE, || {
        (spangate.metric("spangate_otlp_in_flight_bytes") == Some(0.0)).then_some(())
    });

    // And spangate reads the next good request.
    request = client()
        .post(format!("http://{http}/v1/logs"))
        .header(PROTOBUF.0, PROTOBUF.1)
        .header(TOKEN.0, TOKEN.1)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(request.status(), 200);
    // The eight above, and the two stalled uploads, cut off: counted once their
    // connections are seen closed.
    let refused = "spangate_otlp_log_requests_total{outcome=\"refused\"}";
    metric_reaches(&spangate, refused, 10.0).await;
    for (name, value) in [
        (refused, 10.0),
        (
            "spangate_otlp_log_requests_total{outcome=\"ingested\"}",
            1.0,
        ),
        (
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"unauthenticated\"}",
            1.0,
        ),
        (
            "spangate_otlp_requests_refused_total{transport=\"grpc\",reason=\"malformed\"}",
            1.0,
        ),
        (
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"too_large\"}",
            2.0,
        ),
        (
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"overloaded\"}",
            1.0,
        ),
    ] {
        assert_eq!(spangate.metric(name), Some(value), "{name}");
    }
}
