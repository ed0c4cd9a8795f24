//! OTLP/JSON read by serde down to each resource, scope and item (span or log
//! record), which are kept
//! as raw text (serde_json skips them without recursion, however deep) and then
//! decoded one at a time, each within serde_json's own nesting limit.
//!
//! opentelemetry-proto's serde mapping reads what the OTLP specification asks for
//! (hex trace and span IDs, integer enums, 64-bit integers as strings or numbers)
//! but refuses two things the protobuf JSON mapping allows and protojson-based
//! senders such as the Collector write: `null` for a default value, and an omitted
//! field in the few messages its types give no serde default (`{"arrayValue": {}}`
//! for an empty array, an entity ref without a schema URL). A part refused for any
//! reason is read once more with those defaults written out; if it is still
//! refused, the first error is the one reported.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::schema::{self, Child, Kind};
use super::{Estimate, Group, Malformed, Part, Rejected, ScanError, Signal};
use crate::ingest::extract::InvalidSpan;

/// What decoding `body` as a request of signal `S` will take, without decoding
/// anything.
pub(super) fn estimate<S: Signal>(body: &[u8], max_depth: usize) -> Result<Estimate, Malformed> {
    let mut sink = EstimateSink::<S> {
        max_depth,
        estimate: Estimate::default(),
        groups: 0,
        scoped: 0,
        items: 0,
        transient: 0,
        signal: PhantomData,
    };
    walk::<S>(body, &mut sink)?;
    sink.estimate
        .add(Some(schema::vector(sink.groups, size_of::<S::Group>())));
    // Items are decoded one at a time: only one's transient memory is held at once.
    sink.estimate.add(Some(sink.transient));
    Ok(sink.estimate)
}

/// Decodes `body`, each item alone; see [`super::protobuf::decode`].
pub(super) fn decode<S: Signal>(
    body: &[u8],
    max_depth: usize,
) -> Result<(S::Request, Rejected), Malformed> {
    let mut sink = DecodeSink::<S> {
        max_depth,
        request: S::Request::default(),
        rejected: Rejected::default(),
        group: Group::default(),
        scoped: Group::default(),
    };
    walk::<S>(body, &mut sink)?;
    Ok((sink.request, sink.rejected))
}

/// What the walk finds, in document order.
enum Event<'de> {
    GroupStart,
    Resource(&'de RawValue),
    GroupEnd,
    ScopedStart,
    Scope(&'de RawValue),
    Item(&'de RawValue),
    ScopedEnd,
    ResourceSchemaUrl(String),
    ScopeSchemaUrl(String),
}

trait Sink<'de> {
    fn event(&mut self, event: Event<'de>);
}

fn walk<'de, S: Signal>(body: &'de [u8], sink: &mut impl Sink<'de>) -> Result<(), Malformed> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    RequestSeed(sink, Names::of::<S>())
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| Malformed(without_values(&error)))
}

struct EstimateSink<S> {
    max_depth: usize,
    estimate: Estimate,
    groups: usize,
    scoped: usize,
    items: usize,
    /// The most memory decoding one part holds only while it is decoded.
    transient: usize,
    signal: PhantomData<S>,
}

impl<S: Signal> EstimateSink<S> {
    fn part(&mut self, raw: &RawValue, kind: Kind) {
        if raw.get() == "null" {
            return;
        }
        match message_cost(raw.get(), kind, self.max_depth) {
            Ok(cost) => {
                self.estimate.add(Some(cost.kept));
                self.transient = self.transient.max(cost.transient);
            }
            Err(_) => self.estimate.add(None),
        }
    }
}

impl<'de, S: Signal> Sink<'de> for EstimateSink<S> {
    fn event(&mut self, event: Event<'de>) {
        match event {
            Event::GroupStart => {
                self.groups += 1;
                self.scoped = 0;
            }
            Event::Resource(raw) => self.part(raw, Kind::Resource),
            Event::GroupEnd => self
                .estimate
                .add(Some(schema::vector(self.scoped, size_of::<S::Scoped>()))),
            Event::ScopedStart => {
                self.scoped += 1;
                self.items = 0;
            }
            Event::Scope(raw) => self.part(raw, Kind::Scope),
            Event::Item(raw) => {
                self.items += 1;
                self.part(raw, S::ITEM);
            }
            Event::ScopedEnd => self
                .estimate
                .add(Some(schema::vector(self.items, S::ITEM.size()))),
            Event::ResourceSchemaUrl(url) | Event::ScopeSchemaUrl(url) => {
                self.estimate.add(Some(schema::allocation(url.len())));
            }
        }
    }
}

