//! flagd's custom operations, with their arguments already evaluated. Misuse gives
//! null, as flagd's specification says.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::value::{js_number, to_js_string};
use crate::flags::attribute::{Env, TARGETING_KEY};
use crate::flags::bucket::murmur3_32;
use crate::flags::semver::SemVer;

/// Largest total weight `fractional` accepts (a signed 32-bit integer).
const MAX_TOTAL_WEIGHT: u64 = i32::MAX as u64;

/// `fractional`: `[bucketBy?, [variant, weight?]...]`. Without a string first, the
/// bucketing value is the flag key + the targeting key (which must be there).
/// Variants are strings, numbers, booleans or null; weights are whole numbers (1 when
/// absent, negative ones count as 0). Null when the arguments are not that, or when
/// the weights add up to zero.
pub fn fractional(args: &[Cow<'_, Value>], env: &Env<'_>) -> Value {
    let (bucket_by, buckets): (Cow<'_, str>, &[Cow<'_, Value>]) = match args.first().map(|a| &**a) {
        None => return Value::Null,
        Some(Value::String(s)) => (Cow::Borrowed(s.as_str()), &args[1..]),
        Some(_) => {
            let key = env.get(TARGETING_KEY).filter(|k| js_truthy(k));
            let Some(key) = key else {
                return Value::Null;
            };
            (
                Cow::Owned(format!("{}{}", env.flag_key, to_js_string(key))),
                args,
            )
        }
    };
    let mut entries = Vec::with_capacity(buckets.len());
    let mut total: u64 = 0;
    for bucket in buckets {
        let Value::Array(entry) = &**bucket else {
            return Value::Null;
        };
        let variant = match entry.first() {
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
            _ => return Value::Null,
        };
        let weight = match entry.as_slice() {
            [_] => 1,
            [_, w] => match whole_number(w) {
                Some(w) => w.max(0) as u64,
                None => return Value::Null,
            },
            _ => return Value::Null,
        };
        // Saturating: three weights near 2^63 must not wrap below the limit.
        total = total.saturating_add(weight);
        entries.push((variant, weight));
    }
    if total > MAX_TOTAL_WEIGHT {
        return Value::Null;
    }
    let hash = murmur3_32(&[bucket_by.as_bytes()], 0) as u64;
    let bucket = (hash * total) >> 32;
    let mut end = 0;
    for (variant, weight) in entries {
        end += weight;
        if end > bucket {
            return variant.clone();
        }
    }
    Value::Null
}

/// JavaScript's own truthiness (where, unlike JsonLogic's, an empty array is true):
/// flagd tests the targeting key with it.
fn js_truthy(value: &Value) -> bool {
    matches!(value, Value::Array(_)) || super::value::truthy(value)
}

fn whole_number(value: &Value) -> Option<i64> {
    let f = value.as_f64()?;
    (f.fract() == 0.0 && f.is_finite()).then_some(f as i64)
}

/// `sem_ver`: `[version, operator, version]`, operators `=`, `!=`, `<`, `<=`, `>`,
/// `>=`, `^` (same major) and `~` (same major and minor). Null on anything else.
pub fn sem_ver(args: &[Cow<'_, Value>]) -> Value {
    let [left, operator, right] = args else {
        return Value::Null;
    };
    let (left, right) = (version_text(left), version_text(right));
    let (Some(a), Some(b)) = (SemVer::parse(&left), SemVer::parse(&right)) else {
        return Value::Null;
    };
    let order = a.compare(&b);
    Value::Bool(match to_js_string(operator).as_str() {
        "=" => order == Ordering::Equal,
        "!=" => order != Ordering::Equal,
        "<" => order == Ordering::Less,
        "<=" => order != Ordering::Greater,
        ">" => order == Ordering::Greater,
        ">=" => order != Ordering::Less,
        "^" => a.major == b.major,
        "~" => a.major == b.major && a.minor == b.minor,
        _ => return Value::Null,
    })
}

/// Versions are read from their text, numbers as JavaScript prints them.
fn version_text(value: &Value) -> String {
    match value {
        Value::Number(n) => js_number(n.as_f64().unwrap_or(f64::NAN)),
        other => to_js_string(other),
    }
}

/// `starts_with` / `ends_with`: exactly two strings, else null.
pub fn string_comparison(starts: bool, args: &[Cow<'_, Value>]) -> Value {
    match args {
        [a, b] => match (&**a, &**b) {
            (Value::String(text), Value::String(affix)) => Value::Bool(if starts {
                text.starts_with(affix.as_str())
            } else {
                text.ends_with(affix.as_str())
            }),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// `substr`: JavaScript's `substr(start, length)`, with a negative length dropping
/// characters from the end (as JsonLogic has it). Counts characters.
pub fn substr(text: &str, start: f64, length: Option<f64>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let len = chars.len() as f64;
    let start = if start.is_nan() { 0.0 } else { start.trunc() };
    let from = if start < 0.0 {
        (len + start).max(0.0)
    } else {
        start.min(len)
    } as usize;
    let rest = &chars[from..];
    let take = match length {
        None => rest.len(),
        Some(l) if l.is_nan() => 0,
        Some(l) if l < 0.0 => (rest.len() as f64 + l.trunc()).max(0.0) as usize,
        Some(l) => l.trunc().min(rest.len() as f64) as usize,
    };
    rest[..take].iter().collect()
}
