//! Controller (shell): reconciles every rollout on change and on a tick.
//!
//! Each pass lists the rollouts through the [store](crate::store), judges the
//! current step's window, lets the pure [state machine](crate::rollout::decide)
//! decide, saves the status, records events, and publishes the flag set and the
//! span routes the rest of the process serves from. No decision is made here.

mod error;
mod events;
pub mod flagset;
pub mod kube;
pub mod lease;
mod links;
mod metrics;
pub mod notify;
mod published;
mod targeting;

pub use error::ReconcileError;
pub use links::{TemplateError, TraceLinks};
pub use metrics::Metrics;
pub use published::{Entry, Publisher};
pub use targeting::{SegmentCatalog, SpecCache};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{Instrument, info_span};

use crate::analysis::{JudgeInput, Route, Window, WindowEpoch, judge};
use crate::api::{FeatureRolloutStatus, Phase, VerdictOutcome};
use crate::rollout::{Action, CompiledRollout, EventType, Input, Request, decide, reject};
use crate::serve::{PublishedFlags, Readiness};
use crate::store::{FlagdFile, Reload, RolloutEvent, RolloutKey, RolloutStore, StoredRollout};
use crate::telemetry::RolloutTrace;
use crate::telemetry::metrics::TraceExemplar;
use events::{ReconcileFailed, Retry};

/// Where the controller reads span windows and tells ingest what to route.
pub trait SpanWindows: Send + Sync + 'static {
    /// The window of `rollout` for `epoch` (empty when there is none).
    fn window(&self, rollout: &str, epoch: WindowEpoch) -> Window;
    /// The windows of `rollout`'s downstream services for `epoch`, by
    /// `service.name`: spans of other services in the traces of its flag's users.
    /// A service without spans may be left out.
    fn downstream_windows(&self, rollout: &str, epoch: WindowEpoch) -> Vec<(String, Window)>;
    /// Replaces the routes ingest uses.
    fn set_routes(&self, routes: Vec<Route>);
    /// Samples recorded into any window so far: grows exactly when there is new
    /// analysis data.
    fn samples_recorded(&self) -> u64;
}

/// What one pass saw, for progress displays and tests.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub rollouts: Vec<(RolloutKey, FeatureRolloutStatus)>,
    /// The earliest time a rollout wants to be looked at again.
    pub wake_at: Option<Timestamp>,
}

/// What reconciling one rollout left.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    pub status: FeatureRolloutStatus,
    /// When the rollout's current step may end (its dwell), while it progresses.
    pub wake_at: Option<Timestamp>,
}

/// The per-rollout reconcile, shared by standalone mode (a loop over a folder) and
/// the cluster (kube-rs's controller over the API): judge, decide, save, tell,
/// publish.
pub struct Reconciler<S> {
    store: S,
    windows: Arc<dyn SpanWindows>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    targeting: Mutex<Compiled>,
    /// Links into the trace backend written into status and events, if configured.
    links: Option<TraceLinks>,
    /// Where every event is also sent as a notice, if anywhere.
    notifier: Option<notify::Notifier>,
}

/// Segments and rollouts' targeting, compiled once per source.
#[derive(Default)]
struct Compiled {
    segments: SegmentCatalog,
    specs: SpecCache,
}

impl<S: RolloutStore> Reconciler<S> {
    pub fn new(store: S, windows: Arc<dyn SpanWindows>, flags: PublishedFlags) -> Self {
        Self {
            publisher: Publisher::new(flags, windows.clone()),
            store,
            windows,
            metrics: Arc::default(),
            targeting: Mutex::default(),
            links: None,
            notifier: None,
        }
    }

    /// Sends every event as a notice to the webhooks of `config` too (none: off).
    /// Call it from within the runtime: it spawns the sender, stopped by `cancel`.
    pub fn with_notifications(
        mut self,
        config: &notify::NotifyConfig,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        self.notifier = notify::Notifier::start(config, self.metrics.clone(), cancel)?;
        Ok(self)
    }

