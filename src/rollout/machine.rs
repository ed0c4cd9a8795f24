//! The rollout state machine: from the compiled spec, the status it last left, the
//! latest verdict and the time, to the next status and what the shell must do about
//! it. A spec that does not compile never gets here: the shell [`reject`]s it.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use super::compiled::CompiledRollout;
use super::plan::Plan;
use crate::analysis::WindowEpoch;
use crate::api::{
    FeatureRolloutStatus, Hold, Phase, StepEvidence, Transition, Verdict, VerdictOutcome,
    VerdictRecord,
};

/// Transitions kept in `status.history`.
pub const HISTORY_LIMIT: usize = 10;

/// What the machine is given.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The spec, checked and compiled once by the shell; the machine walks its plan.
    pub rollout: &'a CompiledRollout,
    /// `metadata.generation` of the spec.
    pub generation: Option<i64>,
    pub status: &'a FeatureRolloutStatus,
    /// Verdict on the current step's window, when the rollout is progressing.
    pub verdict: Option<&'a Verdict>,
    pub now: Timestamp,
    /// A person's request to end the rollout now, one way or the other.
    pub request: Option<Request>,
}

/// What a person can ask of a rollout besides editing its spec (`kubectl spangate
/// promote|abort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Skip the remaining steps: every user gets the rollout variant.
    Promote,
    /// Roll back now, whatever the analysis says.
    Abort,
}

/// Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What the shell must do besides saving the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Record an event for this transition.
    Event {
        type_: EventType,
        reason: &'static str,
        note: String,
    },
    /// The step changed: judge the spans of this new window from now on.
    RestartWindow(WindowEpoch),
}

/// The machine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: FeatureRolloutStatus,
    pub actions: Vec<Action>,
    /// Reconcile again no later than this (the end of the current step's dwell).
    pub wake_at: Option<Timestamp>,
}

/// Computes the next status.
pub fn decide(input: Input<'_>) -> Decision {
    let plan = &input.rollout.plan;
    let mut next = input.status.clone();
    next.observed_generation = input.generation;
    let mut actions = Vec::new();

    let restart = next.target.as_deref() != Some(plan.target.as_str())
        || matches!(next.phase, Phase::Invalid | Phase::Pending | Phase::Serving);
    if plan.serves_only() {
        serve(&mut next, &mut actions, plan, input.now);
    } else if restart {
        start(&mut next, &mut actions, plan, input);
    } else {
        follow(&mut next, &mut actions, plan, input);
    }
    if let Some(request) = input.request {
        carry_out(&mut next, &mut actions, plan, input.now, request);
    }
    next.step = next
        .current_step
        .map(|index| format!("{}/{}", index + 1, plan.steps.len()));
    set_conditions(&mut next, input.generation, input.now);
    let wake_at = (next.phase == Phase::Progressing)
        .then(|| {
            [dwell_end(&next, plan), step_deadline(&next, plan)]
                .into_iter()
                .flatten()
                .filter(|&t| t > input.now)
                .min()
        })
        .flatten();
    Decision {
        status: next,
        actions,
        wake_at,
    }
}

