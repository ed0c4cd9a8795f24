//! Everything noteworthy that happens to a batch, one type per kind of event. Each
//! event bumps its counters and writes its log line in one place, so the names in
//! logs and the numbers in metrics cannot drift apart. Warnings are written at most
//! once per [`WarnThrottle::INTERVAL`] per kind; the counters count every event.

use std::fmt;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::extract::InvalidSpan;
use super::forward::ForwardStats;
use crate::telemetry::WarnThrottle;
use crate::telemetry::metrics::{
    DurationFamily, DurationHistogram, Registry, TraceExemplar, Unit, duration_histogram,
};

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The ingest families of `/metrics`, and handles to their series so that an event
/// bumps an atomic without looking its labels up.
#[derive(Debug)]
pub(super) struct Counters {
    requests: Family<Labels<1>, Counter>,
    requests_ingested: Counter,
    requests_refused: Counter,
    spans: Family<Labels<1>, Counter>,
    spans_accepted: Counter,
    spans_rejected: Counter,
    samples_read: Counter,
    samples_recorded: Counter,
    samples_stale: Counter,
    log_requests: Family<Labels<1>, Counter>,
    log_requests_ingested: Counter,
    log_requests_refused: Counter,
    log_records: Family<Labels<1>, Counter>,
    log_records_accepted: Counter,
    log_records_rejected: Counter,
    log_evaluations_read: Counter,
    log_evaluations_unattributed: Counter,
    refused_family: Family<Labels<2>, Counter>,
    /// Requests refused whole, by transport and reason.
    refused: [[Counter; RejectReason::ALL.len()]; 2],
    durations: DurationFamily<Labels<1>>,
    /// Request durations by transport.
    duration: [DurationHistogram; 2],
    refused_warnings: [WarnThrottle; RejectReason::ALL.len()],
    spans_rejected_warning: WarnThrottle,
    log_records_rejected_warning: WarnThrottle,
}

impl Default for Counters {
    fn default() -> Self {
        let requests = Family::<Labels<1>, Counter>::default();
        let spans = Family::<Labels<1>, Counter>::default();
        let log_requests = Family::<Labels<1>, Counter>::default();
        let log_records = Family::<Labels<1>, Counter>::default();
        let refused_family = Family::<Labels<2>, Counter>::default();
        let durations: DurationFamily<Labels<1>> =
            Family::new_with_constructor(|| duration_histogram(0.0001, 10.0));
        let series = |family: &Family<Labels<1>, Counter>, label, value| {
            family.get_or_create(&[(label, value)]).clone()
        };
        let refused = Transport::ALL.map(|transport| {
            RejectReason::ALL.map(|reason| {
                refused_family
                    .get_or_create(&[
                        ("transport", transport.as_str()),
                        ("reason", reason.as_str()),
                    ])
                    .clone()
            })
        });
        let duration = Transport::ALL.map(|transport| {
            durations
                .get_or_create(&[("transport", transport.as_str())])
                .clone()
        });
        Self {
            requests_ingested: series(&requests, "outcome", "ingested"),
            requests_refused: series(&requests, "outcome", "refused"),
            spans_accepted: series(&spans, "outcome", "accepted"),
            spans_rejected: series(&spans, "outcome", "rejected"),
            requests,
            spans,
            log_requests_ingested: series(&log_requests, "outcome", "ingested"),
            log_requests_refused: series(&log_requests, "outcome", "refused"),
            log_records_accepted: series(&log_records, "outcome", "accepted"),
            log_records_rejected: series(&log_records, "outcome", "rejected"),
            log_requests,
            log_records,
            log_evaluations_read: Counter::default(),
            log_evaluations_unattributed: Counter::default(),
            samples_read: Counter::default(),
            samples_recorded: Counter::default(),
            samples_stale: Counter::default(),
            refused_family,
            refused,
            durations,
            duration,
            refused_warnings: Default::default(),
            spans_rejected_warning: WarnThrottle::default(),
            log_records_rejected_warning: WarnThrottle::default(),
        }
    }
}

