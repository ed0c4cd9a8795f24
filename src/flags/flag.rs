//! The compiled flag and its evaluation.

use std::borrow::Cow;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::attribute::{Attribute, Env};
use super::bucket;
use super::context::Context;
use super::jsonlogic::value::to_js_string;
use super::private::PrivateAttributes;
use super::targeting::{NumberText, RuleMatch, Targeting, bucketing_value};

/// Weights are in basis points of a percent: 10 000 is everyone. Steps may have two
/// decimals (0.25%), and flagd's `fractional` gets the same integer weights.
pub const WEIGHT_SCALE: u64 = 10_000;

/// `percent` (0–100, two decimals) as a weight out of [`WEIGHT_SCALE`].
pub fn percent_to_weight(percent: f64) -> u64 {
    (percent.clamp(0.0, 100.0) * (WEIGHT_SCALE as f64 / 100.0)).round() as u64
}

/// One variant of a flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub value: Value,
}

/// Whether a flag is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagState {
    Enabled,
    /// Served as its default variant with reason DISABLED.
    Disabled,
}

/// The share of users handed `variant`, the rest getting the default.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentageRollout {
    /// Index into [`Flag::variants`].
    pub variant: usize,
    /// Out of [`WEIGHT_SCALE`].
    pub weight: u64,
    /// Context attribute to bucket by (`targetingKey` unless the rollout says).
    pub bucket_by: Attribute,
}

/// A flag ready to evaluate.
#[derive(Debug, Clone)]
pub struct Flag {
    pub key: String,
    pub variants: Vec<Variant>,
    /// Index into `variants`; `None` (a flagd flag with a null `defaultVariant`)
    /// defers to the application's code default.
    pub default_variant: Option<usize>,
    pub state: FlagState,
    /// Targets, exclusions and rules, shared between the flag's versions.
    pub targeting: Arc<Targeting>,
    pub percentage: Option<PercentageRollout>,
    /// Served as OFREP `metadata`: the rollout, its phase and step. Never holds
    /// context attributes.
    pub metadata: Map<String, Value>,
    /// Attributes that must not leave the process, besides the operator-wide ones.
    pub private_attributes: PrivateAttributes,
}

/// Equal flags evaluate alike and read alike: targeting is compared by its
/// fingerprint, as [`Flag::fingerprint`] does, not rule by rule.
impl PartialEq for Flag {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.variants == other.variants
            && self.default_variant == other.default_variant
            && self.state == other.state
            && (Arc::ptr_eq(&self.targeting, &other.targeting)
                || self.targeting.fingerprint == other.targeting.fingerprint)
            && self.percentage == other.percentage
            && self.metadata == other.metadata
            && self.private_attributes == other.private_attributes
    }
}

/// Why a flag resolved to its variant, as OFREP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing to decide: everyone gets this variant.
    Static,
    /// The default variant because no rule or share applied.
    Default,
    TargetingMatch,
    /// Picked by the percentage split.
    Split,
    Disabled,
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// What decided a resolution, for OFREP metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched<'f> {
    /// Nothing targeted the context: the percentage or the default decided.
    Nothing,
    /// An individual target.
    Target,
    /// An exclusion kept the default variant.
    Exclusion,
    /// Rule `index`, named `name`.
    Rule { index: usize, name: &'f str },
    /// The flagd targeting expression.
    Flagd,
}

/// A resolved flag value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution<'f> {
    /// `None` when the flag defers to the application's code default.
    pub variant: Option<&'f str>,
    pub value: Option<&'f Value>,
    pub reason: Reason,
    pub matched: Matched<'f>,
}

/// Why a flag could not be evaluated for a context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// The attribute the flag buckets by is absent (OFREP `TARGETING_KEY_MISSING`).
    #[error("the context has no {attribute}, which flag {flag:?} buckets users by")]
    TargetingKeyMissing { flag: String, attribute: String },
    /// The bucketing attribute is there but is not a string or a number.
    #[error("context attribute {attribute} must be a string or a number to bucket by")]
    InvalidBucketingValue { attribute: String },
    /// The flag's flagd targeting gave a value that names none of its variants
    /// (OFREP `GENERAL`). The value is not quoted: it may come from the context.
    #[error("the targeting of flag {flag:?} gave a value that is not one of its variants")]
    UnknownVariant { flag: String },
    /// The flag's definition cannot be evaluated (OFREP `PARSE_ERROR`).
    #[error("flag {flag:?} cannot be evaluated: {details}")]
    InvalidDefinition { flag: String, details: String },
}

