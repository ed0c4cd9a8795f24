//! OFREP v0.3 evaluation: `POST /ofrep/v1/evaluate/flags/{key}` for one flag (server
//! providers, a context per call) and `POST /ofrep/v1/evaluate/flags` for every flag
//! (client providers, polling with `If-None-Match`).
//!
//! Request contexts may hold private attributes, so nothing here logs them.

use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use super::PublishedFlags;
use crate::flags::attribute::TARGETING_KEY;
use crate::flags::{
    EvaluationError, Flag, FlagSet, FlagState, Matched, PrivateAttributes, Resolution,
};

/// Largest request body read, in bytes; larger ones get 413. A context is a handful
/// of attributes, so this leaves ample room and caps what one request can cost.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How OFREP is served.
#[derive(Debug, Clone, Default)]
pub struct OfrepConfig {
    /// Attributes never shown (in debug logs and spans of evaluations), on top of
    /// each flag's own private attributes.
    pub private_attributes: PrivateAttributes,
}

struct Ofrep {
    flags: PublishedFlags,
    config: OfrepConfig,
}

impl Ofrep {
    /// What is hidden when a context is shown: the operator's private attributes
    /// and every served flag's.
    fn private_attributes(&self, flags: &FlagSet) -> PrivateAttributes {
        self.config
            .private_attributes
            .union(flags.private_attributes())
    }
}

/// The OFREP evaluation endpoints over the flags the controller publishes.
pub fn ofrep_router(flags: PublishedFlags, config: OfrepConfig) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        // flagd accepts the bulk path with a trailing slash too, and so do we.
        .route("/ofrep/v1/evaluate/flags/", post(evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Ofrep { flags, config }))
}

async fn evaluate_one(
    State(ofrep): State<Arc<Ofrep>>,
    key: Result<Path<String>, PathRejection>,
    context: Result<EvaluationContext, OfrepError>,
) -> Result<Response, OfrepError> {
    // Only a key that does not percent-decode to UTF-8 is refused here.
    let Path(key) = key.map_err(|rejection| OfrepError::parse(rejection.body_text()))?;
    let EvaluationContext(context) = context.map_err(|error| error.naming(&key))?;
    let flag = ofrep
        .flags
        .load()
        .get(&key)
        .cloned()
        .ok_or(OfrepError::FlagNotFound { key })?;
    let outcome = flag.evaluate(&context, Timestamp::now());
    if tracing::enabled!(tracing::Level::DEBUG) {
        let private = ofrep.private_attributes(&ofrep.flags.load());
        let _span = evaluation_span(false, &context, &private).entered();
        trace_outcome(&flag, &outcome);
    }
    outcome
        .map(|resolution| Json(Success::new(&flag, resolution)).into_response())
        .map_err(|error| OfrepError::Evaluation { flag, error })
}

async fn evaluate_all(
    State(ofrep): State<Arc<Ofrep>>,
    headers: HeaderMap,
    EvaluationContext(context): EvaluationContext,
) -> Result<Response, OfrepError> {
    let published = ofrep.flags.load();
    let now = Timestamp::now();
    let span = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| evaluation_span(true, &context, &ofrep.private_attributes(&published)));
    let _entered = span.as_ref().map(|s| s.enter());
    let entries: Vec<BulkEntry> = published
        .iter()
        // As flagd's bulk evaluation: a disabled flag is as if it did not exist, so
        // a client falls back to its code default.
        .filter(|flag| flag.state == FlagState::Enabled)
        .map(|flag| {
            let outcome = flag.evaluate(&context, now);
            if span.is_some() {
                trace_outcome(flag, &outcome);
            }
            match outcome {
                Ok(resolution) => BulkEntry::Success(Success::new(flag, resolution)),
                Err(error) => BulkEntry::Failure(Failure::evaluation(flag, &error)),
            }
        })
        .collect();
    let body = serde_json::to_vec(&BulkSuccess { flags: entries })
        .map_err(|error| OfrepError::Internal(format!("could not encode the answer: {error}")))?;
    let etag = entity_tag(published.version(), &body)?;
    if selects(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let content_type = HeaderValue::from_static("application/json");
    Ok((
        [(header::CONTENT_TYPE, content_type), (header::ETAG, etag)],
        body,
    )
        .into_response())
}

