//! The judge: from a step's window (and what earlier steps showed) to a verdict.
//!
//! Every check is an anytime-valid one-sided test of "the rollout variant is
//! worse than its tolerance", built on the boundaries of [`super::sequential`]
//! with the budget of [`super::spending`]; its estimate is shown with the
//! confidence interval of the same boundary, so the interval clears the threshold
//! exactly when the check fails. The verdict depends only on the window's counts
//! and sketches (and the status), so merged windows judge as one.
//!
//! Services downstream of the rollout's service are judged by the same checks on
//! their own spans of the current step, each variant against the other within the
//! service, with the error budget shared evenly between every service judged.
//! `minSamples` and the sample-ratio check look at the rollout's own service only:
//! a downstream service with no spans yet can neither fail nor hold a step, since
//! not every request reaches every service it may call.

use super::sequential::{Boundary, beta_binomial_e_value, interval_e_value};
use super::spending::{PLANNED_SAMPLES_PER_MIN_SAMPLE, Spending};
use super::window::{ArmWindow, UnitSample};
use super::words::{
    percent, push_all, push_digits, push_fixed, push_hex, push_milliseconds, push_ms_number,
    push_percent, push_points, push_signed_percent, push_signed_points,
};
use super::{LatencySketch, Window};
use std::fmt::Write;

use crate::api::{
    AnalysisSpec, ArmEvidence, CheckEvidence, CheckOutcome, CheckScope, EvidenceUnit,
    ExemplarReason, ExemplarSpan, LatencyQuantiles, SampleRatioEvidence, SamplingEvidence,
    StepEvidence, VariantEvidence, Verdict, VerdictOutcome,
};

/// Durations at or below 1 µs share the sketch's lowest bucket, so a p99 below this
/// is not a measurement to divide by.
const LATENCY_FLOOR_MS: f64 = 0.001;

/// The sample-ratio check's budget per step. A false alarm only holds a step, so
/// it is not taken from the rollback budget.
pub const SAMPLE_RATIO_ALPHA: f64 = 1e-3;

/// Pseudo-units of the sample-ratio test's prior around the weight.
const SAMPLE_RATIO_CONCENTRATION: f64 = 100.0;

/// The quantile `maxLatencyIncrease` compares.
const INCREASE_QUANTILE: f64 = 0.99;

/// What the judge weighs.
#[derive(Debug, Clone, Copy)]
pub struct JudgeInput<'a> {
    pub analysis: &'a AnalysisSpec,
    /// Every step of the rollout (percentages): the budget is spread over them.
    pub steps: &'a [f64],
    /// `service.name` of the spans judged.
    pub service: &'a str,
    pub baseline_variant: &'a str,
    pub candidate_variant: &'a str,
    /// Percent of units handed the rollout variant in this step.
    pub weight: f64,
    /// The percent served before this step (`status.previousWeight`), when the
    /// step changed it.
    pub previous_weight: Option<f64>,
    /// The attribute spans carry the bucketing value in, for messages.
    pub unit_attribute: &'a str,
    /// What the finished steps showed.
    pub completed: &'a [StepEvidence],
    /// The current step's spans.
    pub window: &'a Window,
    /// The commit judged (`spec.revision`), named in the verdict.
    pub revision: Option<&'a str>,
    /// Each of `spec.downstreamServices` with its spans of the current step, empty
    /// windows included: the budget is split by how many are named, not by how many
    /// have spans, so every look spends it alike.
    pub downstream: &'a [(&'a str, &'a Window)],
}

/// One service's spans and the budget its checks spend.
struct Judged<'a> {
    service: &'a str,
    window: &'a Window,
    /// Finished steps of this service (only the rollout's own service keeps them).
    completed: &'a [StepEvidence],
    spending: Spending,
    /// Starts every message of its checks: empty for the rollout's own service,
    /// `payments: ` for a downstream one.
    prefix: String,
}

/// Judges the current step of a rollout.
///
/// Fail as soon as any check fails, whatever the sample size: the tests stay valid
/// at every look. Otherwise Inconclusive until both arms hold `minSamples` spans
/// (at least one: no data is never a pass) and while the share of units in the
/// rollout variant does not fit the weight; then Pass.
pub fn judge(input: &JudgeInput<'_>) -> Verdict {
    let window = input.window;
    let rates = StepRates::of(window);
    let baseline = evidence(input.baseline_variant, &window.baseline, &rates.baseline);
    let candidate = evidence(input.candidate_variant, &window.candidate, &rates.candidate);
    let hex = |bytes: &[u8]| {
        let mut hex = String::with_capacity(2 * bytes.len());
        push_hex(&mut hex, bytes);
        hex
    };
    let error_exemplars = || {
        std::iter::once(window)
            .chain(input.downstream.iter().map(|(_, window)| *window))
            .flat_map(|window| &window.candidate.error_exemplars)
    };
    let mut exemplar_trace_ids: Vec<String> = Vec::new();
    for ids in error_exemplars() {
        let id = hex(&ids.trace_id);
        // A failing request often fails in several services of one trace.
        if !exemplar_trace_ids.contains(&id) {
            exemplar_trace_ids.push(id);
        }
    }
    let exemplar_spans = error_exemplars()
        .map(|ids| (ids, ExemplarReason::Error))
        .chain(
            window
                .candidate
                .slowest
                .as_ref()
                .map(|(_, ids)| (ids, ExemplarReason::Slowest)),
        )
        .map(|(ids, why)| ExemplarSpan {
            trace_id: hex(&ids.trace_id),
            span_id: hex(&ids.span_id),
            why,
            trace_url: None,
        })
        .collect();
    let spending =
        Spending::of(input.analysis, input.steps).per_service(1 + input.downstream.len());
    let mut checks = run_checks(
        input,
        &Judged {
            service: input.service,
            window,
            completed: input.completed,
            spending,
            prefix: String::new(),
        },
        rates,
        &baseline,
        &candidate,
    );
    let mut downstream_spans = Vec::with_capacity(input.downstream.len());
    for &(service, window) in input.downstream {
        let rates = StepRates::of(window);
        let baseline = evidence(input.baseline_variant, &window.baseline, &rates.baseline);
        let candidate = evidence(input.candidate_variant, &window.candidate, &rates.candidate);
        checks.extend(run_checks(
            input,
            &Judged {
                service,
                window,
                completed: &[],
                spending: spending.step_scope_only(),
                prefix: format!("{service}: "),
            },
            rates,
            &baseline,
            &candidate,
        ));
        downstream_spans.push((service, candidate.samples, baseline.samples));
    }
    let sample_ratio = sample_ratio(
        &window.units,
        input.weight,
        input.previous_weight,
        input.unit_attribute,
    );

    let failed: Vec<&CheckEvidence> = checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Fail)
        .collect();
    let min_samples = input.analysis.min_samples.max(1);
    let missing_candidate = min_samples.saturating_sub(candidate.samples);
    let missing_baseline = min_samples.saturating_sub(baseline.samples);
    let (outcome, message) = if !failed.is_empty() {
        let messages: Vec<&str> = failed.iter().map(|c| c.message.as_str()).collect();
        (VerdictOutcome::Fail, messages.join("; "))
    } else if missing_candidate > 0 || missing_baseline > 0 {
        (
            VerdictOutcome::Inconclusive,
            format!(
                "need {missing_candidate} more spans of variant {} and {missing_baseline} of {} \
                 (minSamples {min_samples} per variant)",
                input.candidate_variant, input.baseline_variant
            ),
        )
    } else if let Some(srm) = sample_ratio.as_ref().filter(|s| s.mismatch) {
        (
            VerdictOutcome::Inconclusive,
            format!(
                "SampleRatioMismatch: {} of {} units got variant {} ({}), {}; \
                 the spans cannot be trusted, holding",
                srm.candidate_units,
                srm.units,
                input.candidate_variant,
                percent(srm.candidate_units as f64 / srm.units.max(1) as f64),
                match srm.expected_share_from {
                    Some(from) => format!(
                        "the weights say {} to {}",
                        percent(from.min(srm.expected_share)),
                        percent(from.max(srm.expected_share))
                    ),
                    None => format!("the weight says {}", percent(srm.expected_share)),
                },
            ),
        )
    } else {
        (
            VerdictOutcome::Pass,
            pass_message(
                &checks,
                input.revision,
                [&candidate, &baseline],
                &downstream_spans,
            ),
        )
    };
    Verdict {
        outcome,
        message,
        failed_checks: failed_names(&failed),
        confidence: input.analysis.confidence,
        checks,
        sample_ratio,
        baseline,
        candidate,
        revision: input.revision.map(str::to_string),
        exemplar_trace_ids,
        exemplar_spans,
    }
}

