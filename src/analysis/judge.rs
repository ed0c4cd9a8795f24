//! The threshold judge: compares the candidate arm of a window with the thresholds
//! of the rollout's analysis and with the baseline arm.

use std::cmp::Ordering;

use super::{ArmWindow, Window};
use crate::api::{AnalysisSpec, LatencyQuantiles, VariantEvidence, Verdict, VerdictOutcome};

/// Slack on every comparison, so a value equal to its limit up to floating-point
/// rounding (0.07 − 0.05 is 0.020000000000000004) passes.
const TOLERANCE: f64 = 1e-9;

/// Durations at or below 1 µs share the sketch's lowest bucket, so a p99 below this
/// is not a measurement to divide by.
const LATENCY_FLOOR_MS: f64 = 0.001;

/// Judges the candidate arm of `window` against `analysis`.
///
/// Inconclusive until both arms hold `minSamples` spans (at least one: no data is
/// never a pass); then Fail with every threshold that was exceeded, or Pass.
pub fn judge(
    analysis: &AnalysisSpec,
    window: &Window,
    baseline_variant: &str,
    candidate_variant: &str,
) -> Verdict {
    let baseline = evidence(baseline_variant, &window.baseline);
    let candidate = evidence(candidate_variant, &window.candidate);
    let exemplar_trace_ids = window
        .candidate
        .error_exemplars
        .iter()
        .map(hex::encode)
        .collect();

    let min_samples = analysis.min_samples.max(1);
    let missing_candidate = min_samples.saturating_sub(candidate.samples);
    let missing_baseline = min_samples.saturating_sub(baseline.samples);
    if missing_candidate > 0 || missing_baseline > 0 {
        return Verdict {
            outcome: VerdictOutcome::Inconclusive,
            message: format!(
                "need {missing_candidate} more spans of variant {candidate_variant} and \
                 {missing_baseline} of {baseline_variant} (minSamples {min_samples} per variant)"
            ),
            failed_checks: Vec::new(),
            baseline,
            candidate,
            exemplar_trace_ids,
        };
    }

    let checks = run_checks(analysis, &window.candidate, &baseline, &candidate);
    let (outcome, message, failed_checks) = if checks.failures.is_empty() {
        (
            VerdictOutcome::Pass,
            pass_message(&baseline, &candidate, checks.passed),
            Vec::new(),
        )
    } else {
        let (names, messages): (Vec<_>, Vec<_>) = checks.failures.into_iter().unzip();
        (VerdictOutcome::Fail, messages.join("; "), names)
    };
    Verdict {
        outcome,
        message,
        failed_checks,
        baseline,
        candidate,
        exemplar_trace_ids,
    }
}

fn evidence(variant: &str, arm: &ArmWindow) -> VariantEvidence {
    let q = |q| arm.latency.quantile_ms(q);
    VariantEvidence {
        variant: variant.to_string(),
        samples: arm.samples,
        errors: arm.errors,
        error_rate: arm.error_rate(),
        latency_ms: LatencyQuantiles {
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
        },
    }
}

/// Whether `value` is over `limit`. A NaN on either side fails: a threshold that
/// cannot be compared must not let a rollout through.
fn exceeds(value: f64, limit: f64) -> bool {
    matches!(
        value.partial_cmp(&(limit + TOLERANCE)),
        Some(Ordering::Greater) | None
    )
}

struct Checks {
    passed: usize,
    /// (check name, sentence with the numbers), in the order the spec lists them.
    failures: Vec<(String, String)>,
}

impl Checks {
    fn check(&mut self, failed: bool, name: impl FnOnce() -> String, why: impl FnOnce() -> String) {
        if failed {
            self.failures.push((name(), why()));
        } else {
            self.passed += 1;
        }
    }
}

