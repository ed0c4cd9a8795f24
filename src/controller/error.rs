//! Why a reconcile failed, by what it was doing, so that failures can be told apart
//! (in tests, and by a label on the reconcile error counter).

use kube::runtime::finalizer;

/// What failed while reconciling. A spec that cannot be carried out is not one of
/// these: it is a rollout's Invalid phase, not a failed reconcile.
///
/// Each shows its cause's whole chain, which names what was being done (the
/// store's own context), as reconcile failures have always been logged.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store could not list the rollouts.
    #[error("{0:#}")]
    ReadRollouts(#[source] anyhow::Error),
    /// The store could not list the segments.
    #[error("{0:#}")]
    ReadSegments(#[source] anyhow::Error),
    /// A rollout's new status could not be saved: it is decided again next time.
    #[error("{0:#}")]
    WriteStatus(#[source] anyhow::Error),
    /// A promote or abort request could not be removed from the rollout once acted on.
    #[error("{0:#}")]
    ClearRequests(#[source] anyhow::Error),
    /// Adding or removing the finalizer failed, or a reconcile run inside it did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<ReconcileError>>),
}

impl ReconcileError {
    /// Every [`ReconcileError::metric_label`], so that the counter shows each at 0
    /// before the first failure.
    pub const METRIC_LABELS: [&str; 5] = [
        "read_rollouts",
        "read_segments",
        "write_status",
        "clear_requests",
        "finalizer",
    ];

    /// A short name for what failed, for a metric label. A reconcile that failed
    /// inside the finalizer is labelled by what failed in it: in a cluster every
    /// reconcile runs there, and "finalizer" alone would tell nothing.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::ReadRollouts(_) => "read_rollouts",
            ReconcileError::ReadSegments(_) => "read_segments",
            ReconcileError::WriteStatus(_) => "write_status",
            ReconcileError::ClearRequests(_) => "clear_requests",
            ReconcileError::Finalizer(error) => match &**error {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_failure_has_its_own_label() {
        let cause = || anyhow::anyhow!("the API server is gone");
        let errors = [
            ReconcileError::ReadRollouts(cause()),
            ReconcileError::ReadSegments(cause()),
            ReconcileError::WriteStatus(cause()),
            ReconcileError::ClearRequests(cause()),
            ReconcileError::Finalizer(Box::new(finalizer::Error::UnnamedObject)),
        ];
        // Fails to compile when a variant is added, so that it is added here too.
        for error in &errors {
            match error {
                ReconcileError::ReadRollouts(_)
                | ReconcileError::ReadSegments(_)
                | ReconcileError::WriteStatus(_)
                | ReconcileError::ClearRequests(_)
                | ReconcileError::Finalizer(_) => {}
            }
        }
        let labels: HashSet<&str> = errors.iter().map(ReconcileError::metric_label).collect();
        assert_eq!(labels.len(), errors.len(), "{labels:?}");
        assert_eq!(
            labels,
            HashSet::from(ReconcileError::METRIC_LABELS),
            "METRIC_LABELS lists every label"
        );
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn a_reconcile_failed_inside_the_finalizer_is_labelled_by_what_failed() {
        let inside = ReconcileError::Finalizer(Box::new(finalizer::Error::ApplyFailed(
            ReconcileError::WriteStatus(anyhow::anyhow!("conflict")),
        )));
        assert_eq!(inside.metric_label(), "write_status");
        assert_eq!(
            inside.to_string(),
            "finalizer: failed to apply object: conflict"
        );
    }

    #[test]
    fn a_failure_shows_its_cause_as_it_always_did() {
        let cause = anyhow::anyhow!("permission denied").context("writing the status of shop/a");
        let error = ReconcileError::WriteStatus(cause);
        assert_eq!(
            error.to_string(),
            "writing the status of shop/a: permission denied"
        );
        let source = std::error::Error::source(&error).expect("the cause is kept");
        assert_eq!(source.to_string(), "writing the status of shop/a");
    }
}
