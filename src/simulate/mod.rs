//! `spangate simulate`: many synthetic rollouts through the real controller, to
//! measure how often a spec rolls back a healthy feature, how often and how soon it
//! catches a regression, and how long a healthy rollout takes to promote.
//!
//! Each rollout runs the same pieces as `standalone`: the controller loop
//! ([`controller::run`]) with its tick, over a [`MemoryStore`], the judge and the
//! state machine, the published flag, and the ingest windows. Time is virtual:
//! tokio's clock is paused and jumps to the next timer, so a 2-minute rollout
//! takes milliseconds. Synthetic users ask the published flag for their variant
//! (the real evaluator and bucketing) and send a batch of spans every batch
//! interval. Every downstream service of the spec (`downstreamServices`) sees each
//! request once, as healthy as the default variant whatever the variant: ingest
//! leaves their windows to the trace join, so the traffic fills them itself.

mod traffic;

pub use traffic::{Population, Random, Sampling, Traffic};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::analysis::{Arm, Observation, Route, Routes, SpanSample, Window, WindowEpoch};
use crate::api::{CheckOutcome, FeatureRolloutSpec, FeatureRolloutStatus, Phase};
use crate::controller::{self, Controller, SpanWindows};
use crate::flags::{FlagSet, WEIGHT_SCALE};
use crate::ingest::Ingestor;
use crate::serve::PublishedFlags;
use crate::store::{MemoryStore, RolloutKey};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub spec: FeatureRolloutSpec,
    pub traffic: Traffic,
    /// Spans arrive in batches this far apart (an SDK's export interval).
    pub batch_interval: Duration,
    /// The controller's tick, as `standalone --tick`.
    pub tick: Duration,
    pub rollouts: u32,
    pub seed: u64,
    /// A rollout still running after this long (virtual time) is counted as such.
    pub max_duration: Duration,
    /// Rollouts simulated at once.
    pub threads: usize,
}

/// How one simulated rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Ending {
    Promoted,
    RolledBack,
    /// Still progressing when the simulation's time was up.
    Running,
}

/// One simulated rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRun {
    pub ending: Ending,
    /// Virtual seconds from the rollout's start to its end.
    pub seconds: f64,
    /// Index of the step it ended at.
    pub step: Option<u32>,
    /// Weight (percent) of the step it was last judged at.
    pub weight: f64,
    /// Requests of users served the rollout variant, from start to end (spans
    /// before any sampling).
    pub candidate_spans: u64,
    /// The checks that failed (`name (scope)`), when it rolled back.
    pub failed_checks: Vec<String>,
    /// Whether a step ever held on a sample-ratio mismatch.
    pub held_on_sample_ratio: bool,
}

const ROLLOUT_NAMESPACE: &str = "default";

/// Ingest's windows, and the windows of the spec's downstream services, which the
/// simulated traffic fills (one rollout per controller, so one set of them).
struct SimulatedWindows {
    ingestor: Arc<Ingestor>,
    downstream: Mutex<(WindowEpoch, Vec<(String, Window)>)>,
}

impl SimulatedWindows {
    fn new(ingestor: Arc<Ingestor>, services: &[String]) -> Self {
        let windows = services
            .iter()
            .map(|s| (s.clone(), Window::default()))
            .collect();
        Self {
            ingestor,
            downstream: Mutex::new((WindowEpoch(0), windows)),
        }
    }

    /// Records spans of the downstream services (each by its index in the spec),
    /// starting their windows anew when the step's epoch changed.
    fn record(&self, spans: &[(WindowEpoch, usize, Arm, Observation)]) {
        let mut downstream = self
            .downstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &(epoch, index, arm, ref observation) in spans {
            if downstream.0 != epoch {
                downstream.0 = epoch;
                for (_, window) in &mut downstream.1 {
                    *window = Window::default();
                }
            }
            downstream.1[index].1.record(arm, observation);
        }
    }
}

impl SpanWindows for SimulatedWindows {
    fn window(&self, rollout: &str, epoch: WindowEpoch) -> Window {
        self.ingestor.window(rollout, epoch)
    }

    fn downstream_windows(&self, _rollout: &str, epoch: WindowEpoch) -> Vec<(String, Window)> {
        let downstream = self
            .downstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if downstream.0 == epoch {
            downstream.1.clone()
        } else {
            Vec::new()
        }
    }

    fn set_routes(&self, routes: Vec<Route>) {
        self.ingestor.set_routes(Routes::new(routes));
    }