/// The names of the failed checks, each once (a check fails on the step and on the
/// whole rollout alike).
fn failed_names(failed: &[&CheckEvidence]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for check in failed {
        if !names.contains(&check.name) {
            names.push(check.name.clone());
        }
    }
    names
}

fn evidence(variant: &str, arm: &ArmWindow, rate: &Rate) -> VariantEvidence {
    let [p50, p90, p95, p99] = arm.latency.quantiles_ms([0.50, 0.90, 0.95, 0.99]);
    VariantEvidence {
        variant: variant.to_string(),
        samples: arm.samples,
        errors: arm.errors,
        error_rate: arm.error_rate(),
        latency_ms: LatencyQuantiles { p50, p90, p95, p99 },
        error_rate_unit_variance: rate.unit_variance,
        unit_groups: rate.groups,
        sampling: arm.weights.sampled().then(|| SamplingEvidence {
            adjusted_samples: arm.weights.spans,
            adjusted_errors: arm.weights.errors,
            error_weight: arm.weights.error_weight(),
            other_weight: arm.weights.other_weight(),
            max_weight: arm.weights.max,
            error_jump: arm.weights.error_jump(),
        }),
    }
}

/// The error counts of one arm, each span counted by its weight (its adjusted
/// count when sampled), with the variance of its rate between unit groups.
#[derive(Debug, Clone, Copy)]
struct Rate {
    n: f64,
    k: f64,
    unit_variance: Option<f64>,
    /// Groups with spans when spans carried their unit; 0 when they did not.
    groups: u32,
    /// Σw²/Σw of erroring spans and of the others (1 without sampling).
    error_weight: f64,
    other_weight: f64,
    /// How far one more error can raise the rate, times n: 1 without sampling, and
    /// with a tail sampler that keeps every error.
    error_jump: f64,
}

impl Rate {
    fn of_arm(arm: &ArmWindow) -> Self {
        let weights = &arm.weights;
        let n = weights.spans as f64;
        let k = weights.errors as f64;
        let sampling = Self {
            n,
            k,
            unit_variance: None,
            groups: 0,
            error_weight: weights.error_weight(),
            other_weight: weights.other_weight(),
            error_jump: f64::from(weights.error_jump()),
        };
        if !arm.grouped_by_unit || weights.spans == 0 {
            return sampling;
        }
        let p = k / n;
        let used = || arm.groups.iter().filter(|g| g.spans > 0);
        let groups = used().count();
        let g = groups as f64;
        let unit_variance = (groups >= 2).then(|| {
            let spread: f64 = used()
                .map(|group| {
                    let spread = group.errors as f64 - p * group.spans as f64;
                    spread * spread
                })
                .sum();
            g / (g - 1.0) * spread / (n * n)
        });
        Self {
            unit_variance,
            groups: groups as u32,
            ..sampling
        }
    }

    fn of_evidence(arm: &ArmEvidence) -> Self {
        let (n, k, error_weight, other_weight, error_jump) = match &arm.sampling {
            Some(s) => (
                s.adjusted_samples,
                s.adjusted_errors,
                s.error_weight,
                s.other_weight,
                s.error_jump.max(1),
            ),
            None => (arm.samples, arm.errors, 1.0, 1.0, 1),
        };
        Self {
            n: n as f64,
            k: k as f64,
            unit_variance: arm.error_rate_unit_variance,
            groups: arm.unit_groups,
            error_weight,
            other_weight,
            error_jump: f64::from(error_jump.max(1)),
        }
    }

    fn p(&self) -> f64 {
        if self.n > 0.0 { self.k / self.n } else { 0.0 }
    }

    /// The rate at which variances are taken: never below half an event (of a
    /// span's typical weight), so a window without errors still has a variance.
    fn floor(&self, p: f64) -> f64 {
        let half = 0.5 * self.other_weight / self.n;
        p.max(half).min(1.0 - half).clamp(0.0, 1.0)
    }

    /// How many times the binomial variance at `p` sampling makes the variance of
    /// the weighted rate: `(1 - p) e + p o` for `e`, `o` the mean weights (Σw²/Σw)
    /// of erroring and other spans, from the variance `Σ w² (y - p)² / (Σw)²` of a
    /// weighted mean. 1 without sampling; close to 1 when every error is kept.
    fn sampling_effect(&self, p: f64) -> f64 {
        (1.0 - p) * self.error_weight + p * self.other_weight
    }

    /// Variance of the estimated rate were the true rate `p_at`, and its degrees of
    /// freedom when it comes from unit groups (see [`unit_variance`]).
    fn variance(&self, p_at: f64) -> (f64, Option<f64>) {
        let p_at = self.floor(p_at);
        unit_variance(
            p_at * (1.0 - p_at) * self.sampling_effect(p_at) / self.n,
            self.unit_variance,
            self.groups,
        )
    }
}

/// Below this many unit groups with spans, spans are always treated as clustered:
/// too few units to tell chance from a unit's own health.
const FEW_GROUPS: u32 = 32;

/// The variance of a statistic from the one it would have were spans independent
/// and the one measured between unit groups (`groups` of them; 0 when spans carry
/// no unit), with the degrees of freedom of the estimate when it is the latter.
///
/// With few groups the larger of the two counts, known to few degrees of freedom
/// (one group alone: to none, so no check can fail on it). With many, the measured
/// one counts only by what it exceeds chance by: between-group variance scatters
/// around the independent one with a relative spread of `sqrt(2/df)`, and taking
/// the larger of two noisy estimates at every look would cost power for nothing
/// when spans are independent.
fn unit_variance(independent: f64, between: Option<f64>, groups: u32) -> (f64, Option<f64>) {
    match (groups, between) {
        (0, _) => (independent, None),
        (1, _) | (_, None) => (independent, Some(0.0)),
        (g, Some(v)) if g < FEW_GROUPS => (v.max(independent), Some(f64::from(g - 1))),
        (g, Some(v)) => {
            let df = f64::from(g - 1);
            let noise = 2.0 * (2.0 / df).sqrt();
            let ratio = v / independent;
            if ratio > 1.0 + noise {
                (independent * (ratio - noise), Some(df))
            } else {
                (independent, None)
            }
        }
    }
}