impl Flag {
    /// A flag that serves `default_variant` to everyone (until targeting or a
    /// percentage is added).
    pub fn new(key: impl Into<String>, variants: Vec<Variant>, default_variant: usize) -> Self {
        Self {
            key: key.into(),
            variants,
            default_variant: Some(default_variant),
            state: FlagState::Enabled,
            targeting: Arc::default(),
            percentage: None,
            metadata: Map::new(),
            private_attributes: PrivateAttributes::default(),
        }
    }

    pub fn variant_name(&self, index: usize) -> &str {
        &self.variants[index].name
    }

    fn resolve<'f>(
        &'f self,
        index: Option<usize>,
        reason: Reason,
        matched: Matched<'f>,
    ) -> Resolution<'f> {
        let variant = index.map(|i| &self.variants[i]);
        Resolution {
            variant: variant.map(|v| v.name.as_str()),
            value: variant.map(|v| &v.value),
            reason,
            matched,
        }
    }

    /// Resolves the flag for an OFREP evaluation context at time `now`: individual
    /// targets, then exclusions (below 100%), then rules, then the percentage.
    pub fn evaluate(
        &self,
        context: &Context<'_>,
        now: Timestamp,
    ) -> Result<Resolution<'_>, EvaluationError> {
        // As flagd: a disabled flag defers to the application's code default.
        if self.state == FlagState::Disabled {
            return Ok(self.resolve(None, Reason::Disabled, Matched::Nothing));
        }
        if let Some(details) = &self.targeting.invalid {
            return Err(EvaluationError::InvalidDefinition {
                flag: self.key.clone(),
                details: details.clone(),
            });
        }
        let targeting = &*self.targeting;
        let env = Env::new(context, &self.key, now.as_second());
        if let Some(variant) = targeting.target(&env) {
            return Ok(self.resolve(Some(variant), Reason::TargetingMatch, Matched::Target));
        }
        let partial = self
            .percentage
            .as_ref()
            .is_some_and(|p| p.weight < WEIGHT_SCALE);
        if partial && targeting.excluded(&env) {
            return Ok(self.resolve(
                self.default_variant,
                Reason::TargetingMatch,
                Matched::Exclusion,
            ));
        }
        if let Some(RuleMatch {
            index,
            name,
            variant,
        }) = targeting.rule(&env, &self.key)?
        {
            return Ok(self.resolve(
                Some(variant),
                Reason::TargetingMatch,
                Matched::Rule { index, name },
            ));
        }
        if let Some(expression) = &targeting.expression {
            let result = expression.evaluate(&env);
            if !result.is_null() {
                let name = match &*result {
                    Value::String(s) => Cow::Borrowed(s.as_str()),
                    other => Cow::Owned(to_js_string(other)),
                };
                let variant = self
                    .variants
                    .iter()
                    .position(|v| v.name == name)
                    .ok_or_else(|| EvaluationError::UnknownVariant {
                        flag: self.key.clone(),
                    })?;
                return Ok(self.resolve(Some(variant), Reason::TargetingMatch, Matched::Flagd));
            }
        }
        self.fall_through(&env)
    }

    /// The percentage, or the default variant, for whoever targeting did not decide.
    fn fall_through(&self, env: &Env<'_>) -> Result<Resolution<'_>, EvaluationError> {
        // Without targeting, a fixed answer is static; with it, falling through is
        // the pre-configured default for the rest.
        let fixed = if self.targeting.is_empty() {
            Reason::Static
        } else {
            Reason::Default
        };
        let Some(rollout) = &self.percentage else {
            // As flagd: no variant at all means the caller's code default, which
            // is a DEFAULT answer even when nothing targets.
            let reason = if self.default_variant.is_some() {
                fixed
            } else {
                Reason::Default
            };
            return Ok(self.resolve(self.default_variant, reason, Matched::Nothing));
        };
        if rollout.weight == 0 {
            return Ok(self.resolve(self.default_variant, Reason::Default, Matched::Nothing));
        }
        if rollout.weight >= WEIGHT_SCALE {
            return Ok(self.resolve(Some(rollout.variant), fixed, Matched::Nothing));
        }
        let mut buffer = NumberText::default();
        let value = bucketing_value(env, &self.key, &rollout.bucket_by, &mut buffer)?;
        let in_rollout = bucket::bucket(&self.key, value, WEIGHT_SCALE) < rollout.weight;
        let index = if in_rollout {
            Some(rollout.variant)
        } else {
            self.default_variant
        };
        Ok(self.resolve(index, Reason::Split, Matched::Nothing))
    }

    /// A hash of everything that decides what the flag serves, stable across
    /// processes: two flags with equal fingerprints answer every request alike.
    pub fn fingerprint(&self) -> u64 {
        let variants: Vec<(&str, &Value)> = self
            .variants
            .iter()
            .map(|v| (v.name.as_str(), &v.value))
            .collect();
        let percentage = self
            .percentage
            .as_ref()
            .map(|p| (p.variant, p.weight, p.bucket_by.text()));
        let text = serde_json::json!([
            self.key,
            variants,
            self.default_variant,
            self.state == FlagState::Enabled,
            self.targeting.fingerprint,
            percentage,
            self.metadata,
            self.private_attributes.texts(),
        ]);
        crate::fingerprint::fnv1a(text.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flag(weight: u64, bucket_by: Option<&str>) -> Flag {
        let mut flag = Flag::new(
            "new-checkout",
            vec![
                Variant {
                    name: "off".into(),
                    value: json!(false),
                },
                Variant {
                    name: "on".into(),
                    value: json!(true),
                },
            ],
            0,
        );
        flag.percentage = Some(PercentageRollout {
            variant: 1,
            weight,
            bucket_by: bucket_by
                .map_or_else(Attribute::targeting_key, |b| Attribute::parse(b).unwrap()),
        });
        flag
    }

    fn now() -> Timestamp {
        Timestamp::UNIX_EPOCH
    }

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn weight_zero_serves_default_and_full_weight_serves_rollout() {
        let c = ctx(json!({}));
        let (none, all) = (flag(0, None), flag(WEIGHT_SCALE, None));
        let r = none.evaluate(&Context::new(&c), now()).unwrap();
        assert_eq!((r.variant, r.reason), (Some("off"), Reason::Default));
        let r = all.evaluate(&Context::new(&c), now()).unwrap();
        assert_eq!((r.variant, r.reason), (Some("on"), Reason::Static));
    }

    #[test]
    fn no_default_variant_and_no_targeting_is_the_code_default_not_static() {
        let c = ctx(json!({}));
        let mut f = Flag::new(
            "null-default",
            vec![Variant {
                name: "on".into(),
                value: json!(true),
            }],
            0,
        );
        f.default_variant = None;
        let r = f.evaluate(&Context::new(&c), now()).unwrap();
        assert_eq!(
            (r.variant, r.value, r.reason),
            (None, None, Reason::Default)
        );
        // A default variant without targeting stays a static answer.
        f.default_variant = Some(0);
        let r = f.evaluate(&Context::new(&c), now()).unwrap();
        assert_eq!((r.variant, r.reason), (Some("on"), Reason::Static));
    }

    #[test]
    fn a_split_needs_the_bucketing_attribute() {
        let err = flag(500, Some("accountId"))
            .evaluate(&Context::new(&ctx(json!({"targetingKey": "u1"}))), now())
            .unwrap_err();
        assert!(
            matches!(err, EvaluationError::TargetingKeyMissing { ref attribute, .. } if attribute == "accountId")
        );
        assert!(
            flag(500, None)
                .evaluate(&Context::new(&ctx(json!({"accountId": "a"}))), now())
                .is_err()
        );
    }

    #[test]
    fn users_in_the_rollout_stay_in_it_as_the_weight_grows() {
        let steps = [100, 500, 2500, 5000];
        for i in 0..20_000 {
            let c = ctx(json!({"targetingKey": format!("user-{i}")}));
            let mut was_on = false;
            for &w in &steps {
                let on = flag(w, None)
                    .evaluate(&Context::new(&c), now())
                    .unwrap()
                    .variant
                    == Some("on");
                assert!(on || !was_on, "user-{i} lost the rollout variant at {w}");
                was_on = on;
            }
        }
    }

    #[test]
    fn share_is_within_one_percent_of_the_weight_over_100k_keys() {
        for percent in [1.0, 5.0, 25.0, 50.0] {
            let f = flag(percent_to_weight(percent), Some("accountId"));
            let on = (0..100_000)
                .filter(|i| {
                    let c = ctx(json!({"accountId": format!("acct-{i}")}));
                    f.evaluate(&Context::new(&c), now()).unwrap().variant == Some("on")
                })
                .count();
            let share = on as f64 / 1000.0;
            assert!((share - percent).abs() <= 1.0, "{percent}%: got {share}%");
        }
    }

    #[test]
    fn every_user_of_one_account_gets_the_same_variant() {
        let f = flag(2500, Some("accountId"));
        for account in 0..200 {
            let first = f
                .evaluate(
                    &Context::new(&ctx(
                        json!({"targetingKey": "u0", "accountId": format!("a{account}")}),
                    )),
                    now(),
                )
                .unwrap()
                .variant;
            for user in 1..20 {
                let c = ctx(
                    json!({"targetingKey": format!("u{user}"), "accountId": format!("a{account}")}),
                );
                assert_eq!(f.evaluate(&Context::new(&c), now()).unwrap().variant, first);
            }
        }
    }
}
