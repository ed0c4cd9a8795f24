//! Compiled clauses: one test on one attribute, with its values prepared once (sets
//! hashed, regexes built, times and versions parsed, "any of" thresholds folded) so
//! that matching a context allocates nothing.
//!
//! Semantics, as LaunchDarkly's: a clause matches when the attribute matches any of
//! its values; an absent (or null) attribute never matches, negated or not; an
//! attribute of another type than the operator reads (a number for `startsWith`)
//! does not match, and a negated clause then does.

use std::sync::Arc;

use regex::Regex;

use super::attribute::{Attribute, Env, Found};
use super::keys::{self, KeySet};
use super::segment::Segment;
use super::semver::SemVer;

/// A clause ready to match.
#[derive(Debug, Clone)]
pub struct Clause {
    pub attribute: Attribute,
    pub test: Test,
    pub negate: bool,
}

/// What a clause tests, with its values compiled.
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to one of the values.
    In(Members),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Matches(Box<[Regex]>),
    /// A number compared with a threshold: any of the values is folded into the
    /// one that decides (`x < a || x < b` is `x < max(a, b)`).
    Number(Comparison, f64),
    /// A time (RFC 3339 text, or epoch milliseconds; `$flagd.timestamp` in seconds)
    /// before or after the threshold, in epoch milliseconds.
    Time(Comparison, i64),
    SemVer(SemVerTest),
    /// In one of the segments. The attribute is not read.
    Segment(Box<[Arc<Segment>]>),
}

/// How a value is compared with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    #[inline]
    fn holds<T: PartialOrd>(self, value: T, threshold: T) -> bool {
        match self {
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
        }
    }

    /// The JsonLogic operator.
    pub fn operator(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }
}

/// The values of an `in` clause, by type.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub strings: KeySet,
    pub numbers: Box<[f64]>,
    pub booleans: Box<[bool]>,
}

/// A semantic-version test against versions parsed at compile time (their text is
/// kept: a parsed version borrows it).
#[derive(Debug, Clone)]
pub struct SemVerTest {
    pub comparison: SemVerComparison,
    pub versions: Box<[Box<str>]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemVerComparison {
    Equal,
    Less,
    Greater,
}

impl SemVerComparison {
    /// flagd's `sem_ver` operator.
    pub fn operator(self) -> &'static str {
        match self {
            SemVerComparison::Equal => "=",
            SemVerComparison::Less => "<",
            SemVerComparison::Greater => ">",
        }
    }
}

impl Clause {
    /// Whether the context matches.
    #[inline]
    pub fn matches(&self, env: &Env<'_>) -> bool {
        if let Test::Segment(segments) = &self.test {
            return segments.iter().any(|s| s.contains(env)) != self.negate;
        }
        let Some(found) = self.attribute.find(env) else {
            return false;
        };
        self.test.holds(found) != self.negate
    }
}

impl Test {
    #[inline]
    fn holds(&self, found: Found<'_>) -> bool {
        match self {
            Test::In(members) => members.contain(found),
            Test::StartsWith(values) => found
                .as_str()
                .is_some_and(|s| values.iter().any(|v| keys::starts_with(s, v))),
            Test::EndsWith(values) => found
                .as_str()
                .is_some_and(|s| values.iter().any(|v| keys::ends_with(s, v))),
            Test::Contains(values) => found
                .as_str()
                .is_some_and(|s| values.iter().any(|v| s.contains(&**v))),
            Test::Matches(regexes) => found
                .as_str()
                .is_some_and(|s| regexes.iter().any(|r| r.is_match(s))),
            Test::Number(comparison, threshold) => found
                .as_f64()
                .is_some_and(|x| comparison.holds(x, *threshold)),
            Test::Time(comparison, threshold) => {
                epoch_millis(found).is_some_and(|t| comparison.holds(t, *threshold))
            }
            Test::SemVer(test) => found
                .as_str()
                .and_then(SemVer::parse)
                .is_some_and(|version| test.holds(&version)),
            Test::Segment(_) => false,
        }
    }
}

impl Members {
    #[inline]
    fn contain(&self, found: Found<'_>) -> bool {
        use serde_json::Value;
        match found {
            Found::Value(Value::String(s)) => self.strings.contains(s),
            Found::Str(s) => self.strings.contains(s),
            Found::Value(Value::Bool(b)) => self.booleans.contains(b),
            Found::Value(Value::Number(_)) | Found::Seconds(_) => {
                found.as_f64().is_some_and(|x| self.numbers.contains(&x))
            }
            Found::Value(_) => false,
        }
    }
}

impl SemVerTest {
    fn holds(&self, version: &SemVer<'_>) -> bool {
        use std::cmp::Ordering;
        self.versions.iter().any(|text| {
            let Some(value) = SemVer::parse(text) else {
                return false;
            };
            let order = version.compare(&value);
            match self.comparison {
                SemVerComparison::Equal => order == Ordering::Equal,
                SemVerComparison::Less => order == Ordering::Less,
                SemVerComparison::Greater => order == Ordering::Greater,
            }
        })
    }
}

/// A time attribute in epoch milliseconds: RFC 3339 text, a number of epoch
/// milliseconds, or `$flagd.timestamp` (seconds).
#[inline]
fn epoch_millis(found: Found<'_>) -> Option<i64> {
    match found {
        Found::Seconds(s) => s.checked_mul(1000),
        Found::Value(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Found::Value(serde_json::Value::String(s)) => parse_time(s),
        _ => None,
    }
}

/// RFC 3339 text (`2026-12-01T00:00:00Z`, with any offset) as epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}
