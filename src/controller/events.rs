//! What goes wrong in a reconcile, as types: each counts in
//! `spangate_controller_reconcile_errors_total` by its kind and writes its log line
//! in one place, whichever run mode retries it.

use std::fmt::Display;
use std::time::Duration;

use super::{Metrics, ReconcileError};

/// A reconcile failed and will be tried again.
pub(super) struct ReconcileFailed<'a> {
    /// The rollout, or none when the whole pass failed (listing the rollouts).
    pub rollout: Option<&'a dyn Display>,
    pub error: &'a ReconcileError,
    pub retry: Retry,
}

/// When a failed reconcile is tried again.
pub(super) enum Retry {
    /// On the next pass (standalone); `repeated` when the last pass failed the same
    /// way, so the line is not written again every tick.
    NextPass { repeated: bool },
    /// After a backoff (in a cluster).
    Backoff { attempt: u32, delay: Duration },
}

impl ReconcileFailed<'_> {
    pub(super) fn emit(self, metrics: &Metrics) {
        metrics.reconcile_failed(self.error.metric_label());
        let rollout = self.rollout.map(tracing::field::display);
        let error = format!("{:#}", self.error);
        match (self.retry, rollout) {
            (Retry::NextPass { repeated: true }, _) => {}
            (Retry::NextPass { repeated: false }, Some(rollout)) => tracing::error!(
                rollout,
                error,
                "reconcile failed; it keeps what it served and is retried every pass"
            ),
            (Retry::NextPass { repeated: false }, None) => {
                tracing::error!(error, "reconcile pass failed; retrying")
            }
            (Retry::Backoff { attempt, delay }, rollout) => tracing::warn!(
                rollout,
                attempt,
                retry_in = ?delay,
                "reconcile failed: {error}"
            ),
        }
    }
}
