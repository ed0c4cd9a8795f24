//! `FeatureRollout`: one flag, the steps that hand its new variant out, and what
//! "healthy" means for the spans of the users who got it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::TargetingSpec;

/// Desired state of a rollout, as the user wrote it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "spangate.dev",
    version = "v1alpha1",
    kind = "FeatureRollout",
    plural = "featurerollouts",
    shortname = "fr",
    namespaced,
    status = "FeatureRolloutStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Weight","type":"number","jsonPath":".status.weight"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Trace","type":"string","priority":1,"description":"The last verdict's first exemplar span (failing, else slowest) in the trace backend","jsonPath":".status.lastVerdict.exemplarSpans[0].traceUrl"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.steps) || (self.steps.all(s, self.steps.exists_one(t, t == s)) && self.steps.isSorted())",
        "message": "spec.steps must be strictly increasing percentages, e.g. [1, 5, 25, 100]",
    },
    {
        "rule": "!has(self.steps) || size(self.steps) == 0 || (has(self.flag.rolloutVariant) && has(self.service))",
        "message": "spec.steps need spec.flag.rolloutVariant (what they hand out) and spec.service (whose spans are judged)",
    },
    {
        "rule": "!has(self.flag.rolloutVariant) || (has(self.steps) && size(self.steps) > 0)",
        "message": "spec.flag.rolloutVariant needs spec.steps; without steps the flag is served as its targeting says",
    },
    {
        "rule": "!has(self.downstreamServices) || self.downstreamServices.all(s, self.downstreamServices.exists_one(t, t == s))",
        "message": "spec.downstreamServices must name each service once",
    },
    {
        "rule": "!has(self.downstreamServices) || !has(self.service) || !(self.service in self.downstreamServices)",
        "message": "spec.downstreamServices must not contain spec.service, whose spans are judged already",
    },
    {
        "rule": "!has(self.downstreamServices) || size(self.downstreamServices) == 0 || (has(self.steps) && size(self.steps) > 0)",
        "message": "spec.downstreamServices needs spec.steps; without steps no spans are judged",
    },
]))]
pub struct FeatureRolloutSpec {
    /// The flag this rollout serves.
    pub flag: FlagSpec,
    /// Context attribute whose value keeps users in the same bucket (for example
    /// `accountId`, so every user of one customer sees the same variant). Default:
    /// the OFREP `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// Who is in, who is out, and how the rest are split; see [`TargetingSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<TargetingSpec>,
    /// Context attributes used for targeting that never leave the process: not
    /// logged, not in status, events, traces or forwarded spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_attributes: Vec<String>,
    /// `service.name` of the spans that are judged. Required with `steps`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Commit that carries the feature; when set, only spans whose
    /// `vcs.ref.head.revision` (or `service.version`) equals it are judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `service.name` of services that `service` calls, whose spans in the traces of
    /// this flag's users are judged too: each service's spans of the rollout variant
    /// against its own spans of the default variant, by the same checks, with the
    /// error budget shared evenly between all the services judged. `revision` does
    /// not filter them: they deploy on their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DOWNSTREAM_SERVICES), inner(length(min = 1, max = 256)))]
    pub downstream_services: Vec<String>,
    /// Percent of users that get the rollout variant at each step, increasing.
    /// When the last step is below 100 the rollout holds there, still judged.
    /// Without steps the flag is simply served: targeting decides, everyone else
    /// gets the default variant (an entitlement flag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(range(min = 0.01, max = 100)))]
    pub steps: Vec<f64>,
    /// Minimum time at each step before it may advance (Go duration: `30s`, `5m`).
    #[serde(default = "default_step_duration")]
    pub step_duration: String,
    /// What the spans of the rollout variant must show for a step to pass.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Hold at the current step: no step up, no rollback.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// The most `spec.downstreamServices` a rollout may name: each takes an equal share
/// of the error budget, so many would leave each too little to catch anything.
pub const MAX_DOWNSTREAM_SERVICES: usize = 16;

fn default_step_duration() -> String {
    "30s".to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The flag: its variants, the variant everybody else gets, and the one the steps
/// hand out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.defaultVariant in self.variants",
        "message": "spec.flag.defaultVariant must be one of the names in spec.flag.variants",
    },
    {
        "rule": "!has(self.rolloutVariant) || self.rolloutVariant in self.variants",
        "message": "spec.flag.rolloutVariant must be one of the names in spec.flag.variants",
    },
    {
        "rule": "!has(self.rolloutVariant) || self.rolloutVariant != self.defaultVariant",
        "message": "spec.flag.rolloutVariant must differ from spec.flag.defaultVariant, or nothing would change",
    },
]))]
pub struct FlagSpec {
    /// Flag key, as applications ask for it over OFREP.
    #[schemars(length(min = 1, max = 256))]
    pub key: String,
    /// Variant name → value (bool, string, number or object).
    #[schemars(schema_with = "variants_schema")]
    pub variants: BTreeMap<String, serde_json::Value>,
    /// The variant everyone else gets; also the baseline the analysis compares to.
    pub default_variant: String,
    /// The variant the steps hand out. Required with `steps`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_variant: String,
}

