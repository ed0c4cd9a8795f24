//! Flag evaluation with targeting, side by side with LaunchDarkly's own Rust
//! evaluator (`launchdarkly-server-sdk-evaluation`) on equivalent flags and the
//! same contexts, each built once before timing:
//!
//! - `three_rules_and_a_segment`: an `endsWith` rule, a rule of two clauses (one
//!   negated) that splits 50/50, a `segmentMatch` rule (included keys, excluded
//!   keys, two rules), then a 25% rollout; `mix` cycles through contexts that match
//!   each rule and that fall through, `fallthrough` times only the last (every rule
//!   and the segment tried, then the hash);
//! - `thousand_targets`: 1,000 individual targets, half the contexts among them;
//! - `percentage`: a 25% rollout and nothing else;
//! - `bucket_hash`: the flagd-compatible bucketing hash alone.
//!
//! `cargo bench --bench targeting`; the README reports a run.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use launchdarkly_server_sdk_evaluation as ld;
use serde_json::{Map, Value, json};
use spangate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase, SegmentSpec};
use spangate::controller::SegmentCatalog;
use spangate::flags::{Context, Flag, Matched, bucket};
use spangate::store::{RolloutKey, StoredSegment};

/// The flag's key is the salt LaunchDarkly hashes with; both evaluators see the same.
const KEY: &str = "new-search";

struct Contexts {
    spangate: Vec<Context<'static>>,
    launchdarkly: Vec<ld::Context>,
}

/// The same contexts for both evaluators, from (key, attributes).
fn contexts(people: &[(String, Vec<(&str, &str)>)]) -> Contexts {
    let spangate = people
        .iter()
        .map(|(key, attributes)| {
            let mut map = Map::new();
            map.insert("targetingKey".into(), json!(key));
            for (name, value) in attributes {
                map.insert((*name).into(), json!(value));
            }
            // Contexts live as long as the benchmark; leaking them is the simplest.
            Context::new(Box::leak(Box::new(map)))
        })
        .collect();
    let launchdarkly = people
        .iter()
        .map(|(key, attributes)| {
            let mut builder = ld::ContextBuilder::new(key.as_str());
            for (name, value) in attributes {
                builder.set_string(name, *value);
            }
            builder.build().expect("a valid context")
        })
        .collect();
    Contexts {
        spangate,
        launchdarkly,
    }
}

fn person(
    key: &str,
    attributes: &[(&'static str, &'static str)],
) -> (String, Vec<(&'static str, &'static str)>) {
    (key.to_string(), attributes.to_vec())
}

/// A spangate flag from a rollout spec at 25%, with `segments`.
fn spangate_flag(targeting: Value, segments: &[(&str, Value)]) -> Flag {
    let spec: FeatureRolloutSpec = serde_json::from_value(json!({
        "flag": {"key": KEY, "variants": {"old": false, "new": true},
                 "defaultVariant": "old", "rolloutVariant": "new"},
        "bucketBy": "accountId",
        "service": "search",
        "steps": [25, 100],
        "analysis": {"maxErrorRate": 0.05},
        "targeting": targeting,
    }))
    .expect("a valid spec");
    let stored: Vec<StoredSegment> = segments
        .iter()
        .map(|(name, spec)| StoredSegment {
            key: RolloutKey::new("default", *name),
            spec: Ok(serde_json::from_value::<SegmentSpec>(spec.clone()).expect("a valid segment")),
            source: (*name).to_string(),
        })
        .collect();
    let mut catalog = SegmentCatalog::default();
    catalog.update(&stored);
    let key = RolloutKey::new("default", KEY);
    let compiled = catalog.compile(&key, Arc::new(spec)).expect("compiles");
    let status = FeatureRolloutStatus {
        phase: Phase::Progressing,
        current_step: Some(0),
        weight: 25.0,
        ..Default::default()
    };
    compiled.flag(&key.to_string(), &status).expect("served")
}

/// LaunchDarkly's store: the flag and its segments.
struct Store {
    flags: HashMap<String, ld::Flag>,
    segments: HashMap<String, ld::Segment>,
}

impl ld::Store for Store {
    fn flag(&self, key: &str) -> Option<ld::Flag> {
        self.flags.get(key).cloned()
    }

    fn segment(&self, key: &str) -> Option<ld::Segment> {
        self.segments.get(key).cloned()
    }
}

