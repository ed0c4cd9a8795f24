//! Decoding an OTLP request, traces or logs, within a memory budget, one item
//! (span or log record) at a time.
//!
//! Both signals share one skeleton (request → resource groups → scope groups →
//! items), which [`Signal`] names, so one walk reads both. A request is first walked without decoding anything, to estimate what its
//! decoded form will take on the heap (each message's size, each string, each
//! vector's capacity): a few bytes on the wire can stand for hundreds in memory
//! (an empty span is 2 bytes of protobuf and a few hundred decoded). Over the
//! per-request limit, it is refused as too large; when the memory of every
//! request in flight would pass the global budget, as overloaded. Then each
//! resource, scope and item is decoded on its own, so one that cannot be decoded,
//! or whose attribute values nest too deep, is rejected alone (with every item
//! under it, for a resource or scope) and the rest is kept.

mod json;
mod protobuf;
mod schema;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::de::DeserializeOwned;

use self::schema::Kind;
use super::IngestLimits;
use super::extract::{InvalidSpan, Part};
use crate::net::Reservation;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// A decoded request (traces unless said), what was left out of it, and the
/// memory it was estimated to take (reserved for as long as it is held).
#[derive(Debug)]
pub struct Decoded<R = ExportTraceServiceRequest> {
    pub request: R,
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
         send fewer spans or log records per request"
    )]
    TooLarge { estimate: usize, limit: usize },
    #[error("too many requests in flight: retry later")]
    Overloaded,
}

/// Decodes `body` as a trace request, reserving its estimated memory from
/// `reservation`'s budget first: what both receivers do with a body once it is
/// read (and gunzipped), before [`Ingestor::accept`](super::Ingestor::accept).
/// Public so that the fuzz targets (`tests/fuzz.rs`) drive this very path.
pub fn decode(
    encoding: Encoding,
    body: &[u8],
    limits: &IngestLimits,
    reservation: &mut Reservation,
) -> Result<Decoded, Refused> {
    decode_signal::<Traces>(encoding, body, limits, reservation)
}

/// [`decode`] for a logs request, before
/// [`Ingestor::accept_logs`](super::Ingestor::accept_logs).
pub fn decode_logs(
    encoding: Encoding,
    body: &[u8],
    limits: &IngestLimits,
    reservation: &mut Reservation,
) -> Result<Decoded<ExportLogsServiceRequest>, Refused> {
    decode_signal::<Logs>(encoding, body, limits, reservation)
}

fn decode_signal<S: Signal>(
    encoding: Encoding,
    body: &[u8],
    limits: &IngestLimits,
    reservation: &mut Reservation,
) -> Result<Decoded<S::Request>, Refused> {
    let depth = limits.max_attribute_depth;
    let malformed = |Malformed(reason)| Refused::Malformed {
        encoding: match encoding {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        },
        reason,
    };
    let estimate = match encoding {
        Encoding::Protobuf => protobuf::estimate::<S>(body, depth),
        Encoding::Json => json::estimate::<S>(body, depth),
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
        Encoding::Protobuf => protobuf::decode::<S>(body, depth),
        Encoding::Json => json::decode::<S>(body, depth),
    }
    .map_err(malformed)?;
    Ok(Decoded {
        request,
        rejected,
        cost: estimate.cost,
    })
}

/// The fields of a resource or scope group that decoding sets: its header (the
/// resource or scope), its children (scope groups or items) and its schema URL.
struct Parts<'a, H, C> {
    header: &'a mut Option<H>,
    children: &'a mut Vec<C>,
    schema_url: &'a mut String,
}

/// One OTLP signal's request, as far as decoding goes. Every signal has the same
/// skeleton, under the same protobuf numbers: request {1: groups}, group
/// {1: resource, 2: scope groups, 3: schema URL}, scope group {1: scope, 2: items,
/// 3: schema URL}; only the types and the OTLP/JSON names differ.
trait Signal {
    type Request: Default;
    type Group: Default;
    type Scoped: Default;
    type Item: prost::Message + Default + DeserializeOwned;
    /// OTLP/JSON names of the groups, the scope groups and the items.
    const GROUPS: &'static str;
    const SCOPED: &'static str;
    const ITEMS: &'static str;
    /// What an item is, for its memory and its rejection.
    const ITEM: Kind;
    const PART: Part;

