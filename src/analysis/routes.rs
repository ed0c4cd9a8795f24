//! Which rollout a span sample counts for, and on which arm.

use foldhash::{HashMap, HashSet};

use super::join::{Joined, name_hash};
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
    /// Services further down the traces of the flag, judged on their own
    /// (`spec.downstreamServices`); the revision filter does not apply to them.
    pub downstream: Vec<String>,
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
    /// The step being judged (`status.currentStep`), which forwarded spans are
    /// tagged with.
    pub step: Option<u32>,
}

impl Route {
    /// The route of rollout `rollout` (`namespace/name`) at `epoch`.
    pub fn from_spec(rollout: String, spec: &FeatureRolloutSpec, epoch: WindowEpoch) -> Self {
        Self {
            rollout,
            service: spec.service.clone(),
            downstream: spec.downstream_services.clone(),
            flag_key: spec.flag.key.clone(),
            revision: spec.revision.clone(),
            baseline_variant: spec.flag.default_variant.clone(),
            candidate_variant: spec.flag.rollout_variant.clone(),
            bucket_by: spec
                .bucket_by
                .clone()
                .filter(|b| b != TARGETING_KEY && !b.is_empty()),
            epoch,
            step: None,
        }
    }

    /// The attribute whose value is a unit of this rollout, for messages.
    pub fn unit_attribute(&self) -> &str {
        self.bucket_by
            .as_deref()
            .unwrap_or("feature_flag.context.id")
    }

    /// What `sample` contributes, its unit's [`unit_hash`](super::unit_hash) already known (`spangate
    /// simulate` hashes each synthetic user once, not once a span).
    pub fn observation_of_unit(&self, sample: &SpanSample<'_>, unit: Option<u64>) -> Observation {
        Observation {
            is_error: sample.is_error,
            duration_ns: sample.duration_ns,
            trace_id: sample.trace_id,
            span_id: sample.span_id,
            unit,
            split: sample.split(),
            weight: sample.weight,
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
    /// For the trace join, by name hashes: (service, flag) → where a span counts.
    targets: HashMap<(u64, u64), Vec<Target>>,
    /// Flags some route judges → the `bucketBy` attributes their rollouts read.
    flags: HashMap<u64, Vec<(u64, String)>>,
    /// Services some route judges, main or downstream.
    services: HashSet<u64>,
    /// (flag, variant) → (the first route handing it out, whether as its candidate).
    tagged: HashMap<(u64, u64), (usize, bool)>,
}

/// What a forwarded span of an attributed trace carries, so that a search in the
/// tracing backend by variant finds every span of the variant's traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tags<'r> {
    pub flag_key: &'r str,
    pub variant: &'r str,
    /// `namespace/name` of the rollout.
    pub rollout: &'r str,
    pub step: Option<u32>,
}

/// Where a span of one service, in a trace that resolved one flag, counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the route.
    pub route: usize,
    /// 0 for the rollout's `service`, then 1 + its index in `downstream`.
    pub service: usize,
    baseline: u64,
    candidate: u64,
    /// Only the rollout's own service is filtered by revision.
    revision: Option<u64>,
    bucket_by: Option<u64>,
}

impl Target {
    /// The arm of a span joined to this target's flag, if it counts at all.
    pub fn arm(&self, joined: &Joined<'_>) -> Option<Arm> {
        if self.revision.is_some() && joined.span.revision != self.revision {
            return None;
        }
        let variant = joined.resolution.variant;
        if variant == self.baseline {
            Some(Arm::Baseline)
        } else if variant == self.candidate {
            Some(Arm::Candidate)
        } else {
            None
        }
    }

    /// What a joined span contributes to this target's window.
    pub fn observation(&self, joined: &Joined<'_>) -> Observation {
        Observation {
            is_error: joined.span.is_error,
            duration_ns: joined.span.duration_ns,
            trace_id: joined.trace_id,
            span_id: joined.span.span_id,
            unit: joined.resolution.unit(self.bucket_by),
            split: joined.resolution.split,
            weight: joined.span.weight,
        }
    }
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::default();
        let mut targets: HashMap<(u64, u64), Vec<Target>> = HashMap::default();
        let mut flags: HashMap<u64, Vec<(u64, String)>> = HashMap::default();
        let mut services = HashSet::default();
        let mut tagged = HashMap::default();
        for (i, route) in routes.iter().enumerate() {
            index
                .entry(route.service.clone())
                .or_default()
                .entry(route.flag_key.clone())
                .or_default()
                .push(i);
            let flag = name_hash(&route.flag_key);
            tagged
                .entry((flag, name_hash(&route.candidate_variant)))
                .or_insert((i, true));
            tagged
                .entry((flag, name_hash(&route.baseline_variant)))
                .or_insert((i, false));
            let attributes = flags.entry(flag).or_default();
            if let Some(name) = &route.bucket_by
                && !attributes.iter().any(|(_, known)| known == name)
            {
                attributes.push((name_hash(name), name.clone()));
            }
            let judged = std::iter::once(&route.service).chain(&route.downstream);
            for (position, service) in judged.enumerate() {
                let service_hash = name_hash(service);
                services.insert(service_hash);
                targets
                    .entry((service_hash, flag))
                    .or_default()
                    .push(Target {
                        route: i,
                        service: position,
                        baseline: name_hash(&route.baseline_variant),
                        candidate: name_hash(&route.candidate_variant),
                        revision: route
                            .revision
                            .as_deref()
                            .filter(|_| position == 0)
                            .map(name_hash),
                        bucket_by: route.bucket_by.as_deref().map(name_hash),
                    });
            }
        }
        Self {
            routes,
            index,
            targets,
            flags,
            services,
            tagged,
        }
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

    /// The `bucketBy` attributes (name hash, name) read for an evaluation of the
    /// flag `flag` (a [`name_hash`]); `None` when no route judges that flag.
    pub fn flag(&self, flag: u64) -> Option<&[(u64, String)]> {
        self.flags.get(&flag).map(Vec::as_slice)
    }

    /// Whether some route judges the spans of `service` (a [`name_hash`]).
    pub fn judges_service(&self, service: u64) -> bool {
        self.services.contains(&service)
    }

    /// What a forwarded span of a trace that resolved `flag` to `variant` (both
    /// [`name_hash`]es) is tagged with: the first route of that flag whose
    /// baseline or candidate the variant is.
    pub fn tags(&self, flag: u64, variant: u64) -> Option<Tags<'_>> {
        let &(route, candidate) = self.tagged.get(&(flag, variant))?;
        let route = &self.routes[route];
        Some(Tags {
            flag_key: &route.flag_key,
            variant: if candidate {
                &route.candidate_variant
            } else {
                &route.baseline_variant
            },
            rollout: &route.rollout,
            step: route.step,
        })
    }

    /// Where a span joined to a flag counts, with the route of each.
    pub fn targets<'r>(
        &'r self,
        joined: &Joined<'_>,
    ) -> impl Iterator<Item = (&'r Route, &'r Target)> {
        self.targets
            .get(&(joined.span.service, joined.flag))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|target| (&self.routes[target.route], target))
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
            downstream: Vec::new(),
            flag_key: flag.to_string(),
            revision: revision.map(str::to_string),
            baseline_variant: "off".to_string(),
            candidate_variant: "on".to_string(),
            bucket_by: None,
            epoch: WindowEpoch(1),
            step: None,
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
            weight: 1,
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
}
