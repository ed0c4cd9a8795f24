//! Reads span samples off a decoded OTLP trace request, borrowing from it.
//!
//! Attribute names follow the OpenTelemetry semantic conventions, current and legacy:
//! the flag comes from the span's `feature_flag.key` and `feature_flag.result.variant`
//! (legacy `feature_flag.variant`) attributes, or from `feature_flag.evaluation`
//! (legacy `feature_flag`) span events carrying them.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::analysis::{JoinSpan, SpanSample, name_hash, sampling};

pub(super) const SERVICE_NAME: &str = "service.name";
const VCS_REVISION: &str = "vcs.ref.head.revision";
const SERVICE_VERSION: &str = "service.version";
pub(super) const FLAG_KEY: &str = "feature_flag.key";
pub(super) const FLAG_VARIANT: &str = "feature_flag.result.variant";
pub(super) const LEGACY_FLAG_VARIANT: &str = "feature_flag.variant";
pub(super) const FLAG_CONTEXT_ID: &str = "feature_flag.context.id";
pub(super) const FLAG_REASON: &str = "feature_flag.result.reason";
pub(super) const FLAG_EVENT: &str = "feature_flag.evaluation";
pub(super) const FLAG_SET_ID: &str = "feature_flag.set.id";
/// Where SDKs older than OTLP's `event_name` field name a log record's event.
pub(super) const EVENT_NAME: &str = "event.name";
const LEGACY_FLAG_EVENT: &str = "feature_flag";

/// Why a span is left out. Under OTLP its IDs are required, and an ID of the
/// wrong length or of all zeroes is invalid; a span that ends before it starts,
/// or lasts longer than any spangate judges, cannot be measured; and a span (or
/// its resource or scope) that cannot be decoded, or nests deeper than decoding
/// allows, is refused alone rather than with its whole request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpan {
    #[error("trace_id has {0} bytes, OTLP requires 16")]
    TraceIdLength(usize),
    #[error("trace_id is all zeroes")]
    ZeroTraceId,
    #[error("span_id has {0} bytes, OTLP requires 8")]
    SpanIdLength(usize),
    #[error("span_id is all zeroes")]
    ZeroSpanId,
    #[error("end_time_unix_nano is before start_time_unix_nano")]
    EndBeforeStart,
    #[error("the span lasts longer than {max_seconds} s, the longest spangate accepts")]
    TooLong { max_seconds: u64 },
    #[error("{part} attribute values nest deeper than {max} levels")]
    TooDeep { part: Part, max: usize },
    #[error("{part} could not be decoded: {detail}")]
    Undecodable { part: Part, detail: String },
}

/// The part of a request a span was left out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Span,
    LogRecord,
    Resource,
    Scope,
}

impl Part {
    pub(super) fn undecodable(self, detail: String) -> InvalidSpan {
        InvalidSpan::Undecodable { part: self, detail }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Span => "span",
            Part::LogRecord => "log record",
            Part::Resource => "resource",
            Part::Scope => "instrumentation scope",
        })
    }
}

/// What makes a decoded span valid beyond its IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanChecks {
    /// Longest duration accepted; a longer span is invalid.
    pub max_duration: Duration,
}

impl Default for SpanChecks {
    /// A day: longer than any request spangate judges.
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// What the resource of a group of spans says about all of them.
#[derive(Debug, Clone, Copy)]
struct ResourceInfo<'a> {
    service: &'a str,
    revision: Option<&'a str>,
    attributes: &'a [KeyValue],
}

impl<'a> ResourceInfo<'a> {
    fn of(resource: Option<&'a Resource>) -> Self {
        let attributes = resource.map_or(&[][..], |r| r.attributes.as_slice());
        Self {
            // A span without `service.name` matches no route, as no rollout names "".
            service: string_attribute(attributes, SERVICE_NAME).unwrap_or_default(),
            revision: string_attribute(attributes, VCS_REVISION)
                .or_else(|| string_attribute(attributes, SERVICE_VERSION)),
            attributes,
        }
    }
}

/// A valid span, ready to give its samples.
#[derive(Debug, Clone, Copy)]
pub struct ValidSpan<'a> {
    resource: ResourceInfo<'a>,
    span: &'a Span,
    trace_id: [u8; 16],
    duration_ns: u64,
}

