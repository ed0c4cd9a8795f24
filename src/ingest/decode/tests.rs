use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::*;
use crate::ingest::test_attributes::kv;
use crate::net::MemoryBudget;

fn span(id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: "GET /cart".to_string(),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000,
        attributes,
        events: vec![Event {
            name: "feature_flag.evaluation".to_string(),
            attributes: vec![kv("feature_flag.key", "new-cart")],
            ..Default::default()
        }],
        links: vec![Link {
            trace_id: vec![8; 16],
            span_id: vec![9; 8],
            attributes: vec![kv("kind", "follows")],
            ..Default::default()
        }],
        status: Some(Status {
            code: 2,
            message: "boom".to_string(),
        }),
        ..Default::default()
    }
}

/// An attribute whose value nests `levels` deep: `{"n": {"n": ... "leaf"}}`.
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

fn request(groups: Vec<(Vec<KeyValue>, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "checkout".to_string(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn limits() -> IngestLimits {
    IngestLimits::default()
}

fn run(encoding: Encoding, body: &[u8]) -> Result<Decoded, Refused> {
    let budget = MemoryBudget::new(limits().max_in_flight_bytes);
    let mut reservation = budget.try_reserve(0).unwrap();
    decode(encoding, body, &limits(), &mut reservation)
}

fn json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(request).unwrap()
}

/// What `request` holds on the heap, counted from its vectors' and strings'
/// capacities as the allocator would hand them out.
fn heap(request: &ExportTraceServiceRequest) -> usize {
    use schema::allocation;
    fn vec<T>(v: &Vec<T>) -> usize {
        allocation(v.capacity() * std::mem::size_of::<T>())
    }
    fn value(v: &AnyValue) -> usize {
        match &v.value {
            Some(any_value::Value::StringValue(s)) => allocation(s.capacity()),
            Some(any_value::Value::BytesValue(b)) => vec(b),
            Some(any_value::Value::ArrayValue(a)) => {
                vec(&a.values) + a.values.iter().map(value).sum::<usize>()
            }
            Some(any_value::Value::KvlistValue(l)) => attributes(&l.values),
            _ => 0,
        }
    }
    fn attributes(a: &Vec<KeyValue>) -> usize {
        vec(a)
            + a.iter()
                .map(|kv| allocation(kv.key.capacity()) + kv.value.as_ref().map_or(0, value))
                .sum::<usize>()
    }
    let mut total = vec(&request.resource_spans);
    for r in &request.resource_spans {
        total += allocation(r.schema_url.capacity()) + vec(&r.scope_spans);
        total += r.resource.as_ref().map_or(0, |r| attributes(&r.attributes));
        for s in &r.scope_spans {
            total += vec(&s.spans) + allocation(s.schema_url.capacity());
            total += s.scope.as_ref().map_or(0, |s| {
                allocation(s.name.capacity()) + attributes(&s.attributes)
            });
            for span in &s.spans {
                total += vec(&span.trace_id) + vec(&span.span_id) + vec(&span.parent_span_id);
                total += allocation(span.name.capacity()) + allocation(span.trace_state.capacity());
                total += attributes(&span.attributes) + vec(&span.events) + vec(&span.links);
                total += span
                    .events
                    .iter()
                    .map(|e| allocation(e.name.capacity()) + attributes(&e.attributes))
                    .sum::<usize>();
                total += span
                    .links
                    .iter()
                    .map(|l| vec(&l.trace_id) + vec(&l.span_id) + attributes(&l.attributes))
                    .sum::<usize>();
                total += span
                    .status
                    .as_ref()
                    .map_or(0, |s| allocation(s.message.capacity()));
            }
        }
    }
    total
}

#[test]
fn a_request_decodes_as_prost_would_within_its_estimate() {
    let mut array = kv("list", "");
    array.value = Some(AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(any_value::Value::IntValue(3)),
                },
                AnyValue {
                    value: Some(any_value::Value::StringValue("x".to_string())),
                },
            ],
        })),
    });
    let original = request(vec![
        (
            vec![kv("service.name", "checkout")],
            vec![
                span(1, vec![kv("a", "b"), nested(4), array]),
                span(2, vec![]),
            ],
        ),
        (vec![kv("service.name", "cart")], vec![span(3, vec![])]),
    ]);
    for (encoding, body) in [
        (Encoding::Protobuf, original.encode_to_vec()),
        (Encoding::Json, json(&original)),
    ] {
        let decoded = run(encoding, &body).unwrap();
        assert_eq!(decoded.request, original, "{encoding:?}");
        assert_eq!(decoded.rejected, Rejected::default());
        let held = heap(&decoded.request);
        assert!(
            decoded.cost >= held,
            "{encoding:?}: estimated {} < {held} held",
            decoded.cost
        );
    }
}

