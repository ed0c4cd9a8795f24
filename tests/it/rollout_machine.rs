//! The rollout state machine, transition by transition.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use spangate::analysis::WindowEpoch;
use spangate::api::{
    FeatureRolloutSpec, FeatureRolloutStatus, Hold, Phase, SampleRatioEvidence, VariantEvidence,
    Verdict, VerdictOutcome,
};
use spangate::controller::SegmentCatalog;
use spangate::rollout::{
    Action, CompiledRollout, Decision, EventType, HISTORY_LIMIT, Input, InvalidSpec, Request,
    decide, reject,
};
use spangate::store::RolloutKey;

use crate::common::fixture::RolloutFixture;

/// A rollout judged on errors with few samples, dwelling 30s at each step.
fn rollout() -> RolloutFixture {
    RolloutFixture::new("checkout")
        .bucket_by(None)
        .steps([1, 5, 25, 100])
        .step_duration("30s")
        .analysis(json!({"minSamples": 10, "maxErrorRate": 0.05}))
}

fn t0() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn verdict(outcome: VerdictOutcome) -> Verdict {
    Verdict {
        outcome,
        message: format!("{outcome:?} for the test"),
        failed_checks: if outcome == VerdictOutcome::Fail {
            vec!["maxErrorRate".into()]
        } else {
            vec![]
        },
        confidence: 0.99,
        checks: vec![],
        sample_ratio: None,
        baseline: VariantEvidence {
            variant: "off".into(),
            samples: 10,
            ..Default::default()
        },
        candidate: VariantEvidence {
            variant: "on".into(),
            samples: 10,
            ..Default::default()
        },
        revision: None,
        exemplar_trace_ids: vec![],
        exemplar_spans: vec![],
    }
}

/// `spec` compiled as the controller compiles it, with no segments to match.
fn compile(spec: &FeatureRolloutSpec) -> Result<CompiledRollout, InvalidSpec> {
    SegmentCatalog::default().compile(
        &RolloutKey::new("default", "checkout"),
        Arc::new(spec.clone()),
    )
}

fn compiled(spec: &FeatureRolloutSpec) -> CompiledRollout {
    compile(spec).unwrap_or_else(|invalid| panic!("does not compile: {invalid}"))
}

/// What the controller does with a spec that does not compile: rejects it, saying
/// what `invalid` found.
fn rejected(invalid: &InvalidSpec, status: &FeatureRolloutStatus, now: Timestamp) -> Decision {
    reject(status, Some(1), &format!("invalid spec: {invalid}"), now)
}

fn step(
    spec: &FeatureRolloutSpec,
    status: &FeatureRolloutStatus,
    verdict: Option<&Verdict>,
    now: Timestamp,
) -> Decision {
    decide(Input {
        rollout: &compiled(spec),
        generation: Some(1),
        status,
        verdict,
        now,
        request: None,
    })
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(*reason),
            Action::RestartWindow(_) => None,
        })
        .collect()
}

fn condition<'a>(
    status: &'a FeatureRolloutStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn started(spec: &FeatureRolloutSpec) -> FeatureRolloutStatus {
    step(spec, &FeatureRolloutStatus::default(), None, t0()).status
}

#[test]
fn first_visit_starts_at_the_first_step_with_conditions() {
    let spec = rollout().spec();
    let d = step(&spec, &FeatureRolloutStatus::default(), None, t0());
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.current_step, Some(0));
    assert_eq!(d.status.step.as_deref(), Some("1/4"));
    assert_eq!(d.status.weight, 1.0);
    // Nothing was split before, so no earlier weight's units can turn up.
    assert_eq!(d.status.previous_weight, None);
    assert_eq!(d.status.observed_generation, Some(1));
    assert_eq!(reasons(&d), ["Started"]);
    assert!(d.actions.contains(&Action::RestartWindow(WindowEpoch(1))));
    assert_eq!(d.status.epoch, 1);
    assert_eq!(condition(&d.status, "Ready").status, "True");
    assert_eq!(condition(&d.status, "Ready").observed_generation, Some(1));
    assert_eq!(condition(&d.status, "Healthy").status, "Unknown");
    assert_eq!(d.wake_at, Some(at(30)));
}

