//! OFREP request bodies, sent to the OFREP router (in process, no socket) for
//! every flag of a fixed set and in bulk: the example rollouts (splits by
//! account, targets, rules, a segment, entitlements), flagd's example and flagd
//! flags that are disabled or defer to the code default.
//!
//! Invariants: no panic; the body is accepted exactly when it is a JSON object
//! whose `context` is absent, null or an object nesting at most 10 levels and
//! it fits 64 KiB (else 400 `PARSE_ERROR`/`INVALID_CONTEXT` or 413, for every
//! endpoint alike); an accepted context gets, for every flag, the answer the core
//! gives for it (a variant of the flag, its value and reason, or the error's
//! code), alike from the single-flag and the bulk endpoint; and no answer repeats
//! a value of the context.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use spangate::flags::{Context, EvaluationError, Flag, FlagSet, FlagState, flagd};
use spangate::serve::{MAX_BODY_BYTES, MAX_CONTEXT_DEPTH, OfrepConfig, ofrep_router};
use spangate::store::rollout_file;
use tower_service::Service as _;

use super::harness::{Outcome, Rng};
use super::mutate::{self, MARKER};

const KEYS: &[&str] = &[
    "context",
    "targetingKey",
    "accountId",
    "email",
    "plan",
    "app",
    "version",
    "app.version",
    "address",
    "state",
    "tags",
    "signupMs",
    "age",
    "userId",
];

/// Flagd flags beside flagd's example: one disabled, one that defers to the code
/// default, one split by targeting key.
const FLAGD: &str = r#"{"flags": {
  "kill-switch": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "maybe": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": null,
            "targeting": {"if": [{"in": ["beta", {"var": "tags"}]}, "b", null]}},
  "by-user": {"state": "ENABLED", "variants": {"x": 1, "y": 2.5, "z": [3]}, "defaultVariant": "x",
              "targeting": {"fractional": [["x", 30], ["y", 30], ["z", 40]]}}
}}"#;

/// A rollout bucketed by targeting key with a regular expression rule.
const BANNER: &str = r#"apiVersion: spangate.dev/v1alpha1
kind: FeatureRollout
metadata: {name: banner}
spec:
  flag: {key: banner, variants: {"a": "A", "b": {"color": "red"}}, defaultVariant: "a", rolloutVariant: "b"}
  service: web
  steps: [25, 100]
  analysis: {maxErrorRate: 0.05}
  targeting:
    rules:
    - clauses: [{attribute: email, op: matches, values: ["^[a-z]+@(corp|staff)\\.example$"]}]
      variant: "b"
"#;

/// The router and the flags it serves, and a runtime to drive it.
pub struct Ofrep {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    flags: Vec<Arc<Flag>>,
}