fn variants_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "minProperties": 1,
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// What the rollout variant is judged by. Every threshold is a tolerance: the
/// regression the user accepts. A check alarms only when the spans show, with the
/// rollout's `confidence`, that the rollout variant is worse than its tolerance;
/// an unset threshold is not checked. A rollout with none still needs
/// `minSamples` per variant to pass.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// `false` makes the steps a plain timed ramp: each advances when its dwell is
    /// over, with no spans judged and no rollback. With it `true` (the default) the
    /// steps need at least one threshold to judge them by.
    #[serde(default = "enabled_by_default", skip_serializing_if = "is_enabled")]
    pub enabled: bool,
    /// Spans needed per variant in the current step before it may pass.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u64,
    /// Probability that a rollout whose variant stays within every tolerance is
    /// never rolled back, over all its steps, checks and looks (0.99: at most 1
    /// rollout in 100 within tolerance is rolled back).
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.5, max = 0.999999))]
    pub confidence: f64,
    /// Longest a step may wait for `minSamples` (Go duration). Past it the step
    /// holds, says so in status and an event, and never passes without the spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step_duration: Option<String>,
    /// Highest error rate (0–1) tolerated for the rollout variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub max_error_rate: Option<f64>,
    /// Highest tolerated error rate of the rollout variant minus the default
    /// variant's (0.01: one percentage point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub max_error_rate_increase: Option<f64>,
    /// Highest tolerated latency quantiles of the rollout variant, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<LatencyQuantiles>,
    /// Highest tolerated relative p99 increase over the default variant (0.25 = 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_latency_increase: Option<f64>,
}

fn enabled_by_default() -> bool {
    true
}

fn is_enabled(enabled: &bool) -> bool {
    *enabled
}

fn default_min_samples() -> u64 {
    200
}

fn default_confidence() -> f64 {
    0.99
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_samples: default_min_samples(),
            confidence: default_confidence(),
            max_step_duration: None,
            max_error_rate: None,
            max_error_rate_increase: None,
            max_latency_ms: None,
            max_latency_increase: None,
        }
    }
}

impl AnalysisSpec {
    /// Whether any check is asked for: a threshold on errors or latency.
    pub fn has_threshold(&self) -> bool {
        self.max_error_rate.is_some()
            || self.max_error_rate_increase.is_some()
            || self.max_latency_ms.is_some()
            || self.max_latency_increase.is_some()
    }
}

/// Latency quantiles in milliseconds; as a threshold, the ones given are checked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
pub struct LatencyQuantiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

impl LatencyQuantiles {
    /// The quantiles that are set, with their names, smallest quantile first.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64, f64)> {
        [
            ("p50", 0.50, self.p50),
            ("p90", 0.90, self.p90),
            ("p95", 0.95, self.p95),
            ("p99", 0.99, self.p99),
        ]
        .into_iter()
        .filter_map(|(name, q, v)| v.map(|v| (name, q, v)))
    }
}

/// Where a rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Seen, not started yet.
    #[default]
    Pending,
    /// Handing the rollout variant to the current step's share and judging it.
    Progressing,
    /// Held by `spec.paused`.
    Paused,
    /// Everyone gets the rollout variant.
    Promoted,
    /// The analysis failed; everyone gets the default variant again.
    RolledBack,
    /// The spec cannot be carried out; `message` says why.
    Invalid,
    /// A flag without steps: served as its targeting says, nothing rolled out or judged.
    Serving,
}

