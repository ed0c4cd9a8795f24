//! The compiled flag and its evaluation.

use serde_json::{Map, Value};

use super::bucket;

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
    /// Context attribute to bucket by; `None` means `targetingKey`.
    pub bucket_by: Option<String>,
}

/// A flag ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub key: String,
    pub variants: Vec<Variant>,
    /// Index into `variants`.
    pub default_variant: usize,
    pub state: FlagState,
    pub percentage: Option<PercentageRollout>,
    /// Served as OFREP `metadata`: the rollout, its phase and step. Never holds
    /// context attributes.
    pub metadata: Map<String, Value>,
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

/// A resolved flag value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution<'f> {
    pub variant: &'f str,
    pub value: &'f Value,
    pub reason: Reason,
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
}

const TARGETING_KEY: &str = "targetingKey";

impl Flag {
    pub fn variant_name(&self, index: usize) -> &str {
        &self.variants[index].name
    }

    fn resolve(&self, index: usize, reason: Reason) -> Resolution<'_> {
        let v = &self.variants[index];
        Resolution {
            variant: &v.name,
            value: &v.value,
            reason,
        }
    }

    /// Resolves the flag for an OFREP evaluation context.
    pub fn evaluate(
        &self,
        context: &Map<String, Value>,
    ) -> Result<Resolution<'_>, EvaluationError> {
        if self.state == FlagState::Disabled {
            return Ok(self.resolve(self.default_variant, Reason::Disabled));
        }
        let Some(rollout) = &self.percentage else {
            return Ok(self.resolve(self.default_variant, Reason::Static));
        };
        if rollout.weight == 0 {
            return Ok(self.resolve(self.default_variant, Reason::Default));
        }
        if rollout.weight >= WEIGHT_SCALE {
            return Ok(self.resolve(rollout.variant, Reason::Static));
        }
        let attribute = rollout.bucket_by.as_deref().unwrap_or(TARGETING_KEY);
        let mut number_text = String::new();
        let value = match context.get(attribute) {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Number(n)) => number_as_text(n, &mut number_text),
            None | Some(Value::Null) => {
                return Err(EvaluationError::TargetingKeyMissing {
                    flag: self.key.clone(),
                    attribute: attribute.to_string(),
                });
            }
            Some(_) => {
                return Err(EvaluationError::InvalidBucketingValue {
                    attribute: attribute.to_string(),
                });
            }
        };
        let in_rollout = bucket::bucket(&self.key, value, WEIGHT_SCALE) < rollout.weight;
        let index = if in_rollout {
            rollout.variant
        } else {
            self.default_variant
        };
        Ok(self.resolve(index, Reason::Split))
    }
}

/// Numbers bucket by their JSON text, as JsonLogic's `cat` would render them.
fn number_as_text<'b>(n: &serde_json::Number, buf: &'b mut String) -> &'b str {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{n}");
    buf.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flag(weight: u64, bucket_by: Option<&str>) -> Flag {
        Flag {
            key: "new-checkout".into(),
            variants: vec![
                Variant {
                    name: "off".into(),
                    value: json!(false),
                },
                Variant {
                    name: "on".into(),
                    value: json!(true),
                },
            ],
            default_variant: 0,
            state: FlagState::Enabled,
            percentage: Some(PercentageRollout {
                variant: 1,
                weight,
                bucket_by: bucket_by.map(str::to_string),
            }),
            metadata: Map::new(),
        }
    }

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn weight_zero_serves_default_and_full_weight_serves_rollout() {
        let c = ctx(json!({}));
        let (none, all) = (flag(0, None), flag(WEIGHT_SCALE, None));
        let r = none.evaluate(&c).unwrap();
        assert_eq!((r.variant, r.reason), ("off", Reason::Default));
        let r = all.evaluate(&c).unwrap();
        assert_eq!((r.variant, r.reason), ("on", Reason::Static));
    }

    #[test]
    fn a_split_needs_the_bucketing_attribute() {
        let err = flag(500, Some("accountId"))
            .evaluate(&ctx(json!({"targetingKey": "u1"})))
            .unwrap_err();
        assert!(
            matches!(err, EvaluationError::TargetingKeyMissing { ref attribute, .. } if attribute == "accountId")
        );
        assert!(
            flag(500, None)
                .evaluate(&ctx(json!({"accountId": "a"})))
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
                let on = flag(w, None).evaluate(&c).unwrap().variant == "on";
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
                    f.evaluate(&c).unwrap().variant == "on"
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
                .evaluate(&ctx(
                    json!({"targetingKey": "u0", "accountId": format!("a{account}")}),
                ))
                .unwrap()
                .variant;
            for user in 1..20 {
                let c = ctx(
                    json!({"targetingKey": format!("u{user}"), "accountId": format!("a{account}")}),
                );
                assert_eq!(f.evaluate(&c).unwrap().variant, first);
            }
        }
    }
}
