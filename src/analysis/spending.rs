//! How a rollout's error budget (`1 − analysis.confidence`) is spent across its
//! checks and steps, derived from the spec alone so that every replica and every
//! restart spends it the same way.
//!
//! The budget is split evenly between the checks that are set. Each error-rate
//! check spends a quarter of its share on the rollout scope (every step's spans
//! so far, weighed step by step: one anytime-valid test that runs for the whole
//! rollout, which catches a bad variant early) and the rest on the step scope; a
//! latency check spends all of its share on the step scope. A step's part of the
//! step scope is in proportion to its weight: higher steps hold more spans, and a
//! regression that shows only under load shows there. With downstream services the
//! budget is first split evenly between the services judged (`spec.service` and
//! each of `spec.downstreamServices`); a downstream service has no rollout scope
//! (status keeps no finished steps of it), so its error checks spend their whole
//! share on the step scope. By the union bound, the chance that any check ever
//! alarms on any service or step while every tolerance holds is at most the budget.

use crate::api::AnalysisSpec;

/// Effective samples at which a step's boundaries are tightest, as a multiple of
/// `minSamples`: decisions that matter are made after a step has its minimum.
pub const PLANNED_SAMPLES_PER_MIN_SAMPLE: f64 = 10.0;

/// The part of an error-rate check's budget spent on the rollout scope.
const ROLLOUT_SHARE: f64 = 0.25;

/// The error budget of every check of one rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spending {
    /// 1 − confidence.
    pub total: f64,
    /// Checks that are set.
    pub checks: u32,
    /// Steps below 100%: the ones that are judged.
    pub judged_steps: u32,
    /// Sum of the weights of the judged steps.
    judged_weight: f64,
    /// Whether error checks weigh every step's spans too (not for a downstream
    /// service, whose finished steps are not kept).
    rollout_scope: bool,
}

impl Spending {
    /// The spending of `analysis` over `steps` (percentages).
    pub fn of(analysis: &AnalysisSpec, steps: &[f64]) -> Self {
        let latency_quantiles = analysis
            .max_latency_ms
            .as_ref()
            .map_or(0, |q| q.iter().count() as u32);
        let checks = u32::from(analysis.max_error_rate.is_some())
            + u32::from(analysis.max_error_rate_increase.is_some())
            + u32::from(analysis.max_latency_increase.is_some())
            + latency_quantiles;
        let judged: Vec<f64> = steps.iter().copied().filter(|&w| w < 100.0).collect();
        Self {
            total: (1.0 - analysis.confidence).clamp(1e-9, 0.5),
            checks,
            judged_steps: judged.len().max(1) as u32,
            judged_weight: judged.iter().sum(),
            rollout_scope: true,
        }
    }

    /// The spending of one of `services` services judged by the same checks
    /// (`spec.service` and its downstream services): an even share of the budget.
    pub fn per_service(self, services: usize) -> Self {
        Self {
            total: self.total / services.max(1) as f64,
            ..self
        }
    }

    /// The spending of a service judged on the current step alone.
    pub fn step_scope_only(self) -> Self {
        Self {
            rollout_scope: false,
            ..self
        }
    }

    fn per_check(&self) -> f64 {
        self.total / f64::from(self.checks.max(1))
    }

    /// Whether error checks also weigh every step's spans together: only when there
    /// is more than one step to weigh.
    pub fn accumulates(&self) -> bool {
        self.rollout_scope && self.judged_steps > 1
    }

    /// The part of the step scope a step at `weight` percent gets.
    fn step_share(&self, weight: f64) -> f64 {
        if self.judged_weight > 0.0 && weight < 100.0 {
            (weight / self.judged_weight).min(1.0)
        } else {
            1.0 / f64::from(self.judged_steps)
        }
    }

    /// The budget of an error-rate check on the spans of a step at `weight` percent.
    pub fn error_step(&self, weight: f64) -> f64 {
        let share = if self.accumulates() {
            1.0 - ROLLOUT_SHARE
        } else {
            1.0
        };
        self.per_check() * share * self.step_share(weight)
    }

    /// The budget of an error-rate check on every step's spans, for the whole rollout.
    pub fn error_rollout(&self) -> f64 {
        self.per_check() * ROLLOUT_SHARE
    }

    /// The budget of a latency check on the spans of a step at `weight` percent.
    pub fn latency_step(&self, weight: f64) -> f64 {
        self.per_check() * self.step_share(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LatencyQuantiles;

    fn analysis() -> AnalysisSpec {
        AnalysisSpec {
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(800.0),
                ..LatencyQuantiles::default()
            }),
            ..AnalysisSpec::default()
        }
    }

    #[test]
    fn the_whole_budget_is_spent_and_never_more() {
        let steps = [1.0, 5.0, 25.0, 50.0, 100.0];
        let spending = Spending::of(&analysis(), &steps);
        assert_eq!((spending.checks, spending.judged_steps), (4, 4));
        let judged = &steps[..4];
        let spent = 2.0 * spending.error_rollout()
            + judged
                .iter()
                .map(|&w| 2.0 * spending.error_step(w) + 2.0 * spending.latency_step(w))
                .sum::<f64>();
        assert!((spent - 0.01).abs() < 1e-15, "{spent}");
        // Higher steps get more of it.
        assert!(spending.latency_step(50.0) > 9.0 * spending.latency_step(5.0));
    }

    #[test]
    fn one_judged_step_spends_it_all_on_the_step() {
        let spending = Spending::of(&analysis(), &[10.0, 100.0]);
        assert!(!spending.accumulates());
        assert!((spending.error_step(10.0) - 0.0025).abs() < 1e-15);
        assert!((spending.latency_step(10.0) - 0.0025).abs() < 1e-15);
    }

    #[test]
    fn services_share_the_budget_evenly_and_spend_it_all() {
        let steps = [1.0, 5.0, 25.0, 50.0, 100.0];
        let whole = Spending::of(&analysis(), &steps);
        let main = whole.per_service(3);
        let downstream = main.step_scope_only();
        assert!(!downstream.accumulates());
        let judged = &steps[..4];
        let spent_by = |s: &Spending| {
            let rollout = if s.accumulates() {
                2.0 * s.error_rollout()
            } else {
                0.0
            };
            rollout
                + judged
                    .iter()
                    .map(|&w| 2.0 * s.error_step(w) + 2.0 * s.latency_step(w))
                    .sum::<f64>()
        };
        assert!((spent_by(&main) - 0.01 / 3.0).abs() < 1e-15);
        assert!((spent_by(&downstream) - 0.01 / 3.0).abs() < 1e-15);
        assert!((spent_by(&main) + 2.0 * spent_by(&downstream) - 0.01).abs() < 1e-15);
        assert_eq!(whole.per_service(1), whole);
    }

    #[test]
    fn confidence_sets_the_budget() {
        let strict = AnalysisSpec {
            confidence: 0.999,
            ..analysis()
        };
        let spending = Spending::of(&strict, &[50.0, 100.0]);
        assert!((spending.total - 0.001).abs() < 1e-15);
    }
}
