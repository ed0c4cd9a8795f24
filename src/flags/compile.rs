//! From what a user wrote (`api::TargetingSpec`, `api::SegmentSpec`) to the compiled
//! form evaluation walks. Every problem is reported, each with the path of the field
//! at fault, in words a user can act on.

use std::collections::HashMap;
use std::sync::Arc;

use regex::RegexBuilder;
use serde_json::Value;

use super::attribute::{Attribute, AttributeError};
use super::clause::{Clause, Comparison, Members, SemVerComparison, SemVerTest, Test, parse_time};
use super::flag::{WEIGHT_SCALE, percent_to_weight};
use super::jsonlogic::{Logic, ParseError};
use super::keys::KeySet;
use super::segment::Segment;
use super::semver::SemVer;
use super::targeting::{Exclusions, Rule, Serve, Split, Targeting, Targets};
use crate::api::{self, ClauseOp, SegmentSpec, TargetingSpec, shown, shown_list};

/// Largest compiled size of one regular expression, in bytes: patterns come from
/// configuration, but a pathological one must not eat the operator's memory.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Deepest nesting of one regular expression.
pub const REGEX_NEST_LIMIT: u32 = 64;

/// Finds the segment a `segmentMatch` names, compiled.
pub trait SegmentSource {
    /// The segment `name` (`name` or `namespace/name`), or why it cannot be used.
    fn segment(&self, name: &str) -> Result<Arc<Segment>, SegmentError>;
}

/// Why a segment a `segmentMatch` names cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// No segment has that name; `segment` is its `namespace/name`.
    #[error("segment {segment} does not exist")]
    NotFound { segment: String },
    /// The segment exists but cannot be read or compiled; `reason` says why, in
    /// the words of whoever holds it (the store, or the segment's own problems).
    #[error("segment {segment} is invalid: {reason}")]
    Invalid { segment: String, reason: String },
}

/// One problem of a targeting or a segment, with the path of the field at fault
/// ([`field`](Self::field)). Each is shown as one sentence a user can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetingProblem {
    #[error("{field} {} is not one of the variants ({})", shown(.variant), shown_list(.variants.iter().map(String::as_str)))]
    UnknownVariant {
        field: String,
        variant: String,
        variants: Vec<String>,
    },
    #[error("{field} is empty; name at least one value")]
    NoValues { field: String },
    /// A clause's attribute, or a target's, exclusion's or split's.
    #[error("{field} {error}")]
    InvalidAttribute {
        field: String,
        error: AttributeError,
    },
    #[error("{field}: {} is already a target of variant {}; a value can target one variant", shown(.value), shown(.variant))]
    TargetedTwice {
        field: String,
        value: String,
        variant: String,
    },
    #[error(
        "{field} needs steps: an exclusion keeps the default variant until the rollout reaches 100%"
    )]
    ExclusionWithoutSteps { field: String },
    #[error("{field}: {} is both a target and excluded; keep one", shown(.value))]
    TargetAndExcluded { field: String, value: String },
    #[error("{field} is empty; omit it to call the rule {default}")]
    EmptyRuleName { field: String, default: String },
    #[error("{field} {} is used by another rule; names must be unique", shown(.name))]
    DuplicateRuleName { field: String, name: String },
    #[error("{field} is {percent}; it must be between 0 and 100")]
    PercentOutOfRange { field: String, percent: f64 },
    #[error("{field} is {percent}; percents may have at most two decimals")]
    PercentTooPrecise { field: String, percent: f64 },
    #[error("{field} adds up to {percent}%; the percents must add up to 100")]
    SplitTotal { field: String, percent: f64 },
    #[error("{field} has both variant and split; give one")]
    VariantAndSplit { field: String },
    #[error("{field} serves nothing; give a variant or a split")]
    ServesNothing { field: String },
    #[error("{field} is not a flagd targeting expression: {error}")]
    InvalidExpression { field: String, error: ParseError },
    #[error("{field}: {} is both included and excluded; keep one", shown(.key))]
    IncludedAndExcluded { field: String, key: String },
    #[error("{field} is empty; a {} clause needs at least one value", .op.as_str())]
    EmptyClause { field: String, op: ClauseOp },
    #[error("{field} is not {expected}, which {} compares with", .op.as_str())]
    WrongValueType {
        field: String,
        expected: &'static str,
        op: ClauseOp,
    },
    #[error("{field} is not a usable regular expression: {reason}")]
    InvalidRegex { field: String, reason: String },
    #[error("{field} {} is not a semantic version", shown(.value))]
    NotSemVer { field: String, value: String },
    #[error("{field} is a segmentMatch; segments cannot contain segments")]
    NestedSegment { field: String },
    #[error("{field}: {error}")]
    Segment { field: String, error: SegmentError },
}

