//! JsonLogic as flagd evaluates targeting: the standard operations with
//! JavaScript's semantics (as jsonlogic.com's reference implementation has them),
//! flagd's `fractional`, `sem_ver`, `starts_with` and `ends_with`, `$flagd.flagKey`
//! and `$flagd.timestamp`, and `$ref` to shared `$evaluators`.
//!
//! An expression is parsed once into a tree of resolved operations; evaluating it
//! never fails: where flagd's custom operations are misused (wrong argument counts,
//! non-strings, weights adding up to zero) they give null, as flagd's do.
//! Evaluation never logs (flagd's `log` just returns its argument): contexts may
//! hold private attributes.

mod ops;
pub mod value;

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::{Map, Value};

use super::attribute::Env;
use value::{compare, loose_equal, number, strict_equal, to_js_string, to_number, truthy};

/// Deepest nesting of an expression (after `$ref`s are replaced).
pub const MAX_DEPTH: usize = 64;
/// Most operations and values in one expression.
pub const MAX_NODES: usize = 100_000;
/// Most steps one evaluation takes: each operation or value evaluated, each item
/// an iterating operation goes over, each item `merge` copies, each character
/// `cat` writes and each value `reduce` accumulates. More gives null, and so does
/// an accumulator nested deeper than 128 levels: a `reduce` over a context's long
/// array would otherwise copy its accumulator at each item (quadratic, or
/// exponential when it doubles), or nest it until the stack overflows.
pub const MAX_STEPS: usize = 1_000_000;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Logic {
    root: Node,
    /// The expression as written (with `$ref`s replaced), for export.
    source: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Array(Vec<Node>),
    Op(Op, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Var,
    Missing,
    MissingSome,
    If,
    Equal,
    StrictEqual,
    NotEqual,
    StrictNotEqual,
    Not,
    Truthy,
    Or,
    And,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    Max,
    Min,
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Map,
    Filter,
    Reduce,
    All,
    None,
    Some,
    Merge,
    In,
    Cat,
    Substr,
    Log,
    Fractional,
    SemVer,
    StartsWith,
    EndsWith,
}

impl Op {
    fn named(name: &str) -> Option<Op> {
        Some(match name {
            "var" => Op::Var,
            "missing" => Op::Missing,
            "missing_some" => Op::MissingSome,
            "if" | "?:" => Op::If,
            "==" => Op::Equal,
            "===" => Op::StrictEqual,
            "!=" => Op::NotEqual,
            "!==" => Op::StrictNotEqual,
            "!" => Op::Not,
            "!!" => Op::Truthy,
            "or" => Op::Or,
            "and" => Op::And,
            ">" => Op::Greater,
            ">=" => Op::GreaterOrEqual,
            "<" => Op::Less,
            "<=" => Op::LessOrEqual,
            "max" => Op::Max,
            "min" => Op::Min,
            "+" => Op::Add,
            "-" => Op::Subtract,
            "*" => Op::Multiply,
            "/" => Op::Divide,
            "%" => Op::Modulo,
            "map" => Op::Map,
            "filter" => Op::Filter,
            "reduce" => Op::Reduce,
            "all" => Op::All,
            "none" => Op::None,
            "some" => Op::Some,
            "merge" => Op::Merge,
            "in" => Op::In,
            "cat" => Op::Cat,
            "substr" => Op::Substr,
            "log" => Op::Log,
            "fractional" => Op::Fractional,
            "sem_ver" => Op::SemVer,
            "starts_with" => Op::StartsWith,
            "ends_with" => Op::EndsWith,
            _ => return None,
        })
    }
}

/// Why an expression cannot be used. Never quotes context values: there are none
/// at parse time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown operation {}", crate::api::shown(.0))]
    UnknownOperation(String),
    #[error("$ref {} names no entry of $evaluators", crate::api::shown(.0))]
    UnknownReference(String),
    #[error("nests deeper than {MAX_DEPTH} levels (a $ref that refers to itself?)")]
    TooDeep,
    #[error("has more than {MAX_NODES} operations and values")]
    TooLarge,
}

impl Logic {
    /// Parses `expression`, replacing each `{"$ref": name}` with `evaluators[name]`.
    pub fn parse(expression: &Value, evaluators: &Map<String, Value>) -> Result<Self, ParseError> {
        let mut nodes = 0;
        let source = resolve(expression, evaluators, 0, &mut nodes)?;
        let root = node(&source)?;
        Ok(Self { root, source })
    }

    /// The expression, `$ref`s replaced.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Evaluates the expression for `env`'s context: null when that would take
    /// more than [`MAX_STEPS`].
    pub fn evaluate<'a>(&'a self, env: &Env<'a>) -> Cow<'a, Value> {
        let run = Run {
            env,
            steps: Cell::new(0),
        };
        let value = eval(&self.root, Data::Root, &run);
        if run.steps.get() > MAX_STEPS {
            Cow::Owned(Value::Null)
        } else {
            value
        }
    }
}

