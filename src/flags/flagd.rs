//! flagd's flag-definition format, both ways.
//!
//! **Export**: a flag becomes a flagd flag whose targeting is one JsonLogic `if`
//! chain in spangate's order: individual targets (`in`), exclusions, rules (their
//! clauses with `in`, `starts_with`, `ends_with`, `sem_ver`, comparisons; segments as
//! `$ref`s to shared `$evaluators`), the flagd expression, then the percentage as a
//! `fractional` over the same integer weights and the same bucketing string (flag
//! key + bucketing value), guarded so that a context without the bucketing attribute
//! gets the default variant. flagd then gives the same variant as spangate for every
//! context whose attributes have the types the clauses read (see [`flag_set`]).
//!
//! **Import**: a flagd flag-definition document becomes flags served with flagd's
//! semantics ([`import`]).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::attribute::Attribute;
use super::clause::{Clause, Test};
use super::jsonlogic::Logic;
use super::targeting::{Serve, Split, Targeting};
use super::{Flag, FlagState, PrivateAttributes, Variant, WEIGHT_SCALE};

/// A flag set as a flagd document, and the flags that could not be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub document: Value,
    /// Each flag left out, with what flagd cannot express.
    pub skipped: Vec<NotExported>,
}

/// A flag left out of an export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flag {key:?} is not exported: {error}")]
pub struct NotExported {
    pub key: String,
    pub error: ExportError,
}

/// Why a flag cannot be written as a flagd flag definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("its targeting does not parse: {reason}")]
    InvalidTargeting { reason: String },
    #[error(
        "the matches clause on {attribute} has no JsonLogic equivalent (flagd has no regular expressions)"
    )]
    Matches { attribute: String },
    /// A clause of rule `rule` cannot be written.
    #[error("rule {rule:?}: {error}")]
    Rule {
        rule: String,
        error: Box<ExportError>,
    },
    /// A clause of segment `segment` cannot be written.
    #[error("segment {segment}: {error}")]
    Segment {
        segment: String,
        error: Box<ExportError>,
    },
}

/// Why a flagd document is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    #[error("the document has no \"flags\" object")]
    NoFlags,
    /// The definition of flag `key` (at `flags.<key>`).
    #[error("flags.{key}: {error}")]
    Flag { key: String, error: DefinitionError },
}

/// What is wrong with one flag definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    #[error("state is {state:?}; it must be \"ENABLED\" or \"DISABLED\"")]
    State { state: Option<String> },
    #[error("variants must be an object of variant name → value")]
    Variants,
    #[error("defaultVariant {name:?} is not one of the variants")]
    UnknownDefault { name: String },
    #[error("defaultVariant must be a string or null, not {found}")]
    DefaultNotString { found: Value },
}

/// A whole flag set, as a flagd flag-definition document, with every segment the
/// flags use under `$evaluators`. Flags that flagd cannot express (a `matches`
/// clause: JsonLogic has no regular expressions) are left out and named.
pub fn flag_set<'f>(flags: impl IntoIterator<Item = &'f Flag>) -> Export {
    let mut definitions = Map::new();
    let mut evaluators = Map::new();
    let mut skipped = Vec::new();
    for flag in flags {
        match flag_definition(flag, &mut evaluators) {
            Ok(definition) => {
                definitions.insert(flag.key.clone(), definition);
            }
            Err(error) => skipped.push(NotExported {
                key: flag.key.clone(),
                error,
            }),
        }
    }
    let mut document = json!({ "flags": definitions });
    if !evaluators.is_empty() {
        document["$evaluators"] = Value::Object(evaluators);
    }
    Export { document, skipped }
}

