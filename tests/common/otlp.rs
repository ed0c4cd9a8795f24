//! OTLP for tests: a tracing backend (what Jaeger or a collector would be), a trace
//! receiver over gRPC or HTTP/protobuf on loopback that keeps every request; and
//! attributes to build requests with.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
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
pub struct TraceBackend(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl TraceBackend {
    /// Serves `protocol` on `listener` until the runtime ends; HTTP takes
    /// `POST /v1/traces` with protobuf bodies only.
    pub fn serve(&self, listener: TcpListener, protocol: ForwardProtocol) {
        match protocol {
            ForwardProtocol::Grpc => {
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(self.clone()))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                            listener,
                        )),
                );
            }
            ForwardProtocol::HttpProtobuf => {
                let backend = self.clone();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                        let backend = backend.clone();
                        async move { backend.receive_http(&headers, body) }
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