#[test]
fn a_pass_advances_only_after_the_dwell() {
    let spec = rollout().spec();
    let s = started(&spec);
    let pass = verdict(VerdictOutcome::Pass);
    let early = step(&spec, &s, Some(&pass), at(10));
    assert_eq!(early.status.current_step, Some(0));
    assert!(reasons(&early).is_empty());
    assert_eq!(early.wake_at, Some(at(30)));
    assert_eq!(early.status.verdict, Some(VerdictOutcome::Pass));

    let due = step(&spec, &early.status, Some(&pass), at(30));
    assert_eq!(due.status.current_step, Some(1));
    assert_eq!(due.status.weight, 5.0);
    // Spans evaluated at 1% may still arrive: the sample-ratio check allows for them.
    assert_eq!(due.status.previous_weight, Some(1.0));
    assert_eq!(due.status.step_started_at.as_ref().unwrap().0, at(30));
    assert_eq!(reasons(&due), ["StepAdvanced"]);
    assert!(due.actions.contains(&Action::RestartWindow(WindowEpoch(2))));
    assert_eq!(due.status.epoch, 2);
    // What step 1 showed is kept for the error checks of the steps after it.
    assert_eq!(due.status.completed_steps.len(), 1);
    assert_eq!(due.status.completed_steps[0].candidate.samples, 10);
    assert_eq!(condition(&due.status, "Healthy").status, "True");
}

#[test]
fn inconclusive_and_no_verdict_hold_even_after_the_dwell() {
    let spec = rollout().spec();
    let s = started(&spec);
    let held = step(
        &spec,
        &s,
        Some(&verdict(VerdictOutcome::Inconclusive)),
        at(300),
    );
    assert_eq!(
        (held.status.phase, held.status.current_step),
        (Phase::Progressing, Some(0))
    );
    assert!(held.actions.is_empty());
    let held = step(&spec, &s, None, at(300));
    assert_eq!(
        (held.status.phase, held.status.current_step),
        (Phase::Progressing, Some(0))
    );
}

#[test]
fn a_fail_rolls_back_to_weight_zero_with_a_warning_and_evidence() {
    let spec = rollout().spec();
    let s = started(&spec);
    let d = step(&spec, &s, Some(&verdict(VerdictOutcome::Fail)), at(5));
    assert_eq!(d.status.phase, Phase::RolledBack);
    assert_eq!(d.status.weight, 0.0);
    assert!(matches!(
        d.actions[0],
        Action::Event {
            type_: EventType::Warning,
            reason: "RolledBack",
            ..
        }
    ));
    let record = d.status.last_verdict.as_ref().unwrap();
    assert_eq!(record.verdict.failed_checks, ["maxErrorRate"]);
    assert_eq!(condition(&d.status, "Ready").status, "False");
    assert_eq!(condition(&d.status, "Healthy").status, "False");
    // A rolled-back rollout stays rolled back, whatever comes next.
    let later = step(
        &spec,
        &d.status,
        Some(&verdict(VerdictOutcome::Pass)),
        at(500),
    );
    assert_eq!(later.status.phase, Phase::RolledBack);
    assert!(later.actions.is_empty());
}

#[test]
fn reaching_a_100_percent_step_promotes() {
    let spec = rollout().spec();
    let pass = verdict(VerdictOutcome::Pass);
    let mut s = started(&spec);
    for i in 1..=3 {
        s = step(&spec, &s, Some(&pass), at(30 * i)).status;
    }
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(s.weight, 100.0);
    assert_eq!(s.history.last().unwrap().reason, "Promoted");
    assert_eq!(condition(&s, "Ready").status, "True");
}