/// A debug span for evaluations of `context`: its targeting key as
/// `feature_flag.context.id` and the context with `private` attributes redacted.
/// Only built when debug is on, so the hot path never copies a context.
fn evaluation_span(
    bulk: bool,
    context: &Map<String, Value>,
    private: &PrivateAttributes,
) -> tracing::Span {
    let shown = private.redact(context);
    let context_id = shown
        .get(TARGETING_KEY)
        .and_then(Value::as_str)
        .filter(|_| !private.hides_targeting_key());
    let shown = Value::Object(shown.clone()).to_string();
    if bulk {
        tracing::debug_span!(
            "ofrep.evaluate_all",
            "feature_flag.context.id" = context_id,
            context = %shown,
        )
    } else {
        tracing::debug_span!(
            "ofrep.evaluate",
            "feature_flag.context.id" = context_id,
            context = %shown,
        )
    }
}

/// One evaluation as a debug event, with the OpenTelemetry feature-flag names.
fn trace_outcome(flag: &Flag, outcome: &Result<Resolution<'_>, EvaluationError>) {
    match outcome {
        Ok(r) => tracing::debug!(
            "feature_flag.key" = flag.key.as_str(),
            "feature_flag.result.variant" = r.variant,
            "feature_flag.result.reason" = r.reason.as_str(),
            "evaluated"
        ),
        Err(error) => tracing::debug!(
            "feature_flag.key" = flag.key.as_str(),
            "error.type" = error_code(error),
            error = %error,
            "evaluation failed"
        ),
    }
}

/// The bulk answer's validator. The answer depends on the caller's context as well
/// as on the flag set, so the tag covers the encoded answer itself: a client that
/// polls with a changed context must not get a 304 for the old one. The version
/// makes every new flag set a new tag, and says which one a client holds.
fn entity_tag(version: u64, body: &[u8]) -> Result<HeaderValue, OfrepError> {
    let mut hasher = DefaultHasher::new();
    hasher.write(body);
    HeaderValue::try_from(format!("\"v{version}-{:016x}\"", hasher.finish()))
        .map_err(|error| OfrepError::Internal(format!("could not build the ETag: {error}")))
}

/// Whether an `If-None-Match` list selects `etag`: weak comparison, `*` for any
/// (RFC 9110, section 13.1.2).
fn selects(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The context of an OFREP request body, `{"context": {...}}`. A missing or null
/// context is an empty one: flags that need no attribute still resolve.
struct EvaluationContext(Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for EvaluationContext {
    type Rejection = OfrepError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    OfrepError::BodyTooLarge
                } else {
                    OfrepError::parse(rejection.body_text())
                }
            })?;
        parse_context(&body)
            .map(EvaluationContext)
            .map_err(OfrepError::parse)
    }
}

/// The content type is not checked: the body is JSON or it is refused, whatever a
/// client (or `curl -d`) labelled it.
fn parse_context(body: &[u8]) -> Result<Map<String, Value>, String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|error| format!("the body is not JSON: {error}"))?;
    let Value::Object(mut request) = request else {
        return Err("the body must be a JSON object: {\"context\": {...}}".to_string());
    };
    match request.remove("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(context)) => Ok(context),
        Some(_) => Err("\"context\" must be a JSON object".to_string()),
    }
}

/// An OFREP error answer; each case knows its status and error code.
enum OfrepError {
    BodyTooLarge,
    /// `key` is the flag on the single-flag endpoint, whose errors name it.
    Parse {
        key: Option<String>,
        details: String,
    },
    FlagNotFound {
        key: String,
    },
    Evaluation {
        flag: Arc<Flag>,
        error: EvaluationError,
    },
    Internal(String),
}

impl OfrepError {
    fn parse(details: String) -> Self {
        OfrepError::Parse { key: None, details }
    }

