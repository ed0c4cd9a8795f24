//! Store (shell): the one seam between where rollouts live and the controller.
//!
//! The controller lists rollouts and writes their status through [`RolloutStore`];
//! [`FileStore`] keeps them in a folder of YAML files (standalone mode), and
//! [`KubeStore`] in a cluster's API server, and [`MemoryStore`] in memory for
//! `spangate simulate`. The same reconcile code runs on all three.

mod error;
mod file;
mod flagd_file;
mod kube;
mod memory;

pub use error::{SpecError, SpecProblem, StateFileError, TextFormat, UnknownField, UnknownFields};
pub use file::names::state_path;
/// How one rollout file's text is read, public so that the fuzz targets
/// (`tests/fuzz.rs`) read files as [`FileStore`] does.
pub use file::parse as rollout_file;
pub use file::{DEFAULT_MAX_FILE_BYTES, FileStore, write_atomically};
pub use flagd_file::{FlagdFile, Reload};
pub use kube::{FIELD_MANAGER, KubeStore, REPORTING_CONTROLLER, list_segments};
pub use memory::MemoryStore;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::api::{FeatureRolloutSpec, FeatureRolloutStatus, SegmentSpec};
use crate::rollout::EventType;

/// Namespace and name of a rollout (or of a segment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolloutKey {
    pub namespace: String,
    pub name: String,
}

impl RolloutKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for RolloutKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One rollout as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    pub key: RolloutKey,
    /// `metadata.generation`: bumped whenever the spec changes.
    pub generation: Option<i64>,
    /// When the rollout was created (`metadata.creationTimestamp`; in a folder, when
    /// it was first seen): of two rollouts of one flag key, the older keeps it.
    pub created: Option<jiff::Timestamp>,
    /// The spec, or why it could not be read (with the file and position); shared
    /// with the store's cache, so a pass over unchanged rollouts copies no spec.
    pub spec: Result<Arc<FeatureRolloutSpec>, SpecError>,
    pub status: FeatureRolloutStatus,
    /// Where the rollout came from, for messages (a file path, or `namespace/name`).
    pub source: String,
}

/// One segment as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSegment {
    pub key: RolloutKey,
    /// The spec, or why it could not be read (with the file and position).
    pub spec: Result<SegmentSpec, SpecError>,
    /// Where the segment came from, for messages.
    pub source: String,
}

/// An event about a rollout (a transition), as `kubectl describe` would show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
    /// A link into the trace backend (`failed trace URL`), kept whole after the
    /// note even when a store must shorten it.
    pub link: Option<String>,
}

impl RolloutEvent {
    /// The note with its link, in at most `max_bytes` when given: the note is cut
    /// (on a character boundary, with `...`), never the link.
    pub fn text(&self, max_bytes: Option<usize>) -> String {
        let suffix = self
            .link
            .as_ref()
            .map(|link| format!("; {link}"))
            .unwrap_or_default();
        let max = max_bytes.unwrap_or(usize::MAX);
        if self.note.len().saturating_add(suffix.len()) <= max {
            return format!("{}{suffix}", self.note);
        }
        let room = max.saturating_sub(suffix.len() + 3);
        let mut end = room.min(self.note.len());
        while !self.note.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...{suffix}", &self.note[..end])
    }
}

/// Where rollouts are read and their status written.
pub trait RolloutStore: Send + Sync + 'static {
    /// Every rollout, in key order.
    fn list(&self) -> impl Future<Output = anyhow::Result<Vec<StoredRollout>>> + Send;
    /// Every segment, in key order. A change to one re-evaluates every rollout
    /// that uses it on the next pass.
    fn segments(&self) -> impl Future<Output = anyhow::Result<Vec<StoredSegment>>> + Send;
    /// Saves a rollout's status; it must survive a restart.
    fn write_status(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Records an event about a rollout.
    fn record_event(
        &self,
        key: &RolloutKey,
        event: &RolloutEvent,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
