//! One builder for every FeatureRollout a test needs: as a spec, as the Kubernetes
//! object, as a document for a rollout file or `kubectl apply`, or as JSON.
//!
//! `RolloutFixture::new(name)` is the rollout most tests use: flag `new-checkout`
//! (`off` → `on`) bucketed by `accountId`, the spans of service `checkout` at revision
//! `3f2c1a9` judged with every kind of threshold, steps 10, 50 and 100% without a
//! dwell. Setters change what a test varies; `None` leaves a field out, so the
//! spec's own default applies.

use serde::Serialize;
use serde_json::{Value, json};
use spangate::api::{FeatureRollout, FeatureRolloutSpec};

#[derive(Clone)]
pub struct RolloutFixture {
    name: String,
    namespace: String,
    spec: Spec,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    flag: Flag,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    downstream_services: Option<Vec<String>>,
    /// The numbers as the test wrote them: `10` stays an integer in the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    analysis: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    targeting: Option<Value>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Flag {
    key: String,
    variants: Value,
    default_variant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout_variant: Option<String>,
}

impl RolloutFixture {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: "default".to_string(),
            spec: Spec {
                flag: Flag {
                    key: "new-checkout".to_string(),
                    variants: json!({"off": false, "on": true}),
                    default_variant: "off".to_string(),
                    rollout_variant: Some("on".to_string()),
                },
                bucket_by: Some("accountId".to_string()),
                service: Some("checkout".to_string()),
                revision: Some("3f2c1a9".to_string()),
                downstream_services: None,
                steps: Some(json!([10, 50, 100])),
                step_duration: Some("0s".to_string()),
                analysis: Some(json!({
                    "minSamples": 40,
                    "maxErrorRate": 0.08,
                    "maxErrorRateIncrease": 0.05,
                    "maxLatencyMs": {"p99": 400},
                    "maxLatencyIncrease": 0.5,
                })),
                targeting: None,
            },
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    /// The flag key.
    pub fn flag(mut self, key: &str) -> Self {
        key.clone_into(&mut self.spec.flag.key);
        self
    }

    /// Variant name → value, and the one everyone else gets.
    pub fn variants(mut self, variants: Value, default: &str) -> Self {
        self.spec.flag.variants = variants;
        self.default_variant(default)
    }

    pub fn default_variant(mut self, variant: &str) -> Self {
        variant.clone_into(&mut self.spec.flag.default_variant);
        self
    }

    pub fn rollout_variant<'a>(mut self, variant: impl Into<Option<&'a str>>) -> Self {
        self.spec.flag.rollout_variant = variant.into().map(str::to_string);
        self
    }

    pub fn bucket_by<'a>(mut self, attribute: impl Into<Option<&'a str>>) -> Self {
        self.spec.bucket_by = attribute.into().map(str::to_string);
        self
    }

    pub fn service<'a>(mut self, service: impl Into<Option<&'a str>>) -> Self {
        self.spec.service = service.into().map(str::to_string);
        self
    }

    pub fn revision<'a>(mut self, revision: impl Into<Option<&'a str>>) -> Self {
        self.spec.revision = revision.into().map(str::to_string);
        self
    }

    pub fn downstream_services(mut self, services: &[&str]) -> Self {
        self.spec.downstream_services = Some(services.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Percentages as written: `[1, 5, 100]`, `[0.5]`, or out of order on purpose.
    pub fn steps(mut self, steps: impl Serialize) -> Self {
        self.spec.steps = Some(serde_json::to_value(steps).expect("steps serialize"));
        self
    }

    pub fn step_duration<'a>(mut self, duration: impl Into<Option<&'a str>>) -> Self {
        self.spec.step_duration = duration.into().map(str::to_string);
        self
    }

    pub fn analysis(mut self, analysis: impl Into<Option<Value>>) -> Self {
        self.spec.analysis = analysis.into();
        self
    }

    pub fn targeting(mut self, targeting: Value) -> Self {
        self.spec.targeting = Some(targeting);
        self
    }

    /// A flag served as its targeting says: no steps, nor what only a rollout uses
    /// (rollout variant, service, revision, bucketing, dwell, analysis).
    pub fn without_steps(mut self) -> Self {
        let spec = &mut self.spec;
        spec.flag.rollout_variant = None;
        spec.bucket_by = None;
        spec.service = None;
        spec.revision = None;
        spec.steps = None;
        spec.step_duration = None;
        spec.analysis = None;
        self
    }

    /// The spec as the API type reads it.
    pub fn spec(&self) -> FeatureRolloutSpec {
        serde_json::from_value(serde_json::to_value(&self.spec).unwrap())
            .unwrap_or_else(|e| panic!("not a FeatureRolloutSpec: {e}"))
    }

    /// The object as the API server would hand it out, before any status.
    pub fn resource(&self) -> FeatureRollout {
        serde_json::from_value(self.json()).unwrap_or_else(|e| panic!("not a FeatureRollout: {e}"))
    }

    /// The whole document, for a rollout file or `kubectl apply`. Written as JSON,
    /// which is YAML that every parser reads alike: kubectl's YAML 1.1 would read
    /// an unquoted `on` as `true`.
    pub fn yaml(&self) -> String {
        format!("{:#}\n", self.json())
    }

    pub fn json(&self) -> Value {
        json!({
            "apiVersion": "spangate.dev/v1alpha1",
            "kind": "FeatureRollout",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self.spec,
        })
    }
}

/// YAML as the tests write targeting and thresholds, as a value for the setters.
pub fn from_yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
