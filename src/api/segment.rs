//! `Segment`: a named, reusable set of users (beta testers, internal QA, a plan tier)
//! that rollouts refer to.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Clause;

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
