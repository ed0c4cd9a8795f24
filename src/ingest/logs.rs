//! Reads flag evaluations off OTLP log requests, borrowing from them.
//!
//! The semantic conventions record a flag evaluation as the event
//! `feature_flag.evaluation`: a log record whose `event_name` is that (or, from
//! SDKs older than the field, whose `event.name` attribute is), with the flag in
//! its attributes and the span it happened in in its trace and span IDs. Such an
//! evaluation says nothing about errors or latency itself: its trace does, so the
//! ingestor hands it on to be joined with the trace's spans
//! ([`Ingestor::resolve_traces`]).

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::Ingestor;
use super::decode::{Decoded, Rejected};
use super::events::{
    LogRecordsRejected, LogStats, LogsIngested, LogsRefused, RejectReason, Transport,
};
use super::extract::{
    EVENT_NAME, FLAG_CONTEXT_ID, FLAG_EVENT, FLAG_KEY, FLAG_REASON, FLAG_SET_ID, FLAG_VARIANT,
    InvalidSpan, LEGACY_FLAG_VARIANT, SERVICE_NAME, string_attribute,
};
use crate::telemetry::metrics::TraceExemplar;

/// One `feature_flag.evaluation` event, attributed to its trace.
#[derive(Debug, Clone, Copy)]
pub struct LogEvaluation<'a> {
    /// The resource's `service.name` ("" when it has none).
    pub service: &'a str,
    pub trace_id: [u8; 16],
    /// The span the flag was evaluated in, when the record names one.
    pub span_id: Option<[u8; 8]>,
    pub key: &'a str,
    pub variant: &'a str,
    pub context_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub set_id: Option<&'a str>,
    record_attributes: &'a [KeyValue],
    resource_attributes: &'a [KeyValue],
}

impl<'a> LogEvaluation<'a> {
    /// The string attribute `name` of the record, else of its resource: where a
    /// rollout's `bucketBy` value is read from.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        string_attribute(self.record_attributes, name)
            .or_else(|| string_attribute(self.resource_attributes, name))
    }
}

/// What one log record holds for spangate.
#[derive(Debug)]
enum Reading<'a> {
    /// Not a flag evaluation, or one without its key or variant.
    Other,
    Evaluation(LogEvaluation<'a>),
    /// A flag evaluation without a trace ID: no span can be attributed to it.
    Unattributed,
    Invalid(InvalidSpan),
}

/// Every `feature_flag.evaluation` event of `request` that names its flag, its
/// variant and its trace, in order. Invalid records, and evaluations without a
/// trace ID, are left out.
pub fn evaluations(request: &ExportLogsServiceRequest) -> impl Iterator<Item = LogEvaluation<'_>> {
    readings(request).filter_map(|reading| match reading {
        Reading::Evaluation(evaluation) => Some(evaluation),
        _ => None,
    })
}

/// What each record of `request` holds, in order.
fn readings(request: &ExportLogsServiceRequest) -> impl Iterator<Item = Reading<'_>> {
    request.resource_logs.iter().flat_map(|resource_logs| {
        let resource_attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        // A record without `service.name` matches no route, as no rollout names "".
        let service = string_attribute(resource_attributes, SERVICE_NAME).unwrap_or_default();
        resource_logs
            .scope_logs
            .iter()
            .flat_map(|scope_logs| &scope_logs.log_records)
            .map(move |record| read(record, service, resource_attributes))
    })
}

fn read<'a>(
    record: &'a LogRecord,
    service: &'a str,
    resource_attributes: &'a [KeyValue],
) -> Reading<'a> {
    let Ids { trace_id, span_id } = match ids(record) {
        Ok(ids) => ids,
        Err(invalid) => return Reading::Invalid(invalid),
    };
    let attributes = record.attributes.as_slice();
    let is_evaluation = record.event_name == FLAG_EVENT
        || (record.event_name.is_empty()
            && string_attribute(attributes, EVENT_NAME) == Some(FLAG_EVENT));
    let variant = string_attribute(attributes, FLAG_VARIANT)
        .or_else(|| string_attribute(attributes, LEGACY_FLAG_VARIANT));
    let (true, Some(key), Some(variant)) = (
        is_evaluation,
        string_attribute(attributes, FLAG_KEY),
        variant,
    ) else {
        return Reading::Other;
    };
    let Some(trace_id) = trace_id else {
        return Reading::Unattributed;
    };
    Reading::Evaluation(LogEvaluation {
        service,
        trace_id,
        span_id,
        key,
        variant,
        context_id: string_attribute(attributes, FLAG_CONTEXT_ID),
        reason: string_attribute(attributes, FLAG_REASON),
        set_id: string_attribute(attributes, FLAG_SET_ID),
        record_attributes: attributes,
        resource_attributes,
    })
}

