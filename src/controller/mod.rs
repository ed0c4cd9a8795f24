//! Controller (shell): reconciles every rollout on change and on a tick.
//!
//! Each pass lists the rollouts through the [store](crate::store), judges the
//! current step's window, lets the pure [state machine](crate::rollout::decide)
//! decide, saves the status, records events, and publishes the flag set and the
//! span routes the rest of the process serves from. No decision is made here.

mod publish;
mod targeting;

pub use publish::{compile_flag, epoch_of, served_flag};
pub use targeting::{CompiledSpec, SegmentCatalog, SpecCache, compile_spec};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tracing::{Instrument, info_span};

use crate::analysis::{Route, Routes, Window, judge};
use crate::api::{FeatureRolloutStatus, Phase};
use crate::flags::FlagSet;
use crate::rollout::{Action, EventType, Input, decide, reject};
use crate::serve::PublishedFlags;
use crate::store::{FlagdFile, Reload, RolloutEvent, RolloutKey, RolloutStore, StoredRollout};

/// Where the controller reads span windows and tells ingest what to route.
pub trait SpanWindows: Send + Sync + 'static {
    /// The window of `rollout` for `epoch` (empty when there is none).
    fn window(&self, rollout: &str, epoch: u64) -> Window;
    /// Replaces the routes ingest uses.
    fn set_routes(&self, routes: Vec<Route>);
}

impl SpanWindows for crate::ingest::Ingestor {
    fn window(&self, rollout: &str, epoch: u64) -> Window {
        crate::ingest::Ingestor::window(self, rollout, epoch)
    }

    fn set_routes(&self, routes: Vec<Route>) {
        crate::ingest::Ingestor::set_routes(self, Routes::new(routes));
    }
}

/// What one pass saw, for progress displays and tests.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub rollouts: Vec<(RolloutKey, FeatureRolloutStatus)>,
    /// The earliest time a rollout wants to be looked at again.
    pub wake_at: Option<Timestamp>,
}

/// The reconcile loop's state between passes.
pub struct Controller<S> {
    store: S,
    windows: Arc<dyn SpanWindows>,
    flags: PublishedFlags,
    published_version: Option<u64>,
    published_routes: Vec<Route>,
    segments: SegmentCatalog,
    specs: SpecCache,
    flags_file: Option<FlagdFile>,
    /// Flags of the flag file that a rollout of the same key hides, as last warned.
    shadowed: Vec<String>,
}

impl<S: RolloutStore> Controller<S> {
    pub fn new(store: S, windows: Arc<dyn SpanWindows>, flags: PublishedFlags) -> Self {
        Self {
            store,
            windows,
            flags,
            published_version: None,
            published_routes: Vec::new(),
            segments: SegmentCatalog::default(),
            specs: SpecCache::default(),
            flags_file: None,
            shadowed: Vec::new(),
        }
    }