    /// Writes links into the trace backend next to the trace IDs of status (each
    /// exemplar span of a verdict, the rollout's own trace) and into the events of
    /// rollbacks.
    pub fn with_trace_links(mut self, links: Option<TraceLinks>) -> Self {
        self.links = links;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads the segments from the store again; rollouts reconciled next use them
    /// (recompiling only the targeting whose segments changed).
    pub async fn refresh_segments(&self) -> Result<(), ReconcileError> {
        let segments = self
            .store
            .segments()
            .await
            .map_err(ReconcileError::ReadSegments)?;
        self.compiled().segments.update(&segments);
        Ok(())
    }

    fn compiled(&self) -> std::sync::MutexGuard<'_, Compiled> {
        // Compiling leaves the caches whole before it can panic.
        self.targeting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn windows(&self) -> &Arc<dyn SpanWindows> {
        &self.windows
    }

    /// Reconciles one rollout: `conflict` says why it may not serve its flag (another
    /// rollout does), `request` is a person's promote or abort. Its targeting is
    /// compiled against the segments last read ([`Reconciler::refresh_segments`]);
    /// targeting that cannot be served makes it Invalid, like any spec problem.
    pub async fn reconcile(
        &self,
        rollout: &StoredRollout,
        conflict: Option<String>,
        request: Option<Request>,
        now: Timestamp,
    ) -> Result<Reconciled, ReconcileError> {
        let (reconciled, entry) = self
            .reconcile_entry(rollout, conflict, request, now)
            .await?;
        self.publisher.set(&rollout.key, entry);
        Ok(reconciled)
    }

    /// Reconciles one rollout and returns what it now contributes, unpublished.
    async fn reconcile_entry(
        &self,
        rollout: &StoredRollout,
        conflict: Option<String>,
        request: Option<Request>,
        now: Timestamp,
    ) -> Result<(Reconciled, Entry), ReconcileError> {
        // The rollout compiled, or why it is rejected: a spec that cannot be read,
        // another rollout's flag key, or a spec that does not compile.
        let compiled = match (&rollout.spec, conflict) {
            (Err(error), _) => Err(error.to_string()),
            (Ok(_), Some(message)) => Err(message),
            (Ok(spec), None) => {
                let mut caches = self.compiled();
                let Compiled { segments, specs } = &mut *caches;
                specs
                    .get(&rollout.key, spec, segments)
                    .map_err(|invalid| format!("invalid spec: {invalid}"))
            }
        };
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
        let trace = TraceExemplar::of(&span);
        let started = Instant::now();
        let (status, wake_at) = self
            .decide_and_save(
                rollout,
                compiled.as_deref().map_err(String::as_str),
                request,
                now,
            )
            .instrument(span)
            .await?;
        self.metrics.reconciled(started.elapsed(), trace);
        let route = match &rollout.spec {
            Ok(spec) if status.phase == Phase::Progressing => Some(Route {
                step: status.current_step,
                ..Route::from_spec(rollout.key.to_string(), spec, WindowEpoch(status.epoch))
            }),
            _ => None,
        };
        let entry = Entry {
            phase: status.phase,
            flag: compiled
                .ok()
                .and_then(|compiled| compiled.flag(&rollout.key.to_string(), &status)),
            route,
        };
        Ok((Reconciled { wake_at, status }, entry))
    }

    /// Stops serving a rollout that is gone.
    pub fn forget(&self, key: &RolloutKey) {
        self.publisher.remove(key);
        self.compiled().specs.retain(|k| k != key);
    }

    /// Judges and decides a compiled rollout, or rejects it with the message why it
    /// is not one; then saves the status and records the events.
    async fn decide_and_save(
        &self,
        rollout: &StoredRollout,
        compiled: Result<&CompiledRollout, &str>,
        request: Option<Request>,
        now: Timestamp,
    ) -> Result<(FeatureRolloutStatus, Option<Timestamp>), ReconcileError> {
        let span = tracing::Span::current();
        let decision = match compiled {
            Err(message) => reject(&rollout.status, rollout.generation, message, now),
            Ok(compiled) => {
                let spec = &compiled.spec;
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
                let verdict = (rollout.status.phase == Phase::Progressing
                    && !spec.paused
                    && spec.analysis.enabled)
                    .then(|| {
                        let route = Route::from_spec(
                            rollout.key.to_string(),
                            spec,
                            WindowEpoch(rollout.status.epoch),
                        );
                        let window = self.windows.window(&route.rollout, route.epoch);
                        let found = if spec.downstream_services.is_empty() {
                            Vec::new()
                        } else {
                            self.windows.downstream_windows(&route.rollout, route.epoch)
                        };
                        // Every service the spec names is judged, with no spans
                        // until they come: the budget is split by the names.
                        let empty = Window::default();
                        let downstream: Vec<(&str, &Window)> = spec
                            .downstream_services
                            .iter()
                            .map(|name| {
                                let window = found.iter().find(|(service, _)| service == name);
                                (name.as_str(), window.map_or(&empty, |(_, window)| window))
                            })
                            .collect();
                        let started = Instant::now();
                        let verdict = judge(&JudgeInput {
                            analysis: &spec.analysis,
                            steps: &spec.steps,
                            service: &spec.service,
                            baseline_variant: &spec.flag.default_variant,
                            candidate_variant: &spec.flag.rollout_variant,
                            weight: rollout.status.weight,
                            previous_weight: rollout.status.previous_weight,
                            unit_attribute: route.unit_attribute(),
                            completed: &rollout.status.completed_steps,
                            window: &window,
                            revision: spec.revision.as_deref(),
                            downstream: &downstream,
                        });
                        let took = started.elapsed();
                        self.metrics
                            .verdict(verdict.outcome, took, TraceExemplar::of(&span));
                        // Before deciding: a repeated verdict must compare equal,
                        // links included, so an idle pass writes nothing.
                        let mut verdict = verdict;
                        if let Some(links) = &self.links {
                            links.annotate(&mut verdict);
                        }
                        verdict
                    });
                decide(Input {
                    rollout: compiled,
                    generation: rollout.generation,
                    status: &rollout.status,
                    verdict: verdict.as_ref(),
                    now,
                    request,
                })
            }
        };
        let wake_at = decision.wake_at;
        let mut status = decision.status;
        // A run that starts, or one from before traces were kept, gets its trace.
        let restarted = decision
            .actions
            .iter()
            .any(|action| matches!(action, Action::Event { reason, .. } if *reason == "Restarted"));
        if status.phase != Phase::Invalid
            && !decision.actions.is_empty()
            && (status.trace_id.is_none() || restarted)
        {
            let root = info_span!(parent: None, "rollout", rollout = %rollout.key);
            if let Some(trace) = RolloutTrace::rooted_at(&root) {
                let (trace_id, root_span_id) = trace.ids();
                status.trace_id = Some(trace_id);
                status.trace_root_span_id = Some(root_span_id);
            }
        }
        status.trace_url = match (&self.links, &status.trace_id, &status.trace_root_span_id) {
            (Some(links), Some(trace_id), Some(root)) => links.url(trace_id, root),
            _ => None,
        };
        span.record("phase", status.phase.to_string());
        if let Some(step) = status.current_step {
            span.record("step", step);
        }
        span.record("weight", status.weight);
        if let Some(verdict) = status.verdict {
            span.record("verdict", verdict.to_string());
        }
        // Saved before the events are told: an event must never announce a state a
        // restart would not find.
        if status != rollout.status {
            self.store
                .write_status(&rollout.key, &status)
                .await
                .map_err(ReconcileError::WriteStatus)?;
        }
        for action in &decision.actions {
            match action {
                Action::Event {
                    type_,
                    reason,
                    note,
                } => self.emit(rollout, &status, *type_, reason, note).await,
                // The route published below carries the new epoch: ingest starts the
                // new window when it sees it.
                Action::RestartWindow(_) => {}
            }
        }
        Ok((status, wake_at))
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
        if let (Some(trace_id), Some(root)) = (&status.trace_id, &status.trace_root_span_id)
            && let Some(trace) = RolloutTrace::from_ids(trace_id, root)
        {
            trace.adopt(&span);
        }
        if let Some(record) = &status.last_verdict {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let service = spec.map_or("", |s| s.service.as_str());
            for (key, value) in evidence_attributes(&record.verdict, service) {
                span.set_attribute(key, value);
            }
            // One click in Jaeger from a decision to the requests behind it.
            for (context, why) in exemplar_links(&record.verdict) {
                span.add_link_with_attributes(
                    context,
                    vec![opentelemetry::KeyValue::new("spangate.exemplar", why)],
                );
            }
        }
        // A rollback's event links to a request that shows why.
        let link = status
            .last_verdict
            .as_ref()
            .filter(|record| {
                reason == "RolledBack" && record.verdict.outcome == VerdictOutcome::Fail
            })
            .and_then(|record| links::event_link(&record.verdict));
        async {
            match type_ {
                EventType::Normal => {
                    tracing::info!(rollout = %key, reason, link = link.as_deref(), "{note}")
                }
                EventType::Warning => {
                    tracing::warn!(rollout = %key, reason, link = link.as_deref(), "{note}")
                }
            }
            let event = RolloutEvent {
                type_,
                reason,
                note: note.to_string(),
                link,
            };
            // Queued, never awaited: a slow webhook cannot hold up a reconcile.
            if let Some(notifier) = &self.notifier {
                let type_ = match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                };
                notifier.notify(notify::Notice::new(
                    key,
                    spec.map(|s| s.flag.key.as_str()),
                    status,
                    type_,
                    reason,
                    note,
                ));
            }
            if let Err(e) = self.store.record_event(key, &event).await {
                tracing::warn!(rollout = %key, reason, error = %e, "could not record the event");
            }
        }
        .instrument(span)
        .await
    }
}

