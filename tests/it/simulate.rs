//! `spangate simulate` end to end, and the judge's promise measured with it: a
//! rollout variant exactly at its tolerance is rolled back at most `1 − confidence`
//! of the time, whatever the spec and the traffic.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::BIN;
use serde_json::Value;
use spangate::api::{FeatureRolloutSpec, LatencyQuantiles};
use spangate::simulate::{Random, Simulation, Summary, Traffic};

fn simulate(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("simulate")
        .args(args)
        .output()
        .expect("run spangate simulate")
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("simulate -o json prints JSON")
}

const SHORT: [&str; 8] = [
    "--steps",
    "5,25,100",
    "--step-duration",
    "10s",
    "--rate",
    "400",
    "--rollouts",
    "12",
];

#[test]
fn a_bad_variant_is_rolled_back_at_the_first_step_and_counted() {
    let out = simulate(&[&SHORT[..], &["--candidate-error-rate", "0.3", "-o", "json"]].concat());
    let doc = summary(&out);
    assert_eq!(doc["regression"], true, "{doc:#}");
    assert_eq!(doc["rolledBack"]["count"], 12, "{doc:#}");
    assert_eq!(
        doc["caughtAtWeight"],
        serde_json::json!([[5.0, 12]]),
        "{doc:#}"
    );
    let spans = doc["candidateSpansBeforeRollback"]["median"]
        .as_f64()
        .unwrap();
    assert!(spans > 0.0 && spans < 2_000.0, "{doc:#}");
    assert!(
        doc["failedChecks"][0][0]
            .as_str()
            .is_some_and(|check| check.starts_with("maxErrorRate")),
        "{doc:#}"
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("simulated 12/12 rollouts"), "{progress}");
}

#[test]
fn a_healthy_variant_is_promoted_after_its_dwells_and_the_text_says_so() {
    let doc = summary(&simulate(&[&SHORT[..], &["-o", "json"]].concat()));
    assert_eq!(doc["regression"], false, "{doc:#}");
    assert_eq!(doc["promoted"]["count"], 12, "{doc:#}");
    assert_eq!(doc["sumOfDwellsSeconds"], 20.0, "{doc:#}");
    let median = doc["secondsToPromote"]["median"].as_f64().unwrap();
    assert!((20.0..=24.0).contains(&median), "{doc:#}");

    let out = simulate(&SHORT);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("promoted"), "{text}");
}

#[test]
fn healthy_downstream_services_are_judged_and_still_promote() {
    let args = [&SHORT[..], &["--downstream-services", "2"]].concat();
    let doc = summary(&simulate(&[&args[..], &["-o", "json"]].concat()));
    assert_eq!(doc["promoted"]["count"], 12, "{doc:#}");
    let out = simulate(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("downstream services, healthy, judged too: downstream-1, downstream-2"),
        "{text}"
    );
}

#[test]
fn the_same_seed_gives_the_same_results() {
    let args = [
        &SHORT[..],
        &["--candidate-error-rate", "0.03", "-o", "json"],
    ]
    .concat();
    assert_eq!(summary(&simulate(&args)), summary(&simulate(&args)));
}

#[test]
fn help_shows_each_example_on_its_own_line() {
    let out = simulate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for example in [
        "\n  spangate simulate rollout.yaml --rollouts 10000\n",
        "\n  spangate simulate rollout.yaml --candidate-error-rate 0.03\n",
    ] {
        assert!(
            help.contains(example),
            "{example:?} not on its own line in:\n{help}"
        );
    }
}

#[test]
fn traffic_that_cannot_be_simulated_is_refused_with_the_reason() {
    for (args, reason) in [
        (&["--error-rate", "2"][..], "--error-rate is 2"),
        (&["--rate", "0"], "--rate must be a positive number"),
        (&["--steps", "50,10"], "cannot be simulated"),
    ] {
        let out = simulate(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

/// One random spec and traffic whose rollout variant sits exactly at one check's
/// tolerance (errors, or p99 latency).
fn at_tolerance(random: &mut Random, seed: u64) -> Simulation {
    let ladder = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0];
    let mut steps: Vec<f64> = ladder
        .iter()
        .copied()
        .filter(|_| random.uniform() < 0.5)
        .collect();
    if steps.is_empty() {
        steps.push(10.0);
    }
    steps.push(100.0);
    let confidence = [0.8, 0.9, 0.95][(random.uniform() * 3.0) as usize];
    let increase = 0.005 + random.uniform() * 0.025;
    let latency_increase = 0.1 + random.uniform() * 0.4;
    let min_samples = [50, 100, 200][(random.uniform() * 3.0) as usize];
    let spec: FeatureRolloutSpec = serde_json::from_value(serde_json::json!({
        "flag": {"key": "f", "variants": {"off": false, "on": true},
                 "defaultVariant": "off", "rolloutVariant": "on"},
        "service": "checkout",
        "steps": steps,
        "stepDuration": "10s",
        "analysis": {
            "confidence": confidence,
            "minSamples": min_samples,
            "maxErrorRateIncrease": increase,
            "maxLatencyIncrease": latency_increase,
            "maxLatencyMs": LatencyQuantiles { p99: Some(5_000.0), ..LatencyQuantiles::default() },
        }
    }))
    .unwrap();
    let error_rate = 0.002 + random.uniform() * 0.03;
    let errors_at_tolerance = random.uniform() < 0.5;
    Simulation {
        spec,
        traffic: Traffic {
            rate: 100.0 + random.uniform() * 300.0,
            error_rate,
            candidate_error_rate: errors_at_tolerance.then_some(error_rate + increase),
            candidate_latency_factor: if errors_at_tolerance {
                1.0
            } else {
                1.0 + latency_increase
            },
            ..Traffic::default()
        },
        batch_interval: Duration::from_secs(1),
        tick: Duration::from_secs(1),
        rollouts: 40,
        seed,
        max_duration: Duration::from_secs(600),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Wilson's score interval's lower end for `count` of `of` at z = 2.576 (99%).
fn lower99(count: u64, of: u64) -> f64 {
    let (n, p, z) = (of as f64, count as f64 / of as f64, 2.576_f64);
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z * z / n)).max(0.0)
}

#[test]
fn at_the_tolerance_rollbacks_stay_within_the_error_budget_across_random_specs() {
    let mut random = Random::new(20_261_130);
    for case in 0..5 {
        let simulation = at_tolerance(&mut random, 1_000 * case);
        let runs = spangate::simulate::run(&simulation, &|_| {}).unwrap();
        let summary = Summary::of(&simulation, &runs);
        let budget = 1.0 - simulation.spec.analysis.confidence;
        let rolled_back = summary.rolled_back;
        assert!(
            lower99(rolled_back.count, rolled_back.of) <= budget,
            "case {case}: {} of {} rolled back, more than the budget {budget} allows\n\
             spec {:?}\ntraffic {:?}",
            rolled_back.count,
            rolled_back.of,
            simulation.spec.analysis,
            simulation.traffic
        );
    }
}
