//! `Segment`: a named, reusable set of users (beta testers, internal QA, a plan tier)
//! that rollouts refer to.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reusable set of targeting rules.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spangate.dev",
    version = "v1alpha1",
    kind = "Segment",
    plural = "segments",
    shortname = "seg",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct SegmentSpec {
    /// What the segment is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Targeting keys that are always in the segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included: Vec<String>,
    /// Targeting keys that are never in the segment, whatever the rules say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// A context is in the segment when any rule matches (clauses within a rule are ANDed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SegmentRule>,
}

/// Clauses that must all match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRule {
    pub clauses: Vec<Clause>,
}

/// One test on a context attribute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clause {
    /// Attribute name, or a nested path with dots (`address.state`).
    pub attribute: String,
    pub op: ClauseOp,
    /// Values to compare with; the clause matches when any value matches.
    #[schemars(schema_with = "clause_values_schema")]
    pub values: Vec<serde_json::Value>,
    /// Invert the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

fn clause_values_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Clause operators, as LaunchDarkly names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClauseOp {
    In,
    StartsWith,
    EndsWith,
    Contains,
    Matches,
    LessThan,
    LessThanOrEqual,
    GreaterThan,
    GreaterThanOrEqual,
    Before,
    After,
    SemVerEqual,
    SemVerLessThan,
    SemVerGreaterThan,
    SegmentMatch,
}