    fn samples_recorded(&self) -> u64 {
        self.ingestor.stats().samples_routed
    }
}

/// Runs every rollout of `simulation`, calling `progress` with the number done.
pub fn run(
    simulation: &Simulation,
    progress: &(dyn Fn(usize) + Sync),
) -> anyhow::Result<Vec<RolloutRun>> {
    crate::rollout::plan(&simulation.spec)
        .map_err(|invalid| anyhow::anyhow!("the rollout cannot be simulated: {invalid}"))?;
    if simulation.spec.steps.is_empty() {
        anyhow::bail!("the rollout has no steps: there is nothing to simulate");
    }
    if let Some(other) = simulation
        .spec
        .bucket_by
        .as_deref()
        .filter(|b| !matches!(*b, "accountId" | "targetingKey"))
    {
        anyhow::bail!(
            "the rollout buckets by {other}; simulated users carry targetingKey and accountId, \
             so bucketBy must be one of those (or unset)"
        );
    }
    let total = simulation.rollouts as usize;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<RolloutRun>>>> =
        Mutex::new((0..total).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..simulation.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return;
                    }
                    let result = run_one(simulation, index as u64);
                    results.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(result);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a rollout was not simulated"))))
        .collect()
}

/// The seed of rollout `index`: rollouts are independent of each other and of the
/// number of threads.
fn rollout_seed(seed: u64, index: u64) -> u64 {
    let mut random = Random::new(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
    random.next_u64()
}

fn run_one(simulation: &Simulation, index: u64) -> anyhow::Result<RolloutRun> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(simulate_rollout(simulation, index))
}

/// What the controller's passes saw of the rollout.
#[derive(Debug, Default)]
struct Watched {
    ended: Option<(FeatureRolloutStatus, Timestamp)>,
    last: Option<FeatureRolloutStatus>,
    held_on_sample_ratio: bool,
}

