//! The controller in a cluster: kube-rs's `Controller` over FeatureRollouts (and
//! Segments, which trigger the rollouts of their namespace), running the same
//! per-rollout [`Reconciler`] as standalone mode through the [`KubeStore`].
//!
//! A rollout is requeued at the end of its dwell and every `tick` while it
//! progresses (new spans may have arrived); failures back off exponentially per
//! rollout, so a broken API never turns into a hot loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::{Reconciler, flag_conflict};
use crate::api::{ABORT_ANNOTATION, FeatureRollout, PROMOTE_ANNOTATION, Phase, Segment};
use crate::rollout::Request;
use crate::store::{KubeStore, RolloutKey, RolloutStore};

/// Finalizer that keeps a deleted rollout until its flag is no longer served.
pub const FINALIZER: &str = "spangate.dev/published-flag";

/// First retry after a failed reconcile; doubled per consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failing rollout.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often a rollout that is not progressing is looked at anyway, in case a
/// watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:#}")]
    Reconcile(anyhow::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What every reconcile shares.
pub struct Context {
    pub reconciler: Reconciler<KubeStore>,
    /// Longest time before a progressing rollout is judged again.
    pub tick: Duration,
    failures: Mutex<HashMap<ObjectRef<FeatureRollout>, u32>>,
}

impl Context {
    pub fn new(reconciler: Reconciler<KubeStore>, tick: Duration) -> Self {
        Self {
            reconciler,
            tick,
            failures: Mutex::default(),
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
pub async fn reconcile(rollout: Arc<FeatureRollout>, ctx: Arc<Context>) -> Result<Action, Error> {
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
                tracing::info!(rollout = %key, "rollout deleted; its flag is no longer served");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.failures().remove(&reference);
    Ok(action)
}

async fn apply(rollout: &FeatureRollout, ctx: &Context) -> Result<Action, Error> {
    let store = ctx.reconciler.store();
    let stored = store.stored(rollout);
    let all = store.list().await.map_err(Error::Reconcile)?;
    let conflict = flag_conflict(&stored, &all);
    let request = request_of(rollout);
    let now = Timestamp::now();
    let reconciled = ctx
        .reconciler
        .reconcile(&stored, conflict, request, now)
        .await
        .map_err(Error::Reconcile)?;
    if request.is_some() {
        store
            .clear_requests(&stored.key)
            .await
            .map_err(Error::Reconcile)?;
    }
    Ok(requeue(
        reconciled.status.phase,
        reconciled.wake_at,
        now,
        ctx.tick,
    ))
}

/// When to look at a rollout again: at the end of its dwell, and within `tick`
/// while it progresses, so new spans are judged.
fn requeue(phase: Phase, wake_at: Option<Timestamp>, now: Timestamp, tick: Duration) -> Action {
    if phase != Phase::Progressing {
        return Action::requeue(RESYNC);
    }
    let until_wake = wake_at
        .and_then(|wake| Duration::try_from(wake.duration_since(now)).ok())
        .filter(|d| !d.is_zero());
    Action::requeue(until_wake.map_or(tick, |d| d.min(tick)))
}

/// Backs off exponentially per rollout: 0.5 s, 1 s, 2 s ... up to 5 minutes.
pub fn error_policy(rollout: Arc<FeatureRollout>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.reconciler.metrics().reconcile_failed();
    let reference = ObjectRef::from_obj(rollout.as_ref());
    let mut failures = ctx.failures();
    let attempt = failures.entry(reference.clone()).or_insert(0);
    *attempt = attempt.saturating_add(1);
    let delay = backoff(*attempt);
    tracing::warn!(rollout = %reference, attempt = *attempt, retry_in = ?delay, "reconcile failed: {error}");
    Action::requeue(delay)
}

fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    BACKOFF_START.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// Builds the kube-rs controller over every namespace; its cache feeds the store.
pub fn controller(client: Client) -> Controller<FeatureRollout> {
    let rollouts: Api<FeatureRollout> = Api::all(client.clone());
    let segments: Api<Segment> = Api::all(client);
    let controller = Controller::new(rollouts, watcher::Config::default());
    let cache = controller.store();
    // A segment may be used by any rollout of its namespace; reconciling one that
    // does not use it changes nothing.
    controller.watches(segments, watcher::Config::default(), move |segment| {
        let namespace = segment.namespace();
        cache
            .state()
            .into_iter()
            .filter(|rollout| rollout.namespace() == namespace)
            .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
            .collect::<Vec<_>>()
    })
}

/// Runs `controller` with `ctx` until `shutdown` resolves.
pub async fn run(
    controller: Controller<FeatureRollout>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller
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
    fn progressing_rollouts_are_looked_at_within_a_tick_or_at_the_dwell_end() {
        let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
        let tick = Duration::from_secs(1);
        let soon = now + jiff::SignedDuration::from_millis(300);
        let later = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(
            requeue(Phase::Progressing, Some(soon), now, tick),
            Action::requeue(Duration::from_millis(300))
        );
        assert_eq!(
            requeue(Phase::Progressing, Some(later), now, tick),
            Action::requeue(tick)
        );
        assert_eq!(
            requeue(Phase::Progressing, Some(now), now, tick),
            Action::requeue(tick)
        );
        assert_eq!(
            requeue(Phase::Promoted, None, now, tick),
            Action::requeue(RESYNC)
        );
    }
}
