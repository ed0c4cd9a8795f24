//! What the process serves from the rollouts: the flag set (OFREP, the flagd export)
//! and the span routes (ingest), kept per rollout so that one rollout can be
//! reconciled — or forgotten — without looking at the others.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::SpanWindows;
use crate::analysis::Route;
use crate::api::Phase;
use crate::fingerprint::fnv1a;
use crate::flags::{Flag, FlagSet};
use crate::serve::PublishedFlags;
use crate::store::RolloutKey;

/// What one rollout contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub phase: Phase,
    pub flag: Option<Flag>,
    pub route: Option<Route>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<RolloutKey, Entry>,
    /// Flags served besides the rollouts' (a flagd file), where no rollout serves
    /// the key.
    extra: Vec<Flag>,
    version: Option<u64>,
    routes: Vec<Route>,
}

/// The per-rollout entries and where they are published. Clones share everything.
#[derive(Clone)]
pub struct Publisher {
    state: Arc<Mutex<State>>,
    flags: PublishedFlags,
    windows: Arc<dyn SpanWindows>,
    /// The current flag set's version, for whoever writes it elsewhere (the ConfigMap).
    changes: watch::Sender<u64>,
}

impl Publisher {
    pub fn new(flags: PublishedFlags, windows: Arc<dyn SpanWindows>) -> Self {
        let version = flags.load().version();
        Self {
            state: Arc::default(),
            flags,
            windows,
            changes: watch::channel(version).0,
        }
    }

    /// The flag set served right now.
    pub fn flags(&self) -> &PublishedFlags {
        &self.flags
    }

    /// Notified whenever the served flag set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Sets what `key` contributes.
    pub fn set(&self, key: &RolloutKey, entry: Entry) {
        self.update(|entries| {
            entries.insert(key.clone(), entry);
        });
    }

    /// Forgets `key` (its rollout was deleted).
    pub fn remove(&self, key: &RolloutKey) {
        self.update(|entries| {
            entries.remove(key);
        });
    }

    /// Serves `flags` besides the rollouts' flags; returns the keys a rollout
    /// serves instead.
    pub fn set_extra(&self, flags: Vec<Flag>) -> Vec<String> {
        let mut state = self.lock();
        state.extra = flags;
        let shadowed = state
            .extra
            .iter()
            .filter(|f| {
                state
                    .entries
                    .values()
                    .any(|e| e.flag.as_ref().is_some_and(|mine| mine.key == f.key))
            })
            .map(|f| f.key.clone())
            .collect();
        drop(state);
        self.update(|_| {});
        shadowed
    }

    /// Sets what each rollout of `entries` contributes and forgets every rollout
    /// not in `keys`, publishing once.
    pub fn set_all(&self, entries: Vec<(RolloutKey, Entry)>, keys: &HashSet<&RolloutKey>) {
        {
            // Most passes change nothing: then the flag set is not rebuilt.
            let state = self.lock();
            let unchanged = entries.len() == state.entries.len()
                && entries
                    .iter()
                    .all(|(key, entry)| state.entries.get(key) == Some(entry))
                && state.entries.keys().all(|key| keys.contains(key));
            if unchanged {
                return;
            }
        }
        self.update(|map| {
            map.extend(entries);
            map.retain(|key, _| keys.contains(key));
        });
    }

    /// Forgets every rollout but `keys`.
    pub fn retain(&self, keys: &[RolloutKey]) {
        self.update(|entries| entries.retain(|key, _| keys.binary_search(key).is_ok()));
    }

