//! Everything noteworthy that happens to a batch, one type per kind of event. Each
//! event bumps its counters and writes its log line in one place, so the names in
//! logs and the numbers in metrics cannot drift apart. Warnings are written at most
//! once per [`WarnThrottle::INTERVAL`] per kind; the counters count every event.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::extract::InvalidSpan;
use super::forward::ForwardStats;
use crate::telemetry::{WarnThrottle, write_family};

/// Running totals since start, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    batches_received: AtomicU64,
    batches_rejected: AtomicU64,
    spans_accepted: AtomicU64,
    spans_rejected: AtomicU64,
    samples_extracted: AtomicU64,
    samples_routed: AtomicU64,
    samples_stale: AtomicU64,
    /// Requests refused whole, by transport and reason.
    refused: [[AtomicU64; RejectReason::ALL.len()]; 2],
    refused_warnings: [WarnThrottle; RejectReason::ALL.len()],
    spans_rejected_warning: WarnThrottle,
}

impl Counters {
    pub(super) fn snapshot(&self) -> IngestStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IngestStats {
            batches_received: read(&self.batches_received),
            batches_rejected: read(&self.batches_rejected),
            spans_accepted: read(&self.spans_accepted),
            spans_rejected: read(&self.spans_rejected),
            samples_extracted: read(&self.samples_extracted),
            samples_routed: read(&self.samples_routed),
            samples_stale: read(&self.samples_stale),
            refused: self.refused.each_ref().map(|row| row.each_ref().map(read)),
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
            .chain([(
                "otlp_spans_rejected".to_string(),
                self.spans_rejected_warning.suppressed(),
            )])
            .collect()
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
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

impl IngestStats {
    /// The `/metrics` families of ingest: requests and spans by outcome, samples
    /// routed, refusals by reason, the in-flight budget and the forward queue.
    pub fn render(&self, out: &mut String) {
        write_family(
            out,
            "spangate_otlp_batches_total",
            "counter",
            "OTLP trace requests by outcome.",
            [
                ("{outcome=\"ingested\"}", self.batches_received),
                ("{outcome=\"rejected\"}", self.batches_rejected),
            ],
        );
        write_family(
            out,
            "spangate_spans_ingested_total",
            "counter",
            "Spans accepted from OTLP requests; the ones refused are in spangate_spans_rejected_total.",
            [("", self.spans_accepted)],
        );
        write_family(
            out,
            "spangate_spans_rejected_total",
            "counter",
            "Spans refused as invalid (reported to the sender as partial success).",
            [("", self.spans_rejected)],
        );
        write_family(
            out,
            "spangate_spans_forwarded_total",
            "counter",
            "Spans forwarded to the tracing backend by outcome (only when forwarding).",
            [
                ("{outcome=\"sent\"}", self.forwarded.sent),
                ("{outcome=\"dropped\"}", self.forwarded.dropped),
                ("{outcome=\"failed\"}", self.forwarded.failed),
            ],
        );
        write_family(
            out,
            "spangate_samples_routed_total",
            "counter",
            "Flag evaluations read off spans and recorded into a rollout's window.",
            [("", self.samples_routed)],
        );
        let refused = Transport::ALL.iter().flat_map(|transport| {
            RejectReason::ALL.iter().map(move |reason| {
                (
                    format!("{{transport=\"{transport}\",reason=\"{reason}\"}}"),
                    self.refused[*transport as usize][*reason as usize],
                )
            })
        });
        write_family(
            out,
            "spangate_otlp_requests_refused_total",
            "counter",
            "OTLP requests refused whole, by transport and reason.",
            refused,
        );
        write_family(
            out,
            "spangate_otlp_in_flight_bytes",
            "gauge",
            "Memory held by OTLP requests being received and decoded (estimated).",
            [("", self.in_flight_bytes)],
        );
        write_family(
            out,
            "spangate_otlp_in_flight_limit_bytes",
            "gauge",
            "Most memory OTLP requests in flight may hold; beyond, requests are told to retry.",
            [("", self.in_flight_limit_bytes)],
        );
        write_family(
            out,
            "spangate_forward_queue_bytes",
            "gauge",
            "Memory held by spans waiting to be forwarded or being forwarded (estimated).",
            [("", self.forwarded.queue_bytes)],
        );
        write_family(
            out,
            "spangate_forward_queue_limit_bytes",
            "gauge",
            "Most memory the forward queue may hold; beyond, new batches are dropped.",
            [("", self.forwarded.queue_limit_bytes)],
        );
    }
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

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        })
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

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unsupported => "unsupported",
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::Overloaded => "overloaded",
            RejectReason::TimedOut => "timed_out",
        })
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
        add(&counters.batches_rejected, 1);
        add(
            &counters.refused[self.transport as usize][self.reason as usize],
            1,
        );
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

/// A request was ingested.
pub(super) struct BatchIngested {
    pub accepted: u64,
    pub samples: u64,
    pub routed: u64,
}

impl BatchIngested {
    pub(super) fn emit(self, counters: &Counters) {
        add(&counters.batches_received, 1);
        add(&counters.spans_accepted, self.accepted);
        add(&counters.samples_extracted, self.samples);
        add(&counters.samples_routed, self.routed);
        tracing::debug!(
            accepted = self.accepted,
            samples = self.samples,
            routed = self.routed,
            "ingested an OTLP trace batch"
        );
    }
}

/// Some spans of an ingested request were invalid and left out.
pub(super) struct SpansRejected<'a> {
    pub count: u64,
    pub first: &'a InvalidSpan,
}

impl SpansRejected<'_> {
    pub(super) fn emit(self, counters: &Counters) {
        add(&counters.spans_rejected, self.count);
        if let Some(held_back) = counters.spans_rejected_warning.admit() {
            tracing::warn!(
                count = self.count,
                first = %self.first,
                similar_warnings_held_back = held_back,
                "rejected invalid spans (all counted in spangate_spans_rejected_total)"
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
        add(&counters.samples_stale, self.samples);
        tracing::debug!(
            rollout = self.rollout,
            samples = self.samples,
            "dropped samples of a rollout's previous step"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let stats = IngestStats {
            batches_received: 4,
            spans_accepted: 7,
            spans_rejected: 2,
            samples_routed: 5,
            ..Default::default()
        };
        let mut text = String::new();
        stats.render(&mut text);
        for line in [
            "# TYPE spangate_otlp_batches_total counter",
            "spangate_otlp_batches_total{outcome=\"ingested\"} 4",
            "spangate_spans_ingested_total 7",
            "spangate_spans_rejected_total 2",
            "spangate_spans_forwarded_total{outcome=\"sent\"} 0",
            "spangate_samples_routed_total 5",
            "# TYPE spangate_otlp_in_flight_bytes gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
