//! Rollouts in a folder of YAML files; their status in a state folder beside them.
//!
//! Users own the rollout files: the store never writes them. Each rollout's status,
//! and the generation derived from its spec, live in `<state>/<namespace>/<name>.json`,
//! written atomically (temporary file + rename), so a restarted process resumes where
//! it stood. Events are appended to `<state>/events.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{RolloutEvent, RolloutKey, RolloutStore, StoredRollout, StoredSegment};
use crate::api::{FeatureRolloutSpec, FeatureRolloutStatus, GROUP, SegmentSpec, VERSION};
use crate::rollout::EventType;

const DEFAULT_NAMESPACE: &str = "default";

/// A folder of rollout files.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    state_dir: PathBuf,
}

/// What is kept per rollout in the state folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    generation: i64,
    /// Hash of the spec the generation belongs to.
    spec_hash: String,
    #[serde(default)]
    status: FeatureRolloutStatus,
}

impl FileStore {
    /// A store over `dir`, keeping state in `state_dir` (default `<dir>/.spangate`).
    pub fn new(dir: impl Into<PathBuf>, state_dir: Option<PathBuf>) -> Self {
        let dir = dir.into();
        let state_dir = state_dir.unwrap_or_else(|| dir.join(".spangate"));
        Self { dir, state_dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self, key: &RolloutKey) -> PathBuf {
        self.state_dir
            .join(&key.namespace)
            .join(format!("{}.json", key.name))
    }

    fn read_state(&self, key: &RolloutKey) -> anyhow::Result<Option<StateFile>> {
        let path = self.state_path(key);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("state file {} is corrupt", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn write_state(&self, key: &RolloutKey, state: &StateFile) -> anyhow::Result<()> {
        let path = self.state_path(key);
        let bytes = serde_json::to_vec_pretty(state)?;
        write_atomically(&path, &bytes)
    }

    /// Reads every rollout and segment document in the folder, in file-name order.
    fn read_documents(&self) -> anyhow::Result<Documents> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading rollout folder {}", self.dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| is_rollout_file(p))
            .collect();
        paths.sort();
        let mut documents = Documents::default();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Deleted between listing and reading: it is simply gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    documents.rollouts.push(Document::unreadable(
                        &path,
                        0,
                        format!("cannot read: {e}"),
                    ));
                    continue;
                }
            };
            parse_file(&path, &text, &mut documents);
        }
        Ok(documents)
    }
}

