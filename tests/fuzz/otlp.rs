//! OTLP trace requests, protobuf and JSON, through what both receivers do with a
//! body: [`decode`] within the memory budget, then [`Ingestor::accept`].
//!
//! Invariants: no panic; a refusal says why, briefly, without quoting a value;
//! a request prost reads whole is never refused as malformed;
//! a decoded request holds no more memory than was reserved for it; every span
//! of the request is accounted for once, as accepted or rejected, in the report,
//! the counters, the response and the rollout windows; and the decoded request,
//! encoded again as protobuf, decodes to the same bytes with nothing rejected.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use spangate::analysis::{Route, Routes, WindowEpoch};
use spangate::ingest::extract::{self, InvalidSpan};
use spangate::ingest::{Decoded, Encoding, IngestLimits, Ingestor, Refused, decode};
use spangate::net::MemoryBudget;

use super::harness::{self, Outcome, Rng};
use super::mutate::{self, MARKER};

/// Longest run of a request a message may repeat: a character or a name, not a value.
const LONGEST_ECHO: usize = 40;
/// Longest message about a request, written to logs and answers.
const LONGEST_MESSAGE: usize = 2048;
/// Memory a decode may hold beyond its estimate: the reasons it rejected spans for.
pub(super) const UNESTIMATED_BYTES: isize = 4 * 1024;

pub(super) const OTLP_KEYS: &[&str] = &[
    "resourceSpans",
    "resource",
    "scopeSpans",
    "scope",
    "spans",
    "schemaUrl",
    "attributes",
    "key",
    "value",
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
    "values",
    "traceId",
    "spanId",
    "parentSpanId",
    "traceState",
    "name",
    "version",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "timeUnixNano",
    "events",
    "links",
    "status",
    "code",
    "message",
    "flags",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "entityRefs",
    "idKeys",
    "descriptionKeys",
    "type",
    "feature_flag.key",
    "feature_flag.result.variant",
    "feature_flag.evaluation",
];

const SERVICES: &[&str] = &["checkout", "search", "", "cart"];
const FLAGS: &[&str] = &["new-cart", "new-search", "other"];
const VARIANTS: &[&str] = &["on", "off", "new", "old", "x"];

/// The rollouts spans are routed to: one by targeting key, one by account and
/// revision.
fn routes() -> Routes {
    let route = |rollout: &str, service: &str, flag: &str, variants: (&str, &str)| Route {
        rollout: rollout.to_string(),
        service: service.to_string(),
        downstream: Vec::new(),
        flag_key: flag.to_string(),
        revision: None,
        baseline_variant: variants.0.to_string(),
        candidate_variant: variants.1.to_string(),
        bucket_by: None,
        epoch: WindowEpoch(1),
        step: None,
    };
    Routes::new(vec![
        route("shop/cart", "checkout", "new-cart", ("off", "on")),
        Route {
            revision: Some("3f2c1a9".to_string()),
            bucket_by: Some("accountId".to_string()),
            epoch: WindowEpoch(7),
            ..route("shop/search", "search", "new-search", ("old", "new"))
        },
    ])
}

/// The limits a request is read under, chosen from its bytes so a replay reads
/// it alike: mostly the defaults; a quarter at another depth, some with a small
/// decoded size limit.
pub(super) fn limits_for(body: &[u8]) -> IngestLimits {
    let hash = spangate::fingerprint::fnv1a(body);
    let mut limits = IngestLimits::default();
    if hash.is_multiple_of(4) {
        limits.max_attribute_depth = 1 + (hash >> 8) as usize % IngestLimits::MAX_ATTRIBUTE_DEPTH;
    }
    if hash % 16 == 1 {
        limits.max_decoded_bytes = 1 + (hash >> 16) as usize % (256 * 1024);
    }
    limits
}