fn run_checks(
    analysis: &AnalysisSpec,
    candidate_arm: &ArmWindow,
    baseline: &VariantEvidence,
    candidate: &VariantEvidence,
) -> Checks {
    let mut checks = Checks {
        passed: 0,
        failures: Vec::new(),
    };
    let (b, c) = (&baseline.variant, &candidate.variant);
    // Both arms hold at least one span here, so both rates and sketches are set.
    let rate_b = baseline.error_rate.unwrap_or(0.0);
    let rate_c = candidate.error_rate.unwrap_or(0.0);

    if let Some(max) = analysis.max_error_rate {
        checks.check(
            exceeds(rate_c, max),
            || "maxErrorRate".to_string(),
            || format!("error rate of {c} {rate_c:.3} > maxErrorRate {max:.3}"),
        );
    }
    if let Some(max) = analysis.max_error_rate_increase {
        let increase = rate_c - rate_b;
        checks.check(
            exceeds(increase, max),
            || "maxErrorRateIncrease".to_string(),
            || {
                format!(
                    "error rate of {c} {rate_c:.3} is {increase:+.3} over {b}'s {rate_b:.3} \
                     > maxErrorRateIncrease {max:.3}"
                )
            },
        );
    }
    if let Some(limits) = &analysis.max_latency_ms {
        for (name, q, max_ms) in limits.iter() {
            if let Some(value_ms) = candidate_arm.latency.quantile_ms(q) {
                checks.check(
                    exceeds(value_ms, max_ms),
                    || format!("maxLatencyMs.{name}"),
                    || {
                        format!(
                            "{name} latency of {c} {value_ms:.1} ms > maxLatencyMs.{name} \
                             {max_ms:.1} ms"
                        )
                    },
                );
            }
        }
    }
    if let Some(max) = analysis.max_latency_increase
        && let (Some(b_ms), Some(c_ms)) = (baseline.latency_ms.p99, candidate.latency_ms.p99)
    {
        let increase = c_ms.max(LATENCY_FLOOR_MS) / b_ms.max(LATENCY_FLOOR_MS) - 1.0;
        checks.check(
            exceeds(increase, max),
            || "maxLatencyIncrease".to_string(),
            || {
                format!(
                    "p99 latency of {c} {c_ms:.1} ms is {:+.1}% over {b}'s {b_ms:.1} ms \
                         > maxLatencyIncrease {max:.3} ({:+.1}%)",
                    increase * 100.0,
                    max * 100.0
                )
            },
        );
    }
    checks
}

