//! The controller in a cluster: kube-rs's `Controller` over FeatureRollouts (and
//! Segments, which trigger the rollouts of their namespace), running the same
//! per-rollout [`Reconciler`] as standalone mode through the [`KubeStore`].
//!
//! A progressing rollout is reconciled again exactly when its dwell ends, and when
//! new spans were recorded (looked at every `tick`); a rollout whose phase changed
//! triggers the other rollouts of its flag key (one of them may now serve it).
//! Failures back off exponentially per rollout, so a broken API never turns into a
//! hot loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use super::events::{ReconcileFailed, Retry};
use super::{ReconcileError, Reconciler, flag_conflict};
use crate::api::{ABORT_ANNOTATION, FeatureRollout, PROMOTE_ANNOTATION, Phase, Segment};
use crate::rollout::Request;
use crate::store::{KubeStore, RolloutKey, RolloutStore, StoredRollout};

/// Finalizer that keeps a deleted rollout until its flag is no longer served.
pub const FINALIZER: &str = "spangate.dev/published-flag";

/// First retry after a failed reconcile; doubled per consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failing rollout.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often a rollout that is not progressing is looked at anyway, in case a
/// watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub reconciler: Reconciler<KubeStore>,
    /// How often the span windows are looked at for new data.
    pub tick: Duration,
    failures: Mutex<HashMap<ObjectRef<FeatureRollout>, u32>>,
    /// Rollouts to reconcile because another one changed.
    triggers: mpsc::UnboundedSender<ObjectRef<FeatureRollout>>,
    triggered: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<FeatureRollout>>>>,
}

impl Context {
    pub fn new(reconciler: Reconciler<KubeStore>, tick: Duration) -> Self {
        let (triggers, triggered) = mpsc::unbounded_channel();
        Self {
            reconciler,
            tick,
            failures: Mutex::default(),
            triggers,
            triggered: Mutex::new(Some(triggered)),
        }
    }

