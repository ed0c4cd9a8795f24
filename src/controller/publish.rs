//! What the controller publishes from a rollout's status: its flag.

use serde_json::{Map, Value};

use crate::fingerprint::fnv1a;

use super::targeting::CompiledSpec;
use crate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase};
use crate::flags::{Flag, FlagState, PercentageRollout, Variant, percent_to_weight};
use crate::store::{RolloutKey, StoredRollout};

/// The flag a stored rollout serves with `status`: none while it is Invalid.
pub fn served_flag(
    rollout: &StoredRollout,
    status: &FeatureRolloutStatus,
    compiled: &CompiledSpec,
) -> Option<Flag> {
    if status.phase == Phase::Invalid {
        return None;
    }
    compile_flag(&rollout.key, rollout.spec.as_ref().ok()?, status, compiled)
}

/// The flag a rollout serves in its current state; `None` when its default variant
/// is not among its variants (nothing sensible to serve).
pub fn compile_flag(
    key: &RolloutKey,
    spec: &FeatureRolloutSpec,
    status: &FeatureRolloutStatus,
    compiled: &CompiledSpec,
) -> Option<Flag> {
    let variants: Vec<Variant> = spec
        .flag
        .variants
        .iter()
        .map(|(name, value)| Variant {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    let default_variant = variants
        .iter()
        .position(|v| v.name == spec.flag.default_variant)?;
    let percentage = variants
        .iter()
        .position(|v| v.name == spec.flag.rollout_variant)
        .map(|variant| PercentageRollout {
            variant,
            weight: percent_to_weight(status.weight),
            bucket_by: compiled.bucket_by.clone(),
        });
    let mut metadata = Map::new();
    metadata.insert("rollout".into(), Value::from(key.to_string()));
    metadata.insert("phase".into(), Value::from(status.phase.to_string()));
    if let Some(step) = status.current_step {
        metadata.insert("step".into(), Value::from(step));
    }
    if percentage.is_some() {
        metadata.insert("weight".into(), Value::from(status.weight));
    }
    if let Some(revision) = &spec.revision {
        metadata.insert("revision".into(), Value::from(revision.clone()));
    }
    Some(Flag {
        key: spec.flag.key.clone(),
        variants,
        default_variant: Some(default_variant),
        state: FlagState::Enabled,
        targeting: compiled.targeting.clone(),
        percentage,
        metadata,
        private_attributes: compiled.private_attributes.clone(),
    })
}

/// Changes exactly when any served flag changes; the OFREP bulk ETag. A content
/// hash rather than a counter, so it is the same after a restart.
pub(super) fn content_version(flags: &[Flag]) -> u64 {
    let prints: Vec<String> = flags
        .iter()
        .map(|f| format!("{:016x}", f.fingerprint()))
        .collect();
    fnv1a(prints.join(",").as_bytes())
}