impl TargetingProblem {
    /// The path of the field at fault (`spec.targeting.rules[0].clauses[1].values[0]`).
    pub fn field(&self) -> &str {
        match self {
            Self::UnknownVariant { field, .. }
            | Self::NoValues { field }
            | Self::InvalidAttribute { field, .. }
            | Self::TargetedTwice { field, .. }
            | Self::ExclusionWithoutSteps { field }
            | Self::TargetAndExcluded { field, .. }
            | Self::EmptyRuleName { field, .. }
            | Self::DuplicateRuleName { field, .. }
            | Self::PercentOutOfRange { field, .. }
            | Self::PercentTooPrecise { field, .. }
            | Self::SplitTotal { field, .. }
            | Self::VariantAndSplit { field }
            | Self::ServesNothing { field }
            | Self::InvalidExpression { field, .. }
            | Self::IncludedAndExcluded { field, .. }
            | Self::EmptyClause { field, .. }
            | Self::WrongValueType { field, .. }
            | Self::InvalidRegex { field, .. }
            | Self::NotSemVer { field, .. }
            | Self::NestedSegment { field }
            | Self::Segment { field, .. } => field,
        }
    }
}

/// What a flag's targeting is compiled against.
#[derive(Debug, Clone, Copy)]
pub struct FlagShape<'a> {
    /// Variant names, in the flag's index order.
    pub variants: &'a [&'a str],
    /// Attribute splits bucket by unless a rule says otherwise.
    pub bucket_by: &'a Attribute,
    /// Whether the flag has a percentage rollout (exclusions need one).
    pub has_steps: bool,
}