    fn groups(request: &mut Self::Request) -> &mut Vec<Self::Group>;
    fn group(group: &mut Self::Group) -> Parts<'_, Resource, Self::Scoped>;
    fn scoped(scoped: &mut Self::Scoped) -> Parts<'_, InstrumentationScope, Self::Item>;

    /// `group` unless nothing under it was kept.
    fn non_empty_group(mut group: Self::Group) -> Option<Self::Group> {
        let empty = Self::group(&mut group).children.is_empty();
        (!empty).then_some(group)
    }

    /// `scoped` unless none of its items was kept.
    fn non_empty_scoped(mut scoped: Self::Scoped) -> Option<Self::Scoped> {
        let empty = Self::scoped(&mut scoped).children.is_empty();
        (!empty).then_some(scoped)
    }
}

struct Traces;

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Group = ResourceSpans;
    type Scoped = ScopeSpans;
    type Item = Span;
    const GROUPS: &'static str = "resourceSpans";
    const SCOPED: &'static str = "scopeSpans";
    const ITEMS: &'static str = "spans";
    const ITEM: Kind = Kind::Span;
    const PART: Part = Part::Span;

    fn groups(request: &mut Self::Request) -> &mut Vec<Self::Group> {
        &mut request.resource_spans
    }

    fn group(group: &mut Self::Group) -> Parts<'_, Resource, Self::Scoped> {
        Parts {
            header: &mut group.resource,
            children: &mut group.scope_spans,
            schema_url: &mut group.schema_url,
        }
    }

    fn scoped(scoped: &mut Self::Scoped) -> Parts<'_, InstrumentationScope, Self::Item> {
        Parts {
            header: &mut scoped.scope,
            children: &mut scoped.spans,
            schema_url: &mut scoped.schema_url,
        }
    }
}

struct Logs;

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Group = ResourceLogs;
    type Scoped = ScopeLogs;
    type Item = LogRecord;
    const GROUPS: &'static str = "resourceLogs";
    const SCOPED: &'static str = "scopeLogs";
    const ITEMS: &'static str = "logRecords";
    const ITEM: Kind = Kind::LogRecord;
    const PART: Part = Part::LogRecord;

    fn groups(request: &mut Self::Request) -> &mut Vec<Self::Group> {
        &mut request.resource_logs
    }

    fn group(group: &mut Self::Group) -> Parts<'_, Resource, Self::Scoped> {
        Parts {
            header: &mut group.resource,
            children: &mut group.scope_logs,
            schema_url: &mut group.schema_url,
        }
    }

    fn scoped(scoped: &mut Self::Scoped) -> Parts<'_, InstrumentationScope, Self::Item> {
        Parts {
            header: &mut scoped.scope,
            children: &mut scoped.log_records,
            schema_url: &mut scoped.schema_url,
        }
    }
}

/// Items (spans, log records) left out of a request, and why the first was.
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

/// Why one resource, scope or item will not be decoded.
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

/// A resource's or scope's items while they are read: when its resource or
/// scope (the header) is invalid, every item under it is rejected for that.
struct Group<M, H> {
    message: M,
    header: Option<Result<H, InvalidSpan>>,
    /// Items under it, kept or not.
    items: u64,
    rejected: Rejected,
}

impl<M: Default, H> Default for Group<M, H> {
    fn default() -> Self {
        Self {
            message: M::default(),
            header: None,
            items: 0,
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
    /// invalid; how many items were under it; which were rejected.
    fn finish(mut self, set: impl FnOnce(&mut M, Option<H>)) -> (Option<M>, u64, Rejected) {
        match self.header {
            Some(Err(invalid)) => {
                let mut rejected = Rejected::default();
                if self.items > 0 {
                    rejected.add(self.items, invalid);
                }
                (None, self.items, rejected)
            }
            header => {
                set(&mut self.message, header.and_then(Result::ok));
                (Some(self.message), self.items, self.rejected)
            }
        }
    }
}

#[cfg(test)]
mod tests;
