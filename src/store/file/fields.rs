//! Fields a rollout file sets that spangate does not know: a typo such as
//! `maxErrorRateIncrese` would otherwise be dropped silently and its check never
//! run. Each is named with the nearest known name, read off the resource's schema.

use std::sync::LazyLock;

use serde_json::Value;

use crate::api::{FeatureRolloutSpec, SegmentSpec};
use crate::store::error::{UnknownField, UnknownFields};

/// The top-level fields of a resource.
pub const RESOURCE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

static ROLLOUT_SCHEMA: LazyLock<Value> =
    LazyLock::new(|| schemars::schema_for!(FeatureRolloutSpec).to_value());
static SEGMENT_SCHEMA: LazyLock<Value> =
    LazyLock::new(|| schemars::schema_for!(SegmentSpec).to_value());

/// Whose spec a path is in.
#[derive(Debug, Clone, Copy)]
pub enum Spec {
    Rollout,
    Segment,
}

impl Spec {
    fn schema(self) -> &'static Value {
        match self {
            Spec::Rollout => &ROLLOUT_SCHEMA,
            Spec::Segment => &SEGMENT_SCHEMA,
        }
    }
}

/// The unknown fields at `paths` (each below `spec`) and `top_level`, each with
/// the nearest known field, or `None` when there are none.
pub fn unknown_fields(
    spec: Spec,
    top_level: &[String],
    paths: &[Vec<String>],
) -> Option<UnknownFields> {
    let mut fields: Vec<UnknownField> = top_level
        .iter()
        .map(|field| name_one(field, field.clone(), RESOURCE_FIELDS))
        .collect();
    for path in paths {
        let (field, parent) = path.split_last()?;
        let known = known_fields(spec.schema(), parent);
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let mut full = vec!["spec".to_string()];
        full.extend(path.iter().cloned());
        fields.push(name_one(field, full.join("."), &known));
    }
    (!fields.is_empty()).then_some(UnknownFields { fields })
}

fn name_one(field: &str, path: String, known: &[&str]) -> UnknownField {
    UnknownField {
        path,
        nearest: nearest(field, known).map(str::to_string),
    }
}

/// The known name closest to `field`, if one is close enough to be a typo of it.
fn nearest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    let field = field.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&field, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The property names of the object at `path` in `schema`.
fn known_fields(schema: &Value, path: &[String]) -> Vec<String> {
    let mut at = vec![schema];
    for segment in path {
        at = at
            .into_iter()
            .flat_map(|s| branches(schema, s))
            .filter_map(|s| {
                s.get("properties")
                    .and_then(|p| p.get(segment))
                    .or_else(|| s.get("items").filter(|_| segment.parse::<usize>().is_ok()))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            })
            .collect();
    }
    let mut names: Vec<String> = at
        .into_iter()
        .flat_map(|s| branches(schema, s))
        .filter_map(|s| s.get("properties")?.as_object())
        .flat_map(|p| p.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `s` and the schemas it stands for (`$ref`, `anyOf`, `oneOf`, `allOf`), resolved.
fn branches<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let mut todo = vec![s];
    while let Some(s) = todo.pop() {
        if out.len() > 32 {
            break;
        }
        if let Some(target) = s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        {
            todo.push(target);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = s.get(key).and_then(Value::as_array) {
                todo.extend(list);
            }
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn a_typo_is_named_with_the_field_it_stands_for() {
        let unknown =
            unknown_fields(Spec::Rollout, &[], &[path("analysis.maxErrorRateIncrese")]).unwrap();
        assert_eq!(
            unknown.fields,
            [UnknownField {
                path: "spec.analysis.maxErrorRateIncrese".to_string(),
                nearest: Some("maxErrorRateIncrease".to_string()),
            }]
        );
        assert_eq!(
            unknown.to_string(),
            "unknown field \"spec.analysis.maxErrorRateIncrese\" (did you mean \"maxErrorRateIncrease\"?)"
        );
    }

    #[test]
    fn fields_are_found_through_lists_and_options() {
        assert!(
            known_fields(&ROLLOUT_SCHEMA, &path("targeting.rules.0"))
                .contains(&"clauses".to_string())
        );
        assert!(
            known_fields(&ROLLOUT_SCHEMA, &path("analysis.maxLatencyMs"))
                .contains(&"p99".to_string())
        );
        assert!(known_fields(&SEGMENT_SCHEMA, &[]).contains(&"included".to_string()));
        let far = unknown_fields(Spec::Rollout, &["spce".into()], &[path("zzzzzzzzzz")]).unwrap();
        assert_eq!(
            far.to_string(),
            "unknown field \"spce\" (did you mean \"spec\"?), \"spec.zzzzzzzzzz\""
        );
    }
}
