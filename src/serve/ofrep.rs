//! OFREP v0.3 evaluation: `POST /ofrep/v1/evaluate/flags/{key}` for one flag (server
//! providers, a context per call) and `POST /ofrep/v1/evaluate/flags` for every flag
//! (client providers, polling with `If-None-Match`).
//!
//! Request contexts may hold private attributes: they are shown only in debug
//! spans, and only redacted. Authentication and a rate limit are optional
//! ([`Access`]); bodies and contexts are bounded ([`OfrepConfig`]): a body over the
//! limit is refused with 413, at once when its Content-Length announces it.

use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde_json::{Map, Value};

use super::PublishedFlags;
use super::access::{Access, RateLimiter};
use crate::flags::attribute::TARGETING_KEY;
use crate::flags::{
    Context, EvaluationError, Flag, FlagSet, FlagState, Matched, PrivateAttributes, Resolution,
};
use crate::net::{Admission, BodyTimedOut, body_timed_out};
use crate::telemetry::metrics::{
    DurationFamily, Registry, TraceExemplar, Unit, duration_histogram,
};

/// Largest request body read by default, in bytes. A context is a handful of
/// attributes, so this leaves ample room and caps what one request can cost.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Deepest nesting of a context's attributes by default: `{"a": 1}` is 1 level,
/// `{"a": {"b": 1}}` 2.
pub const MAX_CONTEXT_DEPTH: usize = 10;

/// How OFREP is served.
#[derive(Debug, Clone)]
pub struct OfrepConfig {
    /// Attributes never shown (in debug logs and spans of evaluations), on top of
    /// each flag's own private attributes.
    pub private_attributes: PrivateAttributes,
    /// Who may ask; see [`Access`].
    pub access: Access,
    /// Largest request body, in bytes; larger ones get 413, at once when their
    /// Content-Length says so.
    pub max_body_bytes: usize,
    /// Deepest nesting of a context; deeper ones get 400 INVALID_CONTEXT.
    pub max_context_depth: usize,
    /// Requests refused before they were evaluated, for `/metrics`.
    pub stats: Arc<OfrepStats>,
}

impl Default for OfrepConfig {
    fn default() -> Self {
        Self {
            private_attributes: PrivateAttributes::default(),
            access: Access::default(),
            max_body_bytes: MAX_BODY_BYTES,
            max_context_depth: MAX_CONTEXT_DEPTH,
            stats: Arc::default(),
        }
    }
}

/// The OFREP families of `/metrics`: requests refused before evaluation, by why,
/// and how long every request took.
#[derive(Debug)]
pub struct OfrepStats {
    refused: Family<[(&'static str, &'static str); 1], Counter>,
    unauthenticated: Counter,
    forbidden: Counter,
    rate_limited: Counter,
    too_large: Counter,
    too_deep: Counter,
    timed_out: Counter,
    durations: DurationFamily<[(&'static str, u16); 1]>,
}

impl Default for OfrepStats {
    fn default() -> Self {
        let refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let reason = |value| refused.get_or_create(&[("reason", value)]).clone();
        Self {
            unauthenticated: reason("unauthenticated"),
            forbidden: reason("forbidden"),
            rate_limited: reason("rate_limited"),
            too_large: reason("too_large"),
            too_deep: reason("too_deep"),
            timed_out: reason("timed_out"),
            refused,
            durations: Family::new_with_constructor(|| duration_histogram(0.00001, 1.0)),
        }
    }
}

impl OfrepStats {
    fn count(counter: &Counter) {
        counter.inc();
    }

    /// Registers the OFREP families into `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "ofrep_requests_refused",
            "OFREP requests refused before evaluation, by reason",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "ofrep_request_duration",
            "Time to answer an OFREP request, by HTTP status code; exemplars carry the trace ID of the caller's traceparent",
            Unit::Seconds,
            self.durations.clone(),
        );
    }
}

