//! Evaluating compiled targeting allocates nothing: an allocator that counts this
//! thread's allocations watches thousands of evaluations through every path
//! (targets, exclusions, each operator, segments, rule splits, the percentage).
//! Neither does hiding private attributes in a forwarded batch that holds none, at
//! any depth of key-value lists and arrays.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Map, Value, json};
use spangate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase, SegmentSpec};
use spangate::controller::SegmentCatalog;
use spangate::flags::{Context, PrivateAttributes};
use spangate::ingest::hide_private;
use spangate::store::{RolloutKey, StoredSegment};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches
// only a const-initialised thread-local, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn evaluating_targeting_allocates_nothing() {
    let spec: FeatureRolloutSpec = serde_norway::from_str(
        r#"
flag: {key: new-search, variants: {"old": false, "new": true}, defaultVariant: "old", rolloutVariant: "new"}
bucketBy: accountId
service: search
steps: [25, 100]
analysis: {maxErrorRate: 0.05}
targeting:
  targets:
  - {variant: "new", values: [qa-1, qa-2]}
  - {variant: "new", attribute: accountId, values: [acct-internal]}
  exclude:
  - {values: [vip]}
  rules:
  - name: gmail
    clauses: [{attribute: email, op: endsWith, values: ["@gmail.com"]}]
    variant: "new"
  - name: coasts
    clauses:
    - {attribute: address.state, op: in, values: [CA, NY]}
    - {attribute: plan, op: in, values: [free], negate: true}
    split: [{variant: "new", percent: 50}, {variant: "old", percent: 50}]
  - name: numbers-and-times
    clauses:
    - {attribute: age, op: greaterThanOrEqual, values: [18]}
    - {attribute: createdAt, op: before, values: ["2026-01-01T00:00:00Z"]}
    - {attribute: app, op: semVerLessThan, values: ["2.0.0"]}
    - {attribute: email, op: contains, values: [corp]}
    - {attribute: email, op: matches, values: ["^[a-z]+@"]}
    - {attribute: $flagd.timestamp, op: after, values: [0]}
    variant: "new"
  - name: beta
    clauses: [{op: segmentMatch, values: [beta]}]
    variant: "new"
"#,
    )
    .unwrap();
    let segment: SegmentSpec = serde_norway::from_str(
        "included: [b-1]\nexcluded: [b-2]\nrules:\n- clauses: [{attribute: plan, op: in, values: [elite]}]\n",
    )
    .unwrap();
    let mut catalog = SegmentCatalog::default();
    catalog.update(&[StoredSegment {
        key: RolloutKey::new("default", "beta"),
        spec: Ok(segment),
        source: "beta.yaml".into(),
    }]);
    let compiled = catalog
        .compile(&RolloutKey::new("default", "s"), Arc::new(spec))
        .unwrap();
    let status = FeatureRolloutStatus {
        phase: Phase::Progressing,
        current_step: Some(0),
        weight: 25.0,
        ..Default::default()
    };
    let flag = compiled.flag("default/s", &status).unwrap();

    let people: Vec<Map<String, Value>> = [
        json!({"targetingKey": "qa-1"}),
        json!({"targetingKey": "u", "accountId": "acct-internal"}),
        json!({"targetingKey": "vip", "accountId": "a1"}),
        json!({"targetingKey": "u", "accountId": "a2", "email": "ann@gmail.com"}),
        json!({"targetingKey": "u", "accountId": "a3", "address": {"state": "CA"}, "plan": "pro"}),
        json!({"targetingKey": "u", "accountId": "a4", "age": 30, "createdAt": "2025-05-01T00:00:00Z",
               "app": "1.9.0", "email": "bo@corp.example"}),
        json!({"targetingKey": "b-1", "accountId": "a5"}),
        json!({"targetingKey": "b-2", "accountId": "a6", "plan": "elite"}),
        json!({"targetingKey": "u", "accountId": "a7", "plan": "elite"}),
        json!({"targetingKey": "u", "accountId": 12345}),
        json!({"targetingKey": "u", "accountId": "a8", "email": "x@example.org", "age": 12}),
    ]
    .into_iter()
    .map(|v| v.as_object().unwrap().clone())
    .collect();
    let contexts: Vec<Context<'_>> = people.iter().map(Context::new).collect();
    let now = Timestamp::now();
    let mut decided = Vec::new();
    for context in &contexts {
        decided.push(format!(
            "{:?}",
            flag.evaluate(context, now).unwrap().matched
        ));
    }
    // Every path is taken by some context.
    for path in [
        "Target",
        "Exclusion",
        "gmail",
        "coasts",
        "numbers-and-times",
        "beta",
        "Nothing",
    ] {
        assert!(
            decided.iter().any(|d| d.contains(path)),
            "{path} not taken: {decided:?}"
        );
    }

    let before = allocations();
    for _ in 0..1_000 {
        for context in &contexts {
            std::hint::black_box(flag.evaluate(std::hint::black_box(context), now).unwrap());
        }
    }
    assert_eq!(allocations() - before, 0, "evaluations allocated");
}

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

fn list(values: Vec<KeyValue>) -> any_value::Value {
    any_value::Value::KvlistValue(KeyValueList { values })
}

fn array(values: Vec<any_value::Value>) -> any_value::Value {
    any_value::Value::ArrayValue(ArrayValue {
        values: values
            .into_iter()
            .map(|value| AnyValue { value: Some(value) })
            .collect(),
    })
}

#[test]
fn hiding_private_attributes_where_there_are_none_allocates_nothing() {
    // Near misses of every private path, at every depth and on every list.
    let attributes = vec![
        attribute("user_email", string("a@b.example")),
        attribute("feature_flag.context.key", string("u-1")),
        attribute("http.response.status_code", any_value::Value::IntValue(200)),
        attribute(
            "address",
            list(vec![
                attribute("city", string("Lyon")),
                attribute("street.number", string("12")),
            ]),
        ),
        attribute(
            "arr",
            array(vec![
                list(vec![attribute("emails", array(vec![string("x")]))]),
                array(vec![
                    string("tags"),
                    list(vec![attribute("phone_hash", string("h"))]),
                ]),
            ]),
        ),
    ];
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![3; 8],
        attributes: attributes.clone(),
        events: vec![Event {
            attributes: attributes.clone(),
            ..Default::default()
        }],
        links: vec![Link {
            attributes: attributes.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut batch = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attributes.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span; 64],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let sent = batch.clone();
    let private =
        PrivateAttributes::parse(&["email", "phone", "address.street", "tags.1", "targetingKey"])
            .unwrap();

    let before = allocations();
    for _ in 0..100 {
        hide_private(std::hint::black_box(&mut batch), &private);
    }
    assert_eq!(allocations() - before, 0, "hiding allocated");
    assert_eq!(batch, sent);
}
