use serde_json::json;

use super::*;

fn run(expression: Value, context: Value) -> Value {
    let logic = Logic::parse(&expression, &Map::new()).unwrap();
    let context = context.as_object().cloned().unwrap_or_default();
    let context = crate::flags::Context::new(&context);
    let env = Env::new(&context, "my-flag", 1_700_000_000);
    logic.evaluate(&env).into_owned()
}

fn eq(expression: Value, expected: Value) {
    assert_eq!(run(expression.clone(), json!({})), expected, "{expression}");
}

#[test]
fn var_reads_paths_defaults_and_flagd_properties() {
    let ctx = json!({"a": {"b": [10, 20]}, "n": null, "$flagd": {"flagKey": "forged"}});
    assert_eq!(run(json!({"var": "a.b.1"}), ctx.clone()), json!(20));
    assert_eq!(run(json!({"var": ["missing", 7]}), ctx.clone()), json!(7));
    assert_eq!(run(json!({"var": ["n", 7]}), ctx.clone()), json!(7));
    assert_eq!(run(json!({"var": "missing"}), ctx.clone()), json!(null));
    assert_eq!(
        run(json!({"var": "$flagd.flagKey"}), ctx.clone()),
        json!("my-flag")
    );
    assert_eq!(
        run(json!({"var": "$flagd.timestamp"}), ctx.clone()),
        json!(1_700_000_000)
    );
    assert_eq!(run(json!({"var": ""}), json!({"x": 1}))["x"], json!(1));
}

#[test]
fn logic_and_comparison_follow_the_reference_implementation() {
    eq(json!({"if": [false, "a", null, "b", "c"]}), json!("c"));
    eq(json!({"if": [true, "a"]}), json!("a"));
    eq(json!({"if": [false, "a"]}), json!(null));
    eq(json!({"if": []}), json!(null));
    eq(json!({"or": [0, "", "x"]}), json!("x"));
    eq(json!({"and": [1, 0, 2]}), json!(0));
    eq(json!({"!": [[]]}), json!(true));
    eq(json!({"!!": ["0"]}), json!(true));
    eq(json!({"==": [1, "1"]}), json!(true));
    eq(json!({"===": [1, "1"]}), json!(false));
    eq(json!({"!=": [null, 0]}), json!(true));
    eq(json!({"<": [1, 2, 3]}), json!(true));
    eq(json!({"<=": [1, 1, 0]}), json!(false));
    eq(json!({">": ["b", "a"]}), json!(true));
    eq(json!({">": ["a", 1]}), json!(false));
}