#[test]
fn a_final_step_below_100_holds_and_is_still_judged() {
    let mut spec = rollout().spec();
    spec.steps = vec![10.0, 20.0];
    let pass = verdict(VerdictOutcome::Pass);
    let mut s = started(&spec);
    s = step(&spec, &s, Some(&pass), at(30)).status;
    let held = step(&spec, &s, Some(&pass), at(90));
    assert_eq!(
        (held.status.phase, held.status.weight),
        (Phase::Progressing, 20.0)
    );
    assert!(held.status.message.as_ref().unwrap().contains("final step"));
    let failed = step(
        &spec,
        &held.status,
        Some(&verdict(VerdictOutcome::Fail)),
        at(120),
    );
    assert_eq!(failed.status.phase, Phase::RolledBack);
}

#[test]
fn pause_holds_and_resume_restarts_the_dwell() {
    let mut spec = rollout().spec();
    let s = started(&spec);
    spec.paused = true;
    let paused = step(&spec, &s, Some(&verdict(VerdictOutcome::Fail)), at(40));
    assert_eq!(
        (paused.status.phase, paused.status.weight),
        (Phase::Paused, 1.0)
    );
    assert_eq!(reasons(&paused), ["Paused"]);
    // A failing verdict while paused changes nothing.
    let still = step(
        &spec,
        &paused.status,
        Some(&verdict(VerdictOutcome::Fail)),
        at(50),
    );
    assert_eq!(still.status.phase, Phase::Paused);
    assert!(still.actions.is_empty());

    spec.paused = false;
    let resumed = step(
        &spec,
        &still.status,
        Some(&verdict(VerdictOutcome::Pass)),
        at(100),
    );
    assert_eq!(
        (resumed.status.phase, resumed.status.current_step),
        (Phase::Progressing, Some(0))
    );
    assert_eq!(reasons(&resumed), ["Resumed"]);
    assert_eq!(resumed.wake_at, Some(at(130)));
}

#[test]
fn paused_from_the_start_hands_nothing_out() {
    let mut spec = rollout().spec();
    spec.paused = true;
    let d = step(&spec, &FeatureRolloutStatus::default(), None, t0());
    assert_eq!(
        (d.status.phase, d.status.weight, d.status.current_step),
        (Phase::Paused, 0.0, None)
    );
    spec.paused = false;
    let d = step(&spec, &d.status, None, at(1));
    assert_eq!((d.status.phase, d.status.weight), (Phase::Progressing, 1.0));
}

#[test]
fn a_changed_flag_or_revision_restarts_from_the_first_step() {
    let mut spec = rollout().spec();
    let pass = verdict(VerdictOutcome::Pass);
    let s = step(&spec, &started(&spec), Some(&pass), at(30)).status;
    assert_eq!(s.current_step, Some(1));
    spec.revision = Some("9e8d7c6".into());
    let d = decide(Input {
        rollout: &compiled(&spec),
        generation: Some(2),
        status: &s,
        verdict: None,
        now: at(31),
        request: None,
    });
    assert_eq!((d.status.current_step, d.status.weight), (Some(0), 1.0));
    assert_eq!(reasons(&d), ["Restarted"]);
    assert_eq!(d.status.observed_generation, Some(2));

    let mut s = d.status;
    s.phase = Phase::RolledBack;
    spec.flag
        .variants
        .insert("on".into(), serde_json::json!("v2"));
    let d = step(&spec, &s, None, at(40));
    assert_eq!(
        d.status.phase,
        Phase::Progressing,
        "a new flag retries a rolled-back rollout"
    );
}

#[test]
fn changed_downstream_services_restart_from_the_first_step() {
    let mut spec = rollout().spec();
    let pass = verdict(VerdictOutcome::Pass);
    let s = step(&spec, &started(&spec), Some(&pass), at(30)).status;
    assert_eq!(s.current_step, Some(1));
    spec.downstream_services = vec!["payments".into()];
    let d = step(&spec, &s, None, at(31));
    assert_eq!((d.status.current_step, d.status.weight), (Some(0), 1.0));
    assert_eq!(reasons(&d), ["Restarted"]);
}

