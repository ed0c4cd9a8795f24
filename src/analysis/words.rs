//! Numbers as the judge's messages write them, appended to one string.
//!
//! A verdict writes some forty numbers on every look; the standard float formatter
//! with a precision is exact and slow, so numbers are rounded to a fixed number of
//! decimals here and written as integers.

use std::fmt::Write;

/// Above this the integer route could overflow; such numbers take the slow road.
const LARGEST_FAST: f64 = 1e15;

/// Appends `value` rounded to `decimals` places (half away from zero), its sign
/// always when `signed`, trailing zeros dropped when `trim`. A value that rounds to
/// zero is written without a minus sign.
pub fn push_fixed(out: &mut String, value: f64, decimals: u32, signed: bool, trim: bool) {
    const SCALES: [u64; 4] = [1, 10, 100, 1_000];
    let scale = SCALES
        .get(decimals as usize)
        .copied()
        .unwrap_or_else(|| 10u64.pow(decimals));
    if !value.is_finite() || value.abs() * scale as f64 >= LARGEST_FAST {
        // Never reached by the judge's numbers; kept correct rather than fast.
        let _ = if signed {
            write!(out, "{value:+.*}", decimals as usize)
        } else {
            write!(out, "{value:.*}", decimals as usize)
        };
        return;
    }
    let scaled = (value.abs() * scale as f64).round() as u64;
    // Written right to left into one buffer, then appended once.
    let mut text = [0u8; 24];
    let mut start = text.len();
    let mut rest = scaled;
    let mut fraction_written = false;
    for _ in 0..decimals {
        let digit = (rest % 10) as u8;
        rest /= 10;
        if fraction_written || !trim || digit != 0 {
            start -= 1;
            text[start] = b'0' + digit;
            fraction_written = true;
        }
    }
    if fraction_written {
        start -= 1;
        text[start] = b'.';
    }
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0.0 && scaled != 0 {
        start -= 1;
        text[start] = b'-';
    } else if signed {
        start -= 1;
        text[start] = b'+';
    }
    out.push_str(std::str::from_utf8(&text[start..]).expect("ASCII digits"));
}

/// Appends the decimal digits of `value`, at least `width` of them (zero-padded).
pub fn push_digits(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || digits.len() - start < width.max(1) {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

/// Appends `bytes` in lowercase hexadecimal.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for chunk in bytes.chunks(16) {
        let mut hex = [0u8; 32];
        for (pair, &b) in hex.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        out.push_str(std::str::from_utf8(&hex[..2 * chunk.len()]).expect("ASCII digits"));
    }
}

/// Appends each of `parts`.
pub fn push_all(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
}

/// A fraction as a percentage with the precision it deserves: `3.1%`, `0.25%`, `1%`.
pub fn push_percent(out: &mut String, fraction: f64) {
    let value = fraction * 100.0;
    let decimals = if value != 0.0 && value.abs() < 1.0 {
        2
    } else {
        1
    };
    push_fixed(out, value, decimals, false, true);
    out.push('%');
}

/// A fraction as percentage points with its sign: `+2.1`.
pub fn push_signed_points(out: &mut String, fraction: f64) {
    push_fixed(out, fraction * 100.0, 1, true, false);
}

/// A relative change as a whole percentage with its sign: `+25%`.
pub fn push_signed_percent(out: &mut String, fraction: f64) {
    push_fixed(out, fraction * 100.0, 0, true, false);
    out.push('%');
}

/// Milliseconds without the unit: whole from 100 up, else to a tenth.
pub fn push_ms_number(out: &mut String, ms: f64) {
    if ms >= 100.0 {
        push_fixed(out, ms, 0, false, false);
    } else {
        push_fixed(out, ms, 1, false, true);
    }
}

/// Milliseconds with the unit: `812 ms`, `40.5 ms`.
pub fn push_milliseconds(out: &mut String, ms: f64) {
    push_ms_number(out, ms);
    out.push_str(" ms");
}

