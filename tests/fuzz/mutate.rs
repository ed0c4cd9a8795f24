//! Mutations: of bytes (any input), of protobuf fields (OTLP protobuf), and of
//! JSON values (OTLP/JSON, contexts, flag sets, rollout files read as values).

use serde_json::{Map, Value, json};

use super::harness::Rng;

/// Largest input a mutation leaves.
pub const MAX_INPUT: usize = 64 * 1024;

/// Text that the messages about an input must never repeat: planted in values.
pub const MARKER: &str = "s3cr3t";

/// Interesting text: extreme numbers, escapes, invalid UTF-8, YAML's specials.
const TEXT: &[&[u8]] = &[
    b"0",
    b"-0",
    b"-1",
    b"1e308",
    b"1e309",
    b"-1e400",
    b"5e-324",
    b"1e-400",
    b"9007199254740993",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"4294967296",
    b"2147483648",
    b"NaN",
    b"Infinity",
    b"\"NaN\"",
    b"\"-Infinity\"",
    b"0x1A",
    b"1.",
    b".5",
    b"true",
    b"null",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\uffff\"",
    b"\\",
    b"\"",
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x00",
    b"\x1b[31m",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xae",
    b"&a [*a, *a, *a]",
    b"*a",
    b"<<: *a",
    b"!!binary AAAA",
    b"!!float .inf",
    b"!<tag:yaml.org,2002:str>",
    b"\n---\n",
    b"\n...\n",
    b"? ",
    b"|\n  ",
    b">-\n  ",
    b"%YAML 1.1\n",
    b"'",
    b"\t",
    b"~",
    b"0o777",
    b".nan",
    b"-.inf",
    b"2026-11-01T00:00:00Z",
];

/// Interesting protobuf bytes: varints at their limits, lengths past the end,
/// tags of every wire type, field number 0 and the largest.
const PROTOBUF: &[&[u8]] = &[
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x00",
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x40",
    b"\x0a\x00",
    b"\x12\x00",
    b"\x0b",
    b"\x0c",
    b"\x0e",
    b"\x0f",
    b"\x00",
    b"\x02\x00",
    b"\xf8\xff\xff\xff\x0f\x01",
    b"\xfa\xff\xff\xff\x0f\x00",
    b"\x08\x01",
    b"\x11\x00\x00\x00\x00\x00\x00\xf0\x7f",
    b"\x15\x00\x00\xc0\x7f",
    b"\x2a\x02\xc3\x28",
    b"\x0a\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
];

/// Applies one to eight byte-level mutations to `input`: bits flipped, bytes set,
/// ranges cut, repeated or spliced in from another seed, tokens and interesting
/// values inserted.
pub fn bytes(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], tokens: &[&str]) {
    for _ in 0..=rng.below(8) {
        let len = input.len();
        match rng.below(12) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = *rng.pick(b"\x00\xff\x7f\x80\x01\"{}[],:\\\n -0");
            }
            2 if len > 0 => {
                let from = rng.below(len);
                let to = (from + rng.length(len)).min(len);
                input.drain(from..to);
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.length(len)).min(len);
                let piece = input[from..to].to_vec();
                let at = rng.below(input.len() + 1);
                let most = (MAX_INPUT / piece.len()).clamp(1, 64);
                let times = if rng.one_in(8) {
                    1 + rng.below(most)
                } else {
                    1
                };
                input.splice(at..at, piece.repeat(times));
            }
            4 if len > 0 => input.truncate(rng.below(len)),
            5 if !pool.is_empty() => {
                let other = rng.pick(pool);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.length(other.len())).min(other.len());
                    let at = rng.below(len + 1);
                    if rng.one_in(2) {
                        input.truncate(at);
                        input.extend_from_slice(&other[from..]);
                    } else {
                        input.splice(at..at, other[from..to].iter().copied());
                    }
                }
            }
            6 if !tokens.is_empty() => {
                let token = rng.pick(tokens).as_bytes().to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, token);
            }
            7 => {
                let value = rng.pick(TEXT).to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, value);
            }
            8 => {
                let value = rng.pick(PROTOBUF).to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, value);
            }
            9 => {
                let at = rng.below(len + 1);
                let run = long_text(rng).into_bytes();
                input.splice(at..at, run);
            }
            10 => {
                let shapes: [(&[u8], &[u8]); 4] = [
                    (b"[", b"]"),
                    (b"{\"a\":", b"}"),
                    (b"- ", b""),
                    (b"{a: ", b"}"),
                ];
                let (open, close) = *rng.pick(&shapes);
                let depth = 1 + rng.below(300);
                let at = rng.below(len + 1);
                let end = at + rng.below(len - at + 1);
                let mut nested = open.repeat(depth);
                nested.extend_from_slice(&input[at..end]);
                nested.extend(close.repeat(depth));
                input.splice(at..end, nested);
            }
            _ => {
                let at = rng.below(len + 1);
                let random: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, random);
            }
        }
        input.truncate(MAX_INPUT);
    }
}

