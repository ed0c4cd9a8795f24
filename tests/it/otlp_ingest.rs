//! The OTLP receivers on real sockets, fed by the real OpenTelemetry exporters and by
//! hand-made requests, good and bad.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::common::otlp::kv;
use bytes::{Buf, BufMut};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status as SpanStatus, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use spangate::analysis::{ArmWindow, Route, Routes, SpanIds, Window, WindowEpoch};
use spangate::ingest::{IngestLimits, Ingestor, ReceiverOptions, serve_grpc, serve_http};
use std::io::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const FLAG: &str = "new-cart";
const ROLLOUT: &str = "shop/checkout";
const EPOCH: WindowEpoch = WindowEpoch(3);
const REVISION: &str = "3f2c1a9";
/// Bounds every network wait, so a broken receiver fails the test instead of
/// hanging it.
const DEADLINE: Duration = Duration::from_secs(30);

/// Both receivers on 127.0.0.1, sharing one ingestor; stopped when dropped.
struct Receivers {
    ingestor: Arc<Ingestor>,
    grpc: SocketAddr,
    http: SocketAddr,
    _stop: [oneshot::Sender<()>; 2],
}

async fn start(limits: IngestLimits, revision: Option<&str>) -> Receivers {
    let ingestor = Arc::new(Ingestor::with_limits(limits, None));
    ingestor.set_routes(Routes::new(vec![Route {
        rollout: ROLLOUT.to_string(),
        service: "checkout".to_string(),
        downstream: Vec::new(),
        flag_key: FLAG.to_string(),
        revision: revision.map(str::to_string),
        baseline_variant: "off".to_string(),
        candidate_variant: "on".to_string(),
        bucket_by: None,
        epoch: EPOCH,
        step: None,
    }]));
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    let http = http_listener.local_addr().unwrap();
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_grpc(
        grpc_listener,
        Arc::clone(&ingestor),
        ReceiverOptions::new("otlp-grpc"),
        async {
            grpc_stopped.await.ok();
        },
    ));
    tokio::spawn(serve_http(
        http_listener,
        Arc::clone(&ingestor),
        ReceiverOptions::new("otlp-http"),
        async {
            http_stopped.await.ok();
        },
    ));
    Receivers {
        ingestor,
        grpc,
        http,
        _stop: [stop_grpc, stop_http],
    }
}

impl Receivers {
    fn window(&self) -> Window {
        self.ingestor.window(ROLLOUT, EPOCH)
    }

    fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    async fn grpc_client(&self) -> TraceServiceClient<Channel> {
        tokio::time::timeout(
            DEADLINE,
            TraceServiceClient::connect(format!("http://{}", self.grpc)),
        )
        .await
        .expect("connected before the deadline")
        .unwrap()
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// How a test span carries its flag evaluation.
#[derive(Clone, Copy)]
enum Carrier {
    Attributes,
    Event,
    LegacyAttributes,
    LegacyEvent,
}

struct TestSpan {
    carrier: Option<Carrier>,
    variant: &'static str,
    error: bool,
    duration_ms: u64,
}

fn flagged(carrier: Carrier, variant: &'static str, error: bool, duration_ms: u64) -> TestSpan {
    TestSpan {
        carrier: Some(carrier),
        variant,
        error,
        duration_ms,
    }
}

fn unflagged() -> TestSpan {
    TestSpan {
        carrier: None,
        variant: "",
        error: true,
        duration_ms: 1,
    }
}

fn resource(attributes: &[(&'static str, &'static str)]) -> Resource {
    Resource::builder_empty()
        .with_service_name("checkout")
        .with_attributes(attributes.iter().map(|&(k, v)| KeyValue::new(k, v)))
        .build()
}

fn record(provider: &SdkTracerProvider, spans: &[TestSpan]) {
    let tracer = provider.tracer("spangate-test");
    let start = SystemTime::now();
    for test in spans {
        let mut span = tracer
            .span_builder("GET /cart")
            .with_start_time(start)
            .start(&tracer);
        let key = KeyValue::new("feature_flag.key", FLAG);
        match test.carrier {
            Some(Carrier::Attributes) => span.set_attributes([
                key,
                KeyValue::new("feature_flag.result.variant", test.variant),
            ]),
            Some(Carrier::LegacyAttributes) => {
                span.set_attributes([key, KeyValue::new("feature_flag.variant", test.variant)])
            }
            Some(Carrier::Event) => span.add_event(
                "feature_flag.evaluation",
                vec![
                    key,
                    KeyValue::new("feature_flag.result.variant", test.variant),
                ],
            ),
            Some(Carrier::LegacyEvent) => span.add_event(
                "feature_flag",
                vec![key, KeyValue::new("feature_flag.variant", test.variant)],
            ),
            None => {}
        }
        if test.error {
            span.set_status(SpanStatus::error("boom"));
        }
        span.end_with_timestamp(start + Duration::from_millis(test.duration_ms));
    }
}

fn assert_arm(arm: &ArmWindow, samples: u64, errors: u64, median_ms: f64) {
    assert_eq!((arm.samples, arm.errors), (samples, errors), "{arm:?}");
    let got = arm.latency.quantile_ms(0.5).expect("a latency");
    // The sketch answers within 1% of the true quantile.
    assert!(
        (got - median_ms).abs() <= median_ms * 0.01,
        "median {got} ms, want {median_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_spans_are_counted_per_arm() {
    let receivers = start(IngestLimits::default(), None).await;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", receivers.grpc))
        .with_timeout(DEADLINE)
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(&[("vcs.ref.head.revision", REVISION)]))
        .build();
    let mut spans = Vec::new();
    for i in 0..10 {
        let carrier = if i % 2 == 0 {
            Carrier::Attributes
        } else {
            Carrier::Event
        };
        spans.push(flagged(carrier, "off", i == 0, 20));
    }
    for i in 0..5 {
        spans.push(flagged(Carrier::Event, "on", i < 2, 80));
    }
    spans.push(flagged(Carrier::Attributes, "beta", true, 500));
    spans.push(unflagged());
    record(&provider, &spans);
    // The exporter blocks on its own runtime work: flush off the test's workers.
    tokio::task::spawn_blocking(move || {
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();

    let window = receivers.window();
    assert_arm(&window.baseline, 10, 1, 20.0);
    assert_arm(&window.candidate, 5, 2, 80.0);
    assert_eq!(window.candidate.error_exemplars.len(), 2);
    let stats = receivers.ingestor.stats();
    assert_eq!(
        (
            stats.spans_accepted,
            stats.samples_extracted,
            stats.samples_routed
        ),
        (17, 16, 15)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporter_spans_are_filtered_by_revision_and_read_with_legacy_names() {
    let receivers = start(IngestLimits::default(), Some(REVISION)).await;
    let url = receivers.traces_url();
    let resources = [
        resource(&[
            ("vcs.ref.head.revision", REVISION),
            ("service.version", "2.0.0"),
        ]),
        // Without a VCS revision, the service version stands for it.
        resource(&[("service.version", REVISION)]),
        // The VCS revision wins over the service version.
        resource(&[
            ("vcs.ref.head.revision", "0000000"),
            ("service.version", REVISION),
        ]),
    ];
    // The async HTTP client runs on the runtime but the simple processor blocks on
    // each export: record off the test's workers.
    tokio::task::spawn_blocking(move || {
        for resource in resources {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(DEADLINE)
                .build()
                .unwrap();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter)
                .with_resource(resource)
                .build();
            record(
                &provider,
                &[
                    flagged(Carrier::LegacyAttributes, "off", false, 10),
                    flagged(Carrier::LegacyEvent, "on", true, 30),
                    flagged(Carrier::Attributes, "on", false, 30),
                ],
            );
            provider.shutdown().unwrap();
        }
    })
    .await
    .unwrap();

    let window = receivers.window();
    assert_arm(&window.baseline, 2, 0, 10.0);
    assert_arm(&window.candidate, 4, 2, 30.0);
    assert_eq!(receivers.ingestor.stats().samples_extracted, 9);
}

/// An OTLP/JSON document as the OTLP specification writes them: lowerCamelCase
/// keys, hex IDs (upper and lower case), enums as integers, 64-bit integers as
/// strings. The third span's trace ID is too short.
const OTLP_JSON: &str = r#"{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          { "key": "service.name", "value": { "stringValue": "checkout" } },
          { "key": "vcs.ref.head.revision", "value": { "stringValue": "3f2c1a9" } }
        ]
      },
      "scopeSpans": [
        {
          "scope": { "name": "my.library", "version": "1.0.0" },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "GET /cart",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712660250000000",
              "kind": 2,
              "attributes": [
                { "key": "feature_flag.key", "value": { "stringValue": "new-cart" } },
                { "key": "feature_flag.result.variant", "value": { "stringValue": "on" } },
                { "key": "http.response.status_code", "value": { "intValue": "500" } }
              ],
              "status": { "code": 2, "message": "boom" }
            },
            {
              "traceId": "5b8efff798038103d269b633813fc60d",
              "spanId": "eee19b7ec3c1b175",
              "name": "GET /cart",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": 1544712660040000000,
              "kind": 2,
              "events": [
                {
                  "timeUnixNano": "1544712660010000000",
                  "name": "feature_flag.evaluation",
                  "attributes": [
                    { "key": "feature_flag.key", "value": { "stringValue": "new-cart" } },
                    { "key": "feature_flag.result.variant", "value": { "stringValue": "off" } }
                  ]
                }
              ],
              "status": {}
            },
            {
              "traceId": "5b8efff7",
              "spanId": "eee19b7ec3c1b176",
              "name": "GET /cart",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712660040000000",
              "attributes": [
                { "key": "feature_flag.key", "value": { "stringValue": "new-cart" } },
                { "key": "feature_flag.result.variant", "value": { "stringValue": "on" } }
              ]
            }
          ]
        }
      ]
    }
  ]
}"#;