#[test]
fn millions_of_empty_spans_are_too_large_before_any_is_decoded() {
    // 2,000,000 spans of 2 bytes each: 4 MB on the wire, over 500 MB decoded.
    let mut scope_spans = Vec::with_capacity(2_000_000 * 2 + 8);
    for _ in 0..2_000_000 {
        scope_spans.extend_from_slice(&[0x12, 0x00]);
    }
    let mut resource_spans = vec![0x12];
    prost::encoding::encode_varint(scope_spans.len() as u64, &mut resource_spans);
    resource_spans.extend_from_slice(&scope_spans);
    let mut body = vec![0x0a];
    prost::encoding::encode_varint(resource_spans.len() as u64, &mut body);
    body.extend_from_slice(&resource_spans);
    assert!(body.len() < 4_000_020);

    let refused = run(Encoding::Protobuf, &body).unwrap_err();
    let Refused::TooLarge { estimate, limit } = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(limit, limits().max_decoded_bytes);
    assert!(
        estimate >= 2_000_000 * std::mem::size_of::<Span>(),
        "{estimate}"
    );

    let empty_json = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}]}}]}}]}}",
        vec!["{}"; 1_000_000].join(",")
    );
    assert!(matches!(
        run(Encoding::Json, empty_json.as_bytes()),
        Err(Refused::TooLarge { .. })
    ));
}

#[test]
fn when_the_budget_is_used_up_the_request_is_overloaded() {
    let budget = MemoryBudget::new(limits().max_in_flight_bytes);
    let _others = budget
        .try_reserve(limits().max_in_flight_bytes - 100)
        .unwrap();
    let mut reservation = budget.try_reserve(0).unwrap();
    let body = request(vec![(vec![], vec![span(1, vec![])])]).encode_to_vec();
    assert_eq!(
        decode(Encoding::Protobuf, &body, &limits(), &mut reservation).unwrap_err(),
        Refused::Overloaded
    );
    assert_eq!(reservation.bytes(), 0);
}

#[test]
fn a_span_too_deep_or_undecodable_is_rejected_alone() {
    let deep = span(2, vec![nested(limits().max_attribute_depth + 1)]);
    let deepest_allowed = span(3, vec![nested(limits().max_attribute_depth)]);
    let original = request(vec![(
        vec![kv("service.name", "checkout")],
        vec![span(1, vec![]), deep, deepest_allowed],
    )]);

    let decoded = run(Encoding::Protobuf, &original.encode_to_vec()).unwrap();
    let kept: Vec<u8> = decoded.request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.span_id[0])
        .collect();
    assert_eq!(kept, [1, 3]);
    assert_eq!(
        decoded.rejected,
        Rejected {
            count: 1,
            first: Some(InvalidSpan::TooDeep {
                part: Part::Span,
                max: 16
            })
        }
    );

    let decoded = run(Encoding::Json, &json(&original)).unwrap();
    assert_eq!(
        decoded.request.resource_spans[0].scope_spans[0].spans.len(),
        2
    );
    assert_eq!(decoded.rejected.count, 1);

    // A span ID that is not hex fails that span only.
    let text = String::from_utf8(json(&original)).unwrap();
    let text = text.replacen("0101010101010101", "zz01010101010101", 1);
    let decoded = run(Encoding::Json, text.as_bytes()).unwrap();
    let kept = &decoded.request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(kept.len(), 1, "span 1 undecodable, span 2 too deep");
    assert_eq!(decoded.rejected.count, 2);
    assert!(
        matches!(
            &decoded.rejected.first,
            Some(InvalidSpan::Undecodable { part: Part::Span, detail }) if detail.contains("invalid character")
        ),
        "{:?}",
        decoded.rejected
    );

    // A span whose own bytes are broken (a field claims more bytes than it has).
    let mut body = Vec::new();
    let good = span(5, vec![]).encode_to_vec();
    let broken = [0x0a, 0x10, 1, 2, 3];
    let mut scope = Vec::new();
    for s in [&good[..], &broken[..]] {
        scope.push(0x12);
        prost::encoding::encode_varint(s.len() as u64, &mut scope);
        scope.extend_from_slice(s);
    }
    let mut group = vec![0x12];
    prost::encoding::encode_varint(scope.len() as u64, &mut group);
    group.extend_from_slice(&scope);
    body.push(0x0a);
    prost::encoding::encode_varint(group.len() as u64, &mut body);
    body.extend_from_slice(&group);
    let decoded = run(Encoding::Protobuf, &body).unwrap();
    assert_eq!(
        decoded.request.resource_spans[0].scope_spans[0].spans.len(),
        1
    );
    assert!(matches!(
        decoded.rejected.first,
        Some(InvalidSpan::Undecodable {
            part: Part::Span,
            ..
        })
    ));
}

