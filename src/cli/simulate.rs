//! `spangate simulate`: its arguments, and how its results are shown.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::serve::parse_duration;
use crate::api::{FeatureRolloutSpec, LatencyQuantiles};
use crate::simulate::{Sampling, Simulation, Summary, Traffic};

/// Arguments of `spangate simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A FeatureRollout file whose spec is simulated [default: the README's
    /// example: steps 1/5/25/50/100, 30s, minSamples 200, maxErrorRate 5%,
    /// maxErrorRateIncrease 1 point, maxLatencyIncrease 25%, p99 ≤ 800 ms].
    pub file: Option<PathBuf>,
    /// Rollouts to simulate.
    #[arg(long, default_value_t = 1000)]
    pub rollouts: u32,
    /// Seed of the first rollout; the same seed gives the same results.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: SimulateOutput,

    /// Requests per second, all users together.
    #[arg(long, default_value_t = 800.0, help_heading = "Traffic")]
    pub rate: f64,
    /// Error rate of the default variant (0.01 = 1%).
    #[arg(long, default_value_t = 0.01, help_heading = "Traffic")]
    pub error_rate: f64,
    /// Median latency, in milliseconds (lognormal).
    #[arg(long, default_value_t = 40.0, help_heading = "Traffic")]
    pub latency_median_ms: f64,
    /// σ of the latency's logarithm.
    #[arg(long, default_value_t = 0.5, help_heading = "Traffic")]
    pub latency_sigma: f64,
    /// Spans arrive in batches this far apart.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Traffic")]
    pub batch_interval: Duration,
    /// The controller's tick, as `standalone --tick`.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Traffic")]
    pub tick: Duration,
    /// Users asking for the flag.
    #[arg(long, default_value_t = 10_000, help_heading = "Traffic")]
    pub users: u32,
    /// Group users into N accounts of uneven size and uneven health (error rates and
    /// latencies that differ by account), bucketed by `accountId`.
    #[arg(long, value_name = "N", help_heading = "Traffic")]
    pub accounts: Option<u32>,
    /// Spans carry no bucketing value (no accountId, no feature_flag.context.id):
    /// variances are then computed as if every span were independent.
    #[arg(long, help_heading = "Traffic")]
    pub spans_without_unit: bool,

    /// Sample the traces before spangate sees them: `tail:0.1` keeps every trace
    /// whose span erred and 10% of the others, `uniform:0.1` keeps 10% of all. Kept
    /// spans record the sampler's threshold (`tracestate` `ot=th:…`), so each counts
    /// for the ones dropped.
    #[arg(long, value_name = "KIND:SHARE", help_heading = "Traffic")]
    pub sampling: Option<Sampling>,
    /// The sampler records no threshold: every kept span counts once, as a tail
    /// sampler that writes no `tracestate` leaves them (error rates look inflated).
    #[arg(long, requires = "sampling", help_heading = "Traffic")]
    pub sampling_unrecorded: bool,

    /// Error rate of the rollout variant: a regression when above --error-rate.
    #[arg(long, help_heading = "Regression")]
    pub candidate_error_rate: Option<f64>,
    /// The rollout variant's latencies are the default's times this (1.5 = +50%).
    #[arg(long, default_value_t = 1.0, help_heading = "Regression")]
    pub candidate_latency_factor: f64,
    /// The regression shows only from this weight (percent) on.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "W",
        help_heading = "Regression"
    )]
    pub regression_from_weight: f64,

    /// Override analysis.confidence.
    #[arg(long, help_heading = "Spec overrides")]
    pub confidence: Option<f64>,
    /// Override analysis.minSamples.
    #[arg(long, help_heading = "Spec overrides")]
    pub min_samples: Option<u64>,
    /// Override stepDuration (e.g. 30s).
    #[arg(long, help_heading = "Spec overrides")]
    pub step_duration: Option<String>,
    /// Override steps (comma-separated percentages).
    #[arg(long, value_delimiter = ',', help_heading = "Spec overrides")]
    pub steps: Option<Vec<f64>>,
    /// Judge N downstream services too (`downstream-1` …), each called once by every
    /// request and as healthy as the default variant: shows what sharing the error
    /// budget between services costs. Replaces the spec's downstreamServices.
    #[arg(long, value_name = "N", help_heading = "Spec overrides")]
    pub downstream_services: Option<usize>,

    /// Stop a rollout still running after this much simulated time.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// Rollouts simulated at once [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimulateOutput {
    Text,
    Json,
}