/// The fewer degrees of freedom of two variance estimates.
fn fewer(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A test's estimate and interval, and whether it failed.
#[derive(Debug, Clone, Copy)]
struct Tested {
    estimate: f64,
    lower: f64,
    upper: f64,
    fail: bool,
}

/// One-sample test of "rate ≤ p0" on `n` spans with estimate `p`, a variance
/// `design_effect` times the binomial one known to `df` degrees of freedom.
/// The interval is Wilson's score interval at the boundary, so its lower end
/// clears `p0` exactly when the test fails.
fn rate_above(
    n: f64,
    p: f64,
    design_effect: f64,
    df: Option<f64>,
    error_jump: f64,
    p0: f64,
    boundary: Boundary,
) -> Tested {
    let c = design_effect.max(1.0);
    let se0 = (p0 * (1.0 - p0) * c / n).sqrt();
    let z = if se0 > 0.0 {
        (p - p0) / se0
    } else if p > p0 {
        f64::INFINITY
    } else {
        0.0
    };
    let jump = if se0 > 0.0 {
        error_jump / (n * se0)
    } else {
        0.0
    };
    let b = boundary.z(n / c, jump, df);
    let (lower, upper) = if b.is_finite() {
        let b2c = b * b * c;
        let center = (p + b2c / (2.0 * n)) / (1.0 + b2c / n);
        let half =
            b * c.sqrt() * (p * (1.0 - p) / n + b2c / (4.0 * n * n)).sqrt() / (1.0 + b2c / n);
        ((center - half).max(0.0), (center + half).min(1.0))
    } else {
        (0.0, 1.0)
    };
    Tested {
        estimate: p,
        lower,
        upper,
        fail: z >= b,
    }
}

/// Test of "difference ≤ delta" for an estimated `difference` with variance
/// `variance` over `effective_samples`, one span moving it by at most `jump`.
fn difference_above(
    difference: f64,
    variance: f64,
    effective_samples: f64,
    jump: f64,
    df: Option<f64>,
    delta: f64,
    boundary: Boundary,
) -> Tested {
    let se = variance.sqrt();
    let b = boundary.z(effective_samples, jump / se, df);
    let z = (difference - delta) / se;
    Tested {
        estimate: difference,
        lower: difference - b * se,
        upper: difference + b * se,
        fail: se > 0.0 && z >= b,
    }
}

/// One step's two arms, ready to be weighed with other steps.
#[derive(Debug, Clone, Copy)]
struct StepRates {
    baseline: Rate,
    candidate: Rate,
}

impl StepRates {
    fn of(window: &Window) -> Self {
        Self {
            baseline: Rate::of_arm(&window.baseline),
            candidate: Rate::of_arm(&window.candidate),
        }
    }

    fn has_both(&self) -> bool {
        self.baseline.n > 0.0 && self.candidate.n > 0.0
    }

    /// The step's weight among steps: its harmonic sample size.
    fn weight(&self) -> f64 {
        let (c, b) = (self.candidate.n, self.baseline.n);
        c * b / (c + b)
    }

    /// Difference of rates, its variance under "difference = delta", the binomial
    /// variance there, and degrees of freedom.
    fn difference(&self, delta: f64) -> (f64, f64, f64, Option<f64>) {
        let (pc, pb) = (self.candidate.p(), self.baseline.p());
        let at_c = pc.max(pb + delta);
        let (vc, dfc) = self.candidate.variance(at_c);
        let (vb, dfb) = self.baseline.variance(pb);
        let binomial = {
            let c = self.candidate.floor(at_c);
            let b = self.baseline.floor(pb);
            c * (1.0 - c) / self.candidate.n + b * (1.0 - b) / self.baseline.n
        };
        (pc - pb, vc + vb, binomial, fewer(dfc, dfb))
    }
}

/// Error-rate checks weigh the steps together by their harmonic sample sizes, so
/// a change of weight between steps cannot make a drift of both arms' rates over
/// time look like a difference between them (each step compares arms of the same
/// time span).
fn difference_over_steps(steps: &[StepRates], delta: f64, boundary: Boundary) -> Option<Tested> {
    let steps: Vec<&StepRates> = steps.iter().filter(|s| s.has_both()).collect();
    let total: f64 = steps.iter().map(|s| s.weight()).sum();
    if steps.is_empty() || total <= 0.0 {
        return None;
    }
    let (mut difference, mut variance, mut binomial, mut df, mut jump) =
        (0.0, 0.0, 0.0, None, 0.0f64);
    for step in &steps {
        let share = step.weight() / total;
        let (d, v, b, step_df) = step.difference(delta);
        difference += share * d;
        variance += share * share * v;
        binomial += share * share * b;
        df = fewer(df, step_df);
        jump = jump.max(share * step.candidate.error_jump / step.candidate.n);
    }
    let design_effect = (variance / binomial).max(1.0);
    Some(difference_above(
        difference,
        variance,
        total / design_effect,
        jump,
        df,
        delta,
        boundary,
    ))
}

/// The candidate's error rate over the steps, pooled.
fn rate_over_steps(steps: &[StepRates], p0: f64, boundary: Boundary) -> Option<Tested> {
    let arms: Vec<&Rate> = steps
        .iter()
        .map(|s| &s.candidate)
        .filter(|r| r.n > 0.0)
        .collect();
    let n: f64 = arms.iter().map(|r| r.n).sum();
    if n <= 0.0 {
        return None;
    }
    let p = arms.iter().map(|r| r.k).sum::<f64>() / n;
    let (mut variance, mut binomial, mut df) = (0.0, 0.0, None);
    let error_jump = arms.iter().map(|r| r.error_jump).fold(1.0, f64::max);
    for arm in &arms {
        let at = arm.p().max(p0);
        let (v, arm_df) = arm.variance(at);
        let at = arm.floor(at);
        variance += arm.n * arm.n * v;
        binomial += arm.n * at * (1.0 - at);
        df = fewer(df, arm_df);
    }
    Some(rate_above(
        n,
        p,
        (variance / binomial).max(1.0),
        df,
        error_jump,
        p0,
        boundary,
    ))
}

/// How much wider the spread of a latency statistic over weighted counts is than
/// if every span were kept and independent: sampling's (Kish's, Σw²/Σw in weighted
/// counts), measured instead from the spread of mean log-latency between unit
/// groups when spans carry units (see [`unit_variance`]); and the degrees of freedom
/// of that estimate.
fn latency_design_effect(arm: &ArmWindow) -> (f64, Option<f64>) {
    let sampling = arm.weights.mean_weight();
    if !arm.grouped_by_unit || arm.weights.spans < 2 {
        return (sampling, None);
    }
    let used = || arm.groups.iter().filter(|g| g.spans > 0);
    let (groups, sum) = used().fold((0, 0.0), |(groups, sum), g| {
        (groups + 1, sum + g.log_latency_sum())
    });
    let n = arm.weights.spans as f64;
    let mean = sum / n;
    let within = (arm.log_latency_square_sum() - n * mean * mean).max(0.0) / (n - 1.0);
    if within <= 0.0 {
        return (1.0, None);
    }
    let g = groups as f64;
    let between = (groups >= 2).then(|| {
        g / (g - 1.0)
            * used()
                .map(|group| {
                    let spread = group.log_latency_sum() - mean * group.spans as f64;
                    spread * spread
                })
                .sum::<f64>()
            / (n * n)
    });
    let independent = within / n;
    let (variance, df) = unit_variance(independent * sampling, between, groups as u32);
    (variance / independent, df)
}

/// The p99 comparison of `maxLatencyIncrease` as one two-sample statistic: the
/// share of the candidate's spans slower than `(1 + m)` times the baseline's p99,
/// against the 1% it would be were the candidate's p99 exactly `(1 + m)` times the
/// baseline's. By the delta method its variance there is `0.99 · 0.01 · (1/n_c +
/// 1/n_b)`: the candidate's binomial share, plus the baseline p99's own error
/// carried through the candidate's density (equal to the baseline's, scaled, at
/// that boundary). Rejecting "ratio ≤ m" at every m, and "ratio ≥ m" from below,
/// gives the interval; both come from the same boundary as the decision.
struct TailComparison<'w> {
    candidate: &'w LatencySketch,
    /// The baseline's p99 in nanoseconds, rounded up to its bucket's edge.
    baseline_p99_ns: f64,
    /// Variance of the share under the boundary hypothesis.
    variance: f64,
    boundary: f64,
}

impl<'w> TailComparison<'w> {
    fn new(
        window: &'w Window,
        candidate_design: (f64, Option<f64>),
        boundary: Boundary,
    ) -> Option<Self> {
        let (c, b) = (&window.candidate, &window.baseline);
        let (n_c, n_b) = (c.latency.count(), b.latency.count());
        if n_c == 0 || n_b == 0 {
            return None;
        }
        let rank = ((n_b as f64 * INCREASE_QUANTILE).ceil() as u64).clamp(1, n_b);
        let (_, baseline_p99_ns) = b.latency.rank_bounds_ns(rank)?;
        let (effect_c, df_c) = candidate_design;
        let (effect_b, df_b) = latency_design_effect(b);
        let q = INCREASE_QUANTILE;
        let spread = effect_c / n_c as f64 + effect_b / n_b as f64;
        let variance = q * (1.0 - q) * spread;
        let jump = f64::from(c.weights.max.max(1)) / (n_c as f64 * variance.sqrt());
        Some(Self {
            candidate: &c.latency,
            baseline_p99_ns,
            variance,
            boundary: boundary.z(1.0 / spread, jump, fewer(df_c, df_b)),
        })
    }

    /// The baseline's p99, never below what the sketch can tell apart.
    fn baseline_ns(&self) -> f64 {
        self.baseline_p99_ns.max(LATENCY_FLOOR_MS * 1e6)
    }

    /// The statistic when `count` candidate spans are above the threshold.
    fn z_of_count(&self, count: u64) -> f64 {
        let share = count as f64 / self.candidate.count() as f64;
        (share - (1.0 - INCREASE_QUANTILE)) / self.variance.sqrt()
    }

    /// The statistic for "the candidate's p99 is at most (1 + m) times the baseline's".
    fn z(&self, m: f64) -> f64 {
        self.z_of_count(
            self.candidate
                .count_above_ns((1.0 + m) * self.baseline_ns()),
        )
    }

    /// The largest m the spans show the ratio exceeds (−100% when none).
    fn lower(&self) -> f64 {
        self.largest(|count| self.z_of_count(count) >= self.boundary)
            .unwrap_or(-1.0)
    }

    /// The smallest m the spans show the ratio stays under (∞ when none): where
    /// "ratio ≥ m" starts being rejected.
    fn upper(&self) -> f64 {
        match self.largest(|count| self.z_of_count(count) > -self.boundary) {
            None => -1.0,
            Some(m) if m >= MAX_RATIO => f64::INFINITY,
            Some(m) => m,
        }
    }

    /// The largest m in (−1, MAX_RATIO] where `holds` of the count above
    /// `(1 + m)` times the baseline's p99 (true of large counts), exactly: the
    /// count only changes at bucket edges.
    fn largest(&self, holds: impl Fn(u64) -> bool) -> Option<f64> {
        let m = self.candidate.largest_threshold_ns(holds)? / self.baseline_ns() - 1.0;
        (m >= SMALLEST_RATIO).then_some(m.min(MAX_RATIO))
    }
}

