//! Compiled targeting: individual targets, exclusions and rules, walked in that order
//! on every evaluation without allocating.

use super::attribute::{Attribute, Env, Found};
use super::bucket;
use super::clause::Clause;
use super::flag::{EvaluationError, WEIGHT_SCALE};
use super::jsonlogic::Logic;
use super::keys::{KeyMap, KeySet};

/// Everything that decides a variant before the percentage does.
#[derive(Debug, Clone, Default)]
pub struct Targeting {
    /// Individual targets, grouped by the attribute they read.
    pub targets: Vec<Targets>,
    /// Exclusions, grouped by the attribute they read.
    pub exclusions: Vec<Exclusions>,
    pub rules: Vec<Rule>,
    /// A flagd targeting expression, tried after the rules: a variant name decides,
    /// null falls through.
    pub expression: Option<Logic>,
    /// Why a flag imported from flagd cannot be evaluated (its targeting does not
    /// parse); every evaluation then fails with PARSE_ERROR, as in flagd.
    pub invalid: Option<String>,
    /// Hash of the source the targeting was compiled from (and of the segments it
    /// uses): equal fingerprints, equal behaviour.
    pub fingerprint: u64,
}

/// Values of one attribute that get a given variant.
#[derive(Debug, Clone)]
pub struct Targets {
    pub attribute: Attribute,
    /// Value → variant index.
    pub variants: KeyMap<usize>,
}

/// Values of one attribute kept on the default variant below 100%.
#[derive(Debug, Clone)]
pub struct Exclusions {
    pub attribute: Attribute,
    pub values: KeySet,
}

/// Clauses that must all match, and what a match serves.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Named in OFREP metadata.
    pub name: Box<str>,
    pub clauses: Vec<Clause>,
    pub serve: Serve,
}

/// What a matching rule serves.
#[derive(Debug, Clone)]
pub enum Serve {
    /// A variant index.
    Variant(usize),
    Split(Split),
}

/// A percentage split of a rule's users.
#[derive(Debug, Clone)]
pub struct Split {
    /// (variant index, weight out of [`WEIGHT_SCALE`]), weights adding up to it.
    pub weights: Box<[(usize, u64)]>,
    pub bucket_by: Attribute,
}

/// The rule that decided, and the variant it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch<'t> {
    pub index: usize,
    pub name: &'t str,
    pub variant: usize,
}

impl Targeting {
    /// Whether there is nothing to decide.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.exclusions.is_empty()
            && self.rules.is_empty()
            && self.expression.is_none()
            && self.invalid.is_none()
    }

    /// The target that decides for this context, if any.
    #[inline]
    pub fn target(&self, env: &Env<'_>) -> Option<usize> {
        self.targets.iter().find_map(|t| {
            let value = t.attribute.find(env)?.as_str()?;
            t.variants.get(value).copied()
        })
    }

    /// Whether an exclusion names this context.
    #[inline]
    pub fn excluded(&self, env: &Env<'_>) -> bool {
        self.exclusions.iter().any(|e| {
            e.attribute
                .find(env)
                .and_then(Found::as_str)
                .is_some_and(|v| e.values.contains(v))
        })
    }

    /// The first rule that matches, with the variant it serves.
    #[inline]
    pub fn rule<'t>(
        &'t self,
        env: &Env<'_>,
        flag_key: &str,
    ) -> Result<Option<RuleMatch<'t>>, EvaluationError> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.clauses.iter().all(|c| c.matches(env)) {
                let variant = match &rule.serve {
                    Serve::Variant(v) => *v,
                    Serve::Split(split) => split.pick(env, flag_key)?,
                };
                return Ok(Some(RuleMatch {
                    index,
                    name: &rule.name,
                    variant,
                }));
            }
        }
        Ok(None)
    }
}

impl Split {
    fn pick(&self, env: &Env<'_>, flag_key: &str) -> Result<usize, EvaluationError> {
        let mut buffer = NumberText::default();
        let value = bucketing_value(env, flag_key, &self.bucket_by, &mut buffer)?;
        let bucket = bucket::bucket(flag_key, value, WEIGHT_SCALE);
        let mut end = 0;
        for &(variant, weight) in self.weights.iter() {
            end += weight;
            if bucket < end {
                return Ok(variant);
            }
        }
        // Weights are checked to add up to WEIGHT_SCALE when compiled.
        Ok(self.weights.last().map_or(0, |&(v, _)| v))
    }
}

/// The text a context is bucketed by: a string as it is, a number as JSON writes
/// it (as flagd's `cat` would); anything else is an error.
#[inline]
pub fn bucketing_value<'a>(
    env: &Env<'a>,
    flag_key: &str,
    attribute: &Attribute,
    buffer: &'a mut NumberText,
) -> Result<&'a str, EvaluationError> {
    match attribute.find(env) {
        Some(Found::Value(serde_json::Value::String(s))) => Ok(s),
        Some(Found::Str(s)) => Ok(s),
        Some(Found::Value(serde_json::Value::Number(n))) => Ok(buffer.write(n)),
        Some(Found::Seconds(s)) => Ok(buffer.write(&serde_json::Number::from(s))),
        None => Err(EvaluationError::TargetingKeyMissing {
            flag: flag_key.to_string(),
            attribute: attribute.text(),
        }),
        Some(Found::Value(_)) => Err(EvaluationError::InvalidBucketingValue {
            attribute: attribute.text(),
        }),
    }
}

/// A number's JSON text, written on the stack.
#[derive(Default)]
pub struct NumberText {
    bytes: [u8; 32],
    len: usize,
}

impl NumberText {
    fn write(&mut self, n: &serde_json::Number) -> &str {
        use std::fmt::Write;
        self.len = 0;
        // JSON numbers print in at most 24 characters; the buffer cannot overflow.
        let _ = write!(self, "{n}");
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for NumberText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