impl Counters {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "otlp_requests",
            "OTLP trace requests by outcome: ingested, or refused whole (see spangate_otlp_requests_refused_total)",
            self.requests.clone(),
        );
        registry.register(
            "otlp_requests_refused",
            "OTLP requests refused whole, by transport and reason",
            self.refused_family.clone(),
        );
        registry.register_with_unit(
            "otlp_request_duration",
            "Time from an OTLP request's headers to its answer, by transport; exemplars carry the trace ID of the request's first span",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register(
            "otlp_spans",
            "Spans of ingested requests: accepted, or rejected as invalid (reported to the sender as partial success)",
            self.spans.clone(),
        );
        registry.register(
            "otlp_samples_read",
            "Flag evaluations read off valid spans",
            self.samples_read.clone(),
        );
        registry.register(
            "otlp_samples_recorded",
            "Flag evaluations recorded into a rollout's window (one may count for several rollouts)",
            self.samples_recorded.clone(),
        );
        registry.register(
            "otlp_samples_stale",
            "Flag evaluations dropped because their rollout changed step while the request was read",
            self.samples_stale.clone(),
        );
        registry.register(
            "otlp_log_requests",
            "OTLP log requests by outcome: ingested, or refused whole (see spangate_otlp_requests_refused_total)",
            self.log_requests.clone(),
        );
        registry.register(
            "otlp_log_records",
            "Log records of ingested requests: accepted, or rejected as invalid (reported to the sender as partial success)",
            self.log_records.clone(),
        );
        registry.register(
            "otlp_log_evaluations_read",
            "feature_flag.evaluation events read off log records, with their trace ID",
            self.log_evaluations_read.clone(),
        );
        registry.register(
            "otlp_log_evaluations_unattributed",
            "feature_flag.evaluation events left unread because their log record has no trace ID",
            self.log_evaluations_unattributed.clone(),
        );
    }

    pub(super) fn log_snapshot(&self) -> LogStats {
        LogStats {
            requests_ingested: self.log_requests_ingested.get(),
            requests_refused: self.log_requests_refused.get(),
            records_accepted: self.log_records_accepted.get(),
            records_rejected: self.log_records_rejected.get(),
            evaluations_read: self.log_evaluations_read.get(),
            evaluations_unattributed: self.log_evaluations_unattributed.get(),
        }
    }

    pub(super) fn snapshot(&self) -> IngestStats {
        IngestStats {
            batches_received: self.requests_ingested.get(),
            batches_rejected: self.requests_refused.get(),
            spans_accepted: self.spans_accepted.get(),
            spans_rejected: self.spans_rejected.get(),
            samples_extracted: self.samples_read.get(),
            samples_routed: self.samples_recorded.get(),
            samples_stale: self.samples_stale.get(),
            refused: self
                .refused
                .each_ref()
                .map(|row| row.each_ref().map(Counter::get)),
            in_flight_bytes: 0,
            in_flight_limit_bytes: 0,
            forwarded: ForwardStats::default(),
        }
    }

    /// Warning lines held back, by the event they were about.
    pub(super) fn suppressed_warnings(&self) -> Vec<(String, u64)> {
        RejectReason::ALL
            .iter()
            .zip(&self.refused_warnings)
            .map(|(reason, throttle)| {
                (
                    format!("otlp_request_refused_{reason}"),
                    throttle.suppressed(),
                )
            })
            .chain([
                (
                    "otlp_spans_rejected".to_string(),
                    self.spans_rejected_warning.suppressed(),
                ),
                (
                    "otlp_log_records_rejected".to_string(),
                    self.log_records_rejected_warning.suppressed(),
                ),
            ])
            .collect()
    }
}

/// The ingest counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Requests decoded and ingested.
    pub batches_received: u64,
    /// Requests refused whole: undecodable, too large, unsupported media type,
    /// unauthenticated, over the in-flight budget, too slow.
    pub batches_rejected: u64,
    /// Spans accepted: the valid spans of ingested requests.
    pub spans_accepted: u64,
    /// Spans of ingested requests left out as invalid (reported to the sender as
    /// partial success).
    pub spans_rejected: u64,
    /// Flag evaluations read off spans.
    pub samples_extracted: u64,
    /// Samples recorded into a rollout window (one sample may count for several).
    pub samples_routed: u64,
    /// Samples dropped because their rollout changed step while the batch was read.
    pub samples_stale: u64,
    /// Requests refused whole, by transport (gRPC, HTTP) and [`RejectReason`].
    pub refused: [[u64; RejectReason::ALL.len()]; 2],
    /// Memory held by requests being received and decoded.
    pub in_flight_bytes: u64,
    pub in_flight_limit_bytes: u64,
    /// Spans sent on to the tracing backend, when spans are forwarded.
    pub forwarded: ForwardStats,
}

/// The logs counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Logs requests decoded and ingested.
    pub requests_ingested: u64,
    /// Logs requests refused whole (the reasons are counted with the traces').
    pub requests_refused: u64,
    /// Valid log records of ingested requests.
    pub records_accepted: u64,
    /// Log records left out as invalid (reported to the sender as partial success).
    pub records_rejected: u64,
    /// Flag evaluations read off log records, with their trace ID.
    pub evaluations_read: u64,
    /// Flag evaluations whose record has no trace ID.
    pub evaluations_unattributed: u64,
}