/// A record's trace and span IDs, when it has them.
struct Ids {
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
}

/// A record's IDs. Both are optional in logs (empty is none), but one of the
/// wrong length or of all zeroes makes the record invalid.
fn ids(record: &LogRecord) -> Result<Ids, InvalidSpan> {
    let trace_id = match record.trace_id.as_slice() {
        [] => None,
        id => match <[u8; 16]>::try_from(id) {
            Ok(id) if id == [0; 16] => return Err(InvalidSpan::ZeroTraceId),
            Ok(id) => Some(id),
            Err(_) => return Err(InvalidSpan::TraceIdLength(id.len())),
        },
    };
    let span_id = match record.span_id.as_slice() {
        [] => None,
        id => match <[u8; 8]>::try_from(id) {
            Ok(id) if id == [0; 8] => return Err(InvalidSpan::ZeroSpanId),
            Ok(id) => Some(id),
            Err(_) => return Err(InvalidSpan::SpanIdLength(id.len())),
        },
    };
    Ok(Ids { trace_id, span_id })
}

/// What became of one logs request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsReport {
    /// Log records in the request.
    pub records: u64,
    /// Invalid records left out.
    pub rejected: u64,
    /// Why the first rejected record was invalid.
    pub first_rejection: Option<InvalidSpan>,
    /// Flag evaluations read, each with its trace.
    pub evaluations: u64,
    /// Flag evaluations without a trace ID, which no span can be attributed to.
    pub unattributed: u64,
    /// Samples the evaluations recorded: spans of their traces that had waited.
    pub resolved: u64,
    /// The trace of the request's first evaluation, as the exemplar of its duration.
    pub first_trace: Option<TraceExemplar>,
}

impl LogsReport {
    /// The OTLP answer: partial success when some records were rejected.
    pub fn response(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: self
                .first_rejection
                .as_ref()
                .map(|first| ExportLogsPartialSuccess {
                    rejected_log_records: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                    error_message: format!(
                        "rejected {} of {} log records; first: {first}",
                        self.rejected, self.records
                    ),
                }),
        }
    }
}

impl Ingestor {
    /// What a receiver calls with a logs request
    /// [`decode_logs`](super::decode_logs)d: reads its flag evaluations, hands them
    /// to the trace join, then forwards its valid records when spans are forwarded.
    pub fn accept_logs(&self, decoded: Decoded<ExportLogsServiceRequest>) -> LogsReport {
        let Decoded {
            mut request,
            rejected: Rejected { count, first },
            cost,
        } = decoded;
        let mut report = LogsReport {
            records: count,
            rejected: count,
            first_rejection: first,
            ..LogsReport::default()
        };
        let mut evaluations = Vec::new();
        for reading in readings(&request) {
            report.records += 1;
            match reading {
                Reading::Other => {}
                Reading::Evaluation(evaluation) => evaluations.push(evaluation),
                Reading::Unattributed => report.unattributed += 1,
                Reading::Invalid(invalid) => {
                    report.rejected += 1;
                    report.first_rejection.get_or_insert(invalid);
                }
            }
        }
        report.evaluations = evaluations.len() as u64;
        report.first_trace = evaluations
            .first()
            .and_then(|evaluation| TraceExemplar::new(evaluation.trace_id));
        report.resolved = self.resolve_traces(&evaluations);
        if let Some(first) = &report.first_rejection {
            LogRecordsRejected {
                count: report.rejected,
                first,
            }
            .emit(&self.counters);
        }
        LogsIngested {
            accepted: report.records - report.rejected,
            evaluations: report.evaluations,
            unattributed: report.unattributed,
        }
        .emit(&self.counters);
        if let Some(forwarder) = &self.forwarder {
            // Records the sender was told were rejected do not go on either.
            if report.rejected > count {
                retain_valid(&mut request);
            }
            forwarder.offer_logs(request, cost);
        }
        report
    }

    /// The logs counters since start.
    pub fn log_stats(&self) -> LogStats {
        self.counters.log_snapshot()
    }

    /// Records a logs request refused before it could be ingested.
    pub(super) fn reject_logs(&self, transport: Transport, reason: RejectReason, detail: &str) {
        LogsRefused {
            transport,
            reason,
            detail,
        }
        .emit(&self.counters);
    }
}