/// A fraction as percentage points: `1 point`, `2.5 points`.
pub fn push_points(out: &mut String, fraction: f64) {
    let start = out.len();
    push_fixed(out, fraction * 100.0, 2, false, true);
    out.push_str(if &out[start..] == "1" {
        " point"
    } else {
        " points"
    });
}

/// A fraction as a percentage, as a new string.
pub fn percent(fraction: f64) -> String {
    let mut out = String::new();
    push_percent(&mut out, fraction);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(push: impl Fn(&mut String, f64), value: f64) -> String {
        let mut out = String::from(">");
        push(&mut out, value);
        out.split_off(1)
    }

    #[test]
    fn fixed_rounds_and_trims_as_asked() {
        let fixed = |value, decimals, signed, trim| {
            let mut out = String::new();
            push_fixed(&mut out, value, decimals, signed, trim);
            out
        };
        assert_eq!(fixed(5.4321, 2, false, false), "5.43");
        assert_eq!(fixed(2.0, 2, false, false), "2.00");
        assert_eq!(fixed(2.0, 2, false, true), "2");
        assert_eq!(fixed(2.50, 2, false, true), "2.5");
        assert_eq!(fixed(0.05, 1, false, false), "0.1");
        assert_eq!(fixed(-1.26, 1, true, false), "-1.3");
        assert_eq!(fixed(1.26, 1, true, false), "+1.3");
        assert_eq!(fixed(-0.04, 1, true, false), "+0.0");
        assert_eq!(fixed(-0.04, 1, false, false), "0.0");
        assert_eq!(fixed(0.07, 2, false, false), "0.07");
        assert_eq!(fixed(812.4, 0, false, false), "812");
        assert_eq!(fixed(f64::INFINITY, 1, false, false), "inf");
        assert_eq!(fixed(3e20, 1, false, false), "300000000000000000000.0");
    }

    #[test]
    fn fixed_agrees_with_the_standard_formatter_away_from_ties() {
        // Half-way cases may round the other way (the standard one rounds the exact
        // binary value); every other value must read the same.
        for i in 0..20_000u32 {
            let value = (f64::from(i) * 0.123_456_7 - 1_000.0) / 7.0;
            for decimals in 0..3u32 {
                let scaled = value.abs() * 10f64.powi(decimals as i32);
                if (scaled.fract() - 0.5).abs() < 1e-6 {
                    continue;
                }
                let mut ours = String::new();
                push_fixed(&mut ours, value, decimals, false, false);
                let theirs = format!("{value:.*}", decimals as usize);
                let theirs = if theirs
                    .trim_start_matches('-')
                    .trim_matches(['0', '.'])
                    .is_empty()
                {
                    theirs.trim_start_matches('-').to_string()
                } else {
                    theirs
                };
                assert_eq!(ours, theirs, "{value} to {decimals} decimals");
            }
        }
    }

    #[test]
    fn digits_and_hex_are_written_in_full() {
        let mut out = String::new();
        push_digits(&mut out, 0, 1);
        out.push(' ');
        push_digits(&mut out, 7, 3);
        out.push(' ');
        push_digits(&mut out, u64::MAX, 1);
        out.push(' ');
        push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, "0 007 18446744073709551615 000fa5ff");
    }

    #[test]
    fn percentages_read_as_people_write_them() {
        assert_eq!(percent(0.031), "3.1%");
        assert_eq!(percent(0.01), "1%");
        assert_eq!(percent(0.0025), "0.25%");
        assert_eq!(percent(0.99), "99%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(written(push_points, 0.01), "1 point");
        assert_eq!(written(push_points, 0.025), "2.5 points");
        assert_eq!(written(push_signed_points, 0.021), "+2.1");
        assert_eq!(written(push_signed_percent, -0.5), "-50%");
        assert_eq!(written(push_milliseconds, 812.4), "812 ms");
        assert_eq!(written(push_milliseconds, 40.0), "40 ms");
        assert_eq!(written(push_milliseconds, 40.55), "40.6 ms");
    }
}
