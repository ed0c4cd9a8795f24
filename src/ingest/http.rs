//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, plain or gzip, with or
//! without a Content-Length. Answers in the request's format, errors included.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use flate2::read::MultiGzDecoder;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;

use super::events::NoDelayFailed;
use super::json;
use super::{IngestLimits, Ingestor, RejectReason, Transport};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP routes, for serving alone ([`serve_http`]) or beside others.
pub fn http_router(ingestor: Arc<Ingestor>, limits: IngestLimits) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(Receiver { ingestor, limits })
}

/// Serves OTLP/HTTP on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve_http(
    listener: TcpListener,
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Exporters wait for each answer: do not let Nagle's algorithm hold it back.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            NoDelayFailed { error: &error }.emit();
        }
    });
    axum::serve(listener, http_router(ingestor, limits))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the OTLP/HTTP receiver failed")
}

#[derive(Clone)]
struct Receiver {
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn of(headers: &HeaderMap) -> Result<Self, Refusal> {
        let value = headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let value = value.as_deref().unwrap_or_default();
        // Parameters such as `charset=utf-8` do not change the format.
        let media_type = value.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case(PROTOBUF) {
            Ok(Format::Protobuf)
        } else if media_type.eq_ignore_ascii_case(JSON) {
            Ok(Format::Json)
        } else {
            Err(Refusal::ContentType(value.to_string()))
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => PROTOBUF,
            Format::Json => JSON,
        }
    }
}

/// Why a request is refused whole.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unsupported Content-Type {0:?}: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported Content-Encoding {0:?}: send gzip or no encoding")]
    ContentEncoding(String),
    #[error("request body over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Malformed(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::ContentType(_) | Refusal::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> RejectReason {
        match self {
            Refusal::ContentType(_) | Refusal::ContentEncoding(_) => RejectReason::Unsupported,
            Refusal::TooLarge(_) => RejectReason::TooLarge,
            Refusal::Malformed(_) => RejectReason::Malformed,
        }
    }

    /// The gRPC code of the `google.rpc.Status` body.
    fn code(&self) -> tonic::Code {
        match self {
            Refusal::TooLarge(_) => tonic::Code::ResourceExhausted,
            _ => tonic::Code::InvalidArgument,
        }
    }

    /// The answer OTLP/HTTP specifies: the status code, and a `google.rpc.Status`
    /// in the request's format.
    fn into_response(self, format: Format) -> Response {
        let status = RpcStatus {
            code: self.code() as i32,
            message: self.to_string(),
        };
        let body = match format {
            Format::Protobuf => status.encode_to_vec(),
            Format::Json => serde_json::json!({ "code": status.code, "message": status.message })
                .to_string()
                .into_bytes(),
        };
        let mut response =
            (self.status(), [(CONTENT_TYPE, format.content_type())], body).into_response();
        if let Refusal::ContentEncoding(_) = self {
            // RFC 9110 §15.5.16: say which encodings would have been read.
            response
                .headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, identity"));
        }
        response
    }
}

/// `google.rpc.Status`, without its `details`, which spangate never sends.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let format = match Format::of(&headers) {
        Ok(format) => format,
        // The format is unknown, so the refusal is written in the readable one.
        Err(refusal) => return receiver.refuse(Format::Json, refusal),
    };
    match receive(format, &headers, body, receiver.limits).await {
        Ok(request) => respond(format, &receiver.ingestor.accept(request).response()),
        Err(refusal) => receiver.refuse(format, refusal),
    }
}

impl Receiver {
    fn refuse(&self, format: Format, refusal: Refusal) -> Response {
        self.ingestor
            .reject_batch(Transport::Http, refusal.reason(), &refusal.to_string());
        refusal.into_response(format)
    }
}

async fn receive(
    format: Format,
    headers: &HeaderMap,
    body: Body,
    limits: IngestLimits,
) -> Result<ExportTraceServiceRequest, Refusal> {
    let limit = limits.max_body_bytes;
    let gzip = is_gzip(headers)?;
    let declared_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(Refusal::TooLarge(limit));
    }
    let body = read_body(body, limit).await?;
    let body = if gzip { gunzip(&body, limit)? } else { body };
    decode(format, &body)
}

fn is_gzip(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let encoding = String::from_utf8_lossy(value.as_bytes());
    let encoding = encoding.trim();
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(Refusal::ContentEncoding(encoding.to_string()))
    }
}

/// The whole body, chunked or not, refusing it as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Refusal::TooLarge(limit)),
        Err(error) => Err(Refusal::Malformed(format!(
            "could not read the request body: {error}"
        ))),
    }
}

/// Decompresses at most `limit` bytes, so a small body cannot expand without bound.
fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, Refusal> {
    let mut out = Vec::new();
    MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| Refusal::Malformed(format!("invalid gzip body: {error}")))?;
    if out.len() > limit {
        return Err(Refusal::TooLarge(limit));
    }
    Ok(out.into())
}

fn decode(format: Format, body: &[u8]) -> Result<ExportTraceServiceRequest, Refusal> {
    match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|error| Refusal::Malformed(format!("invalid OTLP protobuf: {error}"))),
        Format::Json => json::decode(body).map_err(|error| {
            Refusal::Malformed(format!(
                "invalid OTLP JSON: {}",
                json::without_values(&error)
            ))
        }),
    }
}

fn respond(format: Format, response: &ExportTraceServiceResponse) -> Response {
    let body = match format {
        Format::Protobuf => response.encode_to_vec(),
        // By hand, for the protobuf JSON mapping: an absent message is left out
        // rather than written as null, and int64 is a string.
        Format::Json => match &response.partial_success {
            None => b"{}".to_vec(),
            Some(partial) => serde_json::json!({
                "partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }
            })
            .to_string()
            .into_bytes(),
        },
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}