impl Phase {
    /// Whether the rollout has ended (nothing moves until the spec changes).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Promoted | Phase::RolledBack | Phase::Invalid | Phase::Serving
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Observed state of a rollout, kept by the controller. Everything needed to resume
/// after a restart is here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureRolloutStatus {
    #[serde(default)]
    pub phase: Phase,
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Index into `spec.steps` of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// The current step counted from 1, out of how many (`2/5`), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Percent of users handed the rollout variant right now.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: f64,
    /// The weight served before the current one. Spans evaluated at it may still
    /// arrive during the step (an exporter's batch delay, a client's cached flag
    /// value), so the sample-ratio check accepts any share between the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub previous_weight: Option<f64>,
    /// When the current step started, to the microsecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<MicroTime>,
    /// Counts the analysis windows: one more whenever a step starts, so the spans
    /// of a step are told apart from those of the one before, after a restart too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Why the current step holds although it could otherwise move on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// What the finished steps of this rollout showed, oldest first: the error
    /// checks weigh them with the current step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_steps: Vec<StepEvidence>,
    /// Fingerprint of what is being rolled out (flag, variants, revision, service,
    /// bucketing); when it changes the rollout starts again from the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The trace (32 hex digits) that holds every decision of this run of the
    /// rollout, from its start: search it in Jaeger to read the whole rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The `rollout` span at the root of that trace (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_root_span_id: Option<String>,
    /// That trace in the trace backend, when the operator runs with
    /// `--trace-url-template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// Outcome of the last verdict, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictOutcome>,
    /// One sentence on where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last verdict with its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<VerdictRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The latest transitions, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
}

/// What the analysis concluded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerdictOutcome {
    Pass,
    Fail,
    Inconclusive,
}

impl std::fmt::Display for VerdictOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A verdict with the evidence it was reached on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub outcome: VerdictOutcome,
    /// Why, in one sentence: the failed checks with their evidence, or what is missing.
    pub message: String,
    /// Names of the checks that failed (`maxErrorRate`, `maxLatencyMs.p99`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
    /// The rollout's `analysis.confidence` the checks were run at.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Every check run, with its estimate, interval, threshold and outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckEvidence>,
    /// Whether the share of units that got the rollout variant fits the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<SampleRatioEvidence>,
    /// Spans of the default variant.
    pub baseline: VariantEvidence,
    /// Spans of the rollout variant.
    pub candidate: VariantEvidence,
    /// The commit judged (`spec.revision`), when the spec names one: a search by
    /// `vcs.ref.head.revision` finds the verdict's spans and its decisions alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Trace IDs (hex) of failing spans of the rollout variant (of `spec.service` and
    /// of the downstream services), to open in Jaeger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplar_trace_ids: Vec<String>,
    /// Spans of the rollout variant worth opening: the failing ones above and the
    /// slowest, with their span IDs; decision spans link to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplar_spans: Vec<ExemplarSpan>,
}

/// One span of the rollout variant a verdict points at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExemplarSpan {
    /// Hex, 32 digits.
    pub trace_id: String,
    /// Hex, 16 digits.
    pub span_id: String,
    pub why: ExemplarReason,
    /// The span in the trace backend, when the operator runs with
    /// `--trace-url-template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

/// Why a verdict points at a span.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExemplarReason {
    /// It failed (status ERROR).
    Error,
    /// It was the slowest of its step.
    Slowest,
}

/// One check of a verdict: what it estimated, how sure, against which tolerance.
/// Later analyses (more services, more replicas) add checks, never another schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckEvidence {
    /// The threshold's name in the spec (`maxErrorRateIncrease`, `maxLatencyMs.p99`).
    pub name: String,
    /// `service.name` of the spans judged.
    pub service: String,
    /// The spans the check weighed: the current step's, or every step's so far.
    pub scope: CheckScope,
    /// What the estimate is: a fraction (error rates), milliseconds, or a relative
    /// change (0.25 = +25%).
    pub unit: EvidenceUnit,
    /// The estimate; absent without spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// Lower end of the estimate's anytime-valid confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// Upper end of the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// The tolerance from the spec, in the estimate's unit.
    pub threshold: f64,
    pub outcome: CheckOutcome,
    /// The share of the rollout's error budget (1 − confidence) this check spends on
    /// this scope: the chance it ever fails here while the tolerance holds.
    pub alpha: f64,
    /// The check in one sentence, with its numbers.
    pub message: String,
}

/// Which spans a check weighed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckScope {
    /// The current step's spans: catches a regression that shows only at this weight.
    Step,
    /// Every step's spans since the first, each step weighed on its own: catches a
    /// regression early, before the step has many spans.
    Rollout,
}

