//! What the load examples share: OTLP attributes, and a raw gRPC Export call that
//! sends exactly the bytes it is given and reports whatever came back, never
//! panicking, so malformed and stalled requests can be counted like any other.

#![allow(dead_code)] // each example uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::net::TcpStream;

/// The OTLP/gRPC Export method's path.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A gRPC message as sent: uncompressed, length-prefixed.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// One gRPC Export call over a new HTTP/2 connection, sending `framed` as it is
/// (only its first `stall_after` bytes, then nothing, when set): the grpc-status
/// answered ("grpc-status 3"), or why there was none.
pub async fn grpc_call(addr: SocketAddr, framed: Bytes, stall_after: Option<usize>) -> String {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return "connect error".into();
    };
    let Ok((send, connection)) = h2::client::handshake(tcp).await else {
        return "handshake error".into();
    };
    tokio::spawn(connection);
    let Ok(mut send) = send.ready().await else {
        return "connection closed".into();
    };
    let request = http::Request::post(format!("http://{addr}{EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let Ok((response, mut stream)) = send.send_request(request, false) else {
        return "stream refused".into();
    };
    let body = match stall_after {
        Some(n) => framed.slice(..n),
        None => framed,
    };
    let _ = stream.send_data(body, stall_after.is_none());
    let response = match tokio::time::timeout(Duration::from_secs(120), response).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return format!("stream error: {error}"),
        Err(_) => return "no answer".into(),
    };
    let status = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .map(|s| format!("grpc-status {}", s.to_str().unwrap_or("?")))
    };
    if let Some(status) = status(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    match body.trailers().await {
        Ok(Some(trailers)) => status(&trailers).unwrap_or_else(|| "no status".into()),
        _ => "no trailers".into(),
    }
}
