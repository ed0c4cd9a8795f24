//! Targeting from spec to answer: individual targets, exclusions, rules and their
//! operators, segments, the percentage for the rest, reasons and what matched —
//! compiled from rollout YAML the way the controller compiles it.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use spangate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase, SegmentSpec};
use spangate::controller::SegmentCatalog;
use spangate::flags::{Context, Flag, Matched, Reason};
use spangate::store::{RolloutKey, StoredSegment};
use std::sync::Arc;

use crate::common::fixture::{RolloutFixture, from_yaml};

/// A rollout of `new-checkout` (off → on, bucketed by accountId), as the targeting
/// compiler sees it: one threshold, the least a rollout with steps is valid with.
fn rollout() -> RolloutFixture {
    RolloutFixture::new("checkout")
        .revision(None)
        .steps([5, 25, 100])
        .step_duration(None)
        .analysis(json!({"maxErrorRate": 0.05}))
}

fn segments(defs: &[(&str, &str)]) -> SegmentCatalog {
    let stored: Vec<StoredSegment> = defs
        .iter()
        .map(|(name, yaml)| StoredSegment {
            key: RolloutKey::new("default", *name),
            spec: Ok(serde_norway::from_str::<SegmentSpec>(yaml).unwrap()),
            source: format!("{name}.yaml"),
        })
        .collect();
    let mut catalog = SegmentCatalog::default();
    catalog.update(&stored);
    catalog
}

/// The flag `spec` serves at `weight` percent, with `catalog`'s segments.
fn flag_with(spec: &FeatureRolloutSpec, weight: f64, catalog: &SegmentCatalog) -> Flag {
    let key = RolloutKey::new("default", "checkout");
    let compiled = catalog
        .compile(&key, Arc::new(spec.clone()))
        .unwrap_or_else(|invalid| panic!("does not compile: {invalid}"));
    let status = FeatureRolloutStatus {
        phase: if weight >= 100.0 {
            Phase::Promoted
        } else {
            Phase::Progressing
        },
        current_step: Some(1),
        weight,
        ..Default::default()
    };
    compiled
        .flag(&key.to_string(), &status)
        .expect("a served flag")
}

fn flag(targeting: &str, weight: f64) -> Flag {
    flag_with(
        &rollout().targeting(from_yaml(targeting)).spec(),
        weight,
        &SegmentCatalog::default(),
    )
}

fn problems(spec: &FeatureRolloutSpec, catalog: &SegmentCatalog) -> String {
    catalog
        .compile(
            &RolloutKey::new("default", "checkout"),
            Arc::new(spec.clone()),
        )
        .expect_err("should not compile")
        .problems
        .join("\n")
}

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

fn ctx(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// (variant, reason, matched) for `context`.
fn eval(flag: &Flag, context: Value) -> (String, Reason, String) {
    let r = flag.evaluate(&Context::new(&ctx(context)), now()).unwrap();
    let matched = match r.matched {
        Matched::Nothing => "-".to_string(),
        Matched::Target => "target".to_string(),
        Matched::Exclusion => "exclusion".to_string(),
        Matched::Rule { index, name } => format!("rule {index} {name}"),
        Matched::Flagd => "flagd".to_string(),
    };
    (r.variant.unwrap_or("null").to_string(), r.reason, matched)
}

fn variant(flag: &Flag, context: Value) -> String {
    eval(flag, context).0
}

/// Accounts that the 25% step leaves on `off`.
fn accounts_outside(flag: &Flag, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("acct-{i}"))
        .filter(|a| variant(flag, json!({"accountId": a})) == "off")
        .take(n)
        .collect()
}

#[test]
fn individual_targets_get_their_variant_at_any_step() {
    let targeting = r#"
targets:
- {variant: "on", values: [qa-alice, qa-bob]}
- {variant: "on", attribute: accountId, values: [acct-internal]}
- {variant: "off", values: [ceo]}
"#;
    for weight in [0.0, 5.0, 100.0] {
        let f = flag(targeting, weight);
        assert_eq!(
            eval(&f, json!({"targetingKey": "qa-alice"})),
            ("on".into(), Reason::TargetingMatch, "target".into()),
            "at {weight}%"
        );
        assert_eq!(
            variant(
                &f,
                json!({"targetingKey": "x", "accountId": "acct-internal"})
            ),
            "on"
        );
        assert_eq!(
            variant(&f, json!({"targetingKey": "ceo", "accountId": "a"})),
            "off"
        );
    }
}