struct DecodeSink<S: Signal> {
    max_depth: usize,
    request: S::Request,
    rejected: Rejected,
    group: Group<S::Group, Resource>,
    scoped: Group<S::Scoped, InstrumentationScope>,
}

impl<'de, S: Signal> Sink<'de> for DecodeSink<S> {
    fn event(&mut self, event: Event<'de>) {
        match event {
            Event::GroupStart => self.group = Group::default(),
            Event::Resource(raw) if raw.get() == "null" => {}
            Event::Resource(raw) => {
                self.group
                    .header(one(raw, Kind::Resource, Part::Resource, self.max_depth))
            }
            Event::GroupEnd => {
                let group = std::mem::take(&mut self.group);
                let (kept, _, rejected) =
                    group.finish(|message, resource| *S::group(message).header = resource);
                self.rejected.merge(rejected);
                S::groups(&mut self.request).extend(kept.and_then(S::non_empty_group));
            }
            Event::ScopedStart => self.scoped = Group::default(),
            Event::Scope(raw) if raw.get() == "null" => {}
            Event::Scope(raw) => {
                self.scoped
                    .header(one(raw, Kind::Scope, Part::Scope, self.max_depth));
            }
            Event::Item(raw) => {
                self.scoped.items += 1;
                match one::<S::Item>(raw, S::ITEM, S::PART, self.max_depth) {
                    Ok(item) => S::scoped(&mut self.scoped.message).children.push(item),
                    Err(invalid) => self.scoped.rejected.add(1, invalid),
                }
            }
            Event::ScopedEnd => {
                let scoped = std::mem::take(&mut self.scoped);
                let (kept, items, rejected) =
                    scoped.finish(|message, scope| *S::scoped(message).header = scope);
                self.group.items += items;
                self.group.rejected.merge(rejected);
                if let Some(kept) = kept.and_then(S::non_empty_scoped) {
                    S::group(&mut self.group.message).children.push(kept);
                }
            }
            Event::ResourceSchemaUrl(url) => *S::group(&mut self.group.message).schema_url = url,
            Event::ScopeSchemaUrl(url) => *S::scoped(&mut self.scoped.message).schema_url = url,
        }
    }
}

/// Decodes one part after checking its depth.
fn one<M: DeserializeOwned>(
    raw: &RawValue,
    kind: Kind,
    part: Part,
    max_depth: usize,
) -> Result<M, InvalidSpan> {
    message_cost(raw.get(), kind, max_depth).map_err(|error| error.invalid(part, max_depth))?;
    message(raw.get()).map_err(|error| part.undecodable(without_values(&error)))
}

/// What is wrong with a refused part, without the value at fault: serde quotes
/// it (`invalid type: string "ann@example.com", expected a boolean`), it may be a
/// private attribute's, and the refusal is logged. Its kind, what was expected and
/// where are kept.
fn without_values(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match unexpected_value(&message) {
        Some((prefix, kind, rest)) => format!("{prefix}{kind}{rest}"),
        None => message,
    }
}

/// The prefix, the kind of the unexpected value (`string`, `integer`) and the rest
/// of a serde "invalid type" or "invalid value" message.
fn unexpected_value(message: &str) -> Option<(&'static str, &str, &str)> {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // The expectation comes from the types, never from the request, so the
            // last one is the real one whatever the value holds.
            let at = rest.rfind(", expected ")?;
            let unexpected = &rest[..at];
            let kind = unexpected
                .split(['"', '`'])
                .next()
                .unwrap_or_default()
                .trim();
            return Some((prefix, kind, &rest[at..]));
        }
    }
    None
}

/// One message, read once more with defaults written out if refused (see the
/// module's documentation).
fn message<M: DeserializeOwned>(text: &str) -> Result<M, serde_json::Error> {
    let error = match serde_json::from_str(text) {
        Ok(message) => return Ok(message),
        Err(error) => error,
    };
    let Ok(mut value) = serde_json::from_str::<Value>(text) else {
        return Err(error);
    };
    write_defaults(&mut value, "");
    serde_json::from_value(value).map_err(|_| error)
}

