//! The OTLP messages below a span, log record, resource or scope, as far as decoding
//! memory goes: which fields hold messages (inline or repeated) or repeated
//! strings, under their protobuf numbers and OTLP/JSON names, and what each
//! decoded value costs on the heap.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Span,
    LogRecord,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Resource,
    Scope,
    EntityRef,
}

/// What a field holds, beyond scalars, strings and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Child {
    /// One message, stored inline in its parent.
    Message(Kind),
    /// A repeated message: a vector of them.
    Messages(Kind),
    /// A repeated string: a vector of strings.
    Strings,
}

/// (message, protobuf field number, OTLP/JSON name, what it holds).
const FIELDS: &[(Kind, u32, &str, Child)] = &[
    (Kind::Span, 9, "attributes", Child::Messages(Kind::KeyValue)),
    (Kind::Span, 11, "events", Child::Messages(Kind::Event)),
    (Kind::Span, 13, "links", Child::Messages(Kind::Link)),
    (Kind::Span, 15, "status", Child::Message(Kind::Status)),
    (Kind::LogRecord, 5, "body", Child::Message(Kind::AnyValue)),
    (
        Kind::LogRecord,
        6,
        "attributes",
        Child::Messages(Kind::KeyValue),
    ),
    (
        Kind::Event,
        3,
        "attributes",
        Child::Messages(Kind::KeyValue),
    ),
    (Kind::Link, 4, "attributes", Child::Messages(Kind::KeyValue)),
    (Kind::KeyValue, 2, "value", Child::Message(Kind::AnyValue)),
    (
        Kind::AnyValue,
        5,
        "arrayValue",
        Child::Message(Kind::ArrayValue),
    ),
    (
        Kind::AnyValue,
        6,
        "kvlistValue",
        Child::Message(Kind::KeyValueList),
    ),
    (
        Kind::ArrayValue,
        1,
        "values",
        Child::Messages(Kind::AnyValue),
    ),
    (
        Kind::KeyValueList,
        1,
        "values",
        Child::Messages(Kind::KeyValue),
    ),
    (
        Kind::Resource,
        1,
        "attributes",
        Child::Messages(Kind::KeyValue),
    ),
    (
        Kind::Resource,
        3,
        "entityRefs",
        Child::Messages(Kind::EntityRef),
    ),
    (
        Kind::Scope,
        3,
        "attributes",
        Child::Messages(Kind::KeyValue),
    ),
    (Kind::EntityRef, 3, "idKeys", Child::Strings),
    (Kind::EntityRef, 4, "descriptionKeys", Child::Strings),
];

impl Kind {
    /// Its size inline, as an element of a vector or inside its parent.
    pub(super) fn size(self) -> usize {
        match self {
            Kind::Span => size_of::<Span>(),
            Kind::LogRecord => size_of::<LogRecord>(),
            Kind::Event => size_of::<Event>(),
            Kind::Link => size_of::<Link>(),
            Kind::Status => size_of::<Status>(),
            Kind::KeyValue => size_of::<KeyValue>(),
            Kind::AnyValue => size_of::<AnyValue>(),
            Kind::ArrayValue => size_of::<ArrayValue>(),
            Kind::KeyValueList => size_of::<KeyValueList>(),
            Kind::Resource => size_of::<Resource>(),
            Kind::Scope => size_of::<InstrumentationScope>(),
            Kind::EntityRef => size_of::<EntityRef>(),
        }
    }

    /// The field numbered `number`, with its index among this message's fields
    /// (for counting the elements of repeated ones).
    pub(super) fn field(self, number: u32) -> Option<(usize, Child)> {
        FIELDS
            .iter()
            .filter(|field| field.0 == self)
            .enumerate()
            .find(|(_, field)| field.1 == number)
            .map(|(index, field)| (index, field.3))
    }

    /// The field named `name` in OTLP/JSON.
    pub(super) fn json_field(self, name: &str) -> Option<Child> {
        FIELDS
            .iter()
            .find(|field| field.0 == self && field.2 == name)
            .map(|field| field.3)
    }
}

/// Most fields holding messages that one message has (a span's four).
pub(super) const MAX_FIELDS: usize = 4;

pub(super) const STRING: usize = size_of::<String>();

/// What the allocator hands out for `bytes`: a header and a rounding up (glibc
/// chunks are 16-byte multiples of at least 32).
pub(super) fn allocation(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes.saturating_add(8).next_multiple_of(16).max(32)
    }
}

/// A vector of `count` elements of `size` bytes grown one push at a time, as
/// decoding grows it: capacity doubles from 4.
pub(super) fn vector(count: usize, size: usize) -> usize {
    if count == 0 {
        return 0;
    }
    let capacity = count
        .max(4)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX);
    allocation(capacity.saturating_mul(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_number_and_name() {
        assert_eq!(
            Kind::Span.field(11),
            Some((1, Child::Messages(Kind::Event)))
        );
        assert_eq!(Kind::Span.field(5), None);
        assert_eq!(
            Kind::AnyValue.json_field("kvlistValue"),
            Some(Child::Message(Kind::KeyValueList))
        );
        assert_eq!(Kind::EntityRef.field(4), Some((1, Child::Strings)));
        assert_eq!(
            Kind::LogRecord.json_field("body"),
            Some(Child::Message(Kind::AnyValue))
        );
        for kind in [Kind::Span, Kind::LogRecord, Kind::Resource, Kind::EntityRef] {
            assert!(FIELDS.iter().filter(|f| f.0 == kind).count() <= MAX_FIELDS);
        }
    }

    #[test]
    fn vectors_cost_their_capacity() {
        assert_eq!(vector(0, 64), 0);
        assert_eq!(vector(1, 64), allocation(256));
        assert_eq!(vector(5, 64), allocation(512));
        assert_eq!(allocation(1), 32);
        assert_eq!(allocation(100), 112);
    }
}