/// The receiver a batch came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc = 0,
    Http = 1,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not decodable as an OTLP trace request.
    Malformed = 0,
    /// Over the body limit, compressed or not, or over the decoded-memory limit.
    TooLarge = 1,
    /// A content type or content encoding this receiver does not read.
    Unsupported = 2,
    /// No accepted token.
    Unauthenticated = 3,
    /// The requests in flight already hold the memory budget: retry later.
    Overloaded = 4,
    /// The body did not arrive in time.
    TimedOut = 5,
}

impl RejectReason {
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::Unsupported,
        RejectReason::Unauthenticated,
        RejectReason::Overloaded,
        RejectReason::TimedOut,
    ];
}

impl RejectReason {
    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unsupported => "unsupported",
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::Overloaded => "overloaded",
            RejectReason::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request was refused whole; the client was told why.
pub(super) struct BatchRejected<'a> {
    pub transport: Transport,
    pub reason: RejectReason,
    pub detail: &'a str,
}

impl BatchRejected<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        counters.requests_refused.inc();
        counters.refused[self.transport as usize][self.reason as usize].inc();
        if let Some(held_back) = counters.refused_warnings[self.reason as usize].admit() {
            tracing::warn!(
                transport = %self.transport,
                reason = %self.reason,
                detail = self.detail,
                similar_warnings_held_back = held_back,
                "refused an OTLP trace request (all counted in spangate_otlp_requests_refused_total)"
            );
        }
    }
}

/// A logs request was refused whole; the client was told why.
pub(super) struct LogsRefused<'a> {
    pub transport: Transport,
    pub reason: RejectReason,
    pub detail: &'a str,
}

impl LogsRefused<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        counters.log_requests_refused.inc();
        counters.refused[self.transport as usize][self.reason as usize].inc();
        if let Some(held_back) = counters.refused_warnings[self.reason as usize].admit() {
            tracing::warn!(
                transport = %self.transport,
                reason = %self.reason,
                detail = self.detail,
                similar_warnings_held_back = held_back,
                "refused an OTLP logs request (all counted in spangate_otlp_requests_refused_total)"
            );
        }
    }
}

/// A logs request was ingested.
pub(super) struct LogsIngested {
    pub accepted: u64,
    pub evaluations: u64,
    pub unattributed: u64,
}

impl LogsIngested {
    pub(super) fn emit(self, counters: &Counters) {
        counters.log_requests_ingested.inc();
        counters.log_records_accepted.inc_by(self.accepted);
        counters.log_evaluations_read.inc_by(self.evaluations);
        counters
            .log_evaluations_unattributed
            .inc_by(self.unattributed);
        tracing::debug!(
            accepted = self.accepted,
            evaluations = self.evaluations,
            unattributed = self.unattributed,
            "ingested an OTLP logs batch"
        );
    }
}

/// Some log records of an ingested request were invalid and left out.
pub(super) struct LogRecordsRejected<'a> {
    pub count: u64,
    pub first: &'a InvalidSpan,
}

impl LogRecordsRejected<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        counters.log_records_rejected.inc_by(self.count);
        if let Some(held_back) = counters.log_records_rejected_warning.admit() {
            tracing::warn!(
                count = self.count,
                first = %self.first,
                similar_warnings_held_back = held_back,
                "rejected invalid log records (all counted in spangate_otlp_log_records_total{{outcome=\"rejected\"}})"
            );
        }
    }
}

/// A request was ingested.
pub(super) struct BatchIngested {
    pub accepted: u64,
    pub samples: u64,
    pub routed: u64,
}

impl BatchIngested {
    pub(super) fn emit(self, counters: &Counters) {
        counters.requests_ingested.inc();
        counters.spans_accepted.inc_by(self.accepted);
        counters.samples_read.inc_by(self.samples);
        counters.samples_recorded.inc_by(self.routed);
        tracing::debug!(
            accepted = self.accepted,
            samples = self.samples,
            routed = self.routed,
            "ingested an OTLP trace batch"
        );
    }
}

/// The trace join judged spans outside a trace request: when a logs request
/// resolved their traces, or when their trace's window passed.
pub(super) struct SamplesJoined {
    pub routed: u64,
}

impl SamplesJoined {
    pub(super) fn emit(self, counters: &Counters) {
        counters.samples_recorded.inc_by(self.routed);
    }
}

/// Some spans of an ingested request were invalid and left out.
pub(super) struct SpansRejected<'a> {
    pub count: u64,
    pub first: &'a InvalidSpan,
}

