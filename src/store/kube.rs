//! Rollouts in a Kubernetes cluster: read from the controller's watch cache, status
//! written by server-side apply, events through the events.k8s.io API.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{RolloutEvent, RolloutKey, RolloutStore, StoredRollout, StoredSegment};
use crate::api::{
    ABORT_ANNOTATION, FeatureRollout, FeatureRolloutStatus, PROMOTE_ANNOTATION, Segment,
};
use crate::rollout::EventType;

/// The field manager of everything spangate writes, so that server-side apply
/// knows which fields are the controller's.
pub const FIELD_MANAGER: &str = "spangate";

/// `reportingController` of spangate's events.
pub const REPORTING_CONTROLLER: &str = "spangate.dev/controller";

/// The events.k8s.io API caps an event's note at 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

/// FeatureRollouts of a cluster, behind the store seam.
pub struct KubeStore {
    client: Client,
    cache: Store<FeatureRollout>,
    /// The Segments' watch cache; without one, no segment is known.
    segments: Option<Store<Segment>>,
    /// Who writes the events (the pod name in a cluster).
    instance: String,
    /// The status this process last wrote per rollout, with the resource version
    /// the write produced: the watch cache may not have caught up yet, and deciding
    /// from an older status would repeat a transition.
    written: Mutex<HashMap<RolloutKey, (u64, FeatureRolloutStatus)>>,
}

impl KubeStore {
    pub fn new(client: Client, cache: Store<FeatureRollout>, instance: impl Into<String>) -> Self {
        Self {
            client,
            cache,
            segments: None,
            instance: instance.into(),
            written: Mutex::default(),
        }
    }

    /// Reads segments from `cache` (a reflector over every Segment).
    pub fn with_segments(mut self, cache: Store<Segment>) -> Self {
        self.segments = Some(cache);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The rollout as the controller sees it: the cached object, with the status
    /// this process wrote when the cache is older than that write.
    pub fn stored(&self, rollout: &FeatureRollout) -> StoredRollout {
        let mut stored = Self::snapshot(rollout);
        let cached_version = resource_version(rollout);
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((version, mine)) = written.get(&stored.key)
            && cached_version.is_none_or(|cached| cached < *version)
        {
            stored.status = mine.clone();
        }
        stored
    }

    /// The rollout exactly as `rollout` says.
    pub fn snapshot(rollout: &FeatureRollout) -> StoredRollout {
        let key = key_of(rollout);
        StoredRollout {
            source: key.to_string(),
            key,
            generation: rollout.metadata.generation,
            created: rollout.metadata.creation_timestamp.as_ref().map(|t| t.0),
            spec: Ok(std::sync::Arc::new(rollout.spec.clone())),
            status: rollout.status.clone().unwrap_or_default(),
        }
    }

    /// Forgets what it wrote about a rollout that is gone.
    pub fn forget(&self, key: &RolloutKey) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Removes the promote and abort annotations once they were acted on.
    pub async fn clear_requests(&self, key: &RolloutKey) -> anyhow::Result<()> {
        let api: Api<FeatureRollout> = Api::namespaced(self.client.clone(), &key.namespace);
        let annotations: serde_json::Map<String, serde_json::Value> =
            [PROMOTE_ANNOTATION, ABORT_ANNOTATION]
                .into_iter()
                .map(|name| (name.to_string(), serde_json::Value::Null))
                .collect();
        let patch = json!({"metadata": {"annotations": annotations}});
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("clearing the promote/abort request of {key}"))?;
        Ok(())
    }

    fn cached(&self, key: &RolloutKey) -> Option<std::sync::Arc<FeatureRollout>> {
        self.cache.state().into_iter().find(|r| key_of(r) == *key)
    }
}

fn key_of(rollout: &FeatureRollout) -> RolloutKey {
    RolloutKey::new(rollout.namespace().unwrap_or_default(), rollout.name_any())
}

