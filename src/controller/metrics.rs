//! The controller's and the judge's families of `/metrics`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::ReconcileError;
use crate::api::VerdictOutcome;
use crate::telemetry::metrics::{
    DurationHistogram, Registry, TraceExemplar, Unit, duration_histogram,
};

type Labels = [(&'static str, &'static str); 1];

/// What the controller counts; shared by every reconcile.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Counter,
    reconcile_errors: Family<Labels, Counter>,
    reconcile_duration: DurationHistogram,
    verdicts: Family<Labels, Counter>,
    /// Pass, Fail, Inconclusive.
    verdict_counts: [Counter; 3],
    verdict_duration: DurationHistogram,
    leader: Gauge,
    notifications_sent: Counter,
    notifications_failed: Counter,
    notifications_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let verdicts = Family::<Labels, Counter>::default();
        let verdict_counts = [
            VerdictOutcome::Pass,
            VerdictOutcome::Fail,
            VerdictOutcome::Inconclusive,
        ]
        .map(|outcome| {
            verdicts
                .get_or_create(&[("outcome", outcome_label(outcome))])
                .clone()
        });
        let reconcile_errors = Family::<Labels, Counter>::default();
        for label in ReconcileError::METRIC_LABELS {
            drop(reconcile_errors.get_or_create(&[("error", label)]));
        }
        Self {
            reconciles: Counter::default(),
            reconcile_errors,
            reconcile_duration: duration_histogram(0.0001, 10.0),
            verdicts,
            verdict_counts,
            verdict_duration: duration_histogram(0.000_001, 0.01),
            leader: Gauge::default(),
            notifications_sent: Counter::default(),
            notifications_failed: Counter::default(),
            notifications_dropped: Counter::default(),
        }
    }
}

fn outcome_label(outcome: VerdictOutcome) -> &'static str {
    match outcome {
        VerdictOutcome::Pass => "Pass",
        VerdictOutcome::Fail => "Fail",
        VerdictOutcome::Inconclusive => "Inconclusive",
    }
}

impl Metrics {
    /// A reconcile of one rollout took `took`; `trace` is its span's trace.
    pub fn reconciled(&self, took: Duration, trace: Option<TraceExemplar>) {
        self.reconciles.inc();
        self.reconcile_duration
            .observe(took.as_secs_f64(), trace, None);
    }

    /// A reconcile failed with an error of kind `error` (its metric label).
    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&[("error", error)])
            .inc();
    }

    /// The judge gave `outcome`, in `took`.
    pub fn verdict(&self, outcome: VerdictOutcome, took: Duration, trace: Option<TraceExemplar>) {
        let index = match outcome {
            VerdictOutcome::Pass => 0,
            VerdictOutcome::Fail => 1,
            VerdictOutcome::Inconclusive => 2,
        };
        self.verdict_counts[index].inc();
        self.verdict_duration
            .observe(took.as_secs_f64(), trace, None);
    }

    /// Whether this process holds the leader lease (always, in standalone mode).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// A notice reached a webhook.
    pub fn notification_sent(&self) {
        self.notifications_sent.inc();
    }

    /// A notice did not reach a webhook after every try.
    pub fn notification_failed(&self) {
        self.notifications_failed.inc();
    }

    /// A notice was dropped because the queue was full.
    pub fn notification_dropped(&self) {
        self.notifications_dropped.inc();
    }

    /// Registers these families into `registry`. The rollouts by phase are the
    /// publisher's, registered beside them.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_reconciles",
            "Reconciles of a rollout, successful or not",
            self.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that failed and were retried with backoff, by kind of error",
            self.reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "controller_reconcile_duration",
            "Time to reconcile one rollout (judge, decide, save, tell); exemplars carry the reconcile span's trace ID when the operator exports its traces",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register(
            "controller_leader",
            "1 when this process reconciles (holds the leader lease), else 0",
            self.leader.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notices of rollout events a webhook accepted (one per webhook)",
            self.notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notices of rollout events a webhook did not accept after every retry (one per webhook)",
            self.notifications_failed.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notices of rollout events dropped because the queue to the webhooks was full",
            self.notifications_dropped.clone(),
        );
        registry.register(
            "judge_verdicts",
            "Analysis verdicts by outcome",
            self.verdicts.clone(),
        );
        registry.register_with_unit(
            "judge_verdict_duration",
            "Time the judge took for one verdict; exemplars as for reconciles",
            Unit::Seconds,
            self.verdict_duration.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{exposition, registry};

    #[test]
    fn every_family_is_registered_and_counts() {
        let metrics = Metrics::default();
        let mut registry = registry();
        metrics.register(&mut registry);
        metrics.reconciled(Duration::from_millis(2), None);
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconcile_failed("write_status");
        metrics.verdict(VerdictOutcome::Fail, Duration::from_micros(8), None);
        metrics.set_leader(true);
        metrics.notification_sent();
        metrics.notification_dropped();
        let (_, text) = exposition(&registry, "");
        for line in [
            "# TYPE spangate_controller_reconciles_total counter",
            "spangate_controller_reconciles_total 2",
            "spangate_controller_reconcile_errors_total{error=\"write_status\"} 1",
            "spangate_controller_reconcile_errors_total{error=\"read_rollouts\"} 0",
            "spangate_controller_reconcile_duration_seconds_count 2",
            "spangate_controller_leader 1",
            "spangate_notifications_sent_total 1",
            "spangate_notifications_failed_total 0",
            "spangate_notifications_dropped_total 1",
            "spangate_judge_verdicts_total{outcome=\"Fail\"} 1",
            "spangate_judge_verdicts_total{outcome=\"Pass\"} 0",
            "spangate_judge_verdict_duration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