#[test]
fn exclusions_keep_the_default_until_the_rollout_reaches_100() {
    let targeting = "exclude:\n- {values: [vip-carol]}\n";
    let at_50 = flag(targeting, 50.0);
    let inside = (0..)
        .map(|i| format!("acct-{i}"))
        .find(|a| variant(&at_50, json!({"targetingKey": "someone", "accountId": a})) == "on")
        .unwrap();
    assert_eq!(
        eval(
            &at_50,
            json!({"targetingKey": "vip-carol", "accountId": inside})
        ),
        ("off".into(), Reason::TargetingMatch, "exclusion".into())
    );
    let promoted = flag(targeting, 100.0);
    assert_eq!(
        eval(&promoted, json!({"targetingKey": "vip-carol"})),
        ("on".into(), Reason::Default, "-".into())
    );
}

#[test]
fn rules_are_tried_in_order_and_the_first_match_wins() {
    let f = flag(
        r#"
rules:
- name: gmail
  clauses: [{attribute: email, op: endsWith, values: ["@gmail.com"]}]
  variant: "on"
- name: west-and-east
  clauses:
  - {attribute: address.state, op: in, values: [CA, NY]}
  - {attribute: plan, op: in, values: [free], negate: true}
  variant: "on"
- clauses: [{attribute: plan, op: in, values: [free]}]
  variant: "off"
"#,
        25.0,
    );
    let outside = accounts_outside(&f, 1).remove(0);
    let gmail = json!({"accountId": outside, "email": "ann@gmail.com", "plan": "free"});
    assert_eq!(
        eval(&f, gmail),
        ("on".into(), Reason::TargetingMatch, "rule 0 gmail".into())
    );
    let ca_pro = json!({"accountId": outside, "address": {"state": "CA"}, "plan": "pro"});
    assert_eq!(eval(&f, ca_pro).2, "rule 1 west-and-east");
    // Both clauses must match: a free plan in CA falls to the third rule.
    let ca_free = json!({"accountId": outside, "address": {"state": "CA"}, "plan": "free"});
    assert_eq!(eval(&f, ca_free).2, "rule 2 rules[2]");
    // Nothing matches: the percentage decides.
    let texas = json!({"accountId": outside, "address": {"state": "TX"}, "plan": "pro"});
    assert_eq!(eval(&f, texas), ("off".into(), Reason::Split, "-".into()));
}

