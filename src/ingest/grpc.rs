//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`,
//! plain or gzip.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use super::{IngestLimits, Ingestor, RejectReason, Transport};

/// Serves OTLP/gRPC on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve_grpc(
    listener: TcpListener,
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Exporters send small batches and wait for each answer: do not let Nagle's
    // algorithm hold the answer back.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(trace_service(ingestor, limits))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("the OTLP/gRPC receiver failed")
}

fn trace_service(
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
) -> OtlpStatusCodes<TraceServiceServer<TraceReceiver>> {
    let server = TraceServiceServer::new(TraceReceiver {
        ingestor: Arc::clone(&ingestor),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limits.max_body_bytes);
    OtlpStatusCodes {
        inner: server,
        ingestor,
    }
}

struct TraceReceiver {
    ingestor: Arc<Ingestor>,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let report = self.ingestor.accept(request.into_inner());
        Ok(Response::new(report.response()))
    }
}

/// Gives requests tonic refuses before they reach [`TraceReceiver`] the codes OTLP
/// specifies, and records each refusal.
///
/// tonic answers an undecodable message with INTERNAL and a message over the size
/// limit with OUT_OF_RANGE, which OTLP lists as retryable, so exporters would resend
/// a batch that can never fit; OTLP wants INVALID_ARGUMENT and RESOURCE_EXHAUSTED
/// (without RetryInfo: not retryable).
/// Both happen inside tonic's decoding, so the codes are rewritten on the way out;
/// they are always in the headers (a trailers-only response), as no message was
/// answered.
#[derive(Clone)]
struct OtlpStatusCodes<S> {
    inner: S,
    ingestor: Arc<Ingestor>,
}

impl<S: NamedService> NamedService for OtlpStatusCodes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for OtlpStatusCodes<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let ingestor = Arc::clone(&self.ingestor);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite_refusal(response.headers_mut(), &ingestor);
            Ok(response)
        })
    }
}

fn rewrite_refusal(headers: &mut HeaderMap, ingestor: &Ingestor) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let (code, reason) = match status.code() {
        Code::Ok => return,
        Code::OutOfRange | Code::ResourceExhausted => {
            (Code::ResourceExhausted, RejectReason::TooLarge)
        }
        // Undecodable protobuf, corrupt gzip, a truncated or empty message: all the
        // client's doing, as the receiver itself never fails.
        Code::Internal => (Code::InvalidArgument, RejectReason::Malformed),
        // An unsupported grpc-encoding or an unknown method.
        Code::Unimplemented => (Code::Unimplemented, RejectReason::Unsupported),
        // Anything else tonic meets while reading the request, such as a stream the
        // client broke off.
        other => (other, RejectReason::Malformed),
    };
    ingestor.reject_batch(Transport::Grpc, reason, status.message());
    if code != status.code() {
        headers.insert(Status::GRPC_STATUS, HeaderValue::from(code as i32));
    }
}