impl SpansRejected<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        counters.spans_rejected.inc_by(self.count);
        if let Some(held_back) = counters.spans_rejected_warning.admit() {
            tracing::warn!(
                count = self.count,
                first = %self.first,
                similar_warnings_held_back = held_back,
                "rejected invalid spans (all counted in spangate_otlp_spans_total{{outcome=\"rejected\"}})"
            );
        }
    }
}

/// A batch's samples for a rollout arrived after the rollout changed step.
pub(super) struct StaleSamplesDropped<'a> {
    pub rollout: &'a str,
    pub samples: u64,
}

impl StaleSamplesDropped<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        counters.samples_stale.inc_by(self.samples);
        tracing::debug!(
            rollout = self.rollout,
            samples = self.samples,
            "dropped samples of a rollout's previous step"
        );
    }
}

/// A request was answered, ingested or refused.
pub(super) struct RequestAnswered {
    pub transport: Transport,
    pub took: Duration,
    /// The trace of the request's first span, when it had one.
    pub trace: Option<TraceExemplar>,
}

impl RequestAnswered {
    pub(super) fn emit(self, counters: &Counters) {
        counters.duration[self.transport as usize].observe(
            self.took.as_secs_f64(),
            self.trace,
            None,
        );
    }
}

/// What a forwarded batch carries: the forward families count each apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forwarded {
    Spans = 0,
    LogRecords = 1,
}

impl Forwarded {
    const ALL: [Forwarded; 2] = [Forwarded::Spans, Forwarded::LogRecords];

    fn as_str(self) -> &'static str {
        match self {
            Forwarded::Spans => "spans",
            Forwarded::LogRecords => "log records",
        }
    }

    /// Its family in `/metrics`, for the log lines that point to it.
    fn family(self) -> &'static str {
        match self {
            Forwarded::Spans => "spangate_forward_spans_total",
            Forwarded::LogRecords => "spangate_forward_log_records_total",
        }
    }
}

impl fmt::Display for Forwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The forward families of `/metrics`: spans and log records by what became of
/// them.
#[derive(Debug)]
pub(super) struct ForwardCounters {
    spans: Family<Labels<1>, Counter>,
    log_records: Family<Labels<1>, Counter>,
    /// By [`Forwarded`].
    sent: [Counter; 2],
    dropped: [Counter; 2],
    failed: [Counter; 2],
    dropped_warning: WarnThrottle,
    failed_warning: WarnThrottle,
}

impl Default for ForwardCounters {
    fn default() -> Self {
        let spans = Family::<Labels<1>, Counter>::default();
        let log_records = Family::<Labels<1>, Counter>::default();
        let outcome = |value| {
            Forwarded::ALL.map(|forwarded| {
                let family = match forwarded {
                    Forwarded::Spans => &spans,
                    Forwarded::LogRecords => &log_records,
                };
                family.get_or_create(&[("outcome", value)]).clone()
            })
        };
        Self {
            sent: outcome("sent"),
            dropped: outcome("dropped"),
            failed: outcome("failed"),
            spans,
            log_records,
            dropped_warning: WarnThrottle::default(),
            failed_warning: WarnThrottle::default(),
        }
    }
}

impl ForwardCounters {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "forward_spans",
            "Spans forwarded to the tracing backend, by outcome: sent, dropped (queue full) or failed (backend unreachable or refusing)",
            self.spans.clone(),
        );
        registry.register(
            "forward_log_records",
            "Log records forwarded to the tracing backend, by outcome: sent, dropped (queue full) or failed (backend unreachable or refusing)",
            self.log_records.clone(),
        );
    }

    pub(super) fn snapshot(&self) -> ForwardStats {
        let [spans, logs] = [Forwarded::Spans, Forwarded::LogRecords].map(|f| f as usize);
        ForwardStats {
            sent: self.sent[spans].get(),
            dropped: self.dropped[spans].get(),
            failed: self.failed[spans].get(),
            log_records_sent: self.sent[logs].get(),
            log_records_dropped: self.dropped[logs].get(),
            log_records_failed: self.failed[logs].get(),
            ..ForwardStats::default()
        }
    }

    pub(super) fn suppressed_warnings(&self) -> [(String, u64); 2] {
        [
            (
                "forward_queue_full".to_string(),
                self.dropped_warning.suppressed(),
            ),
            (
                "forward_failed".to_string(),
                self.failed_warning.suppressed(),
            ),
        ]
    }
}

/// A batch was dropped because the forward queue held no room for it.
pub(super) struct ForwardDropped {
    pub what: Forwarded,
    pub count: u64,
    pub queue_limit_bytes: usize,
}