/// Drops `null` members and adds the members the generated types require, for the
/// message `value` found under member `field` (every element of a repeated field
/// is found under its name). Parts are checked for depth before they are read, and
/// serde_json caps nesting at 128 levels, which bounds the recursion.
fn write_defaults(value: &mut Value, field: &str) {
    match value {
        Value::Array(items) => {
            for item in items {
                write_defaults(item, field);
            }
        }
        Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            // Members that are required by the generated types, as strings and as arrays.
            let (strings, arrays): (&[&str], &[&str]) = match field {
                "arrayValue" | "kvlistValue" => (&[], &["values"]),
                "entityRefs" => (&["schemaUrl", "type"], &["idKeys", "descriptionKeys"]),
                _ => (&[], &[]),
            };
            for &name in strings {
                members
                    .entry(name)
                    .or_insert_with(|| Value::String(String::new()));
            }
            for &name in arrays {
                members
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()));
            }
            for (name, member) in members.iter_mut() {
                write_defaults(member, name);
            }
        }
        _ => {}
    }
}

/// What decoding one JSON part takes: kept in the decoded message, and held only
/// while it is decoded (serde buffers each attribute value whole before reading it,
/// and a part refused as it is is read again whole as a `Value`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct JsonCost {
    kept: usize,
    transient: usize,
}

/// Deepest JSON nesting read in one part, as serde_json reads it.
const MAX_JSON_NESTING: usize = 128;
/// What serde holds per value buffered: the value and its place in a list or map.
const BUFFERED_VALUE: usize = 64;
/// What a part read again as a `Value` (see [`message`]) holds per value: the
/// value, with room for as many more in the vector it grew in...
const REREAD_VALUE: usize = 2 * size_of::<Value>();
/// ...per member, its key and value in a map node at least half full...
const REREAD_MEMBER: usize = 2 * (size_of::<String>() + size_of::<Value>());
/// ...and per object, the first node of its map: a B-tree leaf of 11 members.
const REREAD_OBJECT: usize = 11 * (size_of::<String>() + size_of::<Value>()) + 64;

/// What a value found in a JSON part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A message of this kind.
    Message(Kind),
    /// A vector of these messages.
    Messages(Kind),
    /// A vector of strings.
    Strings,
    /// A field of a message that holds no message: strings take memory.
    Field,
    /// A member no message reads.
    Ignored,
}

impl Slot {
    fn of(child: Child) -> Self {
        match child {
            Child::Message(kind) => Slot::Message(kind),
            Child::Messages(kind) => Slot::Messages(kind),
            Child::Strings => Slot::Strings,
        }
    }

    /// What each element of an array in this slot holds.
    fn element(self) -> Slot {
        match self {
            Slot::Messages(kind) => Slot::Message(kind),
            Slot::Strings => Slot::Field,
            _ => Slot::Ignored,
        }
    }

    /// Bytes one element of an array in this slot takes in its vector.
    fn element_size(self) -> usize {
        match self {
            Slot::Messages(kind) => kind.size(),
            Slot::Strings => schema::STRING,
            _ => 0,
        }
    }
}

enum Frame {
    Object {
        kind: Option<Kind>,
        /// What the value after the current key holds.
        next: Slot,
        in_attribute: bool,
    },
    Array {
        slot: Slot,
        count: usize,
        in_attribute: bool,
    },
}

