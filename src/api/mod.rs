//! The resources users write: `FeatureRollout` and `Segment` (group `spangate.dev`,
//! version `v1alpha1`), with the status the controller keeps on them.
//!
//! These types are the wire format for both the Kubernetes API and the rollout files
//! of standalone mode; what they mean is decided in the core (`rollout::plan`).

mod duration;
mod rollout;
mod segment;

pub use duration::{DurationError, parse_duration};
pub use rollout::*;
pub use segment::*;

/// API group of every spangate resource.
pub const GROUP: &str = "spangate.dev";
/// API version served for every spangate resource.
pub const VERSION: &str = "v1alpha1";

/// The CRDs as one multi-document YAML, the same text as `crds/` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crds = [FeatureRollout::crd(), Segment::crd()];
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd).expect("a CRD always serializes"));
    }
    out
}
