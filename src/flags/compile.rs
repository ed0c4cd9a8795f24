//! From what a user wrote (`api::TargetingSpec`, `api::SegmentSpec`) to the compiled
//! form evaluation walks. Every problem is reported, each with the path of the field
//! at fault, in words a user can act on.

use std::collections::HashMap;
use std::sync::Arc;

use regex::RegexBuilder;
use serde_json::Value;

use super::attribute::Attribute;
use super::clause::{Clause, Comparison, Members, SemVerComparison, SemVerTest, Test, parse_time};
use super::flag::{WEIGHT_SCALE, percent_to_weight};
use super::jsonlogic::Logic;
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
    fn segment(&self, name: &str) -> Result<Arc<Segment>, String>;
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
) -> Result<Targeting, Vec<String>> {
    let mut problems = Vec::new();
    let mut used_segments = Vec::new();
    let variant = |name: &str, at: &str, problems: &mut Vec<String>| -> Option<usize> {
        let found = shape.variants.iter().position(|v| *v == name);
        if found.is_none() {
            problems.push(format!(
                "{at} {} is not one of the variants ({})",
                shown(name),
                shown_list(shape.variants.iter().copied())
            ));
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
            problems.push(format!("{at}.values is empty; name at least one value"));
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
                problems.push(format!(
                    "{at}: {} is already a target of variant {}; a value can target one variant",
                    shown(value),
                    shown(shape.variants[other])
                ));
            }
            group.insert(value.as_str(), index);
        }
    }

    let mut exclusions: Vec<Exclusions> = Vec::new();
    if !spec.exclude.is_empty() && !shape.has_steps {
        problems.push(format!(
            "{field}.exclude needs steps: an exclusion keeps the default variant until the rollout reaches 100%"
        ));
    }
    for (i, exclusion) in spec.exclude.iter().enumerate() {
        let at = format!("{field}.exclude[{i}]");
        let Some(attribute) = attribute_of(exclusion.attribute.as_deref(), &at, &mut problems)
        else {
            continue;
        };
        if exclusion.values.is_empty() {
            problems.push(format!("{at}.values is empty; name at least one value"));
        }
        if let Some((_, group)) = targeted.iter().find(|(a, _)| *a == attribute) {
            for value in &exclusion.values {
                if group.contains_key(value.as_str()) {
                    problems.push(format!(
                        "{at}: {} is both a target and excluded; keep one",
                        shown(value)
                    ));
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
            problems.push(format!(
                "{at}.name is empty; omit it to call the rule rules[{i}]"
            ));
        }
        if names.contains(&name) {
            problems.push(format!(
                "{at}.name {} is used by another rule; names must be unique",
                shown(&name)
            ));
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
                        problems.push(format!(
                            "{share_at}.percent is {percent}; it must be between 0 and 100"
                        ));
                        continue;
                    }
                    let weight = percent_to_weight(percent);
                    if (percent * 100.0 - weight as f64).abs() > 1e-6 {
                        problems.push(format!("{share_at}.percent is {percent}; percents may have at most two decimals"));
                    }
                    total += weight;
                    if let Some(index) = index {
                        weights.push((index, weight));
                    }
                }
                if total != WEIGHT_SCALE {
                    problems.push(format!(
                        "{at}.split adds up to {}%; the percents must add up to 100",
                        total as f64 / 100.0
                    ));
                }
                bucket_by.map(|bucket_by| {
                    Serve::Split(Split {
                        weights: weights.into_boxed_slice(),
                        bucket_by,
                    })
                })
            }
            (Some(_), false) => {
                problems.push(format!("{at} has both variant and split; give one"));
                None
            }
            (None, true) => {
                problems.push(format!("{at} serves nothing; give a variant or a split"));
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
            Err(e) => {
                problems.push(format!(
                    "{field}.flagd is not a flagd targeting expression: {e}"
                ));
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
pub fn segment(name: &str, spec: &SegmentSpec) -> Result<Segment, Vec<String>> {
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
        problems.push(format!(
            "spec: {} is both included and excluded; keep one",
            shown(key)
        ));
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

fn attribute_of(name: Option<&str>, at: &str, problems: &mut Vec<String>) -> Option<Attribute> {
    match name {
        None => Some(Attribute::targeting_key()),
        Some(text) => match Attribute::parse(text) {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("{at}.attribute {e}"));
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
    problems: &mut Vec<String>,
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
    problems: &mut Vec<String>,
) -> Option<Clause> {
    let op = spec.op;
    if spec.values.is_empty() {
        problems.push(format!(
            "{at}.values is empty; a {} clause needs at least one value",
            op.as_str()
        ));
        return None;
    }
    let attribute = if op == ClauseOp::SegmentMatch {
        Attribute::Nothing
    } else {
        match Attribute::parse(&spec.attribute) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{at}.attribute {e}"));
                return None;
            }
        }
    };
    let before = problems.len();
    let mut wrong = |i: usize, what: &str| {
        problems.push(format!(
            "{at}.values[{i}] is not {what}, which {} compares with",
            op.as_str()
        ));
    };
    let strings = |wrong: &mut dyn FnMut(usize, &str)| -> Box<[Box<str>]> {
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
    let numbers = |wrong: &mut dyn FnMut(usize, &str)| -> Vec<f64> {
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
                    Err(e) => problems.push(format!(
                        "{at}.values[{i}] is not a usable regular expression: {}",
                        why_not_a_regex(&e)
                    )),
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
                    problems.push(format!(
                        "{at}.values[{i}] {} is not a semantic version",
                        shown(v)
                    ));
                }
            }
            Test::SemVer(SemVerTest {
                comparison,
                versions,
            })
        }
        ClauseOp::SegmentMatch => {
            let Some(source) = segments else {
                problems.push(format!(
                    "{at} is a segmentMatch; segments cannot contain segments"
                ));
                return None;
            };
            let mut found = Vec::new();
            for (i, name) in strings(&mut wrong).iter().enumerate() {
                match source.segment(name) {
                    Ok(segment) => {
                        used.push(segment.clone());
                        found.push(segment);
                    }
                    Err(why) => problems.push(format!("{at}.values[{i}]: {why}")),
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
