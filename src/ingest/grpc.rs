//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! and `opentelemetry.proto.collector.logs.v1.LogsService/Export`, plain or gzip,
//! over HTTP/2.
//!
//! The unary call is answered here rather than by a generated server, so that the
//! message is read under the same limits as OTLP/HTTP bodies (memory reserved
//! before it is read, a deadline, decoding one item at a time) and every refusal
//! carries the code OTLP specifies, always as a trailers-only answer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::post;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::net::TcpListener;
use tonic::Code;

use super::decode::Encoding;
use super::refusal::{self, Received, Refusal};
use super::signal::{Logs, Signal, Traces};
use super::{Ingestor, ReceiverOptions, Transport};
use crate::net::{self, Admission, Protocols, Tokens};

const EXPORT_TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const EXPORT_LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const GRPC: &str = "application/grpc";
/// Compressed flag and length before each message.
const PREFIX_BYTES: usize = 5;

/// The OTLP/gRPC routes, for serving alone ([`serve_grpc`]) or beside others.
pub fn grpc_router(ingestor: Arc<Ingestor>, tokens: Tokens) -> Router {
    Router::new()
        .route(EXPORT_TRACES, post(export::<Traces>))
        .route(EXPORT_LOGS, post(export::<Logs>))
        .fallback(unimplemented)
        .with_state(Arc::new(Receiver { ingestor, tokens }))
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes, then finishes the
/// requests in flight within the shutdown timeout.
pub async fn serve_grpc(
    listener: TcpListener,
    ingestor: Arc<Ingestor>,
    options: ReceiverOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    net::serve(
        listener,
        Protocols::Http2,
        options.server.otlp_max_connections,
        grpc_router(ingestor, options.tokens),
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

async fn unimplemented(State(receiver): State<Arc<Receiver>>, request: Request) -> Response<Body> {
    let message = format!("unknown method {}", request.uri().path());
    receiver
        .ingestor
        .reject_batch(Transport::Grpc, super::RejectReason::Unsupported, &message);
    status(Code::Unimplemented, &message)
}

async fn export<S: Signal>(
    State(receiver): State<Arc<Receiver>>,
    request: Request,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let is_grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(GRPC));
    if !is_grpc {
        // gRPC's own answer to a request that is not gRPC.
        return Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let result = async {
        match receiver.tokens.check(&parts.headers) {
            Admission::Allowed => {}
            refused => return Err(Refusal::Unauthenticated(refused)),
        }
        receive::<S>(&parts.headers, body, &receiver.ingestor).await
    }
    .await;
    let trace = result.as_ref().ok().and_then(S::first_trace);
    let response = match result {
        Ok(report) => ok(&S::protobuf(&report)),
        Err(refusal) => {
            let message = refusal.to_string();
            S::refused(
                &receiver.ingestor,
                Transport::Grpc,
                refusal.reason(),
                &message,
            );
            let mut response = status(refusal.code(), &message);
            if let Refusal::ContentEncoding(_) = refusal {
                response
                    .headers_mut()
                    .insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
            }
            response
        }
    };
    receiver
        .ingestor
        .answered(Transport::Grpc, started.elapsed(), trace);
    response
}

async fn receive<S: Signal>(
    headers: &HeaderMap,
    mut body: Body,
    ingestor: &Ingestor,
) -> Result<S::Report, Refusal> {
    let limits = *ingestor.limits();
    let limit = limits.max_body_bytes;
    let gzip = match headers.get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            return Err(Refusal::ContentEncoding(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    let mut reservation = ingestor.reserve(PREFIX_BYTES).ok_or(Refusal::Overloaded)?;
    let mut prefix = Received::with_capacity(PREFIX_BYTES);
    let rest = refusal::read_exact(
        &mut body,
        Bytes::new(),
        PREFIX_BYTES,
        &mut prefix,
        &mut reservation,
    )
    .await?;
    let prefix = prefix.into_bytes();
    let compressed = match prefix[0] {
        0 => false,
        1 if gzip => true,
        1 => {
            return Err(Refusal::Malformed(
                "a compressed message without grpc-encoding".to_string(),
            ));
        }
        flag => {
            return Err(Refusal::Malformed(format!(
                "invalid compressed flag {flag}"
            )));
        }
    };
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length > limit {
        return Err(Refusal::too_large_body(limit));
    }
    // Reserved whole before it is read, so a sender that stalls holds no more
    // than it was granted.
    if !reservation.grow(length) {
        return Err(Refusal::Overloaded);
    }
    let mut message = Received::with_capacity(length);
    refusal::read_exact(&mut body, rest, length, &mut message, &mut reservation).await?;
    let mut message = message.into_bytes();
    if compressed {
        message = refusal::gunzip(&message, limit, &mut reservation)?;
    }
    let decoded = S::decode(Encoding::Protobuf, &message, &limits, &mut reservation)?;
    drop(message);
    reservation.shrink_to(decoded.cost);
    Ok(S::accept(ingestor, decoded))
}

/// A successful call: the answer as one uncompressed message, then status OK.
fn ok(answer: &[u8]) -> Response<Body> {
    let mut framed = Vec::with_capacity(PREFIX_BYTES + answer.len());
    framed.push(0);
    framed.extend_from_slice(&(answer.len() as u32).to_be_bytes());
    framed.extend_from_slice(answer);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(Code::Ok as i32));
    let frames = [
        Ok::<_, Infallible>(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = Response::new(Body::new(StreamBody::new(futures::stream::iter(frames))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC));
    response
}

/// A trailers-only answer: the status in the headers, no message.
fn status(code: Code, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC));
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as is.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% of ✓"), "50%25 of %E2%9C%93");
        assert_eq!(percent_encode("plain text"), "plain text");
    }
}