/// The last verdict's evidence as span attributes, so that a decision in Jaeger says
/// why: per check `spangate.check.<name>.{service,estimate,lower,upper,threshold,
/// outcome}` (the names of [`crate::api::CheckEvidence`]), the verdict's sentence,
/// and the failing traces' IDs to search for. A check of a downstream service (not
/// `service`) is `spangate.check.<its service>.<name>.*`, beside the service's own.
fn evidence_attributes(
    verdict: &crate::api::Verdict,
    service: &str,
) -> Vec<(String, opentelemetry::Value)> {
    let mut attributes = vec![(
        "spangate.verdict.message".to_string(),
        verdict.message.clone().into(),
    )];
    for check in &verdict.checks {
        let key = |field: &str| {
            if check.service == service {
                format!("spangate.check.{}.{field}", check.name)
            } else {
                format!("spangate.check.{}.{}.{field}", check.service, check.name)
            }
        };
        attributes.push((key("service"), check.service.clone().into()));
        for (field, value) in [
            ("estimate", check.estimate),
            ("lower", check.lower),
            ("upper", check.upper),
            ("threshold", Some(check.threshold)),
        ] {
            if let Some(value) = value {
                attributes.push((key(field), value.into()));
            }
        }
        attributes.push((key("outcome"), check.outcome.to_string().into()));
    }
    if !verdict.exemplar_trace_ids.is_empty() {
        let ids: Vec<opentelemetry::StringValue> = verdict
            .exemplar_trace_ids
            .iter()
            .map(|id| id.clone().into())
            .collect();
        attributes.push((
            "spangate.exemplar_trace_ids".to_string(),
            opentelemetry::Value::Array(ids.into()),
        ));
    }
    attributes
}