/// The memory that decoding `text` (one JSON value, already checked as JSON by
/// serde_json) as a `kind` takes, or why it will not be decoded.
fn message_cost(text: &str, kind: Kind, max_depth: usize) -> Result<JsonCost, ScanError> {
    let bytes = text.as_bytes();
    let mut cost = JsonCost::default();
    let mut longest_string = 0;
    let mut stack: Vec<Frame> = Vec::new();
    let mut depth = 0;
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_whitespace() || byte == b',' || byte == b':' {
            if byte == b',' {
                expect_key = matches!(stack.last(), Some(Frame::Object { .. }));
            }
            i += 1;
            continue;
        }
        if expect_key && byte == b'"' {
            let (key, end) = string_at(bytes, i);
            i = end;
            expect_key = false;
            cost.transient = cost
                .transient
                .saturating_add(REREAD_MEMBER + schema::allocation(key.len()));
            if let Some(Frame::Object { kind, next, .. }) = stack.last_mut() {
                let name = unescaped(key);
                *next = match kind.and_then(|k| k.json_field(&name)) {
                    Some(child) => Slot::of(child),
                    None if kind.is_some() => Slot::Field,
                    None => Slot::Ignored,
                };
            }
            continue;
        }
        if let Some(Frame::Array { count, .. }) = stack.last_mut()
            && !matches!(byte, b'}' | b']')
        {
            *count += 1;
        }
        let (slot, in_attribute) = match stack.last() {
            None => (Slot::Message(kind), false),
            Some(Frame::Object {
                next, in_attribute, ..
            }) => (*next, *in_attribute),
            Some(Frame::Array {
                slot, in_attribute, ..
            }) => (slot.element(), *in_attribute),
        };
        match byte {
            b'{' | b'[' => {
                if stack.len() >= MAX_JSON_NESTING {
                    return Err(ScanError::TooDeep);
                }
                // serde reads a message from an array of its fields in order too,
                // where neither its depth nor its memory would be seen here.
                // OTLP/JSON writes every message as an object.
                if byte == b'[' && matches!(slot, Slot::Message(_)) {
                    return Err(ScanError::Malformed(Malformed::new(
                        "a message written as an array: OTLP/JSON writes messages as objects",
                    )));
                }
                if in_attribute {
                    cost.transient = cost.transient.saturating_add(BUFFERED_VALUE);
                }
                let reread = if byte == b'{' { REREAD_OBJECT } else { 0 };
                cost.transient = cost.transient.saturating_add(REREAD_VALUE + reread);
                if byte == b'{' {
                    let kind = match slot {
                        Slot::Message(kind) => Some(kind),
                        _ => None,
                    };
                    if kind == Some(Kind::AnyValue) {
                        depth += 1;
                        if depth > max_depth {
                            return Err(ScanError::TooDeep);
                        }
                    }
                    stack.push(Frame::Object {
                        kind,
                        next: Slot::Ignored,
                        in_attribute: in_attribute || kind == Some(Kind::AnyValue),
                    });
                    expect_key = true;
                } else {
                    stack.push(Frame::Array {
                        slot,
                        count: 0,
                        in_attribute,
                    });
                }
                i += 1;
                continue;
            }
            b'}' | b']' => {
                match stack.pop() {
                    Some(Frame::Object {
                        kind: Some(Kind::AnyValue),
                        ..
                    }) => depth -= 1,
                    Some(Frame::Array { slot, count, .. }) => {
                        cost.kept = cost
                            .kept
                            .saturating_add(schema::vector(count, slot.element_size()));
                    }
                    _ => {}
                }
                expect_key = false;
                i += 1;
            }
            b'"' => {
                let (string, end) = string_at(bytes, i);
                i = end;
                let held = schema::allocation(string.len());
                longest_string = longest_string.max(held);
                if slot != Slot::Ignored {
                    cost.kept = cost.kept.saturating_add(held);
                }
                if in_attribute {
                    cost.transient = cost
                        .transient
                        .saturating_add(BUFFERED_VALUE.saturating_add(held));
                }
                cost.transient = cost
                    .transient
                    .saturating_add(REREAD_VALUE.saturating_add(held));
            }
            _ => {
                // A number or a literal.
                while i < bytes.len()
                    && !matches!(bytes[i], b',' | b'}' | b']')
                    && !bytes[i].is_ascii_whitespace()
                {
                    i += 1;
                }
                if in_attribute {
                    cost.transient = cost.transient.saturating_add(BUFFERED_VALUE);
                }
                cost.transient = cost.transient.saturating_add(REREAD_VALUE);
            }
        }
    }
    // serde quotes the value at fault in its error, at each of the two readings,
    // and `without_values` copies the message once more.
    cost.transient = cost
        .transient
        .saturating_add(longest_string.saturating_mul(3));
    Ok(cost)
}

/// The raw content of the string starting at `start` (its opening quote), and
/// the index after its closing quote.
fn string_at(bytes: &[u8], start: usize) -> (&[u8], usize) {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return (&bytes[start + 1..i], i + 1),
            _ => i += 1,
        }
    }
    (&bytes[(start + 1).min(bytes.len())..], bytes.len())
}

/// A key as serde reads it, escapes resolved.
fn unescaped(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    if !raw.contains(&b'\\') {
        return String::from_utf8_lossy(raw);
    }
    let quoted = [b"\"", raw, b"\""].concat();
    serde_json::from_slice::<String>(&quoted)
        .map(std::borrow::Cow::Owned)
        .unwrap_or_default()
}

/// The names of a signal's skeleton, as OTLP/JSON writes them.
#[derive(Clone, Copy)]
struct Names {
    groups: &'static str,
    scoped: &'static str,
    items: &'static str,
}

impl Names {
    fn of<S: Signal>() -> Self {
        Self {
            groups: S::GROUPS,
            scoped: S::SCOPED,
            items: S::ITEMS,
        }
    }
}

/// The members of the skeleton.
enum Key {
    Groups,
    Resource,
    Scoped,
    Scope,
    Items,
    SchemaUrl,
    Other,
}