#[test]
fn a_bad_resource_rejects_its_spans_and_keeps_the_others() {
    let original = request(vec![
        (vec![nested(30)], vec![span(1, vec![]), span(2, vec![])]),
        (vec![kv("service.name", "cart")], vec![span(3, vec![])]),
    ]);
    for (encoding, body) in [
        (Encoding::Protobuf, original.encode_to_vec()),
        (Encoding::Json, json(&original)),
    ] {
        let decoded = run(encoding, &body).unwrap();
        assert_eq!(decoded.request.resource_spans.len(), 1, "{encoding:?}");
        assert_eq!(
            decoded.rejected,
            Rejected {
                count: 2,
                first: Some(InvalidSpan::TooDeep {
                    part: Part::Resource,
                    max: 16
                })
            }
        );
    }
}

#[test]
fn nesting_past_the_decoders_own_limits_costs_only_the_span() {
    // 40 levels: past prost's recursion limit for a whole request, and past
    // serde_json's for a JSON document.
    let original = request(vec![(
        vec![],
        vec![span(1, vec![nested(40)]), span(2, vec![])],
    )]);
    for (encoding, body) in [
        (Encoding::Protobuf, original.encode_to_vec()),
        (Encoding::Json, json(&original)),
    ] {
        assert!(ExportTraceServiceRequest::decode(&original.encode_to_vec()[..]).is_err());
        let decoded = run(encoding, &body).unwrap();
        assert_eq!(
            decoded.request.resource_spans[0].scope_spans[0].spans.len(),
            1
        );
        assert_eq!(decoded.rejected.count, 1);
    }
    // JSON arrays 100,000 deep inside a span: skipped without recursion.
    let deep = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{{\"attributes\":{}{}}}]}}]}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let decoded = run(Encoding::Json, deep.as_bytes()).unwrap();
    assert_eq!(decoded.rejected.count, 1);
}

#[test]
fn a_broken_skeleton_refuses_the_request_whole() {
    for body in [&b"\x0a\xff\x01\x00"[..], b"\x0b"] {
        assert!(matches!(
            run(Encoding::Protobuf, body),
            Err(Refused::Malformed { .. })
        ));
    }
    for body in [
        &b"{\"resourceSpans\": ["[..],
        b"{\"resourceSpans\": 3}",
        b"[]",
        b"null",
    ] {
        let refused = run(Encoding::Json, body).unwrap_err();
        assert!(
            refused.to_string().starts_with("invalid OTLP JSON"),
            "{refused}"
        );
    }
}

#[test]
fn unknown_fields_of_any_wire_type_are_skipped_as_prost_skips_them() {
    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }
    let original = request(vec![(
        vec![kv("service.name", "cart")],
        vec![span(1, vec![])],
    )]);
    let resource_spans = &original.resource_spans[0];
    // Field 9 as a varint, a fixed64 and a fixed32, in resource spans and in
    // scope spans (found by tests/fuzz.rs: such a request was refused whole).
    let unknown = b"\x48\x01\x49\x00\x00\x00\x00\x00\x00\x00\x00\x4d\x00\x00\x00\x00";
    let mut scope_spans = unknown.to_vec();
    scope_spans.extend(resource_spans.scope_spans[0].encode_to_vec());
    let mut inner = unknown.to_vec();
    inner.extend(field(
        1,
        &resource_spans.resource.as_ref().unwrap().encode_to_vec(),
    ));
    inner.extend(field(2, &scope_spans));
    let body = field(1, &inner);
    assert_eq!(
        ExportTraceServiceRequest::decode(&body[..]).unwrap(),
        original
    );
    let decoded = run(Encoding::Protobuf, &body).unwrap();
    assert_eq!(decoded.request, original);
    assert_eq!(decoded.rejected, Rejected::default());
}

#[test]
fn json_reads_omitted_defaults_and_nulls() {
    let body = r#"{"resourceSpans": [{"resource": {"entityRefs": [{"type": "service", "idKeys": ["service.name"]}]},
        "schemaUrl": null,
        "scopeSpans": [{"scope": null, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": null, "status": null, "attributes": [
                {"key": "empty", "value": {"arrayValue": {}}},
                {"key": "nested", "value": {"kvlistValue": {"values": [
                    {"key": "inner", "value": {"kvlistValue": {}}}
                ]}}},
                {"key": "unset", "value": null}
            ]
        }]}]}, null]}"#;
    let decoded = run(Encoding::Json, body.as_bytes()).unwrap();
    let resource_spans = &decoded.request.resource_spans[0];
    let entity = &resource_spans.resource.as_ref().unwrap().entity_refs[0];
    assert_eq!(
        (entity.r#type.as_str(), entity.schema_url.as_str()),
        ("service", "")
    );
    let span = &resource_spans.scope_spans[0].spans[0];
    assert!(span.parent_span_id.is_empty() && span.status.is_none());
    let value = |i: usize| {
        span.attributes[i]
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
    };
    assert!(matches!(value(0), Some(any_value::Value::ArrayValue(a)) if a.values.is_empty()));
    assert!(matches!(value(1), Some(any_value::Value::KvlistValue(l)) if l.values.len() == 1));
    assert_eq!(value(2), None);
    assert_eq!(decoded.rejected, Rejected::default());
}

