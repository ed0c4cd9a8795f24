//! flagd flag-definition documents, imported as `--flags` files are, their flags
//! evaluated for the contexts the document lists under `contexts` (a member
//! flagd does not read) and a few fixed ones; and each targeting expression and
//! `$evaluators` entry parsed and evaluated alone.
//!
//! Invariants: no panic and no hang (the harness's watchdog); an import either
//! gives flags or names its problems; a flag resolves to one of its variants, no
//! variant, or an evaluation error of flagd's kinds; an expression parses only
//! when it nests at most `MAX_DEPTH` levels and holds at most `MAX_NODES`
//! operations and values once `$ref`s are replaced.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use spangate::flags::jsonlogic::{Logic, MAX_DEPTH, MAX_NODES};
use spangate::flags::{Context, Env, EvaluationError, FlagState, flagd};

use super::harness::{Outcome, Rng};
use super::mutate::{self, MARKER};

/// Every operation spangate evaluates, with how many arguments it takes.
const OPERATIONS: &[(&str, usize, usize)] = &[
    ("var", 1, 2),
    ("missing", 1, 3),
    ("missing_some", 2, 2),
    ("if", 1, 5),
    ("?:", 3, 3),
    ("==", 2, 2),
    ("===", 2, 2),
    ("!=", 2, 2),
    ("!==", 2, 2),
    ("!", 1, 1),
    ("!!", 1, 1),
    ("or", 1, 4),
    ("and", 1, 4),
    (">", 2, 2),
    (">=", 2, 2),
    ("<", 2, 3),
    ("<=", 2, 3),
    ("max", 0, 4),
    ("min", 0, 4),
    ("+", 0, 4),
    ("-", 1, 2),
    ("*", 0, 4),
    ("/", 2, 2),
    ("%", 2, 2),
    ("map", 2, 2),
    ("filter", 2, 2),
    ("reduce", 2, 3),
    ("all", 2, 2),
    ("none", 2, 2),
    ("some", 2, 2),
    ("merge", 0, 4),
    ("in", 2, 2),
    ("cat", 0, 4),
    ("substr", 2, 3),
    ("log", 1, 1),
    ("fractional", 1, 5),
    ("sem_ver", 3, 3),
    ("starts_with", 2, 2),
    ("ends_with", 2, 2),
];

/// Context attributes expressions read, and paths into them.
const VARS: &[&str] = &[
    "targetingKey",
    "email",
    "app.version",
    "tags",
    "tags.0",
    "n",
    "x",
    "accountId",
    "",
    "$flagd.flagKey",
    "$flagd.timestamp",
    "current",
    "accumulator",
    "nope.deeper",
];

const KEYS: &[&str] = &[
    "flags",
    "$evaluators",
    "contexts",
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
    "$ref",
    "ENABLED",
    "DISABLED",
    "var",
    "if",
    "fractional",
    "reduce",
    "map",
    "merge",
    "cat",
    "sem_ver",
    "missing_some",
    "targetingKey",
    "email",
];

pub fn check(input: &[u8]) -> Outcome {
    // A `--flags` file that is not JSON is refused before it is imported.
    let Ok(document) = serde_json::from_slice::<Value>(input) else {
        return Ok(());
    };
    let contexts = contexts(&document);
    let now = Timestamp::from_second(1_793_000_000).expect("a time");
    match flagd::import(&document) {
        Err(problems) => {
            if problems.is_empty() || problems.iter().any(|p| p.to_string().trim().is_empty()) {
                return Err(format!("an import refused without a reason: {problems:?}"));
            }
        }
        Ok(flags) => {
            for flag in &flags {
                let names: Vec<&str> = flag.variants.iter().map(|v| v.name.as_str()).collect();
                for context in &contexts {
                    match flag.evaluate(&Context::new(context), now) {
                        Ok(resolution) => {
                            if let Some(variant) = resolution.variant
                                && !names.contains(&variant)
                            {
                                return Err(format!(
                                    "{} resolved to {variant:?}, not one of {names:?}",
                                    flag.key
                                ));
                            }
                            if flag.state == FlagState::Disabled && resolution.variant.is_some() {
                                return Err(format!("disabled {} resolved to a variant", flag.key));
                            }
                        }
                        Err(
                            EvaluationError::UnknownVariant { .. }
                            | EvaluationError::InvalidDefinition { .. },
                        ) => {}
                        Err(other) => {
                            return Err(format!(
                                "{} failed as no flagd flag can: {other}",
                                flag.key
                            ));
                        }
                    }
                }
            }
        }
    }

    let empty = Map::new();
    let evaluators = document
        .get("$evaluators")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let targetings = document
        .get("flags")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|flags| flags.values())
        .filter_map(|flag| flag.get("targeting"));
    for expression in targetings.chain(evaluators.values()) {
        let logic = match Logic::parse(expression, evaluators) {
            Ok(logic) => logic,
            Err(error) if error.to_string().trim().is_empty() => {
                return Err(format!("an expression refused without a reason: {error:?}"));
            }
            Err(_) => continue,
        };
        let (written, replaced) = (deepest(expression), deepest(logic.source()));
        let nodes = size(logic.source());
        if written > MAX_DEPTH || replaced > MAX_DEPTH || nodes > MAX_NODES {
            return Err(format!(
                "an expression {written} levels deep as written, {replaced} with its $refs \
                 replaced, of {nodes} values, parsed (at most {MAX_DEPTH} and {MAX_NODES})"
            ));
        }
        for context in &contexts {
            let context = Context::new(context);
            logic.evaluate(&Env::new(&context, "fuzzed-flag", now.as_second()));
        }
    }
    Ok(())
}

