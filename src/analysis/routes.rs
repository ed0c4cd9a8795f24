//! Which rollout a span sample counts for, and on which arm.

use foldhash::HashMap;

use super::window::unit_hash;
use super::{Arm, Observation, SpanSample};
use crate::api::FeatureRolloutSpec;

/// Names one analysis window of a rollout: the status's `epoch`, which the state
/// machine raises whenever a step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowEpoch(pub u64);

/// The context attribute a bucketing value is read from when `bucketBy` is unset.
pub const TARGETING_KEY: &str = "targetingKey";

/// What one rollout listens to during its current step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name` of the rollout.
    pub rollout: String,
    /// `service.name` of the spans that count.
    pub service: String,
    pub flag_key: String,
    /// When set, only spans of this revision count.
    pub revision: Option<String>,
    /// The default variant: everyone not in the rollout.
    pub baseline_variant: String,
    /// The variant the steps hand out.
    pub candidate_variant: String,
    /// The span attribute that carries the bucketing value (`spec.bucketBy`); `None`
    /// when users are bucketed by targeting key, which spans carry as
    /// `feature_flag.context.id`.
    pub bucket_by: Option<String>,
    /// Changes whenever the rollout's step changes, so its window restarts.
    pub epoch: WindowEpoch,
}

impl Route {
    /// The route of rollout `rollout` (`namespace/name`) at `epoch`.
    pub fn from_spec(rollout: String, spec: &FeatureRolloutSpec, epoch: WindowEpoch) -> Self {
        Self {
            rollout,
            service: spec.service.clone(),
            flag_key: spec.flag.key.clone(),
            revision: spec.revision.clone(),
            baseline_variant: spec.flag.default_variant.clone(),
            candidate_variant: spec.flag.rollout_variant.clone(),
            bucket_by: spec
                .bucket_by
                .clone()
                .filter(|b| b != TARGETING_KEY && !b.is_empty()),
            epoch,
        }
    }

    /// The attribute whose value is a unit of this rollout, for messages.
    pub fn unit_attribute(&self) -> &str {
        self.bucket_by
            .as_deref()
            .unwrap_or("feature_flag.context.id")
    }

    /// What `sample` contributes to this route's window; `attribute` reads a span
    /// attribute by name (for the `bucketBy` value).
    pub fn observation<'s>(
        &self,
        sample: &SpanSample<'s>,
        attribute: impl FnOnce(&str) -> Option<&'s str>,
    ) -> Observation {
        let unit = match &self.bucket_by {
            Some(name) => attribute(name),
            None => sample.context_id,
        };
        self.observation_of_unit(sample, unit.filter(|u| !u.is_empty()).map(unit_hash))
    }

    /// What `sample` contributes, its unit's [`unit_hash`] already known (`spangate
    /// simulate` hashes each synthetic user once, not once a span).
    pub fn observation_of_unit(&self, sample: &SpanSample<'_>, unit: Option<u64>) -> Observation {
        Observation {
            is_error: sample.is_error,
            duration_ns: sample.duration_ns,
            trace_id: sample.trace_id,
            span_id: sample.span_id,
            unit,
            split: sample.split(),
        }
    }

    /// The arm `sample` is on, if it counts for this route at all; the caller has
    /// matched its service and flag key already (the index of [`Routes`] does).
    fn arm_of(&self, sample: &SpanSample) -> Option<Arm> {
        if let Some(revision) = &self.revision
            && sample.revision != Some(revision.as_str())
        {
            return None;
        }
        if sample.variant == self.baseline_variant {
            Some(Arm::Baseline)
        } else if sample.variant == self.candidate_variant {
            Some(Arm::Candidate)
        } else {
            None
        }
    }
}