impl Ofrep {
    pub fn new() -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &str| {
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let rollouts = [
            read("examples/targeting/beta-users.yaml"),
            read("examples/rollouts/new-checkout.yaml"),
            read("examples/targeting/new-search.yaml"),
            read("examples/targeting/plan-features.yaml"),
            BANNER.to_string(),
        ]
        .join("---\n");
        let parsed = rollout_file::parse("rollouts.yaml", false, &rollouts);
        let mut flags =
            super::rollout::served_flags(&parsed, &rollouts).expect("the example rollouts");
        for document in [read("examples/flagd/flags.json"), FLAGD.to_string()] {
            let document: Value = serde_json::from_str(&document).expect("flagd JSON");
            flags.extend(flagd::import(&document).expect("flagd flags"));
        }
        assert_eq!(flags.len(), 8, "every example flag is served");
        let set = FlagSet::new(flags, 1);
        let flags: Vec<Arc<Flag>> = set.iter().cloned().collect();
        let router = ofrep_router(Arc::new(ArcSwap::from_pointee(set)), OfrepConfig::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        Self {
            runtime,
            router,
            flags,
        }
    }

    pub fn check(&self, body: &[u8]) -> Outcome {
        let expected = expected(body);
        let mut paths = vec![("bulk".to_string(), "/ofrep/v1/evaluate/flags".to_string())];
        paths.extend(self.flags.iter().map(|flag| {
            let path = format!("/ofrep/v1/evaluate/flags/{}", flag.key);
            (flag.key.clone(), path)
        }));
        let answers = self.runtime.block_on(async {
            let mut answers = Vec::new();
            for (what, path) in paths {
                answers.push((what, self.post(&path, body).await?));
            }
            Ok::<_, String>(answers)
        })?;
        for (what, (_, text)) in &answers {
            if text.contains(MARKER) {
                return Err(format!(
                    "the answer for {what} repeats a context value: {text}"
                ));
            }
        }
        let context = match expected {
            Expected::TooLarge => {
                return all(&answers, |status, _| {
                    (status == StatusCode::PAYLOAD_TOO_LARGE).then_some(())
                });
            }
            Expected::Refused(code) => {
                return all(&answers, |status, answer| {
                    (status == StatusCode::BAD_REQUEST && answer["errorCode"] == code).then_some(())
                })
                .map_err(|e| format!("expected 400 {code}: {e}"));
            }
            Expected::Accepted(context) => context,
        };
        let indexed = Context::new(&context);
        let (status, bulk) = &answers[0].1;
        let bulk: Value = serde_json::from_str(bulk).map_err(|e| format!("bulk: {e}"))?;
        if *status != StatusCode::OK {
            return Err(format!(
                "bulk answered {status} for an accepted context: {bulk}"
            ));
        }
        let entries = bulk["flags"].as_array().ok_or("bulk without flags")?;
        let enabled: Vec<&Arc<Flag>> = self
            .flags
            .iter()
            .filter(|f| f.state == FlagState::Enabled)
            .collect();
        if entries.len() != enabled.len() {
            return Err(format!(
                "bulk lists {} flags, not {}",
                entries.len(),
                enabled.len()
            ));
        }
        for (flag, (key, (status, text))) in self.flags.iter().zip(&answers[1..]) {
            let answer: Value = serde_json::from_str(text).map_err(|e| format!("{key}: {e}"))?;
            let outcome = flag.evaluate(&indexed, Timestamp::now());
            let names: Vec<&str> = flag.variants.iter().map(|v| v.name.as_str()).collect();
            let (want_status, want) = match &outcome {
                Ok(resolution) => {
                    if let Some(variant) = resolution.variant
                        && !names.contains(&variant)
                    {
                        return Err(format!(
                            "{key} resolved to {variant:?}, not one of {names:?}"
                        ));
                    }
                    let mut want = json!({
                        "key": flag.key,
                        "reason": resolution.reason.as_str(),
                        "variant": resolution.variant,
                    });
                    if let Some(value) = resolution.value {
                        want["value"] = value.clone();
                    }
                    (StatusCode::OK, want)
                }
                Err(error) => (
                    StatusCode::BAD_REQUEST,
                    json!({"key": flag.key, "errorCode": code(error)}),
                ),
            };
            // A success always carries `variant` (null when there is none), and
            // `value` exactly when there is a variant.
            let agrees = |answer: &Value| {
                want.as_object()
                    .expect("an object")
                    .iter()
                    .all(|(name, value)| answer.get(name) == Some(value))
                    && (want.get("value").is_some() || answer.get("value").is_none())
            };
            if *status != want_status || !agrees(&answer) {
                return Err(format!(
                    "{key} answered {status} {answer}; the core gives {want_status} {want}"
                ));
            }
            if flag.state == FlagState::Enabled {
                let entry = entries
                    .iter()
                    .find(|e| e["key"] == flag.key.as_str())
                    .ok_or_else(|| format!("bulk leaves out {key}"))?;
                if !agrees(entry) {
                    return Err(format!(
                        "bulk answered {entry} for {key}; the core gives {want}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Status and body of a POST of `body` to `path`.
    async fn post(&self, path: &str, body: &[u8]) -> Result<(StatusCode, String), String> {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.to_vec()))
            .map_err(|e| format!("a request: {e}"))?;
        let mut router = self.router.clone();
        std::future::poll_fn(|cx| {
            <axum::Router as tower_service::Service<Request<Body>>>::poll_ready(&mut router, cx)
        })
        .await
        .map_err(|e| format!("{path}: {e}"))?;
        let response = router
            .call(request)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| format!("{path}: the answer's body: {e}"))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|e| format!("{path} answered a body that is not UTF-8: {e}"))?;
        Ok((status, text))
    }
}

/// Every answer passes `test`, given its status and JSON body.
fn all(
    answers: &[(String, (StatusCode, String))],
    test: impl Fn(StatusCode, &Value) -> Option<()>,
) -> Outcome {
    for (what, (status, text)) in answers {
        let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if test(*status, &answer).is_none() {
            return Err(format!("{what} answered {status} {text}"));
        }
    }
    Ok(())
}

/// What an OFREP body should get, as the README states it.
enum Expected {
    TooLarge,
    Refused(&'static str),
    Accepted(Map<String, Value>),
}

fn expected(body: &[u8]) -> Expected {
    if body.len() > MAX_BODY_BYTES {
        return Expected::TooLarge;
    }
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return Expected::Refused("PARSE_ERROR");
    };
    let context = match request.remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(context)) => context,
        Some(_) => return Expected::Refused("INVALID_CONTEXT"),
    };
    // `{"a": 1}` nests 1 level, `{"a": {"b": 1}}` 2; arrays are levels too.
    fn levels(value: &Value) -> usize {
        match value {
            Value::Object(members) => 1 + members.values().map(levels).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(levels).max().unwrap_or(0),
            _ => 0,
        }
    }
    if 1 + context.values().map(levels).max().unwrap_or(0) > MAX_CONTEXT_DEPTH {
        return Expected::Refused("INVALID_CONTEXT");
    }
    Expected::Accepted(context)
}

/// The OpenFeature code OFREP answers an evaluation error with.
fn code(error: &EvaluationError) -> &'static str {
    match error {
        EvaluationError::TargetingKeyMissing { .. } => "TARGETING_KEY_MISSING",
        EvaluationError::InvalidBucketingValue { .. } => "INVALID_CONTEXT",
        EvaluationError::UnknownVariant { .. } => "GENERAL",
        EvaluationError::InvalidDefinition { .. } => "PARSE_ERROR",
    }
}