/// Compiles a rollout's targeting. `field` names it in messages (`spec.targeting`).
pub fn targeting(
    spec: &TargetingSpec,
    shape: FlagShape<'_>,
    segments: &dyn SegmentSource,
    field: &str,
) -> Result<Targeting, Vec<TargetingProblem>> {
    let mut problems = Vec::new();
    let mut used_segments = Vec::new();
    let variant = |name: &str, at: &str, problems: &mut Vec<TargetingProblem>| -> Option<usize> {
        let found = shape.variants.iter().position(|v| *v == name);
        if found.is_none() {
            problems.push(TargetingProblem::UnknownVariant {
                field: at.to_string(),
                variant: name.to_string(),
                variants: shape.variants.iter().map(|v| v.to_string()).collect(),
            });
        }
        found
    };

    // Attribute → value → variant, checked for conflicts, then compiled.
    let mut targeted: Vec<(Attribute, HashMap<&str, usize>)> = Vec::new();
    for (i, target) in spec.targets.iter().enumerate() {
        let at = format!("{field}.targets[{i}]");
        let index = variant(&target.variant, &format!("{at}.variant"), &mut problems);
        let attribute = attribute_of(target.attribute.as_deref(), &at, &mut problems);
        if target.values.is_empty() {
            problems.push(TargetingProblem::NoValues {
                field: format!("{at}.values"),
            });
        }
        let (Some(index), Some(attribute)) = (index, attribute) else {
            continue;
        };
        let group = match targeted.iter_mut().position(|(a, _)| *a == attribute) {
            Some(g) => &mut targeted[g].1,
            None => {
                targeted.push((attribute, HashMap::new()));
                &mut targeted.last_mut().expect("just pushed").1
            }
        };
        for value in &target.values {
            if let Some(&other) = group.get(value.as_str())
                && other != index
            {
                problems.push(TargetingProblem::TargetedTwice {
                    field: at.clone(),
                    value: value.clone(),
                    variant: shape.variants[other].to_string(),
                });
            }
            group.insert(value.as_str(), index);
        }
    }

    let mut exclusions: Vec<Exclusions> = Vec::new();
    if !spec.exclude.is_empty() && !shape.has_steps {
        problems.push(TargetingProblem::ExclusionWithoutSteps {
            field: format!("{field}.exclude"),
        });
    }
    for (i, exclusion) in spec.exclude.iter().enumerate() {
        let at = format!("{field}.exclude[{i}]");
        let Some(attribute) = attribute_of(exclusion.attribute.as_deref(), &at, &mut problems)
        else {
            continue;
        };
        if exclusion.values.is_empty() {
            problems.push(TargetingProblem::NoValues {
                field: format!("{at}.values"),
            });
        }
        if let Some((_, group)) = targeted.iter().find(|(a, _)| *a == attribute) {
            for value in &exclusion.values {
                if group.contains_key(value.as_str()) {
                    problems.push(TargetingProblem::TargetAndExcluded {
                        field: at.clone(),
                        value: value.clone(),
                    });
                }
            }
        }
        let values: KeySet = exclusion.values.iter().collect();
        match exclusions.iter_mut().find(|e| e.attribute == attribute) {
            Some(group) => {
                let merged: KeySet = group
                    .values
                    .sorted()
                    .into_iter()
                    .chain(values.sorted())
                    .collect();
                group.values = merged;
            }
            None => exclusions.push(Exclusions { attribute, values }),
        }
    }

    let mut rules = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("{field}.rules[{i}]");
        let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
        if name.is_empty() {
            problems.push(TargetingProblem::EmptyRuleName {
                field: format!("{at}.name"),
                default: format!("rules[{i}]"),
            });
        }
        if names.contains(&name) {
            problems.push(TargetingProblem::DuplicateRuleName {
                field: format!("{at}.name"),
                name: name.clone(),
            });
        }
        names.push(name.clone());
        let clauses = clauses(
            &rule.clauses,
            &format!("{at}.clauses"),
            Some(segments),
            &mut used_segments,
            &mut problems,
        );
        let serve = match (&rule.variant, rule.split.is_empty()) {
            (Some(v), true) => {
                variant(v, &format!("{at}.variant"), &mut problems).map(Serve::Variant)
            }
            (None, false) => {
                let bucket_by = match &rule.bucket_by {
                    Some(b) => attribute_of(Some(b), &format!("{at}.bucketBy"), &mut problems),
                    None => Some(shape.bucket_by.clone()),
                };
                let mut weights = Vec::new();
                let mut total = 0;
                for (j, share) in rule.split.iter().enumerate() {
                    let share_at = format!("{at}.split[{j}]");
                    let index = variant(
                        &share.variant,
                        &format!("{share_at}.variant"),
                        &mut problems,
                    );
                    let percent = share.percent;
                    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
                        problems.push(TargetingProblem::PercentOutOfRange {
                            field: format!("{share_at}.percent"),
                            percent,
                        });
                        continue;
                    }
                    let weight = percent_to_weight(percent);
                    if (percent * 100.0 - weight as f64).abs() > 1e-6 {
                        problems.push(TargetingProblem::PercentTooPrecise {
                            field: format!("{share_at}.percent"),
                            percent,
                        });
                    }
                    total += weight;
                    if let Some(index) = index {
                        weights.push((index, weight));
                    }
                }
                if total != WEIGHT_SCALE {
                    problems.push(TargetingProblem::SplitTotal {
                        field: format!("{at}.split"),
                        percent: total as f64 / 100.0,
                    });
                }
                bucket_by.map(|bucket_by| {
                    Serve::Split(Split {
                        weights: weights.into_boxed_slice(),
                        bucket_by,
                    })
                })
            }
            (Some(_), false) => {
                problems.push(TargetingProblem::VariantAndSplit { field: at.clone() });
                None
            }
            (None, true) => {
                problems.push(TargetingProblem::ServesNothing { field: at.clone() });
                None
            }
        };
        if let (Some(clauses), Some(serve)) = (clauses, serve) {
            rules.push(Rule {
                name: name.into(),
                clauses,
                serve,
            });
        }
    }

    let expression = match &spec.flagd {
        None => None,
        Some(source) => match Logic::parse(source, &serde_json::Map::new()) {
            Ok(logic) => Some(logic),
            Err(error) => {
                problems.push(TargetingProblem::InvalidExpression {
                    field: format!("{field}.flagd"),
                    error,
                });
                None
            }
        },
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    let segment_prints: Vec<u64> = used_segments.iter().map(|s| s.fingerprint).collect();
    let source = serde_json::json!([
        spec,
        shape.variants,
        shape.bucket_by.text(),
        shape.has_steps,
        segment_prints,
    ]);
    let targets = targeted
        .into_iter()
        .map(|(attribute, variants)| Targets {
            attribute,
            variants: variants.into_iter().collect(),
        })
        .collect();
    Ok(Targeting {
        targets,
        exclusions,
        rules,
        expression,
        invalid: None,
        fingerprint: crate::fingerprint::fnv1a(source.to_string().as_bytes()),
    })
}