/// Replaces `$ref`s, bounding depth and size.
fn resolve(
    value: &Value,
    evaluators: &Map<String, Value>,
    depth: usize,
    nodes: &mut usize,
) -> Result<Value, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::TooDeep);
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ParseError::TooLarge);
    }
    Ok(match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$ref") => {
            let name = map["$ref"].as_str().unwrap_or_default();
            let target = evaluators
                .get(name)
                .ok_or_else(|| ParseError::UnknownReference(name.to_string()))?;
            resolve(target, evaluators, depth + 1, nodes)?
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, evaluators, depth + 1, nodes)?)))
                .collect::<Result<_, ParseError>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, evaluators, depth + 1, nodes))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn node(value: &Value) -> Result<Node, ParseError> {
    Ok(match value {
        // An object of exactly one key is an operation; any other object is data.
        Value::Object(map) if map.len() == 1 => {
            let (name, args) = map.iter().next().expect("one entry");
            let op = Op::named(name).ok_or_else(|| ParseError::UnknownOperation(name.clone()))?;
            let args = match args {
                Value::Array(items) => items.iter().map(node).collect::<Result<_, _>>()?,
                single => vec![node(single)?],
            };
            Node::Op(op, args)
        }
        Value::Array(items) => Node::Array(items.iter().map(node).collect::<Result<_, _>>()?),
        other => Node::Literal(other.clone()),
    })
}

/// Deepest nesting of a value `reduce` accumulates, as deep as serde_json reads.
const MAX_VALUE_DEPTH: usize = 128;

/// How many values `value` holds (itself included), or `None` when it nests more
/// than `depth` levels.
fn values_within(value: &Value, depth: usize) -> Option<usize> {
    let mut children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(members) => Box::new(members.values()),
        _ => return Some(1),
    };
    let depth = depth.checked_sub(1)?;
    children.try_fold(1usize, |count, child| {
        Some(count.saturating_add(values_within(child, depth)?))
    })
}

/// An evaluation: what it reads, and the steps it took so far.
struct Run<'e, 'a> {
    env: &'e Env<'a>,
    steps: Cell<usize>,
}

impl Run<'_, '_> {
    /// Takes `count` steps; false once more than [`MAX_STEPS`] were taken.
    fn take(&self, count: usize) -> bool {
        let steps = self.steps.get().saturating_add(count);
        self.steps.set(steps);
        steps <= MAX_STEPS
    }
}

impl<'a> std::ops::Deref for Run<'_, 'a> {
    type Target = Env<'a>;
    fn deref(&self) -> &Env<'a> {
        self.env
    }
}

/// What `var` reads: the evaluation context (with `$flagd`), or the item an
/// iterating operation (`map`, `filter`, ...) is on.
#[derive(Clone, Copy)]
enum Data<'a> {
    Root,
    Item(&'a Value),
}

fn eval<'a>(node: &'a Node, data: Data<'a>, env: &Run<'_, 'a>) -> Cow<'a, Value> {
    if !env.take(1) {
        return Cow::Owned(Value::Null);
    }
    match node {
        Node::Literal(v) => Cow::Borrowed(v),
        Node::Array(items) => Cow::Owned(Value::Array(
            items
                .iter()
                .map(|i| eval(i, data, env).into_owned())
                .collect(),
        )),
        Node::Op(op, args) => apply(*op, args, data, env),
    }
}

fn arg<'a>(args: &'a [Node], i: usize, data: Data<'a>, env: &Run<'_, 'a>) -> Cow<'a, Value> {
    args.get(i)
        .map_or(Cow::Owned(Value::Null), |a| eval(a, data, env))
}

fn all_args<'a>(args: &'a [Node], data: Data<'a>, env: &Run<'_, 'a>) -> Vec<Cow<'a, Value>> {
    args.iter().map(|a| eval(a, data, env)).collect()
}

fn boolean<'a>(b: bool) -> Cow<'a, Value> {
    Cow::Owned(Value::Bool(b))
}

