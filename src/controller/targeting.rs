//! Compiling targeting once: segments and each rollout's targeting are compiled when
//! their source changes (or a segment they use does) and reused on every other pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::{ClauseOp, FeatureRolloutSpec};
use crate::fingerprint::fnv1a;
use crate::flags::Segment;
use crate::flags::compile::{self, SegmentError, SegmentSource, TargetingProblem};
use crate::rollout::{CompiledRollout, InvalidSpec};
use crate::store::{RolloutKey, StoredSegment};

/// Every segment, compiled (or why it cannot be used).
#[derive(Debug, Clone, Default)]
pub struct SegmentCatalog {
    segments: BTreeMap<RolloutKey, Compiled<Arc<Segment>>>,
}

#[derive(Debug, Clone)]
struct Compiled<T, E = String> {
    source_hash: u64,
    result: Result<T, E>,
}

impl SegmentCatalog {
    /// The catalog for `stored`, reusing what was compiled from unchanged sources.
    pub fn update(&mut self, stored: &[StoredSegment]) {
        let mut next = BTreeMap::new();
        for segment in stored {
            let source_hash = match &segment.spec {
                Ok(spec) => fnv1a(serde_json::to_string(spec).unwrap_or_default().as_bytes()),
                Err(error) => fnv1a(error.to_string().as_bytes()),
            };
            let reused = self
                .segments
                .remove(&segment.key)
                .filter(|c| c.source_hash == source_hash);
            let compiled = reused.unwrap_or_else(|| Compiled {
                source_hash,
                result: match &segment.spec {
                    Err(error) => Err(error.to_string()),
                    Ok(spec) => compile::segment(&segment.key.to_string(), spec)
                        .map(Arc::new)
                        .map_err(|problems| format!("{}: {}", segment.source, joined(&problems))),
                },
            });
            next.insert(segment.key.clone(), compiled);
        }
        self.segments = next;
    }

    /// Rollout `key` compiled against the segments as seen from its namespace.
    pub fn compile(
        &self,
        key: &RolloutKey,
        spec: Arc<FeatureRolloutSpec>,
    ) -> Result<CompiledRollout, InvalidSpec> {
        CompiledRollout::compile(spec, &self.seen_from(&key.namespace))
    }

    /// Segments as seen from `namespace`: `name` is there, `other/name` elsewhere.
    fn seen_from<'c>(&'c self, namespace: &'c str) -> impl SegmentSource + 'c {
        Scoped {
            catalog: self,
            namespace,
        }
    }

    fn resolve(&self, namespace: &str, name: &str) -> Result<Arc<Segment>, SegmentError> {
        let key = match name.split_once('/') {
            Some((ns, n)) => RolloutKey::new(ns, n),
            None => RolloutKey::new(namespace, name),
        };
        match self.segments.get(&key) {
            None => Err(SegmentError::NotFound {
                segment: key.to_string(),
            }),
            Some(Compiled { result: Ok(s), .. }) => Ok(s.clone()),
            Some(Compiled {
                result: Err(why), ..
            }) => Err(SegmentError::Invalid {
                segment: key.to_string(),
                reason: why.clone(),
            }),
        }
    }

    /// What the segments `spec` refers to hash to: changes when any of them does.
    fn hash_used(&self, namespace: &str, spec: &FeatureRolloutSpec) -> u64 {
        let mut text = String::new();
        for name in segment_names(spec) {
            let print = match self.resolve(namespace, name) {
                Ok(segment) => segment.fingerprint.to_string(),
                Err(why) => why.to_string(),
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
    fn segment(&self, name: &str) -> Result<Arc<Segment>, SegmentError> {
        self.catalog.resolve(self.namespace, name)
    }
}

/// Problems as one message, in the order found.
fn joined(problems: &[TargetingProblem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
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

/// Each rollout compiled, kept while its spec and the segments it uses stay the same.
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
    compiled: Compiled<Arc<CompiledRollout>, InvalidSpec>,
}

impl SpecCache {
    /// Rollout `key` compiled, compiling only what changed.
    pub fn get(
        &mut self,
        key: &RolloutKey,
        spec: &Arc<FeatureRolloutSpec>,
        segments: &SegmentCatalog,
    ) -> Result<Arc<CompiledRollout>, InvalidSpec> {
        let segments_hash = segments.hash_used(&key.namespace, spec);
        if let Some(cached) = self.compiled.get(key)
            && Arc::ptr_eq(&cached.spec, spec)
            && cached.segments_hash == segments_hash
        {
            return cached.compiled.result.clone();
        }
        let source = serde_json::to_string(&**spec).unwrap_or_default();
        let source_hash = fnv1a(source.as_bytes()) ^ segments_hash.rotate_left(1);
        let compiled = match self.compiled.remove(key) {
            Some(cached) if cached.compiled.source_hash == source_hash => cached.compiled,
            _ => Compiled {
                source_hash,
                result: segments.compile(key, spec.clone()).map(Arc::new),
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
