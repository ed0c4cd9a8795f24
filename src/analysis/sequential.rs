//! Anytime-valid boundaries: how far an estimate must stand from its threshold
//! before a check may alarm, so that the chance of ever alarming while the
//! threshold holds stays under the check's error budget however often it looks.
//!
//! The boundary is Robbins' normal mixture, as written out by Howard, Ramdas,
//! McAuliffe and Sekhon ("Time-uniform, nonparametric, nonasymptotic confidence
//! sequences", Annals of Statistics 2021, eq. (14)) and used with an estimated
//! variance by Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas ("Time-uniform
//! central limit theory and asymptotic confidence sequences", 2024). For a
//! standardized statistic Z observed at information `I` (the sum of the
//! variances of the increments so far, here measured in effective samples), the
//! mixture martingale `sqrt(ρ/(I+ρ)) · exp(Z²I/(2(I+ρ)))` exceeds `1/α` with
//! probability at most `α` over all looks (Ville's inequality), that is when
//!
//! ```text
//! |Z| ≥ sqrt( (1 + ρ/I) · (2 ln(1/α) + ln(1 + I/ρ)) )
//! ```
//!
//! `ρ` sets where the boundary is tightest; it is chosen from the spec (the
//! planned samples), never from the data. Two corrections keep small samples
//! honest, where the normal approximation is too kind to the upper tail of a
//! count: a Bernstein term `c·ℓ/3` for the largest jump `c` one span can make
//! (sub-gamma processes, Howard et al. 2021 §3), and Student-t quantiles when
//! the variance is estimated from few independent groups (Cornish–Fisher
//! expansion, Abramowitz & Stegun 26.7.5).

/// Where a boundary stands for one check's error budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boundary {
    /// Chance of ever crossing while the null holds.
    alpha: f64,
    /// Effective samples at which the boundary is tightest.
    planned_samples: f64,
}

impl Boundary {
    /// A boundary spending `alpha`, tightest at `planned_samples` effective samples.
    pub fn new(alpha: f64, planned_samples: f64) -> Self {
        Self {
            alpha: alpha.clamp(f64::MIN_POSITIVE, 0.5),
            planned_samples: planned_samples.max(1.0),
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The boundary in standard errors after `effective_samples`, for a statistic
    /// one span can move by at most `jump` standard errors, whose variance was
    /// estimated with `df` degrees of freedom (`None`: known).
    pub fn z(&self, effective_samples: f64, jump: f64, df: Option<f64>) -> f64 {
        if effective_samples.is_nan() || effective_samples <= 0.0 {
            return f64::INFINITY;
        }
        let log_alpha = (1.0 / self.alpha).ln();
        // ρ = planned / κ puts the tightest point at the planned samples (Howard
        // et al. 2021, eq. (15)).
        let kappa = 2.0 * log_alpha + (2.0 * log_alpha + 1.0).ln();
        let u = kappa * effective_samples / self.planned_samples;
        let spread = 2.0 * log_alpha + (1.0 + u).ln();
        let normal = ((1.0 + 1.0 / u) * spread).sqrt();
        let z = normal + jump.max(0.0) * spread / 6.0;
        match df {
            Some(df) => student_t(z, df),
            None => z,
        }
    }
}

/// The Student-t quantile with `df` degrees of freedom at the level of the normal
/// quantile `z`: always at least `z`, and infinite below one degree of freedom.
fn student_t(z: f64, df: f64) -> f64 {
    if df.is_nan() || df < 1.0 {
        return f64::INFINITY;
    }
    let (z2, d) = (z * z, df);
    let z3 = z2 * z;
    let z5 = z3 * z2;
    let z7 = z5 * z2;
    z + (z3 + z) / (4.0 * d)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * d * d)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * d * d * d)
}

/// `ln Γ(x)` for `x > 0` (Lanczos' approximation, g = 7, nine coefficients;
/// relative error below 1e-13).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, &c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// `ln B(a, b)`.
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The e-value of a beta-binomial mixture against the point null "each unit is a
/// success with probability `p0`", after `successes` of `trials` (Lindon & Malek,
/// "Anytime-valid inference for multinomial count data", NeurIPS 2022, with two
/// categories). The prior is Beta centred on `p0` with `concentration` pseudo-units.
/// Under the null it is a nonnegative martingale with mean 1, so it reaches `1/α`
/// with probability at most `α` however often it is looked at.
pub fn beta_binomial_e_value(successes: u64, trials: u64, p0: f64, concentration: f64) -> f64 {
    if !(p0 > 0.0 && p0 < 1.0) || successes > trials {
        return 1.0;
    }
    let (k, n) = (successes as f64, trials as f64);
    let a = p0 * concentration;
    let b = (1.0 - p0) * concentration;
    let log_e = ln_beta(a + k, b + n - k) - ln_beta(a, b) - k * p0.ln() - (n - k) * (1.0 - p0).ln();
    log_e.exp()
}

