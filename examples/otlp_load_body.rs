//! Writes one OTLP/HTTP protobuf request body of checkout spans to stdout, for load
//! generators that replay a fixed body (`scripts/load` uses it with `hey`).
//!
//! Usage: `cargo run --release --example otlp_load_body -- [SPANS] > body.bin`

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

mod common;
use common::kv;

fn main() -> std::io::Result<()> {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(512);
    let start_ns: u64 = 1_764_000_000_000_000_000;
    let spans = (0..count)
        .map(|i| {
            let variant = if i % 2 == 0 { "on" } else { "off" };
            Span {
                trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "POST /checkout".into(),
                kind: 2,
                start_time_unix_nano: start_ns + i * 1_000_000,
                end_time_unix_nano: start_ns + i * 1_000_000 + 20_000_000 + (i % 50) * 1_000_000,
                attributes: vec![
                    kv("feature_flag.key", "new-checkout"),
                    kv("feature_flag.result.variant", variant),
                    kv("http.request.method", "POST"),
                    kv("url.path", "/checkout"),
                ],
                status: Some(Status {
                    code: if i % 50 == 0 {
                        StatusCode::Error
                    } else {
                        StatusCode::Ok
                    } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
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
    };
    std::io::stdout().write_all(&request.encode_to_vec())
}
