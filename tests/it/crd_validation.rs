//! The CRD's admission rules: the CEL `x-kubernetes-validations` evaluated as an API
//! server (1.25+) does, with the messages a person sees from `kubectl apply`; and the
//! OpenAPI bounds that any API server enforces.

use kube_cel::Validator;
use serde_json::{Value, json};

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

fn rollout(edit: impl FnOnce(&mut Value)) -> Value {
    let mut doc = json!({
        "apiVersion": "spangate.dev/v1alpha1",
        "kind": "FeatureRollout",
        "metadata": {"name": "new-checkout", "namespace": "default"},
        "spec": {
            "flag": {
                "key": "new-checkout",
                "variants": {"off": false, "on": true},
                "defaultVariant": "off",
                "rolloutVariant": "on",
            },
            "service": "checkout",
            "steps": [1, 5, 25, 100],
        },
    });
    edit(&mut doc["spec"]);
    doc
}

/// The messages of the rules `doc` breaks.
fn broken(doc: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), doc, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn a_sound_rollout_passes_every_rule() {
    assert_eq!(broken(&rollout(|_| {})), Vec::<String>::new());
    assert_eq!(
        broken(&rollout(|s| s["steps"] = json!([0.5]))),
        Vec::<String>::new()
    );
}

#[test]
fn steps_must_strictly_increase() {
    let message = "spec.steps must be strictly increasing percentages, e.g. [1, 5, 25, 100]";
    assert_eq!(
        broken(&rollout(|s| s["steps"] = json!([5, 1, 100]))),
        [message]
    );
    assert_eq!(
        broken(&rollout(|s| s["steps"] = json!([1, 5, 5, 100]))),
        [message]
    );
}

#[test]
fn the_variants_named_must_exist_and_differ() {
    assert_eq!(
        broken(&rollout(|s| s["flag"]["rolloutVariant"] = json!("onn"))),
        ["spec.flag.rolloutVariant must be one of the names in spec.flag.variants"]
    );
    assert_eq!(
        broken(&rollout(|s| s["flag"]["defaultVariant"] = json!("of"))),
        ["spec.flag.defaultVariant must be one of the names in spec.flag.variants"]
    );
    assert_eq!(
        broken(&rollout(|s| s["flag"]["rolloutVariant"] = json!("off"))),
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
    let entitlement = rollout(|s| {
        s.as_object_mut().unwrap().remove("steps");
        s.as_object_mut().unwrap().remove("service");
        s["flag"].as_object_mut().unwrap().remove("rolloutVariant");
        s["targeting"] = json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "variant": "on"}]});
    });
    assert_eq!(broken(&entitlement), Vec::<String>::new());
}

#[test]
fn steps_and_the_rollout_variant_come_together() {
    assert_eq!(
        broken(&rollout(|s| {
            s["flag"].as_object_mut().unwrap().remove("rolloutVariant");
        })),
        [
            "spec.steps need spec.flag.rolloutVariant (what they hand out) and spec.service (whose spans are judged)"
        ]
    );
    assert_eq!(
        broken(&rollout(|s| {
            s.as_object_mut().unwrap().remove("service");
        })),
        [
            "spec.steps need spec.flag.rolloutVariant (what they hand out) and spec.service (whose spans are judged)"
        ]
    );
    assert_eq!(
        broken(&rollout(|s| {
            s.as_object_mut().unwrap().remove("steps");
        })),
        [
            "spec.flag.rolloutVariant needs spec.steps; without steps the flag is served as its targeting says"
        ]
    );
}