/// A LaunchDarkly flag with `rules` and `targets`, falling through to 25% of
/// accounts (weights in thousandths of a percent).
fn launchdarkly_flag(rules: Value, targets: Value, segments: &[Value]) -> (Store, ld::Flag) {
    let flag: ld::Flag = serde_json::from_value(json!({
        "key": KEY, "version": 1, "on": true, "salt": KEY, "offVariation": 0,
        "variations": [false, true],
        "targets": targets, "contextTargets": [], "prerequisites": [],
        "rules": rules,
        "fallthrough": {"rollout": {"variations": [{"variation": 1, "weight": 25_000},
                                                   {"variation": 0, "weight": 75_000}],
                                    "bucketBy": "accountId"}},
    }))
    .expect("a valid LaunchDarkly flag");
    let segments = segments
        .iter()
        .map(|s| {
            let segment: ld::Segment = serde_json::from_value(s.clone()).expect("a valid segment");
            (segment.key.clone(), segment)
        })
        .collect();
    let store = Store {
        flags: HashMap::from([(KEY.to_string(), flag.clone())]),
        segments,
    };
    (store, flag)
}

fn clause(attribute: &str, op: &str, values: Value, negate: bool) -> Value {
    json!({"contextKind": "user", "attribute": attribute, "op": op, "values": values, "negate": negate})
}

/// Times both evaluators over `contexts`, round robin. First checks that the same
/// target or rule decides for each context in both (the percentages themselves
/// differ: LaunchDarkly buckets with SHA-1, spangate as flagd does).
fn side_by_side(
    c: &mut Criterion,
    name: &str,
    flag: &Flag,
    store: &Store,
    ld_flag: &ld::Flag,
    contexts: &Contexts,
) {
    let now = Timestamp::now();
    for (ours, theirs) in contexts.spangate.iter().zip(&contexts.launchdarkly) {
        let ours = match flag.evaluate(ours, now).expect("evaluates").matched {
            Matched::Target => "target".to_string(),
            Matched::Rule { index, .. } => format!("rule {index}"),
            Matched::Nothing => "fallthrough".to_string(),
            other => format!("{other:?}"),
        };
        let theirs = match ld::evaluate(store, ld_flag, theirs, None).reason {
            ld::Reason::TargetMatch => "target".to_string(),
            ld::Reason::RuleMatch { rule_index, .. } => format!("rule {rule_index}"),
            ld::Reason::Fallthrough { .. } => "fallthrough".to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            ours, theirs,
            "{name}: the evaluators disagree on what decides"
        );
    }
    let mut group = c.benchmark_group(name);
    let n = contexts.spangate.len();
    let mut i = 0;
    group.bench_function("spangate", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(flag)
                .evaluate(black_box(&contexts.spangate[i]), now)
                .map(|r| r.variant)
        })
    });
    let mut i = 0;
    group.bench_function("launchdarkly", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            ld::evaluate(
                black_box(store),
                black_box(ld_flag),
                black_box(&contexts.launchdarkly[i]),
                None,
            )
            .variation_index
        })
    });
    group.finish();
}