/// The memory budget a request finds: mostly room, sometimes little.
pub(super) fn budget_for(body: &[u8], limits: &IngestLimits) -> usize {
    let hash = spangate::fingerprint::fnv1a(body);
    if hash % 16 == 2 {
        (hash >> 20) as usize % (64 * 1024)
    } else {
        limits.max_in_flight_bytes
    }
}

pub fn check(encoding: Encoding, body: &[u8]) -> Outcome {
    let limits = limits_for(body);
    let budget = MemoryBudget::new(budget_for(body, &limits));
    let mut reservation = budget.try_reserve(0).expect("nothing reserved yet");
    let held_before = harness::thread_held();
    harness::thread_peak_since_last();
    let decoded = decode(encoding, body, &limits, &mut reservation);
    let peak = harness::thread_peak_since_last() - held_before;
    let kept = harness::thread_held() - held_before;
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(refused) => return refusal(encoding, body, &refused),
    };
    let Decoded {
        request,
        rejected,
        cost,
    } = decoded;
    if reservation.bytes() != cost || cost > limits.max_decoded_bytes {
        return Err(format!(
            "{} bytes reserved for a request estimated at {cost}, limit {}",
            reservation.bytes(),
            limits.max_decoded_bytes
        ));
    }
    if kept > cost as isize + UNESTIMATED_BYTES || peak > cost as isize + UNESTIMATED_BYTES {
        return Err(format!(
            "decoding held {peak} bytes at its peak and keeps {kept}, over the {cost} estimated"
        ));
    }
    if (rejected.count == 0) != rejected.first.is_none() {
        return Err(format!(
            "{rejected:?}: a count without a first reason, or the reverse"
        ));
    }
    if let Some(first) = &rejected.first {
        message("the first rejected span's reason", &first.to_string(), body)?;
    }

    // Every span of the request, counted without spangate's decoder.
    let in_request = match encoding {
        Encoding::Protobuf => protobuf_spans(body)
            .ok_or("spangate read a request whose skeleton protobuf fields do not parse")?,
        Encoding::Json => match serde_json::from_slice::<Skeleton<0>>(body) {
            Ok(skeleton) => skeleton.0,
            Err(error) => return Err(format!("spangate read JSON serde_json does not: {error}")),
        },
    };
    let kept_spans = spans(&request);
    if kept_spans + rejected.count != in_request {
        return Err(format!(
            "{kept_spans} spans decoded and {} rejected, of {in_request} in the request",
            rejected.count
        ));
    }
    if encoding == Encoding::Protobuf
        && let Ok(whole) = ExportTraceServiceRequest::decode(body)
    {
        if spans(&whole) != in_request {
            return Err(format!(
                "prost reads {} spans, not {in_request}",
                spans(&whole)
            ));
        }
        if let Some(first) = &rejected.first
            && !matches!(first, InvalidSpan::TooDeep { .. })
            && !first.to_string().contains("wire type")
        {
            return Err(format!(
                "prost reads every span, but one was rejected: {first}"
            ));
        }
    }

    let invalid = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|span| extract::check(span, limits.span_checks).is_err())
        .count() as u64;
    let encoded = request.encode_to_vec();
    let ingestor = Ingestor::with_limits(limits, None);
    let routes = routes();
    ingestor.set_routes(routes.clone());
    let before = ingestor.stats();
    let report = ingestor.accept(Decoded {
        request,
        rejected: rejected.clone(),
        cost,
    });
    let after = ingestor.stats();
    if report.spans != in_request || report.rejected != rejected.count + invalid {
        return Err(format!(
            "the report counts {} spans, {} rejected; the request holds {in_request}, \
             {} left out by decoding and {invalid} invalid",
            report.spans, report.rejected, rejected.count
        ));
    }
    let counted = (
        after.batches_received - before.batches_received,
        after.spans_accepted - before.spans_accepted,
        after.spans_rejected - before.spans_rejected,
        after.samples_extracted - before.samples_extracted,
        after.samples_routed - before.samples_routed,
    );
    let reported = (
        1,
        report.spans - report.rejected,
        report.rejected,
        report.samples,
        report.routed,
    );
    if counted != reported {
        return Err(format!(
            "counters moved by (batches, accepted, rejected, samples, routed) {counted:?}, \
             the report says {reported:?}"
        ));
    }
    let windowed: u64 = routes
        .iter()
        .map(|route| {
            let window = ingestor.window(&route.rollout, route.epoch);
            window.baseline.samples + window.candidate.samples
        })
        .sum();
    if windowed != report.routed {
        return Err(format!(
            "{windowed} samples in the windows, {} routed",
            report.routed
        ));
    }
    let response = report.response();
    match (&response.partial_success, report.rejected) {
        (None, 0) => {}
        (Some(partial), rejected) if rejected > 0 => {
            if partial.rejected_spans != rejected as i64 {
                return Err(format!(
                    "the answer says {} spans were rejected, not {rejected}",
                    partial.rejected_spans
                ));
            }
            message("the partial success", &partial.error_message, body)?;
        }
        (partial, rejected) => {
            return Err(format!("{rejected} spans rejected, answered {partial:?}"));
        }
    }

    // The decoded request, as a sender would forward it, reads back the same.
    let generous = IngestLimits {
        max_decoded_bytes: usize::MAX / 4,
        ..limits
    };
    let budget = MemoryBudget::new(usize::MAX / 2);
    let mut reservation = budget.try_reserve(0).expect("nothing reserved yet");
    match decode(Encoding::Protobuf, &encoded, &generous, &mut reservation) {
        Ok(again) if again.rejected.count == 0 && again.request.encode_to_vec() == encoded => {
            Ok(())
        }
        Ok(again) => Err(format!(
            "the decoded request, encoded again, decodes differently (rejected: {:?})",
            again.rejected
        )),
        Err(refused) => Err(format!(
            "the decoded request, encoded again, is refused: {refused}"
        )),
    }
}