/// Resource versions are opaque to clients, but every etcd-backed API server hands
/// out increasing integers; when one is not, no comparison is made.
fn resource_version(rollout: &FeatureRollout) -> Option<u64> {
    rollout.metadata.resource_version.as_deref()?.parse().ok()
}

/// Every Segment of the cluster, in key order.
pub async fn list_segments(client: &Client) -> anyhow::Result<Vec<StoredSegment>> {
    let api: Api<Segment> = Api::all(client.clone());
    let mut segments: Vec<StoredSegment> = api
        .list(&ListParams::default())
        .await
        .context("listing Segments")?
        .items
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(stored_segment)
        .collect();
    segments.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(segments)
}

fn stored_segment(segment: &Segment) -> StoredSegment {
    let key = RolloutKey::new(segment.namespace().unwrap_or_default(), segment.name_any());
    StoredSegment {
        source: key.to_string(),
        key,
        spec: Ok(segment.spec.clone()),
    }
}

impl RolloutStore for KubeStore {
    /// From the watch cache, once it holds the first list: a rollout must never be
    /// judged against segments not read yet (it would be Invalid for a moment).
    async fn segments(&self) -> anyhow::Result<Vec<StoredSegment>> {
        let Some(cache) = &self.segments else {
            return Ok(Vec::new());
        };
        cache
            .wait_until_ready()
            .await
            .context("the Segment watch ended before its first list")?;
        let mut segments: Vec<StoredSegment> = cache
            .state()
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| stored_segment(s))
            .collect();
        segments.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(segments)
    }

    async fn list(&self) -> anyhow::Result<Vec<StoredRollout>> {
        let mut rollouts: Vec<StoredRollout> = self
            .cache
            .state()
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| self.stored(r))
            .collect();
        rollouts.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(rollouts)
    }

    async fn write_status(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> anyhow::Result<()> {
        let api: Api<FeatureRollout> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({
            "apiVersion": FeatureRollout::api_version(&()),
            "kind": FeatureRollout::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .with_context(|| format!("writing the status of {key}"))?;
        if let Some(version) = resource_version(&written) {
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), (version, status.clone()));
        }
        Ok(())
    }

    async fn record_event(&self, key: &RolloutKey, event: &RolloutEvent) -> anyhow::Result<()> {
        let regarding = match self.cached(key) {
            Some(rollout) => rollout.object_ref(&()),
            None => ObjectReference {
                api_version: Some(FeatureRollout::api_version(&()).into_owned()),
                kind: Some(FeatureRollout::kind(&()).into_owned()),
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
        };
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", key.name, now.as_nanosecond())),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            reason: Some(event.reason.to_string()),
            action: Some(event.reason.to_string()),
            note: Some(event.text(Some(MAX_NOTE_BYTES))),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &key.namespace);
        api.create(&PostParams::default(), &event)
            .await
            .with_context(|| {
                format!(
                    "recording event {} for {key}",
                    event.reason.as_deref().unwrap_or("")
                )
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(note: &str, link: Option<&str>) -> RolloutEvent {
        RolloutEvent {
            type_: EventType::Warning,
            reason: "RolledBack",
            note: note.to_string(),
            link: link.map(str::to_string),
        }
    }

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        let cut = event(&"é".repeat(600), None).text(Some(MAX_NOTE_BYTES));
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(event("short", None).text(Some(MAX_NOTE_BYTES)), "short");
    }

    #[test]
    fn a_cut_note_keeps_its_trace_link_whole() {
        let link = "failed trace http://jaeger:16686/trace/56d2a938713d8e2d08dac64508e13d59";
        let cut = event(&"é".repeat(600), Some(link)).text(Some(MAX_NOTE_BYTES));
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with(&format!("...; {link}")), "{cut}");
        assert_eq!(
            event("rolled back", Some(link)).text(Some(MAX_NOTE_BYTES)),
            format!("rolled back; {link}")
        );
    }
}
