//! Rollouts in a folder of YAML files; their status in a state folder beside them.
//!
//! Users own the rollout files: the store never writes them, and follows a
//! symbolic link only to a file inside the folder (a ConfigMap mount links through
//! `..data`). Each file is read again only when its size, modification time or
//! inode changed, and parsed again only when its bytes did; one over the size
//! limit is never read. A file that stops parsing right after a change (or loses
//! documents, or steps that can be carried out) is read again before it is
//! believed, and until then what it last said stays in force, so a tick that sees
//! a file half written changes nothing.
//!
//! Each rollout's status, and the generation derived from its spec, live in a state
//! file named by a digest of its namespace and name ([`names::state_path`]),
//! written atomically (temporary file + rename), so a restarted process resumes where
//! it stood; state files of the naming before (`<state>/<namespace>/<name>.json`) are
//! read and moved. Events are appended to `<state>/events.jsonl`. The state folder
//! is read when a rollout first appears; this process alone writes it after that.

mod fields;
pub mod names;
pub mod parse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::error::{SpecError, SpecProblem, StateFileError};
use super::{RolloutEvent, RolloutKey, RolloutStore, StoredRollout, StoredSegment};
use crate::api::{FeatureRolloutStatus, Phase};
use crate::rollout::EventType;
use parse::{DEFAULT_NAMESPACE, Parsed};

/// The largest rollout file read, unless told otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A folder of rollout files.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    state_dir: PathBuf,
    max_file_bytes: u64,
    shared: Arc<Shared>,
}

/// What a store and its clones remember between passes.
#[derive(Debug, Default)]
struct Shared {
    files: Mutex<HashMap<OsString, CachedFile>>,
    states: Mutex<HashMap<RolloutKey, State>>,
    /// The file each rollout key was first seen in: a second file naming the same
    /// rollout is the one refused.
    owners: Mutex<HashMap<RolloutKey, OsString>>,
    files_read: AtomicU64,
    /// The segments of the last listing's scan, for the `segments` call that
    /// follows it in a pass, so the folder is walked once a pass, not twice.
    listed_segments: Mutex<Option<Vec<StoredSegment>>>,
}

/// A file as last read.
#[derive(Debug)]
struct CachedFile {
    stamp: Stamp,
    /// Digest of the bytes last read.
    digest: [u8; 32],
    /// What is in force: the last parse, or the last good one while a change that
    /// does not parse waits for a second look.
    parsed: Arc<Parsed>,
    /// Digest of bytes that did not parse while `parsed` stayed in force.
    failed: Option<[u8; 32]>,
}

/// What tells that a file changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// A rollout's state, as this process holds it.
#[derive(Debug, Clone, Default)]
struct State {
    file: StateFile,
    /// Why the state file cannot be read; it is then left as it is (status lives
    /// in memory only) and read again on every pass until it is fixed or removed.
    corrupt: Option<StateFileError>,
    /// Whether the rollout's file (or state) cannot be read right now.
    unreadable: bool,
}

/// What is kept per rollout in the state folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    /// Whose state this is, for people reading the folder.
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    /// When the rollout was first seen: the older of two rollouts of one flag key
    /// keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    generation: i64,
    /// Hash of the last readable spec: the generation belongs to it.
    spec_hash: String,
    #[serde(default)]
    status: FeatureRolloutStatus,
    /// The status before the rollout's file stopped being readable: restored when
    /// the file says again what it said then, so that a file rewritten with the same
    /// content never restarts a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suspended: Option<FeatureRolloutStatus>,
}

/// One rollout document, with the file it came from.
struct Found {
    file: OsString,
    source: String,
    parsed: Arc<Parsed>,
    index: usize,
}

/// A rollout as listed: where it came from, its spec (or why there is none) and
/// the spec's hash.
type Listed = (
    String,
    Result<Arc<crate::api::FeatureRolloutSpec>, SpecError>,
    String,
);

/// Every file of the folder, as read (or remembered) on this pass, in name order.
struct Scan {
    files: Vec<(OsString, String, Arc<Parsed>)>,
}

