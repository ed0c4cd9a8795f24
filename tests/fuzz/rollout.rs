//! Rollout files (YAML and JSON), read as the standalone store reads them, then
//! planned, compiled and served as the controller would.
//!
//! Invariants: no panic; every problem is a message that names the file, holds
//! no control character, stays short, and repeats no more of the file than a
//! name cut to 64 characters (`names::shown`), as a status must not carry what
//! the file holds; a document read is planned and compiled without panicking,
//! the flag it serves resolves to one of its variants, and its flagd export
//! imports back.

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use spangate::api::{FeatureRolloutSpec, FeatureRolloutStatus, Phase, SegmentSpec};
use spangate::controller::SegmentCatalog;
use spangate::flags::{Context, Flag, flagd};
use spangate::store::StoredSegment;
use spangate::store::rollout_file::{self, Parsed};

use super::harness::{self, Outcome, Rng};
use super::mutate;

/// The file name messages are expected to name.
const SOURCE: &str = "rollouts/fuzzed.yaml";
/// Longest run of the file a message may repeat: a name cut to 64 characters
/// (`names::shown`), quoted, its escapes (`\n`, `\0`) perhaps written as the
/// file writes them.
const LONGEST_ECHO: usize = 2 * 64 + 2;
/// Longest message: five unknown fields named, with the nearest known names.
const LONGEST_MESSAGE: usize = 4096;

pub fn check(input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    for is_json in [false, true] {
        let parsed = rollout_file::parse(SOURCE, is_json, &text);
        for problem in problems(&parsed) {
            message(&problem, &text)?;
        }
        for flag in served_flags(&parsed, &text)? {
            resolves(&flag)?;
        }
    }
    Ok(())
}

fn problems(parsed: &Parsed) -> impl Iterator<Item = String> {
    let rollouts = parsed.rollouts.iter().filter_map(|d| d.spec.as_ref().err());
    let segments = parsed.segments.iter().filter_map(|s| s.spec.as_ref().err());
    rollouts.chain(segments).map(ToString::to_string)
}

fn message(problem: &str, file: &str) -> Outcome {
    if !problem.starts_with(SOURCE) {
        return Err(format!(
            "a problem that does not name the file: {problem:?}"
        ));
    }
    if problem.len() > LONGEST_MESSAGE {
        return Err(format!("a problem of {} bytes: {problem:?}", problem.len()));
    }
    if problem.chars().any(char::is_control) {
        return Err(format!("a problem with control characters: {problem:?}"));
    }
    if let Some(run) = harness::echoed(problem, file, LONGEST_ECHO) {
        return Err(format!(
            "a problem repeats {} characters of the file, {run:?}: {problem:?}",
            run.chars().count()
        ));
    }
    Ok(())
}

/// The flags the rollouts of `parsed` serve at a step of 25%, compiled with the
/// segments of the same file; the plan of each is made too, and its problems
/// checked as messages about `file`.
pub fn served_flags(parsed: &Parsed, file: &str) -> Result<Vec<Flag>, String> {
    let stored: Vec<StoredSegment> = parsed
        .segments
        .iter()
        .map(|segment| StoredSegment {
            key: segment.key.clone(),
            spec: segment.spec.clone(),
            source: SOURCE.to_string(),
        })
        .collect();
    let mut catalog = SegmentCatalog::default();
    catalog.update(&stored);
    let mut flags = Vec::new();
    for document in &parsed.rollouts {
        let Ok(spec) = &document.spec else { continue };
        let key = document
            .key
            .as_ref()
            .ok_or("a rollout was read without its key")?;
        if document.hash.is_empty() {
            return Err("a rollout was read without its hash".to_string());
        }
        let compiled = match catalog.compile(key, spec.clone()) {
            Ok(compiled) => compiled,
            Err(invalid) => {
                for problem in &invalid.problems {
                    message(&format!("{SOURCE}: {problem}"), file)?;
                }
                continue;
            }
        };
        let status = FeatureRolloutStatus {
            phase: Phase::Progressing,
            current_step: Some(1),
            weight: 25.0,
            ..Default::default()
        };
        flags.extend(compiled.flag(&key.to_string(), &status));
    }
    Ok(flags)
}