/// The contexts under `contexts`, and a few every document is tried with.
fn contexts(document: &Value) -> Vec<Map<String, Value>> {
    let fixed = [
        json!({}),
        json!({"targetingKey": "user-1", "email": "ann@spangate.dev", "app": {"version": "2.1.0"}, "tags": ["beta"]}),
    ];
    document
        .get("contexts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(&fixed)
        .filter_map(|c| c.as_object().cloned())
        .take(12)
        .collect()
}

/// How deep the deepest value lies under `value` (its own depth 0), not counting
/// what a `$ref` names: that is replaced before depth counts.
fn deepest(value: &Value) -> usize {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Object(members) if members.len() == 1 && members.contains_key("$ref") => {
            return 0;
        }
        Value::Object(members) => Box::new(members.values()),
        Value::Array(items) => Box::new(items.iter()),
        _ => return 0,
    };
    children.map(|child| 1 + deepest(child)).max().unwrap_or(0)
}

/// How many values a value holds, itself included.
fn size(value: &Value) -> usize {
    1 + match value {
        Value::Object(members) => members.values().map(size).sum(),
        Value::Array(items) => items.iter().map(size).sum(),
        _ => 0,
    }
}

pub fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut document = if rng.one_in(2) {
        document(rng)
    } else {
        let seed: &Vec<u8> = rng.pick(pool);
        match serde_json::from_slice::<Value>(seed) {
            Ok(document) => document,
            Err(_) => document(rng),
        }
    };
    for _ in 0..rng.below(4) {
        if rng.one_in(2) {
            mutate::json(rng, &mut document, KEYS);
        } else {
            graft(rng, &mut document);
        }
    }
    let mut out = serde_json::to_vec(&document).expect("JSON written");
    if rng.one_in(10) {
        mutate::bytes(rng, &mut out, pool, KEYS);
    }
    out
}

/// A generated expression in place of a node of some flag's targeting.
fn graft(rng: &mut Rng, document: &mut Value) {
    let grown = expression(rng, 3);
    let Some(flags) = document.get_mut("flags").and_then(Value::as_object_mut) else {
        return;
    };
    let count = flags.len();
    let Some(Value::Object(flag)) = flags.values_mut().nth(rng.below(count)) else {
        return;
    };
    match flag.get_mut("targeting") {
        Some(targeting) => *mutate::pick(rng, targeting) = grown,
        None => {
            flag.insert("targeting".to_string(), grown);
        }
    }
}

/// A flag-definition document of a few flags over generated expressions, with
/// evaluators and contexts.
fn document(rng: &mut Rng) -> Value {
    let mut flags = Map::new();
    for index in 0..=rng.below(3) {
        let variants: Map<String, Value> = (0..=rng.below(4))
            .map(|i| {
                let name = rng
                    .pick(&["on", "off", "a", "b", "1", "true", "null", ""])
                    .to_string();
                (
                    name,
                    if rng.one_in(2) {
                        json!(i)
                    } else {
                        mutate::scalar(rng)
                    },
                )
            })
            .collect();
        let default = match rng.below(6) {
            0 => Value::Null,
            1 => json!(""),
            2 => json!("missing"),
            _ => variants
                .keys()
                .next()
                .map_or(Value::Null, |name| json!(name)),
        };
        let mut flag = json!({
            "state": *rng.pick(&["ENABLED", "ENABLED", "ENABLED", "DISABLED", "ON"]),
            "variants": variants,
            "defaultVariant": default,
        });
        if !rng.one_in(6) {
            flag["targeting"] = if rng.one_in(4) {
                json!({"if": [expression(rng, 3), variant_choice(rng), variant_choice(rng)]})
            } else {
                expression(rng, 4)
            };
        }
        flags.insert(format!("flag-{index}"), flag);
    }
    let evaluators: Map<String, Value> = (0..rng.below(3))
        .map(|i| (format!("e{i}"), expression(rng, 3)))
        .collect();
    let contexts: Vec<Value> = (0..=rng.below(5)).map(|_| context(rng)).collect();
    json!({"flags": flags, "$evaluators": evaluators, "contexts": contexts})
}

fn variant_choice(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => Value::Null,
        1 => json!({"var": *rng.pick(VARS)}),
        _ => json!(*rng.pick(&["on", "off", "a", "b", "1"])),
    }
}

