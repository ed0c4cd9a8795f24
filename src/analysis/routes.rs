//! Which rollout a span sample counts for, and on which arm.

use std::collections::HashMap;

use super::{Arm, SpanSample};
use crate::api::FeatureRolloutSpec;

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
    /// Changes whenever the rollout's step changes, so its window restarts.
    pub epoch: u64,
}

impl Route {
    /// The route of rollout `rollout` (`namespace/name`) at `epoch`.
    pub fn from_spec(rollout: String, spec: &FeatureRolloutSpec, epoch: u64) -> Self {
        Self {
            rollout,
            service: spec.service.clone(),
            flag_key: spec.flag.key.clone(),
            revision: spec.revision.clone(),
            baseline_variant: spec.flag.default_variant.clone(),
            candidate_variant: spec.flag.rollout_variant.clone(),
            epoch,
        }
    }

    /// The arm `sample` is on, if it counts for this route at all.
    fn arm_of(&self, sample: &SpanSample) -> Option<Arm> {
        if sample.service != self.service || sample.flag_key != self.flag_key {
            return None;
        }
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
        let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
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
            epoch: 1,
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
            epoch: 7,
            ..route("shop/checkout", "checkout", "new-cart", Some("3f2c1a9"))
        };
        assert_eq!(
            Route::from_spec("shop/checkout".to_string(), &spec, 7),
            expected
        );
    }
}