/// The unit of a check's estimate, interval and threshold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EvidenceUnit {
    /// 0–1 (an error rate, or a difference of error rates).
    Fraction,
    Milliseconds,
    /// A relative change: 0.25 = +25%.
    Relative,
}

/// What one check concluded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckOutcome {
    /// Not shown to exceed its tolerance (yet).
    Pass,
    /// Shown, with the rollout's confidence, to exceed its tolerance.
    Fail,
    /// No spans to estimate from.
    Inconclusive,
}

impl std::fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The sample-ratio check: the share of units that got the rollout variant,
/// against the step's weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SampleRatioEvidence {
    /// Distinct units (bucketing values) assigned by the split, as sampled.
    pub units: u64,
    /// Of those, the ones in the rollout variant.
    pub candidate_units: u64,
    /// The weight as a fraction.
    pub expected_share: f64,
    /// The previous weight as a fraction, when the step changed it: any share
    /// between the two fits, since units evaluated at either may be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_share_from: Option<f64>,
    /// The e-value against "the share equals the weight" (or lies between the
    /// two weights); at `1/alpha` or more the data cannot be trusted.
    pub e_value: f64,
    pub alpha: f64,
    /// Whether the share departs from the weight by more than chance allows.
    pub mismatch: bool,
    /// Why the check could not be run, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Why a step holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Hold {
    /// The share of units in the rollout variant does not fit the weight.
    SampleRatioMismatch,
    /// `analysis.maxStepDuration` passed before both variants had `minSamples`.
    StepDeadlineExceeded,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What a finished step showed, kept so later steps can weigh it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepEvidence {
    pub step: u32,
    pub weight: f64,
    pub baseline: ArmEvidence,
    pub candidate: ArmEvidence,
}

/// The error counts of one arm during one step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArmEvidence {
    pub samples: u64,
    pub errors: u64,
    /// Variance of the error rate computed between groups of units, when spans
    /// carried their bucketing value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_unit_variance: Option<f64>,
    /// Groups of units the variance was computed from.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub unit_groups: u32,
    /// What the spans stood for, when some were sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingEvidence>,
}

/// What an arm's spans stood for when some of them were sampled (their
/// `tracestate` recorded a sampling threshold): the judge counts each span by its
/// adjusted count, and rates and latencies are those of the traffic sampled from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamplingEvidence {
    /// Σ adjusted counts: how many spans the arm's spans stand for.
    pub adjusted_samples: u64,
    /// Σ adjusted counts of erroring spans.
    pub adjusted_errors: u64,
    /// Σw²/Σw of the erroring spans and of the others: how much sampling widens
    /// the error rate's variance.
    pub error_weight: f64,
    pub other_weight: f64,
    /// The largest adjusted count of one span.
    pub max_weight: u32,
    /// The most one more error can raise the adjusted error count by (the largest
    /// adjusted count of an erroring span; of any while none erred): the jump the
    /// error checks' boundaries allow for.
    #[serde(default)]
    pub error_jump: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The verdict as recorded in status: when, and at which step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerdictRecord {
    pub at: Time,
    pub step: u32,
    pub weight: f64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What the spans of one variant showed during a step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantEvidence {
    pub variant: String,
    pub samples: u64,
    pub errors: u64,
    /// errors / samples; absent when there are no samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Latency quantiles in milliseconds; absent when there are no samples.
    #[serde(default)]
    pub latency_ms: LatencyQuantiles,
    /// Variance of the error rate computed between groups of units, when spans
    /// carried their bucketing value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_unit_variance: Option<f64>,
    /// Groups of units that variance was computed from.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub unit_groups: u32,
    /// What the spans stood for, when some were sampled: `errorRate` and the
    /// latencies are then those of the traffic sampled from, while `samples` and
    /// `errors` count the spans received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingEvidence>,
}

impl VariantEvidence {
    /// The counts a later step weighs this one by.
    pub fn arm_evidence(&self) -> ArmEvidence {
        ArmEvidence {
            samples: self.samples,
            errors: self.errors,
            error_rate_unit_variance: self.error_rate_unit_variance,
            unit_groups: self.unit_groups,
            sampling: self.sampling,
        }
    }
}

/// One change of phase or step, kept in `status.history`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub at: Time,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub weight: f64,
    /// CamelCase reason, the same as the event's (`StepAdvanced`, `RolledBack`, ...).
    pub reason: String,
    pub message: String,
}