/// The smallest relative change the interval of `maxLatencyIncrease` reaches to
/// (−99.9%): below it the ratio says nothing.
const SMALLEST_RATIO: f64 = -0.999;

/// The largest relative increase the interval of `maxLatencyIncrease` reaches to
/// (+10,000%): beyond it the interval is open.
const MAX_RATIO: f64 = 100.0;

/// An anytime-valid confidence interval for the `q` quantile of an arm, in
/// milliseconds: the sketch's bucket edges around the ranks the boundary allows.
/// The upper end is `None` when too few spans bound it.
fn quantile_interval(
    arm: &ArmWindow,
    q: f64,
    design: (f64, Option<f64>),
    boundary: Boundary,
) -> Option<(f64, Option<f64>)> {
    let sketch = &arm.latency;
    let n = sketch.count();
    if n == 0 {
        return None;
    }
    let (effect, df) = design;
    let nf = n as f64;
    let sd = (nf * q * (1.0 - q) * effect).sqrt();
    let jump = f64::from(arm.weights.max.max(1)) / sd.max(1e-9);
    let margin = boundary.z(nf / effect, jump, df) * sd;
    let low_rank = (nf * q - margin).floor();
    let high_rank = (nf * q + margin).ceil();
    let lower = if low_rank >= 1.0 {
        sketch
            .rank_bounds_ns(low_rank as u64)
            .map_or(0.0, |(low, _)| low)
    } else {
        0.0
    };
    let upper = (high_rank <= nf)
        .then(|| sketch.rank_bounds_ns(high_rank.max(1.0) as u64))
        .flatten()
        .map(|(_, high)| high / 1e6);
    Some((lower / 1e6, upper))
}

/// What every check needs to know about the step.
struct CheckContext<'a> {
    input: &'a JudgeInput<'a>,
    judged: &'a Judged<'a>,
    /// `rollout confidence 99%`, the end of every check's message.
    confidence: String,
}

/// How a check's threshold reads in a sentence.
#[derive(Debug, Clone, Copy)]
enum ThresholdText {
    /// `5%`
    Percent,
    /// `1 point`
    Points,
    /// `800 ms`
    Milliseconds,
    /// `25%` of a relative increase
    WholePercent,
}

/// What a check is, before it is run.
struct Check {
    name: String,
    scope: CheckScope,
    unit: EvidenceUnit,
    threshold: f64,
    threshold_text: ThresholdText,
    alpha: f64,
}

impl CheckContext<'_> {
    /// The check's evidence; `describe` writes what the spans showed, the start of
    /// the message.
    fn evidence(
        &self,
        check: Check,
        tested: Option<Tested>,
        describe: impl FnOnce(&Tested, &mut String),
    ) -> CheckEvidence {
        let Check {
            name,
            scope,
            unit,
            threshold,
            threshold_text,
            alpha,
        } = check;
        let mut message = String::with_capacity(160);
        message.push_str(&self.judged.prefix);
        let (outcome, estimate, lower, upper) = match tested {
            None => {
                let _ = write!(
                    message,
                    "{name}: no spans of variant {} yet",
                    self.input.candidate_variant
                );
                (CheckOutcome::Inconclusive, None, None, None)
            }
            Some(t) => {
                describe(&t, &mut message);
                message.push_str(if t.fail { " > " } else { " within " });
                message.push_str(&name);
                message.push(' ');
                match threshold_text {
                    ThresholdText::Percent => push_percent(&mut message, threshold),
                    ThresholdText::Points => push_points(&mut message, threshold),
                    ThresholdText::Milliseconds => push_milliseconds(&mut message, threshold),
                    ThresholdText::WholePercent => {
                        push_fixed(&mut message, threshold * 100.0, 0, false, false);
                        message.push('%');
                    }
                }
                push_all(&mut message, &[" (", &self.confidence, ")"]);
                let outcome = if t.fail {
                    CheckOutcome::Fail
                } else {
                    CheckOutcome::Pass
                };
                (
                    outcome,
                    Some(t.estimate),
                    t.lower.is_finite().then_some(t.lower),
                    t.upper.is_finite().then_some(t.upper),
                )
            }
        };
        CheckEvidence {
            name,
            service: self.judged.service.to_string(),
            scope,
            unit,
            estimate,
            lower,
            upper,
            threshold,
            outcome,
            alpha,
            message,
        }
    }
}

/// Every check of the analysis on one service's spans.
fn run_checks(
    input: &JudgeInput<'_>,
    judged: &Judged<'_>,
    current: StepRates,
    baseline: &VariantEvidence,
    candidate: &VariantEvidence,
) -> Vec<CheckEvidence> {
    let analysis = input.analysis;
    let spending = judged.spending;
    let planned = analysis.min_samples.max(1) as f64 * PLANNED_SAMPLES_PER_MIN_SAMPLE;
    let context = CheckContext {
        input,
        judged,
        confidence: format!("rollout confidence {}", percent(analysis.confidence)),
    };
    let (b, c) = (input.baseline_variant, input.candidate_variant);
    let window = judged.window;
    let mut all_steps: Vec<StepRates> = judged
        .completed
        .iter()
        .map(|s| StepRates {
            baseline: Rate::of_evidence(&s.baseline),
            candidate: Rate::of_evidence(&s.candidate),
        })
        .collect();
    all_steps.push(current);
    let step_boundary = Boundary::new(spending.error_step(input.weight), planned);
    let rollout_boundary = Boundary::new(
        spending.error_rollout(),
        planned * f64::from(spending.judged_steps),
    );
    let mut checks = Vec::with_capacity(8);

    if let Some(max) = analysis.max_error_rate {
        let name = "maxErrorRate".to_string();
        let step = (current.candidate.n > 0.0).then(|| {
            let rate = current.candidate;
            let at = rate.p().max(max);
            let (variance, df) = rate.variance(at);
            let at = rate.floor(at);
            let effect = variance / (at * (1.0 - at) / rate.n);
            rate_above(
                rate.n,
                rate.p(),
                effect,
                df,
                rate.error_jump,
                max,
                step_boundary,
            )
        });
        checks.push(context.evidence(
            Check {
                name: name.clone(),
                scope: CheckScope::Step,
                unit: EvidenceUnit::Fraction,
                threshold: max,
                threshold_text: ThresholdText::Percent,
                alpha: spending.error_step(input.weight),
            },
            step,
            |t, out| {
                push_all(out, &["error rate of ", c, " "]);
                push_interval(out, EvidenceUnit::Fraction, t);
            },
        ));
        if spending.accumulates() {
            checks.push(context.evidence(
                Check {
                    name,
                    scope: CheckScope::Rollout,
                    unit: EvidenceUnit::Fraction,
                    threshold: max,
                    threshold_text: ThresholdText::Percent,
                    alpha: spending.error_rollout(),
                },
                rate_over_steps(&all_steps, max, rollout_boundary),
                |t, out| {
                    push_all(out, &["error rate of ", c, " since the first step "]);
                    push_interval(out, EvidenceUnit::Fraction, t);
                },
            ));
        }
    }
    if let Some(max) = analysis.max_error_rate_increase {
        let name = "maxErrorRateIncrease".to_string();
        let describe = |t: &Tested, since: &str, out: &mut String| {
            push_all(out, &["error rate of ", c, since, " "]);
            push_percent(out, candidate.error_rate.unwrap_or(0.0));
            out.push_str(" is ");
            push_signed_points(out, t.estimate);
            push_all(out, &[" points over ", b, " ["]);
            push_signed_points(out, t.lower);
            out.push_str(", ");
            push_signed_points(out, t.upper);
            out.push(']');
        };
        checks.push(context.evidence(
            Check {
                name: name.clone(),
                scope: CheckScope::Step,
                unit: EvidenceUnit::Fraction,
                threshold: max,
                threshold_text: ThresholdText::Points,
                alpha: spending.error_step(input.weight),
            },
            difference_over_steps(std::slice::from_ref(&current), max, step_boundary),
            |t, out| describe(t, "", out),
        ));
        if spending.accumulates() {
            checks.push(context.evidence(
                Check {
                    name,
                    scope: CheckScope::Rollout,
                    unit: EvidenceUnit::Fraction,
                    threshold: max,
                    threshold_text: ThresholdText::Points,
                    alpha: spending.error_rollout(),
                },
                difference_over_steps(&all_steps, max, rollout_boundary),
                |t, out| describe(t, " since the first step", out),
            ));
        }
    }
    let latency_boundary = Boundary::new(spending.latency_step(input.weight), planned);
    let candidate_design = latency_design_effect(&window.candidate);
    if let Some(limits) = &analysis.max_latency_ms {
        for (quantile_name, q, max_ms) in limits.iter() {
            let tested =
                quantile_interval(&window.candidate, q, candidate_design, latency_boundary).map(
                    |(lower, upper)| Tested {
                        estimate: window.candidate.latency.quantile_ms(q).unwrap_or(0.0),
                        lower,
                        upper: upper.unwrap_or(f64::INFINITY),
                        fail: lower > max_ms,
                    },
                );
            checks.push(context.evidence(
                Check {
                    name: format!("maxLatencyMs.{quantile_name}"),
                    scope: CheckScope::Step,
                    unit: EvidenceUnit::Milliseconds,
                    threshold: max_ms,
                    threshold_text: ThresholdText::Milliseconds,
                    alpha: spending.latency_step(input.weight),
                },
                tested,
                |t, out| {
                    push_all(out, &[quantile_name, " latency of ", c, " "]);
                    push_interval(out, EvidenceUnit::Milliseconds, t);
                },
            ));
        }
    }
    if let Some(max) = analysis.max_latency_increase {
        let comparison = TailComparison::new(window, candidate_design, latency_boundary);
        let (b_ms, c_ms) = (
            baseline.latency_ms.p99.unwrap_or(0.0),
            candidate.latency_ms.p99.unwrap_or(0.0),
        );
        let tested = comparison.map(|comparison| Tested {
            estimate: c_ms.max(LATENCY_FLOOR_MS) / b_ms.max(LATENCY_FLOOR_MS) - 1.0,
            lower: comparison.lower(),
            upper: comparison.upper(),
            fail: comparison.z(max) >= comparison.boundary,
        });
        checks.push(context.evidence(
            Check {
                name: "maxLatencyIncrease".to_string(),
                scope: CheckScope::Step,
                unit: EvidenceUnit::Relative,
                threshold: max,
                threshold_text: ThresholdText::WholePercent,
                alpha: spending.latency_step(input.weight),
            },
            tested,
            |t, out| {
                push_all(out, &["p99 latency of ", c, " "]);
                push_milliseconds(out, c_ms);
                out.push_str(" is ");
                push_signed_percent(out, t.estimate);
                push_all(out, &[" over ", b, "'s "]);
                push_milliseconds(out, b_ms);
                out.push(' ');
                push_bracket(out, EvidenceUnit::Relative, t);
            },
        ));
    }
    checks
}