async fn simulate_rollout(simulation: &Simulation, index: u64) -> anyhow::Result<RolloutRun> {
    let spec = &simulation.spec;
    let key = RolloutKey::new(ROLLOUT_NAMESPACE, format!("simulated-{index}"));
    let store = MemoryStore::with_rollout(key.clone(), spec.clone());
    let ingestor = Arc::new(Ingestor::new());
    let windows = Arc::new(SimulatedWindows::new(
        ingestor.clone(),
        &spec.downstream_services,
    ));
    let flags: PublishedFlags = Arc::new(ArcSwap::from_pointee(FlagSet::default()));
    let controller = Controller::new(store, windows.clone(), flags.clone());

    let origin = Timestamp::from_second(1_800_000_000)?;
    let started = tokio::time::Instant::now();
    let clock = move || {
        let elapsed = tokio::time::Instant::now() - started;
        origin + jiff::SignedDuration::try_from(elapsed).unwrap_or_default()
    };
    let cancel = CancellationToken::new();
    let watched = Arc::new(Mutex::new(Watched::default()));
    let on_pass = {
        let (watched, cancel, key) = (watched.clone(), cancel.clone(), key.clone());
        move |report: &controller::PassReport| {
            let Some((_, status)) = report.rollouts.iter().find(|(k, _)| *k == key) else {
                return;
            };
            let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched.held_on_sample_ratio |=
                status.hold == Some(crate::api::Hold::SampleRatioMismatch);
            if status.phase.is_terminal() && watched.ended.is_none() {
                watched.ended = Some((status.clone(), clock()));
                cancel.cancel();
            }
            watched.last = Some(status.clone());
        }
    };
    let stop = cancel.clone();
    let loop_done = controller::run(controller, simulation.tick, clock, on_pass, async move {
        stop.cancelled().await
    });
    let mut random = Random::new(rollout_seed(simulation.seed, index));
    let traffic = send_traffic(simulation, &windows, &flags, clock, &mut random, &cancel);
    let timed_out = tokio::time::timeout(simulation.max_duration, async {
        tokio::join!(loop_done, traffic).1
    })
    .await;
    let candidate_spans = match timed_out {
        Ok(spans) => spans,
        Err(_) => {
            cancel.cancel();
            0
        }
    };
    let watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
    let (status, ending, at) = match &watched.ended {
        Some((status, at)) => {
            let ending = if status.phase == Phase::Promoted {
                Ending::Promoted
            } else {
                Ending::RolledBack
            };
            (status.clone(), ending, *at)
        }
        None => (
            watched.last.clone().unwrap_or_default(),
            Ending::Running,
            clock(),
        ),
    };
    let record = status.last_verdict.as_ref();
    let failed_checks = match ending {
        Ending::RolledBack => record
            .map(|r| {
                r.verdict
                    .checks
                    .iter()
                    .filter(|c| c.outcome == CheckOutcome::Fail)
                    .map(|c| {
                        if c.service == spec.service {
                            format!("{} ({:?})", c.name, c.scope)
                        } else {
                            format!("{}: {} ({:?})", c.service, c.name, c.scope)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(RolloutRun {
        ending,
        seconds: at.duration_since(origin).as_secs_f64(),
        step: status.current_step,
        weight: match ending {
            Ending::Promoted => 100.0,
            _ => record.map_or(status.weight, |r| r.weight),
        },
        candidate_spans,
        failed_checks,
        held_on_sample_ratio: watched.held_on_sample_ratio,
    })
}

/// Sends a batch of spans every batch interval until `cancel`; returns how many
/// spans of the rollout variant were sent.
async fn send_traffic(
    simulation: &Simulation,
    windows: &SimulatedWindows,
    flags: &PublishedFlags,
    clock: impl Fn() -> Timestamp,
    random: &mut Random,
    cancel: &CancellationToken,
) -> u64 {
    let spec = &simulation.spec;
    let traffic = &simulation.traffic;
    let population = Population::new(traffic, random.next_u64(), random);
    let per_batch = traffic.rate * simulation.batch_interval.as_secs_f64();
    let mut carried = 0.0;
    let mut served_version = None;
    let mut served = Vec::new();
    let mut candidate_spans = 0;
    let candidate_error_rate = traffic.candidate_error_rate.unwrap_or(traffic.error_rate);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return candidate_spans,
            _ = tokio::time::sleep(simulation.batch_interval) => {}
        }
        let now = clock();
        let set = flags.load();
        let Some(flag) = set.get(&spec.flag.key) else {
            continue;
        };
        if served_version != Some(set.version()) {
            served = traffic::serve_all(flag, &population, now);
            served_version = Some(set.version());
        }
        let weight = flag
            .percentage
            .as_ref()
            .map_or(0.0, |p| p.weight as f64 * 100.0 / WEIGHT_SCALE as f64);
        let regressed = weight >= traffic.regression_from_weight;
        carried += per_batch;
        let requests = carried.floor() as u64;
        carried -= requests as f64;
        let ingestor = &windows.ingestor;
        let routes = ingestor.routes();
        let mut observations = Vec::with_capacity(requests as usize);
        let mut downstream = Vec::new();
        for _ in 0..requests {
            let index = random.below(population.len());
            let Some(answer) = served[index] else {
                continue;
            };
            let user = population.user(index);
            let variant = flag.variant_name(answer.variant);
            let candidate = variant == spec.flag.rollout_variant;
            candidate_spans += u64::from(candidate);
            let regression = candidate && regressed;
            let error_rate = if regression {
                candidate_error_rate
            } else {
                traffic.error_rate
            };
            let is_error = random.chance(error_rate * f64::from(user.error_factor));
            let mut latency_ms = traffic.latency_median_ms
                * (traffic.latency_sigma * random.normal()).exp()
                * f64::from(user.latency_factor);
            if regression {
                latency_ms *= traffic.candidate_latency_factor;
            }
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&random.next_u64().to_le_bytes());
            trace_id[8..].copy_from_slice(&random.next_u64().to_le_bytes());
            // The whole trace is kept or dropped on its entry span's status.
            let weight = match &traffic.sampling {
                None => 1,
                Some(sampling) => match sampling.weight(is_error, &trace_id) {
                    Some(weight) => weight,
                    None => continue,
                },
            };
            let sample = SpanSample {
                service: &spec.service,
                revision: spec.revision.as_deref(),
                flag_key: &spec.flag.key,
                variant,
                is_error,
                duration_ns: (latency_ms * 1e6) as u64,
                trace_id,
                // Drawn from the trace ID rather than the generator, so seeds replay.
                span_id: trace_id[..8].try_into().expect("eight bytes"),
                // The unit is given hashed below, as Route::observation would hash it.
                context_id: None,
                reason: Some(answer.reason),
                weight,
            };
            for (route, arm) in routes.route(&sample) {
                let unit = match route.bucket_by {
                    Some(_) => user.account_unit,
                    None => user.user_unit,
                };
                let unit = traffic.spans_carry_unit.then_some(unit);
                let observation = route.observation_of_unit(&sample, unit);
                observations.push((route, arm, observation));
                for index in 0..spec.downstream_services.len() {
                    let is_error = random.chance(traffic.error_rate * f64::from(user.error_factor));
                    let latency_ms = traffic.latency_median_ms
                        * (traffic.latency_sigma * random.normal()).exp()
                        * f64::from(user.latency_factor);
                    let mut span_id = observation.span_id;
                    span_id[0] ^= index as u8 + 1;
                    let span = Observation {
                        is_error,
                        duration_ns: (latency_ms * 1e6) as u64,
                        span_id,
                        ..observation
                    };
                    downstream.push((route.epoch, index, arm, span));
                }
            }
        }
        ingestor.record_observations(observations);
        windows.record(&downstream);
    }
}

/// A proportion with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proportion {
    pub count: u64,
    pub of: u64,
    pub rate: f64,
    pub lower95: f64,
    pub upper95: f64,
}

impl Proportion {
    pub fn new(count: u64, of: u64) -> Self {
        let (k, n) = (count as f64, of.max(1) as f64);
        let z: f64 = 1.959_964;
        let p = k / n;
        let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
        Self {
            count,
            of,
            rate: p,
            lower95: (center - half).max(0.0),
            upper95: (center + half).min(1.0),
        }
    }
}

/// Median and 90th percentile of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub p90: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            median: at(0.5),
            p90: at(0.9),
        })
    }
}

