//! Decoding an OTLP trace request within a memory budget, one span at a time.
//!
//! A request is first walked without decoding anything, to estimate what its
//! decoded form will take on the heap (each message's size, each string, each
//! vector's capacity): a few bytes on the wire can stand for hundreds in memory
//! (an empty span is 2 bytes of protobuf and a few hundred decoded). Over the
//! per-request limit, it is refused as too large; when the memory of every
//! request in flight would pass the global budget, as overloaded. Then each
//! resource, scope and span is decoded on its own, so one that cannot be decoded,
//! or whose attribute values nest too deep, is rejected alone (with every span
//! under it, for a resource or scope) and the rest is kept.

mod json;
mod protobuf;
mod schema;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::IngestLimits;
use super::extract::{InvalidSpan, Part};
use crate::net::Reservation;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// A decoded request, what was left out of it, and the memory it was estimated
/// to take (reserved for as long as it is held).
#[derive(Debug)]
pub struct Decoded {
    pub request: ExportTraceServiceRequest,
    pub rejected: Rejected,
    pub cost: usize,
}

/// Why a request was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("invalid OTLP {encoding}: {reason}")]
    Malformed {
        encoding: &'static str,
        reason: String,
    },
    #[error(
        "the request would take about {estimate} bytes decoded, over the limit of {limit}; \
         send fewer spans per request"
    )]
    TooLarge { estimate: usize, limit: usize },
    #[error("too many requests in flight: retry later")]
    Overloaded,
}

/// Decodes `body`, reserving its estimated memory from `reservation`'s budget first:
/// what both receivers do with a body once it is read (and gunzipped), before
/// [`Ingestor::accept`](super::Ingestor::accept). Public so that the fuzz targets
/// (`tests/fuzz.rs`) drive this very path.
pub fn decode(
    encoding: Encoding,
    body: &[u8],
    limits: &IngestLimits,
    reservation: &mut Reservation,
) -> Result<Decoded, Refused> {
    let depth = limits.max_attribute_depth;
    let malformed = |Malformed(reason)| Refused::Malformed {
        encoding: match encoding {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        },
        reason,
    };
    let estimate = match encoding {
        Encoding::Protobuf => protobuf::estimate(body, depth),
        Encoding::Json => json::estimate(body, depth),
    }
    .map_err(malformed)?;
    if estimate.cost > limits.max_decoded_bytes {
        return Err(Refused::TooLarge {
            estimate: estimate.cost,
            limit: limits.max_decoded_bytes,
        });
    }
    if !reservation.grow(estimate.cost) {
        return Err(Refused::Overloaded);
    }
    let (request, rejected) = match encoding {
        Encoding::Protobuf => protobuf::decode(body, depth),
        Encoding::Json => json::decode(body, depth),
    }
    .map_err(malformed)?;
    Ok(Decoded {
        request,
        rejected,
        cost: estimate.cost,
    })
}

/// Spans left out of a request, and why the first was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    pub count: u64,
    pub first: Option<InvalidSpan>,
}

impl Rejected {
    pub(super) fn add(&mut self, count: u64, reason: InvalidSpan) {
        self.count += count;
        self.first.get_or_insert(reason);
    }

    pub(super) fn merge(&mut self, other: Rejected) {
        if let Some(first) = other.first {
            self.add(other.count, first);
        }
    }
}

/// What decoding a request will take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Estimate {
    /// Heap bytes.
    cost: usize,
    /// Spans in it.
    spans: u64,
}

impl Estimate {
    /// Adds the cost of a part; `None` for one that will not be decoded.
    fn add(&mut self, cost: Option<usize>) {
        self.cost = self.cost.saturating_add(cost.unwrap_or(0));
    }
}

/// Why a request's framing cannot be read: it is refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Malformed(String);

impl Malformed {
    fn new(reason: &str) -> Self {
        Self(reason.to_string())
    }
}

/// Why one resource, scope or span will not be decoded.
#[derive(Debug)]
enum ScanError {
    TooDeep,
    Malformed(Malformed),
}

impl ScanError {
    fn invalid(self, part: Part, max_depth: usize) -> InvalidSpan {
        match self {
            ScanError::TooDeep => InvalidSpan::TooDeep {
                part,
                max: max_depth,
            },
            ScanError::Malformed(Malformed(reason)) => part.undecodable(reason),
        }
    }
}

/// A resource's or scope's spans while they are read: when its resource or
/// scope (the header) is invalid, every span under it is rejected for that.
struct Group<M, H> {
    message: M,
    header: Option<Result<H, InvalidSpan>>,
    /// Spans under it, kept or not.
    spans: u64,
    rejected: Rejected,
}

impl<M: Default, H> Default for Group<M, H> {
    fn default() -> Self {
        Self {
            message: M::default(),
            header: None,
            spans: 0,
            rejected: Rejected::default(),
        }
    }
}

impl<M, H> Group<M, H> {
    /// The header; a repeated one replaces the first.
    fn header(&mut self, header: Result<H, InvalidSpan>) {
        self.header = Some(header);
    }

    /// The message with its header set by `set`, or none when the header was
    /// invalid; how many spans were under it; which were rejected.
    fn finish(mut self, set: impl FnOnce(&mut M, Option<H>)) -> (Option<M>, u64, Rejected) {
        match self.header {
            Some(Err(invalid)) => {
                let mut rejected = Rejected::default();
                if self.spans > 0 {
                    rejected.add(self.spans, invalid);
                }
                (None, self.spans, rejected)
            }
            header => {
                set(&mut self.message, header.and_then(Result::ok));
                (Some(self.message), self.spans, self.rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests;