    /// Also serves the flags of a flagd flag-definition file, re-read on every
    /// pass. A rollout of the same flag key wins over the file.
    pub fn with_flags_file(mut self, file: FlagdFile) -> Self {
        self.flags_file = Some(file);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reconciles every rollout once.
    pub async fn pass(&mut self, now: Timestamp) -> anyhow::Result<PassReport> {
        let rollouts = self.store.list().await?;
        self.segments.update(&self.store.segments().await?);
        self.specs
            .retain(&rollouts.iter().map(|r| &r.key).collect::<Vec<_>>());
        let owners = flag_owners(&rollouts);
        let mut report = PassReport::default();
        let mut flags = Vec::new();
        let mut routes = Vec::new();
        for rollout in &rollouts {
            let conflict = match &rollout.spec {
                Ok(spec) => owners
                    .get(spec.flag.key.as_str())
                    .filter(|owner| **owner != &rollout.key)
                    .map(|owner| {
                        format!(
                            "flag {:?} is already rolled out by {owner}; one rollout per flag key",
                            spec.flag.key
                        )
                    }),
                Err(_) => None,
            };
            // Targeting that does not compile (or names a missing segment) makes
            // the rollout Invalid, like any other problem with its spec.
            let compiled = match (&rollout.spec, &conflict) {
                (Ok(spec), None) => Some(self.specs.get(&rollout.key, spec, &self.segments)),
                _ => None,
            };
            let problem = conflict.or_else(|| match (&rollout.spec, &compiled) {
                (Ok(spec), Some(Err(targeting))) => Some(invalid_targeting(spec, targeting)),
                _ => None,
            });
            let span = info_span!(
                "reconcile",
                rollout = %rollout.key,
                generation = rollout.generation,
                "feature_flag.key" = tracing::field::Empty,
                "feature_flag.result.variant" = tracing::field::Empty,
                "vcs.ref.head.revision" = tracing::field::Empty,
                phase = tracing::field::Empty,
                step = tracing::field::Empty,
                weight = tracing::field::Empty,
                verdict = tracing::field::Empty,
            );
            let status = self
                .reconcile(rollout, problem, now)
                .instrument(span)
                .await?;
            if let Some(Ok(compiled)) = &compiled {
                flags.extend(served_flag(rollout, &status, compiled));
            }
            if let Ok(spec) = &rollout.spec
                && status.phase == Phase::Progressing
            {
                routes.push(Route::from_spec(
                    rollout.key.to_string(),
                    spec,
                    epoch_of(&status),
                ));
            }
            if let Some(wake) = status_wake(rollout, &status) {
                report.wake_at = Some(report.wake_at.map_or(wake, |w: Timestamp| w.min(wake)));
            }
            report.rollouts.push((rollout.key.clone(), status));
        }
        self.add_file_flags(&mut flags);
        self.publish(flags, routes);
        Ok(report)
    }

    async fn reconcile(
        &self,
        rollout: &StoredRollout,
        problem: Option<String>,
        now: Timestamp,
    ) -> anyhow::Result<FeatureRolloutStatus> {
        let span = tracing::Span::current();
        let decision = match (&rollout.spec, problem.as_ref()) {
            (Err(message), _) | (Ok(_), Some(message)) => {
                reject(&rollout.status, rollout.generation, message, now)
            }
            (Ok(spec), None) => {
                span.record("feature_flag.key", spec.flag.key.as_str());
                if !spec.flag.rollout_variant.is_empty() {
                    span.record(
                        "feature_flag.result.variant",
                        spec.flag.rollout_variant.as_str(),
                    );
                }
                if let Some(revision) = &spec.revision {
                    span.record("vcs.ref.head.revision", revision.as_str());
                }
                let verdict =
                    (rollout.status.phase == Phase::Progressing && !spec.paused).then(|| {
                        let window = self
                            .windows
                            .window(&rollout.key.to_string(), epoch_of(&rollout.status));
                        judge(
                            &spec.analysis,
                            &window,
                            &spec.flag.default_variant,
                            &spec.flag.rollout_variant,
                        )
                    });
                decide(Input {
                    spec,
                    generation: rollout.generation,
                    status: &rollout.status,
                    verdict: verdict.as_ref(),
                    now,
                })
            }
        };
        let status = decision.status;
        span.record("phase", status.phase.to_string());
        if let Some(step) = status.current_step {
            span.record("step", step);
        }
        span.record("weight", status.weight);
        if let Some(verdict) = status.verdict {
            span.record("verdict", verdict.to_string());
        }
        for action in &decision.actions {
            if let Action::Event {
                type_,
                reason,
                note,
            } = action
            {
                self.emit(rollout, &status, *type_, reason, note).await;
            }
        }
        if status != rollout.status {
            self.store.write_status(&rollout.key, &status).await?;
        }
        Ok(status)
    }

    async fn emit(
        &self,
        rollout: &StoredRollout,
        status: &FeatureRolloutStatus,
        type_: EventType,
        reason: &'static str,
        note: &str,
    ) {
        let key = &rollout.key;
        let spec = rollout.spec.as_ref().ok();
        let span = info_span!(
            "decision",
            rollout = %key,
            reason,
            "feature_flag.key" = spec.map(|s| s.flag.key.as_str()),
            "feature_flag.result.variant" = spec
                .map(|s| s.flag.rollout_variant.as_str())
                .filter(|v| !v.is_empty()),
            "vcs.ref.head.revision" = spec.and_then(|s| s.revision.as_deref()),
            phase = %status.phase,
            step = status.current_step,
            weight = status.weight,
            verdict = status.verdict.map(|v| v.to_string()),
        );
        async {
            match type_ {
                EventType::Normal => tracing::info!(rollout = %key, reason, "{note}"),
                EventType::Warning => tracing::warn!(rollout = %key, reason, "{note}"),
            }
            let event = RolloutEvent {
                type_,
                reason,
                note: note.to_string(),
            };
            if let Err(e) = self.store.record_event(key, &event).await {
                tracing::warn!(rollout = %key, reason, error = %e, "could not record the event");
            }
        }
        .instrument(span)
        .await
    }

    fn add_file_flags(&mut self, flags: &mut Vec<crate::flags::Flag>) {
        let Some(file) = &mut self.flags_file else {
            return;
        };
        match file.reload() {
            Reload::Unchanged => {}
            Reload::Loaded { flags } => {
                tracing::info!(file = %file.path().display(), flags, "serving the flag file");
            }
            Reload::Refused(why) => {
                tracing::error!(
                    error = why,
                    "the flag file changed but cannot be served; serving its previous flags"
                );
            }
        }
        let mut shadowed = Vec::new();
        for flag in file.flags() {
            if flags.iter().any(|f| f.key == flag.key) {
                shadowed.push(flag.key.clone());
            } else {
                flags.push(flag.clone());
            }
        }
        if shadowed != self.shadowed {
            if !shadowed.is_empty() {
                tracing::warn!(flags = ?shadowed, "rollouts serve these keys of the flag file instead");
            }
            self.shadowed = shadowed;
        }
    }

    fn publish(&mut self, flags: Vec<crate::flags::Flag>, routes: Vec<Route>) {
        let version = publish::content_version(&flags);
        if self.published_version != Some(version) {
            self.flags.store(Arc::new(FlagSet::new(flags, version)));
            self.published_version = Some(version);
        }
        if routes != self.published_routes {
            self.windows.set_routes(routes.clone());
            self.published_routes = routes;
        }
    }
}

/// Runs passes until `shutdown` resolves: every `tick`, or sooner when a rollout's
/// dwell ends. `on_pass` sees every pass (readiness, progress displays).
pub async fn run<S: RolloutStore>(
    mut controller: Controller<S>,
    tick: Duration,
    mut on_pass: impl FnMut(&PassReport) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let now = Timestamp::now();
        let mut sleep_for = tick;
        match controller.pass(now).await {
            Ok(report) => {
                if let Some(wake) = report.wake_at {
                    let until = wake.duration_since(now);
                    if let Ok(until) = Duration::try_from(until) {
                        sleep_for = sleep_for.min(until.max(Duration::from_millis(10)));
                    }
                }
                on_pass(&report);
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "reconcile pass failed; retrying"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}

/// The Invalid message for a spec whose targeting does not compile: its other
/// problems too, so that every one is named at once.
fn invalid_targeting(spec: &crate::api::FeatureRolloutSpec, targeting: &str) -> String {
    match crate::rollout::plan(spec) {
        Ok(_) => format!("invalid spec: {targeting}"),
        Err(invalid) => format!("invalid spec: {invalid}; {targeting}"),
    }
}

/// For each flag key, the rollout that serves it: the first by key among those with
/// a readable spec.
fn flag_owners(rollouts: &[StoredRollout]) -> HashMap<&str, &RolloutKey> {
    let mut owners: BTreeMap<&str, &RolloutKey> = BTreeMap::new();
    for rollout in rollouts {
        if let Ok(spec) = &rollout.spec {
            owners.entry(spec.flag.key.as_str()).or_insert(&rollout.key);
        }
    }
    owners.into_iter().collect()
}

fn status_wake(rollout: &StoredRollout, status: &FeatureRolloutStatus) -> Option<Timestamp> {
    let spec = rollout.spec.as_ref().ok()?;
    if status.phase != Phase::Progressing {
        return None;
    }
    let dwell = crate::api::parse_duration(&spec.step_duration).ok()?;
    let started = status.step_started_at.as_ref()?.0;
    started
        .checked_add(jiff::SignedDuration::try_from(dwell).ok()?)
        .ok()
}
