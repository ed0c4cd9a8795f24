//! What a spec asks for, checked: the step weights, the dwell, and the fingerprint of
//! what is being rolled out. Every problem is reported, each in words a user can act on.

use std::time::Duration;

use crate::api::{FeatureRolloutSpec, MAX_DOWNSTREAM_SERVICES, parse_duration, shown, shown_list};
use crate::flags::percent_to_weight;

/// A spec that can be carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Step percentages, as written; empty for a flag that is only served.
    pub steps: Vec<f64>,
    pub step_duration: Duration,
    /// Longest a step may wait for `minSamples` before it holds and says so.
    pub max_step_duration: Option<Duration>,
    /// Whether steps are judged on spans; `false`: a timed ramp.
    pub judged: bool,
    /// Fingerprint of the flag, variants, services, revision and bucketing: a change
    /// restarts the rollout from the first step.
    pub target: String,
}

impl Plan {
    /// Index of the last step. Only meaningful when there are steps.
    pub fn last_step(&self) -> u32 {
        self.steps.len().saturating_sub(1) as u32
    }

    /// Whether the flag is only served: no steps, nothing rolled out or judged.
    pub fn serves_only(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Why a spec cannot be carried out: every problem found, one sentence each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct InvalidSpec {
    pub problems: Vec<String>,
}

/// Checks `spec` and derives its plan.
pub fn plan(spec: &FeatureRolloutSpec) -> Result<Plan, InvalidSpec> {
    let mut problems = Vec::new();
    let flag = &spec.flag;
    if flag.key.trim().is_empty() {
        problems.push("spec.flag.key is empty".to_string());
    } else if flag.key.contains(['/', '?', '#', ' ']) {
        problems.push(format!(
            "spec.flag.key {} contains a character not allowed in a flag key (/ ? # or space)",
            shown(&flag.key)
        ));
    }
    let known = || shown_list(flag.variants.keys().map(String::as_str));
    let steps = !spec.steps.is_empty();
    if flag.variants.is_empty() {
        problems.push(
            "spec.flag.variants is empty; give at least the default and the rollout variant"
                .to_string(),
        );
    } else if !flag.variants.contains_key(&flag.default_variant) {
        problems.push(format!(
            "spec.flag.defaultVariant {} is not one of the variants ({})",
            shown(&flag.default_variant),
            known()
        ));
    }
    if steps {
        if flag.rollout_variant.is_empty() {
            problems.push("spec.flag.rolloutVariant is missing; the steps hand it out".to_string());
        } else if !flag.variants.is_empty() && !flag.variants.contains_key(&flag.rollout_variant) {
            problems.push(format!(
                "spec.flag.rolloutVariant {} is not one of the variants ({})",
                shown(&flag.rollout_variant),
                known()
            ));
        }
        if flag.default_variant == flag.rollout_variant {
            problems.push(format!(
                "spec.flag.rolloutVariant is the same as defaultVariant ({}); nothing would change",
                shown(&flag.rollout_variant)
            ));
        }
        if spec.service.trim().is_empty() {
            problems.push(
                "spec.service is empty; name the service.name whose spans are judged".to_string(),
            );
        }
    } else if !flag.rollout_variant.is_empty() {
        problems.push(format!(
            "spec.flag.rolloutVariant {} needs spec.steps; without steps the flag is served \
             as its targeting says and nothing is rolled out",
            shown(&flag.rollout_variant)
        ));
    }
    if matches!(&spec.bucket_by, Some(b) if b.trim().is_empty()) {
        problems.push("spec.bucketBy is empty; omit it to bucket by targetingKey".to_string());
    }
    if matches!(&spec.revision, Some(r) if r.trim().is_empty()) {
        problems
            .push("spec.revision is empty; omit it to judge spans of every revision".to_string());
    }
    if steps {
        check_steps(&spec.steps, &mut problems);
    }
    check_downstream_services(spec, &mut problems);
    let step_duration = match parse_duration(&spec.step_duration) {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!("spec.stepDuration: {e}"));
            Duration::ZERO
        }
    };
    check_analysis(spec, &mut problems);
    let max_step_duration = match spec
        .analysis
        .max_step_duration
        .as_deref()
        .map(parse_duration)
    {
        None => None,
        Some(Ok(d)) if d < step_duration => {
            problems.push(format!(
                "spec.analysis.maxStepDuration ({}) is shorter than spec.stepDuration ({}); \
                 no step could wait out its dwell",
                shown(
                    spec.analysis
                        .max_step_duration
                        .as_deref()
                        .unwrap_or_default()
                ),
                shown(&spec.step_duration)
            ));
            None
        }
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            problems.push(format!("spec.analysis.maxStepDuration: {e}"));
            None
        }
    };

    if !problems.is_empty() {
        return Err(InvalidSpec { problems });
    }
    Ok(Plan {
        steps: spec.steps.clone(),
        step_duration,
        max_step_duration,
        judged: spec.analysis.enabled,
        target: fingerprint(spec),
    })
}

fn check_steps(steps: &[f64], problems: &mut Vec<String>) {
    for (i, &step) in steps.iter().enumerate() {
        if !step.is_finite() || step <= 0.0 || step > 100.0 {
            problems.push(format!(
                "spec.steps[{i}] is {step}; every step must be more than 0 and at most 100 (percent)"
            ));
        } else if (step * 100.0 - percent_to_weight(step) as f64).abs() > 1e-6 {
            problems.push(format!(
                "spec.steps[{i}] is {step}; steps may have at most two decimals"
            ));
        }
        if i > 0 && step <= steps[i - 1] {
            problems.push(format!(
                "spec.steps must increase, but steps[{i}] ({step}) is not above steps[{}] ({})",
                i - 1,
                steps[i - 1]
            ));
        }
    }
}