/// The sample-ratio check of a step at `weight` percent that replaced
/// `previous_weight`.
fn sample_ratio(
    units: &UnitSample,
    weight: f64,
    previous_weight: Option<f64>,
    unit_attribute: &str,
) -> Option<SampleRatioEvidence> {
    let share = weight / 100.0;
    if !(share > 0.0 && share < 1.0) {
        return None;
    }
    let share_from = previous_weight
        .map(|w| w / 100.0)
        .filter(|&from| from > 0.0 && from != share);
    let skipped = if units.spans_with_unit == 0 {
        Some(format!(
            "skipped: no span carried the bucketing value ({unit_attribute})"
        ))
    } else if units.split_spans == 0 {
        Some(format!(
            "skipped: no span with {unit_attribute} carried feature_flag.result.reason split"
        ))
    } else {
        None
    };
    let (m, c) = (units.units(), units.candidate_units());
    let e_value = if skipped.is_some() {
        1.0
    } else {
        let e_value = match share_from {
            // Units evaluated at the previous weight may be seen first, so the
            // share may sit anywhere between the two.
            Some(from) => interval_e_value(c, m, from.min(share), from.max(share).min(1.0 - 1e-9)),
            None => beta_binomial_e_value(c, m, share, SAMPLE_RATIO_CONCENTRATION),
        };
        // Kept finite: status is JSON, which has no infinity.
        e_value.min(f64::MAX)
    };
    Some(SampleRatioEvidence {
        units: m,
        candidate_units: c,
        expected_share: share,
        expected_share_from: share_from,
        e_value,
        alpha: SAMPLE_RATIO_ALPHA,
        mismatch: e_value >= 1.0 / SAMPLE_RATIO_ALPHA,
        skipped,
    })
}

/// `all 4 checks pass for revision 3f2c1a9: on error rate …, off error rate …;
/// payments: 250 spans of on, 5000 of off`, from the arms of the rollout's service
/// and each downstream service's span counts (candidate, baseline).
fn pass_message(
    checks: &[CheckEvidence],
    revision: Option<&str>,
    arms: [&VariantEvidence; 2],
    downstream: &[(&str, u64, u64)],
) -> String {
    let mut names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::with_capacity(160);
    match names.len() {
        0 => out.push_str("no thresholds set"),
        1 => out.push_str("1 check passes"),
        n => {
            let _ = write!(out, "all {n} checks pass");
        }
    }
    if let Some(revision) = revision {
        push_all(&mut out, &[" for revision ", revision]);
    }
    for (i, arm) in arms.into_iter().enumerate() {
        push_all(
            &mut out,
            &[
                if i == 0 { ": " } else { ", " },
                &arm.variant,
                " error rate ",
            ],
        );
        push_percent(&mut out, arm.error_rate.unwrap_or(0.0));
        out.push_str(" and p99 ");
        push_milliseconds(&mut out, arm.latency_ms.p99.unwrap_or(0.0));
        out.push_str(" over ");
        push_digits(&mut out, arm.samples, 1);
        out.push_str(" spans");
    }
    let [candidate, baseline] = arms;
    for &(service, candidate_spans, baseline_spans) in downstream {
        push_all(&mut out, &["; ", service, ": "]);
        push_digits(&mut out, candidate_spans, 1);
        push_all(&mut out, &[" spans of ", &candidate.variant, ", "]);
        push_digits(&mut out, baseline_spans, 1);
        push_all(&mut out, &[" of ", &baseline.variant]);
    }
    out
}

/// `[lower, upper]` in the unit, `∞` for an open end.
fn push_bracket(out: &mut String, unit: EvidenceUnit, t: &Tested) {
    out.push('[');
    for (i, end) in [t.lower, t.upper].into_iter().enumerate() {
        if i == 1 {
            out.push_str(", ");
        }
        if !end.is_finite() {
            out.push('∞');
            continue;
        }
        match unit {
            EvidenceUnit::Fraction => push_percent(out, end),
            EvidenceUnit::Milliseconds => push_ms_number(out, end),
            EvidenceUnit::Relative => push_signed_percent(out, end),
        }
    }
    out.push(']');
}