    /// The rollouts whose spans are being judged.
    pub fn routed(&self) -> Vec<RolloutKey> {
        let state = self.lock();
        state
            .entries
            .iter()
            .filter(|(_, entry)| entry.route.is_some())
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// How many rollouts are in each phase (every phase listed), for `/metrics`.
    pub fn phases(&self) -> Vec<(Phase, usize)> {
        let state = self.lock();
        [
            Phase::Pending,
            Phase::Progressing,
            Phase::Paused,
            Phase::Promoted,
            Phase::RolledBack,
            Phase::Invalid,
            Phase::Serving,
        ]
        .into_iter()
        .map(|phase| {
            let count = state.entries.values().filter(|e| e.phase == phase).count();
            (phase, count)
        })
        .collect()
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<RolloutKey, Entry>)) {
        let mut state = self.lock();
        change(&mut state.entries);
        let mut flags: Vec<Flag> = state
            .entries
            .values()
            .filter_map(|e| e.flag.clone())
            .collect();
        let mine: HashSet<&str> = flags.iter().map(|f| f.key.as_str()).collect();
        let extra: Vec<Flag> = state
            .extra
            .iter()
            .filter(|f| !mine.contains(f.key.as_str()))
            .cloned()
            .collect();
        flags.extend(extra);
        let routes: Vec<Route> = state
            .entries
            .values()
            .filter_map(|e| e.route.clone())
            .collect();
        let version = content_version(&flags);
        if state.version != Some(version) {
            self.flags.store(Arc::new(FlagSet::new(flags, version)));
            state.version = Some(version);
            self.changes.send_replace(version);
        }
        if routes != state.routes {
            self.windows.set_routes(routes.clone());
            state.routes = routes;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state whole before it can panic (publishing reads it).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Changes exactly when any served flag changes; the OFREP bulk ETag. A content
/// hash rather than a counter, so it is the same after a restart.
fn content_version(flags: &[Flag]) -> u64 {
    let prints: Vec<String> = flags
        .iter()
        .map(|f| format!("{:016x}", f.fingerprint()))
        .collect();
    fnv1a(prints.join(",").as_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use arc_swap::ArcSwap;
    use serde_json::json;

    use super::*;
    use crate::analysis::{Window, WindowEpoch};
    use crate::flags::Variant;

    /// Counts how often ingest is handed routes.
    #[derive(Default)]
    struct RouteCount(AtomicU64);

    impl SpanWindows for RouteCount {
        fn window(&self, _: &str, _: WindowEpoch) -> Window {
            Window::default()
        }

        fn downstream_windows(&self, _: &str, _: WindowEpoch) -> Vec<(String, Window)> {
            Vec::new()
        }

        fn set_routes(&self, _: Vec<Route>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }

        fn samples_recorded(&self) -> u64 {
            0
        }
    }

    fn entry(key: &str, default_variant: usize) -> Entry {
        let variants = ["off", "on"]
            .map(|name| Variant {
                name: name.to_string(),
                value: json!(name == "on"),
            })
            .to_vec();
        Entry {
            phase: Phase::Progressing,
            flag: Some(Flag::new(key, variants, default_variant)),
            route: Some(Route {
                rollout: format!("ns/{key}"),
                service: "checkout".to_string(),
                downstream: Vec::new(),
                flag_key: key.to_string(),
                revision: None,
                baseline_variant: "off".to_string(),
                candidate_variant: "on".to_string(),
                bucket_by: None,
                epoch: WindowEpoch(1),
                step: None,
            }),
        }
    }

    #[test]
    fn a_pass_that_changes_nothing_publishes_nothing() {
        let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
        let routes = Arc::new(RouteCount::default());
        let publisher = Publisher::new(flags.clone(), routes.clone());
        let mut changes = publisher.subscribe();
        let (a, b) = (RolloutKey::new("ns", "a"), RolloutKey::new("ns", "b"));
        let keys: HashSet<&RolloutKey> = [&a, &b].into_iter().collect();
        let pass = |default_b| {
            vec![
                (a.clone(), entry("fa", 0)),
                (b.clone(), entry("fb", default_b)),
            ]
        };

        publisher.set_all(pass(0), &keys);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let first = flags.load_full();
        assert_eq!(first.len(), 2);
        let routes_set = routes.0.load(Ordering::Relaxed);
        assert_eq!(routes_set, 1, "the first pass hands ingest its routes once");

        // The same entries again: the same flag set, not even rebuilt, and the
        // routes not handed over again.
        publisher.set_all(pass(0), &keys);
        assert!(!changes.has_changed().unwrap());
        assert!(Arc::ptr_eq(&first, &flags.load_full()));
        assert_eq!(routes.0.load(Ordering::Relaxed), routes_set);

        // One flag changed: published, while the routes stay as they were.
        publisher.set_all(pass(1), &keys);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(routes.0.load(Ordering::Relaxed), routes_set);
        // One rollout gone: its flag and its route go.
        let only_a: HashSet<&RolloutKey> = [&a].into_iter().collect();
        publisher.set_all(vec![(a.clone(), entry("fa", 0))], &only_a);
        assert!(changes.has_changed().unwrap());
        assert_eq!(flags.load().len(), 1);
        assert_eq!(routes.0.load(Ordering::Relaxed), routes_set + 1);
    }
}