/// One flag as a flagd flag definition; the segments it uses are added to
/// `evaluators`.
pub fn flag_definition(
    flag: &Flag,
    evaluators: &mut Map<String, Value>,
) -> Result<Value, ExportError> {
    let name = |index: usize| Value::from(flag.variant_name(index));
    let default = flag.default_variant.map_or(Value::Null, name);
    let variants: Map<String, Value> = flag
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    let mut definition = json!({
        "state": if flag.state == FlagState::Enabled { "ENABLED" } else { "DISABLED" },
        "variants": variants,
        "defaultVariant": default,
    });
    // flagd metadata holds only strings, numbers and booleans.
    let metadata: Map<String, Value> = flag
        .metadata
        .iter()
        .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !metadata.is_empty() {
        definition["metadata"] = Value::Object(metadata);
    }
    let targeting = &*flag.targeting;
    if let Some(why) = &targeting.invalid {
        return Err(ExportError::InvalidTargeting {
            reason: why.clone(),
        });
    }

    // The percentage for whoever targeting does not decide.
    let fallthrough = match &flag.percentage {
        None => None,
        Some(p) if p.weight == 0 => None,
        Some(p) if p.weight >= WEIGHT_SCALE => Some(name(p.variant)),
        Some(p) => {
            let weights = [
                (Some(p.variant), p.weight),
                (flag.default_variant, WEIGHT_SCALE - p.weight),
            ];
            Some(split(flag, &p.bucket_by, &weights))
        }
    };
    if targeting.is_empty() {
        match fallthrough {
            // Everyone gets one variant: flagd needs no targeting for that.
            Some(Value::String(everyone)) => definition["defaultVariant"] = json!(everyone),
            Some(expression) => definition["targeting"] = expression,
            None => {}
        }
        return Ok(definition);
    }

    let mut chain: Vec<Value> = Vec::new();
    for group in &targeting.targets {
        let mut by_variant: Vec<(usize, Vec<&str>)> = Vec::new();
        for (key, &variant) in group.variants.iter() {
            match by_variant.iter_mut().find(|(v, _)| *v == variant) {
                Some((_, keys)) => keys.push(key),
                None => by_variant.push((variant, vec![key])),
            }
        }
        by_variant.sort_by_key(|(v, _)| *v);
        for (variant, mut keys) in by_variant {
            keys.sort_unstable();
            chain.push(json!({"in": [var(&group.attribute), keys]}));
            chain.push(name(variant));
        }
    }
    let partial = flag
        .percentage
        .as_ref()
        .is_some_and(|p| p.weight < WEIGHT_SCALE);
    if partial {
        for group in &targeting.exclusions {
            chain.push(json!({"in": [var(&group.attribute), group.values.sorted()]}));
            chain.push(default.clone());
        }
    }
    for rule in &targeting.rules {
        chain.push(all_of(
            rule.clauses
                .iter()
                .map(|c| clause(c, evaluators))
                .collect::<Result<_, _>>()
                .map_err(|error| ExportError::Rule {
                    rule: rule.name.to_string(),
                    error: Box::new(error),
                })?,
        ));
        chain.push(match &rule.serve {
            Serve::Variant(v) => name(*v),
            Serve::Split(Split { weights, bucket_by }) => {
                let weights: Vec<(Option<usize>, u64)> =
                    weights.iter().map(|&(v, w)| (Some(v), w)).collect();
                split(flag, bucket_by, &weights)
            }
        });
    }
    if let Some(expression) = &targeting.expression {
        if chain.is_empty() && fallthrough.is_none() {
            definition["targeting"] = expression.source().clone();
            return Ok(definition);
        }
        // A variant decides; null goes on to the percentage.
        chain.push(json!({"!==": [expression.source(), null]}));
        chain.push(expression.source().clone());
    }
    chain.push(fallthrough.unwrap_or(Value::Null));
    definition["targeting"] = json!({ "if": chain });
    Ok(definition)
}

/// `{"var": attribute}`.
fn var(attribute: &Attribute) -> Value {
    json!({ "var": attribute.text() })
}

/// The attribute is there and not null, as spangate requires of every clause.
fn present(attribute: &Attribute) -> Value {
    json!({"!==": [var(attribute), null]})
}