#[test]
fn a_rule_can_split_its_users_by_its_own_percentages() {
    let f = flag(
        r#"
rules:
- name: beta-split
  clauses: [{attribute: beta, op: in, values: [true]}]
  split: [{variant: "on", percent: 30}, {variant: "off", percent: 70}]
  bucketBy: orgId
"#,
        5.0,
    );
    let on = (0..10_000)
        .filter(|i| {
            let c = json!({"beta": true, "orgId": format!("org-{i}"), "accountId": "a"});
            let (v, reason, matched) = eval(&f, c);
            assert_eq!(
                (reason, matched.as_str()),
                (Reason::TargetingMatch, "rule 0 beta-split")
            );
            v == "on"
        })
        .count();
    assert!((2_800..3_200).contains(&on), "{on} of 10000 got on");
    // Sticky per orgId: other attributes do not move a user.
    let a = variant(
        &f,
        json!({"beta": true, "orgId": "org-1", "accountId": "a1"}),
    );
    let b = variant(
        &f,
        json!({"beta": true, "orgId": "org-1", "accountId": "a2"}),
    );
    assert_eq!(a, b);
    // The split needs its bucketing attribute.
    let err = f
        .evaluate(
            &Context::new(&ctx(json!({"beta": true, "accountId": "a"}))),
            now(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("orgId"), "{err}");
}

/// One clause as a rule serving `on`, on a flag at 0% (everyone else gets `off`).
fn matches(clause: &str, context: Value) -> bool {
    let f = flag(
        &format!("rules:\n- clauses: [{clause}]\n  variant: \"on\"\n"),
        0.0,
    );
    variant(&f, context) == "on"
}

#[test]
fn string_operators() {
    let c = json!({"email": "ann@example.com", "n": 5});
    assert!(matches(
        "{attribute: email, op: in, values: [x, ann@example.com]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: email, op: startsWith, values: [bob, ann@]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: email, op: endsWith, values: [.com]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: email, op: endsWith, values: [.org]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: email, op: contains, values: [\"@exa\"]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: email, op: matches, values: [\"^[a-z]+@example\\\\.com$\"]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: email, op: matches, values: [\"^bob\"]}",
        c.clone()
    ));
    // Another type than the operator reads does not match, negated it does.
    assert!(!matches(
        "{attribute: n, op: startsWith, values: [\"5\"]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: n, op: startsWith, values: [\"5\"], negate: true}",
        c
    ));
}

#[test]
fn in_compares_strings_numbers_and_booleans_by_type() {
    let c = json!({"tier": 3, "beta": true, "name": "3"});
    assert!(matches(
        "{attribute: tier, op: in, values: [1, 3.0]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: tier, op: in, values: [\"3\"]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: name, op: in, values: [\"3\"]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: beta, op: in, values: [true]}",
        c.clone()
    ));
    assert!(!matches("{attribute: beta, op: in, values: [\"true\"]}", c));
}

#[test]
fn numeric_operators_match_any_value() {
    let c = json!({"age": 30});
    assert!(matches(
        "{attribute: age, op: lessThan, values: [18, 31]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: age, op: lessThan, values: [30]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: age, op: lessThanOrEqual, values: [30]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: age, op: greaterThan, values: [29.5]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: age, op: greaterThan, values: [30, 65]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: age, op: greaterThanOrEqual, values: [30]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: age, op: lessThan, values: [40]}",
        json!({"age": "20"})
    ));
}

#[test]
fn time_operators_read_rfc3339_and_epoch_milliseconds() {
    let created = json!({"createdAt": "2024-06-01T12:00:00+02:00", "ms": 1_717_236_000_000_i64});
    assert!(matches(
        "{attribute: createdAt, op: before, values: [\"2025-01-01T00:00:00Z\"]}",
        created.clone()
    ));
    assert!(!matches(
        "{attribute: createdAt, op: after, values: [\"2025-01-01T00:00:00Z\"]}",
        created.clone()
    ));
    assert!(matches(
        "{attribute: createdAt, op: after, values: [1700000000000]}",
        created.clone()
    ));
    assert!(matches(
        "{attribute: ms, op: before, values: [\"2024-06-02T00:00:00Z\"]}",
        created.clone()
    ));
    assert!(!matches(
        "{attribute: createdAt, op: before, values: [\"2024-06-01T10:00:00Z\"]}",
        created
    ));
    // $flagd.timestamp is the evaluation time, given to the evaluation.
    let empty = json!({});
    assert!(matches(
        "{attribute: $flagd.timestamp, op: after, values: [\"2026-11-26T09:59:59Z\"]}",
        empty.clone()
    ));
    assert!(!matches(
        "{attribute: $flagd.timestamp, op: after, values: [\"2026-11-26T10:00:01Z\"]}",
        empty
    ));
}

#[test]
fn semantic_version_operators() {
    let c = json!({"app": "2.10.0-rc.1"});
    assert!(matches(
        "{attribute: app, op: semVerLessThan, values: [2.10.0]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: app, op: semVerGreaterThan, values: [\"2.9\"]}",
        c.clone()
    ));
    assert!(matches(
        "{attribute: app, op: semVerEqual, values: [v2.10.0-rc.1]}",
        c.clone()
    ));
    assert!(!matches(
        "{attribute: app, op: semVerEqual, values: [2.10.0]}",
        c
    ));
    assert!(!matches(
        "{attribute: app, op: semVerLessThan, values: [3.0.0]}",
        json!({"app": "latest"})
    ));
}

#[test]
fn an_absent_attribute_never_matches_even_negated() {
    for op in [
        "in",
        "startsWith",
        "endsWith",
        "contains",
        "matches",
        "lessThan",
        "before",
        "semVerEqual",
    ] {
        let value = match op {
            "lessThan" => "1",
            "before" => "\"2030-01-01T00:00:00Z\"",
            "semVerEqual" => "1.0.0",
            _ => "x",
        };
        for negate in [false, true] {
            let clause =
                format!("{{attribute: missing, op: {op}, values: [{value}], negate: {negate}}}");
            assert!(!matches(&clause, json!({"other": 1})), "{clause}");
            assert!(
                !matches(&clause, json!({"missing": null})),
                "{clause} on null"
            );
        }
    }
    assert!(matches(
        "{attribute: plan, op: in, values: [free], negate: true}",
        json!({"plan": "pro"})
    ));
}

#[test]
fn segments_match_included_excluded_and_by_rules() {
    let catalog = segments(&[(
        "beta-users",
        r#"
included: [u-included]
excluded: [u-excluded]
rules:
- clauses: [{attribute: plan, op: in, values: [elite]}]
- clauses: [{attribute: email, op: endsWith, values: ["@spangate.dev"]}]
"#,
    )]);
    let spec = rollout()
        .targeting(from_yaml(
            "rules:\n- name: beta\n  clauses: [{op: segmentMatch, values: [beta-users]}]\n  variant: \"on\"\n",
        ))
        .spec();
    let f = flag_with(&spec, 0.0, &catalog);
    assert_eq!(
        eval(&f, json!({"targetingKey": "u-included"})),
        ("on".into(), Reason::TargetingMatch, "rule 0 beta".into())
    );
    assert_eq!(
        variant(&f, json!({"targetingKey": "u", "plan": "elite"})),
        "on"
    );
    assert_eq!(
        variant(&f, json!({"targetingKey": "u", "email": "x@spangate.dev"})),
        "on"
    );
    assert_eq!(
        variant(&f, json!({"targetingKey": "u-excluded", "plan": "elite"})),
        "off"
    );
    assert_eq!(
        variant(&f, json!({"targetingKey": "u", "plan": "pro"})),
        "off"
    );
    let negated = rollout()
        .targeting(from_yaml(
            "rules:\n- clauses: [{op: segmentMatch, values: [default/beta-users], negate: true}]\n  variant: \"on\"\n",
        ))
        .spec();
    let g = flag_with(&negated, 0.0, &catalog);
    assert_eq!(
        variant(&g, json!({"targetingKey": "u", "plan": "pro"})),
        "on"
    );
    assert_eq!(variant(&g, json!({"targetingKey": "u-included"})), "off");
}

#[test]
fn a_segment_change_changes_the_flag_that_uses_it() {
    let spec = rollout()
        .targeting(from_yaml(
            "rules:\n- clauses: [{op: segmentMatch, values: [qa]}]\n  variant: \"on\"\n",
        ))
        .spec();
    let before = flag_with(&spec, 0.0, &segments(&[("qa", "included: [u1]")]));
    let after = flag_with(&spec, 0.0, &segments(&[("qa", "included: [u2]")]));
    assert_eq!(variant(&before, json!({"targetingKey": "u1"})), "on");
    assert_eq!(variant(&after, json!({"targetingKey": "u1"})), "off");
    assert_ne!(before.fingerprint(), after.fingerprint());
    let unrelated = flag_with(
        &spec,
        0.0,
        &segments(&[("qa", "included: [u1]"), ("other", "included: [x]")]),
    );
    assert_eq!(before.fingerprint(), unrelated.fingerprint());
}

#[test]
fn reasons_say_what_decided() {
    let plain = |weight| flag_with(&rollout().spec(), weight, &SegmentCatalog::default());
    assert_eq!(eval(&plain(0.0), json!({})).1, Reason::Default);
    assert_eq!(eval(&plain(100.0), json!({})).1, Reason::Static);
    assert_eq!(
        eval(&plain(50.0), json!({"accountId": "a"})).1,
        Reason::Split
    );
    // With targeting, falling through at 100% is the configured default for the rest.
    let targeted = flag("targets:\n- {variant: \"off\", values: [u]}\n", 100.0);
    assert_eq!(eval(&targeted, json!({})).1, Reason::Default);
    let mut disabled = plain(50.0);
    disabled.state = spangate::flags::FlagState::Disabled;
    // As flagd: a disabled flag defers to the application's code default.
    assert_eq!(
        eval(&disabled, json!({})),
        ("null".into(), Reason::Disabled, "-".into())
    );
}

#[test]
fn an_entitlement_flag_is_served_by_its_targeting() {
    let spec = RolloutFixture::new("plans")
        .flag("plan-features")
        .variants(
            json!({"basic": {"seats": 5}, "pro": {"seats": 50}, "elite": {"seats": 500}}),
            "basic",
        )
        .without_steps()
        .targeting(from_yaml(
            r#"
rules:
- {name: elite, clauses: [{attribute: plan, op: in, values: [elite]}], variant: elite}
- {name: pro, clauses: [{attribute: plan, op: in, values: [pro]}], variant: pro}
"#,
        ))
        .spec();
    let key = RolloutKey::new("default", "plans");
    let compiled = SegmentCatalog::default()
        .compile(&key, Arc::new(spec))
        .unwrap();
    let status = FeatureRolloutStatus {
        phase: Phase::Serving,
        ..Default::default()
    };
    let f = compiled.flag(&key.to_string(), &status).unwrap();
    let r = f
        .evaluate(&Context::new(&ctx(json!({"plan": "elite"}))), now())
        .unwrap();
    assert_eq!(
        (r.variant, r.value),
        (Some("elite"), Some(&json!({"seats": 500})))
    );
    let r = f
        .evaluate(&Context::new(&ctx(json!({"plan": "free"}))), now())
        .unwrap();
    assert_eq!((r.variant, r.reason), (Some("basic"), Reason::Default));
    assert!(f.metadata.get("weight").is_none());
}

#[test]
fn every_targeting_problem_is_named_with_its_path() {
    let bad = rollout()
        .targeting(from_yaml(
            r#"
targets:
- {variant: "onn", values: [a]}
rules:
- clauses: [{attribute: email, op: matches, values: ["(unclosed"]}]
  variant: "on"
- clauses: [{attribute: age, op: lessThan, values: [ten]}]
  split: [{variant: "on", percent: 30}, {variant: "off", percent: 60}]
- clauses: [{op: segmentMatch, values: [nope]}]
  variant: "on"
- clauses: [{attribute: "a..b", op: in, values: [x]}]
- clauses: [{attribute: v, op: semVerEqual, values: [banana]}]
  variant: "on"
  split: [{variant: "on", percent: 100}]
"#,
        ))
        .spec();
    let text = problems(&bad, &SegmentCatalog::default());
    for expected in [
        "spec.targeting.targets[0].variant \"onn\" is not one of the variants (\"off\", \"on\")",
        "spec.targeting.rules[0].clauses[0].values[0] is not a usable regular expression",
        "spec.targeting.rules[1].clauses[0].values[0] is not a number, which lessThan compares with",
        "spec.targeting.rules[1].split adds up to 90%; the percents must add up to 100",
        "spec.targeting.rules[2].clauses[0].values[0]: segment default/nope does not exist",
        "spec.targeting.rules[3].clauses[0].attribute \"a..b\" has an empty part",
        "spec.targeting.rules[3] serves nothing; give a variant or a split",
        "spec.targeting.rules[4].clauses[0].values[0] \"banana\" is not a semantic version",
        "spec.targeting.rules[4] has both variant and split; give one",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let mut stepless = rollout()
        .targeting(from_yaml("exclude:\n- {values: [a]}\n"))
        .spec();
    stepless.steps.clear();
    assert!(problems(&stepless, &SegmentCatalog::default()).contains("exclude needs steps"));
}

#[test]
fn a_regular_expression_too_large_to_compile_is_refused() {
    // Compiled, this nests repetitions far past the size limit.
    let huge = rollout()
        .targeting(from_yaml(
            r#"rules: [{clauses: [{attribute: a, op: matches, values: ["(((a{100}){100}){100})"]}], variant: "on"}]"#,
        ))
        .spec();
    let text = problems(&huge, &SegmentCatalog::default());
    assert!(
        text.contains("is not a usable regular expression"),
        "{text}"
    );
}

#[test]
fn a_segment_that_does_not_compile_names_its_problem_in_the_rollout() {
    let catalog = segments(&[(
        "broken",
        "rules:\n- clauses: [{attribute: a, op: segmentMatch, values: [other]}]\n",
    )]);
    let spec = rollout()
        .targeting(from_yaml(
            "rules:\n- clauses: [{op: segmentMatch, values: [broken]}]\n  variant: \"on\"\n",
        ))
        .spec();
    let text = problems(&spec, &catalog);
    assert!(text.contains("segment default/broken is invalid"), "{text}");
    assert!(text.contains("segments cannot contain segments"), "{text}");
}