/// The spans a verdict points at (failing and slowest of the rollout variant), as
/// contexts a span can link to; IDs that do not parse are skipped.
fn exemplar_links(
    verdict: &crate::api::Verdict,
) -> impl Iterator<Item = (opentelemetry::trace::SpanContext, &'static str)> + '_ {
    verdict.exemplar_spans.iter().filter_map(|exemplar| {
        let why = match exemplar.why {
            crate::api::ExemplarReason::Error => "error",
            crate::api::ExemplarReason::Slowest => "slowest",
        };
        Some((
            crate::telemetry::remote_span(&exemplar.trace_id, &exemplar.span_id)?,
            why,
        ))
    })
}

/// Standalone mode's loop state: every pass reconciles every rollout of the store.
pub struct Controller<S> {
    reconciler: Reconciler<S>,
    flags_file: Option<FlagdFile>,
    /// Keys of the flag file that rollouts serve instead, as last warned about.
    shadowed: Vec<String>,
    /// Told whether passes succeed.
    readiness: Option<Readiness>,
    /// Rollouts whose last reconcile failed, with why (warned about once).
    failing: HashMap<RolloutKey, String>,
}

impl<S: RolloutStore> Controller<S> {
    pub fn new(store: S, windows: Arc<dyn SpanWindows>, flags: PublishedFlags) -> Self {
        Self {
            reconciler: Reconciler::new(store, windows, flags),
            flags_file: None,
            shadowed: Vec::new(),
            readiness: None,
            failing: HashMap::new(),
        }
    }

    /// See [`Reconciler::with_trace_links`].
    pub fn with_trace_links(mut self, links: Option<TraceLinks>) -> Self {
        self.reconciler = self.reconciler.with_trace_links(links);
        self
    }

    /// See [`Reconciler::with_notifications`].
    pub fn with_notifications(
        mut self,
        config: &notify::NotifyConfig,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        self.reconciler = self.reconciler.with_notifications(config, cancel)?;
        Ok(self)
    }

    /// Marks `readiness` ready after each pass that succeeds, not ready after one
    /// that fails (the rollouts could not be listed).
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Also serves the flags of a flagd flag-definition file, re-read on every
    /// pass. A rollout of the same flag key wins over the file.
    pub fn with_flags_file(mut self, file: FlagdFile) -> Self {
        self.flags_file = Some(file);
        self
    }

    pub fn store(&self) -> &S {
        self.reconciler.store()
    }

    pub fn reconciler(&self) -> &Reconciler<S> {
        &self.reconciler
    }

    /// Reconciles every rollout once, and stops serving the ones that are gone.
    /// A rollout that cannot be reconciled (its status cannot be saved) keeps what
    /// it served and is retried on the next pass; the others go on regardless.
    pub async fn pass(&mut self, now: Timestamp) -> Result<PassReport, ReconcileError> {
        let result = self.pass_inner(now).await;
        if let Some(readiness) = &self.readiness {
            match &result {
                Ok(_) => readiness.set_ready(),
                Err(_) => readiness.set_not_ready(),
            }
        }
        result
    }

    async fn pass_inner(&mut self, now: Timestamp) -> Result<PassReport, ReconcileError> {
        let rollouts = self
            .reconciler
            .store()
            .list()
            .await
            .map_err(ReconcileError::ReadRollouts)?;
        self.reconciler.refresh_segments().await?;
        let owners = FlagOwners::new(&rollouts);
        let mut report = PassReport::default();
        let mut entries = Vec::with_capacity(rollouts.len());
        for rollout in &rollouts {
            let conflict = owners.conflict(rollout);
            let reconciled = match self
                .reconciler
                .reconcile_entry(rollout, conflict, None, now)
                .await
            {
                Ok((reconciled, entry)) => {
                    entries.push((rollout.key.clone(), entry));
                    if self.failing.remove(&rollout.key).is_some() {
                        tracing::info!(rollout = %rollout.key, "reconciled again");
                    }
                    reconciled
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    let repeated = self.failing.get(&rollout.key) == Some(&error);
                    ReconcileFailed {
                        rollout: Some(&rollout.key),
                        error: &e,
                        retry: Retry::NextPass { repeated },
                    }
                    .emit(self.reconciler.metrics());
                    self.failing.insert(rollout.key.clone(), error);
                    continue;
                }
            };
            if let Some(wake) = reconciled.wake_at {
                report.wake_at = Some(report.wake_at.map_or(wake, |w: Timestamp| w.min(wake)));
            }
            report
                .rollouts
                .push((rollout.key.clone(), reconciled.status));
        }
        let keys: HashSet<&RolloutKey> = rollouts.iter().map(|r| &r.key).collect();
        self.failing.retain(|k, _| keys.contains(k));
        self.reconciler.publisher().set_all(entries, &keys);
        self.reconciler
            .compiled()
            .specs
            .retain(|k| keys.contains(k));
        self.serve_flags_file();
        Ok(report)
    }

    fn serve_flags_file(&mut self) {
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
        let shadowed = self.reconciler.publisher().set_extra(file.flags().to_vec());
        if shadowed != self.shadowed {
            if !shadowed.is_empty() {
                tracing::warn!(flags = ?shadowed, "rollouts serve these keys of the flag file instead");
            }
            self.shadowed = shadowed;
        }
    }
}

/// Runs passes until `shutdown` resolves: every `tick`, or sooner when a rollout's
/// dwell ends. `clock` tells the time (the wall clock, or `spangate simulate`'s
/// virtual one, with tokio's time paused). `on_pass` sees every pass (readiness,
/// progress displays).
pub async fn run<S: RolloutStore>(
    mut controller: Controller<S>,
    tick: Duration,
    clock: impl Fn() -> Timestamp + Send,
    mut on_pass: impl FnMut(&PassReport) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let now = clock();
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
            Err(e) => {
                controller
                    .reconciler
                    .metrics()
                    .reconcile_failed(e.metric_label());
                tracing::error!(error = format!("{e:#}"), "reconcile pass failed; retrying");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}

/// Why `rollout` may not serve its flag: another rollout of the same flag key has
/// it. `rollouts` holds them all.
pub fn flag_conflict(rollout: &StoredRollout, rollouts: &[StoredRollout]) -> Option<String> {
    FlagOwners::new(rollouts).conflict(rollout)
}

/// Which rollout has each flag key, among those with a readable spec: one that
/// already serves it (its phase is neither Pending nor Invalid) first, so a
/// newcomer never takes a flag over; then the oldest; then the first in key order.
pub struct FlagOwners<'a> {
    owners: HashMap<&'a str, &'a StoredRollout>,
}

impl<'a> FlagOwners<'a> {
    pub fn new(rollouts: &'a [StoredRollout]) -> Self {
        let claim = |r: &'a StoredRollout| {
            let serving = !matches!(r.status.phase, Phase::Pending | Phase::Invalid);
            (!serving, r.created.is_none(), r.created, &r.key)
        };
        let mut owners: HashMap<&'a str, &'a StoredRollout> = HashMap::new();
        for rollout in rollouts {
            let Ok(spec) = &rollout.spec else { continue };
            owners
                .entry(spec.flag.key.as_str())
                .and_modify(|owner| {
                    if claim(rollout) < claim(owner) {
                        *owner = rollout;
                    }
                })
                .or_insert(rollout);
        }
        Self { owners }
    }

    /// Why `rollout` may not serve its flag, if another rollout has it.
    pub fn conflict(&self, rollout: &StoredRollout) -> Option<String> {
        let key = &rollout.spec.as_ref().ok()?.flag.key;
        let owner = &self.owners.get(key.as_str())?.key;
        (*owner != rollout.key).then(|| {
            format!("flag {key:?} is already rolled out by {owner}; one rollout per flag key")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CheckEvidence, CheckOutcome, CheckScope, EvidenceUnit, Verdict};

    fn check(service: &str, outcome: CheckOutcome) -> CheckEvidence {
        CheckEvidence {
            name: "maxErrorRate".into(),
            service: service.into(),
            scope: CheckScope::Step,
            unit: EvidenceUnit::Fraction,
            estimate: Some(0.1),
            lower: Some(0.08),
            upper: Some(0.12),
            threshold: 0.05,
            outcome,
            alpha: 0.001,
            message: String::new(),
        }
    }

    #[test]
    fn a_downstream_services_checks_keep_their_own_attributes() {
        let verdict = Verdict {
            outcome: crate::api::VerdictOutcome::Fail,
            message: "payments: error rate of on 10% ...".into(),
            failed_checks: vec!["maxErrorRate".into()],
            confidence: 0.99,
            checks: vec![
                check("checkout", CheckOutcome::Pass),
                check("payments", CheckOutcome::Fail),
            ],
            sample_ratio: None,
            baseline: Default::default(),
            candidate: Default::default(),
            revision: Some("3f2c1a9".into()),
            exemplar_trace_ids: Vec::new(),
            exemplar_spans: Vec::new(),
        };
        let attributes = evidence_attributes(&verdict, "checkout");
        let value = |key: &str| {
            let found = attributes.iter().find(|(k, _)| k == key);
            found.map(|(_, v)| v.to_string())
        };
        assert_eq!(
            value("spangate.check.maxErrorRate.outcome").as_deref(),
            Some("Pass")
        );
        assert_eq!(
            value("spangate.check.payments.maxErrorRate.outcome").as_deref(),
            Some("Fail")
        );
        assert_eq!(
            value("spangate.check.payments.maxErrorRate.service").as_deref(),
            Some("payments")
        );
    }
}