/// Contexts every flag is evaluated for.
fn contexts() -> Vec<Map<String, Value>> {
    [
        json!({}),
        json!({"targetingKey": "user-1", "accountId": "acct-42", "email": "ann@gmail.com"}),
        json!({"targetingKey": "qa-alice", "plan": "elite", "app": {"version": "2.1.0"},
               "address": {"state": "CA"}, "signupMs": 1_793_000_000_000u64, "age": 30}),
        json!({"targetingKey": 7, "accountId": ["x"], "email": null, "plan": 1}),
    ]
    .into_iter()
    .map(|c| match c {
        Value::Object(map) => map,
        _ => unreachable!("contexts are objects"),
    })
    .collect()
}

/// A flag gives one of its variants (or none) to every context, and its flagd
/// export, when it has one, imports back.
fn resolves(flag: &Flag) -> Outcome {
    let names: Vec<&str> = flag.variants.iter().map(|v| v.name.as_str()).collect();
    for context in contexts() {
        if let Ok(resolution) = flag.evaluate(&Context::new(&context), Timestamp::UNIX_EPOCH)
            && let Some(variant) = resolution.variant
            && !names.contains(&variant)
        {
            return Err(format!(
                "flag {} served {variant:?}, not one of {names:?}",
                flag.key
            ));
        }
    }
    let mut evaluators = Map::new();
    if let Ok(definition) = flagd::flag_definition(flag, &mut evaluators) {
        let document = json!({"flags": {flag.key.clone(): definition}, "$evaluators": evaluators});
        if let Err(problems) = flagd::import(&document) {
            return Err(format!(
                "the flagd export of {} does not import: {problems:?}",
                flag.key
            ));
        }
    }
    Ok(())
}

/// The field names and enumerated values of the rollout and segment schemas.
fn vocabulary() -> Vec<String> {
    fn walk(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(members) => {
                if let Some(Value::Object(properties)) = members.get("properties") {
                    out.extend(properties.keys().cloned());
                }
                if let Some(Value::Array(values)) = members.get("enum") {
                    out.extend(values.iter().filter_map(|v| v.as_str().map(str::to_string)));
                }
                members.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![
        "apiVersion".to_string(),
        "kind".to_string(),
        "metadata".to_string(),
        "name".to_string(),
        "namespace".to_string(),
        "spangate.dev/v1alpha1".to_string(),
        "FeatureRollout".to_string(),
        "Segment".to_string(),
    ];
    walk(
        &schemars::schema_for!(FeatureRolloutSpec).to_value(),
        &mut out,
    );
    walk(&schemars::schema_for!(SegmentSpec).to_value(), &mut out);
    out.sort();
    out.dedup();
    out
}

pub fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    thread_local! {
        static VOCABULARY: Vec<String> = vocabulary();
    }
    VOCABULARY.with(|words| {
        let keys: Vec<&str> = words.iter().map(String::as_str).collect();
        let seed = rng.pick(pool).clone();
        let documents: Result<Vec<Value>, _> = String::from_utf8(seed.clone())
            .map_err(|_| ())
            .and_then(|text| {
                use serde::Deserialize as _;
                serde_norway::Deserializer::from_str(&text)
                    .map(Value::deserialize)
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(|_| ())
            });
        let mut out = match documents {
            Ok(mut documents) if !documents.is_empty() && !rng.one_in(4) => {
                for _ in 0..=rng.below(3) {
                    let at = rng.below(documents.len());
                    mutate::json(rng, &mut documents[at], &keys);
                }
                write(rng, &documents)
            }
            _ => seed,
        };
        if rng.one_in(3) {
            mutate::bytes(rng, &mut out, pool, &keys);
        }
        out
    })
}

/// Documents as YAML (one or several), or the first as JSON.
fn write(rng: &mut Rng, documents: &[Value]) -> Vec<u8> {
    if rng.one_in(4) {
        return serde_json::to_vec_pretty(&documents[0]).expect("JSON written");
    }
    documents
        .iter()
        .map(|document| serde_norway::to_string(document).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
        .into_bytes()
}