#[tokio::test]
async fn otlp_json_is_read_and_answered_in_json() {
    let receivers = start(IngestLimits::default(), Some(REVISION)).await;
    let response = http_client()
        .post(receivers.traces_url())
        .header("content-type", "application/json; charset=utf-8")
        .body(OTLP_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1");
    let message = body["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("trace_id has 4 bytes"), "{message}");

    let window = receivers.window();
    assert_arm(&window.candidate, 1, 1, 250.0);
    assert_arm(&window.baseline, 1, 0, 40.0);
    assert_eq!(
        window.candidate.error_exemplars,
        [SpanIds {
            trace_id: [
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ],
            span_id: [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
        }]
    );
}

/// A request of `count` candidate spans of 5 ms each, each the root of a trace of
/// its own, the first with the given trace ID.
fn candidate_request(count: usize, first_trace_id: Vec<u8>) -> ExportTraceServiceRequest {
    let request = REQUESTS.fetch_add(1, Ordering::Relaxed);
    let spans = (0..count)
        .map(|i| ProtoSpan {
            trace_id: if i == 0 {
                first_trace_id.clone()
            } else {
                let mut trace_id = vec![0xab; 16];
                trace_id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                trace_id[8..].copy_from_slice(&request.to_le_bytes());
                trace_id
            },
            span_id: vec![0xcd; 8],
            name: "GET /cart".to_string(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_005_000_000,
            attributes: vec![
                kv("feature_flag.key", FLAG),
                kv("feature_flag.result.variant", "on"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(ProtoResource {
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

/// Requests built so far: traces differ across requests too, as the trace join
/// counts one span per service and trace.
static REQUESTS: AtomicU64 = AtomicU64::new(1);

fn good_request(count: usize) -> ExportTraceServiceRequest {
    let mut first = vec![0xcd; 16];
    first[..8].copy_from_slice(&REQUESTS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    candidate_request(count, first)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_requests_are_read_over_http_and_grpc() {
    let receivers = start(IngestLimits::default(), None).await;
    let response = http_client()
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip(&good_request(3).encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);

    let mut client = receivers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let answer = client.export(good_request(4)).await.unwrap().into_inner();
    assert_eq!(answer.partial_success, None);

    assert_eq!(receivers.window().candidate.samples, 7);
}

#[tokio::test]
async fn invalid_spans_are_a_partial_success() {
    let receivers = start(IngestLimits::default(), None).await;
    let mut client = receivers.grpc_client().await;
    let answer = client
        .export(candidate_request(3, vec![0; 16]))
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert_eq!(
        partial.error_message,
        "rejected 1 of 3 spans; first: trace_id is all zeroes"
    );

    let response = http_client()
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(candidate_request(2, vec![1; 17]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);

    assert_eq!(receivers.window().candidate.samples, 3);
    assert_eq!(receivers.ingestor.stats().spans_rejected, 2);
}

/// Posts `body` as HTTP/1.1 chunks, with no Content-Length, as Node exporters do;
/// returns the status code and the response body.
async fn post_chunked(addr: SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let mut request = head.into_bytes();
        for chunk in body.chunks(64) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // A receiver may answer and close before reading a body it refuses, so
        // writing can fail while the answer is already there to read.
        let written = stream.write_all(&request).await;
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response).await;
        assert!(
            !response.is_empty(),
            "no answer: write {written:?}, read {read:?}"
        );
        response
    };
    let response = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("answered before the deadline");
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text}"));
    let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, response[body_start..].to_vec())
}

#[tokio::test]
async fn chunked_bodies_without_content_length_are_read() {
    let receivers = start(IngestLimits::default(), None).await;
    let body = good_request(6).encode_to_vec();
    assert!(body.len() > 3 * 64, "the body spans several chunks");
    let (status, answer) = post_chunked(receivers.http, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        ExportTraceServiceResponse::decode(&answer[..])
            .unwrap()
            .partial_success,
        None
    );
    assert_eq!(receivers.window().candidate.samples, 6);
}

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Sends `bytes` as the Export message, whatever they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn export_raw(addr: SocketAddr, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path =
        PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    tokio::time::timeout(
        DEADLINE,
        grpc.unary(tonic::Request::new(bytes), path, RawCodec),
    )
    .await
    .expect("answered before the deadline")
    .map(tonic::Response::into_inner)
}

/// Not an `ExportTraceServiceRequest`: field 1 claims 255 bytes and has 1.
const NOT_PROTOBUF: &[u8] = b"\x0a\xff\x01\x00";

#[tokio::test]
async fn malformed_requests_are_refused_and_the_receivers_keep_serving() {
    let receivers = start(IngestLimits::default(), None).await;
    let http = http_client();
    let post = |content_type: &'static str, body: Vec<u8>| {
        http.post(receivers.traces_url())
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let response = post("application/x-protobuf", NOT_PROTOBUF.to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(
        status.message.starts_with("invalid OTLP protobuf"),
        "{}",
        status.message
    );

    let response = post("application/json", b"{\"resourceSpans\": [".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status["code"], Code::InvalidArgument as i32);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid OTLP JSON")
    );

    let response = post("text/plain", b"hello".to_vec()).await.unwrap();
    assert_eq!(response.status(), 415);

    let response = http
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(good_request(1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(response.headers()["accept-encoding"], "gzip, identity");

    let response = http
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(good_request(1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = http.get(receivers.traces_url()).send().await.unwrap();
    assert_eq!(response.status(), 405);

    let refused = export_raw(receivers.grpc, NOT_PROTOBUF.to_vec())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    assert_eq!(receivers.ingestor.stats().batches_rejected, 6);
    assert_eq!(receivers.window(), Window::default());

    let response = post("application/x-protobuf", good_request(2).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = export_raw(receivers.grpc, good_request(3).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(
        ExportTraceServiceResponse::decode(&answer[..])
            .unwrap()
            .partial_success,
        None
    );
    assert_eq!(receivers.window().candidate.samples, 5);
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_receivers_keep_serving() {
    let limits = IngestLimits {
        max_body_bytes: 16 * 1024,
        ..IngestLimits::default()
    };
    let receivers = start(limits, None).await;
    let big = good_request(400);
    let big_bytes = big.encode_to_vec();
    assert!(big_bytes.len() > limits.max_body_bytes);
    let compressed = gzip(&big_bytes);
    assert!(
        compressed.len() < limits.max_body_bytes,
        "compressed, it fits"
    );

    let http = http_client();
    let response = http
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(big_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let status = RpcStatus::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, Code::ResourceExhausted as i32);

    let response = http
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "the limit holds once decompressed");

    let (status, _) = post_chunked(receivers.http, &big_bytes).await;
    assert_eq!(status, 413, "the limit holds without a Content-Length");

    let mut client = receivers.grpc_client().await;
    let refused = client.export(big.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let mut gzip_client = receivers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let refused = gzip_client.export(big).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    assert_eq!(receivers.ingestor.stats().batches_rejected, 5);
    assert_eq!(receivers.window(), Window::default());

    client.export(good_request(2)).await.unwrap();
    let response = http
        .post(receivers.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(good_request(3).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(receivers.window().candidate.samples, 5);
}