/// A run of text, mostly long: a marker, a repeated letter, or many characters.
pub fn long_text(rng: &mut Rng) -> String {
    let length = *rng.pick(&[41, 64, 65, 100, 300, 1_000, 10_000]);
    match rng.below(3) {
        0 => format!("{MARKER}{}", "x".repeat(length)),
        1 => "é".repeat(length),
        _ => (0..length)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect(),
    }
}

/// A protobuf field as read on the wire.
#[derive(Debug, Clone)]
enum Field {
    Varint(u64, u64),
    Fixed64(u64, u64),
    Fixed32(u64, u32),
    Bytes(u64, Vec<u8>),
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, or `None` when the bytes are not one.
fn read_fields(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let number = key >> 3;
        if number == 0 {
            return None;
        }
        fields.push(match key & 7 {
            0 => Field::Varint(number, read_varint(bytes, &mut at)?),
            1 => {
                let raw = bytes.get(at..at + 8)?;
                at += 8;
                Field::Fixed64(number, u64::from_le_bytes(raw.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let raw = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                Field::Bytes(number, raw.to_vec())
            }
            5 => {
                let raw = bytes.get(at..at + 4)?;
                at += 4;
                Field::Fixed32(number, u32::from_le_bytes(raw.try_into().ok()?))
            }
            _ => return None,
        });
    }
    Some(fields)
}

/// The payloads of the length-delimited fields numbered `number` of a message,
/// or `None` when the bytes do not read as fields.
pub fn message_fields(bytes: &[u8], number: u64) -> Option<Vec<Vec<u8>>> {
    let fields = read_fields(bytes)?;
    Some(
        fields
            .into_iter()
            .filter_map(|field| match field {
                Field::Bytes(n, payload) if n == number => Some(payload),
                _ => None,
            })
            .collect(),
    )
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        match field {
            Field::Varint(number, value) => {
                write_varint(&mut out, number << 3);
                write_varint(&mut out, *value);
            }
            Field::Fixed64(number, value) => {
                write_varint(&mut out, number << 3 | 1);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Field::Bytes(number, bytes) => {
                write_varint(&mut out, number << 3 | 2);
                write_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Field::Fixed32(number, value) => {
                write_varint(&mut out, number << 3 | 5);
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
    out
}

/// Mutates one field somewhere in a protobuf message, keeping the framing of the
/// messages around it: dropped, repeated, retyped, given an extreme value, or an
/// unknown field added beside it. Bytes that do not read as a message get byte
/// mutations instead.
pub fn protobuf(rng: &mut Rng, message: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    protobuf_at(rng, message, pool, 0)
}

fn protobuf_at(rng: &mut Rng, message: &[u8], pool: &[Vec<u8>], depth: usize) -> Vec<u8> {
    let Some(mut fields) = read_fields(message).filter(|f| !f.is_empty()) else {
        let mut bytes = message.to_vec();
        self::bytes(rng, &mut bytes, pool, &[]);
        return bytes;
    };
    let at = rng.below(fields.len());
    if let Field::Bytes(number, inner) = &fields[at]
        && depth < 24
        && !rng.one_in(4)
        && read_fields(inner).is_some_and(|f| !f.is_empty())
    {
        let number = *number;
        let inner = protobuf_at(rng, inner, pool, depth + 1);
        fields[at] = Field::Bytes(number, inner);
        return write_fields(&fields);
    }
    let number = match &fields[at] {
        Field::Varint(n, _) | Field::Fixed64(n, _) | Field::Fixed32(n, _) | Field::Bytes(n, _) => {
            *n
        }
    };
    let other = *rng.pick(&[1, 2, 3, 4, 5, 6, 7, 9, 15, 16, 17, 100, (1 << 29) - 1]);
    match rng.below(9) {
        0 => {
            fields.remove(at);
        }
        1 => {
            let copy = fields[at].clone();
            let size = write_fields(std::slice::from_ref(&copy)).len();
            for _ in 0..=rng.length((MAX_INPUT / size).min(200)) {
                fields.insert(at, copy.clone());
            }
        }
        2 => fields[at] = Field::Varint(number, extreme(rng)),
        3 => fields[at] = Field::Fixed64(number, extreme(rng)),
        4 => fields[at] = Field::Fixed32(number, extreme(rng) as u32),
        5 => {
            let bytes = match rng.below(4) {
                0 => Vec::new(),
                1 => rng.pick(PROTOBUF).to_vec(),
                2 => long_text(rng).into_bytes(),
                _ => b"\xc3\x28\xff".to_vec(),
            };
            fields[at] = Field::Bytes(number, bytes);
        }
        6 => {
            let unknown = match rng.below(4) {
                0 => Field::Varint(other, extreme(rng)),
                1 => Field::Fixed64(other, extreme(rng)),
                2 => Field::Fixed32(other, extreme(rng) as u32),
                _ => Field::Bytes(other, long_text(rng).into_bytes()),
            };
            fields.insert(at, unknown);
        }
        7 => {
            let to = rng.below(fields.len());
            fields.swap(at, to);
        }
        _ => {
            // Another seed's message in place of this field's value.
            let source = rng.pick(pool);
            let bytes = read_fields(source)
                .and_then(|f| {
                    f.into_iter().find_map(|f| match f {
                        Field::Bytes(_, b) => Some(b),
                        _ => None,
                    })
                })
                .unwrap_or_default();
            fields[at] = Field::Bytes(number, bytes);
        }
    }
    let mut out = write_fields(&fields);
    out.truncate(MAX_INPUT);
    out
}

/// A number at or near a limit of its type.
pub fn extreme(rng: &mut Rng) -> u64 {
    *rng.pick(&[
        0,
        1,
        2,
        0x7f,
        0x80,
        u64::from(u32::MAX),
        1 << 32,
        i64::MAX as u64,
        1 << 63,
        u64::MAX,
        u64::MAX - 1,
        // A day and a bit, in nanoseconds: just over the longest span accepted.
        86_400_000_000_001,
        1_700_000_000_000_000_000,
        f64::NAN.to_bits(),
        f64::INFINITY.to_bits(),
    ])
}

/// A JSON scalar at an edge: extreme numbers, empty and long strings, the marker.
pub fn scalar(rng: &mut Rng) -> Value {
    match rng.below(20) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1e308),
        7 => json!(-0.0),
        8 => json!(5e-324),
        9 => json!(9_007_199_254_740_993u64),
        10 => json!(1.5),
        11 => json!(""),
        12 => json!(format!("{MARKER}-{}", rng.below(1000))),
        13 => json!(long_text(rng)),
        14 => json!(*rng.pick(&["NaN", "Infinity", "-Infinity", "1e400", "0x10", " 12 "])),
        15 => json!(*rng.pick(&["\u{0}", "ü😀", "\u{202e}", "\u{feff}", "a\nb", "\u{1b}[31m"])),
        16 => json!(*rng.pick(&["2.0.0", "v1.2", "1.0.0-alpha+b", "2026-11-01T00:00:00Z"])),
        17 => json!(*rng.pick(&["5b8efff798038103d269b633813fc60c", "00000000", "zz"])),
        18 => json!(rng.next_u64() as i64),
        _ => json!(f64::from_bits(rng.next_u64())),
    }
}

/// A JSON value at most `depth` deep whose members are named from `keys`.
pub fn value(rng: &mut Rng, depth: usize, keys: &[&str]) -> Value {
    if depth == 0 || rng.one_in(3) {
        return scalar(rng);
    }
    let width = rng.length(6);
    if rng.one_in(2) {
        Value::Array((0..width).map(|_| value(rng, depth - 1, keys)).collect())
    } else {
        Value::Object(
            (0..width)
                .map(|_| (key(rng, keys), value(rng, depth - 1, keys)))
                .collect(),
        )
    }
}

/// A member name: one of `keys` mostly, else odd.
pub fn key(rng: &mut Rng, keys: &[&str]) -> String {
    if !keys.is_empty() && !rng.one_in(6) {
        return rng.pick(keys).to_string();
    }
    match rng.below(4) {
        0 => String::new(),
        1 => long_text(rng),
        2 => format!("{}.{}", rng.pick(keys), rng.below(3)),
        _ => rng
            .pick(&["$ref", "0", "ü", "a.b.c", "\u{0}", "__proto__"])
            .to_string(),
    }
}

/// Changes one node of `root`: replaced by an edge value or a generated tree,
/// a member dropped or added, an item repeated, wrapped deep, retyped.
pub fn json(rng: &mut Rng, root: &mut Value, keys: &[&str]) {
    let node = pick(rng, root);
    match rng.below(10) {
        0 => *node = scalar(rng),
        1 => *node = value(rng, 4, keys),
        2 => match node {
            Value::Object(members) if !members.is_empty() && rng.one_in(2) => {
                let name = members.keys().nth(rng.below(members.len())).cloned();
                if let Some(name) = name {
                    members.remove(&name);
                }
            }
            Value::Object(members) => {
                members.insert(key(rng, keys), value(rng, 3, keys));
            }
            other => *other = Value::Object(Map::new()),
        },
        3 => match node {
            Value::Array(items) if !items.is_empty() => {
                let item = items[rng.below(items.len())].clone();
                // As many as keep the input near its limit.
                let size = serde_json::to_string(&item).map_or(1, |text| text.len());
                let most = (MAX_INPUT / size.max(1)).clamp(1, 5_000);
                let times = if rng.one_in(4) { rng.length(most) } else { 1 };
                for _ in 0..times {
                    items.push(item.clone());
                }
            }
            other => *other = Value::Array(vec![other.clone()]),
        },
        4 => {
            let depth = 1 + rng.below(200);
            let name = key(rng, keys);
            let mut nested = node.take();
            for _ in 0..depth {
                nested = if rng.one_in(2) {
                    Value::Array(vec![nested])
                } else {
                    Value::Object(Map::from_iter([(name.clone(), nested)]))
                };
            }
            *node = nested;
        }
        5 => {
            *node = match node.take() {
                Value::Number(n) => Value::String(n.to_string()),
                Value::String(s) => s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Bool(s.is_empty()), Value::Number),
                Value::Bool(b) => json!(u8::from(b)),
                Value::Array(items) => Value::Object(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v))
                        .collect(),
                ),
                Value::Object(members) => Value::Array(members.into_values().collect()),
                Value::Null => json!({}),
            }
        }
        6 => *node = Value::Null,
        7 => *node = json!(format!("{MARKER}:{}", long_text(rng))),
        8 => {
            if let Value::Object(members) = node {
                // The same member again under a near name: a typo.
                if let Some((name, value)) = members
                    .iter()
                    .nth(rng.below(members.len().max(1)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                {
                    let mut typo = name;
                    let places: Vec<usize> = typo
                        .char_indices()
                        .map(|(i, _)| i)
                        .chain([typo.len()])
                        .collect();
                    typo.insert(*rng.pick(&places), 'x');
                    members.insert(typo, value);
                }
            }
        }
        _ => *node = value(rng, 2, keys),
    }
}

/// A node of `root` reached by a random walk down from it.
pub fn pick<'v>(rng: &mut Rng, node: &'v mut Value) -> &'v mut Value {
    let len = match node {
        Value::Object(members) => members.len(),
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if len == 0 || rng.one_in(4) {
        return node;
    }
    let at = rng.below(len);
    match node {
        Value::Object(members) => pick(rng, members.values_mut().nth(at).expect("in range")),
        Value::Array(items) => pick(rng, &mut items[at]),
        _ => unreachable!("only objects and arrays have children"),
    }
}