fn apply<'a>(op: Op, args: &'a [Node], data: Data<'a>, env: &Run<'_, 'a>) -> Cow<'a, Value> {
    match op {
        Op::Var => {
            let key = arg(args, 0, data, env);
            let found = lookup(&key, data, env);
            match found {
                Some(v) if !v.is_null() => v,
                _ => arg(args, 1, data, env),
            }
        }
        Op::Missing => Cow::Owned(Value::Array(missing(&all_args(args, data, env), data, env))),
        Op::MissingSome => {
            let need = to_number(&arg(args, 0, data, env));
            let keys = arg(args, 1, data, env);
            let keys: &[Value] = keys.as_array().map_or(&[], Vec::as_slice);
            let absent = missing_keys(keys, data, env);
            if (keys.len() - absent.len()) as f64 >= need {
                Cow::Owned(Value::Array(Vec::new()))
            } else {
                Cow::Owned(Value::Array(absent))
            }
        }
        Op::If => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(&eval(&args[i], data, env)) {
                    return eval(&args[i + 1], data, env);
                }
                i += 2;
            }
            if i < args.len() {
                eval(&args[i], data, env)
            } else {
                Cow::Owned(Value::Null)
            }
        }
        Op::Or | Op::And => {
            let mut last = Cow::Owned(Value::Null);
            for a in args {
                last = eval(a, data, env);
                if truthy(&last) == (op == Op::Or) {
                    return last;
                }
            }
            last
        }
        Op::Not => boolean(!truthy(&arg(args, 0, data, env))),
        Op::Truthy => boolean(truthy(&arg(args, 0, data, env))),
        Op::Equal | Op::NotEqual | Op::StrictEqual | Op::StrictNotEqual => {
            let (a, b) = (arg(args, 0, data, env), arg(args, 1, data, env));
            let equal = if matches!(op, Op::Equal | Op::NotEqual) {
                loose_equal(&a, &b)
            } else {
                strict_equal(&a, &b)
            };
            boolean(equal == matches!(op, Op::Equal | Op::StrictEqual))
        }
        Op::Less | Op::LessOrEqual if args.len() == 3 => {
            // Between: a < b < c.
            let values = all_args(args, data, env);
            let holds = |x: &Value, y: &Value| relation(op, x, y);
            boolean(holds(&values[0], &values[1]) && holds(&values[1], &values[2]))
        }
        Op::Greater | Op::GreaterOrEqual | Op::Less | Op::LessOrEqual => boolean(relation(
            op,
            &arg(args, 0, data, env),
            &arg(args, 1, data, env),
        )),
        Op::Max | Op::Min => {
            let values: Vec<f64> = all_args(args, data, env)
                .iter()
                .map(|v| to_number(v))
                .collect();
            if values.is_empty() || values.iter().any(|f| f.is_nan()) {
                return Cow::Owned(Value::Null);
            }
            let pick = if op == Op::Max { f64::max } else { f64::min };
            Cow::Owned(number(values.into_iter().reduce(pick).unwrap_or(f64::NAN)))
        }
        Op::Add => Cow::Owned(number(
            all_args(args, data, env).iter().map(|v| to_number(v)).sum(),
        )),
        Op::Multiply => Cow::Owned(number(
            all_args(args, data, env)
                .iter()
                .map(|v| to_number(v))
                .product(),
        )),
        Op::Subtract => {
            let a = to_number(&arg(args, 0, data, env));
            Cow::Owned(number(if args.len() == 1 {
                -a
            } else {
                a - to_number(&arg(args, 1, data, env))
            }))
        }
        Op::Divide | Op::Modulo => {
            let a = to_number(&arg(args, 0, data, env));
            let b = to_number(&arg(args, 1, data, env));
            Cow::Owned(number(if op == Op::Divide { a / b } else { a % b }))
        }
        Op::Map | Op::Filter | Op::All | Op::None | Op::Some => iterate(op, args, data, env),
        Op::Reduce => {
            let items = arg(args, 0, data, env);
            let mut accumulator = arg(args, 2, data, env).into_owned();
            let Some(logic) = args.get(1) else {
                return Cow::Owned(accumulator);
            };
            let items = items.as_array().map_or(&[][..], Vec::as_slice);
            if !env.take(items.len()) {
                return Cow::Owned(Value::Null);
            }
            for item in items {
                let scope = serde_json::json!({"current": item, "accumulator": accumulator});
                accumulator = eval(logic, Data::Item(&scope), env).into_owned();
                // A step may wrap the accumulator (`[{"var": "accumulator"}]`):
                // item after item it would nest deeper than any reading (or
                // dropping) of it can recurse without overflowing the stack.
                match values_within(&accumulator, MAX_VALUE_DEPTH) {
                    Some(values) if env.take(values) => {}
                    _ => {
                        env.take(usize::MAX);
                        return Cow::Owned(Value::Null);
                    }
                }
            }
            Cow::Owned(accumulator)
        }
        Op::Merge => {
            let mut merged = Vec::new();
            for value in all_args(args, data, env) {
                match value.into_owned() {
                    Value::Array(items) => merged.extend(items),
                    other => merged.push(other),
                }
            }
            env.take(merged.len());
            Cow::Owned(Value::Array(merged))
        }
        Op::In => {
            let (needle, haystack) = (arg(args, 0, data, env), arg(args, 1, data, env));
            boolean(match &*haystack {
                Value::String(s) => s.contains(&to_js_string(&needle)),
                Value::Array(items) => items.iter().any(|i| strict_equal(i, &needle)),
                _ => false,
            })
        }
        Op::Cat => {
            let mut text = String::new();
            for value in all_args(args, data, env) {
                if !value.is_null() {
                    text.push_str(&to_js_string(&value));
                }
            }
            env.take(text.len());
            Cow::Owned(Value::String(text))
        }
        Op::Substr => {
            let text = to_js_string(&arg(args, 0, data, env));
            let start = to_number(&arg(args, 1, data, env));
            let length = args.get(2).map(|a| to_number(&eval(a, data, env)));
            Cow::Owned(Value::String(ops::substr(&text, start, length)))
        }
        Op::Log => arg(args, 0, data, env),
        Op::Fractional => Cow::Owned(ops::fractional(&all_args(args, data, env), env)),
        Op::SemVer => Cow::Owned(ops::sem_ver(&all_args(args, data, env))),
        Op::StartsWith | Op::EndsWith => Cow::Owned(ops::string_comparison(
            op == Op::StartsWith,
            &all_args(args, data, env),
        )),
    }
}