#[test]
fn other_spec_changes_keep_the_step() {
    let mut spec = rollout().spec();
    let pass = verdict(VerdictOutcome::Pass);
    let s = step(&spec, &started(&spec), Some(&pass), at(30)).status;
    assert_eq!((s.current_step, s.weight), (Some(1), 5.0));
    spec.analysis.max_error_rate = Some(0.1);
    spec.steps = vec![2.0, 5.0, 50.0];
    let d = decide(Input {
        rollout: &compiled(&spec),
        generation: Some(2),
        status: &s,
        verdict: None,
        now: at(31),
        request: None,
    });
    assert_eq!((d.status.current_step, d.status.weight), (Some(1), 5.0));
    assert!(d.actions.is_empty());
    assert_eq!(condition(&d.status, "Ready").observed_generation, Some(2));

    // The same weight at another index: followed there, the dwell kept.
    spec.steps = vec![5.0, 100.0];
    let d = step(&spec, &s, None, at(32));
    assert_eq!((d.status.current_step, d.status.weight), (Some(0), 5.0));
    assert_eq!(d.status.step_started_at, s.step_started_at);
    assert!(d.actions.is_empty());
}

#[test]
fn edited_steps_land_at_or_below_the_weight_and_need_a_pass_to_go_on() {
    let mut spec = rollout().spec();
    let pass = verdict(VerdictOutcome::Pass);
    let s = step(&spec, &started(&spec), Some(&pass), at(30)).status;
    let s = step(&spec, &s, Some(&pass), at(60)).status;
    assert_eq!((s.current_step, s.weight), (Some(2), 25.0));
    for (steps, landing) in [
        (vec![10.0, 100.0], (0, 10.0)),
        (vec![10.0, 25.0, 100.0], (1, 25.0)),
        (vec![5.0, 100.0], (0, 5.0)),
        (vec![2.0, 10.0, 50.0], (1, 10.0)),
        // Every new step above the weight: the first step, as a new rollout starts.
        (vec![50.0, 100.0], (0, 50.0)),
    ] {
        spec.steps = steps.clone();
        let edited = step(&spec, &s, None, at(61));
        let d = &edited.status;
        assert_eq!(
            (d.current_step, d.weight),
            (Some(landing.0), landing.1),
            "{steps:?}"
        );
        assert_eq!(d.phase, Phase::Progressing, "{steps:?}");
        if landing.1 != 25.0 {
            assert_eq!(d.previous_weight, Some(25.0), "{steps:?}");
        }
        // With no spans there is no Pass, so the edit alone never promotes.
        let later = step(&spec, d, None, at(600));
        assert_eq!(later.status.weight, landing.1, "{steps:?}");
        assert_eq!(later.status.phase, Phase::Progressing, "{steps:?}");
        if landing.1 != 25.0 {
            assert_eq!(reasons(&edited), ["StepsChanged"], "{steps:?}");
            assert_eq!(
                d.step_started_at.as_ref().map(|t| t.0),
                Some(at(61)),
                "{steps:?}"
            );
        }
    }
}