/// An expression at most `depth` operations deep, sometimes a long chain or a
/// long array, sometimes misusing an operation.
fn expression(rng: &mut Rng, depth: usize) -> Value {
    if rng.one_in(40) {
        // Around the depth limit: a chain of negations, each an object over an
        // array (two levels).
        let levels = MAX_DEPTH / 2 - 2 + rng.below(5);
        let mut chain = json!({"var": "x"});
        for _ in 0..levels {
            chain = json!({"!": [chain]});
        }
        return chain;
    }
    if depth == 0 || rng.one_in(4) {
        return leaf(rng);
    }
    match rng.below(12) {
        0 => fractional(rng),
        1 => json!({"$ref": *rng.pick(&["e0", "e1", "e2", "nowhere"])}),
        2 => reduce(rng, depth),
        3 => json!({ *rng.pick(&["map", "filter", "all", "none", "some"]):
            [collection(rng, depth - 1), expression(rng, depth - 1)] }),
        4 => {
            json!({"sem_ver": [version(rng), *rng.pick(&["=", "!=", "<", "<=", ">", ">=", "^", "~", "!"]), version(rng)]})
        }
        5 => json!({ *rng.pick(&["regex", "", "Var", "$ref"]): [leaf(rng)] }),
        _ => {
            let (name, least, most) = *rng.pick(OPERATIONS);
            let count = least + rng.below(most - least + 1);
            let count = if rng.one_in(10) { rng.below(6) } else { count };
            let arguments: Vec<Value> = (0..count).map(|_| expression(rng, depth - 1)).collect();
            if count == 1 && rng.one_in(2) {
                json!({ name: arguments[0] })
            } else {
                json!({ name: arguments })
            }
        }
    }
}

fn leaf(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 | 1 => json!({"var": *rng.pick(VARS)}),
        2 => json!({"var": [*rng.pick(VARS), mutate::scalar(rng)]}),
        3 => mutate::scalar(rng),
        _ => json!(*rng.pick(&["on", "off", "a", "b", "2.0.0", "@spangate.dev"])),
    }
}

/// What an iterating operation goes over: a context array, a generated one, or
/// a long one.
fn collection(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(5) {
        0 => json!({"var": "tags"}),
        1 => json!({"var": "xs"}),
        2 => Value::Array((0..rng.length(20_000)).map(|i| json!(i)).collect()),
        _ => Value::Array((0..rng.length(5)).map(|_| expression(rng, depth)).collect()),
    }
}

/// `reduce` with an accumulating step: a sum, a concatenation, a merge, or the
/// accumulator wrapped.
fn reduce(rng: &mut Rng, depth: usize) -> Value {
    let step = match rng.below(6) {
        0 => json!({"+": [{"var": "accumulator"}, {"var": "current"}]}),
        1 => json!({"cat": [{"var": "accumulator"}, {"var": "current"}]}),
        2 => json!({"merge": [{"var": "accumulator"}, [{"var": "current"}]]}),
        3 => json!([{"var": "accumulator"}]),
        4 => json!({"if": [{"var": "current"}, {"var": "accumulator"}, {"var": "current"}]}),
        _ => expression(rng, depth - 1),
    };
    json!({"reduce": [collection(rng, depth - 1), step, leaf(rng)]})
}

fn fractional(rng: &mut Rng) -> Value {
    let mut arguments = Vec::new();
    if rng.one_in(2) {
        arguments.push(if rng.one_in(2) {
            json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]})
        } else {
            leaf(rng)
        });
    }
    for _ in 0..=rng.below(4) {
        let variant = json!(*rng.pick(&["on", "off", "a", "b"]));
        let weight = match rng.below(8) {
            0 => json!(i64::MAX),
            1 => json!(1e19),
            2 => json!(-5),
            3 => json!(2.5),
            4 => json!(u32::MAX),
            5 => mutate::scalar(rng),
            _ => json!(rng.below(100)),
        };
        arguments.push(match rng.below(6) {
            0 => json!([variant]),
            1 => json!([variant, weight, 1]),
            _ => json!([variant, weight]),
        });
    }
    json!({ "fractional": arguments })
}

fn version(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({"var": "app.version"}),
        1 => mutate::scalar(rng),
        _ => json!(*rng.pick(&[
            "2.0.0",
            "v1.9",
            "1.2",
            "1.0.0-alpha.1+build",
            "99999999999999999999.0.0",
            "1.-1.0",
            "",
            "1..2",
        ])),
    }
}

/// A context with the attributes expressions read, of every type.
fn context(rng: &mut Rng) -> Value {
    let mut context = Map::new();
    for _ in 0..rng.length(6) {
        let name = *rng.pick(&[
            "targetingKey",
            "email",
            "app",
            "tags",
            "n",
            "x",
            "xs",
            "accountId",
        ]);
        let value = match name {
            "app" => json!({"version": version(rng)}),
            "xs" => Value::Array((0..rng.length(20_000)).map(|i| json!(i % 7)).collect()),
            "email" => json!(format!(
                "{MARKER}@{}",
                rng.pick(&["spangate.dev", "example.com"])
            )),
            _ => mutate::value(rng, 2, VARS),
        };
        context.insert(name.to_string(), value);
    }
    Value::Object(context)
}