/// Reads a member name as a [`Key`] of the signal `names` are of.
struct KeySeed(Names);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        let names = self.0;
        Ok(match name {
            "resource" => Key::Resource,
            "scope" => Key::Scope,
            "schemaUrl" => Key::SchemaUrl,
            _ if name == names.groups => Key::Groups,
            _ if name == names.scoped => Key::Scoped,
            _ if name == names.items => Key::Items,
            _ => Key::Other,
        })
    }
}

/// Which level of the skeleton a seed reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Request,
    Group,
    Scoped,
}

/// Reads the request object.
struct RequestSeed<'s, S>(&'s mut S, Names);

impl<'de, S: Sink<'de>> DeserializeSeed<'de> for RequestSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(ObjectVisitor {
            sink: self.0,
            names: self.1,
            level: Level::Request,
        })
    }
}

/// Reads one object of the skeleton at `level`.
struct ObjectVisitor<'s, S> {
    sink: &'s mut S,
    names: Names,
    level: Level,
}

impl<'de, S: Sink<'de>> Visitor<'de> for ObjectVisitor<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(self.names))? {
            match (self.level, key) {
                (Level::Request, Key::Groups) => map.next_value_seed(ListSeed {
                    sink: &mut *self.sink,
                    names: self.names,
                    level: Level::Group,
                })?,
                (Level::Group, Key::Resource) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.sink.event(Event::Resource(raw));
                }
                (Level::Group, Key::Scoped) => map.next_value_seed(ListSeed {
                    sink: &mut *self.sink,
                    names: self.names,
                    level: Level::Scoped,
                })?,
                (Level::Scoped, Key::Scope) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.sink.event(Event::Scope(raw));
                }
                (Level::Scoped, Key::Items) => map.next_value_seed(ItemsSeed(&mut *self.sink))?,
                (Level::Group, Key::SchemaUrl) => {
                    if let Some(url) = map.next_value::<Option<String>>()? {
                        self.sink.event(Event::ResourceSchemaUrl(url));
                    }
                }
                (Level::Scoped, Key::SchemaUrl) => {
                    if let Some(url) = map.next_value::<Option<String>>()? {
                        self.sink.event(Event::ScopeSchemaUrl(url));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a list (or `null`) of skeleton objects at `level`.
struct ListSeed<'s, S> {
    sink: &'s mut S,
    names: Names,
    level: Level,
}

impl<'de, S: Sink<'de>> DeserializeSeed<'de> for ListSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: Sink<'de>> Visitor<'de> for ListSeed<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ObjectSeed {
                sink: &mut *self.sink,
                names: self.names,
                level: self.level,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One skeleton object (or `null`), telling the sink where it starts and ends.
struct ObjectSeed<'s, S> {
    sink: &'s mut S,
    names: Names,
    level: Level,
}

impl<'de, S: Sink<'de>> DeserializeSeed<'de> for ObjectSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: Sink<'de>> Visitor<'de> for ObjectSeed<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let (start, end) = match self.level {
            Level::Scoped => (Event::ScopedStart, Event::ScopedEnd),
            _ => (Event::GroupStart, Event::GroupEnd),
        };
        self.sink.event(start);
        deserializer.deserialize_map(ObjectVisitor {
            sink: &mut *self.sink,
            names: self.names,
            level: self.level,
        })?;
        self.sink.event(end);
        Ok(())
    }
}

/// A list (or `null`) of items, each kept as raw text.
struct ItemsSeed<'s, S>(&'s mut S);

impl<'de, S: Sink<'de>> DeserializeSeed<'de> for ItemsSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: Sink<'de>> Visitor<'de> for ItemsSeed<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            self.0.event(Event::Item(raw));
        }
        Ok(())
    }
}

#[cfg(test)]
mod value_free_tests {
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    use super::*;

    #[test]
    fn refusals_do_not_quote_the_values_at_fault() {
        for (value, kind) in [
            (r#"{"boolValue": "secret-a, expected x"}"#, "string"),
            (r#"{"boolValue": 12345678}"#, "integer"),
            (r#"{"doubleValue": "secret-b"}"#, "string"),
            (r#"{"stringValue": 1.25}"#, "floating point"),
            (r#"{"stringValue": true}"#, "boolean"),
        ] {
            let text = format!("{{\n\"key\": \"email\",\n\"value\": {value}\n}}");
            let error = message::<KeyValue>(&text).unwrap_err();
            let told = without_values(&error);
            for secret in ["secret-a", "secret-b", "12345678", "1.25", "true"] {
                assert!(!told.contains(secret), "{told}");
            }
            assert!(
                told.starts_with(&format!("invalid type: {kind}, expected")),
                "{told}"
            );
            assert!(told.contains("at line 3 column"), "{told}");
        }
    }
}
