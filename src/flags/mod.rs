//! Flags (pure core): the flag model, targeting (individual targets, exclusions,
//! rules of clauses, segments) compiled once and evaluated for an OFREP context
//! without allocating, flagd-compatible sticky bucketing, and export to flagd.
//!
//! A [`Flag`] is compiled once when its rollout (or a segment it uses) changes;
//! [`Flag::evaluate`] then walks the compiled form. A [`FlagSet`] is every flag
//! served at one moment, with a version that changes whenever any flag does (the
//! OFREP bulk ETag).

pub mod attribute;
pub mod bucket;
pub mod clause;
pub mod compile;
mod context;
mod flag;
pub mod flagd;
pub mod jsonlogic;
pub mod keys;
mod private;
pub mod segment;
pub mod semver;
pub mod targeting;

pub use attribute::{Attribute, Env};
pub use context::Context;
pub use flag::{
    EvaluationError, Flag, FlagState, Matched, PercentageRollout, Reason, Resolution, Variant,
    WEIGHT_SCALE, percent_to_weight,
};
pub use private::{PrivateAttributeError, PrivateAttributes, REDACTED, ValuePath};
pub use segment::Segment;
pub use targeting::Targeting;

use std::collections::HashMap;
use std::sync::Arc;

/// Every flag served at one moment.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    flags: HashMap<String, Arc<Flag>>,
    version: u64,
    /// Every flag's private attributes: an application sends one context to every
    /// flag, so an attribute one rollout keeps private is hidden for all of them.
    private_attributes: PrivateAttributes,
}

impl FlagSet {
    pub fn new(flags: impl IntoIterator<Item = Flag>, version: u64) -> Self {
        let flags: HashMap<String, Arc<Flag>> = flags
            .into_iter()
            .map(|f| (f.key.clone(), Arc::new(f)))
            .collect();
        let private_attributes = flags.values().fold(PrivateAttributes::default(), |all, f| {
            all.union(&f.private_attributes)
        });
        Self {
            flags,
            version,
            private_attributes,
        }
    }

    /// The private attributes of every flag in the set.
    pub fn private_attributes(&self) -> &PrivateAttributes {
        &self.private_attributes
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Flag>> {
        self.flags.get(key)
    }

    /// Changes whenever any flag changes; the OFREP bulk ETag is derived from it.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Flags in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flag>> {
        let mut flags: Vec<_> = self.flags.values().collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        flags.into_iter()
    }
}