fn is_rollout_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && path.is_file()
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("state path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Per process, so `spangate get` and a running server never share a temporary.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The documents of the folder, by kind.
#[derive(Default)]
struct Documents {
    rollouts: Vec<Document>,
    segments: Vec<StoredSegment>,
}

/// One YAML document of a rollout file.
struct Document {
    key: RolloutKey,
    spec: Result<FeatureRolloutSpec, String>,
    source: String,
}

impl Document {
    fn unreadable(path: &Path, index: usize, message: String) -> Self {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("rollout");
        let name = if index == 0 {
            stem.to_string()
        } else {
            format!("{stem}-{index}")
        };
        Self {
            key: RolloutKey::new(DEFAULT_NAMESPACE, name),
            spec: Err(format!("{}: {message}", path.display())),
            source: path.display().to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    spec: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
}

fn parse_file(path: &Path, text: &str, documents: &mut Documents) {
    let out = &mut documents.rollouts;
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let values: Vec<Result<serde_norway::Value, String>> = if is_json {
        vec![serde_json::from_str(text).map_err(|e| e.to_string())]
    } else {
        let mut values = Vec::new();
        for doc in serde_norway::Deserializer::from_str(text) {
            let value = serde_norway::Value::deserialize(doc).map_err(|e| e.to_string());
            let failed = value.is_err();
            values.push(value);
            // After a syntax error the stream keeps yielding the same error forever.
            if failed {
                break;
            }
        }
        values
    };
    for (index, value) in values.into_iter().enumerate() {
        let value = match value {
            Ok(serde_norway::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(Document::unreadable(
                    path,
                    index,
                    format!("not valid YAML: {e}"),
                ));
                continue;
            }
        };
        let envelope: Envelope = match serde_norway::from_value(value) {
            Ok(e) => e,
            Err(e) => {
                out.push(Document::unreadable(
                    path,
                    index,
                    format!("not a resource: {e}"),
                ));
                continue;
            }
        };
        let kind = envelope.kind.as_deref().unwrap_or("");
        // Other kinds (ConfigMap...) may share the folder.
        if kind != "FeatureRollout" && kind != "Segment" {
            continue;
        }
        let expected_api = format!("{GROUP}/{VERSION}");
        let Some(name) = envelope.metadata.name.filter(|n| !n.is_empty()) else {
            out.push(Document::unreadable(
                path,
                index,
                "metadata.name is missing".into(),
            ));
            continue;
        };
        let key = RolloutKey::new(
            envelope
                .metadata
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name,
        );
        let source = path.display().to_string();
        let wrong_api =
            (envelope.api_version.as_deref() != Some(expected_api.as_str())).then(|| {
                format!(
                    "{source}: apiVersion is {:?}; {kind} is {expected_api}",
                    envelope.api_version.clone().unwrap_or_default()
                )
            });
        if kind == "Segment" {
            let spec = match (wrong_api, envelope.spec) {
                (Some(message), _) => Err(message),
                // A segment with no spec is an empty one, as the API server would have it.
                (None, None) => Ok(SegmentSpec::default()),
                (None, Some(spec)) => serde_norway::from_value::<SegmentSpec>(spec)
                    .map_err(|e| format!("{source}: spec: {e}")),
            };
            documents.segments.push(StoredSegment { key, spec, source });
            continue;
        }
        let spec = if let Some(message) = wrong_api {
            Err(message)
        } else {
            match envelope.spec {
                None => Err(format!("{source}: spec is missing")),
                Some(spec) => serde_norway::from_value::<FeatureRolloutSpec>(spec)
                    .map_err(|e| format!("{source}: spec: {e}")),
            }
        };
        out.push(Document { key, spec, source });
    }
}

fn spec_hash(spec: &Result<FeatureRolloutSpec, String>) -> String {
    let text = match spec {
        Ok(spec) => serde_json::to_string(spec).unwrap_or_default(),
        Err(message) => format!("unreadable:{message}"),
    };
    crate::fingerprint::fnv1a_hex(text.as_bytes())
}

impl FileStore {
    /// Lists the rollouts; with `persist`, records new generations in the state folder.
    fn list_now(&self, persist: bool) -> anyhow::Result<Vec<StoredRollout>> {
        let mut by_key: BTreeMap<RolloutKey, StoredRollout> = BTreeMap::new();
        for doc in self.read_documents()?.rollouts {
            if let Some(first) = by_key.get(&doc.key) {
                let message = format!(
                    "{}: rollout {} is also defined in {}; names must be unique",
                    doc.source, doc.key, first.source
                );
                if let Some(existing) = by_key.get_mut(&doc.key) {
                    existing.spec = Err(message);
                }
                continue;
            }
            by_key.insert(
                doc.key.clone(),
                StoredRollout {
                    key: doc.key,
                    generation: None,
                    spec: doc.spec,
                    status: FeatureRolloutStatus::default(),
                    source: doc.source,
                },
            );
        }
        for rollout in by_key.values_mut() {
            let hash = spec_hash(&rollout.spec);
            let mut state = self.read_state(&rollout.key)?.unwrap_or_default();
            if state.spec_hash != hash {
                // The spec changed (or is new): a new generation, as the API server does it.
                state.generation += 1;
                state.spec_hash = hash;
                if persist {
                    self.write_state(&rollout.key, &state)?;
                }
            }
            rollout.generation = Some(state.generation);
            rollout.status = state.status;
        }
        Ok(by_key.into_values().collect())
    }

    /// Every segment document; a name defined twice is an error on both.
    fn segments_now(&self) -> anyhow::Result<Vec<StoredSegment>> {
        let mut by_key: BTreeMap<RolloutKey, StoredSegment> = BTreeMap::new();
        for segment in self.read_documents()?.segments {
            match by_key.get_mut(&segment.key) {
                Some(first) => {
                    first.spec = Err(format!(
                        "{}: segment {} is also defined in {}; names must be unique",
                        segment.source, segment.key, first.source
                    ));
                }
                None => {
                    by_key.insert(segment.key.clone(), segment);
                }
            }
        }
        Ok(by_key.into_values().collect())
    }

    fn write_status_now(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> anyhow::Result<()> {
        let mut state = self
            .read_state(key)?
            .with_context(|| format!("rollout {key} has no state yet; list it first"))?;
        state.status = status.clone();
        self.write_state(key, &state)
    }

    fn record_event_now(&self, key: &RolloutKey, event: &RolloutEvent) -> anyhow::Result<()> {
        use std::io::Write;
        let line = serde_json::json!({
            "at": jiff::Timestamp::now().to_string(),
            "rollout": key.to_string(),
            "type": match event.type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "reason": event.reason,
            "note": event.note,
        });
        std::fs::create_dir_all(&self.state_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("events.jsonl"))?;
        writeln!(file, "{line}")?;
        Ok(())
    }

    /// Events recorded so far for `key`, oldest first, as (reason, note).
    pub fn events(&self, key: &RolloutKey) -> anyhow::Result<Vec<(String, String)>> {
        let path = self.state_dir.join("events.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let wanted = key.to_string();
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["rollout"] == wanted.as_str())
            .map(|v| {
                (
                    v["reason"].as_str().unwrap_or_default().to_string(),
                    v["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

impl RolloutStore for FileStore {
    async fn list(&self) -> anyhow::Result<Vec<StoredRollout>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.list_now(true)).await?
    }

    async fn segments(&self) -> anyhow::Result<Vec<StoredSegment>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.segments_now()).await?
    }

    async fn write_status(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> anyhow::Result<()> {
        let (store, key, status) = (self.clone(), key.clone(), status.clone());
        tokio::task::spawn_blocking(move || store.write_status_now(&key, &status)).await?
    }

    async fn record_event(&self, key: &RolloutKey, event: &RolloutEvent) -> anyhow::Result<()> {
        let (store, key, event) = (self.clone(), key.clone(), event.clone());
        tokio::task::spawn_blocking(move || store.record_event_now(&key, &event)).await?
    }
}

impl FileStore {
    /// Lists without writing anything, for commands that only look (`spangate get`).
    pub fn list_read_only(&self) -> anyhow::Result<Vec<StoredRollout>> {
        self.list_now(false)
    }

    /// The segments, for commands that only look (`spangate export`).
    pub fn segments_read_only(&self) -> anyhow::Result<Vec<StoredSegment>> {
        self.segments_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Document> {
        parse_all(text).rollouts
    }

    fn parse_all(text: &str) -> Documents {
        let mut out = Documents::default();
        parse_file(Path::new("rollouts/x.yaml"), text, &mut out);
        out
    }

    #[test]
    fn a_syntax_error_is_one_unreadable_document() {
        let docs = parse("kind: FeatureRollout\nspec: {flag: [\n");
        assert_eq!(docs.len(), 1);
        let message = docs[0].spec.as_ref().unwrap_err();
        assert!(
            message.starts_with("rollouts/x.yaml: not valid YAML"),
            "{message}"
        );
    }

    #[test]
    fn segments_are_read_beside_rollouts() {
        let docs = parse_all(
            "apiVersion: spangate.dev/v1alpha1\nkind: Segment\nmetadata: {name: beta, namespace: shop}\nspec: {included: [u1]}\n---\napiVersion: spangate.dev/v1\nkind: Segment\nmetadata: {name: old}\n",
        );
        assert!(docs.rollouts.is_empty());
        assert_eq!(docs.segments.len(), 2);
        assert_eq!(docs.segments[0].key, RolloutKey::new("shop", "beta"));
        assert_eq!(
            docs.segments[0].spec.as_ref().unwrap().included,
            vec!["u1".to_string()]
        );
        let wrong = docs.segments[1].spec.as_ref().unwrap_err();
        assert!(
            wrong.contains("Segment is spangate.dev/v1alpha1"),
            "{wrong}"
        );
    }

    #[test]
    fn other_kinds_are_skipped_and_wrong_api_versions_named() {
        let docs = parse(
            "kind: ConfigMap\nmetadata: {name: beta}\n---\napiVersion: spangate.dev/v2\nkind: FeatureRollout\nmetadata: {name: a}\nspec: {}\n",
        );
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].key, RolloutKey::new("default", "a"));
        assert!(
            docs[0]
                .spec
                .as_ref()
                .unwrap_err()
                .contains("apiVersion is \"spangate.dev/v2\"")
        );
    }
}