/// Log-odds shifts of the alternatives the interval test bets on, on each side.
const INTERVAL_SHIFTS: [f64; 8] = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4];

/// The e-value against "each unit is a success, independently, with some
/// probability between `low` and `high`", the probability free to differ from
/// unit to unit, after `successes` of `trials`. Half bets that the share is above
/// `high`, half that it is below `low`, each on an even mixture of alternatives
/// [`INTERVAL_SHIFTS`] away in log-odds. For an alternative `q > high` a unit's
/// likelihood ratio `(q/high)^x ((1−q)/(1−high))^(1−x)` has mean at most one when
/// its probability is at most `high`, so each side is a nonnegative
/// supermartingale under the null and so is their average: it reaches `1/α` with
/// probability at most `α` however often it is looked at (Ville's inequality; the
/// construction is the mixture of Ramdas, Grünwald, Vovk and Shafer, "Game-theoretic
/// statistics and safe anytime-valid inference", Statistical Science 2023, §4).
pub fn interval_e_value(successes: u64, trials: u64, low: f64, high: f64) -> f64 {
    if !(low > 0.0 && low <= high && high < 1.0) || successes > trials {
        return 1.0;
    }
    let (k, rest) = (successes as f64, (trials - successes) as f64);
    let side = |p0: f64, direction: f64| {
        let log_odds = (p0 / (1.0 - p0)).ln();
        INTERVAL_SHIFTS
            .iter()
            .map(|shift| {
                let q = 1.0 / (1.0 + (-(log_odds + direction * shift)).exp());
                (k * (q / p0).ln() + rest * ((1.0 - q) / (1.0 - p0)).ln()).exp()
            })
            .sum::<f64>()
            / INTERVAL_SHIFTS.len() as f64
    };
    0.5 * (side(high, 1.0) + side(low, -1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut factorial = 1.0f64;
        for n in 1..30u32 {
            // Γ(n) = (n−1)!
            let got = ln_gamma(n as f64);
            assert!((got - factorial.ln()).abs() < 1e-10, "Γ({n})");
            factorial *= n as f64;
        }
        // Γ(1/2) = √π.
        let half = ln_gamma(0.5);
        assert!((half - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        // Γ(0.1) = 9.513507698668732 (published value).
        assert!((ln_gamma(0.1) - 9.513_507_698_668_732f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn beta_binomial_e_value_is_exact_for_small_samples() {
        // One success in one trial, p0 = 1/2, Beta(1,1): the marginal likelihood
        // is 1/2 and the null likelihood 1/2, so the e-value is 1.
        let e = beta_binomial_e_value(1, 1, 0.5, 2.0);
        assert!((e - 1.0).abs() < 1e-12, "{e}");
        // Three of three, Beta(1,1): marginal ∫p³ = 1/4 against (1/2)³ = 1/8: e = 2.
        let e = beta_binomial_e_value(3, 3, 0.5, 2.0);
        assert!((e - 2.0).abs() < 1e-12, "{e}");
        // Zero of four: ∫(1−p)⁴ = 1/5 against 1/16: e = 16/5.
        let e = beta_binomial_e_value(0, 4, 0.5, 2.0);
        assert!((e - 3.2).abs() < 1e-12, "{e}");
    }

    #[test]
    fn beta_binomial_e_value_has_mean_one_under_the_null() {
        // E[e] = Σ_k C(n,k) p0^k (1−p0)^(n−k) e(k, n) = 1 exactly.
        let (n, p0) = (40u64, 0.1f64);
        let mut mean = 0.0;
        for k in 0..=n {
            let ln_choose = ln_gamma(n as f64 + 1.0)
                - ln_gamma(k as f64 + 1.0)
                - ln_gamma((n - k) as f64 + 1.0);
            let probability =
                (ln_choose + k as f64 * p0.ln() + (n - k) as f64 * (1.0 - p0).ln()).exp();
            mean += probability * beta_binomial_e_value(k, n, p0, 20.0);
        }
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
    }

    /// The exact distribution of successes among independent units whose
    /// probabilities are `probabilities`.
    fn successes_distribution(probabilities: &[f64]) -> Vec<f64> {
        let mut distribution = vec![1.0];
        for &p in probabilities {
            let mut next = vec![0.0; distribution.len() + 1];
            for (k, &mass) in distribution.iter().enumerate() {
                next[k] += mass * (1.0 - p);
                next[k + 1] += mass * p;
            }
            distribution = next;
        }
        distribution
    }

    #[test]
    fn interval_e_value_has_mean_at_most_one_anywhere_in_the_interval() {
        let (low, high) = (0.05, 0.25);
        let n = 60;
        // Every unit at one probability, and half the units at each end (as when
        // units evaluated at the previous weight arrive first), exactly.
        let mut cases: Vec<Vec<f64>> = [0.05, 0.1, 0.15, 0.25]
            .iter()
            .map(|&p| vec![p; n])
            .collect();
        cases.push([vec![low; n / 2], vec![high; n / 2]].concat());
        cases.push([vec![high; n / 2], vec![low; n / 2]].concat());
        for probabilities in cases {
            let distribution = successes_distribution(&probabilities);
            let mean: f64 = distribution
                .iter()
                .enumerate()
                .map(|(k, mass)| mass * interval_e_value(k as u64, n as u64, low, high))
                .sum();
            assert!(mean <= 1.0 + 1e-9, "{probabilities:?}: {mean}");
        }
    }

    #[test]
    fn interval_e_value_grows_outside_the_interval_only() {
        // 1,000 units: 15% sits inside [5%, 25%]; 2% and 40% sit outside, past the
        // sample-ratio alarm at 1,000.
        assert!(interval_e_value(150, 1_000, 0.05, 0.25) < 1.0);
        assert!(interval_e_value(20, 1_000, 0.05, 0.25) > 1e3);
        assert!(interval_e_value(400, 1_000, 0.05, 0.25) > 1e6);
        // A point interval is a two-sided test of the weight itself.
        assert!(interval_e_value(250, 1_000, 0.25, 0.25) < 1.0);
        assert!(interval_e_value(150, 1_000, 0.25, 0.25) > 1e6);
        // Nothing to test without a proper interval.
        assert_eq!(interval_e_value(5, 10, 0.0, 0.5), 1.0);
        assert_eq!(interval_e_value(5, 10, 0.6, 0.5), 1.0);
    }

    #[test]
    fn boundary_grows_with_confidence_and_shrinks_with_data_near_the_plan() {
        let strict = Boundary::new(1e-4, 1000.0);
        let loose = Boundary::new(1e-2, 1000.0);
        assert!(strict.z(1000.0, 0.0, None) > loose.z(1000.0, 0.0, None));
        let b = Boundary::new(1e-3, 1000.0);
        // Far fewer samples than planned: much wider; many more: slowly wider.
        assert!(b.z(10.0, 0.0, None) > 2.0 * b.z(1000.0, 0.0, None));
        assert!(b.z(1e6, 0.0, None) > b.z(1000.0, 0.0, None));
        assert!(b.z(1e6, 0.0, None) < 1.5 * b.z(1000.0, 0.0, None));
        // Always wider than the fixed-sample one-sided quantile (3.09 at 1e-3).
        for n in [1.0, 10.0, 100.0, 1e3, 1e4, 1e6] {
            assert!(b.z(n, 0.0, None) > 3.09, "{n}");
        }
        assert_eq!(b.z(0.0, 0.0, None), f64::INFINITY);
    }

    #[test]
    fn boundary_at_the_plan_matches_the_closed_form() {
        // At the planned samples u = κ, so the boundary is
        // sqrt((1 + 1/κ)(2 ln(1/α) + ln(1 + κ))).
        let alpha: f64 = 1e-3;
        let l = 2.0 * (1.0 / alpha).ln();
        let kappa = l + (l + 1.0).ln();
        let expected = ((1.0 + 1.0 / kappa) * (l + (1.0 + kappa).ln())).sqrt();
        let got = Boundary::new(alpha, 500.0).z(500.0, 0.0, None);
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn jumps_and_estimated_variance_only_widen_the_boundary() {
        let b = Boundary::new(1e-3, 1000.0);
        let plain = b.z(500.0, 0.0, None);
        assert!(b.z(500.0, 0.5, None) > plain);
        assert!(b.z(500.0, 0.0, Some(30.0)) > plain);
        assert!(b.z(500.0, 0.0, Some(3.0)) > b.z(500.0, 0.0, Some(30.0)));
        assert_eq!(b.z(500.0, 0.0, Some(0.0)), f64::INFINITY);
    }

    #[test]
    fn student_t_expansion_matches_published_quantiles() {
        // t quantiles at the normal's 0.999 level (z = 3.0902): 30 df 3.3852,
        // 60 df 3.2317, 120 df 3.1595 (Abramowitz & Stegun, table 26.10).
        for (df, expected) in [(30.0, 3.3852), (60.0, 3.2317), (120.0, 3.1595)] {
            let got = student_t(3.090_232, df);
            assert!((got - expected).abs() < 0.003, "{df}: {got}");
        }
    }
}