    /// Asks for a reconcile of every other rollout of `flag_key` than `key`.
    fn trigger_flag(&self, rollouts: &[StoredRollout], flag_key: &str, key: &RolloutKey) {
        for other in rollouts {
            if other.key != *key && matches!(&other.spec, Ok(spec) if spec.flag.key == flag_key) {
                let reference = ObjectRef::new(&other.key.name).within(&other.key.namespace);
                // Only fails once the controller is gone; nothing is left to trigger then.
                let _ = self.triggers.send(reference);
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<FeatureRollout>, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The request a person left on the rollout; an abort wins over a promote.
pub fn request_of(rollout: &FeatureRollout) -> Option<Request> {
    let annotations = rollout.annotations();
    if annotations.contains_key(ABORT_ANNOTATION) {
        Some(Request::Abort)
    } else if annotations.contains_key(PROMOTE_ANNOTATION) {
        Some(Request::Promote)
    } else {
        None
    }
}

/// Reconciles one FeatureRollout: adds the finalizer on first sight, runs the
/// shared reconcile, and on deletion stops serving the rollout's flag.
pub async fn reconcile(
    rollout: Arc<FeatureRollout>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let api: Api<FeatureRollout> =
        Api::namespaced(ctx.reconciler.store().client().clone(), &namespace);
    let reference = ObjectRef::from_obj(rollout.as_ref());
    let action = finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            FinalizerEvent::Apply(rollout) => apply(&rollout, &ctx).await,
            FinalizerEvent::Cleanup(rollout) => {
                let key = RolloutKey::new(namespace.clone(), rollout.name_any());
                ctx.reconciler.forget(&key);
                ctx.reconciler.store().forget(&key);
                let all = ctx
                    .reconciler
                    .store()
                    .list()
                    .await
                    .map_err(ReconcileError::ReadRollouts)?;
                ctx.trigger_flag(&all, &rollout.spec.flag.key, &key);
                tracing::info!(rollout = %key, "rollout deleted; its flag is no longer served");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))?;
    ctx.failures().remove(&reference);
    Ok(action)
}

async fn apply(rollout: &FeatureRollout, ctx: &Context) -> Result<Action, ReconcileError> {
    let store = ctx.reconciler.store();
    let stored = store.stored(rollout);
    let all = store.list().await.map_err(ReconcileError::ReadRollouts)?;
    let conflict = flag_conflict(&stored, &all);
    // Segments change without the rollout changing (the controller watches them).
    ctx.reconciler.refresh_segments().await?;
    let request = request_of(rollout);
    let now = Timestamp::now();
    let reconciled = ctx
        .reconciler
        .reconcile(&stored, conflict, request, now)
        .await?;
    if request.is_some() {
        store
            .clear_requests(&stored.key)
            .await
            .map_err(ReconcileError::ClearRequests)?;
    }
    if reconciled.status.phase != stored.status.phase {
        ctx.trigger_flag(&all, &rollout.spec.flag.key, &stored.key);
    }
    Ok(requeue(reconciled.status.phase, reconciled.wake_at, now))
}

/// When to look at a rollout again: when the dwell of its step ends. New spans
/// trigger a reconcile on their own ([`new_analysis_data`]).
fn requeue(phase: Phase, wake_at: Option<Timestamp>, now: Timestamp) -> Action {
    let until_wake = wake_at
        .filter(|_| phase == Phase::Progressing)
        .and_then(|wake| Duration::try_from(wake.duration_since(now)).ok())
        .filter(|d| !d.is_zero());
    Action::requeue(until_wake.map_or(RESYNC, |d| d.min(RESYNC)))
}

/// Every `tick`, the rollouts being judged when spans were recorded since the
/// last look.
fn new_analysis_data(ctx: Arc<Context>) -> impl Stream<Item = ObjectRef<FeatureRollout>> {
    let mut interval = tokio::time::interval(ctx.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stream::unfold(
        (interval, 0_u64, ctx),
        |(mut interval, seen, ctx)| async move {
            interval.tick().await;
            let recorded = ctx.reconciler.windows().samples_recorded();
            let keys = if recorded == seen {
                Vec::new()
            } else {
                ctx.reconciler.publisher().routed()
            };
            let references: Vec<_> = keys
                .into_iter()
                .map(|key| ObjectRef::new(&key.name).within(&key.namespace))
                .collect();
            Some((stream::iter(references), (interval, recorded, ctx)))
        },
    )
    .flatten()
}

/// Backs off exponentially per rollout: 0.5 s, 1 s, 2 s ... up to 5 minutes.
pub fn error_policy(
    rollout: Arc<FeatureRollout>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let reference = ObjectRef::from_obj(rollout.as_ref());
    let mut failures = ctx.failures();
    let attempt = failures.entry(reference.clone()).or_insert(0);
    *attempt = attempt.saturating_add(1);
    let delay = backoff(*attempt);
    ReconcileFailed {
        rollout: Some(&reference),
        error,
        retry: Retry::Backoff {
            attempt: *attempt,
            delay,
        },
    }
    .emit(ctx.reconciler.metrics());
    Action::requeue(delay)
}

fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    BACKOFF_START.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// Builds the kube-rs controller over every namespace (its cache feeds the store),
/// and the watch cache of Segments that reconciles read.
pub fn controller(client: Client) -> (Controller<FeatureRollout>, Store<Segment>) {
    let rollouts: Api<FeatureRollout> = Api::all(client.clone());
    let (segments, writer) = reflector::store::<Segment>();
    let segment_changes = reflector(
        writer,
        watcher(Api::<Segment>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let controller = Controller::new(rollouts, watcher::Config::default());
    let cache = controller.store();
    // A segment may be used by any rollout of its namespace; reconciling one that
    // does not use it changes nothing.
    let controller = controller.watches_stream(segment_changes, move |segment: Segment| {
        let namespace = segment.namespace();
        cache
            .state()
            .into_iter()
            .filter(|rollout| rollout.namespace() == namespace)
            .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
            .collect::<Vec<_>>()
    });
    (controller, segments)
}

/// Runs `controller` with `ctx` until `shutdown` resolves.
pub async fn run(
    controller: Controller<FeatureRollout>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let triggered = ctx
        .triggered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .map(tokio_stream::wrappers::UnboundedReceiverStream::new);
    let triggers = stream::select(
        stream::iter(triggered).flatten(),
        new_analysis_data(ctx.clone()),
    );
    controller
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<Duration> = [1, 2, 3, 4].into_iter().map(backoff).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(backoff(30), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn progressing_rollouts_are_looked_at_when_the_dwell_ends() {
        let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
        let soon = now + jiff::SignedDuration::from_millis(300);
        let much_later = now + jiff::SignedDuration::from_secs(3600);
        assert_eq!(
            requeue(Phase::Progressing, Some(soon), now),
            Action::requeue(Duration::from_millis(300))
        );
        assert_eq!(
            requeue(Phase::Progressing, Some(much_later), now),
            Action::requeue(RESYNC)
        );
        assert_eq!(
            requeue(Phase::Progressing, Some(now), now),
            Action::requeue(RESYNC)
        );
        assert_eq!(requeue(Phase::Promoted, None, now), Action::requeue(RESYNC));
    }
}
