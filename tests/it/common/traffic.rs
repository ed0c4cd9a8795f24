//! The end-to-end loop the third-party SDK tests share: a traffic script (Python or
//! Node) sends checkout requests to a standalone spangate until the rollout ends,
//! and the rollout must end as the spans say.

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fixture::RolloutFixture;
use super::{ChildGuard, Spangate};

pub const ROLLOUT_NAME: &str = "checkout";
pub const MIN_SAMPLES: u64 = 40;
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(180);
/// A traffic script stops on its own after the round that sees the end.
pub const TRAFFIC_EXIT_DEADLINE: Duration = Duration::from_secs(60);
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A fresh spangate over a folder holding the checkout rollout, in `root`.
pub fn start_checkout(root: &Path) -> Spangate {
    let dir = root.join("rollouts");
    std::fs::create_dir(&dir).expect("create the rollout dir");
    std::fs::write(
        dir.join("checkout.yaml"),
        RolloutFixture::new(ROLLOUT_NAME)
            .analysis(json!({
                "minSamples": MIN_SAMPLES,
                "maxErrorRate": 0.05,
                "maxErrorRateIncrease": 0.02,
                "maxLatencyMs": {"p99": 400},
                "maxLatencyIncrease": 0.5,
            }))
            .yaml(),
    )
    .expect("write the rollout");
    Spangate::start(&dir, &root.join("state"))
}

fn is_terminal(status: &Value) -> bool {
    matches!(
        status["phase"].as_str(),
        Some("Promoted" | "RolledBack" | "Invalid")
    )
}

/// Runs the traffic script `command` (logging to `log`) until the rollout ends and the
/// script exits successfully; returns the rollout's final status.
pub fn run_until_rollout_ends(spangate: &mut Spangate, command: &mut Command, log: &Path) -> Value {
    let mut traffic = ChildGuard::spawn(command, log);
    let logs = |traffic: &ChildGuard, spangate: &Spangate| {
        format!("{}\n{}", traffic.log_tail(), spangate.log_text())
    };

    let deadline = Instant::now() + ROLLOUT_DEADLINE;
    let status = loop {
        // Read before the status: the script exits only after it saw the end, so a
        // status read after its exit shows the end too.
        let traffic_exit = traffic.exited();
        let last = spangate.get(ROLLOUT_NAME)["status"].clone();
        if is_terminal(&last) {
            break last;
        }
        if let Some(exit) = traffic_exit {
            panic!(
                "the traffic script ended ({exit}) before the rollout did; \
                 last status: {last:#}\n{}",
                logs(&traffic, spangate)
            );
        }
        if let Some(exit) = spangate.process.exited() {
            panic!(
                "spangate exited ({exit}) mid-rollout\n{}",
                logs(&traffic, spangate)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not end within {ROLLOUT_DEADLINE:?}; last status: {last:#}\n{}",
            logs(&traffic, spangate)
        );
        sleep(POLL_INTERVAL);
    };

    let deadline = Instant::now() + TRAFFIC_EXIT_DEADLINE;
    let exit = loop {
        if let Some(exit) = traffic.exited() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the traffic script did not stop within {TRAFFIC_EXIT_DEADLINE:?} \
             after the rollout ended\n{}",
            logs(&traffic, spangate)
        );
        sleep(POLL_INTERVAL);
    };
    assert!(
        exit.success(),
        "the traffic script failed ({exit})\n{}",
        logs(&traffic, spangate)
    );
    println!("{}", traffic.log_tail());
    status
}

pub fn verdict_of(status: &Value) -> &Value {
    &status["lastVerdict"]
}

pub fn failed_checks(status: &Value) -> Vec<&str> {
    verdict_of(status)["failedChecks"]
        .as_array()
        .map(|checks| checks.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A promotion was reached on spans that arrived: what the sender says is no proof.
pub fn assert_judged_on_received_spans(status: &Value) {
    let samples = verdict_of(status)["candidate"]["samples"].as_u64();
    assert!(
        samples.is_some_and(|n| n >= MIN_SAMPLES),
        "the last verdict counted {samples:?} spans of variant on, \
         expected at least {MIN_SAMPLES}: {status:#}"
    );
}

/// Promoted to everyone, on spans that arrived, with no check failed.
pub fn assert_promoted(status: &Value) {
    assert_eq!(status["phase"], "Promoted", "{status:#}");
    assert_eq!(status["weight"].as_f64(), Some(100.0), "{status:#}");
    assert!(failed_checks(status).is_empty(), "{status:#}");
    assert_judged_on_received_spans(status);
}

/// A rollback may come before `minSamples` (the judge's intervals hold at any sample size),
/// but only on spans that arrived and on a check whose whole interval lies past its threshold.
pub fn assert_rolled_back(status: &Value) {
    assert_eq!(status["phase"], "RolledBack", "{status:#}");
    assert_eq!(status["weight"].as_f64(), Some(0.0), "{status:#}");
    assert_eq!(verdict_of(status)["outcome"], "Fail", "{status:#}");
    let samples = verdict_of(status)["candidate"]["samples"].as_u64();
    assert!(samples.is_some_and(|n| n > 0), "{status:#}");
    let checks = verdict_of(status)["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["outcome"] == "Fail").collect();
    assert!(!failed.is_empty(), "{status:#}");
    for check in failed {
        let (lower, threshold) = (check["lower"].as_f64(), check["threshold"].as_f64());
        assert!(
            matches!((lower, threshold), (Some(l), Some(t)) if l > t),
            "a failed check whose interval reaches its threshold: {check:#}"
        );
    }
}
