//! End to end with third-party SDKs: the OpenFeature Python SDK (OFREP provider)
//! asks a standalone spangate for the flag, the OpenTelemetry Python SDK sends it
//! the spans (OTLP gRPC or HTTP), and the rollout must end as those spans say.
//! The spans name the variant either in attributes the script sets, or only in the
//! `feature_flag.evaluation` span events of the OpenFeature OpenTelemetry hook
//! (PyPI `openfeature-hooks-opentelemetry`), which spangate must read as well.
//! The OpenTelemetry Python logs SDK sends flag evaluations as log events, and
//! spangate must count every one.
//!
//! They need a Python with those SDKs, named by `SPANGATE_TEST_PYTHON`;
//! `./scripts/test` installs one and runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Instant;

use crate::common::traffic::{
    POLL_INTERVAL, ROLLOUT_NAME, TRAFFIC_EXIT_DEADLINE, assert_promoted, assert_rolled_back,
    failed_checks, run_until_rollout_ends, start_checkout, verdict_of,
};
use crate::common::{ChildGuard, Spangate, scrub_env};
use serde_json::Value;

fn test_python() -> PathBuf {
    let python = match std::env::var_os("SPANGATE_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "SPANGATE_TEST_PYTHON is not set. These tests drive the Python OpenTelemetry and \
             OpenFeature SDKs: run ./scripts/test, which installs them and sets it"
        ),
    };
    assert!(
        python.exists(),
        "SPANGATE_TEST_PYTHON={} does not exist: run ./scripts/test",
        python.display()
    );
    python
}

/// How the traffic script's spans name the variant (its `--flag-via`).
#[derive(Clone, Copy)]
enum FlagVia {
    /// `feature_flag.*` attributes the script sets on each span.
    Attributes,
    /// Only the `feature_flag.evaluation` events of the OpenFeature OpenTelemetry hook.
    Hook,
}

/// Runs the traffic script for `scenario` against a fresh spangate until the rollout
/// ends, and returns its final status.
fn run_scenario(scenario: &str, exporter: &str, flag_via: FlagVia) -> Value {
    let python = test_python();
    let root = tempfile::tempdir().expect("create a temp dir");
    let mut spangate = start_checkout(root.path());
    let otlp = match exporter {
        "grpc" => spangate.addrs.otlp_grpc,
        _ => spangate.addrs.otlp_http,
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/checkout_traffic.py");
    let mut command = Command::new(&python);
    command
        // Isolated: no user site-packages or PYTHON* settings of the machine.
        .arg("-I")
        .arg(script)
        .args([scenario, exporter])
        .arg(format!("http://{}", spangate.addrs.ofrep))
        .arg(format!("http://{otlp}"))
        .args([
            "--flag-via",
            match flag_via {
                FlagVia::Attributes => "attributes",
                FlagVia::Hook => "hook",
            },
        ])
        .args(["--deadline-seconds", "150", "--"])
        .args(spangate.get_command(ROLLOUT_NAME));
    run_until_rollout_ends(
        &mut spangate,
        scrub_env(&mut command),
        &root.path().join("traffic.log"),
    )
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn healthy_variant_sent_over_grpc_is_promoted() {
    let status = run_scenario("healthy", "grpc", FlagVia::Attributes);
    assert_promoted(&status);
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn erroring_variant_sent_over_http_is_rolled_back_on_error_rate() {
    let status = run_scenario("errors", "http", FlagVia::Attributes);
    assert_rolled_back(&status);
    assert!(
        failed_checks(&status).contains(&"maxErrorRate"),
        "{status:#}"
    );
    let exemplars = verdict_of(&status)["exemplarTraceIds"].as_array();
    assert!(
        exemplars.is_some_and(|ids| !ids.is_empty()
            && ids
                .iter()
                .all(|id| id.as_str().is_some_and(|id| id.len() == 32))),
        "expected the trace IDs of failing spans as exemplars: {status:#}"
    );
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn slow_variant_sent_over_grpc_is_rolled_back_on_latency() {
    let status = run_scenario("latency", "grpc", FlagVia::Attributes);
    assert_rolled_back(&status);
    let checks = failed_checks(&status);
    assert!(
        checks.iter().any(|check| check.starts_with("maxLatency")),
        "expected a failed latency check, got {checks:?}: {status:#}"
    );
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn healthy_variant_seen_only_in_hook_span_events_is_promoted() {
    // Promoted on spans that name the healthy variant only in the hook's events.
    let status = run_scenario("healthy", "http", FlagVia::Hook);
    assert_promoted(&status);
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn erroring_variant_seen_only_in_hook_span_events_is_rolled_back() {
    let status = run_scenario("errors", "grpc", FlagVia::Hook);
    assert_rolled_back(&status);
    assert!(
        failed_checks(&status).contains(&"maxErrorRate"),
        "spans naming the erroring variant only in the hook's events must fail \
         maxErrorRate: {status:#}"
    );
}

/// Runs the log events script against a fresh spangate and checks that spangate
/// read every evaluation it emitted inside a span, and counted the one outside.
fn log_events_are_counted(exporter: &str) {
    const EVENTS: u64 = 12;
    let python = test_python();
    let root = tempfile::tempdir().expect("create a temp dir");
    let dir = root.path().join("rollouts");
    std::fs::create_dir(&dir).expect("create the rollout dir");
    let spangate = Spangate::start(&dir, &root.path().join("state"));
    let otlp = match exporter {
        "grpc" => spangate.addrs.otlp_grpc,
        _ => spangate.addrs.otlp_http,
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flag_evaluation_logs.py");
    let mut command = Command::new(&python);
    command
        .arg("-I")
        .arg(script)
        .arg(exporter)
        .arg(format!("http://{otlp}"))
        .arg(EVENTS.to_string());
    let mut events = ChildGuard::spawn(scrub_env(&mut command), &root.path().join("events.log"));
    let deadline = Instant::now() + TRAFFIC_EXIT_DEADLINE;
    let exit = loop {
        if let Some(exit) = events.exited() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the log events script did not end within {TRAFFIC_EXIT_DEADLINE:?}\n{}",
            events.log_tail()
        );
        sleep(POLL_INTERVAL);
    };
    assert!(
        exit.success(),
        "the log events script failed ({exit})\n{}\n{}",
        events.log_tail(),
        spangate.log_text()
    );
    // The exporter was answered, so spangate counted every record before it answered.
    let metrics = spangate.metrics();
    for (name, value) in [
        ("spangate_otlp_log_evaluations_read_total", EVENTS),
        ("spangate_otlp_log_evaluations_unattributed_total", 1),
        (
            "spangate_otlp_log_records_total{outcome=\"accepted\"}",
            EVENTS + 1,
        ),
        ("spangate_otlp_log_records_total{outcome=\"rejected\"}", 0),
    ] {
        assert_eq!(
            crate::common::metric(&metrics, name),
            Some(value as f64),
            "{name}\n{metrics}"
        );
    }
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn flag_evaluation_log_events_sent_over_grpc_are_counted() {
    log_events_are_counted("grpc");
}

#[test]
#[ignore = "needs the Python SDKs: run ./scripts/test"]
fn flag_evaluation_log_events_sent_over_http_are_counted() {
    log_events_are_counted("http");
}
