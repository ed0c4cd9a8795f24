//! Ingest (shell): the OTLP trace and logs receivers, gRPC ([`serve_grpc`], port
//! 4317) and HTTP ([`serve_http`], port 4318, protobuf and JSON), and the
//! [`Ingestor`] they share, which reads each span's flag evaluations ([`extract`])
//! and records them into the window of every rollout they count for
//! ([`Routes`](crate::analysis::Routes)), reads the `feature_flag.evaluation` log
//! events ([`logs`]) for the trace join, and, when configured, forwards spans and
//! logs to the tracing backend ([`forwarder`]) with private attributes hidden
//! ([`hide_private`]).
//!
//! Bad input is refused as the OTLP specification says, with a reason, and never
//! stops a receiver: an undecodable request is rejected whole (INVALID_ARGUMENT /
//! 400), an oversized one too (RESOURCE_EXHAUSTED / 413, in bytes received or in
//! memory decoded), and a decodable request with invalid spans (or log records)
//! is accepted as a partial success that counts the ones left out, one bad span
//! costing only itself. A request that finds the memory budget of the requests in flight used
//! up is told to retry (UNAVAILABLE / 503 with Retry-After); one without an
//! accepted token, when tokens are set, is refused (UNAUTHENTICATED / 401).

mod decode;
mod events;
pub mod extract;
mod forward;
mod grpc;
mod http;
mod ingestor;
pub mod logs;
mod redact;
mod refusal;
mod signal;
mod tag;
#[cfg(test)]
mod test_attributes;

use std::sync::Arc;
use std::time::Duration;

pub use decode::{Decoded, Encoding, Refused, Rejected, decode, decode_logs};
pub use events::{IngestStats, LogStats, RejectReason, Transport};
pub use extract::SpanChecks;
pub use forward::{
    ForwardConfig, ForwardProtocol, ForwardStats, ForwardWorker, Forwarder, PrivateSource,
    forwarder,
};
pub use grpc::{grpc_router, serve_grpc};
pub use http::{http_router, serve_http};
pub use ingestor::{IngestReport, Ingestor};
pub use logs::{LogEvaluation, LogsReport};
pub use redact::{hide_private, hide_private_in_logs};
pub use tag::{ROLLOUT_ATTRIBUTE, STEP_ATTRIBUTE, TagStats};

use crate::analysis::JoinLimits;
use crate::net::{ListenerStats, ServerLimits, Tokens};

/// Limits on what a receiver accepts and the memory it may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest request body, checked both as received and once decompressed.
    /// Larger requests are refused whole (RESOURCE_EXHAUSTED / 413) and are not
    /// retried by OTLP exporters.
    pub max_body_bytes: usize,
    /// Most memory one request may take once decoded, as estimated before it is
    /// decoded: a few bytes on the wire can stand for hundreds in memory. Larger
    /// requests are refused whole (RESOURCE_EXHAUSTED / 413).
    pub max_decoded_bytes: usize,
    /// Most memory all requests in flight may hold together (bodies being received,
    /// decompressed and decoded). A request that does not fit is told to retry
    /// (UNAVAILABLE / 503 with Retry-After).
    pub max_in_flight_bytes: usize,
    /// Deepest nesting of attribute values (`{"a": {"b": 1}}` is 2); a deeper span,
    /// resource or scope is rejected alone, in the partial success.
    pub max_attribute_depth: usize,
    /// What makes a span valid beyond its IDs.
    pub span_checks: SpanChecks,
    /// How long and how much the trace join keeps traces waiting for their variant.
    pub trace_join: JoinLimits,
}

impl IngestLimits {
    /// Deepest nesting of attribute values both decoders read within their own
    /// recursion limits (prost's 100 levels, serde_json's 128).
    pub const MAX_ATTRIBUTE_DEPTH: usize = 24;

    /// Checks that the limits can work together, saying which flag to change.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_body_bytes > 0 && self.max_decoded_bytes > 0,
            "--max-body-bytes and --max-decoded-bytes must be above 0"
        );
        anyhow::ensure!(
            self.max_in_flight_bytes >= self.max_body_bytes + self.max_decoded_bytes,
            "--max-in-flight-bytes ({}) must hold at least one request of \
             --max-body-bytes ({}) and --max-decoded-bytes ({}), or the largest requests \
             would be told to retry forever",
            self.max_in_flight_bytes,
            self.max_body_bytes,
            self.max_decoded_bytes
        );
        anyhow::ensure!(
            (1..=Self::MAX_ATTRIBUTE_DEPTH).contains(&self.max_attribute_depth),
            "--max-attribute-depth must be between 1 and {}",
            Self::MAX_ATTRIBUTE_DEPTH
        );
        anyhow::ensure!(
            self.span_checks.max_duration > Duration::ZERO,
            "--max-span-duration must be above 0"
        );
        Ok(())
    }
}

impl Default for IngestLimits {
    /// A 4 MiB body: gRPC's default receive limit, which OTLP exporters already keep
    /// their batches under (a default batch of 512 spans is far smaller). 32 MiB
    /// decoded: such a batch of ordinary spans takes a few MiB. 64 MiB in flight: a
    /// quarter of the chart's memory limit. The trace join keeps a trace 30 s
    /// (exporters batch for 5 s; services down a trace end after the evaluation's)
    /// in at most 32 MiB, about 150,000 waiting traces.
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_decoded_bytes: 32 * 1024 * 1024,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_attribute_depth: 16,
            span_checks: SpanChecks::default(),
            trace_join: JoinLimits {
                window_ns: 30 * 1_000_000_000,
                max_bytes: 32 * 1024 * 1024,
            },
        }
    }
}

/// How a receiver is served: who may send, and its connections' limits.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Accepted bearer tokens; empty: no authentication.
    pub tokens: Tokens,
    pub server: ServerLimits,
    pub stats: Arc<ListenerStats>,
}

impl ReceiverOptions {
    /// Default limits, no authentication, and stats of its own, named `listener`.
    pub fn new(listener: &'static str) -> Self {
        Self {
            tokens: Tokens::default(),
            server: ServerLimits::default(),
            stats: ListenerStats::new(listener),
        }
    }
}