fn all_of(mut tests: Vec<Value>) -> Value {
    match tests.len() {
        0 => Value::Bool(true),
        1 => tests.remove(0),
        _ => json!({ "and": tests }),
    }
}

fn any_of(mut tests: Vec<Value>) -> Value {
    match tests.len() {
        0 => Value::Bool(false),
        1 => tests.remove(0),
        _ => json!({ "or": tests }),
    }
}

/// A `fractional` over `weights` of the flag key + bucketing value, null when the
/// context lacks the bucketing attribute.
fn split(flag: &Flag, bucket_by: &Attribute, weights: &[(Option<usize>, u64)]) -> Value {
    let mut args = vec![json!({"cat": [{"var": "$flagd.flagKey"}, var(bucket_by)]})];
    for &(variant, weight) in weights {
        args.push(json!([variant.map(|v| flag.variant_name(v)), weight]));
    }
    json!({"if": [present(bucket_by), {"fractional": args}, null]})
}

/// One clause as JsonLogic. An absent attribute never matches: negated clauses, and
/// comparisons (where JavaScript reads null as 0), are guarded by [`present`].
fn clause(clause: &Clause, evaluators: &mut Map<String, Value>) -> Result<Value, ExportError> {
    let attribute = &clause.attribute;
    let (test, needs_guard) = match &clause.test {
        Test::In(members) => {
            let mut values: Vec<Value> = members
                .strings
                .sorted()
                .into_iter()
                .map(Value::from)
                .collect();
            values.extend(
                members
                    .numbers
                    .iter()
                    .map(|&n| super::jsonlogic::value::number(n)),
            );
            values.extend(members.booleans.iter().map(|&b| Value::Bool(b)));
            (json!({"in": [var(attribute), values]}), false)
        }
        Test::StartsWith(values) => (
            any_of(
                values
                    .iter()
                    .map(|v| json!({"starts_with": [var(attribute), &**v]}))
                    .collect(),
            ),
            false,
        ),
        Test::EndsWith(values) => (
            any_of(
                values
                    .iter()
                    .map(|v| json!({"ends_with": [var(attribute), &**v]}))
                    .collect(),
            ),
            false,
        ),
        Test::Contains(values) => (
            any_of(
                values
                    .iter()
                    .map(|v| json!({"in": [&**v, var(attribute)]}))
                    .collect(),
            ),
            false,
        ),
        Test::Matches(_) => {
            return Err(ExportError::Matches {
                attribute: attribute.text(),
            });
        }
        Test::Number(comparison, threshold) => (
            json!({ comparison.operator(): [var(attribute), super::jsonlogic::value::number(*threshold)] }),
            true,
        ),
        Test::Time(comparison, millis) => {
            // flagd's timestamp is in seconds; other times are epoch milliseconds.
            let threshold = if *attribute == Attribute::Timestamp {
                super::jsonlogic::value::number(*millis as f64 / 1000.0)
            } else {
                Value::from(*millis)
            };
            (
                json!({ comparison.operator(): [var(attribute), threshold] }),
                true,
            )
        }
        Test::SemVer(test) => (
            any_of(
                test.versions
                    .iter()
                    .map(|v| json!({"sem_ver": [var(attribute), test.comparison.operator(), &**v]}))
                    .collect(),
            ),
            false,
        ),
        Test::Segment(segments) => {
            let refs = segments
                .iter()
                .map(|segment| {
                    let key = format!("segment:{}", segment.name);
                    if !evaluators.contains_key(&key) {
                        let expression = segment_expression(segment, evaluators)?;
                        evaluators.insert(key.clone(), expression);
                    }
                    Ok(json!({ "$ref": key }))
                })
                .collect::<Result<Vec<_>, ExportError>>()?;
            let any = any_of(refs);
            // A segment reads no one attribute: negation applies directly.
            return Ok(if clause.negate {
                json!({ "!": any })
            } else {
                any
            });
        }
    };
    Ok(match (clause.negate, needs_guard) {
        (false, false) => test,
        (false, true) => json!({"and": [present(attribute), test]}),
        (true, _) => json!({"and": [present(attribute), {"!": test}]}),
    })
}