impl FileStore {
    /// A store over `dir`, keeping state in `state_dir` (default `<dir>/.spangate`).
    pub fn new(dir: impl Into<PathBuf>, state_dir: Option<PathBuf>) -> Self {
        let dir = dir.into();
        let state_dir = state_dir.unwrap_or_else(|| dir.join(".spangate"));
        Self {
            dir,
            state_dir,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            shared: Arc::default(),
        }
    }

    /// Refuses to read rollout files larger than `bytes` (they are Invalid).
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times a rollout file was read since the store was made.
    pub fn files_read(&self) -> u64 {
        self.shared.files_read.load(Ordering::Relaxed)
    }

    fn files(&self) -> MutexGuard<'_, HashMap<OsString, CachedFile>> {
        self.shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn listed_segments(&self) -> MutexGuard<'_, Option<Vec<StoredSegment>>> {
        self.shared
            .listed_segments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn states(&self) -> MutexGuard<'_, HashMap<RolloutKey, State>> {
        self.shared
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the state of `key` from the state folder (or the legacy path).
    fn load_state(&self, key: &RolloutKey, persist: bool) -> State {
        let path = names::state_path(&self.state_dir, key);
        let (found, from_legacy) = match read_state_file(&path) {
            Ok(None) => match names::legacy_state_path(&self.state_dir, key) {
                Some(legacy) => (
                    read_state_file(&legacy).map(|s| s.map(|s| (s, legacy))),
                    true,
                ),
                None => (Ok(None), false),
            },
            other => (other.map(|s| s.map(|s| (s, path.clone()))), false),
        };
        match found {
            Ok(None) => State::default(),
            Ok(Some((mut file, read_from))) => {
                if file.created_at.is_none() {
                    // Written before creation times were kept: the oldest transition.
                    file.created_at = file.status.history.iter().map(|t| t.at.0).min();
                }
                if from_legacy && persist {
                    let moved = serde_json::to_vec_pretty(&StateFile {
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        ..file.clone()
                    })
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| write_atomically(&path, &bytes));
                    match moved {
                        Ok(()) => {
                            let _ = std::fs::remove_file(&read_from);
                        }
                        Err(e) => {
                            tracing::warn!(rollout = %key, error = format!("{e:#}"), "could not move a state file to its new name")
                        }
                    }
                }
                State {
                    file,
                    ..State::default()
                }
            }
            Err(error) => State {
                corrupt: Some(error),
                ..State::default()
            },
        }
    }

    fn write_state(&self, key: &RolloutKey, state: &StateFile) -> anyhow::Result<()> {
        let path = names::state_path(&self.state_dir, key);
        let bytes = serde_json::to_vec_pretty(state)?;
        write_atomically(&path, &bytes)
    }

    /// Every rollout file of the folder, read only when it changed.
    fn scan(&self) -> anyhow::Result<Scan> {
        let canonical_dir = std::fs::canonicalize(&self.dir)
            .with_context(|| format!("reading rollout folder {}", self.dir.display()))?;
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading rollout folder {}", self.dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| is_rollout_file_name(&e.file_name()))
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        let mut cache = self.files();
        let mut files = Vec::with_capacity(entries.len());
        let mut seen = HashSet::with_capacity(entries.len());
        for entry in entries {
            let name = entry.file_name();
            let path = entry.path();
            let source = path.display().to_string();
            let Some(parsed) = self.read_file(&entry, &canonical_dir, &source, &mut cache) else {
                continue;
            };
            seen.insert(name.clone());
            files.push((name, source, parsed));
        }
        cache.retain(|name, _| seen.contains(name));
        Ok(Scan { files })
    }

    /// What `entry` says now (`None`: it is not a rollout file, or is gone).
    fn read_file(
        &self,
        entry: &std::fs::DirEntry,
        canonical_dir: &Path,
        source: &str,
        cache: &mut HashMap<OsString, CachedFile>,
    ) -> Option<Arc<Parsed>> {
        let path = entry.path();
        let file_type = entry.file_type().ok()?;
        if file_type.is_symlink() {
            // A dangling link is a file that is gone.
            let target = std::fs::canonicalize(&path).ok()?;
            if !target.starts_with(canonical_dir) {
                cache.remove(&entry.file_name());
                return Some(Arc::new(Parsed::unreadable(SpecError::in_file(
                    source,
                    SpecProblem::LinkOutsideFolder,
                ))));
            }
        }
        // Follows a link inside the folder.
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let stamp = Stamp::of(&meta);
        let name = entry.file_name();
        if let Some(cached) = cache.get(&name)
            && cached.stamp == stamp
            && cached.failed.is_none()
        {
            return Some(cached.parsed.clone());
        }
        if meta.len() > self.max_file_bytes {
            return Some(self.remember(
                cache,
                name,
                stamp,
                [0; 32],
                Arc::new(Parsed::unreadable(self.too_large(source, meta.len()))),
            ));
        }
        let bytes = match read_at_most(&path, self.max_file_bytes) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(Arc::new(Parsed::unreadable(SpecError::in_file(
                    source,
                    SpecProblem::Unreadable {
                        message: e.to_string(),
                    },
                ))));
            }
        };
        self.shared.files_read.fetch_add(1, Ordering::Relaxed);
        if bytes.len() as u64 > self.max_file_bytes {
            return Some(self.remember(
                cache,
                name,
                stamp,
                [0; 32],
                Arc::new(Parsed::unreadable(
                    self.too_large(source, bytes.len() as u64),
                )),
            ));
        }
        let digest = digest(&bytes);
        if let Some(cached) = cache.get_mut(&name)
            && cached.digest == digest
            && cached.failed.is_none()
        {
            // Rewritten with the same bytes.
            cached.stamp = stamp;
            return Some(cached.parsed.clone());
        }
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let is_json = Path::new(&name).extension().is_some_and(|e| e == "json");
                parse::parse(source, is_json, text)
            }
            Err(e) => Parsed::unreadable(SpecError::in_file(
                source,
                SpecProblem::NotUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            )),
        };
        let suspect = |cached: &CachedFile| {
            parsed.looks_cut_short_of(&cached.parsed) && cached.failed != Some(digest)
        };
        if let Some(cached) = cache.get_mut(&name)
            && suspect(cached)
        {
            // Perhaps caught half written: look again next pass before believing it.
            tracing::debug!(
                file = source,
                "a rollout file changed and does not parse; reading it again next pass"
            );
            cached.stamp = stamp;
            cached.digest = digest;
            cached.failed = Some(digest);
            return Some(cached.parsed.clone());
        }
        Some(self.remember(cache, name, stamp, digest, Arc::new(parsed)))
    }

    fn remember(
        &self,
        cache: &mut HashMap<OsString, CachedFile>,
        name: OsString,
        stamp: Stamp,
        digest: [u8; 32],
        parsed: Arc<Parsed>,
    ) -> Arc<Parsed> {
        cache.insert(
            name,
            CachedFile {
                stamp,
                digest,
                parsed: parsed.clone(),
                failed: None,
            },
        );
        parsed
    }

    fn too_large(&self, source: &str, len: u64) -> SpecError {
        SpecError::in_file(
            source,
            SpecProblem::TooLarge {
                bytes: len,
                limit: self.max_file_bytes,
            },
        )
    }
}