#[test]
fn arithmetic_strings_and_arrays() {
    eq(json!({"+": [1, "2", true]}), json!(4));
    eq(json!({"-": [5]}), json!(-5));
    eq(json!({"/": [1, 0]}), json!(null));
    eq(json!({"%": [7, 3]}), json!(1));
    eq(json!({"max": [1, 9, 3]}), json!(9));
    eq(json!({"min": []}), json!(null));
    eq(
        json!({"cat": ["a", 1, null, 1.5, true]}),
        json!("a11.5true"),
    );
    eq(json!({"substr": ["spangate", -4]}), json!("gate"));
    eq(json!({"substr": ["spangate", 1, -4]}), json!("pan"));
    eq(json!({"in": ["Spring", "Springfield"]}), json!(true));
    eq(json!({"in": [1, ["1", 2]]}), json!(false));
    eq(json!({"merge": [[1], 2, [[3]]]}), json!([1, 2, [3]]));
    eq(
        json!({"map": [[1, 2], {"*": [{"var": ""}, 2]}]}),
        json!([2, 4]),
    );
    eq(
        json!({"filter": [[1, 2, 3], {">": [{"var": ""}, 1]}]}),
        json!([2, 3]),
    );
    eq(
        json!({"reduce": [[1, 2, 3], {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
        json!(6),
    );
    eq(json!({"all": [[], true]}), json!(false));
    eq(json!({"none": [[], true]}), json!(true));
    eq(json!({"some": [[0, 1], {"var": ""}]}), json!(true));
    eq(json!({"missing": ["a", "b"]}), json!(["a", "b"]));
    eq(json!({"missing_some": [1, ["a", "b"]]}), json!(["a", "b"]));
    assert_eq!(
        run(json!({"missing_some": [1, ["a", "b"]]}), json!({"b": 1})),
        json!([])
    );
    eq(json!({"log": "x"}), json!("x"));
}

#[test]
fn string_comparisons_need_exactly_two_strings() {
    eq(
        json!({"starts_with": ["192.168.0.1", "192.168"]}),
        json!(true),
    );
    eq(
        json!({"ends_with": ["a@example.com", "@test.com"]}),
        json!(false),
    );
    eq(json!({"starts_with": ["abc"]}), json!(null));
    eq(json!({"starts_with": ["abc", "a", "b"]}), json!(null));
    eq(json!({"ends_with": [1, "1"]}), json!(null));
    eq(
        json!({"starts_with": [{"var": "missing"}, "a"]}),
        json!(null),
    );
}

#[test]
fn sem_ver_compares_leniently_and_is_null_on_misuse() {
    eq(json!({"sem_ver": ["1.2.3", "=", "v1.2.3"]}), json!(true));
    eq(json!({"sem_ver": ["1.2", "=", "1.2.0"]}), json!(true));
    eq(json!({"sem_ver": ["2", ">", "1.9.9"]}), json!(true));
    eq(json!({"sem_ver": [2, ">=", "2.0.0"]}), json!(true));
    eq(
        json!({"sem_ver": ["1.0.0-rc.1", "<", "1.0.0"]}),
        json!(true),
    );
    eq(json!({"sem_ver": ["1.5.0", "^", "1.0.0"]}), json!(true));
    eq(json!({"sem_ver": ["1.5.0", "~", "1.4.0"]}), json!(false));
    eq(json!({"sem_ver": ["1.0.0", "<>", "1.0.0"]}), json!(null));
    eq(json!({"sem_ver": ["1.0.0", "="]}), json!(null));
    eq(
        json!({"sem_ver": ["not-a-version", "=", "1.0.0"]}),
        json!(null),
    );
    eq(json!({"sem_ver": ["1.0.0.0", "=", "1.0.0"]}), json!(null));
}

#[test]
fn fractional_picks_as_flagd_and_is_null_on_misuse() {
    let split = json!({"fractional": [{"var": "user"}, ["a", 50], ["b", 50]]});
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let value = format!("user-{i}");
        let got = run(split.clone(), json!({"user": value}));
        let expected =
            ["a", "b"][crate::flags::bucket::pick_weighted("", &value, &[50, 50]).unwrap()];
        assert_eq!(got, json!(expected), "{value}");
        seen.insert(got.to_string());
    }
    assert_eq!(seen.len(), 2);
    // Without a bucketing string: flag key + targeting key.
    let by_key = json!({"fractional": [["a", 1], ["b", 1]]});
    let got = run(by_key.clone(), json!({"targetingKey": "u7"}));
    let expected =
        ["a", "b"][crate::flags::bucket::pick_weighted("my-flag", "u7", &[1, 1]).unwrap()];
    assert_eq!(got, json!(expected));
    assert_eq!(
        run(by_key.clone(), json!({})),
        json!(null),
        "no targeting key"
    );
    assert_eq!(
        run(by_key, json!({"targetingKey": ""})),
        json!(null),
        "empty targeting key"
    );
    // Variants may be numbers, booleans or null; weights default to 1.
    eq(json!({"fractional": ["k", [true]]}), json!(true));
    eq(json!({"fractional": ["k", [7, 3]]}), json!(7));
    // Weights adding up to zero, non-integers, malformed buckets: null.
    eq(
        json!({"fractional": ["k", ["a", 0], ["b", 0]]}),
        json!(null),
    );
    eq(
        json!({"fractional": ["k", ["a", -5], ["b", 0]]}),
        json!(null),
    );
    eq(json!({"fractional": ["k", ["a", 1.5]]}), json!(null));
    eq(json!({"fractional": ["k", ["a", 1, 2]]}), json!(null));
    eq(json!({"fractional": ["k", []]}), json!(null));
    eq(json!({"fractional": ["k", "a"]}), json!(null));
    eq(json!({"fractional": ["k", [["a"], 1]]}), json!(null));
    eq(json!({"fractional": []}), json!(null));
    eq(
        json!({"fractional": ["k", ["a", 2147483647], ["b", 1]]}),
        json!(null),
    );
    eq(json!({"fractional": ["k", ["a", 0], ["b", 3]]}), json!("b"));
    // Weights whose sum passes u64 (found by tests/fuzz.rs: it overflowed).
    let huge = json!(i64::MAX);
    eq(
        json!({"fractional": ["k", ["a", huge], ["b", huge], ["c", huge], ["d", 3]]}),
        json!(null),
    );
}

#[test]
fn an_evaluation_past_max_steps_gives_null() {
    // Found by tests/fuzz.rs: merging the accumulator at each item of a long
    // array copied it each time, minutes for 20,000 items.
    let collect = json!({"reduce": [{"var": "xs"},
        {"merge": [{"var": "accumulator"}, [{"var": "current"}]]}, []]});
    let long: Vec<usize> = (0..20_000).collect();
    assert_eq!(run(collect.clone(), json!({"xs": long})), json!(null));
    assert_eq!(run(collect, json!({"xs": [1, 2, 3]})), json!([1, 2, 3]));
    let doubling = json!({"reduce": [{"var": "xs"},
        {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}, "x"]});
    let short: Vec<usize> = (0..64).collect();
    assert_eq!(run(doubling.clone(), json!({"xs": short})), json!(null));
    assert_eq!(run(doubling, json!({"xs": [1, 2]})), json!("xxxx"));
    // Found the same way: an accumulator wrapped at each item overflowed the
    // stack when it was read or dropped.
    let wrap = json!({"*": [2, {"reduce": [{"var": "xs"}, [{"var": "accumulator"}], 1]}]});
    let long: Vec<usize> = (0..20_000).collect();
    assert_eq!(run(wrap.clone(), json!({"xs": long})), json!(null));
    assert_eq!(run(wrap, json!({"xs": [1, 2]})), json!(2));
}

#[test]
fn refs_are_replaced_and_unknown_operations_refused() {
    let evaluators = json!({"isBeta": {"in": [{"var": "email"}, ["a@b.c"]]}});
    let logic = Logic::parse(
        &json!({"if": [{"$ref": "isBeta"}, "on", null]}),
        evaluators.as_object().unwrap(),
    )
    .unwrap();
    let context = json!({"email": "a@b.c"}).as_object().cloned().unwrap();
    let context = crate::flags::Context::new(&context);
    let env = Env::new(&context, "f", 0);
    assert_eq!(*logic.evaluate(&env), json!("on"));
    assert_eq!(
        Logic::parse(&json!({"$ref": "nope"}), &Map::new()),
        Err(ParseError::UnknownReference("nope".into()))
    );
    let looping = json!({"me": {"!": {"$ref": "me"}}});
    assert_eq!(
        Logic::parse(&json!({"$ref": "me"}), looping.as_object().unwrap()),
        Err(ParseError::TooDeep)
    );
    assert_eq!(
        Logic::parse(&json!({"regex_match": ["a", "b"]}), &Map::new()),
        Err(ParseError::UnknownOperation("regex_match".into()))
    );
    // Objects of several keys are data, not operations.
    eq(json!({"a": 1, "b": 2}), json!({"a": 1, "b": 2}));
}