/// Compiles a segment named `name` (`namespace/name`).
pub fn segment(name: &str, spec: &SegmentSpec) -> Result<Segment, Vec<TargetingProblem>> {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}].clauses");
        // Segments do not nest: a segment is a set of users, not of segments.
        if let Some(clauses) = clauses(&rule.clauses, &at, None, &mut Vec::new(), &mut problems) {
            rules.push(clauses);
        }
    }
    for key in spec.included.iter().filter(|k| spec.excluded.contains(k)) {
        problems.push(TargetingProblem::IncludedAndExcluded {
            field: "spec".to_string(),
            key: key.clone(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let source = serde_json::json!([name, spec]);
    let members = spec
        .included
        .iter()
        .map(|k| (k, true))
        .chain(spec.excluded.iter().map(|k| (k, false)))
        .collect();
    Ok(Segment {
        name: name.to_string(),
        members,
        rules,
        fingerprint: crate::fingerprint::fnv1a(source.to_string().as_bytes()),
    })
}

fn attribute_of(
    name: Option<&str>,
    at: &str,
    problems: &mut Vec<TargetingProblem>,
) -> Option<Attribute> {
    match name {
        None => Some(Attribute::targeting_key()),
        Some(text) => match Attribute::parse(text) {
            Ok(a) => Some(a),
            Err(error) => {
                problems.push(TargetingProblem::InvalidAttribute {
                    field: format!("{at}.attribute"),
                    error,
                });
                None
            }
        },
    }
}

fn clauses(
    specs: &[api::Clause],
    at: &str,
    segments: Option<&dyn SegmentSource>,
    used: &mut Vec<Arc<Segment>>,
    problems: &mut Vec<TargetingProblem>,
) -> Option<Vec<Clause>> {
    let before = problems.len();
    let compiled: Vec<Clause> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| clause(c, &format!("{at}[{i}]"), segments, used, problems))
        .collect();
    (problems.len() == before).then_some(compiled)
}

fn clause(
    spec: &api::Clause,
    at: &str,
    segments: Option<&dyn SegmentSource>,
    used: &mut Vec<Arc<Segment>>,
    problems: &mut Vec<TargetingProblem>,
) -> Option<Clause> {
    let op = spec.op;
    if spec.values.is_empty() {
        problems.push(TargetingProblem::EmptyClause {
            field: format!("{at}.values"),
            op,
        });
        return None;
    }
    let attribute = if op == ClauseOp::SegmentMatch {
        Attribute::Nothing
    } else {
        match Attribute::parse(&spec.attribute) {
            Ok(a) => a,
            Err(error) => {
                problems.push(TargetingProblem::InvalidAttribute {
                    field: format!("{at}.attribute"),
                    error,
                });
                return None;
            }
        }
    };
    let before = problems.len();
    let mut wrong = |i: usize, expected: &'static str| {
        problems.push(TargetingProblem::WrongValueType {
            field: format!("{at}.values[{i}]"),
            expected,
            op,
        });
    };
    let strings = |wrong: &mut dyn FnMut(usize, &'static str)| -> Box<[Box<str>]> {
        spec.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::String(s) => Some(Box::from(s.as_str())),
                _ => {
                    wrong(i, "a string");
                    None
                }
            })
            .collect()
    };
    let numbers = |wrong: &mut dyn FnMut(usize, &'static str)| -> Vec<f64> {
        spec.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_f64() {
                Some(n) if v.is_number() => Some(n),
                _ => {
                    wrong(i, "a number");
                    None
                }
            })
            .collect()
    };
    let folded = |values: Vec<f64>, comparison: Comparison| -> f64 {
        // "Less than any value" is "less than the largest".
        let pick = |a: f64, b: f64| match comparison {
            Comparison::Less | Comparison::LessOrEqual => a.max(b),
            Comparison::Greater | Comparison::GreaterOrEqual => a.min(b),
        };
        values.into_iter().reduce(pick).unwrap_or(f64::NAN)
    };
    let test = match op {
        ClauseOp::In => {
            let mut members = Members::default();
            let (mut strings, mut numbers, mut booleans) = (Vec::new(), Vec::new(), Vec::new());
            for (i, value) in spec.values.iter().enumerate() {
                match value {
                    Value::String(s) => strings.push(s.as_str()),
                    Value::Number(n) => numbers.extend(n.as_f64()),
                    Value::Bool(b) => booleans.push(*b),
                    _ => wrong(i, "a string, number or boolean"),
                }
            }
            members.strings = strings.into_iter().collect();
            members.numbers = numbers.into_boxed_slice();
            members.booleans = booleans.into_boxed_slice();
            Test::In(members)
        }
        ClauseOp::StartsWith => Test::StartsWith(strings(&mut wrong)),
        ClauseOp::EndsWith => Test::EndsWith(strings(&mut wrong)),
        ClauseOp::Contains => Test::Contains(strings(&mut wrong)),
        ClauseOp::Matches => {
            let patterns = strings(&mut wrong);
            let mut regexes = Vec::new();
            for (i, pattern) in patterns.iter().enumerate() {
                match RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(REGEX_NEST_LIMIT)
                    .build()
                {
                    Ok(r) => regexes.push(r),
                    Err(e) => problems.push(TargetingProblem::InvalidRegex {
                        field: format!("{at}.values[{i}]"),
                        reason: why_not_a_regex(&e),
                    }),
                }
            }
            Test::Matches(regexes.into_boxed_slice())
        }
        ClauseOp::LessThan => Test::Number(
            Comparison::Less,
            folded(numbers(&mut wrong), Comparison::Less),
        ),
        ClauseOp::LessThanOrEqual => Test::Number(
            Comparison::LessOrEqual,
            folded(numbers(&mut wrong), Comparison::LessOrEqual),
        ),
        ClauseOp::GreaterThan => Test::Number(
            Comparison::Greater,
            folded(numbers(&mut wrong), Comparison::Greater),
        ),
        ClauseOp::GreaterThanOrEqual => Test::Number(
            Comparison::GreaterOrEqual,
            folded(numbers(&mut wrong), Comparison::GreaterOrEqual),
        ),
        ClauseOp::Before | ClauseOp::After => {
            let comparison = if op == ClauseOp::Before {
                Comparison::Less
            } else {
                Comparison::Greater
            };
            let mut times = Vec::new();
            for (i, value) in spec.values.iter().enumerate() {
                let millis = match value {
                    Value::String(s) => parse_time(s),
                    Value::Number(n) => n.as_i64(),
                    _ => None,
                };
                match millis {
                    Some(t) => times.push(t as f64),
                    None => wrong(
                        i,
                        "an RFC 3339 time or a whole number of epoch milliseconds",
                    ),
                }
            }
            Test::Time(comparison, folded(times, comparison) as i64)
        }
        ClauseOp::SemVerEqual | ClauseOp::SemVerLessThan | ClauseOp::SemVerGreaterThan => {
            let comparison = match op {
                ClauseOp::SemVerEqual => SemVerComparison::Equal,
                ClauseOp::SemVerLessThan => SemVerComparison::Less,
                _ => SemVerComparison::Greater,
            };
            let versions = strings(&mut wrong);
            for (i, v) in versions.iter().enumerate() {
                if SemVer::parse(v).is_none() {
                    problems.push(TargetingProblem::NotSemVer {
                        field: format!("{at}.values[{i}]"),
                        value: v.to_string(),
                    });
                }
            }
            Test::SemVer(SemVerTest {
                comparison,
                versions,
            })
        }
        ClauseOp::SegmentMatch => {
            let Some(source) = segments else {
                problems.push(TargetingProblem::NestedSegment {
                    field: at.to_string(),
                });
                return None;
            };
            let mut found = Vec::new();
            for (i, name) in strings(&mut wrong).iter().enumerate() {
                match source.segment(name) {
                    Ok(segment) => {
                        used.push(segment.clone());
                        found.push(segment);
                    }
                    Err(error) => problems.push(TargetingProblem::Segment {
                        field: format!("{at}.values[{i}]"),
                        error,
                    }),
                }
            }
            Test::Segment(found.into_boxed_slice())
        }
    };
    (problems.len() == before).then_some(Clause {
        attribute,
        test,
        negate: spec.negate,
    })
}

