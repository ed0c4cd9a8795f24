//! Rollouts held in memory: the store `spangate simulate` runs the reconciler
//! over, so that a simulated rollout goes through the same list, reconcile and
//! status writes as one in a folder or a cluster.

use std::sync::{Arc, Mutex, PoisonError};

use super::{RolloutEvent, RolloutKey, RolloutStore, StoredRollout, StoredSegment};
use crate::api::{FeatureRolloutSpec, FeatureRolloutStatus};

/// Rollouts and their events, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    rollouts: Vec<StoredRollout>,
    events: Vec<(RolloutKey, RolloutEvent)>,
}

impl MemoryStore {
    /// A store holding one rollout with `spec`, not started yet.
    pub fn with_rollout(key: RolloutKey, spec: FeatureRolloutSpec) -> Self {
        let store = Self::default();
        store.lock().rollouts.push(StoredRollout {
            source: key.to_string(),
            key,
            generation: Some(1),
            created: None,
            spec: Ok(std::sync::Arc::new(spec)),
            status: FeatureRolloutStatus::default(),
        });
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every write replaces a whole value, so a panic cannot leave one half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status of `key`, if it is stored.
    pub fn status(&self, key: &RolloutKey) -> Option<FeatureRolloutStatus> {
        self.lock()
            .rollouts
            .iter()
            .find(|r| r.key == *key)
            .map(|r| r.status.clone())
    }

    /// Every event recorded, oldest first.
    pub fn events(&self) -> Vec<(RolloutKey, RolloutEvent)> {
        self.lock().events.clone()
    }
}

impl RolloutStore for MemoryStore {
    async fn list(&self) -> anyhow::Result<Vec<StoredRollout>> {
        Ok(self.lock().rollouts.clone())
    }

    async fn segments(&self) -> anyhow::Result<Vec<StoredSegment>> {
        Ok(Vec::new())
    }

    async fn write_status(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> anyhow::Result<()> {
        let mut inner = self.lock();
        match inner.rollouts.iter_mut().find(|r| r.key == *key) {
            Some(rollout) => {
                rollout.status = status.clone();
                Ok(())
            }
            None => anyhow::bail!("rollout {key} is not in the store"),
        }
    }

    async fn record_event(&self, key: &RolloutKey, event: &RolloutEvent) -> anyhow::Result<()> {
        self.lock().events.push((key.clone(), event.clone()));
        Ok(())
    }
}
