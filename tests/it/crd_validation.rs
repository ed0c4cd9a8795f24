//! The CRD's admission rules: the CEL `x-kubernetes-validations` evaluated as an API
//! server (1.25+) does, with the messages a person sees from `kubectl apply`; and the
//! OpenAPI bounds that any API server enforces.

use kube_cel::Validator;
use serde_json::{Value, json};

use crate::common::fixture::RolloutFixture;

fn schema() -> Value {
    let crd = <spangate::api::FeatureRollout as kube::CustomResourceExt>::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema"),
    )
    .unwrap()
}

/// A rollout with nothing beyond what the rules look at.
fn rollout() -> RolloutFixture {
    RolloutFixture::new("new-checkout")
        .bucket_by(None)
        .revision(None)
        .steps([1, 5, 25, 100])
        .step_duration(None)
        .analysis(None)
}

/// The messages of the rules `rollout` breaks.
fn broken(rollout: RolloutFixture) -> Vec<String> {
    match Validator::new().validate(&schema(), &rollout.json(), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn a_sound_rollout_passes_every_rule() {
    assert_eq!(broken(rollout()), Vec::<String>::new());
    assert_eq!(broken(rollout().steps([0.5])), Vec::<String>::new());
}

#[test]
fn steps_must_strictly_increase() {
    let message = "spec.steps must be strictly increasing percentages, e.g. [1, 5, 25, 100]";
    assert_eq!(broken(rollout().steps([5, 1, 100])), [message]);
    assert_eq!(broken(rollout().steps([1, 5, 5, 100])), [message]);
}

#[test]
fn the_variants_named_must_exist_and_differ() {
    assert_eq!(
        broken(rollout().rollout_variant("onn")),
        ["spec.flag.rolloutVariant must be one of the names in spec.flag.variants"]
    );
    assert_eq!(
        broken(rollout().default_variant("of")),
        ["spec.flag.defaultVariant must be one of the names in spec.flag.variants"]
    );
    assert_eq!(
        broken(rollout().rollout_variant("off")),
        [
            "spec.flag.rolloutVariant must differ from spec.flag.defaultVariant, or nothing would change"
        ]
    );
}

#[test]
fn weights_and_rates_have_openapi_bounds() {
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    let step = &spec["steps"]["items"];
    assert_eq!(
        (step["minimum"].as_f64(), step["maximum"].as_f64()),
        (Some(0.01), Some(100.0))
    );
    let analysis = &spec["analysis"]["properties"];
    for rate in ["maxErrorRate", "maxErrorRateIncrease"] {
        assert_eq!(
            (
                analysis[rate]["minimum"].as_f64(),
                analysis[rate]["maximum"].as_f64()
            ),
            (Some(0.0), Some(1.0)),
            "{rate}"
        );
    }
    assert_eq!(analysis["minSamples"]["minimum"].as_f64(), Some(1.0));
    let weight = &schema["properties"]["status"]["properties"]["weight"];
    assert_eq!(
        (weight["minimum"].as_f64(), weight["maximum"].as_f64()),
        (Some(0.0), Some(100.0))
    );
}

#[test]
fn a_flag_without_steps_needs_no_rollout_variant_nor_service() {
    let entitlement = rollout().without_steps().targeting(json!({"rules": [{
        "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
        "variant": "on",
    }]}));
    assert_eq!(broken(entitlement), Vec::<String>::new());
}

#[test]
fn steps_and_the_rollout_variant_come_together() {
    assert_eq!(
        broken(rollout().rollout_variant(None)),
        [
            "spec.steps need spec.flag.rolloutVariant (what they hand out) and spec.service (whose spans are judged)"
        ]
    );
    assert_eq!(
        broken(rollout().service(None)),
        [
            "spec.steps need spec.flag.rolloutVariant (what they hand out) and spec.service (whose spans are judged)"
        ]
    );
    assert_eq!(
        broken(
            rollout()
                .without_steps()
                .rollout_variant("on")
                .service("checkout")
        ),
        [
            "spec.flag.rolloutVariant needs spec.steps; without steps the flag is served as its targeting says"
        ]
    );
}

#[test]
fn downstream_services_are_named_once_and_are_not_the_service() {
    let downstream = |names: &[&str]| rollout().downstream_services(names);
    assert_eq!(
        broken(downstream(&["payments", "inventory"])),
        Vec::<String>::new()
    );
    assert_eq!(
        broken(downstream(&["payments", "inventory", "payments"])),
        ["spec.downstreamServices must name each service once"]
    );
    assert_eq!(
        broken(downstream(&["payments", "checkout"])),
        ["spec.downstreamServices must not contain spec.service, whose spans are judged already"]
    );
    assert_eq!(
        broken(
            downstream(&["payments"])
                .without_steps()
                .downstream_services(&["payments"])
        ),
        ["spec.downstreamServices needs spec.steps; without steps no spans are judged"]
    );
    let schema = schema();
    let names = &schema["properties"]["spec"]["properties"]["downstreamServices"];
    assert_eq!(names["maxItems"].as_u64(), Some(16));
    assert_eq!(names["items"]["minLength"].as_u64(), Some(1));
}