    /// The error as the single-flag endpoint answers it: naming its flag.
    fn naming(self, flag_key: &str) -> Self {
        match self {
            OfrepError::Parse { key: None, details } => OfrepError::Parse {
                key: Some(flag_key.to_string()),
                details,
            },
            other => other,
        }
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            OfrepError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Failure::general(format!("the body is larger than {MAX_BODY_BYTES} bytes")),
            ),
            OfrepError::Parse { key, details } => (
                StatusCode::BAD_REQUEST,
                Failure {
                    key: key.as_deref(),
                    error_code: Some("PARSE_ERROR"),
                    error_details: details.clone(),
                    metadata: None,
                },
            ),
            OfrepError::FlagNotFound { key } => (
                StatusCode::NOT_FOUND,
                Failure {
                    key: Some(key),
                    error_code: Some("FLAG_NOT_FOUND"),
                    error_details: format!("no flag {key:?} is served"),
                    metadata: None,
                },
            ),
            OfrepError::Evaluation { flag, error } => {
                (StatusCode::BAD_REQUEST, Failure::evaluation(flag, error))
            }
            OfrepError::Internal(details) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Failure::general(details.clone()),
            ),
        };
        (status, Json(body)).into_response()
    }
}

/// OFREP `evaluationSuccess`. `variant` is always present (null when the flag
/// defers to the code default): some providers (Python) read it unconditionally.
/// `value` is absent exactly then, which tells providers to use their code default.
#[derive(Serialize)]
struct Success<'f> {
    key: &'f str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'f Value>,
    reason: &'static str,
    variant: Option<&'f str>,
    metadata: Metadata<'f>,
}

impl<'f> Success<'f> {
    fn new(flag: &'f Flag, resolution: Resolution<'f>) -> Self {
        Self {
            key: &flag.key,
            value: resolution.value,
            reason: resolution.reason.as_str(),
            variant: resolution.variant,
            metadata: Metadata {
                flag: &flag.metadata,
                matched: resolution.matched,
            },
        }
    }
}

/// The flag's metadata (rollout, phase, step, weight), and what decided: `matched`
/// is `target`, `exclusion` or `rule` (with the rule's `rule` name and `ruleIndex`).
struct Metadata<'f> {
    flag: &'f Map<String, Value>,
    matched: Matched<'f>,
}

impl Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.flag {
            map.serialize_entry(key, value)?;
        }
        match self.matched {
            Matched::Nothing => {}
            Matched::Target => map.serialize_entry("matched", "target")?,
            Matched::Exclusion => map.serialize_entry("matched", "exclusion")?,
            Matched::Rule { index, name } => {
                map.serialize_entry("matched", "rule")?;
                map.serialize_entry("rule", name)?;
                map.serialize_entry("ruleIndex", &index)?;
            }
            Matched::Flagd => map.serialize_entry("matched", "flagd")?,
        }
        map.end()
    }
}

/// OFREP `evaluationFailure`, `flagNotFound`, `bulkEvaluationFailure` (no key) and
/// `generalErrorResponse` (details only), which differ only in the fields present.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Failure<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    error_details: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
}

impl<'a> Failure<'a> {
    fn general(details: String) -> Self {
        Self {
            key: None,
            error_code: None,
            error_details: details,
            metadata: None,
        }
    }

    /// The details name the attribute at fault, never its value.
    fn evaluation(flag: &'a Flag, error: &EvaluationError) -> Self {
        Self {
            key: Some(&flag.key),
            error_code: Some(error_code(error)),
            error_details: error.to_string(),
            metadata: Some(&flag.metadata),
        }
    }
}

/// The OpenFeature error code of an evaluation error.
fn error_code(error: &EvaluationError) -> &'static str {
    match error {
        EvaluationError::TargetingKeyMissing { .. } => "TARGETING_KEY_MISSING",
        EvaluationError::InvalidBucketingValue { .. } => "INVALID_CONTEXT",
        EvaluationError::UnknownVariant { .. } => "GENERAL",
        EvaluationError::InvalidDefinition { .. } => "PARSE_ERROR",
    }
}

/// OFREP `bulkEvaluationSuccess`.
#[derive(Serialize)]
struct BulkSuccess<'f> {
    flags: Vec<BulkEntry<'f>>,
}

/// One flag of a bulk answer: a flag that fails for this context is listed with its
/// error, the others still resolve.
#[derive(Serialize)]
#[serde(untagged)]
enum BulkEntry<'f> {
    Success(Success<'f>),
    Failure(Failure<'f>),
}