/// Every active route, indexed by service and flag key so that routing a sample
/// hashes two borrowed strings and allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
    /// service → flag key → indices into `routes`.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::default();
        for (i, route) in routes.iter().enumerate() {
            index
                .entry(route.service.clone())
                .or_default()
                .entry(route.flag_key.clone())
                .or_default()
                .push(i);
        }
        Self { routes, index }
    }

    /// Every route `sample` counts for, with its arm there. A variant that is
    /// neither the baseline nor the candidate counts nowhere.
    pub fn route<'r>(&'r self, sample: &SpanSample) -> impl Iterator<Item = (&'r Route, Arm)> {
        let candidates = self
            .index
            .get(sample.service)
            .and_then(|by_flag| by_flag.get(sample.flag_key))
            .map_or(&[][..], Vec::as_slice);
        let sample = *sample;
        candidates.iter().filter_map(move |&i| {
            let route = &self.routes[i];
            route.arm_of(&sample).map(|arm| (route, arm))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(rollout: &str, service: &str, flag: &str, revision: Option<&str>) -> Route {
        Route {
            rollout: rollout.to_string(),
            service: service.to_string(),
            flag_key: flag.to_string(),
            revision: revision.map(str::to_string),
            baseline_variant: "off".to_string(),
            candidate_variant: "on".to_string(),
            bucket_by: None,
            epoch: WindowEpoch(1),
        }
    }

    fn sample<'a>(
        service: &'a str,
        flag: &'a str,
        variant: &'a str,
        revision: Option<&'a str>,
    ) -> SpanSample<'a> {
        SpanSample {
            service,
            revision,
            flag_key: flag,
            variant,
            is_error: false,
            duration_ns: 1_000_000,
            trace_id: [1; 16],
            span_id: [5; 8],
            context_id: None,
            reason: None,
        }
    }

    fn routed<'r>(routes: &'r Routes, sample: &SpanSample) -> Vec<(&'r str, Arm)> {
        routes
            .route(sample)
            .map(|(r, arm)| (r.rollout.as_str(), arm))
            .collect()
    }

    #[test]
    fn variants_map_to_arms() {
        let routes = Routes::new(vec![route("shop/checkout", "checkout", "new-cart", None)]);
        assert_eq!(
            routed(&routes, &sample("checkout", "new-cart", "off", None)),
            [("shop/checkout", Arm::Baseline)]
        );
        assert_eq!(
            routed(&routes, &sample("checkout", "new-cart", "on", Some("abc"))),
            [("shop/checkout", Arm::Candidate)]
        );
    }

    #[test]
    fn other_variants_services_and_flags_count_nowhere() {
        let routes = Routes::new(vec![route("shop/checkout", "checkout", "new-cart", None)]);
        assert!(routed(&routes, &sample("checkout", "new-cart", "beta", None)).is_empty());
        assert!(routed(&routes, &sample("payments", "new-cart", "on", None)).is_empty());
        assert!(routed(&routes, &sample("checkout", "old-cart", "on", None)).is_empty());
        assert!(
            routed(
                &Routes::default(),
                &sample("checkout", "new-cart", "on", None)
            )
            .is_empty()
        );
    }

    #[test]
    fn revision_filter_needs_an_equal_revision() {
        let routes = Routes::new(vec![route(
            "shop/checkout",
            "checkout",
            "new-cart",
            Some("3f2c1a9"),
        )]);
        assert_eq!(
            routed(
                &routes,
                &sample("checkout", "new-cart", "on", Some("3f2c1a9"))
            ),
            [("shop/checkout", Arm::Candidate)]
        );
        assert!(
            routed(
                &routes,
                &sample("checkout", "new-cart", "on", Some("0000000"))
            )
            .is_empty()
        );
        assert!(routed(&routes, &sample("checkout", "new-cart", "on", None)).is_empty());
    }

    #[test]
    fn one_sample_can_count_for_several_rollouts() {
        let routes = Routes::new(vec![
            route("shop/a", "checkout", "new-cart", None),
            route("shop/b", "checkout", "other-flag", None),
            route("shop/c", "checkout", "new-cart", Some("abc")),
        ]);
        assert_eq!(
            routed(&routes, &sample("checkout", "new-cart", "on", Some("abc"))),
            [("shop/a", Arm::Candidate), ("shop/c", Arm::Candidate)]
        );
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes
                .iter()
                .map(|r| r.rollout.as_str())
                .collect::<Vec<_>>(),
            ["shop/a", "shop/b", "shop/c"]
        );
    }

    #[test]
    fn from_spec_reads_the_flag_and_filters() {
        let spec: FeatureRolloutSpec = serde_json::from_value(serde_json::json!({
            "flag": {
                "key": "new-cart",
                "variants": {"off": false, "on": true},
                "defaultVariant": "off",
                "rolloutVariant": "on"
            },
            "service": "checkout",
            "revision": "3f2c1a9",
            "steps": [1.0, 50.0, 100.0]
        }))
        .unwrap();
        let expected = Route {
            epoch: WindowEpoch(7),
            ..route("shop/checkout", "checkout", "new-cart", Some("3f2c1a9"))
        };
        assert_eq!(
            Route::from_spec("shop/checkout".to_string(), &spec, WindowEpoch(7)),
            expected
        );
    }

    #[test]
    fn the_unit_is_the_bucketing_attribute_or_the_context_id() {
        let by_user = route("shop/a", "checkout", "new-cart", None);
        let by_account = Route {
            bucket_by: Some("accountId".to_string()),
            ..by_user.clone()
        };
        let sample = SpanSample {
            context_id: Some("user-1"),
            reason: Some("SPLIT"),
            ..sample("checkout", "new-cart", "on", None)
        };
        let user = by_user.observation(&sample, |_| panic!("no attribute is read"));
        assert_eq!(user.unit, Some(unit_hash("user-1")));
        assert!(user.split);
        let account = by_account.observation(&sample, |name| {
            assert_eq!(name, "accountId");
            Some("acme")
        });
        assert_eq!(account.unit, Some(unit_hash("acme")));
        let missing = by_account.observation(&sample, |_| None);
        assert_eq!(missing.unit, None);
        let targeted = SpanSample {
            reason: Some("targeting_match"),
            ..sample
        };
        assert!(!by_user.observation(&targeted, |_| None).split);
    }
}