/// A request refused whole: for a reason, said briefly, never for a request that
/// the generated types read whole.
fn refusal(encoding: Encoding, body: &[u8], refused: &Refused) -> Outcome {
    message("the refusal", &refused.to_string(), body)?;
    if !matches!(refused, Refused::Malformed { .. }) {
        return Ok(());
    }
    // serde reads messages from JSON arrays too, which OTLP/JSON is not: only
    // protobuf is compared. A group (wire types 3 and 4, deprecated since proto2)
    // is refused on purpose: no OTLP sender writes one.
    let whole = encoding == Encoding::Protobuf && ExportTraceServiceRequest::decode(body).is_ok();
    if whole && !refused.to_string().contains("wire type") {
        return Err(format!(
            "refused as malformed, yet the generated types read it: {refused}"
        ));
    }
    Ok(())
}

/// A message about a request: there, bounded, and quoting no value.
pub(super) fn message(what: &str, text: &str, body: &[u8]) -> Outcome {
    if text.trim().is_empty() || text.len() > LONGEST_MESSAGE {
        return Err(format!("{what} is empty or {} bytes long", text.len()));
    }
    if text.contains(MARKER) {
        return Err(format!("{what} quotes a value of the request: {text}"));
    }
    if let Some(run) = harness::echoed(text, &String::from_utf8_lossy(body), LONGEST_ECHO) {
        return Err(format!("{what} repeats {run:?} of the request: {text}"));
    }
    Ok(())
}

fn spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

/// The spans of a protobuf request, counted from the fields of its skeleton:
/// resource spans (request field 1), scope spans (2), spans (2); log records sit
/// under the same numbers.
pub(super) fn protobuf_spans(body: &[u8]) -> Option<u64> {
    let mut count = 0;
    for resource_spans in mutate::message_fields(body, 1)? {
        for scope_spans in mutate::message_fields(&resource_spans, 2)? {
            count += mutate::message_fields(&scope_spans, 2)?.len() as u64;
        }
    }
    Some(count)
}

