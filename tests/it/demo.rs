//! `spangate demo` does what its `--help` says: the regression scenario is rolled
//! back by itself after stepping up, the healthy one is promoted, and the exit code
//! says whether the rollout ended as the scenario should.

use std::process::Command;

use crate::common::{BIN, scrub_env};

fn demo(scenario: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = scrub_env(&mut Command::new(BIN))
        .args([
            "demo",
            "--scenario",
            scenario,
            "--deadline",
            "150s",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run spangate demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the demo claims is also what its state folder says.
    let state = crate::common::get(dir.path(), &dir.path().join(".spangate"), "new-checkout");
    (
        out.status.success(),
        format!("{text}\nfinal status: {:#}", state["status"]),
    )
}

#[test]
fn the_regression_is_rolled_back_after_stepping_up() {
    let (ok, text) = demo("regression");
    assert!(ok, "{text}");
    assert!(text.contains("▶ StepAdvanced"), "{text}");
    assert!(text.contains("▶ RolledBack"), "{text}");
    assert!(text.contains("failed checks"), "{text}");
    assert!(text.contains("\"phase\": \"RolledBack\""), "{text}");
}

#[test]
fn the_healthy_variant_is_promoted() {
    let (ok, text) = demo("healthy");
    assert!(ok, "{text}");
    assert!(text.contains("▶ Promoted"), "{text}");
    assert!(text.contains("\"phase\": \"Promoted\""), "{text}");
}