fn relation(op: Op, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering::*;
    match (op, compare(a, b)) {
        (_, None) => false,
        (Op::Less, Some(o)) => o == Less,
        (Op::LessOrEqual, Some(o)) => o != Greater,
        (Op::Greater, Some(o)) => o == Greater,
        (Op::GreaterOrEqual, Some(o)) => o != Less,
        _ => false,
    }
}

fn iterate<'a>(op: Op, args: &'a [Node], data: Data<'a>, env: &Run<'_, 'a>) -> Cow<'a, Value> {
    let items = arg(args, 0, data, env);
    let items: &[Value] = items.as_array().map_or(&[], Vec::as_slice);
    if !env.take(items.len()) {
        return Cow::Owned(Value::Null);
    }
    let logic = args.get(1);
    let test = |item: &Value| -> Value {
        logic.map_or(Value::Null, |l| eval(l, Data::Item(item), env).into_owned())
    };
    Cow::Owned(match op {
        Op::Map => Value::Array(items.iter().map(test).collect()),
        Op::Filter => Value::Array(items.iter().filter(|i| truthy(&test(i))).cloned().collect()),
        // As the reference implementation: `all` of nothing is false.
        Op::All => Value::Bool(!items.is_empty() && items.iter().all(|i| truthy(&test(i)))),
        Op::None => Value::Bool(!items.iter().any(|i| truthy(&test(i)))),
        _ => Value::Bool(items.iter().any(|i| truthy(&test(i)))),
    })
}

/// `var`: a dotted path into the data; `""` (or null) is the data itself.
fn lookup<'a>(key: &Value, data: Data<'a>, env: &Run<'_, 'a>) -> Option<Cow<'a, Value>> {
    let path = match key {
        Value::Null => String::new(),
        other => to_js_string(other),
    };
    if path.is_empty() {
        return Some(match data {
            Data::Item(v) => Cow::Borrowed(v),
            Data::Root => {
                let mut whole = env.context.attributes().clone();
                whole.insert("$flagd".into(), flagd_properties(env));
                Cow::Owned(Value::Object(whole))
            }
        });
    }
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut value: Cow<'a, Value> = match data {
        Data::Item(v) => Cow::Borrowed(step(v, first)?),
        Data::Root if first == "$flagd" => Cow::Owned(flagd_properties(env)),
        Data::Root => Cow::Borrowed(env.get(first)?),
    };
    for part in parts {
        value = match value {
            Cow::Borrowed(v) => Cow::Borrowed(step(v, part)?),
            Cow::Owned(v) => Cow::Owned(step(&v, part)?.clone()),
        };
    }
    Some(value)
}

fn step<'v>(value: &'v Value, part: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(part),
        Value::Array(items) => items.get(part.parse::<usize>().ok()?),
        _ => None,
    }
}

fn flagd_properties(env: &Env<'_>) -> Value {
    serde_json::json!({"flagKey": env.flag_key, "timestamp": env.now_seconds})
}

fn missing<'a>(args: &[Cow<'a, Value>], data: Data<'a>, env: &Run<'_, 'a>) -> Vec<Value> {
    match args.first().map(|a| &**a) {
        Some(Value::Array(keys)) => missing_keys(keys, data, env),
        _ => {
            let keys: Vec<Value> = args.iter().map(|a| a.clone().into_owned()).collect();
            missing_keys(&keys, data, env)
        }
    }
}

fn missing_keys<'a>(keys: &[Value], data: Data<'a>, env: &Run<'_, 'a>) -> Vec<Value> {
    keys.iter()
        .filter(|key| lookup(key, data, env).is_none_or(|v| v.is_null() || v.as_str() == Some("")))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