/// A segment: excluded keys are out, included keys in, anyone else by its rules.
fn segment_expression(
    segment: &super::Segment,
    evaluators: &mut Map<String, Value>,
) -> Result<Value, ExportError> {
    let key = var(&Attribute::targeting_key());
    let mut chain = Vec::new();
    let (included, excluded) = (segment.listed(true), segment.listed(false));
    if !excluded.is_empty() {
        chain.push(json!({"in": [key, excluded]}));
        chain.push(Value::Bool(false));
    }
    if !included.is_empty() {
        chain.push(json!({"in": [key, included]}));
        chain.push(Value::Bool(true));
    }
    let rules = segment
        .rules
        .iter()
        .map(|clauses| {
            clauses
                .iter()
                .map(|c| clause(c, evaluators))
                .collect::<Result<Vec<_>, _>>()
                .map(all_of)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ExportError::Segment {
            segment: segment.name.clone(),
            error: Box::new(error),
        })?;
    let rules = any_of(rules);
    if chain.is_empty() {
        return Ok(rules);
    }
    chain.push(rules);
    Ok(json!({ "if": chain }))
}

/// Reads a flagd flag-definition document (`flags`, optional `$evaluators` and
/// `metadata`). A structural problem (a state other than ENABLED/DISABLED, variants
/// that are not an object, a default variant that is not one of them) refuses the
/// whole document, naming every problem, as flagd refuses it; a targeting that does
/// not parse only makes its flag fail with PARSE_ERROR.
pub fn import(document: &Value) -> Result<Vec<Flag>, Vec<ImportError>> {
    let Some(flags) = document.get("flags").and_then(Value::as_object) else {
        return Err(vec![ImportError::NoFlags]);
    };
    let empty = Map::new();
    let evaluators = document
        .get("$evaluators")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let set_metadata = document.get("metadata").and_then(Value::as_object);
    let mut problems = Vec::new();
    let mut imported = Vec::new();
    for (key, definition) in flags {
        match import_flag(key, definition, evaluators, set_metadata) {
            Ok(flag) => imported.push(flag),
            Err(error) => problems.push(ImportError::Flag {
                key: key.clone(),
                error,
            }),
        }
    }
    if problems.is_empty() {
        Ok(imported)
    } else {
        Err(problems)
    }
}

fn import_flag(
    key: &str,
    definition: &Value,
    evaluators: &Map<String, Value>,
    set_metadata: Option<&Map<String, Value>>,
) -> Result<Flag, DefinitionError> {
    let state = match definition.get("state").and_then(Value::as_str) {
        Some("ENABLED") => FlagState::Enabled,
        Some("DISABLED") => FlagState::Disabled,
        other => {
            return Err(DefinitionError::State {
                state: other.map(str::to_string),
            });
        }
    };
    let variants: Vec<Variant> = definition
        .get("variants")
        .and_then(Value::as_object)
        .ok_or(DefinitionError::Variants)?
        .iter()
        .map(|(name, value)| Variant {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    // As flagd reads it: an absent, null or empty default defers to the code default.
    let default_variant = match definition.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.is_empty() => None,
        Some(Value::String(name)) => Some(
            variants
                .iter()
                .position(|v| v.name == *name)
                .ok_or_else(|| DefinitionError::UnknownDefault { name: name.clone() })?,
        ),
        Some(other) => {
            return Err(DefinitionError::DefaultNotString {
                found: other.clone(),
            });
        }
    };
    let mut metadata: Map<String, Value> = set_metadata.cloned().unwrap_or_default();
    if let Some(own) = definition.get("metadata").and_then(Value::as_object) {
        metadata.extend(own.clone());
    }
    metadata.retain(|_, v| v.is_string() || v.is_number() || v.is_boolean());

    let mut targeting = Targeting::default();
    match definition.get("targeting") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.is_empty() => {}
        Some(expression) => match Logic::parse(expression, evaluators) {
            Ok(logic) => targeting.expression = Some(logic),
            Err(e) => targeting.invalid = Some(format!("its targeting does not parse: {e}")),
        },
    }
    let source = json!([
        definition,
        targeting.expression.as_ref().map(Logic::source),
        metadata,
    ]);
    targeting.fingerprint = crate::fingerprint::fnv1a(source.to_string().as_bytes());
    Ok(Flag {
        key: key.to_string(),
        variants,
        default_variant,
        state,
        targeting: Arc::new(targeting),
        percentage: None,
        metadata,
        private_attributes: PrivateAttributes::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Attribute, Context, PercentageRollout};

    fn flag(weight: u64) -> Flag {
        let variants = vec![
            Variant {
                name: "off".into(),
                value: json!(false),
            },
            Variant {
                name: "on".into(),
                value: json!(true),
            },
        ];
        let mut flag = Flag::new("new-checkout", variants, 0);
        flag.percentage = Some(PercentageRollout {
            variant: 1,
            weight,
            bucket_by: Attribute::parse("accountId").unwrap(),
        });
        flag.metadata = Map::from_iter([("step".to_string(), json!(1))]);
        flag
    }

    fn definition(flag: &Flag) -> Value {
        flag_definition(flag, &mut Map::new()).unwrap()
    }

    #[test]
    fn a_split_is_a_guarded_fractional_over_the_same_weights() {
        let d = definition(&flag(2500));
        assert_eq!(d["defaultVariant"], "off");
        assert_eq!(d["metadata"]["step"], 1);
        assert_eq!(
            d["targeting"],
            json!({"if": [
                {"!==": [{"var": "accountId"}, null]},
                {"fractional": [
                    {"cat": [{"var": "$flagd.flagKey"}, {"var": "accountId"}]},
                    ["on", 2500],
                    ["off", 7500]
                ]},
                null
            ]})
        );
    }

    #[test]
    fn no_share_and_full_share_need_no_targeting() {
        let none = definition(&flag(0));
        assert_eq!(
            (none["defaultVariant"].as_str(), none.get("targeting")),
            (Some("off"), None)
        );
        let all = definition(&flag(WEIGHT_SCALE));
        assert_eq!(
            (all["defaultVariant"].as_str(), all.get("targeting")),
            (Some("on"), None)
        );
    }

    #[test]
    fn import_refuses_structural_problems_and_names_each() {
        let problems = import(&json!({"flags": {
            "a": {"state": "ON", "variants": {"x": 1}, "defaultVariant": "x"},
            "b": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "y"},
            "c": {"state": "ENABLED", "variants": [1], "defaultVariant": "x"},
        }}))
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[1]
                .to_string()
                .contains("defaultVariant \"y\" is not one of the variants")
        );
        assert_eq!(
            problems[0],
            ImportError::Flag {
                key: "a".to_string(),
                error: DefinitionError::State {
                    state: Some("ON".to_string())
                }
            }
        );
        assert!(matches!(
            &problems[2],
            ImportError::Flag { key, error: DefinitionError::Variants } if key == "c"
        ));
        assert_eq!(
            import(&json!({"flag": {}})).unwrap_err(),
            [ImportError::NoFlags]
        );
    }

    #[test]
    fn import_keeps_a_flag_whose_targeting_does_not_parse_but_fails_it() {
        let flags = import(&json!({"flags": {
            "bad": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x",
                    "targeting": {"regex": ["a", "b"]}},
        }}))
        .unwrap();
        let error = flags[0]
            .evaluate(&Context::new(&Map::new()), jiff::Timestamp::UNIX_EPOCH)
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown operation \"regex\""),
            "{error}"
        );
    }
}