fn is_rollout_file_name(name: &std::ffi::OsStr) -> bool {
    let path = Path::new(name);
    !name.to_string_lossy().starts_with('.')
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// The first `limit + 1` bytes of `path` at most: enough to tell it is too large.
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The state file at `path`: `Ok(None)` when there is none, `Err` when it cannot
/// be read.
fn read_state_file(path: &Path) -> Result<Option<StateFile>, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateFileError::Corrupt {
                    path: path.to_path_buf(),
                    message: parse::scrub(&e.to_string()),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateFileError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
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

impl FileStore {
    /// Lists the rollouts; with `persist`, records new generations in the state folder.
    fn list_now(&self, persist: bool) -> anyhow::Result<Vec<StoredRollout>> {
        let scan = self.scan()?;
        *self.listed_segments() = Some(segments_of(&scan));
        let mut by_key: BTreeMap<RolloutKey, Vec<Found>> = BTreeMap::new();
        let mut unnamed: Vec<Found> = Vec::new();
        for (file, source, parsed) in &scan.files {
            for (index, doc) in parsed.rollouts.iter().enumerate() {
                let found = Found {
                    file: file.clone(),
                    source: source.clone(),
                    parsed: parsed.clone(),
                    index,
                };
                match &doc.key {
                    Some(key) => by_key.entry(key.clone()).or_default().push(found),
                    None => unnamed.push(found),
                }
            }
        }
        let mut rollouts = self.named(by_key, &mut unnamed);
        // Documents without a name of their own are reported under their file's.
        for found in unnamed {
            let doc = &found.parsed.rollouts[found.index];
            let key = fallback_key(&found.file, doc.index, |k| rollouts.contains_key(k));
            rollouts.insert(
                key.clone(),
                (found.source.clone(), doc.spec.clone(), String::new()),
            );
        }
        let mut states = self.states();
        states.retain(|key, _| rollouts.contains_key(key));
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(rollouts.len());
        for (key, (source, mut spec, hash)) in rollouts {
            if states.get(&key).is_none_or(|s| s.corrupt.is_some()) {
                let mut loaded = self.load_state(&key, persist);
                if loaded.corrupt.is_some()
                    && let Some(previous) = states.get(&key)
                {
                    // Still corrupt: keep the status held in memory.
                    loaded.file = previous.file.clone();
                }
                states.insert(key.clone(), loaded);
            }
            let Some(state) = states.get_mut(&key) else {
                continue;
            };
            if let Some(error) = &state.corrupt {
                spec = Err(SpecError::in_file(
                    &source,
                    SpecProblem::State {
                        key: key.clone(),
                        error: Box::new(error.clone()),
                    },
                ));
            }
            state.unreadable = spec.is_err();
            let file = &mut state.file;
            let mut changed = false;
            if file.created_at.is_none() {
                file.created_at = Some(now);
                changed = true;
            }
            if spec.is_ok() && file.spec_hash != hash {
                // A new readable spec: a new generation, as the API server does it.
                file.generation += 1;
                file.spec_hash = hash;
                file.suspended = None;
                changed = true;
            } else if spec.is_ok() && file.status.phase == Phase::Invalid {
                // The file says again what it said before it became unreadable.
                if let Some(before) = file.suspended.take() {
                    file.status = before;
                    changed = true;
                }
            }
            if changed && persist && state.corrupt.is_none() {
                file.namespace.clone_from(&key.namespace);
                file.name.clone_from(&key.name);
                if let Err(e) = self.write_state(&key, file) {
                    spec = Err(SpecError::in_file(
                        &source,
                        SpecProblem::StateNotSaved {
                            key: key.clone(),
                            message: format!("{e:#}"),
                        },
                    ));
                }
            }
            let mut status = file.status.clone();
            if let (false, Some(_), Err(error)) = (persist, &state.corrupt, &spec) {
                // Only the running process holds this status: say what it would.
                status.phase = Phase::Invalid;
                status.message = Some(error.to_string());
            }
            out.push(StoredRollout {
                generation: Some(file.generation.max(1)),
                created: file.created_at,
                status,
                key,
                spec,
                source,
            });
        }
        Ok(out)
    }

    /// The rollouts that name themselves, one per key: a key defined by a second
    /// file is refused in that file (which joins `unnamed`), the first keeps it.
    fn named(
        &self,
        by_key: BTreeMap<RolloutKey, Vec<Found>>,
        unnamed: &mut Vec<Found>,
    ) -> BTreeMap<RolloutKey, Listed> {
        let mut owners = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        owners.retain(|key, _| by_key.contains_key(key));
        let mut out = BTreeMap::new();
        for (key, mut found) in by_key {
            let owner = owners
                .get(&key)
                .and_then(|file| found.iter().position(|f| f.file == *file))
                .unwrap_or(0);
            let first = found.remove(owner);
            owners.insert(key.clone(), first.file.clone());
            let doc = &first.parsed.rollouts[first.index];
            let mut spec = doc.spec.clone();
            for other in found {
                if other.file == first.file {
                    spec = Err(SpecError::in_file(
                        &first.source,
                        SpecProblem::DefinedTwice { key: key.clone() },
                    ));
                    continue;
                }
                let error = SpecError::in_file(
                    &other.source,
                    SpecProblem::AlreadyDefined {
                        key: key.clone(),
                        first: first.source.clone(),
                    },
                );
                unnamed.push(Found {
                    parsed: Arc::new(Parsed::unreadable(error)),
                    index: 0,
                    ..other
                });
            }
            out.insert(key, (first.source, spec, doc.hash.clone()));
        }
        out
    }

    /// Every segment document, as the last listing found them if no segments were
    /// asked for since, else as the folder holds them now.
    fn segments_now(&self) -> anyhow::Result<Vec<StoredSegment>> {
        if let Some(listed) = self.listed_segments().take() {
            return Ok(listed);
        }
        Ok(segments_of(&self.scan()?))
    }

    fn write_status_now(
        &self,
        key: &RolloutKey,
        status: &FeatureRolloutStatus,
    ) -> anyhow::Result<()> {
        let mut states = self.states();
        let state = states
            .get_mut(key)
            .with_context(|| format!("rollout {key} has no state yet; list it first"))?;
        let file = &mut state.file;
        if state.unreadable
            && status.phase == Phase::Invalid
            && file.status.phase != Phase::Invalid
            && file.suspended.is_none()
        {
            file.suspended = Some(file.status.clone());
        } else if status.phase != Phase::Invalid {
            file.suspended = None;
        }
        file.status = status.clone();
        if state.corrupt.is_some() {
            // The corrupt file is left for whoever fixes it; the status lives in memory.
            return Ok(());
        }
        self.write_state(key, file)
    }

    fn record_event_now(&self, key: &RolloutKey, event: &RolloutEvent) -> anyhow::Result<()> {
        use std::io::Write;
        let line = serde_json::json!({
            "at": jiff::Timestamp::now().to_string(),
            "rollout": key.to_string(),
            "type": match event.type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "reason": event.reason,
            "note": event.text(None),
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

/// The key a document without a name of its own is reported under: its file's
/// stem (`broken` for `broken.yaml`), or the whole file name when a rollout
/// already has that one.
fn fallback_key(
    file: &std::ffi::OsStr,
    index: usize,
    taken: impl Fn(&RolloutKey) -> bool,
) -> RolloutKey {
    let path = Path::new(file);
    let stem = path.file_stem().unwrap_or(file).to_string_lossy();
    let whole = file.to_string_lossy();
    let numbered = |base: &str| match index {
        0 => base.to_string(),
        n => format!("{base}-{n}"),
    };
    [numbered(&stem), numbered(&whole)]
        .into_iter()
        .map(|name| RolloutKey::new(DEFAULT_NAMESPACE, name))
        .find(|key| !taken(key))
        .unwrap_or_else(|| RolloutKey::new(DEFAULT_NAMESPACE, format!("{whole}#{index}")))
}

/// Every segment document of `scan`; a name defined twice is an error on both.
fn segments_of(scan: &Scan) -> Vec<StoredSegment> {
    let mut by_key: BTreeMap<RolloutKey, StoredSegment> = BTreeMap::new();
    for (_, source, parsed) in &scan.files {
        for segment in &parsed.segments {
            match by_key.get_mut(&segment.key) {
                Some(first) => {
                    first.spec = Err(SpecError::in_file(
                        source,
                        SpecProblem::SegmentDefinedTwice {
                            key: segment.key.clone(),
                            first: first.source.clone(),
                        },
                    ));
                }
                None => {
                    by_key.insert(
                        segment.key.clone(),
                        StoredSegment {
                            key: segment.key.clone(),
                            spec: segment.spec.clone(),
                            source: source.clone(),
                        },
                    );
                }
            }
        }
    }
    by_key.into_values().collect()
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