/// Marks a rollout Invalid: its spec does not compile, its file does not parse, or
/// another rollout already serves its flag key.
pub fn reject(
    status: &FeatureRolloutStatus,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> Decision {
    let mut next = status.clone();
    next.observed_generation = generation;
    let mut actions = Vec::new();
    if next.phase != Phase::Invalid || next.message.as_deref() != Some(message) {
        transition(
            &mut next,
            &mut actions,
            now,
            Phase::Invalid,
            None,
            0.0,
            "InvalidSpec",
            message.to_string(),
            EventType::Warning,
        );
    }
    next.message = Some(message.to_string());
    next.target = None;
    next.step_started_at = None;
    next.step = None;
    next.hold = None;
    next.completed_steps.clear();
    set_conditions(&mut next, generation, now);
    Decision {
        status: next,
        actions,
        wake_at: None,
    }
}

/// A flag without steps is served as its targeting says; there is nothing to move.
fn serve(next: &mut FeatureRolloutStatus, actions: &mut Vec<Action>, plan: &Plan, now: Timestamp) {
    if next.phase == Phase::Serving && next.target.as_deref() == Some(plan.target.as_str()) {
        return;
    }
    next.target = Some(plan.target.clone());
    next.last_verdict = None;
    next.verdict = None;
    next.step_started_at = None;
    next.hold = None;
    next.completed_steps.clear();
    let message = "serving the flag: no steps, so its targeting decides and everyone else \
                   gets the default variant"
        .to_string();
    transition(
        next,
        actions,
        now,
        Phase::Serving,
        None,
        0.0,
        "Serving",
        message.clone(),
        EventType::Normal,
    );
    next.message = Some(message);
}

fn start(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    plan: &Plan,
    input: Input<'_>,
) {
    // Steps added to a served flag start a rollout; they do not restart one.
    let restarted = next.target.is_some() && next.phase != Phase::Serving;
    next.target = Some(plan.target.clone());
    next.last_verdict = None;
    next.verdict = None;
    next.hold = None;
    next.completed_steps.clear();
    if input.rollout.spec.paused {
        let message = "paused before the first step; set spec.paused to false to start".to_string();
        transition(
            next,
            actions,
            input.now,
            Phase::Paused,
            None,
            0.0,
            "Paused",
            message.clone(),
            EventType::Normal,
        );
        next.message = Some(message);
        return;
    }
    let (reason, what) = if restarted {
        (
            "Restarted",
            "the flag, service or revision changed; starting again",
        )
    } else {
        ("Started", "rollout started")
    };
    enter_step(next, actions, plan, input.now, 0, reason, what.to_string());
}

/// Moves to step `index` (promoting when it hands out 100%).
fn enter_step(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    plan: &Plan,
    now: Timestamp,
    index: u32,
    reason: &'static str,
    why: String,
) {
    let weight = plan.steps[index as usize];
    restart_window(next, actions, now);
    if weight >= 100.0 {
        let message = format!("{why}; every user gets the rollout variant");
        transition(
            next,
            actions,
            now,
            Phase::Promoted,
            Some(index),
            100.0,
            "Promoted",
            message.clone(),
            EventType::Normal,
        );
        next.message = Some(message);
        return;
    }
    let message = format!(
        "{why}; step {}/{} at {weight}%",
        index + 1,
        plan.steps.len()
    );
    transition(
        next,
        actions,
        now,
        Phase::Progressing,
        Some(index),
        weight,
        reason,
        message.clone(),
        EventType::Normal,
    );
    next.message = Some(message);
}

fn follow(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    plan: &Plan,
    input: Input<'_>,
) {
    match next.phase {
        Phase::Promoted | Phase::RolledBack => return,
        Phase::Paused if input.rollout.spec.paused => return,
        Phase::Paused => {
            let Some(index) = next.current_step else {
                enter_step(
                    next,
                    actions,
                    plan,
                    input.now,
                    0,
                    "Started",
                    "resumed".to_string(),
                );
                return;
            };
            let index = if plan.steps.get(index as usize) == Some(&next.weight) {
                index
            } else {
                step_at_most(plan, next.weight)
            };
            // Dwell starts again: the time spent paused says nothing about health.
            next.step_started_at = Some(MicroTime(input.now));
            let weight = plan.steps[index as usize];
            let message = format!(
                "resumed at step {}/{} ({weight}%)",
                index + 1,
                plan.steps.len()
            );
            transition(
                next,
                actions,
                input.now,
                Phase::Progressing,
                Some(index),
                weight,
                "Resumed",
                message.clone(),
                EventType::Normal,
            );
            next.message = Some(message);
            return;
        }
        Phase::Progressing if input.rollout.spec.paused => {
            let message = format!("paused at {}%", next.weight);
            let step = next.current_step;
            let weight = next.weight;
            transition(
                next,
                actions,
                input.now,
                Phase::Paused,
                step,
                weight,
                "Paused",
                message.clone(),
                EventType::Normal,
            );
            next.message = Some(message);
            return;
        }
        _ => {}
    }

    // Progressing. When the steps were edited, the rollout never goes up without a
    // Pass: it lands on the highest new step at most its weight and dwells there anew.
    let index = next.current_step.unwrap_or(0);
    if plan.steps.get(index as usize) != Some(&next.weight) {
        let landing = step_at_most(plan, next.weight);
        if plan.steps[landing as usize] == next.weight {
            next.current_step = Some(landing);
        } else {
            let why = format!(
                "steps edited while at {}%: back to the highest step at most that",
                next.weight
            );
            enter_step(next, actions, plan, input.now, landing, "StepsChanged", why);
            return;
        }
    }
    let index = next.current_step.unwrap_or(0);
    let weight = plan.steps[index as usize];
    if weight >= 100.0 {
        enter_step(
            next,
            actions,
            plan,
            input.now,
            index,
            "Promoted",
            "the current step now hands out 100%".to_string(),
        );
        return;
    }
    set_weight(next, weight);

    if !plan.judged {
        ramp(next, actions, plan, input.now, index, weight);
        return;
    }
    let Some(verdict) = input.verdict else {
        next.message = Some(format!(
            "step {}/{} at {weight}%: waiting for spans",
            index + 1,
            plan.steps.len()
        ));
        return;
    };
    next.verdict = Some(verdict.outcome);
    // The same verdict again keeps its time, so a pass that learns nothing new
    // leaves the status as it was and the store writes nothing.
    let repeated = next.last_verdict.as_ref().is_some_and(|last| {
        last.step == index && last.weight == weight && last.verdict == *verdict
    });
    if !repeated {
        next.last_verdict = Some(VerdictRecord {
            at: Time(input.now),
            step: index,
            weight,
            verdict: verdict.clone(),
        });
    }
    match verdict.outcome {
        VerdictOutcome::Fail => {
            let message = format!("rolled back at {weight}%: {}", verdict.message);
            transition(
                next,
                actions,
                input.now,
                Phase::RolledBack,
                Some(index),
                0.0,
                "RolledBack",
                message.clone(),
                EventType::Warning,
            );
            next.message = Some(message);
        }
        VerdictOutcome::Inconclusive => {
            let mismatch = verdict.sample_ratio.as_ref().is_some_and(|s| s.mismatch);
            let overdue = step_deadline(next, plan).is_some_and(|deadline| input.now >= deadline);
            let hold = if mismatch {
                Some(Hold::SampleRatioMismatch)
            } else if overdue {
                Some(Hold::StepDeadlineExceeded)
            } else {
                None
            };
            let position = format!("step {}/{} at {weight}%", index + 1, plan.steps.len());
            let message = match hold {
                Some(Hold::StepDeadlineExceeded) => format!(
                    "{position}: holding, maxStepDuration {} passed without the spans to judge \
                     by; {}",
                    humantime(plan.max_step_duration.unwrap_or_default()),
                    verdict.message
                ),
                _ => format!("{position}: {}", verdict.message),
            };
            if hold.is_some() && hold != next.hold {
                actions.push(Action::Event {
                    type_: EventType::Warning,
                    reason: match hold {
                        Some(Hold::SampleRatioMismatch) => "SampleRatioMismatch",
                        _ => "StepDeadlineExceeded",
                    },
                    note: message.clone(),
                });
            }
            next.hold = hold;
            next.message = Some(message);
        }
        VerdictOutcome::Pass => {
            next.hold = None;
            let due = dwell_end(next, plan).is_none_or(|end| input.now >= end);
            if !due {
                next.message = Some(format!(
                    "step {}/{} at {weight}%: analysis passes; dwelling for {} before the next step",
                    index + 1,
                    plan.steps.len(),
                    humantime(plan.step_duration)
                ));
            } else if index < plan.last_step() {
                let why = format!(
                    "step {}/{} passed ({})",
                    index + 1,
                    plan.steps.len(),
                    verdict.message
                );
                // Kept so later steps' error checks can weigh what this one showed.
                next.completed_steps.push(StepEvidence {
                    step: index,
                    weight,
                    baseline: verdict.baseline.arm_evidence(),
                    candidate: verdict.candidate.arm_evidence(),
                });
                enter_step(
                    next,
                    actions,
                    plan,
                    input.now,
                    index + 1,
                    "StepAdvanced",
                    why,
                );
            } else {
                next.message = Some(format!(
                    "holding at the final step ({weight}%): analysis passes and keeps watching"
                ));
            }
        }
    }
}

/// A step of a rollout whose analysis is disabled: it advances when its dwell is
/// over, with nothing judged.
fn ramp(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    plan: &Plan,
    now: Timestamp,
    index: u32,
    weight: f64,
) {
    next.verdict = None;
    next.last_verdict = None;
    next.hold = None;
    let due = dwell_end(next, plan).is_none_or(|end| now >= end);
    let position = format!("step {}/{} at {weight}%", index + 1, plan.steps.len());
    if !due {
        next.message = Some(format!(
            "{position}: analysis disabled; dwelling for {} before the next step",
            humantime(plan.step_duration)
        ));
    } else if index < plan.last_step() {
        let why = format!("{position} dwelt its {}", humantime(plan.step_duration));
        enter_step(next, actions, plan, now, index + 1, "StepAdvanced", why);
    } else {
        next.message = Some(format!(
            "holding at the final step ({weight}%): analysis disabled"
        ));
    }
}

/// Promotes or aborts on request. An ended rollout is left as it is: promoting a
/// promoted one or aborting a rolled-back one changes nothing, so a request read
/// twice acts once.
fn carry_out(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    plan: &Plan,
    now: Timestamp,
    request: Request,
) {
    let at = match next.current_step {
        Some(index) => format!("step {}/{} ({}%)", index + 1, plan.steps.len(), next.weight),
        None => "before the first step".to_string(),
    };
    match request {
        Request::Promote if !matches!(next.phase, Phase::Promoted | Phase::Invalid) => {
            let message =
                format!("promoted by request at {at}; every user gets the rollout variant");
            restart_window(next, actions, now);
            transition(
                next,
                actions,
                now,
                Phase::Promoted,
                Some(plan.last_step()),
                100.0,
                "Promoted",
                message.clone(),
                EventType::Normal,
            );
            next.message = Some(message);
        }
        Request::Abort if !matches!(next.phase, Phase::RolledBack | Phase::Invalid) => {
            let message =
                format!("aborted by request at {at}; every user gets the default variant again");
            let step = next.current_step;
            transition(
                next,
                actions,
                now,
                Phase::RolledBack,
                step,
                0.0,
                "Aborted",
                message.clone(),
                EventType::Warning,
            );
            next.message = Some(message);
        }
        Request::Promote | Request::Abort => {}
    }
}

/// Starts the analysis window of a new step: a new epoch, and the dwell from now.
/// The highest step whose weight is at most `weight`; the first step when every
/// step is above it.
fn step_at_most(plan: &Plan, weight: f64) -> u32 {
    plan.steps
        .iter()
        .rposition(|&w| w <= weight)
        .map_or(0, |i| i as u32)
}

fn restart_window(next: &mut FeatureRolloutStatus, actions: &mut Vec<Action>, now: Timestamp) {
    next.epoch += 1;
    next.step_started_at = Some(MicroTime(now));
    next.hold = None;
    actions.push(Action::RestartWindow(WindowEpoch(next.epoch)));
}

fn dwell_end(status: &FeatureRolloutStatus, plan: &Plan) -> Option<Timestamp> {
    after_step_start(status, plan.step_duration)
}

/// When the step must have its samples (`analysis.maxStepDuration`).
fn step_deadline(status: &FeatureRolloutStatus, plan: &Plan) -> Option<Timestamp> {
    after_step_start(status, plan.max_step_duration?)
}

fn after_step_start(
    status: &FeatureRolloutStatus,
    after: std::time::Duration,
) -> Option<Timestamp> {
    let started = status.step_started_at.as_ref()?.0;
    let after = SignedDuration::try_from(after).ok()?;
    started.checked_add(after).ok()
}

fn humantime(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 120.0 {
        format!("{secs}s")
    } else {
        format!("{}m", (secs / 60.0).round())
    }
}

/// Serves `weight` from now on, remembering the weight it replaces.
fn set_weight(next: &mut FeatureRolloutStatus, weight: f64) {
    if weight != next.weight {
        next.previous_weight = (next.weight > 0.0).then_some(next.weight);
        next.weight = weight;
    }
}

#[allow(clippy::too_many_arguments)]
fn transition(
    next: &mut FeatureRolloutStatus,
    actions: &mut Vec<Action>,
    now: Timestamp,
    phase: Phase,
    step: Option<u32>,
    weight: f64,
    reason: &'static str,
    message: String,
    type_: EventType,
) {
    next.phase = phase;
    next.current_step = step;
    set_weight(next, weight);
    next.history.push(Transition {
        at: Time(now),
        phase,
        step,
        weight,
        reason: reason.to_string(),
        message: message.clone(),
    });
    if next.history.len() > HISTORY_LIMIT {
        let excess = next.history.len() - HISTORY_LIMIT;
        next.history.drain(..excess);
    }
    actions.push(Action::Event {
        type_,
        reason,
        note: message,
    });
}

/// Sets `Ready` (the summary), `Progressing` and `Healthy`, keeping each
/// condition's `lastTransitionTime` unless its status changes.
fn set_conditions(status: &mut FeatureRolloutStatus, generation: Option<i64>, now: Timestamp) {
    let phase = status.phase;
    let message = status.message.clone().unwrap_or_default();
    let (ready, ready_reason) = match phase {
        Phase::Progressing if status.hold.is_some() => (
            "False",
            status.hold.map(|h| h.to_string()).unwrap_or_default(),
        ),
        Phase::Progressing | Phase::Promoted | Phase::Paused | Phase::Serving => {
            ("True", phase.to_string())
        }
        Phase::Pending => ("Unknown", "Pending".to_string()),
        Phase::RolledBack => ("False", "RolledBack".to_string()),
        Phase::Invalid => ("False", "InvalidSpec".to_string()),
    };
    let progressing = if phase == Phase::Progressing {
        "True"
    } else {
        "False"
    };
    let (healthy, healthy_reason, healthy_message) = match &status.last_verdict {
        None => (
            "Unknown",
            "NoVerdict".to_string(),
            "no verdict yet".to_string(),
        ),
        Some(record) => {
            let s = match record.verdict.outcome {
                VerdictOutcome::Pass => "True",
                VerdictOutcome::Fail => "False",
                VerdictOutcome::Inconclusive => "Unknown",
            };
            (
                s,
                format!("Analysis{}", record.verdict.outcome),
                record.verdict.message.clone(),
            )
        }
    };
    set_condition(
        status,
        "Ready",
        ready,
        &ready_reason,
        &message,
        generation,
        now,
    );
    set_condition(
        status,
        "Progressing",
        progressing,
        &phase.to_string(),
        &message,
        generation,
        now,
    );
    set_condition(
        status,
        "Healthy",
        healthy,
        &healthy_reason,
        &healthy_message,
        generation,
        now,
    );
}

fn set_condition(
    status: &mut FeatureRolloutStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let fresh = Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status == fresh.status {
                let since = existing.last_transition_time.clone();
                *existing = Condition {
                    last_transition_time: since,
                    ..fresh
                };
            } else {
                *existing = fresh;
            }
        }
        None => status.conditions.push(fresh),
    }
}
