//! A rollout spec checked and compiled once against the segments it uses: its plan
//! (what the state machine walks), its targeting, how it buckets, and the flag it
//! serves in any state. Every shell that needs one of these asks this type.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::plan::{InvalidSpec, Plan, plan};
use crate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase};
use crate::flags::compile::{self, FlagShape, SegmentSource};
use crate::flags::{
    Attribute, Flag, FlagState, PercentageRollout, PrivateAttributes, Targeting, Variant,
    percent_to_weight,
};

/// A spec that can be carried out and served.
#[derive(Debug, Clone)]
pub struct CompiledRollout {
    pub spec: Arc<FeatureRolloutSpec>,
    pub plan: Plan,
    pub targeting: Arc<Targeting>,
    pub private_attributes: PrivateAttributes,
    /// `spec.bucketBy`, parsed: the percentage split buckets by it.
    pub bucket_by: Attribute,
}

impl CompiledRollout {
    /// Checks `spec` and compiles its targeting against `segments`; every problem
    /// of either is reported, the plan's first.
    pub fn compile(
        spec: Arc<FeatureRolloutSpec>,
        segments: &dyn SegmentSource,
    ) -> Result<Self, InvalidSpec> {
        let mut problems = Vec::new();
        let plan = plan(&spec).map_err(|invalid| problems.extend(invalid.problems));
        let private_attributes =
            PrivateAttributes::parse(&spec.private_attributes).unwrap_or_else(|found| {
                problems.extend(
                    found
                        .into_iter()
                        .map(|p| format!("spec.privateAttributes: {p}")),
                );
                PrivateAttributes::default()
            });
        let bucket_by = match spec.bucket_by.as_deref().map(Attribute::parse) {
            None => Attribute::targeting_key(),
            Some(Ok(attribute)) => attribute,
            Some(Err(e)) => {
                problems.push(format!("spec.bucketBy {e}"));
                Attribute::targeting_key()
            }
        };
        let names: Vec<&str> = spec.flag.variants.keys().map(String::as_str).collect();
        let shape = FlagShape {
            variants: &names,
            bucket_by: &bucket_by,
            has_steps: !spec.steps.is_empty(),
        };
        let targeting = match &spec.targeting {
            None => Targeting::default(),
            Some(t) => {
                compile::targeting(t, shape, segments, "spec.targeting").unwrap_or_else(|found| {
                    problems.extend(found.iter().map(ToString::to_string));
                    Targeting::default()
                })
            }
        };
        match plan {
            Ok(plan) if problems.is_empty() => Ok(Self {
                spec,
                plan,
                targeting: Arc::new(targeting),
                private_attributes,
                bucket_by,
            }),
            _ => Err(InvalidSpec { problems }),
        }
    }

    /// The flag served in `status` by rollout `rollout` (`namespace/name`, kept in
    /// the flag's metadata); none while the rollout is Invalid.
    pub fn flag(&self, rollout: &str, status: &FeatureRolloutStatus) -> Option<Flag> {
        if status.phase == Phase::Invalid {
            return None;
        }
        let spec = &self.spec;
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
                bucket_by: self.bucket_by.clone(),
            });
        let mut metadata = Map::new();
        metadata.insert("rollout".into(), Value::from(rollout));
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
            targeting: self.targeting.clone(),
            percentage,
            metadata,
            private_attributes: self.private_attributes.clone(),
        })
    }
}