#[test]
fn invalid_specs_say_exactly_what_is_wrong() {
    type Edit = Box<dyn Fn(&mut FeatureRolloutSpec)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "rolloutVariant \"onn\" is not one of the variants",
            Box::new(|s| s.flag.rollout_variant = "onn".into()),
        ),
        (
            "defaultVariant \"of\" is not one of the variants",
            Box::new(|s| s.flag.default_variant = "of".into()),
        ),
        (
            "steps must increase, but steps[2] (5) is not above steps[1] (5)",
            Box::new(|s| s.steps = vec![1.0, 5.0, 5.0]),
        ),
        (
            "steps[1] is 150; every step must be more than 0 and at most 100",
            Box::new(|s| s.steps = vec![1.0, 150.0]),
        ),
        (
            "rolloutVariant \"on\" needs spec.steps",
            Box::new(|s| s.steps.clear()),
        ),
        (
            "rolloutVariant is missing; the steps hand it out",
            Box::new(|s| s.flag.rollout_variant.clear()),
        ),
        ("spec.service is empty", Box::new(|s| s.service.clear())),
        (
            "stepDuration: duration \"-5s\" is negative",
            Box::new(|s| s.step_duration = "-5s".into()),
        ),
        (
            "maxErrorRate is 1.5; it is a fraction between 0 and 1",
            Box::new(|s| s.analysis.max_error_rate = Some(1.5)),
        ),
        (
            "maxErrorRateIncrease is -0.1",
            Box::new(|s| s.analysis.max_error_rate_increase = Some(-0.1)),
        ),
        (
            "maxLatencyIncrease is -1",
            Box::new(|s| s.analysis.max_latency_increase = Some(-1.0)),
        ),
        (
            "steps[0] is 0.125; steps may have at most two decimals",
            Box::new(|s| s.steps = vec![0.125]),
        ),
        ("minSamples is 0", Box::new(|s| s.analysis.min_samples = 0)),
        (
            "spec.downstreamServices names \"payments\" twice",
            Box::new(|s| s.downstream_services = vec!["payments".into(), "payments".into()]),
        ),
        (
            "spec.downstreamServices[0] is spec.service (\"checkout\"), whose spans are judged already",
            Box::new(|s| s.downstream_services = vec!["checkout".into()]),
        ),
        (
            "spec.downstreamServices[1] is empty",
            Box::new(|s| s.downstream_services = vec!["payments".into(), " ".into()]),
        ),
        (
            "spec.downstreamServices names 17 services; at most 16 are judged",
            Box::new(|s| {
                s.downstream_services = (0..17).map(|i| format!("service-{i}")).collect();
            }),
        ),
    ];
    for (expected, edit) in cases {
        let mut spec = rollout().spec();
        edit(&mut spec);
        let invalid = compile(&spec).expect_err(expected);
        assert!(
            invalid.to_string().contains(expected),
            "{invalid} lacks {expected:?}"
        );
        let d = rejected(&invalid, &FeatureRolloutStatus::default(), t0());
        assert_eq!(d.status.phase, Phase::Invalid, "{expected}");
        assert_eq!(d.status.weight, 0.0);
        let message = d.status.message.clone().unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert_eq!(reasons(&d), ["InvalidSpec"]);
        let ready = condition(&d.status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        // The same invalid spec again: no new event.
        let again = rejected(&invalid, &d.status, at(5));
        assert!(again.actions.is_empty());
    }
}

#[test]
fn fixing_an_invalid_spec_starts_the_rollout() {
    let mut spec = rollout().spec();
    spec.steps = vec![50.0, 10.0];
    let invalid = compile(&spec).expect_err("steps must increase");
    let bad = rejected(&invalid, &FeatureRolloutStatus::default(), t0());
    assert_eq!(bad.status.phase, Phase::Invalid);
    spec.steps = vec![10.0, 50.0];
    let fixed = step(&spec, &bad.status, None, at(1));
    assert_eq!(
        (fixed.status.phase, fixed.status.weight),
        (Phase::Progressing, 10.0)
    );
}

#[test]
fn conditions_keep_their_transition_time_until_they_change() {
    let spec = rollout().spec();
    let s = started(&spec);
    let later = step(
        &spec,
        &s,
        Some(&verdict(VerdictOutcome::Inconclusive)),
        at(20),
    )
    .status;
    assert_eq!(condition(&later, "Ready").last_transition_time.0, t0());
    let failed = step(&spec, &later, Some(&verdict(VerdictOutcome::Fail)), at(25)).status;
    assert_eq!(condition(&failed, "Ready").last_transition_time.0, at(25));
}

#[test]
fn history_is_bounded() {
    let mut spec = rollout().spec();
    let mut s = started(&spec);
    for i in 0..30 {
        spec.paused = i % 2 == 0;
        s = step(&spec, &s, None, at(i)).status;
    }
    assert_eq!(s.history.len(), HISTORY_LIMIT);
}

fn requested(
    spec: &FeatureRolloutSpec,
    status: &FeatureRolloutStatus,
    request: Request,
    now: Timestamp,
) -> Decision {
    decide(Input {
        rollout: &compiled(spec),
        generation: Some(1),
        status,
        verdict: None,
        now,
        request: Some(request),
    })
}