/// The spans (or, with `LOGS`, the log records) of an OTLP/JSON request, counted
/// as its members come (a repeated member each time) down resource spans (`LEVEL`
/// 0), scope spans (1) and spans (2); every other member is skipped, however deep.
pub(super) struct Skeleton<const LEVEL: u8, const LOGS: bool = false>(pub(super) u64);

impl<'de, const LEVEL: u8, const LOGS: bool> Deserialize<'de> for Skeleton<LEVEL, LOGS> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Members::<LEVEL, LOGS>)
    }
}

struct Members<const LEVEL: u8, const LOGS: bool>;

impl<'de, const LEVEL: u8, const LOGS: bool> serde::de::Visitor<'de> for Members<LEVEL, LOGS> {
    type Value = Skeleton<LEVEL, LOGS>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        type Items<T> = Option<Vec<Option<T>>>;
        let names = if LOGS {
            ["resourceLogs", "scopeLogs", "logRecords"]
        } else {
            ["resourceSpans", "scopeSpans", "spans"]
        };
        let mut count = 0;
        while let Some(name) = map.next_key::<String>()? {
            count += match (LEVEL, name.as_str()) {
                (0, name) if name == names[0] => map
                    .next_value::<Items<Skeleton<1, LOGS>>>()?
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|s| s.0)
                    .sum(),
                (1, name) if name == names[1] => map
                    .next_value::<Items<Skeleton<2, LOGS>>>()?
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|s| s.0)
                    .sum(),
                (2, name) if name == names[2] => map
                    .next_value::<Option<Vec<IgnoredAny>>>()?
                    .map_or(0, |spans| spans.len() as u64),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    0
                }
            };
        }
        Ok(Skeleton(count))
    }
}

/// The JSON seeds that decode, encoded again as protobuf.
pub fn json_seeds_as_protobuf() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/otlp_json");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the otlp_json corpus")
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|path| {
            let body = std::fs::read(path).expect("a corpus file");
            let budget = MemoryBudget::new(usize::MAX / 2);
            let mut reservation = budget.try_reserve(0)?;
            decode(
                Encoding::Json,
                &body,
                &IngestLimits::default(),
                &mut reservation,
            )
            .ok()
            .map(|decoded| decoded.request.encode_to_vec())
        })
        .collect()
}

pub fn generate_protobuf(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut body = if rng.one_in(3) {
        request(rng).encode_to_vec()
    } else {
        rng.pick(pool).clone()
    };
    for _ in 0..=rng.below(3) {
        if rng.one_in(4) {
            mutate::bytes(rng, &mut body, pool, &[]);
        } else {
            body = mutate::protobuf(rng, &body, pool);
        }
    }
    body
}

pub fn generate_json(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut document = if rng.one_in(3) {
        serde_json::to_value(request(rng)).expect("a request as JSON")
    } else {
        let seed = rng.pick(pool);
        match serde_json::from_slice::<Value>(seed) {
            Ok(document) => document,
            Err(_) => {
                let mut body = seed.clone();
                mutate::bytes(rng, &mut body, pool, OTLP_KEYS);
                return body;
            }
        }
    };
    for _ in 0..rng.below(4) {
        mutate::json(rng, &mut document, OTLP_KEYS);
    }
    let mut body = if rng.one_in(4) {
        serde_json::to_vec_pretty(&document)
    } else {
        serde_json::to_vec(&document)
    }
    .expect("JSON written");
    if rng.one_in(4) {
        mutate::bytes(rng, &mut body, pool, OTLP_KEYS);
    }
    body.truncate(mutate::MAX_INPUT);
    body
}