#[test]
fn a_message_written_as_an_array_is_rejected_alone() {
    // serde reads `{"arrayValue": [[…]]}` as an array of values: a way around
    // the depth and memory checks, which OTLP/JSON never writes.
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"07070707070707070707070707070707","spanId":"0101010101010101",
         "attributes":[{"key":"k","value":{"arrayValue":[[{"stringValue":"x"}]]}}]},
        {"traceId":"07070707070707070707070707070707","spanId":"0202020202020202"}]}]}]}"#;
    let decoded = run(Encoding::Json, body).unwrap();
    let kept = &decoded.request.resource_spans[0].scope_spans[0].spans;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].span_id, [2; 8]);
    assert!(
        matches!(
            &decoded.rejected.first,
            Some(InvalidSpan::Undecodable { part: Part::Span, detail })
                if detail.contains("written as an array")
        ),
        "{:?}",
        decoded.rejected
    );
}

mod logs {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;

    fn record(id: u8, attributes: Vec<KeyValue>) -> LogRecord {
        LogRecord {
            time_unix_nano: 1_000,
            event_name: "feature_flag.evaluation".to_string(),
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("evaluated".to_string())),
            }),
            attributes,
            ..Default::default()
        }
    }

    fn logs(groups: Vec<(Vec<KeyValue>, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: groups
                .into_iter()
                .map(|(resource, log_records)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: resource,
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "openfeature".to_string(),
                            ..Default::default()
                        }),
                        log_records,
                        schema_url: "https://opentelemetry.io/schemas/1.30.0".to_string(),
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn run_logs(
        encoding: Encoding,
        body: &[u8],
    ) -> Result<Decoded<ExportLogsServiceRequest>, Refused> {
        let budget = MemoryBudget::new(limits().max_in_flight_bytes);
        let mut reservation = budget.try_reserve(0).unwrap();
        let decoded = decode_logs(encoding, body, &limits(), &mut reservation);
        if let Ok(decoded) = &decoded {
            assert_eq!(reservation.bytes(), decoded.cost);
        }
        decoded
    }

    fn encodings(request: &ExportLogsServiceRequest) -> [(Encoding, Vec<u8>); 2] {
        [
            (Encoding::Protobuf, request.encode_to_vec()),
            (Encoding::Json, serde_json::to_vec(request).unwrap()),
        ]
    }

    #[test]
    fn log_records_decode_as_prost_would_within_their_estimate() {
        let original = logs(vec![(
            vec![kv("service.name", "checkout")],
            (0..20)
                .map(|id| record(id + 1, vec![kv("feature_flag.key", "new-cart")]))
                .collect(),
        )]);
        for (encoding, body) in encodings(&original) {
            let decoded = run_logs(encoding, &body).unwrap();
            assert_eq!(decoded.request, original, "{encoding:?}");
            assert_eq!(decoded.rejected, Rejected::default());
            // The records' vector alone, and each one's IDs, body and attribute.
            let floor = 32 * std::mem::size_of::<LogRecord>()
                + 20 * (4 * schema::allocation(16) + std::mem::size_of::<KeyValue>());
            assert!(
                decoded.cost >= floor,
                "{encoding:?}: {} < {floor}",
                decoded.cost
            );
        }
    }

    #[test]
    fn a_log_record_too_deep_or_undecodable_is_rejected_alone() {
        let mut deep_body = record(2, vec![]);
        deep_body.body = nested(limits().max_attribute_depth + 1).value;
        let original = logs(vec![(
            vec![],
            vec![
                record(1, vec![]),
                deep_body,
                record(3, vec![nested(limits().max_attribute_depth + 1)]),
                record(4, vec![nested(limits().max_attribute_depth)]),
            ],
        )]);
        for (encoding, body) in encodings(&original) {
            let decoded = run_logs(encoding, &body).unwrap();
            let kept: Vec<u8> = decoded.request.resource_logs[0].scope_logs[0]
                .log_records
                .iter()
                .map(|r| r.span_id[0])
                .collect();
            assert_eq!(kept, [1, 4], "{encoding:?}");
            assert_eq!(
                decoded.rejected,
                Rejected {
                    count: 2,
                    first: Some(InvalidSpan::TooDeep {
                        part: Part::LogRecord,
                        max: 16
                    })
                }
            );
            assert_eq!(
                decoded.rejected.first.unwrap().to_string(),
                "log record attribute values nest deeper than 16 levels"
            );
        }

        // A span ID that is not hex fails that record only.
        let text = String::from_utf8(serde_json::to_vec(&original).unwrap()).unwrap();
        let text = text.replacen("0101010101010101", "zz01010101010101", 1);
        let decoded = run_logs(Encoding::Json, text.as_bytes()).unwrap();
        assert_eq!(decoded.rejected.count, 3);
        assert!(matches!(
            decoded.rejected.first,
            Some(InvalidSpan::Undecodable {
                part: Part::LogRecord,
                ..
            })
        ));
    }

    #[test]
    fn a_bad_resource_rejects_its_records_and_keeps_the_others() {
        let original = logs(vec![
            (vec![nested(30)], vec![record(1, vec![]), record(2, vec![])]),
            (vec![kv("service.name", "cart")], vec![record(3, vec![])]),
        ]);
        for (encoding, body) in encodings(&original) {
            let decoded = run_logs(encoding, &body).unwrap();
            assert_eq!(decoded.request.resource_logs.len(), 1, "{encoding:?}");
            assert_eq!(decoded.rejected.count, 2);
        }
    }

    #[test]
    fn malformed_logs_requests_are_refused_whole() {
        for (encoding, body) in [
            (Encoding::Json, &b"{\"resourceLogs\": [{\"scopeLogs\": "[..]),
            (Encoding::Json, b"[]"),
            (Encoding::Json, b"{\"resourceLogs\": 3}"),
            (Encoding::Protobuf, &[0x0a, 0x05, 0x12][..]),
            (Encoding::Protobuf, &[0x0b][..]),
        ] {
            assert!(
                matches!(run_logs(encoding, body), Err(Refused::Malformed { .. })),
                "{encoding:?} {body:?}"
            );
        }
        // The trace skeleton's names are not the logs': nothing is read.
        let traces = json(&request(vec![(vec![], vec![span(1, vec![])])]));
        let decoded = run_logs(Encoding::Json, &traces).unwrap();
        assert_eq!(decoded.request, ExportLogsServiceRequest::default());
    }

    #[test]
    fn millions_of_empty_log_records_are_too_large_before_any_is_decoded() {
        let mut scope_logs = Vec::with_capacity(2_000_000 * 2 + 8);
        for _ in 0..2_000_000 {
            scope_logs.extend_from_slice(&[0x12, 0x00]);
        }
        let mut resource_logs = vec![0x12];
        prost::encoding::encode_varint(scope_logs.len() as u64, &mut resource_logs);
        resource_logs.extend_from_slice(&scope_logs);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(resource_logs.len() as u64, &mut body);
        body.extend_from_slice(&resource_logs);
        let refused = run_logs(Encoding::Protobuf, &body).unwrap_err();
        let Refused::TooLarge { estimate, .. } = refused else {
            panic!("{refused:?}");
        };
        assert!(estimate >= 2_000_000 * std::mem::size_of::<LogRecord>());

        let empty_json = format!(
            "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{}]}}]}}]}}",
            vec!["{}"; 1_000_000].join(",")
        );
        assert!(matches!(
            run_logs(Encoding::Json, empty_json.as_bytes()),
            Err(Refused::TooLarge { .. })
        ));
    }
}