#[test]
fn promote_skips_the_remaining_steps_once() {
    let spec = rollout().spec();
    let s = started(&spec);
    let d = requested(&spec, &s, Request::Promote, at(5));
    assert_eq!(
        (d.status.phase, d.status.current_step, d.status.weight),
        (Phase::Promoted, Some(3), 100.0)
    );
    assert_eq!(reasons(&d), ["Promoted"]);
    assert_eq!(d.status.step.as_deref(), Some("4/4"));
    assert!(d.actions.contains(&Action::RestartWindow(WindowEpoch(2))));
    assert_eq!(
        d.status.message.as_deref(),
        Some("promoted by request at step 1/4 (1%); every user gets the rollout variant")
    );
    assert_eq!(condition(&d.status, "Ready").reason, "Promoted");
    assert_eq!(d.wake_at, None);

    let again = requested(&spec, &d.status, Request::Promote, at(6));
    assert_eq!(again.status, d.status, "a repeated request changes nothing");
    assert!(again.actions.is_empty());
}

#[test]
fn promote_also_ends_a_pause() {
    let mut spec = rollout().spec();
    spec.paused = true;
    let paused = started(&spec);
    assert_eq!(paused.phase, Phase::Paused);
    let d = requested(&spec, &paused, Request::Promote, at(5));
    assert_eq!((d.status.phase, d.status.weight), (Phase::Promoted, 100.0));
    // Still paused in the spec, and still promoted on the next visit.
    let next = step(&spec, &d.status, None, at(6));
    assert_eq!(next.status.phase, Phase::Promoted);
    assert!(next.actions.is_empty());
}

#[test]
fn abort_rolls_back_now_with_a_warning() {
    let spec = rollout().spec();
    let s = started(&spec);
    let d = requested(&spec, &s, Request::Abort, at(5));
    assert_eq!(
        (d.status.phase, d.status.current_step, d.status.weight),
        (Phase::RolledBack, Some(0), 0.0)
    );
    assert!(matches!(
        d.actions.as_slice(),
        [Action::Event { type_: EventType::Warning, reason: "Aborted", note }]
            if note == "aborted by request at step 1/4 (1%); every user gets the default variant again"
    ));
    assert_eq!(condition(&d.status, "Ready").status, "False");

    let again = requested(&spec, &d.status, Request::Abort, at(6));
    assert_eq!(again.status, d.status);
    assert!(again.actions.is_empty());

    // A promoted rollout can be rolled back too.
    let promoted = requested(&spec, &s, Request::Promote, at(5)).status;
    let d = requested(&spec, &promoted, Request::Abort, at(7));
    assert_eq!((d.status.phase, d.status.weight), (Phase::RolledBack, 0.0));
    assert_eq!(reasons(&d), ["Aborted"]);
}

/// An entitlement flag: variants and targeting, no steps.
fn entitlement() -> RolloutFixture {
    RolloutFixture::new("plans")
        .flag("plan-features")
        .variants(
            json!({"basic": {"seats": 5}, "pro": {"seats": 50}, "elite": {"seats": 500}}),
            "basic",
        )
        .without_steps()
        .targeting(json!({"rules": [
            {"clauses": [{"attribute": "plan", "op": "in", "values": ["elite"]}], "variant": "elite"},
        ]}))
}

#[test]
fn a_flag_without_steps_is_served_and_never_moves() {
    let spec = entitlement().spec();
    let d = step(&spec, &FeatureRolloutStatus::default(), None, t0());
    assert_eq!(d.status.phase, Phase::Serving);
    assert_eq!((d.status.current_step, d.status.weight), (None, 0.0));
    assert_eq!(reasons(&d), ["Serving"]);
    assert_eq!(d.wake_at, None);
    let ready = condition(&d.status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Serving")
    );
    // Time passing, a verdict, pausing: nothing moves a served flag.
    let later = step(
        &spec,
        &d.status,
        Some(&verdict(VerdictOutcome::Fail)),
        at(3600),
    );
    assert!(later.actions.is_empty());
    assert_eq!(later.status.phase, Phase::Serving);
    let mut paused = spec.clone();
    paused.paused = true;
    assert!(step(&paused, &d.status, None, at(7200)).actions.is_empty());
}