pub fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(3) {
        return serde_json::to_vec(&body(rng)).expect("JSON written");
    }
    let seed = rng.pick(pool);
    let mut out = match serde_json::from_slice::<Value>(seed) {
        Ok(mut document) => {
            for _ in 0..=rng.below(3) {
                mutate::json(rng, &mut document, KEYS);
            }
            serde_json::to_vec(&document).expect("JSON written")
        }
        Err(_) => seed.clone(),
    };
    if rng.one_in(3) {
        mutate::bytes(rng, &mut out, pool, KEYS);
    }
    out
}

/// A request body: mostly `{"context": {...}}` with the attributes the flags
/// read, of every type, sometimes too deep, too large, or not a context.
fn body(rng: &mut Rng) -> Value {
    let mut context = Map::new();
    for _ in 0..rng.length(12) {
        let name = *rng.pick(KEYS);
        let value = match name {
            "targetingKey" | "accountId" | "userId" if !rng.one_in(4) => json!(*rng.pick(&[
                "user-1",
                "qa-alice",
                "vip-carol",
                "acct-42",
                "acct-internal",
                ""
            ])),
            "email" if !rng.one_in(4) => json!(format!(
                "{}{}",
                rng.pick(&["ann", MARKER, "x"]),
                rng.pick(&[
                    "@gmail.com",
                    "@spangate.dev",
                    "@corp.example",
                    "@staff.example"
                ])
            )),
            "plan" => json!(*rng.pick(&["elite", "pro", "free", "basic", ""])),
            "app" => json!({"version": mutate::scalar(rng)}),
            "address" => json!({"state": *rng.pick(&["CA", "NY", "TX"])}),
            "tags" => json!([*rng.pick(&["beta", "alpha"]), mutate::scalar(rng)]),
            _ => mutate::value(rng, 3, KEYS),
        };
        context.insert(name.to_string(), value);
    }
    if rng.one_in(8) {
        // Around the nesting limit.
        let mut deep = json!(format!("{MARKER}-deep"));
        for _ in 0..MAX_CONTEXT_DEPTH - 2 + rng.below(4) {
            deep = json!({ "level": deep });
        }
        context.insert("nested".to_string(), deep);
    }
    if rng.one_in(40) {
        // Around the body limit.
        let length = MAX_BODY_BYTES - 40 + rng.below(80);
        context.insert("padding".to_string(), json!("p".repeat(length)));
    }
    match rng.below(12) {
        0 => json!({}),
        1 => json!({"context": null}),
        2 => json!({"context": mutate::scalar(rng)}),
        3 => Value::Array(vec![Value::Object(context)]),
        4 => json!({"context": context, "extra": mutate::value(rng, 2, KEYS)}),
        _ => json!({ "context": context }),
    }
}
