//! OTLP protobuf read by hand down to each resource, scope and item (span or log
//! record), which prost then decodes one at a time: the memory of each is estimated from its bytes
//! first, and one that cannot be decoded, or nests too deep, is left out alone.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::schema::{self, Child, Kind};
use super::{Estimate, Group, Malformed, Part, Rejected, ScanError, Signal};
use crate::ingest::extract::InvalidSpan;

/// A field's value as encoded.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

/// The fields of one message: (number, value), until the end or broken encoding.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed::new("invalid varint"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if len > self.rest.len() {
            return Err(Malformed::new("a field runs past the end of its message"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = self.varint()?;
            let number = u32::try_from(key >> 3)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Malformed::new("invalid field number"))?;
            let wire = match key & 7 {
                0 => {
                    self.varint()?;
                    Wire::Scalar
                }
                1 => {
                    self.take(8)?;
                    Wire::Scalar
                }
                2 => {
                    let len = usize::try_from(self.varint()?)
                        .map_err(|_| Malformed::new("invalid length"))?;
                    Wire::Bytes(self.take(len)?)
                }
                5 => {
                    self.take(4)?;
                    Wire::Scalar
                }
                other => return Err(Malformed(format!("wire type {other} is not used by OTLP"))),
            };
            Ok((number, wire))
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// The heap memory that decoding `bytes` as a `kind` takes, or why it will not be
/// decoded. `depth` counts the attribute values (AnyValue) around it.
pub(super) fn message_cost(
    bytes: &[u8],
    kind: Kind,
    depth: usize,
    max_depth: usize,
) -> Result<usize, ScanError> {
    let depth = depth + usize::from(kind == Kind::AnyValue);
    if depth > max_depth {
        return Err(ScanError::TooDeep);
    }
    let mut cost = 0usize;
    let mut counts = [(0usize, 0usize); schema::MAX_FIELDS];
    for field in Fields::new(bytes) {
        let (number, wire) = field.map_err(ScanError::Malformed)?;
        cost = cost.saturating_add(match (kind.field(number), wire) {
            (Some((_, Child::Message(child))), Wire::Bytes(inner)) => {
                message_cost(inner, child, depth, max_depth)?
            }
            (Some((slot, Child::Messages(child))), Wire::Bytes(inner)) => {
                counts[slot] = (counts[slot].0 + 1, child.size());
                message_cost(inner, child, depth, max_depth)?
            }
            (Some((slot, Child::Strings)), Wire::Bytes(inner)) => {
                counts[slot] = (counts[slot].0 + 1, schema::STRING);
                schema::allocation(inner.len())
            }
            (Some(_), Wire::Scalar) => {
                return Err(ScanError::Malformed(Malformed(format!(
                    "field {number} is a scalar where a message or string belongs"
                ))));
            }
            // Strings and bytes; unknown fields too, which prost skips.
            (None, Wire::Bytes(inner)) => schema::allocation(inner.len()),
            (None, Wire::Scalar) => 0,
        });
    }
    Ok(counts.iter().fold(cost, |cost, &(count, size)| {
        cost.saturating_add(schema::vector(count, size))
    }))
}

/// A skeleton field that must hold bytes.
fn bytes_of(number: u32, wire: Wire<'_>) -> Result<&[u8], Malformed> {
    match wire {
        Wire::Bytes(bytes) => Ok(bytes),
        Wire::Scalar => Err(Malformed(format!(
            "field {number} is a scalar where a message or string belongs"
        ))),
    }
}

/// What decoding `body` as a request of signal `S` will take, without decoding
/// anything.
pub(super) fn estimate<S: Signal>(body: &[u8], max_depth: usize) -> Result<Estimate, Malformed> {
    let mut estimate = Estimate::default();
    let mut groups = 0;
    // The longest resource, scope or item: prost holds a second copy of each
    // string or bytes field while it decodes it, and parts are decoded one at a
    // time, so this bounds that copy.
    let mut longest_part = 0;
    for field in Fields::new(body) {
        let (number, wire) = field?;
        if number != 1 {
            continue;
        }
        groups += 1;
        let mut scoped = 0;
        for field in Fields::new(bytes_of(number, wire)?) {
            let (number, wire) = field?;
            match number {
                1 => {
                    let bytes = bytes_of(number, wire)?;
                    longest_part = longest_part.max(bytes.len());
                    estimate.add(message_cost(bytes, Kind::Resource, 0, max_depth).ok());
                }
                2 => {
                    scoped += 1;
                    let bytes = bytes_of(number, wire)?;
                    estimate_scoped::<S>(bytes, max_depth, &mut estimate, &mut longest_part)?;
                }
                3 => estimate.add(Some(schema::allocation(bytes_of(number, wire)?.len()))),
                // A field OTLP does not define (yet), of any wire type: prost skips it.
                _ => {}
            }
        }
        estimate.add(Some(schema::vector(scoped, size_of::<S::Scoped>())));
    }
    estimate.add(Some(schema::vector(groups, size_of::<S::Group>())));
    estimate.add(Some(longest_part));
    Ok(estimate)
}

fn estimate_scoped<S: Signal>(
    bytes: &[u8],
    max_depth: usize,
    estimate: &mut Estimate,
    longest_part: &mut usize,
) -> Result<(), Malformed> {
    let mut items = 0;
    for field in Fields::new(bytes) {
        let (number, wire) = field?;
        match number {
            1 => {
                let bytes = bytes_of(number, wire)?;
                *longest_part = (*longest_part).max(bytes.len());
                estimate.add(message_cost(bytes, Kind::Scope, 0, max_depth).ok());
            }
            2 => {
                items += 1;
                let bytes = bytes_of(number, wire)?;
                *longest_part = (*longest_part).max(bytes.len());
                estimate.add(message_cost(bytes, S::ITEM, 0, max_depth).ok());
            }
            3 => estimate.add(Some(schema::allocation(bytes_of(number, wire)?.len()))),
            // As in the groups above: prost skips fields it does not know.
            _ => {}
        }
    }
    estimate.add(Some(schema::vector(items, S::ITEM.size())));
    Ok(())
}

/// Decodes `body`, each item (span, log record) alone: items that cannot be
/// decoded or nest deeper than `max_depth`, and every item under such a resource
/// or scope, are left out and counted in the returned [`Rejected`].
pub(super) fn decode<S: Signal>(
    body: &[u8],
    max_depth: usize,
) -> Result<(S::Request, Rejected), Malformed> {
    let mut request = S::Request::default();
    let mut rejected = Rejected::default();
    for field in Fields::new(body) {
        let (number, wire) = field?;
        if number != 1 {
            continue;
        }
        let mut group = Group::<S::Group, Resource>::default();
        for field in Fields::new(bytes_of(number, wire)?) {
            let (number, wire) = field?;
            match number {
                1 => group.header(one::<Resource>(
                    bytes_of(number, wire)?,
                    Kind::Resource,
                    Part::Resource,
                    max_depth,
                )),
                2 => {
                    let (scoped, items, scoped_rejected) =
                        decode_scoped::<S>(bytes_of(number, wire)?, max_depth)?;
                    group.items += items;
                    group.rejected.merge(scoped_rejected);
                    if let Some(scoped) = scoped {
                        S::group(&mut group.message).children.push(scoped);
                    }
                }
                3 => *S::group(&mut group.message).schema_url = text(bytes_of(number, wire)?)?,
                _ => {}
            }
        }
        let (kept, _, group_rejected) = group.finish(|message, resource| {
            *S::group(message).header = resource;
        });
        rejected.merge(group_rejected);
        S::groups(&mut request).extend(kept.and_then(S::non_empty_group));
    }
    Ok((request, rejected))
}

/// One scope's items: the kept ones (if any), how many there were, and the
/// rejected ones.
fn decode_scoped<S: Signal>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<(Option<S::Scoped>, u64, Rejected), Malformed> {
    let mut group = Group::<S::Scoped, InstrumentationScope>::default();
    for field in Fields::new(bytes) {
        let (number, wire) = field?;
        match number {
            1 => group.header(one::<InstrumentationScope>(
                bytes_of(number, wire)?,
                Kind::Scope,
                Part::Scope,
                max_depth,
            )),
            2 => {
                group.items += 1;
                match one::<S::Item>(bytes_of(number, wire)?, S::ITEM, S::PART, max_depth) {
                    Ok(item) => S::scoped(&mut group.message).children.push(item),
                    Err(invalid) => group.rejected.add(1, invalid),
                }
            }
            3 => *S::scoped(&mut group.message).schema_url = text(bytes_of(number, wire)?)?,
            _ => {}
        }
    }
    let items = group.items;
    let (scoped, _, rejected) = group.finish(|message, scope| *S::scoped(message).header = scope);
    Ok((scoped.and_then(S::non_empty_scoped), items, rejected))
}

/// Decodes one message after checking its depth.
fn one<M: Message + Default>(
    bytes: &[u8],
    kind: Kind,
    part: Part,
    max_depth: usize,
) -> Result<M, InvalidSpan> {
    message_cost(bytes, kind, 0, max_depth).map_err(|error| error.invalid(part, max_depth))?;
    M::decode(bytes).map_err(|error| part.undecodable(error.to_string()))
}

fn text(bytes: &[u8]) -> Result<String, Malformed> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed::new("a schema URL is not UTF-8"))
}