/// The spec of the README's example rollout.
pub fn example_spec() -> FeatureRolloutSpec {
    serde_json::from_value(serde_json::json!({
        "flag": {
            "key": "new-checkout",
            "variants": {"off": false, "on": true},
            "defaultVariant": "off",
            "rolloutVariant": "on"
        },
        "bucketBy": "accountId",
        "service": "checkout",
        "revision": "3f2c1a9",
        "steps": [1, 5, 25, 50, 100],
        "stepDuration": "30s",
        "analysis": {
            "minSamples": 200,
            "maxErrorRate": 0.05,
            "maxErrorRateIncrease": 0.01,
            "maxLatencyMs": LatencyQuantiles { p99: Some(800.0), ..LatencyQuantiles::default() },
            "maxLatencyIncrease": 0.25
        }
    }))
    .expect("the example spec is valid")
}

/// The spec of the first FeatureRollout in a YAML or JSON file.
pub fn read_spec(path: &std::path::Path) -> anyhow::Result<FeatureRolloutSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = serde_norway::Value::deserialize(document)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("FeatureRollout") {
            let spec = value
                .get("spec")
                .cloned()
                .with_context(|| format!("the FeatureRollout in {} has no spec", path.display()))?;
            return serde_norway::from_value(spec)
                .with_context(|| format!("the FeatureRollout in {}", path.display()));
        }
    }
    anyhow::bail!("{} holds no FeatureRollout", path.display())
}

use serde::Deserialize as _;

impl SimulateArgs {
    pub fn simulation(self) -> anyhow::Result<Simulation> {
        let mut spec = match &self.file {
            Some(path) => read_spec(path)?,
            None => example_spec(),
        };
        if let Some(confidence) = self.confidence {
            spec.analysis.confidence = confidence;
        }
        if let Some(min_samples) = self.min_samples {
            spec.analysis.min_samples = min_samples;
        }
        if let Some(duration) = self.step_duration {
            spec.step_duration = duration;
        }
        if let Some(steps) = self.steps {
            spec.steps = steps;
        }
        if let Some(n) = self.downstream_services {
            spec.downstream_services = (1..=n).map(|i| format!("downstream-{i}")).collect();
        }
        for (name, rate) in [
            ("--error-rate", Some(self.error_rate)),
            ("--candidate-error-rate", self.candidate_error_rate),
        ] {
            if let Some(rate) = rate
                && !(0.0..=1.0).contains(&rate)
            {
                anyhow::bail!("{name} is {rate}; it is a fraction between 0 and 1 (0.01 = 1%)");
            }
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate must be a positive number of requests per second");
        }
        if self.batch_interval.is_zero() || self.tick.is_zero() {
            anyhow::bail!("--batch-interval and --tick must be longer than zero");
        }
        Ok(Simulation {
            spec,
            traffic: Traffic {
                rate: self.rate,
                error_rate: self.error_rate,
                latency_median_ms: self.latency_median_ms,
                latency_sigma: self.latency_sigma,
                candidate_error_rate: self.candidate_error_rate,
                candidate_latency_factor: self.candidate_latency_factor,
                regression_from_weight: self.regression_from_weight,
                users: self.users,
                accounts: self.accounts,
                spans_carry_unit: !self.spans_without_unit,
                sampling: self.sampling.map(|sampling| Sampling {
                    recorded: !self.sampling_unrecorded,
                    ..sampling
                }),
            },
            batch_interval: self.batch_interval,
            tick: self.tick,
            rollouts: self.rollouts,
            seed: self.seed,
            max_duration: self.max_duration,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        })
    }
}

/// Runs `spangate simulate`, printing progress on stderr and the summary on stdout.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let output = args.output;
    let simulation = args.simulation()?;
    let total = simulation.rollouts as usize;
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let progress = |done: usize| {
        // On a terminal a bar redrawn in place; otherwise a line every tenth.
        let tenth = (total / 10).max(1);
        if terminal {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} rollouts, {:.0?}",
                "#".repeat(filled),
                " ".repeat(width - filled),
                started.elapsed()
            );
            if done == total {
                eprintln!();
            }
        } else if done.is_multiple_of(tenth) || done == total {
            eprintln!("simulated {done}/{total} rollouts");
        }
    };
    let runs = crate::simulate::run(&simulation, &progress)?;
    let summary = Summary::of(&simulation, &runs);
    let mut stdout = std::io::stdout().lock();
    match output {
        SimulateOutput::Text => stdout.write_all(summary.text(&simulation).as_bytes())?,
        SimulateOutput::Json => {
            serde_json::to_writer_pretty(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