fn three_rules_and_a_segment(c: &mut Criterion) {
    let flag = spangate_flag(
        json!({"rules": [
            {"name": "gmail", "variant": "new",
             "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@gmail.com"]}]},
            {"name": "coasts", "bucketBy": "accountId",
             "split": [{"variant": "new", "percent": 50}, {"variant": "old", "percent": 50}],
             "clauses": [{"attribute": "state", "op": "in", "values": ["CA", "NY"]},
                         {"attribute": "plan", "op": "in", "values": ["free"], "negate": true}]},
            {"name": "beta", "variant": "new",
             "clauses": [{"op": "segmentMatch", "values": ["beta-users"]}]},
        ]}),
        &[(
            "beta-users",
            json!({"included": ["beta-1", "beta-2", "beta-3"], "excluded": ["churned"],
                   "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["elite"]}]},
                             {"clauses": [{"attribute": "email", "op": "endsWith", "values": ["@spangate.dev"]}]}]}),
        )],
    );
    let (store, ld_flag) = launchdarkly_flag(
        json!([
            {"id": "gmail", "variation": 1, "trackEvents": false,
             "clauses": [clause("email", "endsWith", json!(["@gmail.com"]), false)]},
            {"id": "coasts", "trackEvents": false,
             "rollout": {"variations": [{"variation": 1, "weight": 50_000}, {"variation": 0, "weight": 50_000}],
                         "bucketBy": "accountId"},
             "clauses": [clause("state", "in", json!(["CA", "NY"]), false),
                         clause("plan", "in", json!(["free"]), true)]},
            {"id": "beta", "variation": 1, "trackEvents": false,
             "clauses": [clause("", "segmentMatch", json!(["beta-users"]), false)]},
        ]),
        json!([]),
        &[
            json!({"key": "beta-users", "version": 1, "salt": "beta-users",
                 "included": ["beta-1", "beta-2", "beta-3"], "excluded": ["churned"],
                 "rules": [{"clauses": [clause("plan", "in", json!(["elite"]), false)]},
                           {"clauses": [clause("email", "endsWith", json!(["@spangate.dev"]), false)]}]}),
        ],
    );
    // A user of each kind: a rule-1 match, a rule-2 split, a segment member by key and
    // by rule, and people who fall through to the percentage.
    let fallthrough = person(
        "user-77",
        &[
            ("email", "zed@example.org"),
            ("state", "TX"),
            ("plan", "pro"),
            ("accountId", "acct-77"),
        ],
    );
    let mix = contexts(&[
        person(
            "user-1",
            &[
                ("email", "ann@gmail.com"),
                ("state", "TX"),
                ("plan", "free"),
                ("accountId", "acct-1"),
            ],
        ),
        person(
            "user-2",
            &[
                ("email", "bob@corp.example"),
                ("state", "CA"),
                ("plan", "pro"),
                ("accountId", "acct-2"),
            ],
        ),
        person(
            "beta-2",
            &[
                ("email", "cy@corp.example"),
                ("state", "WA"),
                ("plan", "pro"),
                ("accountId", "acct-3"),
            ],
        ),
        person(
            "user-4",
            &[
                ("email", "di@corp.example"),
                ("state", "WA"),
                ("plan", "elite"),
                ("accountId", "acct-4"),
            ],
        ),
        person(
            "user-5",
            &[
                ("email", "ed@corp.example"),
                ("state", "NY"),
                ("plan", "free"),
                ("accountId", "acct-5"),
            ],
        ),
        person(
            "churned",
            &[
                ("email", "fi@spangate.dev"),
                ("state", "WA"),
                ("plan", "pro"),
                ("accountId", "acct-6"),
            ],
        ),
        fallthrough.clone(),
        person(
            "user-8",
            &[
                ("email", "gil@example.org"),
                ("state", "TX"),
                ("plan", "pro"),
                ("accountId", "acct-8"),
            ],
        ),
    ]);
    side_by_side(
        c,
        "three_rules_and_a_segment/mix",
        &flag,
        &store,
        &ld_flag,
        &mix,
    );
    let worst = contexts(&[fallthrough]);
    side_by_side(
        c,
        "three_rules_and_a_segment/fallthrough",
        &flag,
        &store,
        &ld_flag,
        &worst,
    );
}

fn thousand_targets(c: &mut Criterion) {
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i:04}")).collect();
    let flag = spangate_flag(
        json!({"targets": [{"variant": "new", "values": keys}]}),
        &[],
    );
    let (store, ld_flag) =
        launchdarkly_flag(json!([]), json!([{"values": keys, "variation": 1}]), &[]);
    // Half are targeted (spread over the list), half fall through.
    let people: Vec<_> = (0..16)
        .map(|i| {
            let key = if i % 2 == 0 {
                format!("user-{:04}", i * 61)
            } else {
                format!("visitor-{i}")
            };
            (
                key,
                vec![("accountId", ["acct-1", "acct-2", "acct-3", "acct-4"][i % 4])],
            )
        })
        .collect();
    side_by_side(
        c,
        "thousand_targets",
        &flag,
        &store,
        &ld_flag,
        &contexts(&people),
    );
}

fn percentage(c: &mut Criterion) {
    let flag = spangate_flag(json!({}), &[]);
    let (store, ld_flag) = launchdarkly_flag(json!([]), json!([]), &[]);
    let people: Vec<_> = (0..16)
        .map(|i| (format!("user-{i}"), vec![("accountId", ACCOUNTS[i])]))
        .collect();
    side_by_side(c, "percentage", &flag, &store, &ld_flag, &contexts(&people));
}

const ACCOUNTS: [&str; 16] = [
    "acct-0", "acct-1", "acct-2", "acct-3", "acct-4", "acct-5", "acct-6", "acct-7", "acct-8",
    "acct-9", "acct-10", "acct-11", "acct-12", "acct-13", "acct-14", "acct-15",
];

fn bucket_hash(c: &mut Criterion) {
    c.bench_function("bucket_hash", |b| {
        b.iter(|| bucket::bucket(black_box(KEY), black_box("acct-12345"), 10_000))
    });
}

criterion_group!(
    benches,
    three_rules_and_a_segment,
    thousand_targets,
    percentage,
    bucket_hash
);
criterion_main!(benches);