/// `estimate [lower, upper]` in the unit.
fn push_interval(out: &mut String, unit: EvidenceUnit, t: &Tested) {
    match unit {
        EvidenceUnit::Fraction => push_percent(out, t.estimate),
        EvidenceUnit::Milliseconds => push_milliseconds(out, t.estimate),
        EvidenceUnit::Relative => push_signed_percent(out, t.estimate),
    }
    out.push(' ');
    push_bracket(out, unit, t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Arm, Observation, unit_hash};
    use crate::api::ArmEvidence;

    const MS: u64 = 1_000_000;

    /// Spans of one arm: `samples` of them, the first `errors` failing, each lasting
    /// `latency_ms`, from `units` distinct units (none when 0) holding consecutive
    /// spans, so errors cluster in the first units.
    struct Spans {
        samples: u64,
        errors: u64,
        latency_ms: u64,
        units: u64,
    }

    fn spans(samples: u64, errors: u64, latency_ms: u64) -> Spans {
        Spans {
            samples,
            errors,
            latency_ms,
            units: 0,
        }
    }

    fn window(baseline: Spans, candidate: Spans) -> Window {
        let mut window = Window::default();
        for (arm, spans, salt) in [
            (Arm::Baseline, baseline, "b"),
            (Arm::Candidate, candidate, "c"),
        ] {
            for i in 0..spans.samples {
                let unit = (spans.units > 0)
                    .then(|| unit_hash(&format!("{salt}{}", i * spans.units / spans.samples)));
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&(i + 1).to_le_bytes());
                trace_id[8] = salt.as_bytes()[0];
                window.record(
                    arm,
                    &Observation {
                        is_error: i < spans.errors,
                        duration_ns: spans.latency_ms * MS,
                        trace_id,
                        span_id: [5; 8],
                        unit,
                        split: true,
                        weight: 1,
                    },
                );
            }
        }
        window
    }

    fn analysis(min_samples: u64) -> AnalysisSpec {
        AnalysisSpec {
            min_samples,
            ..AnalysisSpec::default()
        }
    }

    const STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];

    fn run(analysis: &AnalysisSpec, window: &Window, weight: f64) -> Verdict {
        run_with(analysis, window, weight, &[])
    }

    fn run_with(
        analysis: &AnalysisSpec,
        window: &Window,
        weight: f64,
        completed: &[StepEvidence],
    ) -> Verdict {
        run_after(analysis, window, (None, weight), completed)
    }

    /// A step from `weights.0` (the previous weight, if any) to `weights.1`.
    fn run_after(
        analysis: &AnalysisSpec,
        window: &Window,
        (previous_weight, weight): (Option<f64>, f64),
        completed: &[StepEvidence],
    ) -> Verdict {
        judge(&JudgeInput {
            analysis,
            steps: &STEPS,
            service: "checkout",
            baseline_variant: "off",
            candidate_variant: "on",
            weight,
            previous_weight,
            unit_attribute: "accountId",
            completed,
            window,
            revision: None,
            downstream: &[],
        })
    }

    /// A step at `weight` of revision 3f2c1a9, with downstream services.
    fn run_downstream(
        analysis: &AnalysisSpec,
        window: &Window,
        downstream: &[(&str, &Window)],
        weight: f64,
    ) -> Verdict {
        judge(&JudgeInput {
            analysis,
            steps: &STEPS,
            service: "checkout",
            baseline_variant: "off",
            candidate_variant: "on",
            weight,
            previous_weight: None,
            unit_attribute: "accountId",
            completed: &[],
            window,
            revision: Some("3f2c1a9"),
            downstream,
        })
    }

    fn check_of<'v>(
        verdict: &'v Verdict,
        service: &str,
        name: &str,
        scope: CheckScope,
    ) -> &'v CheckEvidence {
        verdict
            .checks
            .iter()
            .find(|c| c.service == service && c.name == name && c.scope == scope)
            .unwrap_or_else(|| panic!("no {service} {name} {scope:?} check"))
    }

    fn check<'v>(verdict: &'v Verdict, name: &str, scope: CheckScope) -> &'v CheckEvidence {
        verdict
            .checks
            .iter()
            .find(|c| c.name == name && c.scope == scope)
            .unwrap_or_else(|| panic!("no {name} {scope:?} check in {:#?}", verdict.checks))
    }

    #[test]
    fn no_data_is_never_a_pass_even_with_min_samples_one() {
        let verdict = run(&analysis(1), &Window::default(), 5.0);
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(
            verdict
                .message
                .starts_with("need 1 more spans of variant on and 1 of off"),
            "{}",
            verdict.message
        );
        let one_arm = run(
            &analysis(1),
            &window(spans(1000, 0, 10), spans(0, 0, 10)),
            5.0,
        );
        assert_eq!(one_arm.outcome, VerdictOutcome::Inconclusive);
    }

    #[test]
    fn too_few_spans_is_inconclusive_and_says_how_many_more() {
        let verdict = run(
            &analysis(200),
            &window(spans(250, 0, 10), spans(80, 0, 10)),
            5.0,
        );
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(
            verdict
                .message
                .starts_with("need 120 more spans of variant on and 0 of off"),
            "{}",
            verdict.message
        );
        let enough = run(
            &analysis(200),
            &window(spans(200, 0, 10), spans(200, 0, 10)),
            5.0,
        );
        assert_eq!(enough.outcome, VerdictOutcome::Pass, "{}", enough.message);
        assert!(
            enough.message.starts_with("no thresholds set"),
            "{}",
            enough.message
        );
    }

    #[test]
    fn evidence_of_both_arms_is_filled() {
        let verdict = run(
            &analysis(100),
            &window(spans(300, 3, 100), spans(150, 15, 200)),
            5.0,
        );
        let b = &verdict.baseline;
        assert_eq!((b.variant.as_str(), b.samples, b.errors), ("off", 300, 3));
        assert!((b.latency_ms.p99.unwrap() - 100.0).abs() <= 1.0);
        let c = &verdict.candidate;
        assert_eq!((c.variant.as_str(), c.samples, c.errors), ("on", 150, 15));
        assert_eq!(c.error_rate, Some(0.1));
        assert!((c.latency_ms.p50.unwrap() - 200.0).abs() <= 2.0);
        assert_eq!(verdict.confidence, 0.99);
    }

    #[test]
    fn a_clear_error_regression_fails_with_its_evidence() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(200)
        };
        let verdict = run(
            &spec,
            &window(spans(20_000, 200, 40), spans(1_000, 100, 40)),
            5.0,
        );
        assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{}", verdict.message);
        assert_eq!(verdict.failed_checks, ["maxErrorRateIncrease"]);
        let step = check(&verdict, "maxErrorRateIncrease", CheckScope::Step);
        assert_eq!(step.outcome, CheckOutcome::Fail);
        assert!((step.estimate.unwrap() - 0.09).abs() < 1e-12);
        assert!(step.lower.unwrap() > 0.01 && step.upper.unwrap() > 0.09);
        assert_eq!(step.service, "checkout");
        assert_eq!(step.unit, EvidenceUnit::Fraction);
        assert!(
            step.message
                .starts_with("error rate of on 10% is +9.0 points over off [+")
                && step
                    .message
                    .ends_with("] > maxErrorRateIncrease 1 point (rollout confidence 99%)"),
            "{}",
            step.message
        );
        assert_eq!(verdict.exemplar_trace_ids.len(), 5);
    }

    #[test]
    fn an_increase_within_the_tolerance_passes() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(200)
        };
        // +1 point exactly, and +0.5: within the tolerance, on plenty of spans.
        for candidate_errors in [200, 150] {
            let verdict = run(
                &spec,
                &window(spans(10_000, 100, 40), spans(10_000, candidate_errors, 40)),
                50.0,
            );
            assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
            let step = check(&verdict, "maxErrorRateIncrease", CheckScope::Step);
            assert!(step.lower.unwrap() <= 0.01, "{step:?}");
        }
    }

    #[test]
    fn a_candidate_better_than_the_baseline_passes() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.0),
            max_latency_increase: Some(0.0),
            ..analysis(100)
        };
        let verdict = run(
            &spec,
            &window(spans(1_000, 300, 500), spans(1_000, 100, 100)),
            50.0,
        );
        assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
    }

    #[test]
    fn a_failure_counts_before_min_samples_but_noise_does_not() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.05),
            ..analysis(1_000)
        };
        // 60 of 100 failing is far past 5%, even on 100 spans.
        let bad = run(&spec, &window(spans(5_000, 0, 10), spans(100, 60, 10)), 5.0);
        assert_eq!(bad.outcome, VerdictOutcome::Fail, "{}", bad.message);
        // 2 of 20 (10%) is not proof of more than 5%.
        let noisy = run(&spec, &window(spans(5_000, 0, 10), spans(20, 2, 10)), 5.0);
        assert_eq!(
            noisy.outcome,
            VerdictOutcome::Inconclusive,
            "{}",
            noisy.message
        );
    }

    #[test]
    fn max_error_rate_zero_fails_on_the_first_error() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.0),
            ..analysis(10)
        };
        let clean = run(&spec, &window(spans(100, 0, 10), spans(100, 0, 10)), 5.0);
        assert_eq!(clean.outcome, VerdictOutcome::Pass, "{}", clean.message);
        let one = run(&spec, &window(spans(100, 0, 10), spans(100, 1, 10)), 5.0);
        assert_eq!(one.outcome, VerdictOutcome::Fail, "{}", one.message);
    }

    #[test]
    fn every_check_fails_exactly_when_its_interval_clears_the_threshold() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.03),
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(100.0),
                ..LatencyQuantiles::default()
            }),
            ..analysis(50)
        };
        for (c_samples, c_errors, c_ms) in [
            (300, 3, 40),
            (300, 20, 60),
            (2_000, 100, 130),
            (200, 9, 95),
            (5_000, 400, 200),
        ] {
            let verdict = run(
                &spec,
                &window(spans(10_000, 100, 40), spans(c_samples, c_errors, c_ms)),
                25.0,
            );
            for check in &verdict.checks {
                let clears = check.lower.is_some_and(|lower| lower > check.threshold);
                assert_eq!(
                    check.outcome == CheckOutcome::Fail,
                    clears,
                    "{c_samples}/{c_errors}/{c_ms}: {check:?}"
                );
            }
        }
    }

    #[test]
    fn latency_is_judged_on_quantiles_with_their_uncertainty() {
        let spec = AnalysisSpec {
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(800.0),
                ..LatencyQuantiles::default()
            }),
            max_latency_increase: Some(0.25),
            ..analysis(100)
        };
        let slow = run(
            &spec,
            &window(spans(20_000, 0, 100), spans(2_000, 0, 900)),
            25.0,
        );
        assert_eq!(slow.outcome, VerdictOutcome::Fail, "{}", slow.message);
        assert_eq!(
            slow.failed_checks,
            ["maxLatencyMs.p99", "maxLatencyIncrease"]
        );
        let p99 = check(&slow, "maxLatencyMs.p99", CheckScope::Step);
        assert!(
            p99.message.starts_with("p99 latency of on 89")
                && p99.message.contains(" [88")
                && p99
                    .message
                    .ends_with("> maxLatencyMs.p99 800 ms (rollout confidence 99%)"),
            "{}",
            p99.message
        );
        let increase = check(&slow, "maxLatencyIncrease", CheckScope::Step);
        assert!(
            increase.message.contains("over off's 100 ms"),
            "{}",
            increase.message
        );
        let fine = run(
            &spec,
            &window(spans(20_000, 0, 100), spans(2_000, 0, 110)),
            25.0,
        );
        assert_eq!(fine.outcome, VerdictOutcome::Pass, "{}", fine.message);
        // Two slow spans in ten make a slow p99 estimate, not a proof of one.
        let mut few = window(spans(20_000, 0, 100), spans(8, 0, 100));
        for trace in [7, 8] {
            few.record(
                Arm::Candidate,
                &Observation {
                    is_error: false,
                    duration_ns: 900 * MS,
                    trace_id: [trace; 16],
                    span_id: [5; 8],
                    unit: None,
                    split: true,
                    weight: 1,
                },
            );
        }
        let few = run(
            &AnalysisSpec {
                min_samples: 1,
                ..spec.clone()
            },
            &few,
            1.0,
        );
        assert!(few.candidate.latency_ms.p99.unwrap() > 800.0);
        assert_eq!(few.outcome, VerdictOutcome::Pass, "{}", few.message);
    }

    #[test]
    fn spans_of_few_units_prove_less_than_as_many_independent_spans() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(100)
        };
        let independent = run(
            &spec,
            &window(spans(20_000, 200, 40), spans(600, 60, 40)),
            5.0,
        );
        assert_eq!(
            independent.outcome,
            VerdictOutcome::Fail,
            "{}",
            independent.message
        );
        // The same spans from 3 accounts: one bad account could explain them.
        let clustered = run(
            &spec,
            &window(
                Spans {
                    units: 2_000,
                    ..spans(20_000, 200, 40)
                },
                Spans {
                    units: 3,
                    ..spans(600, 60, 40)
                },
            ),
            5.0,
        );
        assert_ne!(
            clustered.outcome,
            VerdictOutcome::Fail,
            "{}",
            clustered.message
        );
        assert!(clustered.candidate.unit_groups > 0);
    }

    #[test]
    fn earlier_steps_add_their_evidence() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(50)
        };
        let current = window(spans(3_000, 30, 40), spans(150, 6, 40));
        let alone = run(&spec, &current, 5.0);
        assert_eq!(alone.outcome, VerdictOutcome::Pass, "{}", alone.message);
        let earlier: Vec<StepEvidence> = (0..3)
            .map(|step| StepEvidence {
                step,
                weight: 1.0,
                baseline: ArmEvidence {
                    samples: 20_000,
                    errors: 200,
                    ..ArmEvidence::default()
                },
                candidate: ArmEvidence {
                    samples: 2_000,
                    errors: 80,
                    ..ArmEvidence::default()
                },
            })
            .collect();
        let together = run_with(&spec, &current, 5.0, &earlier);
        assert_eq!(
            together.outcome,
            VerdictOutcome::Fail,
            "{}",
            together.message
        );
        assert_eq!(
            check(&together, "maxErrorRateIncrease", CheckScope::Rollout).outcome,
            CheckOutcome::Fail
        );
        assert!(
            check(&together, "maxErrorRateIncrease", CheckScope::Rollout)
                .message
                .contains("since the first step")
        );
    }

    #[test]
    fn budgets_of_the_checks_add_up_to_one_minus_confidence() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(800.0),
                ..LatencyQuantiles::default()
            }),
            ..analysis(100)
        };
        let mut spent = 0.0;
        for weight in [1.0, 5.0, 25.0, 50.0] {
            let verdict = run(
                &spec,
                &window(spans(1_000, 10, 40), spans(1_000, 10, 40)),
                weight,
            );
            spent += verdict
                .checks
                .iter()
                .map(|c| match c.scope {
                    CheckScope::Step => c.alpha,
                    // One test runs through every step: its budget counts once.
                    CheckScope::Rollout => c.alpha / 4.0,
                })
                .sum::<f64>();
        }
        assert!((spent - 0.01).abs() < 1e-12, "{spent}");
    }

    #[test]
    fn a_share_of_units_that_does_not_fit_the_weight_holds() {
        let spec = analysis(100);
        let fair = run(
            &spec,
            &window(
                Spans {
                    units: 950,
                    ..spans(5_000, 0, 40)
                },
                Spans {
                    units: 50,
                    ..spans(300, 0, 40)
                },
            ),
            5.0,
        );
        assert_eq!(fair.outcome, VerdictOutcome::Pass, "{}", fair.message);
        assert!(!fair.sample_ratio.as_ref().unwrap().mismatch);

        let skewed = run(
            &spec,
            &window(
                Spans {
                    units: 500,
                    ..spans(5_000, 0, 40)
                },
                Spans {
                    units: 500,
                    ..spans(3_000, 0, 40)
                },
            ),
            5.0,
        );
        assert_eq!(skewed.outcome, VerdictOutcome::Inconclusive);
        assert!(
            skewed
                .message
                .starts_with("SampleRatioMismatch: 500 of 1000 units"),
            "{}",
            skewed.message
        );
        let srm = skewed.sample_ratio.unwrap();
        assert!(srm.mismatch && srm.e_value >= 1.0 / SAMPLE_RATIO_ALPHA);

        let without_units = run(&spec, &window(spans(5_000, 0, 40), spans(300, 0, 40)), 5.0);
        let srm = without_units.sample_ratio.unwrap();
        assert!(!srm.mismatch);
        assert_eq!(
            srm.skipped.as_deref(),
            Some("skipped: no span carried the bucketing value (accountId)")
        );
    }

    #[test]
    fn a_share_between_the_previous_weight_and_this_one_fits() {
        // At 25% after 5%, units whose first span was evaluated at 5% make the
        // share lower than the weight without anything being wrong.
        let spec = analysis(100);
        let step = |candidate_units: u64, previous_weight: Option<f64>| {
            let units = window(
                Spans {
                    units: 1_000 - candidate_units,
                    ..spans(6_000, 0, 40)
                },
                Spans {
                    units: candidate_units,
                    ..spans(1_000, 0, 40)
                },
            );
            run_after(&spec, &units, (previous_weight, 25.0), &[])
        };
        let stale = step(120, Some(5.0));
        assert_eq!(stale.outcome, VerdictOutcome::Pass, "{}", stale.message);
        let srm = stale.sample_ratio.unwrap();
        assert_eq!(srm.expected_share_from, Some(0.05));
        assert!(!srm.mismatch);
        // Without the previous weight the same share is a mismatch.
        assert!(step(120, None).sample_ratio.unwrap().mismatch);
        // Below both weights the data still cannot be trusted.
        let missing = step(20, Some(5.0));
        assert_eq!(missing.outcome, VerdictOutcome::Inconclusive);
        assert!(
            missing
                .message
                .contains("20 of 1000 units got variant on (2%), the weights say 5% to 25%"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn a_downstream_regression_fails_naming_the_service() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(200)
        };
        let checkout = window(spans(20_000, 0, 40), spans(1_000, 0, 40));
        let payments = window(spans(20_000, 200, 40), spans(1_000, 82, 40));
        let verdict = run_downstream(&spec, &checkout, &[("payments", &payments)], 5.0);
        assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{}", verdict.message);
        assert_eq!(verdict.failed_checks, ["maxErrorRateIncrease"]);
        assert!(
            verdict
                .message
                .starts_with("payments: error rate of on 8.2% is +7.2 points over off [+"),
            "{}",
            verdict.message
        );
        let failed = check_of(
            &verdict,
            "payments",
            "maxErrorRateIncrease",
            CheckScope::Step,
        );
        assert_eq!(failed.outcome, CheckOutcome::Fail);
        let own = check_of(
            &verdict,
            "checkout",
            "maxErrorRateIncrease",
            CheckScope::Step,
        );
        assert_eq!(own.outcome, CheckOutcome::Pass);
        // The verdict's arms stay the rollout's own service's.
        assert_eq!(verdict.candidate.errors, 0);
        // Only payments failed: its failing spans are the exemplars.
        assert_eq!(verdict.exemplar_trace_ids.len(), 5);
        assert_eq!(
            verdict
                .exemplar_spans
                .iter()
                .filter(|e| e.why == ExemplarReason::Error)
                .count(),
            5
        );
    }

    #[test]
    fn healthy_downstream_services_pass_and_are_counted() {
        let spec = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            ..analysis(200)
        };
        let checkout = window(spans(5_000, 50, 40), spans(400, 4, 40));
        let payments = window(spans(4_000, 40, 80), spans(300, 3, 80));
        let verdict = run_downstream(&spec, &checkout, &[("payments", &payments)], 5.0);
        assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
        assert!(
            verdict
                .message
                .starts_with("all 2 checks pass for revision 3f2c1a9: on error rate 1%")
                && verdict
                    .message
                    .ends_with("; payments: 300 spans of on, 4000 of off"),
            "{}",
            verdict.message
        );
        assert_eq!(verdict.revision.as_deref(), Some("3f2c1a9"));
        let downstream: Vec<&CheckEvidence> = verdict
            .checks
            .iter()
            .filter(|c| c.service == "payments")
            .collect();
        assert_eq!(downstream.len(), 2);
        assert!(downstream.iter().all(|c| c.scope == CheckScope::Step
            && c.outcome == CheckOutcome::Pass
            && c.message.starts_with("payments: ")));
    }

    #[test]
    fn a_downstream_service_without_spans_neither_fails_nor_holds() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.05),
            ..analysis(200)
        };
        let checkout = window(spans(5_000, 50, 40), spans(400, 4, 40));
        let verdict = run_downstream(&spec, &checkout, &[("payments", &Window::default())], 5.0);
        assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
        let waiting = check_of(&verdict, "payments", "maxErrorRate", CheckScope::Step);
        assert_eq!(waiting.outcome, CheckOutcome::Inconclusive);
        assert_eq!(
            waiting.message,
            "payments: maxErrorRate: no spans of variant on yet"
        );
        assert!(
            verdict
                .message
                .ends_with("; payments: 0 spans of on, 0 of off"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn the_budget_is_shared_evenly_between_the_services_judged() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(800.0),
                ..LatencyQuantiles::default()
            }),
            ..analysis(100)
        };
        let spans = window(spans(1_000, 10, 40), spans(1_000, 10, 40));
        let alone = run(&spec, &spans, 5.0);
        let mut spent = 0.0;
        for weight in [1.0, 5.0, 25.0, 50.0] {
            let verdict = run_downstream(
                &spec,
                &spans,
                &[("payments", &spans), ("inventory", &spans)],
                weight,
            );
            for check in &verdict.checks {
                spent += match check.scope {
                    CheckScope::Step => check.alpha,
                    CheckScope::Rollout => {
                        assert_eq!(check.service, "checkout", "{check:?}");
                        check.alpha / 4.0
                    }
                };
            }
            if weight == 5.0 {
                let own = |v: &Verdict| check(v, "maxLatencyIncrease", CheckScope::Step).alpha;
                assert!((own(&verdict) - own(&alone) / 3.0).abs() < 1e-15);
                // Without a rollout scope a downstream error check spends its whole
                // share on the step.
                let step =
                    |service| check_of(&verdict, service, "maxErrorRate", CheckScope::Step).alpha;
                assert!((step("payments") - step("checkout") / 0.75).abs() < 1e-15);
            }
        }
        assert!((spent - 0.01).abs() < 1e-12, "{spent}");
    }

    /// One step's spans, `n` requests per arm with the given error rates and
    /// latencies that vary (errors slower), the same every run; as received, or as a
    /// tail sampler passes them on: every erroring trace, and a tenth of the others,
    /// their threshold recorded or not.
    fn stream(n: u64, error_rates: [f64; 2], sampler: Option<bool>) -> Window {
        use crate::analysis::sampling::{keeps, threshold_of_probability, weight_of_threshold};
        let tenth = threshold_of_probability(0.1);
        let mut window = Window::default();
        for (arm, rate, salt) in [
            (Arm::Baseline, error_rates[0], 1u64),
            (Arm::Candidate, error_rates[1], 2u64),
        ] {
            for i in 0..n {
                let draw = |k: u64| crate::analysis::window::mix(salt << 56 ^ i << 4 ^ k);
                let uniform = |k: u64| (draw(k) >> 11) as f64 / (1u64 << 53) as f64;
                let is_error = uniform(1) < rate;
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&draw(2).to_le_bytes());
                trace_id[8..].copy_from_slice(&draw(3).to_le_bytes());
                let weight = match sampler {
                    None => 1,
                    Some(_) if is_error => 1,
                    Some(_) if !keeps(tenth, &trace_id) => continue,
                    Some(true) => weight_of_threshold(tenth, &trace_id),
                    Some(false) => 1,
                };
                let latency_ms = 20.0 + 60.0 * uniform(4) + if is_error { 200.0 } else { 0.0 };
                window.record(
                    arm,
                    &Observation {
                        is_error,
                        duration_ns: (latency_ms * 1e6) as u64,
                        trace_id,
                        span_id: [5; 8],
                        unit: Some(unit_hash(&format!("account-{}", draw(5) % 5_000))),
                        // Units of both arms are drawn alike: no split to check.
                        split: false,
                        weight,
                    },
                );
            }
        }
        window
    }

    #[test]
    fn a_tail_sampled_stream_is_judged_as_the_stream_it_came_from() {
        let analysis = AnalysisSpec {
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.01),
            max_latency_increase: Some(0.25),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(800.0),
                ..LatencyQuantiles::default()
            }),
            ..analysis(200)
        };
        for (rates, expected) in [
            ([0.01, 0.01], VerdictOutcome::Pass),
            ([0.01, 0.04], VerdictOutcome::Fail),
        ] {
            let whole = run(&analysis, &stream(40_000, rates, None), 50.0);
            let window = stream(40_000, rates, Some(true));
            let sampled = run(&analysis, &window, 50.0);
            assert_eq!(whole.outcome, expected, "{}", whole.message);
            assert_eq!(sampled.outcome, expected, "{}", sampled.message);
            assert_eq!(whole.failed_checks, sampled.failed_checks);
            // minSamples counts the spans received; rates are the traffic's.
            assert_eq!(sampled.candidate.samples, window.candidate.samples);
            assert!(
                sampled.candidate.samples < 10_000,
                "{}",
                sampled.candidate.samples
            );
            let adjusted = sampled
                .candidate
                .sampling
                .expect("sampled")
                .adjusted_samples;
            assert!((36_000..44_000).contains(&adjusted), "{adjusted}");
            let (w, s) = (
                whole.candidate.error_rate.unwrap(),
                sampled.candidate.error_rate.unwrap(),
            );
            assert!((w - s).abs() < 0.005, "{w} {s}");
            let (w, s) = (
                whole.candidate.latency_ms.p50.unwrap(),
                sampled.candidate.latency_ms.p50.unwrap(),
            );
            assert!((w - s).abs() < 5.0, "{w} {s}");
            assert!(whole.candidate.sampling.is_none());
        }
    }

    #[test]
    fn a_tail_sampled_stream_without_thresholds_looks_ten_times_worse() {
        let analysis = AnalysisSpec {
            max_error_rate: Some(0.05),
            ..analysis(200)
        };
        let verdict = run(&analysis, &stream(40_000, [0.01, 0.01], Some(false)), 50.0);
        assert_eq!(verdict.outcome, VerdictOutcome::Fail, "{}", verdict.message);
        assert!(verdict.candidate.error_rate.unwrap() > 0.08);
        assert!(verdict.candidate.sampling.is_none());
    }

    #[test]
    fn sampling_widens_the_interval_by_what_it_dropped() {
        let analysis = AnalysisSpec {
            max_error_rate_increase: Some(0.01),
            ..analysis(200)
        };
        // Uniform sampling at 10% keeps a tenth of the information: its weighted
        // interval must be about sqrt(10) times as wide as the whole stream's.
        let mut uniform = Window::default();
        let whole = stream(40_000, [0.02, 0.02], None);
        let tenth = crate::analysis::sampling::threshold_of_probability(0.1);
        for (arm, spans) in [(Arm::Baseline, 40_000u64), (Arm::Candidate, 40_000)] {
            for i in 0..spans {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&crate::analysis::window::mix(i).to_le_bytes());
                trace_id[8..].copy_from_slice(&crate::analysis::window::mix(!i).to_le_bytes());
                if !crate::analysis::sampling::keeps(tenth, &trace_id) {
                    continue;
                }
                uniform.record(
                    arm,
                    &Observation {
                        weight: 10,
                        ..Observation::span(i % 50 == 0, 30 * MS, trace_id)
                    },
                );
            }
        }
        let width = |verdict: &Verdict| {
            let check = check(verdict, "maxErrorRateIncrease", CheckScope::Step);
            check.upper.unwrap() - check.lower.unwrap()
        };
        let ratio = width(&run(&analysis, &uniform, 50.0)) / width(&run(&analysis, &whole, 50.0));
        assert!((2.6..3.8).contains(&ratio), "{ratio}");
    }
}