impl<'a> ValidSpan<'a> {
    /// One sample per flag the span evaluated; none when it evaluated none. When a
    /// span names the same flag twice, the first evaluation (attributes before
    /// events) counts.
    pub fn samples(&self) -> impl Iterator<Item = SpanSample<'a>> + use<'a> {
        let span = self.span;
        let resource = self.resource;
        let trace_id = self.trace_id;
        // Checked to be eight bytes when the span was found valid.
        let span_id: [u8; 8] = span.span_id.as_slice().try_into().unwrap_or_default();
        let is_error = span
            .status
            .as_ref()
            .is_some_and(|status| status.code == StatusCode::Error as i32);
        let duration_ns = self.duration_ns;
        let weight = self.weight();
        evaluations(span)
            .enumerate()
            .filter(move |&(i, ref evaluation)| {
                !evaluations(span)
                    .take(i)
                    .any(|seen| seen.key == evaluation.key)
            })
            .map(move |(_, evaluation)| SpanSample {
                service: resource.service,
                revision: resource.revision,
                flag_key: evaluation.key,
                variant: evaluation.variant,
                is_error,
                duration_ns,
                trace_id,
                span_id,
                context_id: evaluation.context_id,
                reason: evaluation.reason,
                weight,
            })
    }

    /// How many spans this one stands for: the adjusted count its `tracestate`
    /// records, else 1.
    fn weight(&self) -> u32 {
        if self.span.trace_state.is_empty() {
            return 1;
        }
        sampling::weight(&self.span.trace_state, &self.trace_id)
    }

    /// `service.name` of its resource ("" without one).
    pub fn service(&self) -> &'a str {
        self.resource.service
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// What the trace join keeps of this span, `service` being the [`name_hash`]
    /// of its service.
    pub fn join_span(&self, service: u64) -> JoinSpan {
        let span = self.span;
        let kind = span.kind;
        let root = span.parent_span_id.iter().all(|&b| b == 0);
        JoinSpan {
            service,
            revision: self.resource.revision.map(name_hash),
            entry: root || kind == SpanKind::Server as i32 || kind == SpanKind::Consumer as i32,
            is_error: span
                .status
                .as_ref()
                .is_some_and(|status| status.code == StatusCode::Error as i32),
            duration_ns: self.duration_ns,
            // Checked to be eight bytes when the span was found valid.
            span_id: span.span_id.as_slice().try_into().unwrap_or_default(),
            weight: self.weight(),
        }
    }

    /// The string attribute `name` of the span, else of its resource: where a
    /// rollout's `bucketBy` value (an account ID, say) is read from.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        string_attribute(&self.span.attributes, name)
            .or_else(|| string_attribute(self.resource.attributes, name))
    }
}

/// Every span of `request`, in order: valid ones ready to give samples, invalid ones
/// with the reason.
pub fn spans(
    request: &ExportTraceServiceRequest,
    checks: SpanChecks,
) -> impl Iterator<Item = Result<ValidSpan<'_>, InvalidSpan>> {
    request
        .resource_spans
        .iter()
        .flat_map(move |resource_spans| {
            let resource = ResourceInfo::of(resource_spans.resource.as_ref());
            resource_spans
                .scope_spans
                .iter()
                .flat_map(|scope_spans| scope_spans.spans.iter())
                .map(move |span| validate(resource, span, checks))
        })
}

fn validate<'a>(
    resource: ResourceInfo<'a>,
    span: &'a Span,
    checks: SpanChecks,
) -> Result<ValidSpan<'a>, InvalidSpan> {
    Ok(ValidSpan {
        resource,
        span,
        trace_id: valid_ids(span)?,
        duration_ns: valid_duration(span, checks)?,
    })
}

/// Whether `span` is valid, as [`spans`] judges it.
pub fn check(span: &Span, checks: SpanChecks) -> Result<(), InvalidSpan> {
    valid_ids(span)?;
    valid_duration(span, checks)?;
    Ok(())
}

/// The span's duration, when it can be measured.
fn valid_duration(span: &Span, checks: SpanChecks) -> Result<u64, InvalidSpan> {
    let duration_ns = span
        .end_time_unix_nano
        .checked_sub(span.start_time_unix_nano)
        .ok_or(InvalidSpan::EndBeforeStart)?;
    if u128::from(duration_ns) > checks.max_duration.as_nanos() {
        return Err(InvalidSpan::TooLong {
            max_seconds: checks.max_duration.as_secs(),
        });
    }
    Ok(duration_ns)
}

/// The span's trace ID, when its IDs are valid under OTLP.
fn valid_ids(span: &Span) -> Result<[u8; 16], InvalidSpan> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| InvalidSpan::TraceIdLength(span.trace_id.len()))?;
    if trace_id == [0; 16] {
        return Err(InvalidSpan::ZeroTraceId);
    }
    match span.span_id.len() {
        8 if span.span_id.iter().all(|&b| b == 0) => return Err(InvalidSpan::ZeroSpanId),
        8 => {}
        len => return Err(InvalidSpan::SpanIdLength(len)),
    }
    Ok(trace_id)
}

/// One flag evaluation a span records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Evaluation<'a> {
    key: &'a str,
    variant: &'a str,
    context_id: Option<&'a str>,
    reason: Option<&'a str>,
}

