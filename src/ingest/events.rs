//! Everything noteworthy that happens to a batch, one type per kind of event. Each
//! event bumps its counters and writes its log line in one place, so the names in
//! logs and the numbers in metrics cannot drift apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::{fmt, io};

use super::extract::InvalidSpan;
use super::forward::ForwardStats;

/// Running totals since start, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    batches_received: AtomicU64,
    batches_rejected: AtomicU64,
    spans_received: AtomicU64,
    spans_rejected: AtomicU64,
    samples_extracted: AtomicU64,
    samples_routed: AtomicU64,
    samples_stale: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> IngestStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IngestStats {
            batches_received: read(&self.batches_received),
            batches_rejected: read(&self.batches_rejected),
            spans_received: read(&self.spans_received),
            spans_rejected: read(&self.spans_rejected),
            samples_extracted: read(&self.samples_extracted),
            samples_routed: read(&self.samples_routed),
            samples_stale: read(&self.samples_stale),
            forwarded: ForwardStats::default(),
        }
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
    /// Requests refused whole: undecodable, too large, unsupported media type.
    pub batches_rejected: u64,
    /// Spans in ingested requests, rejected ones included.
    pub spans_received: u64,
    /// Spans refused as invalid (reported back as partial success).
    pub spans_rejected: u64,
    /// Flag evaluations read off spans.
    pub samples_extracted: u64,
    /// Samples recorded into a rollout window (one sample may count for several).
    pub samples_routed: u64,
    /// Samples dropped because their rollout changed step while the batch was read.
    pub samples_stale: u64,
    /// Spans sent on to the tracing backend, when spans are forwarded.
    pub forwarded: ForwardStats,
}

/// The receiver a batch came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
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
    Malformed,
    /// Over the body limit, compressed or not.
    TooLarge,
    /// A content type or content encoding this receiver does not read.
    Unsupported,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unsupported => "unsupported",
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
        tracing::warn!(
            transport = %self.transport,
            reason = %self.reason,
            detail = self.detail,
            "rejected an OTLP trace batch"
        );
    }
}

/// A request was ingested.
pub(super) struct BatchIngested {
    pub spans: u64,
    pub samples: u64,
    pub routed: u64,
}

impl BatchIngested {
    pub(super) fn emit(self, counters: &Counters) {
        add(&counters.batches_received, 1);
        add(&counters.spans_received, self.spans);
        add(&counters.samples_extracted, self.samples);
        add(&counters.samples_routed, self.routed);
        tracing::debug!(
            spans = self.spans,
            samples = self.samples,
            routed = self.routed,
            "ingested an OTLP trace batch"
        );
    }
}

/// Some spans of an ingested request were invalid and left out.
pub(super) struct SpansRejected {
    pub count: u64,
    pub first: InvalidSpan,
}

impl SpansRejected {
    pub(super) fn emit(self, counters: &Counters) {
        add(&counters.spans_rejected, self.count);
        tracing::warn!(count = self.count, first = %self.first, "rejected invalid spans");
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

/// TCP_NODELAY could not be set on an accepted connection; it is served anyway,
/// its answers perhaps delayed.
pub(super) struct NoDelayFailed<'a> {
    pub error: &'a io::Error,
}

impl NoDelayFailed<'_> {
    pub(super) fn emit(self) {
        tracing::debug!(error = %self.error, "could not set TCP_NODELAY on an OTLP connection");
    }
}