/// Leaves out the records whose IDs are invalid, and the groups left empty.
fn retain_valid(request: &mut ExportLogsServiceRequest) {
    for resource_logs in &mut request.resource_logs {
        for scope_logs in &mut resource_logs.scope_logs {
            scope_logs.log_records.retain(|record| ids(record).is_ok());
        }
        resource_logs
            .scope_logs
            .retain(|scope_logs| !scope_logs.log_records.is_empty());
    }
    request
        .resource_logs
        .retain(|resource_logs| !resource_logs.scope_logs.is_empty());
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;
    use crate::ingest::test_attributes::kv;

    fn evaluation(key: &str, variant: &str) -> LogRecord {
        LogRecord {
            event_name: FLAG_EVENT.to_string(),
            trace_id: vec![7; 16],
            span_id: vec![3; 8],
            attributes: vec![
                kv("feature_flag.key", key),
                kv("feature_flag.result.variant", variant),
                kv("feature_flag.context.id", "user-1"),
                kv("feature_flag.result.reason", "SPLIT"),
                kv("feature_flag.set.id", "shop"),
                kv("account", "acme"),
            ],
            ..Default::default()
        }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout"), kv("region", "eu")],
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

    fn decoded(request: ExportLogsServiceRequest) -> Decoded<ExportLogsServiceRequest> {
        Decoded {
            request,
            rejected: Rejected::default(),
            cost: 0,
        }
    }

    #[test]
    fn evaluation_events_are_read_with_their_trace() {
        let mut legacy = evaluation("old-cart", "");
        legacy.event_name.clear();
        legacy.span_id.clear();
        legacy.attributes = vec![
            kv("event.name", "feature_flag.evaluation"),
            kv("feature_flag.key", "old-cart"),
            kv("feature_flag.variant", "off"),
        ];
        let mut other_event = evaluation("new-cart", "on");
        other_event.event_name = "exception".to_string();
        let mut no_variant = evaluation("new-cart", "on");
        no_variant.attributes.remove(1);
        let request = request(vec![
            evaluation("new-cart", "on"),
            legacy,
            other_event,
            no_variant,
        ]);
        let read: Vec<_> = evaluations(&request).collect();
        assert_eq!(read.len(), 2, "{read:?}");
        let first = read[0];
        assert_eq!(
            (first.service, first.key, first.variant),
            ("checkout", "new-cart", "on")
        );
        assert_eq!((first.trace_id, first.span_id), ([7; 16], Some([3; 8])));
        assert_eq!(
            (first.context_id, first.reason, first.set_id),
            (Some("user-1"), Some("SPLIT"), Some("shop"))
        );
        assert_eq!(first.attribute("account"), Some("acme"));
        assert_eq!(first.attribute("region"), Some("eu"), "from the resource");
        assert_eq!(first.attribute("missing"), None);
        assert_eq!(
            (read[1].key, read[1].variant, read[1].span_id),
            ("old-cart", "off", None)
        );
    }

    #[test]
    fn invalid_ids_reject_their_record_and_missing_trace_ids_are_counted() {
        let mut no_trace = evaluation("new-cart", "on");
        no_trace.trace_id.clear();
        no_trace.span_id.clear();
        let mut short_trace = evaluation("new-cart", "on");
        short_trace.trace_id = vec![1, 2, 3];
        let mut zero_span = evaluation("new-cart", "on");
        zero_span.span_id = vec![0; 8];
        let plain_log = LogRecord::default();
        let ingestor = Ingestor::new();
        let report = ingestor.accept_logs(decoded(request(vec![
            evaluation("new-cart", "on"),
            no_trace,
            short_trace,
            zero_span,
            plain_log,
        ])));
        assert_eq!(
            (
                report.records,
                report.rejected,
                report.evaluations,
                report.unattributed,
                report.resolved
            ),
            (5, 2, 1, 1, 0),
            "no rollout routes new-cart: no span is judged"
        );
        assert_eq!(report.first_trace, TraceExemplar::new([7; 16]));
        let partial = report.response().partial_success.unwrap();
        assert_eq!(partial.rejected_log_records, 2);
        assert_eq!(
            partial.error_message,
            "rejected 2 of 5 log records; first: trace_id has 3 bytes, OTLP requires 16"
        );
        assert_eq!(
            ingestor.log_stats(),
            LogStats {
                requests_ingested: 1,
                requests_refused: 0,
                records_accepted: 3,
                records_rejected: 2,
                evaluations_read: 1,
                evaluations_unattributed: 1,
            }
        );
    }

    #[test]
    fn records_rejected_while_decoding_count_in_the_answer() {
        let ingestor = Ingestor::new();
        let mut decoded = decoded(request(vec![evaluation("new-cart", "on")]));
        decoded.rejected.add(
            2,
            InvalidSpan::TooDeep {
                part: super::super::extract::Part::LogRecord,
                max: 16,
            },
        );
        let report = ingestor.accept_logs(decoded);
        assert_eq!((report.records, report.rejected), (3, 2));
        assert_eq!(
            report.response().partial_success.unwrap().error_message,
            "rejected 2 of 3 log records; first: log record attribute values nest deeper than 16 levels"
        );
        assert_eq!(ingestor.log_stats().records_accepted, 1);
    }
}