/// A request of a few resources, scopes and spans, mostly valid, often with
/// flag evaluations, sometimes at the edges; spans are left out until it takes
/// at most 16 KiB as protobuf (about twice that as JSON).
fn request(rng: &mut Rng) -> ExportTraceServiceRequest {
    let mut request = untrimmed(rng);
    while request.encoded_len() > 16 * 1024 {
        let Some(resource_spans) = request.resource_spans.last_mut() else {
            break;
        };
        match resource_spans.scope_spans.last_mut() {
            Some(scope_spans) if !scope_spans.spans.is_empty() => {
                scope_spans.spans.pop();
            }
            Some(_) => {
                resource_spans.scope_spans.pop();
            }
            None => {
                request.resource_spans.pop();
            }
        }
    }
    request
}

fn untrimmed(rng: &mut Rng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..=rng.below(3))
            .map(|_| ResourceSpans {
                resource: (!rng.one_in(5)).then(|| Resource {
                    attributes: resource_attributes(rng),
                    dropped_attributes_count: count(rng) as u32,
                    entity_refs: Vec::new(),
                }),
                scope_spans: (0..=rng.below(2))
                    .map(|_| ScopeSpans {
                        scope: rng.one_in(2).then(|| InstrumentationScope {
                            name: text(rng),
                            version: text(rng),
                            attributes: attributes(rng, 2),
                            dropped_attributes_count: count(rng) as u32,
                        }),
                        spans: (0..rng.length(12)).map(|_| span(rng)).collect(),
                        schema_url: text(rng),
                    })
                    .collect(),
                schema_url: text(rng),
            })
            .collect(),
    }
}

pub(super) fn resource_attributes(rng: &mut Rng) -> Vec<KeyValue> {
    let mut attributes = attributes(rng, 1);
    attributes.push(kv("service.name", string(rng.pick::<&str>(SERVICES))));
    if rng.one_in(2) {
        let name = rng.pick(&["vcs.ref.head.revision", "service.version"]);
        attributes.push(kv(
            name,
            string(rng.pick::<&str>(&["3f2c1a9", "1.2.3", ""])),
        ));
    }
    attributes
}

fn span(rng: &mut Rng) -> Span {
    let start = if rng.one_in(8) {
        mutate::extreme(rng)
    } else {
        1_700_000_000_000_000_000 + rng.below(1_000_000_000) as u64
    };
    let end = match rng.below(10) {
        0 => start.wrapping_sub(1),
        1 => mutate::extreme(rng),
        _ => start.saturating_add(rng.below(5_000_000_000) as u64),
    };
    let mut own = attributes(rng, 3);
    if !rng.one_in(4) {
        own.extend(evaluation(rng));
    }
    Span {
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        trace_state: text(rng),
        parent_span_id: if rng.one_in(2) {
            id(rng, 8)
        } else {
            Vec::new()
        },
        flags: count(rng) as u32,
        name: text(rng),
        kind: *rng.pick(&[0, 1, 2, 3, 4, 5, 6, -1, i32::MAX, i32::MIN]),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: own,
        dropped_attributes_count: count(rng) as u32,
        events: (0..rng.length(3))
            .map(|_| Event {
                time_unix_nano: start,
                name: rng
                    .pick(&["feature_flag.evaluation", "feature_flag", "exception"])
                    .to_string(),
                attributes: if rng.one_in(4) {
                    attributes_of(rng, 2)
                } else {
                    evaluation(rng)
                },
                dropped_attributes_count: count(rng) as u32,
            })
            .collect(),
        dropped_events_count: count(rng) as u32,
        links: (0..rng.length(2))
            .map(|_| Link {
                trace_id: id(rng, 16),
                span_id: id(rng, 8),
                trace_state: text(rng),
                attributes: attributes(rng, 2),
                dropped_attributes_count: count(rng) as u32,
                flags: count(rng) as u32,
            })
            .collect(),
        dropped_links_count: count(rng) as u32,
        status: rng.one_in(2).then(|| Status {
            message: text(rng),
            code: *rng.pick(&[0, 1, 2, 2, 3, -1]),
        }),
    }
}

