//! Timings of hiding private attributes in a forwarded batch, the step of
//! forwarding that walks every attribute of every span: a batch of 512 spans as an
//! instrumented HTTP service sends it (a dozen attributes a span, one key-value
//! list and one array among them, an event), first without any private attribute,
//! then with one span in 16 carrying private values, at the top and nested.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use spangate::flags::PrivateAttributes;
use spangate::ingest::hide_private;

const SPANS: usize = 512;

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(value: &str) -> any_value::Value {
    any_value::Value::StringValue(value.to_string())
}

fn span(i: usize, private_every: Option<usize>) -> Span {
    let mut attributes = vec![
        attribute("http.request.method", string("POST")),
        attribute("http.route", string("/checkout/{cart}")),
        attribute("url.path", string("/checkout/c-1234")),
        attribute("http.response.status_code", any_value::Value::IntValue(200)),
        attribute("server.address", string("checkout.shop.svc")),
        attribute(
            "user_agent.original",
            string("Mozilla/5.0 (X11; Linux x86_64)"),
        ),
        attribute("feature_flag.key", string("new-checkout")),
        attribute("feature_flag.result.variant", string("on")),
        attribute("enduser.pseudo.id", string("u-98765")),
        attribute(
            "app.cart",
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![
                    attribute("items", any_value::Value::IntValue(3)),
                    attribute("currency", string("EUR")),
                    attribute("coupon", string("SPRING")),
                ],
            }),
        ),
        attribute(
            "app.tags",
            any_value::Value::ArrayValue(ArrayValue {
                values: ["mobile", "returning", "eu"]
                    .map(|tag| AnyValue {
                        value: Some(string(tag)),
                    })
                    .to_vec(),
            }),
        ),
        attribute("thread.name", string("tokio-runtime-worker")),
    ];
    if private_every.is_some_and(|every| i.is_multiple_of(every)) {
        attributes.push(attribute("enduser.email", string("ann@example.com")));
        attributes.push(attribute(
            "app.contacts",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![attribute("email", string("bo@example.com"))],
                    })),
                }],
            }),
        ));
    }
    Span {
        trace_id: vec![(i % 255) as u8 + 1; 16],
        span_id: vec![(i % 255) as u8 + 1; 8],
        name: "POST /checkout/{cart}".to_string(),
        attributes,
        events: vec![Event {
            name: "feature_flag.evaluation".to_string(),
            attributes: vec![
                attribute("feature_flag.key", string("new-checkout")),
                attribute("feature_flag.result.variant", string("on")),
                attribute("feature_flag.provider.name", string("ofrep")),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn batch(private_every: Option<usize>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", string("checkout")),
                    attribute("service.version", string("1.4.2")),
                    attribute("vcs.ref.head.revision", string("3f2c1a9")),
                    attribute("k8s.namespace.name", string("shop")),
                    attribute("k8s.pod.name", string("checkout-7d9f8-abcde")),
                    attribute("telemetry.sdk.language", string("rust")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..SPANS).map(|i| span(i, private_every)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn bench_hide_private(c: &mut Criterion) {
    let private =
        PrivateAttributes::parse(&["email", "phone", "address.street", "targetingKey"]).unwrap();

    let mut clean = batch(None);
    c.bench_function("hide_private_512_spans_none_private", |b| {
        b.iter(|| hide_private(black_box(&mut clean), black_box(&private)))
    });

    let mixed = batch(Some(16));
    c.bench_function("hide_private_512_spans_1_in_16_private", |b| {
        b.iter_batched_ref(
            || mixed.clone(),
            |batch| hide_private(black_box(batch), black_box(&private)),
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench_hide_private);
criterion_main!(benches);
