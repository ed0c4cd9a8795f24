//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs`, protobuf or JSON,
//! plain or gzip, with or without a Content-Length. Answers in the request's
//! format, errors included.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use tokio::net::TcpListener;

use super::decode::Encoding;
use super::refusal::{self, Received, Refusal};
use super::signal::{Logs, Signal, Traces};
use super::{Ingestor, ReceiverOptions, Transport};
use crate::net::{self, Admission, Protocols, Tokens};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP routes, for serving alone ([`serve_http`]) or beside others.
pub fn http_router(ingestor: Arc<Ingestor>, tokens: Tokens) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<Traces>))
        .route("/v1/logs", post(export::<Logs>))
        .with_state(Arc::new(Receiver { ingestor, tokens }))
}

/// Serves OTLP/HTTP on `listener` until `shutdown` completes, then finishes the
/// requests in flight within the shutdown timeout.
pub async fn serve_http(
    listener: TcpListener,
    ingestor: Arc<Ingestor>,
    options: ReceiverOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    net::serve(
        listener,
        Protocols::Http1And2,
        options.server.otlp_max_connections,
        http_router(ingestor, options.tokens),
        options.server,
        options.stats,
        shutdown,
    )
    .await
}

struct Receiver {
    ingestor: Arc<Ingestor>,
    tokens: Tokens,
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

    fn encoding(self) -> Encoding {
        match self {
            Format::Protobuf => Encoding::Protobuf,
            Format::Json => Encoding::Json,
        }
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

/// The answer OTLP/HTTP specifies for a refusal: the status code, and a
/// `google.rpc.Status` in the request's format.
fn refusal_response(refusal: &Refusal, format: Format) -> Response {
    let status = RpcStatus {
        code: refusal.code() as i32,
        message: refusal.to_string(),
    };
    let body = match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::json!({ "code": status.code, "message": status.message })
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        refusal.http_status(),
        [(CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    match refusal {
        // RFC 9110 §15.5.16: say which encodings would have been read.
        Refusal::ContentEncoding(_) => {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, identity"));
        }
        Refusal::Unauthenticated(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spangate\""),
            );
        }
        // OTLP/HTTP: 503 is retryable, after Retry-After.
        Refusal::Overloaded => {
            headers.insert(RETRY_AFTER, HeaderValue::from(refusal::RETRY_AFTER_SECONDS));
        }
        _ => {}
    }
    response
}

async fn export<S: Signal>(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // A format that is not known is answered in the readable one.
    let format = Format::of(&parts.headers);
    let answer_format = *format.as_ref().unwrap_or(&Format::Json);
    let result = async {
        match receiver.tokens.check(&parts.headers) {
            Admission::Allowed => {}
            refused => return Err(Refusal::Unauthenticated(refused)),
        }
        receive::<S>(format?, &parts.headers, body, &receiver.ingestor).await
    }
    .await;
    let trace = result.as_ref().ok().and_then(S::first_trace);
    let response = match result {
        Ok(report) => respond::<S>(answer_format, &report),
        Err(refusal) => {
            S::refused(
                &receiver.ingestor,
                Transport::Http,
                refusal.reason(),
                &refusal.to_string(),
            );
            refusal_response(&refusal, answer_format)
        }
    };
    receiver
        .ingestor
        .answered(Transport::Http, started.elapsed(), trace);
    response
}

async fn receive<S: Signal>(
    format: Format,
    headers: &HeaderMap,
    body: Body,
    ingestor: &Ingestor,
) -> Result<S::Report, Refusal> {
    let limits = *ingestor.limits();
    let limit = limits.max_body_bytes;
    let gzip = is_gzip(headers)?;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Refusal::too_large_body(limit));
    }
    // A declared length is reserved whole before a byte is read, so a sender that
    // stalls holds no more than it was granted.
    let declared = declared.map_or(0, |length| length as usize);
    let mut reservation = ingestor.reserve(declared).ok_or(Refusal::Overloaded)?;
    let mut received = Received::with_capacity(declared);
    refusal::read_to_end(body, &mut received, limit, &mut reservation).await?;
    let mut body = received.into_bytes();
    if gzip {
        body = refusal::gunzip(&body, limit, &mut reservation)?;
    }
    let decoded = S::decode(format.encoding(), &body, &limits, &mut reservation)?;
    drop(body);
    reservation.shrink_to(decoded.cost);
    Ok(S::accept(ingestor, decoded))
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

fn respond<S: Signal>(format: Format, report: &S::Report) -> Response {
    let body = match format {
        Format::Protobuf => S::protobuf(report),
        Format::Json => S::json(report).to_string().into_bytes(),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}