impl ForwardDropped {
    pub(super) fn emit(self, counters: &ForwardCounters) {
        counters.dropped[self.what as usize].inc_by(self.count);
        if let Some(held_back) = counters.dropped_warning.admit() {
            tracing::warn!(
                count = self.count,
                queue_limit_bytes = self.queue_limit_bytes,
                similar_warnings_held_back = held_back,
                "the forward queue is full: dropping {} (counted in {}{{outcome=\"dropped\"}})",
                self.what,
                self.what.family(),
            );
        }
    }
}

/// An export was accepted by the tracing backend.
pub(super) struct ForwardSent<'a> {
    pub what: Forwarded,
    pub count: u64,
    pub endpoint: &'a str,
    /// Whether the exports before it failed.
    pub recovered: bool,
}

impl ForwardSent<'_> {
    pub(super) fn emit(self, counters: &ForwardCounters) {
        counters.sent[self.what as usize].inc_by(self.count);
        if self.recovered {
            tracing::info!(endpoint = self.endpoint, "forwarding {} again", self.what);
        }
    }
}

/// An export failed; what it carried is lost.
pub(super) struct ForwardFailed<'a> {
    pub what: Forwarded,
    pub count: u64,
    pub endpoint: &'a str,
    pub error: &'a anyhow::Error,
    /// Whether the exports before it succeeded: an outage is warned about once.
    pub first: bool,
}

impl ForwardFailed<'_> {
    pub(super) fn emit(self, counters: &ForwardCounters) {
        counters.failed[self.what as usize].inc_by(self.count);
        if self.first
            && let Some(held_back) = counters.failed_warning.admit()
        {
            tracing::warn!(
                endpoint = self.endpoint,
                count = self.count,
                error = format!("{:#}", self.error),
                similar_warnings_held_back = held_back,
                "could not forward {}; dropping them until the endpoint answers (counted in {}{{outcome=\"failed\"}})",
                self.what,
                self.what.family(),
            );
        } else {
            tracing::debug!(
                count = self.count,
                error = format!("{:#}", self.error),
                "could not forward {}",
                self.what
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{exposition, registry};

    #[test]
    fn every_family_is_registered_and_events_bump_them() {
        let counters = Counters::default();
        let mut registry = registry();
        counters.register(&mut registry);
        BatchIngested {
            accepted: 7,
            samples: 6,
            routed: 5,
        }
        .emit(&counters);
        BatchRejected {
            transport: Transport::Http,
            reason: RejectReason::TooLarge,
            detail: "too big",
        }
        .emit(&counters);
        RequestAnswered {
            transport: Transport::Grpc,
            took: Duration::from_millis(3),
            trace: None,
        }
        .emit(&counters);
        LogsIngested {
            accepted: 4,
            evaluations: 3,
            unattributed: 1,
        }
        .emit(&counters);
        LogsRefused {
            transport: Transport::Grpc,
            reason: RejectReason::Malformed,
            detail: "broken",
        }
        .emit(&counters);
        let (_, text) = exposition(&registry, "");
        for line in [
            "# TYPE spangate_otlp_requests_total counter",
            "spangate_otlp_requests_total{outcome=\"ingested\"} 1",
            "spangate_otlp_requests_total{outcome=\"refused\"} 1",
            "spangate_otlp_requests_refused_total{transport=\"http\",reason=\"too_large\"} 1",
            "spangate_otlp_requests_refused_total{transport=\"grpc\",reason=\"too_large\"} 0",
            "spangate_otlp_spans_total{outcome=\"accepted\"} 7",
            "spangate_otlp_spans_total{outcome=\"rejected\"} 0",
            "spangate_otlp_samples_read_total 6",
            "spangate_otlp_samples_recorded_total 5",
            "spangate_otlp_request_duration_seconds_count{transport=\"grpc\"} 1",
            "spangate_otlp_request_duration_seconds_count{transport=\"http\"} 0",
            "spangate_otlp_log_requests_total{outcome=\"ingested\"} 1",
            "spangate_otlp_log_requests_total{outcome=\"refused\"} 1",
            "spangate_otlp_requests_refused_total{transport=\"grpc\",reason=\"malformed\"} 1",
            "spangate_otlp_log_records_total{outcome=\"accepted\"} 4",
            "spangate_otlp_log_records_total{outcome=\"rejected\"} 0",
            "spangate_otlp_log_evaluations_read_total 3",
            "spangate_otlp_log_evaluations_unattributed_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert_eq!(counters.snapshot().refused[1][1], 1);
    }
}
