//! Ingest (shell): the OTLP trace receivers, gRPC ([`serve_grpc`], port 4317) and
//! HTTP ([`serve_http`], port 4318, protobuf and JSON), and the [`Ingestor`] they
//! share, which reads each span's flag evaluations ([`extract`]) and records them
//! into the window of every rollout they count for ([`Routes`](crate::analysis::Routes)),
//! and, when configured, forwards them to the tracing backend ([`forwarder`]) with
//! private attributes hidden ([`hide_private`]).
//!
//! Bad input is refused as the OTLP specification says, with a reason, and never
//! stops a receiver: an undecodable request is rejected whole (INVALID_ARGUMENT /
//! 400), an oversized one too (RESOURCE_EXHAUSTED / 413), and a decodable request
//! with invalid spans is accepted as a partial success that counts the spans left out.

mod events;
pub mod extract;
mod forward;
mod grpc;
mod http;
mod ingestor;
mod json;
mod redact;
#[cfg(test)]
mod test_attributes;

pub use events::IngestStats;
use events::{RejectReason, Transport};
pub use forward::{
    ForwardConfig, ForwardProtocol, ForwardStats, ForwardWorker, Forwarder, PrivateSource,
    forwarder,
};
pub use grpc::serve_grpc;
pub use http::{http_router, serve_http};
pub use ingestor::{IngestReport, Ingestor};
pub use redact::hide_private;

/// Limits on what a receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest request body, checked both as received and once decompressed.
    /// Larger requests are refused whole (RESOURCE_EXHAUSTED / 413) and are not
    /// retried by OTLP exporters.
    pub max_body_bytes: usize,
}

impl Default for IngestLimits {
    /// 4 MiB: gRPC's default receive limit, which OTLP exporters already keep their
    /// batches under (a default batch of 512 spans is far smaller).
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}