struct Ofrep {
    flags: PublishedFlags,
    config: OfrepConfig,
    limiter: Option<RateLimiter>,
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

/// The OFREP evaluation endpoints over the flags the controller publishes, and the
/// provider configuration (`GET /ofrep/v1/configuration`).
pub fn ofrep_router(flags: PublishedFlags, config: OfrepConfig) -> Router {
    let limiter = config.access.requests_per_second.map(RateLimiter::new);
    let body_limit = config.max_body_bytes;
    let state = Arc::new(Ofrep {
        flags,
        config,
        limiter,
    });
    Router::new()
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        // flagd accepts the bulk path with a trailing slash too, and so do we.
        .route("/ofrep/v1/evaluate/flags/", post(evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/configuration", get(configuration))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(middleware::from_fn_with_state(state.clone(), timed))
        .with_state(state)
}

/// Times every request, refused or not; a caller that sends `traceparent` gets
/// its trace kept as the exemplar of the bucket.
async fn timed(State(ofrep): State<Arc<Ofrep>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let trace = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceExemplar::from_traceparent);
    let response = next.run(request).await;
    ofrep
        .config
        .stats
        .durations
        .get_or_create(&[("code", response.status().as_u16())])
        .observe(started.elapsed().as_secs_f64(), trace, None);
    response
}

/// Authentication, then the rate limit, before anything is read.
async fn admit(State(ofrep): State<Arc<Ofrep>>, request: Request, next: Next) -> Response {
    match ofrep.config.access.check(request.headers()) {
        Admission::Allowed => {}
        Admission::Missing => {
            OfrepStats::count(&ofrep.config.stats.unauthenticated);
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(Failure::general(
                    "credentials required: send Authorization: Bearer <token> or X-API-Key: <token>"
                        .to_string(),
                )),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spangate\""),
            );
            return response;
        }
        Admission::Refused => {
            OfrepStats::count(&ofrep.config.stats.forbidden);
            return (
                StatusCode::FORBIDDEN,
                Json(Failure::general(
                    "these credentials are not accepted".to_string(),
                )),
            )
                .into_response();
        }
    }
    if let Some(limiter) = &ofrep.limiter
        && let Err(retry_after) = limiter.admit(std::time::Instant::now())
    {
        OfrepStats::count(&ofrep.config.stats.rate_limited);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(Failure::general(format!(
                "more than {} requests a second; retry after {retry_after}s",
                limiter.per_second
            ))),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    next.run(request).await
}

/// OFREP's provider configuration: bulk answers may be polled (with `If-None-Match`)
/// as often as once a second, and every flag type is served.
async fn configuration() -> Json<Value> {
    Json(serde_json::json!({
        "name": "spangate",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean", "string", "int", "float", "object"]},
        },
    }))
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
    let outcome = flag.evaluate(&Context::new(&context), Timestamp::now());
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
    // Indexed once for every flag.
    let indexed = Context::new(&context);
    let entries: Vec<BulkEntry> = published
        .iter()
        // As flagd's bulk evaluation: a disabled flag is as if it did not exist, so
        // a client falls back to its code default.
        .filter(|flag| flag.state == FlagState::Enabled)
        .map(|flag| {
            let outcome = flag.evaluate(&indexed, now);
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

impl FromRequest<Arc<Ofrep>> for EvaluationContext {
    type Rejection = OfrepError;

    async fn from_request(request: Request, state: &Arc<Ofrep>) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let too_large = || {
            OfrepStats::count(&state.config.stats.too_large);
            OfrepError::TooLarge(format!("the request body is larger than {limit} bytes"))
        };
        // Refused before a byte of it is read, however much was announced.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else if let Some(timed_out) = body_timed_out(&rejection) {
                    OfrepStats::count(&state.config.stats.timed_out);
                    OfrepError::TimedOut(timed_out)
                } else {
                    OfrepError::parse(rejection.body_text())
                }
            })?;
        let context = parse_context(&body)?;
        let depth = depth(&context);
        let max = state.config.max_context_depth;
        if depth > max {
            OfrepStats::count(&state.config.stats.too_deep);
            return Err(OfrepError::invalid_context(format!(
                "the context nests {depth} levels deep; at most {max} are accepted"
            )));
        }
        Ok(EvaluationContext(context))
    }
}

/// The content type is not checked: the body is JSON or it is refused, whatever a
/// client (or `curl -d`) labelled it.
fn parse_context(body: &[u8]) -> Result<Map<String, Value>, OfrepError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|error| OfrepError::parse(format!("the body is not JSON: {error}")))?;
    let Value::Object(mut request) = request else {
        return Err(OfrepError::parse(
            "the body must be a JSON object: {\"context\": {...}}".to_string(),
        ));
    };
    match request.remove("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(context)) => Ok(context),
        Some(_) => Err(OfrepError::invalid_context(
            "\"context\" must be a JSON object of attributes".to_string(),
        )),
    }
}

/// How many levels a context's attributes nest.
fn depth(context: &Map<String, Value>) -> usize {
    fn of(value: &Value) -> usize {
        match value {
            Value::Object(map) => 1 + map.values().map(of).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(of).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + context.values().map(of).max().unwrap_or(0)
}

/// An OFREP error answer; each case knows its status and error code.
enum OfrepError {
    /// A request that cannot be evaluated (`PARSE_ERROR`, `INVALID_CONTEXT`). `key`
    /// is the flag on the single-flag endpoint, whose errors name it.
    Request {
        key: Option<String>,
        code: &'static str,
        details: String,
    },
    FlagNotFound {
        key: String,
    },
    Evaluation {
        flag: Arc<Flag>,
        error: EvaluationError,
    },
    /// The body is over the limit (413).
    TooLarge(String),
    /// The body did not arrive in time (408).
    TimedOut(BodyTimedOut),
    Internal(String),
}

impl OfrepError {
    fn parse(details: String) -> Self {
        OfrepError::Request {
            key: None,
            code: "PARSE_ERROR",
            details,
        }
    }

    fn invalid_context(details: String) -> Self {
        OfrepError::Request {
            key: None,
            code: "INVALID_CONTEXT",
            details,
        }
    }

    /// The error as the single-flag endpoint answers it: naming its flag.
    fn naming(self, flag_key: &str) -> Self {
        match self {
            OfrepError::Request {
                key: None,
                code,
                details,
            } => OfrepError::Request {
                key: Some(flag_key.to_string()),
                code,
                details,
            },
            other => other,
        }
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            OfrepError::Request { key, code, details } => (
                StatusCode::BAD_REQUEST,
                Failure {
                    key: key.as_deref(),
                    error_code: Some(code),
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
            OfrepError::TooLarge(details) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Failure::general(details.clone()),
            ),
            OfrepError::TimedOut(timed_out) => (
                StatusCode::REQUEST_TIMEOUT,
                Failure::general(timed_out.to_string()),
            ),
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