fn check_downstream_services(spec: &FeatureRolloutSpec, problems: &mut Vec<String>) {
    let names = &spec.downstream_services;
    if names.is_empty() {
        return;
    }
    if spec.steps.is_empty() {
        problems.push(
            "spec.downstreamServices needs spec.steps; without steps no spans are judged"
                .to_string(),
        );
    }
    if names.len() > MAX_DOWNSTREAM_SERVICES {
        problems.push(format!(
            "spec.downstreamServices names {} services; at most {MAX_DOWNSTREAM_SERVICES} \
             are judged, since each takes a share of the error budget",
            names.len()
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            problems.push(format!(
                "spec.downstreamServices[{i}] is empty; name a service.name"
            ));
        } else if *name == spec.service {
            problems.push(format!(
                "spec.downstreamServices[{i}] is spec.service ({}), whose spans are judged already",
                shown(name)
            ));
        } else if names[..i].contains(name) {
            problems.push(format!(
                "spec.downstreamServices names {} twice",
                shown(name)
            ));
        }
    }
}

fn check_analysis(spec: &FeatureRolloutSpec, problems: &mut Vec<String>) {
    let a = &spec.analysis;
    if !(a.confidence.is_finite() && a.confidence >= 0.5 && a.confidence < 1.0) {
        problems.push(format!(
            "spec.analysis.confidence is {}; it is a probability of at least 0.5 and below 1 \
             (0.99: at most 1 healthy rollout in 100 rolled back)",
            a.confidence
        ));
    }
    if !spec.steps.is_empty() && a.enabled && !a.has_threshold() {
        problems.push(
            "spec.analysis sets no threshold, so there is no check to judge the steps by; set \
             any of maxErrorRate, maxErrorRateIncrease, maxLatencyMs or maxLatencyIncrease, or \
             set analysis.enabled to false for a plain timed ramp that advances on its dwell \
             alone"
                .to_string(),
        );
    }
    if a.min_samples == 0 {
        problems.push(
            "spec.analysis.minSamples is 0; at least 1 span per variant is needed for a verdict"
                .to_string(),
        );
    }
    let mut rate = |name: &str, v: Option<f64>| {
        if let Some(v) = v
            && !(v.is_finite() && (0.0..=1.0).contains(&v))
        {
            problems.push(format!(
                "spec.analysis.{name} is {v}; it is a fraction between 0 and 1 (0.05 = 5%)"
            ));
        }
    };
    rate("maxErrorRate", a.max_error_rate);
    rate("maxErrorRateIncrease", a.max_error_rate_increase);
    if let Some(v) = a.max_latency_increase
        && !(v.is_finite() && v >= 0.0)
    {
        problems.push(format!(
            "spec.analysis.maxLatencyIncrease is {v}; it is a relative increase of 0 or more (0.25 = 25%)"
        ));
    }
    if let Some(q) = &a.max_latency_ms {
        if q.iter().next().is_none() {
            problems.push(
                "spec.analysis.maxLatencyMs names no quantile; give any of p50, p90, p95, p99"
                    .to_string(),
            );
        }
        for (name, _, v) in q.iter() {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!(
                    "spec.analysis.maxLatencyMs.{name} is {v}; it must be a positive number of milliseconds"
                ));
            }
        }
    }
}

/// A stable hash of the canonical JSON of what is rolled out.
fn fingerprint(spec: &FeatureRolloutSpec) -> String {
    let mut identity = serde_json::json!({
        "flag": spec.flag,
        "service": spec.service,
        "revision": spec.revision,
        "bucketBy": spec.bucket_by,
    });
    // Only when set, so that the rollouts from before it keep their fingerprint
    // and are not started again by an upgrade.
    if !spec.downstream_services.is_empty() {
        identity["downstreamServices"] = serde_json::json!(spec.downstream_services);
    }
    crate::fingerprint::fnv1a_hex(identity.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(downstream: &[&str]) -> FeatureRolloutSpec {
        serde_json::from_value(serde_json::json!({
            "flag": {
                "key": "new-checkout",
                "variants": {"off": false, "on": true},
                "defaultVariant": "off",
                "rolloutVariant": "on"
            },
            "service": "checkout",
            "revision": "3f2c1a9",
            "downstreamServices": downstream,
            "steps": [5, 100],
            "analysis": {"maxErrorRate": 0.05}
        }))
        .unwrap()
    }

    #[test]
    fn downstream_services_change_the_fingerprint_only_when_named() {
        let without = spec(&[]);
        // As it was before downstream services: an upgrade restarts nothing.
        let before = serde_json::json!({
            "flag": without.flag,
            "service": without.service,
            "revision": without.revision,
            "bucketBy": without.bucket_by,
        });
        assert_eq!(
            fingerprint(&without),
            crate::fingerprint::fnv1a_hex(before.to_string().as_bytes())
        );
        assert_ne!(fingerprint(&spec(&["payments"])), fingerprint(&without));
        assert_ne!(
            fingerprint(&spec(&["payments", "inventory"])),
            fingerprint(&spec(&["payments"]))
        );
    }
}