/// Every evaluation the span records, duplicates included.
fn evaluations(span: &Span) -> impl Iterator<Item = Evaluation<'_>> {
    let events = span
        .events
        .iter()
        .filter(|event| event.name == FLAG_EVENT || event.name == LEGACY_FLAG_EVENT)
        .filter_map(|event| evaluation(&event.attributes));
    evaluation(&span.attributes).into_iter().chain(events)
}

fn evaluation(attributes: &[KeyValue]) -> Option<Evaluation<'_>> {
    let key = string_attribute(attributes, FLAG_KEY)?;
    let variant = string_attribute(attributes, FLAG_VARIANT)
        .or_else(|| string_attribute(attributes, LEGACY_FLAG_VARIANT))?;
    Some(Evaluation {
        key,
        variant,
        context_id: string_attribute(attributes, FLAG_CONTEXT_ID),
        reason: string_attribute(attributes, FLAG_REASON),
    })
}

/// The value of attribute `key` when it is a string.
pub(super) fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;
    use crate::ingest::test_attributes::kv;

    fn span(attributes: Vec<KeyValue>, events: Vec<Event>) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![3; 8],
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            attributes,
            events,
            ..Default::default()
        }
    }

    fn event(name: &str, attributes: Vec<KeyValue>) -> Event {
        Event {
            name: name.to_string(),
            attributes,
            ..Default::default()
        }
    }

    fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
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

    fn samples(request: &ExportTraceServiceRequest) -> Vec<SpanSample<'_>> {
        spans(request, SpanChecks::default())
            .flat_map(|span| span.unwrap().samples().collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn reads_resource_flag_status_and_duration() {
        let mut failing = span(
            vec![kv(FLAG_KEY, "new-cart"), kv(FLAG_VARIANT, "on")],
            vec![],
        );
        failing.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "boom".to_string(),
        });
        let request = request(
            vec![
                kv(SERVICE_NAME, "checkout"),
                kv(VCS_REVISION, "3f2c1a9"),
                kv(SERVICE_VERSION, "1.2.0"),
            ],
            vec![failing],
        );
        assert_eq!(
            samples(&request),
            [SpanSample {
                service: "checkout",
                revision: Some("3f2c1a9"),
                flag_key: "new-cart",
                variant: "on",
                is_error: true,
                duration_ns: 4_000,
                trace_id: [7; 16],
                span_id: [3; 8],
                context_id: None,
                reason: None,
                weight: 1,
            }]
        );
    }

    #[test]
    fn reads_the_unit_and_reason_of_an_evaluation() {
        let request = request(
            vec![kv(SERVICE_NAME, "checkout"), kv("region", "eu")],
            vec![span(
                vec![kv("accountId", "acme")],
                vec![event(
                    FLAG_EVENT,
                    vec![
                        kv(FLAG_KEY, "a"),
                        kv(FLAG_VARIANT, "on"),
                        kv(FLAG_CONTEXT_ID, "user-7"),
                        kv(FLAG_REASON, "split"),
                    ],
                )],
            )],
        );
        let sample = samples(&request)[0];
        assert_eq!(sample.context_id, Some("user-7"));
        assert!(sample.split());
        let span = spans(&request, SpanChecks::default())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(span.attribute("accountId"), Some("acme"));
        assert_eq!(span.attribute("region"), Some("eu"));
        assert_eq!(span.attribute("plan"), None);
    }

    #[test]
    fn revision_falls_back_to_service_version() {
        let request = request(
            vec![kv(SERVICE_NAME, "checkout"), kv(SERVICE_VERSION, "1.2.0")],
            vec![span(
                vec![kv(FLAG_KEY, "f"), kv(FLAG_VARIANT, "on")],
                vec![],
            )],
        );
        assert_eq!(samples(&request)[0].revision, Some("1.2.0"));
    }

    #[test]
    fn reads_events_and_legacy_names() {
        let request = request(
            vec![kv(SERVICE_NAME, "checkout")],
            vec![
                span(
                    vec![kv(FLAG_KEY, "a"), kv(LEGACY_FLAG_VARIANT, "legacy")],
                    vec![],
                ),
                span(
                    vec![],
                    vec![event(
                        FLAG_EVENT,
                        vec![kv(FLAG_KEY, "b"), kv(FLAG_VARIANT, "on")],
                    )],
                ),
                span(
                    vec![],
                    vec![event(
                        LEGACY_FLAG_EVENT,
                        vec![kv(FLAG_KEY, "c"), kv(LEGACY_FLAG_VARIANT, "off")],
                    )],
                ),
            ],
        );
        let got: Vec<_> = samples(&request)
            .iter()
            .map(|s| (s.flag_key, s.variant))
            .collect();
        assert_eq!(got, [("a", "legacy"), ("b", "on"), ("c", "off")]);
    }

    #[test]
    fn one_sample_per_flag_the_first_evaluation_wins() {
        let request = request(
            vec![kv(SERVICE_NAME, "checkout")],
            vec![span(
                vec![kv(FLAG_KEY, "a"), kv(FLAG_VARIANT, "on")],
                vec![
                    event(FLAG_EVENT, vec![kv(FLAG_KEY, "a"), kv(FLAG_VARIANT, "off")]),
                    event("exception", vec![kv(FLAG_KEY, "x"), kv(FLAG_VARIANT, "on")]),
                    event(FLAG_EVENT, vec![kv(FLAG_KEY, "b"), kv(FLAG_VARIANT, "off")]),
                ],
            )],
        );
        let got: Vec<_> = samples(&request)
            .iter()
            .map(|s| (s.flag_key, s.variant))
            .collect();
        assert_eq!(got, [("a", "on"), ("b", "off")]);
    }

    #[test]
    fn a_sampled_span_weighs_its_adjusted_count() {
        let flagged = || span(vec![kv(FLAG_KEY, "a"), kv(FLAG_VARIANT, "on")], vec![]);
        let quarter = Span {
            trace_state: "vendor=1,ot=rv:abcdef01234567;th:c".to_string(),
            ..flagged()
        };
        let malformed = Span {
            trace_state: "ot=th:zz".to_string(),
            ..flagged()
        };
        let request = request(
            vec![kv(SERVICE_NAME, "checkout")],
            vec![quarter, malformed, flagged()],
        );
        let weights: Vec<u32> = samples(&request).iter().map(|s| s.weight).collect();
        assert_eq!(weights, [4, 1, 1]);
        let joined: Vec<u32> = spans(&request, SpanChecks::default())
            .map(|span| span.unwrap().join_span(0).weight)
            .collect();
        assert_eq!(joined, [4, 1, 1]);
    }

    #[test]
    fn spans_without_a_flag_give_no_sample() {
        let request = request(
            vec![kv(SERVICE_NAME, "checkout")],
            vec![
                span(vec![], vec![]),
                span(vec![kv(FLAG_KEY, "a")], vec![]),
                span(vec![kv(FLAG_VARIANT, "on")], vec![]),
            ],
        );
        assert!(samples(&request).is_empty());
        assert_eq!(spans(&request, SpanChecks::default()).count(), 3);
    }

    #[test]
    fn spans_that_cannot_be_measured_are_invalid() {
        let flagged = || span(vec![kv(FLAG_KEY, "a"), kv(FLAG_VARIANT, "on")], vec![]);
        let mut backwards = flagged();
        backwards.end_time_unix_nano = 10;
        let mut endless = flagged();
        endless.end_time_unix_nano = u64::MAX;
        let mut a_day = flagged();
        a_day.end_time_unix_nano = a_day.start_time_unix_nano + 86_400_000_000_000;
        let mut instant = flagged();
        instant.end_time_unix_nano = instant.start_time_unix_nano;
        let request = request(vec![], vec![backwards, endless, a_day.clone(), instant]);
        let checks = SpanChecks::default();
        let got: Vec<_> = spans(&request, checks).map(|s| s.err()).collect();
        assert_eq!(
            got,
            [
                Some(InvalidSpan::EndBeforeStart),
                Some(InvalidSpan::TooLong {
                    max_seconds: 86_400
                }),
                None,
                None,
            ]
        );
        assert_eq!(check(&a_day, checks), Ok(()));
        let hour = SpanChecks {
            max_duration: Duration::from_secs(3_600),
        };
        assert!(check(&a_day, hour).is_err());
        assert_eq!(
            InvalidSpan::TooLong {
                max_seconds: 86_400
            }
            .to_string(),
            "the span lasts longer than 86400 s, the longest spangate accepts"
        );
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_reason() {
        let flagged = || span(vec![kv(FLAG_KEY, "a"), kv(FLAG_VARIANT, "on")], vec![]);
        let mut short_trace = flagged();
        short_trace.trace_id = vec![1; 15];
        let mut zero_trace = flagged();
        zero_trace.trace_id = vec![0; 16];
        let mut no_span_id = flagged();
        no_span_id.span_id = vec![];
        let mut zero_span_id = flagged();
        zero_span_id.span_id = vec![0; 8];
        let request = request(
            vec![],
            vec![short_trace, zero_trace, no_span_id, zero_span_id, flagged()],
        );
        let got: Vec<_> = spans(&request, SpanChecks::default())
            .map(|s| s.err())
            .collect();
        assert_eq!(
            got,
            [
                Some(InvalidSpan::TraceIdLength(15)),
                Some(InvalidSpan::ZeroTraceId),
                Some(InvalidSpan::SpanIdLength(0)),
                Some(InvalidSpan::ZeroSpanId),
                None,
            ]
        );
    }
}
