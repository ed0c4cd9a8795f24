//! Compiling targeting once: segments and each rollout's targeting are compiled when
//! their source changes (or a segment they use does) and reused on every other pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::{ClauseOp, FeatureRolloutSpec};
use crate::fingerprint::fnv1a;
use crate::flags::compile::{self, FlagShape, SegmentSource};
use crate::flags::{Attribute, PrivateAttributes, Segment, Targeting};
use crate::store::{RolloutKey, StoredSegment};

/// Every segment, compiled (or why it cannot be used).
#[derive(Debug, Clone, Default)]
pub struct SegmentCatalog {
    segments: BTreeMap<RolloutKey, Compiled<Arc<Segment>>>,
}

#[derive(Debug, Clone)]
struct Compiled<T> {
    source_hash: u64,
    result: Result<T, String>,
}

impl SegmentCatalog {
    /// The catalog for `stored`, reusing what was compiled from unchanged sources.
    pub fn update(&mut self, stored: &[StoredSegment]) {
        let mut next = BTreeMap::new();
        for segment in stored {
            let source_hash = match &segment.spec {
                Ok(spec) => fnv1a(serde_json::to_string(spec).unwrap_or_default().as_bytes()),
                Err(message) => fnv1a(message.as_bytes()),
            };
            let reused = self
                .segments
                .remove(&segment.key)
                .filter(|c| c.source_hash == source_hash);
            let compiled = reused.unwrap_or_else(|| Compiled {
                source_hash,
                result: match &segment.spec {
                    Err(message) => Err(message.clone()),
                    Ok(spec) => compile::segment(&segment.key.to_string(), spec)
                        .map(Arc::new)
                        .map_err(|problems| format!("{}: {}", segment.source, problems.join("; "))),
                },
            });
            next.insert(segment.key.clone(), compiled);
        }
        self.segments = next;
    }

    /// Segments as seen from `namespace`: `name` is there, `other/name` elsewhere.
    pub fn seen_from<'c>(&'c self, namespace: &'c str) -> impl SegmentSource + 'c {
        Scoped {
            catalog: self,
            namespace,
        }
    }

    fn resolve(&self, namespace: &str, name: &str) -> Result<Arc<Segment>, String> {
        let key = match name.split_once('/') {
            Some((ns, n)) => RolloutKey::new(ns, n),
            None => RolloutKey::new(namespace, name),
        };
        match self.segments.get(&key) {
            None => Err(format!("segment {key} does not exist")),
            Some(Compiled { result: Ok(s), .. }) => Ok(s.clone()),
            Some(Compiled {
                result: Err(why), ..
            }) => Err(format!("segment {key} is invalid: {why}")),
        }
    }

    /// What the segments `spec` refers to hash to: changes when any of them does.
    fn hash_used(&self, namespace: &str, spec: &FeatureRolloutSpec) -> u64 {
        let mut text = String::new();
        for name in segment_names(spec) {
            let print = match self.resolve(namespace, name) {
                Ok(segment) => segment.fingerprint.to_string(),
                Err(why) => why,
            };
            text.push_str(name);
            text.push('=');
            text.push_str(&print);
            text.push('\n');
        }
        fnv1a(text.as_bytes())
    }
}

struct Scoped<'c> {
    catalog: &'c SegmentCatalog,
    namespace: &'c str,
}

impl SegmentSource for Scoped<'_> {
    fn segment(&self, name: &str) -> Result<Arc<Segment>, String> {
        self.catalog.resolve(self.namespace, name)
    }
}

fn segment_names(spec: &FeatureRolloutSpec) -> impl Iterator<Item = &str> {
    spec.targeting
        .iter()
        .flat_map(|t| &t.rules)
        .flat_map(|r| &r.clauses)
        .filter(|c| c.op == ClauseOp::SegmentMatch)
        .flat_map(|c| &c.values)
        .filter_map(|v| v.as_str())
}

/// What a rollout's spec compiles to, apart from its state.
#[derive(Debug, Clone)]
pub struct CompiledSpec {
    pub targeting: Arc<Targeting>,
    pub private_attributes: PrivateAttributes,
    /// `spec.bucketBy` as parsed here, once: the percentage split buckets by it.
    pub bucket_by: Attribute,
}

/// Compiles a rollout's targeting and private attributes against `segments`.
pub fn compile_spec(
    spec: &FeatureRolloutSpec,
    namespace: &str,
    segments: &SegmentCatalog,
) -> Result<CompiledSpec, Vec<String>> {
    let mut problems = Vec::new();
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
        Some(t) => compile::targeting(t, shape, &segments.seen_from(namespace), "spec.targeting")
            .unwrap_or_else(|found| {
                problems.extend(found);
                Targeting::default()
            }),
    };
    if problems.is_empty() {
        Ok(CompiledSpec {
            targeting: Arc::new(targeting),
            private_attributes,
            bucket_by,
        })
    } else {
        Err(problems)
    }
}

/// Each rollout's compiled spec, kept while its source and segments stay the same.
#[derive(Debug, Default)]
pub struct SpecCache {
    compiled: HashMap<RolloutKey, CachedSpec>,
}

#[derive(Debug)]
struct CachedSpec {
    /// The spec compiled, as the store shares it: the same allocation is the same
    /// spec, found without hashing it.
    spec: Arc<FeatureRolloutSpec>,
    segments_hash: u64,
    compiled: Compiled<CompiledSpec>,
}

impl SpecCache {
    /// The compiled spec of rollout `key`, compiling only what changed.
    pub fn get(
        &mut self,
        key: &RolloutKey,
        spec: &Arc<FeatureRolloutSpec>,
        segments: &SegmentCatalog,
    ) -> Result<CompiledSpec, String> {
        let segments_hash = segments.hash_used(&key.namespace, spec);
        if let Some(cached) = self.compiled.get(key)
            && Arc::ptr_eq(&cached.spec, spec)
            && cached.segments_hash == segments_hash
        {
            return cached.compiled.result.clone();
        }
        let source = serde_json::json!([
            spec.flag,
            spec.bucket_by,
            spec.targeting,
            spec.private_attributes,
            spec.steps.is_empty(),
        ]);
        let source_hash = fnv1a(source.to_string().as_bytes()) ^ segments_hash.rotate_left(1);
        let compiled = match self.compiled.remove(key) {
            Some(cached) if cached.compiled.source_hash == source_hash => cached.compiled,
            _ => Compiled {
                source_hash,
                result: compile_spec(spec, &key.namespace, segments).map_err(|p| p.join("; ")),
            },
        };
        let result = compiled.result.clone();
        self.compiled.insert(
            key.clone(),
            CachedSpec {
                spec: spec.clone(),
                segments_hash,
                compiled,
            },
        );
        result
    }

    /// Keeps the rollouts `keep` says yes to (forgets the ones that are gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&RolloutKey) -> bool) {
        self.compiled.retain(|k, _| keep(k));
    }
}
