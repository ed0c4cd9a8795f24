//! Targeting, as LaunchDarkly users know it: individual targets, exclusions, rules of
//! clauses (with segments), and an optional flagd JsonLogic expression. Whoever none
//! of them decides falls through to the rollout's percentage (or the default variant).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who gets what, tried in order: `targets`, `exclude`, `rules`, `flagd`; everyone
/// left falls through to the percentage of the current step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetingSpec {
    /// Named users (or accounts) that always get a variant, whatever the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSpec>,
    /// Users kept on the default variant until the rollout reaches 100%.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ExclusionSpec>,
    /// Rules tried in order; the first whose clauses all match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// A flagd targeting expression (JsonLogic, with `fractional`, `sem_ver`,
    /// `starts_with`, `ends_with`), tried after the rules: a variant name decides, null
    /// falls through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub flagd: Option<serde_json::Value>,
}

impl TargetingSpec {
    /// Whether nothing is targeted.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.exclude.is_empty()
            && self.rules.is_empty()
            && self.flagd.is_none()
    }
}

/// Context values that always get `variant`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    pub variant: String,
    /// Attribute the values are compared with. Default: `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    pub values: Vec<String>,
}

/// Context values kept on the default variant while the rollout is below 100%.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExclusionSpec {
    /// Attribute the values are compared with. Default: `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    pub values: Vec<String>,
}

/// Clauses that must all match, and what a match serves: one variant, or a
/// percentage split of its own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// Names the rule in OFREP metadata. Default: `rules[i]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub clauses: Vec<Clause>,
    /// The variant a match serves; give this or `split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A percentage split among the matching users; percents add up to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitSpec>,
    /// Attribute the split buckets by. Default: the rollout's `bucketBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
}

/// One variant's share of a rule's split.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitSpec {
    pub variant: String,
    /// Percent of the matching users, up to two decimals.
    pub percent: f64,
}

/// One test on a context attribute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clause {
    /// Attribute name, or a nested path with dots (`address.state`), as flagd's `var`
    /// reads it. `$flagd.timestamp` is the evaluation time and `$flagd.flagKey` the
    /// flag's key. Not used by `segmentMatch`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attribute: String,
    pub op: ClauseOp,
    /// Values to compare with; the clause matches when any value matches.
    #[schemars(schema_with = "clause_values_schema")]
    pub values: Vec<serde_json::Value>,
    /// Invert the result. A clause on an absent attribute never matches, negated or not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

fn clause_values_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

fn any_json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Clause operators, as LaunchDarkly names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClauseOp {
    /// Equal to one of the values (strings, numbers or booleans).
    In,
    StartsWith,
    EndsWith,
    /// Has one of the values as a substring.
    Contains,
    /// Matches one of the regular expressions (Rust `regex` syntax).
    Matches,
    LessThan,
    LessThanOrEqual,
    GreaterThan,
    GreaterThanOrEqual,
    /// A time (RFC 3339 text or epoch milliseconds) before one of the values.
    Before,
    /// A time (RFC 3339 text or epoch milliseconds) after one of the values.
    After,
    SemVerEqual,
    SemVerLessThan,
    SemVerGreaterThan,
    /// The context is in one of the named segments (`name`, or `namespace/name`).
    SegmentMatch,
}

impl ClauseOp {
    /// The name as written in a spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ClauseOp::In => "in",
            ClauseOp::StartsWith => "startsWith",
            ClauseOp::EndsWith => "endsWith",
            ClauseOp::Contains => "contains",
            ClauseOp::Matches => "matches",
            ClauseOp::LessThan => "lessThan",
            ClauseOp::LessThanOrEqual => "lessThanOrEqual",
            ClauseOp::GreaterThan => "greaterThan",
            ClauseOp::GreaterThanOrEqual => "greaterThanOrEqual",
            ClauseOp::Before => "before",
            ClauseOp::After => "after",
            ClauseOp::SemVerEqual => "semVerEqual",
            ClauseOp::SemVerLessThan => "semVerLessThan",
            ClauseOp::SemVerGreaterThan => "semVerGreaterThan",
            ClauseOp::SegmentMatch => "segmentMatch",
        }
    }
}
