//! What the receivers do differently for each OTLP signal they take, traces and
//! logs: how a body is decoded, what the ingestor does with it, and the answer.
//! Everything else (authentication, limits, gzip, refusals) is shared.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::{Value, json};

use super::decode::{self, Decoded, Encoding, Refused};
use super::logs::LogsReport;
use super::{IngestLimits, IngestReport, Ingestor, RejectReason, Transport};
use crate::net::Reservation;
use crate::telemetry::metrics::TraceExemplar;

/// One OTLP Export service.
pub(super) trait Signal: Send + Sync + 'static {
    type Request: Send;
    type Report: Send;

    fn decode(
        encoding: Encoding,
        body: &[u8],
        limits: &IngestLimits,
        reservation: &mut Reservation,
    ) -> Result<Decoded<Self::Request>, Refused>;

    fn accept(ingestor: &Ingestor, decoded: Decoded<Self::Request>) -> Self::Report;

    /// Counts a request refused whole.
    fn refused(ingestor: &Ingestor, transport: Transport, reason: RejectReason, detail: &str);

    /// The trace the request's duration is an exemplar of.
    fn first_trace(report: &Self::Report) -> Option<TraceExemplar>;

    /// The Export response, as protobuf.
    fn protobuf(report: &Self::Report) -> Vec<u8>;

    /// The Export response, as the protobuf JSON mapping writes it: an absent
    /// message is left out rather than written as null, and int64 is a string.
    fn json(report: &Self::Report) -> Value;
}

/// `TraceService/Export` and `POST /v1/traces`.
pub(super) struct Traces;

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Report = IngestReport;

    fn decode(
        encoding: Encoding,
        body: &[u8],
        limits: &IngestLimits,
        reservation: &mut Reservation,
    ) -> Result<Decoded<Self::Request>, Refused> {
        decode::decode(encoding, body, limits, reservation)
    }

    fn accept(ingestor: &Ingestor, decoded: Decoded<Self::Request>) -> Self::Report {
        ingestor.accept(decoded)
    }

    fn refused(ingestor: &Ingestor, transport: Transport, reason: RejectReason, detail: &str) {
        ingestor.reject_batch(transport, reason, detail);
    }

    fn first_trace(report: &Self::Report) -> Option<TraceExemplar> {
        report.first_trace
    }

    fn protobuf(report: &Self::Report) -> Vec<u8> {
        report.response().encode_to_vec()
    }

    fn json(report: &Self::Report) -> Value {
        match report.response().partial_success {
            None => json!({}),
            Some(partial) => json!({
                "partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }
            }),
        }
    }
}

/// `LogsService/Export` and `POST /v1/logs`.
pub(super) struct Logs;

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Report = LogsReport;

    fn decode(
        encoding: Encoding,
        body: &[u8],
        limits: &IngestLimits,
        reservation: &mut Reservation,
    ) -> Result<Decoded<Self::Request>, Refused> {
        decode::decode_logs(encoding, body, limits, reservation)
    }

    fn accept(ingestor: &Ingestor, decoded: Decoded<Self::Request>) -> Self::Report {
        ingestor.accept_logs(decoded)
    }

    fn refused(ingestor: &Ingestor, transport: Transport, reason: RejectReason, detail: &str) {
        ingestor.reject_logs(transport, reason, detail);
    }

    fn first_trace(report: &Self::Report) -> Option<TraceExemplar> {
        report.first_trace
    }

    fn protobuf(report: &Self::Report) -> Vec<u8> {
        report.response().encode_to_vec()
    }

    fn json(report: &Self::Report) -> Value {
        match report.response().partial_success {
            None => json!({}),
            Some(partial) => json!({
                "partialSuccess": {
                    "rejectedLogRecords": partial.rejected_log_records.to_string(),
                    "errorMessage": partial.error_message,
                }
            }),
        }
    }
}
