//! The controller's counters and their Prometheus text exposition (part of
//! `/metrics`; ingest renders its own).
//!
//! Names follow Prometheus conventions: `_total` for counters, units in the name.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::{Phase, VerdictOutcome};
use crate::telemetry::write_family;

/// Counters the controller bumps; shared by every reconcile.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_errors: AtomicU64,
    verdicts_pass: AtomicU64,
    verdicts_fail: AtomicU64,
    verdicts_inconclusive: AtomicU64,
    leader: AtomicU64,
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reconcile_failed(&self) {
        self.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn verdict(&self, outcome: VerdictOutcome) {
        let counter = match outcome {
            VerdictOutcome::Pass => &self.verdicts_pass,
            VerdictOutcome::Fail => &self.verdicts_fail,
            VerdictOutcome::Inconclusive => &self.verdicts_inconclusive,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this process holds the leader lease (always, in standalone mode).
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(u64::from(leader), Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters and the rollouts per phase.
    pub fn render(&self, phases: &[(Phase, usize)]) -> String {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            write_family(&mut out, name, kind, help, samples.iter().copied());
        };
        metric(
            "spangate_reconciles_total",
            "counter",
            "Reconciles of a rollout, successful or not.",
            &[("", read(&self.reconciles))],
        );
        metric(
            "spangate_reconcile_errors_total",
            "counter",
            "Reconciles that failed and were retried with backoff.",
            &[("", read(&self.reconcile_errors))],
        );
        let phase_labels: Vec<(String, u64)> = phases
            .iter()
            .map(|(phase, n)| (format!("{{phase=\"{phase}\"}}"), *n as u64))
            .collect();
        let phase_samples: Vec<(&str, u64)> = phase_labels
            .iter()
            .map(|(labels, n)| (labels.as_str(), *n))
            .collect();
        metric(
            "spangate_rollouts",
            "gauge",
            "Rollouts by phase.",
            &phase_samples,
        );
        metric(
            "spangate_verdicts_total",
            "counter",
            "Analysis verdicts by outcome.",
            &[
                ("{outcome=\"Pass\"}", read(&self.verdicts_pass)),
                ("{outcome=\"Fail\"}", read(&self.verdicts_fail)),
                (
                    "{outcome=\"Inconclusive\"}",
                    read(&self.verdicts_inconclusive),
                ),
            ],
        );
        metric(
            "spangate_leader",
            "gauge",
            "1 when this process reconciles (holds the leader lease), else 0.",
            &[("", read(&self.leader))],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let metrics = Metrics::default();
        metrics.reconciled();
        metrics.reconciled();
        metrics.verdict(VerdictOutcome::Fail);
        let text = metrics.render(&[(Phase::Progressing, 3), (Phase::Promoted, 0)]);
        for line in [
            "# TYPE spangate_reconciles_total counter",
            "spangate_reconciles_total 2",
            "spangate_reconcile_errors_total 0",
            "spangate_rollouts{phase=\"Progressing\"} 3",
            "spangate_rollouts{phase=\"Promoted\"} 0",
            "spangate_verdicts_total{outcome=\"Fail\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