fn pass_message(baseline: &VariantEvidence, candidate: &VariantEvidence, passed: usize) -> String {
    let rate = |e: &VariantEvidence| e.error_rate.unwrap_or(0.0);
    let p99 = |e: &VariantEvidence| e.latency_ms.p99.unwrap_or(0.0);
    let checks = match passed {
        0 => "no thresholds set".to_string(),
        1 => "1 check passed".to_string(),
        n => format!("all {n} checks passed"),
    };
    format!(
        "{checks}: {c} error rate {:.3} and p99 {:.1} ms over {} spans, {b} error rate {:.3} \
         and p99 {:.1} ms over {} spans",
        rate(candidate),
        p99(candidate),
        candidate.samples,
        rate(baseline),
        p99(baseline),
        baseline.samples,
        c = candidate.variant,
        b = baseline.variant,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `samples` spans of which the first `errors` fail, every one lasting `latency_ms`.
    fn arm(samples: u64, errors: u64, latency_ms: u64) -> ArmWindow {
        let mut arm = ArmWindow::default();
        for i in 0..samples {
            let trace_id = [i as u8; 16];
            arm.record(i < errors, latency_ms * MS, trace_id);
        }
        arm
    }

    fn window(baseline: ArmWindow, candidate: ArmWindow) -> Window {
        Window {
            baseline,
            candidate,
        }
    }

    fn spec(min_samples: u64) -> AnalysisSpec {
        AnalysisSpec {
            min_samples,
            ..AnalysisSpec::default()
        }
    }

    fn run(analysis: &AnalysisSpec, window: &Window) -> Verdict {
        judge(analysis, window, "off", "on")
    }

    #[test]
    fn evidence_of_both_arms_is_filled() {
        let mut baseline = arm(300, 3, 100);
        baseline.record(false, 900 * MS, [0xff; 16]);
        let verdict = run(&spec(100), &window(baseline, arm(150, 15, 200)));

        let b = &verdict.baseline;
        assert_eq!((b.variant.as_str(), b.samples, b.errors), ("off", 301, 3));
        assert!((b.error_rate.unwrap() - 3.0 / 301.0).abs() < 1e-12);
        let p50 = b.latency_ms.p50.unwrap();
        assert!((p50 - 100.0).abs() <= 1.0, "p50 {p50}");
        let p99 = b.latency_ms.p99.unwrap();
        assert!((p99 - 100.0).abs() <= 1.0, "p99 {p99}");
        assert!(b.latency_ms.p90.is_some() && b.latency_ms.p95.is_some());

        let c = &verdict.candidate;
        assert_eq!((c.variant.as_str(), c.samples, c.errors), ("on", 150, 15));
        assert_eq!(c.error_rate, Some(0.1));
        let p95 = c.latency_ms.p95.unwrap();
        assert!((p95 - 200.0).abs() <= 2.0, "p95 {p95}");
    }

    #[test]
    fn evidence_is_filled_while_inconclusive() {
        let verdict = run(&spec(1000), &window(arm(10, 1, 50), ArmWindow::default()));
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert_eq!(verdict.baseline.samples, 10);
        assert_eq!(verdict.baseline.error_rate, Some(0.1));
        assert!(verdict.baseline.latency_ms.p99.is_some());
        assert_eq!(verdict.candidate.samples, 0);
        assert_eq!(verdict.candidate.error_rate, None);
        assert_eq!(verdict.candidate.latency_ms, LatencyQuantiles::default());
    }

    #[test]
    fn too_few_candidate_spans_is_inconclusive_and_says_how_many_more() {
        let verdict = run(&spec(200), &window(arm(250, 0, 10), arm(80, 0, 10)));
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(
            verdict
                .message
                .starts_with("need 120 more spans of variant on and 0 of off"),
            "{}",
            verdict.message
        );
        assert!(verdict.failed_checks.is_empty());
    }

    #[test]
    fn too_few_baseline_spans_is_inconclusive_too() {
        let verdict = run(&spec(200), &window(arm(199, 0, 10), arm(500, 0, 10)));
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(
            verdict
                .message
                .starts_with("need 0 more spans of variant on and 1 of off"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn exactly_min_samples_is_enough() {
        let verdict = run(&spec(200), &window(arm(200, 0, 10), arm(200, 0, 10)));
        assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
    }

    #[test]
    fn no_data_is_never_a_pass_even_with_min_samples_zero() {
        let verdict = run(&spec(0), &Window::default());
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(
            verdict
                .message
                .starts_with("need 1 more spans of variant on and 1 of off"),
            "{}",
            verdict.message
        );

        let only_baseline = run(&spec(0), &window(arm(1000, 0, 10), ArmWindow::default()));
        assert_eq!(only_baseline.outcome, VerdictOutcome::Inconclusive);
        let only_candidate = run(&spec(0), &window(ArmWindow::default(), arm(1000, 0, 10)));
        assert_eq!(only_candidate.outcome, VerdictOutcome::Inconclusive);
    }

    #[test]
    fn enough_spans_and_no_thresholds_is_a_pass() {
        let verdict = run(&spec(10), &window(arm(10, 5, 10), arm(10, 9, 900)));
        assert_eq!(verdict.outcome, VerdictOutcome::Pass);
        assert!(verdict.failed_checks.is_empty());
        assert!(
            verdict.message.starts_with("no thresholds set"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn too_few_spans_wins_over_thresholds_already_exceeded() {
        let analysis = AnalysisSpec {
            max_error_rate: Some(0.01),
            ..spec(100)
        };
        let verdict = run(&analysis, &window(arm(100, 0, 10), arm(50, 50, 10)));
        assert_eq!(verdict.outcome, VerdictOutcome::Inconclusive);
        assert!(verdict.failed_checks.is_empty());
    }

    #[test]
    fn max_error_rate_at_the_limit_passes_and_above_fails() {
        let analysis = AnalysisSpec {
            max_error_rate: Some(0.05),
            ..spec(100)
        };
        let at = run(&analysis, &window(arm(200, 0, 10), arm(200, 10, 10)));
        assert_eq!(at.outcome, VerdictOutcome::Pass, "{}", at.message);
        assert!(at.message.starts_with("1 check passed"), "{}", at.message);

        let over = run(&analysis, &window(arm(200, 0, 10), arm(200, 11, 10)));
        assert_eq!(over.outcome, VerdictOutcome::Fail);
        assert_eq!(over.failed_checks, ["maxErrorRate"]);
        assert_eq!(over.message, "error rate of on 0.055 > maxErrorRate 0.050");
    }

    #[test]
    fn max_error_rate_increase_at_the_limit_passes_and_above_fails() {
        let analysis = AnalysisSpec {
            max_error_rate_increase: Some(0.02),
            ..spec(100)
        };
        // 0.07 - 0.05 is not exactly 0.02 in floating point; it must still pass.
        let at = run(&analysis, &window(arm(100, 5, 10), arm(100, 7, 10)));
        assert_eq!(at.outcome, VerdictOutcome::Pass, "{}", at.message);

        let over = run(&analysis, &window(arm(100, 5, 10), arm(100, 8, 10)));
        assert_eq!(over.outcome, VerdictOutcome::Fail);
        assert_eq!(over.failed_checks, ["maxErrorRateIncrease"]);
        assert_eq!(
            over.message,
            "error rate of on 0.080 is +0.030 over off's 0.050 > maxErrorRateIncrease 0.020"
        );
    }

    #[test]
    fn a_candidate_better_than_the_baseline_passes_the_increase_check() {
        let analysis = AnalysisSpec {
            max_error_rate_increase: Some(0.0),
            max_latency_increase: Some(0.0),
            ..spec(100)
        };
        let verdict = run(&analysis, &window(arm(100, 30, 500), arm(100, 10, 100)));
        assert_eq!(verdict.outcome, VerdictOutcome::Pass, "{}", verdict.message);
    }

    #[test]
    fn latency_at_the_limit_passes_and_above_fails() {
        let analysis = AnalysisSpec {
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(400.0),
                ..LatencyQuantiles::default()
            }),
            ..spec(100)
        };
        let at = run(&analysis, &window(arm(100, 0, 10), arm(100, 0, 400)));
        assert_eq!(at.outcome, VerdictOutcome::Pass, "{}", at.message);

        let over = run(&analysis, &window(arm(100, 0, 10), arm(100, 0, 410)));
        assert_eq!(over.outcome, VerdictOutcome::Fail);
        assert_eq!(over.failed_checks, ["maxLatencyMs.p99"]);
        assert!(
            over.message.starts_with("p99 latency of on 4")
                && over.message.ends_with(" ms > maxLatencyMs.p99 400.0 ms"),
            "{}",
            over.message
        );
    }

    #[test]
    fn every_latency_quantile_given_is_checked() {
        let analysis = AnalysisSpec {
            max_latency_ms: Some(LatencyQuantiles {
                p50: Some(50.0),
                p90: Some(1000.0),
                p95: Some(100.0),
                p99: Some(1000.0),
            }),
            ..spec(100)
        };
        // 90 fast spans and 10 slow ones: p50 and p95 are over, p90 and p99 are not.
        let mut candidate = arm(90, 0, 80);
        candidate.merge(&arm(10, 0, 500));
        let verdict = run(&analysis, &window(arm(100, 0, 10), candidate));
        assert_eq!(verdict.outcome, VerdictOutcome::Fail);
        assert_eq!(
            verdict.failed_checks,
            ["maxLatencyMs.p50", "maxLatencyMs.p95"]
        );
    }

    #[test]
    fn latency_increase_is_relative_to_the_baseline_p99() {
        let analysis = AnalysisSpec {
            max_latency_increase: Some(0.5),
            ..spec(100)
        };
        let same = run(
            &AnalysisSpec {
                max_latency_increase: Some(0.0),
                ..spec(100)
            },
            &window(arm(100, 0, 200), arm(100, 0, 200)),
        );
        assert_eq!(same.outcome, VerdictOutcome::Pass, "{}", same.message);

        let within = run(&analysis, &window(arm(100, 0, 200), arm(100, 0, 280)));
        assert_eq!(within.outcome, VerdictOutcome::Pass, "{}", within.message);

        let over = run(&analysis, &window(arm(100, 0, 200), arm(100, 0, 320)));
        assert_eq!(over.outcome, VerdictOutcome::Fail);
        assert_eq!(over.failed_checks, ["maxLatencyIncrease"]);
        assert!(over.message.contains("% over off's"), "{}", over.message);
        assert!(
            over.message
                .ends_with("> maxLatencyIncrease 0.500 (+50.0%)"),
            "{}",
            over.message
        );
    }

    #[test]
    fn a_zero_baseline_p99_does_not_divide_by_zero() {
        let analysis = AnalysisSpec {
            max_latency_increase: Some(0.5),
            ..spec(10)
        };
        let both_zero = run(&analysis, &window(arm(10, 0, 0), arm(10, 0, 0)));
        assert_eq!(
            both_zero.outcome,
            VerdictOutcome::Pass,
            "{}",
            both_zero.message
        );

        let slower = run(&analysis, &window(arm(10, 0, 0), arm(10, 0, 5)));
        assert_eq!(slower.outcome, VerdictOutcome::Fail);
        assert_eq!(slower.failed_checks, ["maxLatencyIncrease"]);
        let message = slower.message.to_lowercase();
        assert!(
            !message.contains("inf") && !message.contains("nan"),
            "{message}"
        );
    }

    #[test]
    fn every_failed_check_is_reported() {
        let analysis = AnalysisSpec {
            min_samples: 100,
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.02),
            max_latency_ms: Some(LatencyQuantiles {
                p95: Some(300.0),
                p99: Some(400.0),
                ..LatencyQuantiles::default()
            }),
            max_latency_increase: Some(0.25),
        };
        let verdict = run(&analysis, &window(arm(1000, 10, 100), arm(200, 24, 600)));
        assert_eq!(verdict.outcome, VerdictOutcome::Fail);
        assert_eq!(
            verdict.failed_checks,
            [
                "maxErrorRate",
                "maxErrorRateIncrease",
                "maxLatencyMs.p95",
                "maxLatencyMs.p99",
                "maxLatencyIncrease"
            ]
        );
        let parts: Vec<&str> = verdict.message.split("; ").collect();
        assert_eq!(parts.len(), 5, "{}", verdict.message);
        assert_eq!(parts[0], "error rate of on 0.120 > maxErrorRate 0.050");
        assert_eq!(
            parts[1],
            "error rate of on 0.120 is +0.110 over off's 0.010 > maxErrorRateIncrease 0.020"
        );
    }

    #[test]
    fn only_the_failing_checks_are_named() {
        let analysis = AnalysisSpec {
            min_samples: 100,
            max_error_rate: Some(0.05),
            max_error_rate_increase: Some(0.02),
            max_latency_ms: Some(LatencyQuantiles {
                p99: Some(400.0),
                ..LatencyQuantiles::default()
            }),
            max_latency_increase: Some(0.5),
        };
        let verdict = run(&analysis, &window(arm(100, 0, 100), arm(100, 0, 300)));
        assert_eq!(verdict.outcome, VerdictOutcome::Fail);
        assert_eq!(verdict.failed_checks, ["maxLatencyIncrease"]);

        let healthy = run(&analysis, &window(arm(100, 1, 100), arm(100, 2, 110)));
        assert_eq!(healthy.outcome, VerdictOutcome::Pass, "{}", healthy.message);
        assert!(
            healthy
                .message
                .starts_with("all 4 checks passed: on error rate 0.020"),
            "{}",
            healthy.message
        );
    }

    #[test]
    fn a_threshold_that_is_not_a_number_fails_closed() {
        let analysis = AnalysisSpec {
            max_error_rate: Some(f64::NAN),
            ..spec(10)
        };
        let verdict = run(&analysis, &window(arm(10, 0, 10), arm(10, 0, 10)));
        assert_eq!(verdict.outcome, VerdictOutcome::Fail);
        assert_eq!(verdict.failed_checks, ["maxErrorRate"]);
    }

    #[test]
    fn exemplars_are_the_candidate_error_trace_ids_in_hex() {
        let mut candidate = arm(50, 0, 10);
        candidate.record(true, 10 * MS, [0xab; 16]);
        let mut id = [0u8; 16];
        id[15] = 1;
        candidate.record(true, 10 * MS, id);
        let mut baseline = arm(50, 0, 10);
        baseline.record(true, 10 * MS, [0xcd; 16]);

        let verdict = run(&spec(10), &window(baseline, candidate));
        assert_eq!(
            verdict.exemplar_trace_ids,
            [
                "abababababababababababababababab",
                "00000000000000000000000000000001"
            ]
        );

        let inconclusive = run(&spec(1000), &window(ArmWindow::default(), arm(3, 1, 10)));
        assert_eq!(
            inconclusive.exemplar_trace_ids,
            ["00000000000000000000000000000000"]
        );
    }
}
