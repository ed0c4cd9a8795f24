//! Export to flagd's flag-definition format, so flagd and flagd's in-process
//! providers evaluate exactly what OFREP serves. A percentage rollout becomes a
//! `fractional` over the same integer weights and the same bucketing string (flag
//! key + bucketing value), guarded so that a context without the bucketing
//! attribute gets the default variant.

use serde_json::{Map, Value, json};

use super::{Flag, FlagState, WEIGHT_SCALE};

/// One flag as a flagd flag definition.
pub fn flag_definition(flag: &Flag) -> Value {
    let variants: Map<String, Value> = flag
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    let mut definition = json!({
        "state": if flag.state == FlagState::Enabled { "ENABLED" } else { "DISABLED" },
        "variants": variants,
        "defaultVariant": flag.default_variant.map(|d| flag.variant_name(d)),
    });
    // flagd metadata holds only strings, numbers and booleans.
    let metadata: Map<String, Value> = flag
        .metadata
        .iter()
        .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !metadata.is_empty() {
        definition["metadata"] = Value::Object(metadata);
    }
    if let Some(rollout) = &flag.percentage {
        let rollout_variant = flag.variant_name(rollout.variant);
        if rollout.weight >= WEIGHT_SCALE {
            definition["defaultVariant"] = json!(rollout_variant);
        } else if rollout.weight > 0 {
            let attribute = rollout.bucket_by.text();
            definition["targeting"] = json!({
                "if": [
                    {"var": attribute},
                    {"fractional": [
                        {"cat": [{"var": "$flagd.flagKey"}, {"var": attribute}]},
                        [rollout_variant, rollout.weight],
                        [flag.default_variant.map(|d| flag.variant_name(d)), WEIGHT_SCALE - rollout.weight],
                    ]},
                    null,
                ]
            });
        }
    }
    definition
}

/// A whole flag set, as a flagd flag-definition document.
pub fn flag_set<'f>(flags: impl IntoIterator<Item = &'f Flag>) -> Value {
    let flags: Map<String, Value> = flags
        .into_iter()
        .map(|f| (f.key.clone(), flag_definition(f)))
        .collect();
    json!({ "flags": flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Attribute, PercentageRollout, Variant};

    fn flag(weight: u64) -> Flag {
        let variants = vec![
            Variant {
                name: "off".into(),
                value: json!(false),
            },
            Variant {
                name: "on".into(),
                value: json!(true),
            },
        ];
        let mut flag = Flag::new("new-checkout", variants, 0);
        flag.percentage = Some(PercentageRollout {
            variant: 1,
            weight,
            bucket_by: Attribute::parse("accountId").unwrap(),
        });
        flag.metadata = Map::from_iter([("step".to_string(), json!(1))]);
        flag
    }

    #[test]
    fn a_split_is_a_guarded_fractional_over_the_same_weights() {
        let d = flag_definition(&flag(2500));
        assert_eq!(d["defaultVariant"], "off");
        assert_eq!(d["metadata"]["step"], 1);
        assert_eq!(
            d["targeting"],
            json!({"if": [
                {"var": "accountId"},
                {"fractional": [
                    {"cat": [{"var": "$flagd.flagKey"}, {"var": "accountId"}]},
                    ["on", 2500],
                    ["off", 7500]
                ]},
                null
            ]})
        );
    }

    #[test]
    fn no_share_and_full_share_need_no_targeting() {
        let none = flag_definition(&flag(0));
        assert_eq!(
            (none["defaultVariant"].as_str(), none.get("targeting")),
            (Some("off"), None)
        );
        let all = flag_definition(&flag(WEIGHT_SCALE));
        assert_eq!(
            (all["defaultVariant"].as_str(), all.get("targeting")),
            (Some("on"), None)
        );
    }
}