#[test]
fn steps_added_to_a_served_flag_start_a_rollout() {
    let served = step(
        &entitlement().spec(),
        &FeatureRolloutStatus::default(),
        None,
        t0(),
    );
    let mut rollout = entitlement().spec();
    rollout.flag.rollout_variant = "pro".into();
    rollout.service = "billing".into();
    rollout.steps = vec![10.0, 100.0];
    rollout.analysis.max_error_rate = Some(0.05);
    let d = step(&rollout, &served.status, None, at(60));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!((d.status.current_step, d.status.weight), (Some(0), 10.0));
    assert_eq!(reasons(&d), ["Started"]);
    // And removing them again just serves the flag.
    let back = step(&entitlement().spec(), &d.status, None, at(120));
    assert_eq!(back.status.phase, Phase::Serving);
    assert_eq!((back.status.current_step, back.status.weight), (None, 0.0));
}

fn mismatched() -> Verdict {
    Verdict {
        message: "SampleRatioMismatch: 50 of 100 units got variant on".into(),
        sample_ratio: Some(SampleRatioEvidence {
            units: 100,
            candidate_units: 50,
            expected_share: 0.01,
            expected_share_from: None,
            e_value: 1e9,
            alpha: 1e-3,
            mismatch: true,
            skipped: None,
        }),
        ..verdict(VerdictOutcome::Inconclusive)
    }
}

#[test]
fn a_sample_ratio_mismatch_holds_with_a_condition_and_one_event_but_a_fail_still_rolls_back() {
    let spec = rollout().spec();
    let s = started(&spec);
    let held = step(&spec, &s, Some(&mismatched()), at(40));
    assert_eq!(
        (held.status.phase, held.status.current_step),
        (Phase::Progressing, Some(0))
    );
    assert_eq!(held.status.hold, Some(Hold::SampleRatioMismatch));
    assert_eq!(reasons(&held), ["SampleRatioMismatch"]);
    let ready = condition(&held.status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SampleRatioMismatch")
    );
    assert!(
        held.status
            .message
            .as_deref()
            .unwrap()
            .contains("SampleRatioMismatch")
    );

    let still = step(&spec, &held.status, Some(&mismatched()), at(50));
    assert!(reasons(&still).is_empty(), "the event is told once");
    assert_eq!(still.status.current_step, Some(0));

    let failed = step(
        &spec,
        &still.status,
        Some(&verdict(VerdictOutcome::Fail)),
        at(60),
    );
    assert_eq!(failed.status.phase, Phase::RolledBack);

    let recovered = step(
        &spec,
        &still.status,
        Some(&verdict(VerdictOutcome::Pass)),
        at(60),
    );
    assert_eq!(recovered.status.hold, None);
    assert_eq!(recovered.status.current_step, Some(1));
}

#[test]
fn a_step_without_its_samples_by_max_step_duration_holds_and_says_so() {
    let mut spec = rollout().spec();
    spec.analysis.max_step_duration = Some("2m".into());
    let s = started(&spec);
    let waiting = step(
        &spec,
        &s,
        Some(&verdict(VerdictOutcome::Inconclusive)),
        at(60),
    );
    assert_eq!(waiting.status.hold, None);
    assert_eq!(waiting.wake_at, Some(at(120)), "woken at the deadline");
    let overdue = step(
        &spec,
        &waiting.status,
        Some(&verdict(VerdictOutcome::Inconclusive)),
        at(120),
    );
    assert_eq!(overdue.status.phase, Phase::Progressing);
    assert_eq!(overdue.status.current_step, Some(0), "never a silent pass");
    assert_eq!(overdue.status.hold, Some(Hold::StepDeadlineExceeded));
    assert_eq!(reasons(&overdue), ["StepDeadlineExceeded"]);
    assert_eq!(
        condition(&overdue.status, "Ready").reason,
        "StepDeadlineExceeded"
    );
    assert!(
        overdue
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("maxStepDuration 2m passed"),
        "{:?}",
        overdue.status.message
    );
    // The spans arrive after all: the step passes and moves on.
    let passed = step(
        &spec,
        &overdue.status,
        Some(&verdict(VerdictOutcome::Pass)),
        at(130),
    );
    assert_eq!(
        (passed.status.current_step, passed.status.hold),
        (Some(1), None)
    );
}