/// What the rollouts showed together.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub rollouts: u64,
    /// Whether the rollout variant was made worse than the default one.
    pub regression: bool,
    pub rolled_back: Proportion,
    pub promoted: Proportion,
    pub running: u64,
    /// Rollbacks by the weight (percent) of the step that caught them.
    pub caught_at_weight: Vec<(f64, u64)>,
    /// Spans of the rollout variant sent before a rollback.
    pub candidate_spans_before_rollback: Option<Spread>,
    /// Virtual seconds from start to promotion.
    pub seconds_to_promote: Option<Spread>,
    /// The sum of the steps' dwells: the least time a promotion can take.
    pub sum_of_dwells_seconds: f64,
    /// How often each check failed, among rollbacks.
    pub failed_checks: Vec<(String, u64)>,
    /// Rollouts that held on a sample-ratio mismatch at some step.
    pub held_on_sample_ratio: u64,
}

impl Summary {
    pub fn of(simulation: &Simulation, runs: &[RolloutRun]) -> Self {
        let n = runs.len() as u64;
        let count = |ending| runs.iter().filter(|r| r.ending == ending).count() as u64;
        let rolled_back: Vec<&RolloutRun> = runs
            .iter()
            .filter(|r| r.ending == Ending::RolledBack)
            .collect();
        let mut caught: Vec<(f64, u64)> = Vec::new();
        for run in &rolled_back {
            match caught.iter_mut().find(|(w, _)| *w == run.weight) {
                Some((_, count)) => *count += 1,
                None => caught.push((run.weight, 1)),
            }
        }
        caught.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut failed: Vec<(String, u64)> = Vec::new();
        for name in rolled_back.iter().flat_map(|r| &r.failed_checks) {
            match failed.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => failed.push((name.clone(), 1)),
            }
        }
        failed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let dwell = crate::api::parse_duration(&simulation.spec.step_duration)
            .unwrap_or_default()
            .as_secs_f64();
        let judged = simulation.spec.steps.iter().filter(|&&w| w < 100.0).count();
        Self {
            rollouts: n,
            regression: simulation.traffic.has_regression(),
            rolled_back: Proportion::new(rolled_back.len() as u64, n),
            promoted: Proportion::new(count(Ending::Promoted), n),
            running: count(Ending::Running),
            caught_at_weight: caught,
            candidate_spans_before_rollback: Spread::of(
                rolled_back
                    .iter()
                    .map(|r| r.candidate_spans as f64)
                    .collect(),
            ),
            seconds_to_promote: Spread::of(
                runs.iter()
                    .filter(|r| r.ending == Ending::Promoted)
                    .map(|r| r.seconds)
                    .collect(),
            ),
            sum_of_dwells_seconds: dwell * judged as f64,
            failed_checks: failed,
            held_on_sample_ratio: runs.iter().filter(|r| r.held_on_sample_ratio).count() as u64,
        }
    }

    /// The summary as a person reads it.
    pub fn text(&self, simulation: &Simulation) -> String {
        use std::fmt::Write as _;
        let spec = &simulation.spec;
        let traffic = &simulation.traffic;
        let pct = |p: f64| crate::analysis::percent(p);
        let mut out = String::new();
        let steps: Vec<String> = spec.steps.iter().map(|s| format!("{s}")).collect();
        let _ = writeln!(
            out,
            "{} rollouts (seed {}): steps {}%, stepDuration {}, minSamples {}, confidence {}",
            self.rollouts,
            simulation.seed,
            steps.join("/"),
            spec.step_duration,
            spec.analysis.min_samples,
            pct(spec.analysis.confidence)
        );
        if !spec.downstream_services.is_empty() {
            let _ = writeln!(
                out,
                "downstream services, healthy, judged too: {}",
                spec.downstream_services.join(", ")
            );
        }
        let candidate_rate = traffic.candidate_error_rate.unwrap_or(traffic.error_rate);
        let _ = writeln!(
            out,
            "traffic: {} requests/s, errors {} → {}, latency median {} ms σ {} × {}{}, \
             a batch every {:?}, tick {:?}{}{}",
            traffic.rate,
            pct(traffic.error_rate),
            pct(candidate_rate),
            traffic.latency_median_ms,
            traffic.latency_sigma,
            traffic.candidate_latency_factor,
            if traffic.regression_from_weight > 0.0 {
                format!(" from {}% on", traffic.regression_from_weight)
            } else {
                String::new()
            },
            simulation.batch_interval,
            simulation.tick,
            traffic.accounts.map_or(String::new(), |a| format!(
                ", {a} accounts of uneven size and health"
            )),
            if traffic.spans_carry_unit {
                ""
            } else {
                ", spans without the bucketing value"
            },
        );
        if let Some(sampling) = &traffic.sampling {
            let _ = writeln!(
                out,
                "sampled: {} of the traces{}, {}",
                pct(sampling.probability),
                if sampling.tail {
                    " without an error, every one with"
                } else {
                    ""
                },
                if sampling.recorded {
                    "thresholds recorded (each span counts for those dropped)"
                } else {
                    "no threshold recorded (each kept span counts once)"
                },
            );
        }
        let p = &self.rolled_back;
        let label = if self.regression {
            "caught (rolled back before 100%)"
        } else {
            "false rollbacks"
        };
        let _ = writeln!(
            out,
            "  {label:<34} {} [95% CI {}, {}]  ({} of {})",
            pct(p.rate),
            pct(p.lower95),
            pct(p.upper95),
            p.count,
            p.of
        );
        let _ = writeln!(
            out,
            "  {:<34} {}  ({} of {})",
            "promoted",
            pct(self.promoted.rate),
            self.promoted.count,
            self.promoted.of
        );
        if self.running > 0 {
            let _ = writeln!(
                out,
                "  {:<34} {}  (after {:?})",
                "still running", self.running, simulation.max_duration
            );
        }
        if let Some(s) = self.seconds_to_promote {
            let _ = writeln!(
                out,
                "  {:<34} median {:.0} s, p90 {:.0} s (the dwells add up to {:.0} s: ×{:.2})",
                "time to promote",
                s.median,
                s.p90,
                self.sum_of_dwells_seconds,
                s.median / self.sum_of_dwells_seconds.max(1e-9)
            );
        }
        if !self.caught_at_weight.is_empty() {
            let at: Vec<String> = self
                .caught_at_weight
                .iter()
                .map(|(w, n)| format!("{w}%: {n}"))
                .collect();
            let _ = writeln!(out, "  {:<34} {}", "rolled back at step", at.join(", "));
        }
        if let Some(s) = self.candidate_spans_before_rollback {
            let _ = writeln!(
                out,
                "  {:<34} median {:.0}, p90 {:.0}",
                "candidate spans before rollback", s.median, s.p90
            );
        }
        if !self.failed_checks.is_empty() {
            let checks: Vec<String> = self
                .failed_checks
                .iter()
                .map(|(name, n)| format!("{name}: {n}"))
                .collect();
            let _ = writeln!(out, "  {:<34} {}", "failed checks", checks.join(", "));
        }
        if self.held_on_sample_ratio > 0 {
            let _ = writeln!(
                out,
                "  {:<34} {}",
                "held on a sample-ratio mismatch", self.held_on_sample_ratio
            );
        }
        out
    }
}
