//! JavaScript's rules for JSON values, as JsonLogic inherits them: truthiness (with
//! JsonLogic's one change, an empty array is false), `String(x)`, `Number(x)`,
//! loose and strict equality, and relational comparison.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// JsonLogic truthiness.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(_) => true,
    }
}

/// A number as a JSON value; NaN and infinities (which JSON cannot hold) are null.
pub fn number(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        // Whole numbers stay integers, as JSON written by JavaScript has them.
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `String(value)`.
pub fn to_js_string(value: &Value) -> String {
    let mut out = String::new();
    write_js_string(value, &mut out);
    out
}

fn write_js_string(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&js_number(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            // Array.prototype.join: null items are empty.
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    write_js_string(item, out);
                }
            }
        }
        Value::Object(_) => out.push_str("[object Object]"),
    }
}

/// A number as JavaScript prints it: `1`, `1.5`, `1e+21`, `1e-7`.
pub fn js_number(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let magnitude = f.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Rust prints the same shortest round-trip digits, without an exponent.
        return format!("{f}");
    }
    let text = format!("{f:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => text,
    }
}

/// `Number(value)`.
pub fn to_number(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => string_to_number(s),
        Value::Array(_) => string_to_number(&to_js_string(value)),
        Value::Object(_) => f64::NAN,
    }
}

/// JavaScript's StringToNumber: surrounding white space ignored, empty is 0,
/// `Infinity`, hexadecimal/octal/binary literals, and decimal literals; anything
/// else is NaN.
pub fn string_to_number(text: &str) -> f64 {
    let text = text.trim_matches(is_js_space);
    if text.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = text.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix).map_or(f64::NAN, |n| n as f64);
        }
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned == "Infinity" {
        return if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if !is_decimal_literal(unsigned) {
        return f64::NAN;
    }
    text.parse().unwrap_or(f64::NAN)
}

fn is_js_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// `digits[.digits]` or `.digits`, then an optional exponent. One pass that stops
/// at the first byte no literal has: a long string of anything else costs nothing,
/// however often a rule converts it.
fn is_decimal_literal(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits_from = |start: usize| {
        start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
    };
    let whole_end = digits_from(0);
    let mut end = whole_end;
    let mut mantissa_digits = whole_end;
    if bytes.get(end) == Some(&b'.') {
        let fraction_end = digits_from(end + 1);
        mantissa_digits += fraction_end - (end + 1);
        end = fraction_end;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut start = end + 1;
        if matches!(bytes.get(start), Some(b'+' | b'-')) {
            start += 1;
        }
        let exponent_end = digits_from(start);
        if exponent_end == start {
            return false;
        }
        end = exponent_end;
    }
    end == bytes.len()
}

/// `a === b`. Arrays and objects are equal only to themselves, and two JSON
/// values are never the same object.
pub fn strict_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

/// `a == b`, JavaScript's abstract equality.
pub fn loose_equal(a: &Value, b: &Value) -> bool {
    use Value::*;
    match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Number(_), Number(_)) | (String(_), String(_)) | (Bool(_), Bool(_)) => strict_equal(a, b),
        (Number(_), String(s)) => to_number(a) == string_to_number(s),
        (String(s), Number(_)) => string_to_number(s) == to_number(b),
        (Bool(_), _) => loose_equal(&number(to_number(a)), b),
        (_, Bool(_)) => loose_equal(a, &number(to_number(b))),
        (Array(_) | Object(_), Array(_) | Object(_)) => false,
        (Array(_) | Object(_), _) => loose_equal(&Value::String(to_js_string(a)), b),
        (_, Array(_) | Object(_)) => loose_equal(a, &Value::String(to_js_string(b))),
    }
}

/// `a < b` and friends: strings compare by UTF-16 code units, anything else as
/// numbers; `None` when a NaN makes every comparison false.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let primitive = |v: &Value| match v {
        Value::Array(_) | Value::Object(_) => Value::String(to_js_string(v)),
        other => other.clone(),
    };
    let (a, b) = (primitive(a), primitive(b));
    if let (Value::String(x), Value::String(y)) = (&a, &b) {
        return Some(x.encode_utf16().cmp(y.encode_utf16()));
    }
    to_number(&a).partial_cmp(&to_number(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        for (f, text) in [
            (1.0, "1"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
        ] {
            assert_eq!(js_number(f), text, "{f}");
        }
    }

    #[test]
    fn strings_convert_to_numbers_as_javascript_converts_them() {
        for (text, n) in [
            ("", 0.0),
            (" 12 ", 12.0),
            ("0x1A", 26.0),
            ("1e3", 1000.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("-Infinity", f64::NEG_INFINITY),
        ] {
            assert_eq!(string_to_number(text), n, "{text:?}");
        }
        for text in ["abc", "12abc", "inf", "nan", "1e", ".", "--1", "0x"] {
            assert!(string_to_number(text).is_nan(), "{text:?}");
        }
    }

    #[test]
    fn equality_follows_javascript() {
        assert!(loose_equal(&json!(1), &json!("1")));
        assert!(loose_equal(&json!(true), &json!(1)));
        assert!(loose_equal(&json!([5]), &json!(5)));
        assert!(!loose_equal(&json!(null), &json!(0)));
        assert!(!loose_equal(&json!("a"), &json!(0)));
        assert!(strict_equal(&json!(1), &json!(1.0)));
        assert!(!strict_equal(&json!(1), &json!("1")));
        assert!(!strict_equal(&json!([]), &json!([])));
    }

    #[test]
    fn comparisons_follow_javascript() {
        assert_eq!(compare(&json!("10"), &json!("9")), Some(Ordering::Less));
        assert_eq!(compare(&json!("10"), &json!(9)), Some(Ordering::Greater));
        assert_eq!(compare(&json!(null), &json!(1)), Some(Ordering::Less));
        assert_eq!(compare(&json!("a"), &json!(1)), None);
        assert!(truthy(&json!({})) && !truthy(&json!([])) && !truthy(&json!("")));
    }

    #[test]
    fn strings_convert_to_numbers_as_javascript_does() {
        for (text, expected) in [
            ("", 0.0),
            ("  12 ", 12.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("+1.5", 1.5),
            ("-.5e1", -5.0),
            ("1e3", 1000.0),
            ("1E+3", 1000.0),
            ("2e-1", 0.2),
            ("0x1f", 31.0),
            ("-Infinity", f64::NEG_INFINITY),
        ] {
            assert_eq!(string_to_number(text), expected, "{text:?}");
        }
        for text in [".", "1e", "e3", "1.2.3", "1x", "--1", "1e+", "ééé", "0x"] {
            assert!(string_to_number(text).is_nan(), "{text:?}");
        }
        // A long string that is no number is rejected at its first byte.
        assert!(string_to_number(&"é".repeat(100_000)).is_nan());
        assert_eq!(string_to_number(&"1".repeat(400)), f64::INFINITY);
    }
}