#[test]
fn a_step_starts_to_the_microsecond_and_its_window_is_numbered() {
    let spec = rollout().spec();
    let start = t0() + SignedDuration::from_micros(700_123);
    let d = step(&spec, &FeatureRolloutStatus::default(), None, start);
    // Kept whole through the status's JSON, which a restart reads back.
    let saved: FeatureRolloutStatus =
        serde_json::from_str(&serde_json::to_string(&d.status).unwrap()).unwrap();
    assert_eq!(saved.step_started_at.as_ref().unwrap().0, start);
    assert_eq!(saved.epoch, 1);
    assert_eq!(d.wake_at, Some(start + SignedDuration::from_secs(30)));
    // The dwell counts from the microsecond, so a look just before it holds.
    let early = step(
        &spec,
        &saved,
        Some(&verdict(VerdictOutcome::Pass)),
        start + SignedDuration::from_millis(29_999),
    );
    assert_eq!(early.status.current_step, Some(0));
    assert_eq!(
        early.status.epoch, 1,
        "the same window until the step changes"
    );
}

#[test]
fn the_same_verdict_again_leaves_the_status_as_it_was() {
    let spec = rollout().spec();
    let waiting = verdict(VerdictOutcome::Inconclusive);
    let first = step(&spec, &started(&spec), Some(&waiting), at(5)).status;
    let again = step(&spec, &first, Some(&waiting), at(6)).status;
    assert_eq!(again, first, "nothing new, nothing to write");

    let mut changed = waiting.clone();
    changed.message = "need 10 more spans".into();
    let later = step(&spec, &again, Some(&changed), at(7)).status;
    assert_eq!(later.last_verdict.map(|v| v.at.0), Some(at(7)));
}

#[test]
fn steps_with_no_threshold_have_no_check_to_judge_by() {
    let mut spec = rollout().spec();
    spec.analysis.max_error_rate = None;
    let invalid = compile(&spec).expect_err("no check");
    let d = rejected(&invalid, &FeatureRolloutStatus::default(), t0());
    assert_eq!(d.status.phase, Phase::Invalid);
    let message = d.status.message.unwrap_or_default();
    assert!(
        message.contains("no check to judge the steps by"),
        "{message}"
    );
    assert!(message.contains("analysis.enabled to false"), "{message}");
}

#[test]
fn a_disabled_analysis_is_a_timed_ramp_that_judges_nothing() {
    let mut spec = rollout().spec();
    spec.analysis.max_error_rate = None;
    spec.analysis.enabled = false;
    let s = started(&spec);
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!((s.current_step, s.weight), (Some(0), 1.0));
    // Before the dwell is over nothing moves, whatever a verdict would say.
    let early = step(&spec, &s, Some(&verdict(VerdictOutcome::Fail)), at(10));
    assert_eq!(
        (early.status.phase, early.status.weight),
        (Phase::Progressing, 1.0)
    );
    assert_eq!(early.status.verdict, None);
    let message = early.status.message.clone().unwrap_or_default();
    assert!(message.contains("analysis disabled"), "{message}");
    // The controller is woken when the dwell ends, since no span will wake it.
    assert_eq!(early.wake_at, Some(at(30)));
    // Each dwell moves it one step, with no spans and no verdict at all.
    let mut status = early.status;
    for (secs, weight) in [(30, 5.0), (60, 25.0)] {
        let d = step(&spec, &status, None, at(secs));
        assert_eq!(reasons(&d), ["StepAdvanced"]);
        assert_eq!(d.status.weight, weight);
        status = d.status;
    }
    let last = step(&spec, &status, None, at(90));
    assert_eq!(last.status.phase, Phase::Promoted);
}