/// What is wrong with a pattern, without the pattern, which regex quotes whole
/// before saying it.
fn why_not_a_regex(error: &regex::Error) -> String {
    let text = error.to_string();
    let why = text.rsplit("error: ").next().unwrap_or(&text);
    why.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knows one segment, `shop/broken`, and that it is invalid.
    struct OneBroken;

    impl SegmentSource for OneBroken {
        fn segment(&self, name: &str) -> Result<Arc<Segment>, SegmentError> {
            match name {
                "broken" => Err(SegmentError::Invalid {
                    segment: "shop/broken".to_string(),
                    reason: "spec.rules[0].clauses[0].values is empty".to_string(),
                }),
                _ => Err(SegmentError::NotFound {
                    segment: format!("shop/{name}"),
                }),
            }
        }
    }

    fn problems(spec: serde_json::Value) -> Vec<TargetingProblem> {
        let spec: TargetingSpec = serde_json::from_value(spec).unwrap();
        let shape = FlagShape {
            variants: &["off", "on"],
            bucket_by: &Attribute::targeting_key(),
            has_steps: true,
        };
        targeting(&spec, shape, &OneBroken, "spec.targeting").unwrap_err()
    }

    #[test]
    fn segments_that_cannot_be_used_are_told_apart_with_their_path() {
        let found = problems(serde_json::json!({"rules": [{
            "clauses": [{"op": "segmentMatch", "values": ["beta", "broken"]}],
            "variant": "on",
        }]}));
        let field = "spec.targeting.rules[0].clauses[0].values";
        assert_eq!(
            found,
            [
                TargetingProblem::Segment {
                    field: format!("{field}[0]"),
                    error: SegmentError::NotFound {
                        segment: "shop/beta".to_string()
                    },
                },
                TargetingProblem::Segment {
                    field: format!("{field}[1]"),
                    error: SegmentError::Invalid {
                        segment: "shop/broken".to_string(),
                        reason: "spec.rules[0].clauses[0].values is empty".to_string(),
                    },
                },
            ]
        );
        assert_eq!(
            found[0].to_string(),
            format!("{field}[0]: segment shop/beta does not exist")
        );
    }

    #[test]
    fn each_problem_keeps_its_field_and_reads_as_one_sentence() {
        let found = problems(serde_json::json!({
            "targets": [{"variant": "maybe", "values": ["u1"]}],
            "rules": [{
                "clauses": [{"attribute": "age", "op": "lessThan", "values": ["ten"]}],
                "split": [{"variant": "on", "percent": 30}],
            }],
        }));
        let fields: Vec<&str> = found.iter().map(TargetingProblem::field).collect();
        assert_eq!(
            fields,
            [
                "spec.targeting.targets[0].variant",
                "spec.targeting.rules[0].clauses[0].values[0]",
                "spec.targeting.rules[0].split",
            ]
        );
        assert!(matches!(found[0], TargetingProblem::UnknownVariant { .. }));
        assert!(matches!(
            found[1],
            TargetingProblem::WrongValueType {
                op: ClauseOp::LessThan,
                ..
            }
        ));
        let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "spec.targeting.targets[0].variant \"maybe\" is not one of the variants (\"off\", \"on\")",
                "spec.targeting.rules[0].clauses[0].values[0] is not a number, which lessThan compares with",
                "spec.targeting.rules[0].split adds up to 30%; the percents must add up to 100",
            ]
        );
    }
}
