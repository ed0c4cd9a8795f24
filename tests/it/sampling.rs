//! A tail sampler between the services and spangate, as the OpenTelemetry
//! Collector's are set up to keep every erroring trace and a tenth of the rest,
//! writing the threshold it applied in each kept span's `tracestate` (`ot=th:…`).
//! Sent over real OTLP receivers, the sampled stream must be judged as the stream it
//! came from, not on error rates inflated tenfold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::otlp::kv;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use spangate::analysis::sampling::{keeps, threshold_of_probability};
use spangate::analysis::{JudgeInput, Route, Routes, Window, WindowEpoch, judge};
use spangate::api::{AnalysisSpec, LatencyQuantiles, Verdict, VerdictOutcome};
use spangate::ingest::{Ingestor, ReceiverOptions, serve_grpc, serve_http};
use tokio::net::TcpListener;

const ROLLOUT: &str = "shop/checkout";
const EPOCH: WindowEpoch = WindowEpoch(1);
const DEADLINE: Duration = Duration::from_secs(30);
/// Requests per variant.
const REQUESTS: u64 = 20_000;

/// An ingestor routing the checkout rollout, behind both receivers on loopback.
async fn receivers() -> (Arc<Ingestor>, SocketAddr, SocketAddr) {
    let ingestor = Arc::new(Ingestor::new());
    ingestor.set_routes(Routes::new(vec![Route {
        rollout: ROLLOUT.to_string(),
        service: "checkout".to_string(),
        downstream: Vec::new(),
        flag_key: "new-checkout".to_string(),
        revision: None,
        baseline_variant: "off".to_string(),
        candidate_variant: "on".to_string(),
        bucket_by: None,
        epoch: EPOCH,
        step: None,
    }]));
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let never = std::future::pending::<()>;
    tokio::spawn(serve_grpc(
        grpc,
        ingestor.clone(),
        ReceiverOptions::new("otlp-grpc"),
        never(),
    ));
    tokio::spawn(serve_http(
        http,
        ingestor.clone(),
        ReceiverOptions::new("otlp-http"),
        never(),
    ));
    (ingestor, addrs.0, addrs.1)
}