/// A flag evaluation as span or event attributes, current or legacy names.
pub(super) fn evaluation(rng: &mut Rng) -> Vec<KeyValue> {
    let variant = if rng.one_in(3) {
        "feature_flag.variant"
    } else {
        "feature_flag.result.variant"
    };
    let mut attributes = vec![
        kv("feature_flag.key", string(rng.pick::<&str>(FLAGS))),
        kv(variant, string(rng.pick::<&str>(VARIANTS))),
    ];
    if rng.one_in(2) {
        attributes.push(kv("feature_flag.context.id", string(&text(rng))));
    }
    if rng.one_in(2) {
        attributes.push(kv(
            "accountId",
            string(rng.pick::<&str>(&["acct-1", "acct-2", ""])),
        ));
    }
    attributes
}

pub(super) fn attributes(rng: &mut Rng, depth: usize) -> Vec<KeyValue> {
    if rng.one_in(2) {
        Vec::new()
    } else {
        attributes_of(rng, depth)
    }
}

fn attributes_of(rng: &mut Rng, depth: usize) -> Vec<KeyValue> {
    (0..=rng.length(6))
        .map(|_| {
            let key = mutate::key(rng, &["email", "http.route", "feature_flag.key", "tags"]);
            let value = if rng.one_in(12) {
                // Around the depth limits: the default 16, the largest 24.
                let depth = *rng.pick(&[15, 16, 17, 23, 24, 25, 40]);
                nested(rng, depth)
            } else {
                any(rng, depth)
            };
            KeyValue {
                key,
                value: Some(value),
                ..Default::default()
            }
        })
        .collect()
}

pub(super) fn any(rng: &mut Rng, depth: usize) -> AnyValue {
    use any_value::Value as V;
    let value = match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => None,
        1 => Some(V::StringValue(text(rng))),
        2 => Some(V::BoolValue(rng.one_in(2))),
        3 => Some(V::IntValue(mutate::extreme(rng) as i64)),
        4 => Some(V::DoubleValue(*rng.pick(&[
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            1e308,
            5e-324,
            0.1,
        ]))),
        5 => Some(V::BytesValue(id(rng, 4))),
        6 => Some(V::ArrayValue(ArrayValue {
            values: (0..rng.length(4)).map(|_| any(rng, depth - 1)).collect(),
        })),
        _ => Some(V::KvlistValue(KeyValueList {
            values: attributes_of(rng, depth - 1),
        })),
    };
    AnyValue { value }
}

/// A value nested exactly `depth` levels: lists and arrays at random.
fn nested(rng: &mut Rng, depth: usize) -> AnyValue {
    let mut value = string(&format!("{MARKER}-deep"));
    for _ in 1..depth {
        value = if rng.one_in(2) {
            AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            }
        } else {
            AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", value)],
                })),
            }
        };
    }
    value
}

pub(super) fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

pub(super) fn string(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.to_string())),
    }
}

/// Text for names and values: empty, short, long, the marker, odd characters.
pub(super) fn text(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 | 1 => String::new(),
        2 if rng.one_in(4) => mutate::long_text(rng),
        2 | 3 => format!("{MARKER}-{}", rng.below(100)),
        4 => rng.pick(&["ü😀", "\u{0}", "a\nb", "\u{202e}"]).to_string(),
        _ => rng
            .pick(&["GET /cart", "checkout", "on", "1.0.0"])
            .to_string(),
    }
}

/// An ID: mostly `len` random bytes, sometimes zeroes or the wrong length.
pub(super) fn id(rng: &mut Rng, len: usize) -> Vec<u8> {
    match rng.below(12) {
        0 => vec![0; len],
        1 => (0..rng.length(40)).map(|_| rng.next_u64() as u8).collect(),
        _ => (0..len).map(|_| rng.next_u64() as u8 | 1).collect(),
    }
}

pub(super) fn count(rng: &mut Rng) -> u64 {
    if rng.one_in(6) {
        mutate::extreme(rng)
    } else {
        0
    }
}
