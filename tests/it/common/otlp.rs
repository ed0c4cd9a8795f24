//! OTLP for tests: a tracing backend (what Jaeger or a collector would be), a trace
//! and logs receiver over gRPC or HTTP/protobuf on loopback that keeps every request;
//! attributes to build requests with; and a raw HTTP/2 gRPC client that sends
//! exactly what it is told, for hostile requests.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::{self, Value as AnyValue};
use opentelemetry_proto::tonic::common::v1::{self as common, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use spangate::ingest::ForwardProtocol;
use tokio::net::TcpListener;

/// Every request received, in order.
#[derive(Clone, Default)]
pub struct TraceBackend(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
);

impl TraceBackend {
    /// Serves `protocol` on `listener` until the runtime ends; HTTP takes
    /// `POST /v1/traces` and `POST /v1/logs` with protobuf bodies only.
    pub fn serve(&self, listener: TcpListener, protocol: ForwardProtocol) {
        match protocol {
            ForwardProtocol::Grpc => {
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(self.clone()))
                        .add_service(LogsServiceServer::new(self.clone()))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                            listener,
                        )),
                );
            }
            ForwardProtocol::HttpProtobuf => {
                let (backend, logs) = (self.clone(), self.clone());
                let app = axum::Router::new()
                    .route(
                        "/v1/traces",
                        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                            let backend = backend.clone();
                            async move { backend.receive_http(&headers, body) }
                        }),
                    )
                    .route(
                        "/v1/logs",
                        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                            let backend = logs.clone();
                            async move { backend.receive_http_logs(&headers, body) }
                        }),
                    );
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
        }
    }

    /// Serves `protocol` on a loopback port; returns the endpoint (`http://addr`).
    pub async fn start(&self, protocol: ForwardProtocol) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        self.serve(listener, protocol);
        endpoint
    }

    fn receive_http(&self, headers: &HeaderMap, body: Bytes) -> axum::response::Response {
        if headers
            .get(header::CONTENT_TYPE)
            .is_none_or(|value| value != "application/x-protobuf")
        {
            return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
        }
        match ExportTraceServiceRequest::decode(body) {
            Ok(request) => {
                self.0.lock().unwrap().push(request);
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
                    .into_response()
            }
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        }
    }

    fn receive_http_logs(&self, headers: &HeaderMap, body: Bytes) -> axum::response::Response {
        if headers
            .get(header::CONTENT_TYPE)
            .is_none_or(|value| value != "application/x-protobuf")
        {
            return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
        }
        match ExportLogsServiceRequest::decode(body) {
            Ok(request) => {
                self.1.lock().unwrap().push(request);
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportLogsServiceResponse::default().encode_to_vec(),
                )
                    .into_response()
            }
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        }
    }

    /// Every logs request received, in order.
    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.1.lock().unwrap().clone()
    }

    /// Every span received, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let requests = self.0.lock().unwrap();
        let mut spans = Vec::new();
        for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in &resource_spans.scope_spans {
                spans.extend(scope.spans.iter().map(|s| (service.clone(), s.clone())));
            }
        }
        spans
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.0.lock().unwrap().clone()
    }

    /// Everything received, as text to search.
    pub fn text(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }
}

#[tonic::async_trait]
impl TraceService for TraceBackend {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for TraceBackend {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.1.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An attribute value as text, for the scalar kinds.
pub fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The span attribute `key`, as text.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(common::AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// The OTLP/gRPC Export method's path.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The OTLP/gRPC logs Export method's path.
pub const LOGS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// An Export request as gRPC frames it: uncompressed, length-prefixed.
pub fn grpc_frame(message: &[u8]) -> bytes::Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// An HTTP/2 connection to a gRPC port, as a raw client that does exactly what it
/// is told (send part of a message, stall, send bytes that are not protobuf).
pub async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// Starts an Export call with `headers`: the answer to wait for, and the stream to
/// send the body on.
pub async fn grpc_start(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    grpc_start_at(send, addr, EXPORT_PATH, headers).await
}

/// [`grpc_start`] for the method at `path`.
pub async fn grpc_start_at(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let ready = send.clone().ready().await.expect("a stream may be opened");
    *send = ready;
    send.send_request(request.body(()).unwrap(), false)
        .expect("send the request headers")
}

/// The gRPC status of an answer: from its headers (trailers-only) or its trailers.
pub async fn grpc_status(response: h2::client::ResponseFuture) -> (i32, String) {
    let response = response.await.expect("an answer");
    let status_of = |headers: &http::HeaderMap| {
        headers.get("grpc-status").map(|code| {
            let code = code.to_str().unwrap().parse().unwrap();
            let message = headers
                .get("grpc-message")
                .map(|m| m.to_str().unwrap().to_string())
                .unwrap_or_default();
            (code, message)
        })
    };
    if let Some(status) = status_of(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.expect("the answer's body");
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body
        .trailers()
        .await
        .expect("the answer's trailers")
        .expect("trailers");
    status_of(&trailers).expect("a grpc-status trailer")
}

/// One whole Export call over a new connection: `message` as it is.
pub async fn grpc_export(
    addr: std::net::SocketAddr,
    message: &[u8],
    headers: &[(&str, &str)],
) -> (i32, String) {
    grpc_call(addr, EXPORT_PATH, message, headers).await
}

/// [`grpc_export`] to the method at `path`.
pub async fn grpc_call(
    addr: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> (i32, String) {
    let (mut send, _connection) = h2_connect(addr).await;
    let (response, mut stream) = grpc_start_at(&mut send, addr, path, headers).await;
    stream
        .send_data(grpc_frame(message), true)
        .expect("send the message");
    grpc_status(response).await
}