/// The entry span of each request, both variants, the same every run: errors at
/// the given rates, erroring requests slower.
fn requests(error_rates: [f64; 2]) -> Vec<Span> {
    let mut spans = Vec::new();
    for (variant, rate, salt) in [("off", error_rates[0], 1u64), ("on", error_rates[1], 2)] {
        for i in 0..REQUESTS {
            let draw = |k: u64| splitmix(salt << 48 ^ i << 4 ^ k);
            let uniform = |k: u64| (draw(k) >> 11) as f64 / (1u64 << 53) as f64;
            let is_error = uniform(1) < rate;
            let mut trace_id = draw(2).to_le_bytes().to_vec();
            trace_id.extend_from_slice(&draw(3).to_le_bytes());
            let duration_ns =
                ((20.0 + 60.0 * uniform(4)) * 1e6) as u64 + 200_000_000 * is_error as u64;
            spans.push(Span {
                trace_id,
                span_id: draw(5).to_le_bytes().to_vec(),
                name: "POST /checkout".to_string(),
                start_time_unix_nano: 1_000_000_000,
                end_time_unix_nano: 1_000_000_000 + duration_ns,
                attributes: vec![
                    kv("feature_flag.key", "new-checkout"),
                    kv("feature_flag.result.variant", variant),
                ],
                status: is_error.then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "declined".to_string(),
                }),
                ..Default::default()
            });
        }
    }
    spans
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the tail sampler passes on: every erroring trace (kept at probability 1,
/// `th:0`) and the others whose randomness clears the 10% threshold, with the
/// threshold written as the specification writes it (trailing zeros dropped).
fn tail_sampled(spans: &[Span]) -> Vec<Span> {
    let threshold = threshold_of_probability(0.1);
    let written = format!("{threshold:014x}");
    let written = written.trim_end_matches('0');
    spans
        .iter()
        .filter_map(|span| {
            let is_error = span.status.is_some();
            let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().unwrap();
            let trace_state = if is_error {
                "vendor=kept,ot=th:0".to_string()
            } else if keeps(threshold, &trace_id) {
                format!("vendor=kept,ot=th:{written}")
            } else {
                return None;
            };
            Some(Span {
                trace_state,
                ..span.clone()
            })
        })
        .collect()
}

fn request(spans: &[Span]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans.to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends `spans` in requests of 500, alternating gRPC, HTTP/protobuf and HTTP/JSON,
/// and returns the window they made once every span is counted.
async fn send(spans: &[Span]) -> Window {
    let (ingestor, grpc, http) = receivers().await;
    let mut client = tokio::time::timeout(
        DEADLINE,
        TraceServiceClient::connect(format!("http://{grpc}")),
    )
    .await
    .expect("connected before the deadline")
    .unwrap();
    let http_client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let url = format!("http://{http}/v1/traces");
    for (i, chunk) in spans.chunks(500).enumerate() {
        let request = request(chunk);
        match i % 3 {
            0 => {
                let response = client.export(request).await.unwrap().into_inner();
                assert!(response.partial_success.is_none(), "{response:?}");
            }
            1 => {
                let response = http_client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(prost::Message::encode_to_vec(&request))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            _ => {
                let response = http_client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&request).unwrap())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    }
    let window = ingestor.window(ROLLOUT, EPOCH);
    assert_eq!(window.samples(), spans.len() as u64, "every span counted");
    window
}

fn verdict(window: &Window) -> Verdict {
    let analysis = AnalysisSpec {
        min_samples: 200,
        max_error_rate: Some(0.05),
        max_error_rate_increase: Some(0.01),
        max_latency_ms: Some(LatencyQuantiles {
            p99: Some(800.0),
            ..LatencyQuantiles::default()
        }),
        max_latency_increase: Some(0.25),
        ..AnalysisSpec::default()
    };
    judge(&JudgeInput {
        analysis: &analysis,
        steps: &[1.0, 5.0, 25.0, 50.0, 100.0],
        service: "checkout",
        baseline_variant: "off",
        candidate_variant: "on",
        weight: 50.0,
        previous_weight: None,
        unit_attribute: "feature_flag.context.id",
        completed: &[],
        window,
        revision: None,
        downstream: &[],
    })
}

#[tokio::test]
async fn a_tail_sampled_stream_reaches_the_verdicts_of_the_stream_it_came_from() {
    for (rates, expected) in [
        ([0.01, 0.01], VerdictOutcome::Pass),
        ([0.01, 0.04], VerdictOutcome::Fail),
    ] {
        let all = requests(rates);
        let kept = tail_sampled(&all);
        assert!(
            kept.len() < all.len() / 5,
            "{} of {}",
            kept.len(),
            all.len()
        );
        let whole = verdict(&send(&all).await);
        let sampled = verdict(&send(&kept).await);
        assert_eq!(whole.outcome, expected, "{}", whole.message);
        assert_eq!(sampled.outcome, expected, "{}", sampled.message);
        assert_eq!(sampled.failed_checks, whole.failed_checks);
        // The evidence counts the spans received, and says what they stood for.
        let sampling = sampled.candidate.sampling.expect("the spans were sampled");
        assert!(sampled.candidate.samples < REQUESTS / 5);
        let adjusted = sampling.adjusted_samples as f64 / REQUESTS as f64;
        assert!((0.9..1.1).contains(&adjusted), "{adjusted}");
        let (w, s) = (
            whole.candidate.error_rate.unwrap(),
            sampled.candidate.error_rate.unwrap(),
        );
        assert!((w - s).abs() < 0.004, "error rates {w} and {s}");
    }
}

#[tokio::test]
async fn without_thresholds_a_tail_sampled_stream_looks_as_bad_as_it_was_kept() {
    let all = requests([0.01, 0.01]);
    let mut kept = tail_sampled(&all);
    for span in &mut kept {
        span.trace_state = "vendor=kept".to_string();
    }
    let verdict = verdict(&send(&kept).await);
    assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{}", verdict.message);
    assert!(verdict.candidate.sampling.is_none());
    assert!(verdict.candidate.error_rate.unwrap() > 0.08);
}
