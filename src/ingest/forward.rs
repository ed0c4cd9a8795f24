//! Forwarding (shell): every accepted trace or logs batch goes on to an OTLP
//! endpoint (Jaeger, an OpenTelemetry Collector), so spangate can sit in front of
//! the tracing backend instead of beside it. Receivers only queue a batch
//! ([`Forwarder::offer`], [`Forwarder::offer_logs`]);
//! a [`ForwardWorker`] task merges what is queued, hides private attributes and
//! exports it, off the request path. A slow or absent backend never slows ingest:
//! the queue is bounded by the memory its batches hold (until their export ends),
//! and when it is full new batches are dropped and counted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::events::{ForwardCounters, ForwardDropped, ForwardFailed, ForwardSent, Forwarded};
use super::redact::{hide_private, hide_private_in_logs};
use crate::flags::PrivateAttributes;
use crate::net::{MemoryBudget, Reservation};
use crate::telemetry::metrics::Registry;

/// How spans and logs are sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardProtocol {
    /// OTLP/gRPC (Jaeger and collectors listen on 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies, to `<endpoint>/v1/traces` and
    /// `<endpoint>/v1/logs` (port 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

impl fmt::Display for ForwardProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardProtocol::Grpc => "grpc",
            ForwardProtocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Where and how spans and logs are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// `http://host:port`, without a path.
    pub endpoint: String,
    pub protocol: ForwardProtocol,
    /// Memory the batches waiting or being exported may hold (decoded, and their
    /// encoded copy); beyond it new ones are dropped.
    pub queue_bytes: usize,
}

impl ForwardConfig {
    /// Enough to ride out a slow answer (a decoded batch of 512 spans takes a few
    /// hundred kB); little enough to fit the chart's memory limit beside the
    /// receivers' own budget.
    pub const DEFAULT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

    /// Checks the endpoint, saying what is wrong.
    pub fn new(
        endpoint: &str,
        protocol: ForwardProtocol,
        queue_bytes: usize,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        let uri: axum::http::Uri = endpoint
            .parse()
            .with_context(|| format!("the forward endpoint {endpoint:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => anyhow::bail!(
                "the forward endpoint {endpoint} uses https, which spangate does not speak: \
                 forward to a collector or Jaeger over http:// on the cluster network"
            ),
            _ => anyhow::bail!(
                "the forward endpoint {endpoint:?} must look like http://host:port \
                 (e.g. http://jaeger-collector.tracing:4317)"
            ),
        }
        if uri.host().is_none() || uri.path() != "/" {
            anyhow::bail!(
                "the forward endpoint {endpoint:?} must be http://host:port, without a path \
                 (OTLP/HTTP posts to /v1/traces and /v1/logs under it)"
            );
        }
        anyhow::ensure!(
            queue_bytes > 0,
            "the forward queue must hold at least one byte"
        );
        Ok(Self {
            endpoint: endpoint.to_string(),
            protocol,
            queue_bytes,
        })
    }
}

/// Forwarding counts since start, in spans and in log records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Spans the backend accepted.
    pub sent: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans whose export failed (backend unreachable or refusing).
    pub failed: u64,
    /// Log records the backend accepted, dropped, or whose export failed.
    pub log_records_sent: u64,
    pub log_records_dropped: u64,
    pub log_records_failed: u64,
    /// Memory held by batches queued or being exported, and its limit.
    pub queue_bytes: u64,
    pub queue_limit_bytes: u64,
}

/// A batch waiting for export, with the memory it holds until the export ends.
/// Spans and logs travel together, so that batches of both merge into one
/// export of each.
struct Queued {
    spans: ExportTraceServiceRequest,
    logs: ExportLogsServiceRequest,
    held: Reservation,
}

/// What a receiver hands batches to.
#[derive(Debug)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Queued>,
    budget: Arc<MemoryBudget>,
    counters: Arc<ForwardCounters>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queued({} bytes)", self.held.bytes())
    }
}

/// Hides private attributes: called once per export, so a rollout that starts
/// keeping an attribute private hides it from the next export on.
pub type PrivateSource = Box<dyn Fn() -> PrivateAttributes + Send + Sync>;

/// The task that exports what the [`Forwarder`] queued.
pub struct ForwardWorker {
    config: ForwardConfig,
    queue: mpsc::UnboundedReceiver<Queued>,
    counters: Arc<ForwardCounters>,
    private: PrivateSource,
}

/// Most queued batches merged into one export: a few thousand spans.
const MERGED_BATCHES: usize = 8;
/// Exports running at once.
const EXPORTS_IN_FLIGHT: usize = 4;
/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping process keeps exporting what is still queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A forwarder and the worker that empties its queue.
pub fn forwarder(config: ForwardConfig, private: PrivateSource) -> (Forwarder, ForwardWorker) {
    // Bounded by the bytes its batches hold, not by their count.
    let (sender, receiver) = mpsc::unbounded_channel();
    let counters = Arc::new(ForwardCounters::default());
    (
        Forwarder {
            queue: sender,
            budget: MemoryBudget::new(config.queue_bytes),
            counters: Arc::clone(&counters),
        },
        ForwardWorker {
            config,
            queue: receiver,
            counters,
            private,
        },
    )
}

impl Forwarder {
    /// Queues `request` for export without waiting; drops it when the queue holds
    /// no room for it. `decoded_bytes` is what the decoded request holds; its
    /// encoded copy, made to export it, is counted on top.
    pub fn offer(&self, request: ExportTraceServiceRequest, decoded_bytes: usize) {
        let bytes = decoded_bytes.saturating_add(request.encoded_len());
        self.queue(request, ExportLogsServiceRequest::default(), bytes);
    }

    /// [`Forwarder::offer`] for a logs request.
    pub fn offer_logs(&self, request: ExportLogsServiceRequest, decoded_bytes: usize) {
        let bytes = decoded_bytes.saturating_add(request.encoded_len());
        self.queue(ExportTraceServiceRequest::default(), request, bytes);
    }

    fn queue(
        &self,
        spans: ExportTraceServiceRequest,
        logs: ExportLogsServiceRequest,
        bytes: usize,
    ) {
        let Some(held) = self.budget.try_reserve(bytes) else {
            self.drop_batch(&spans, &logs);
            return;
        };
        if let Err(error) = self.queue.send(Queued { spans, logs, held }) {
            // The worker has stopped: the process is shutting down.
            self.drop_batch(&error.0.spans, &error.0.logs);
        }
    }

    fn drop_batch(&self, spans: &ExportTraceServiceRequest, logs: &ExportLogsServiceRequest) {
        for (what, count) in [
            (Forwarded::Spans, span_count(spans)),
            (Forwarded::LogRecords, log_record_count(logs)),
        ] {
            if count > 0 {
                ForwardDropped {
                    what,
                    count,
                    queue_limit_bytes: self.budget.limit(),
                }
                .emit(&self.counters);
            }
        }
    }

    pub fn stats(&self) -> ForwardStats {
        ForwardStats {
            queue_bytes: self.budget.used() as u64,
            queue_limit_bytes: self.budget.limit() as u64,
            ..self.counters.snapshot()
        }
    }

    /// Registers the forward families of `/metrics` into `registry`.
    pub(super) fn register_metrics(&self, registry: &mut Registry) {
        self.counters.register(registry);
        self.budget.register_metrics(
            registry,
            ["forward_queue", "forward_queue_limit"],
            [
                "Memory held by spans and logs waiting to be forwarded or being forwarded (estimated)",
                "Most memory the forward queue may hold; beyond, new batches are dropped",
            ],
        );
    }

    /// Warning lines held back since start, by the event they were about.
    pub(super) fn suppressed_warnings(&self) -> [(String, u64); 2] {
        self.counters.suppressed_warnings()
    }
}

#[derive(Clone)]
enum Client {
    /// A client of either service is made per export: cheap, over this one channel.
    Grpc(tonic::transport::Channel),
    Http {
        client: reqwest::Client,
        traces: Arc<str>,
        logs: Arc<str>,
    },
}

impl Client {
    fn new(config: &ForwardConfig) -> anyhow::Result<Self> {
        Ok(match config.protocol {
            ForwardProtocol::Grpc => {
                // Lazy: the backend may come up after spangate; each export retries
                // the connection.
                let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .context("the forward endpoint")?
                    .timeout(EXPORT_TIMEOUT)
                    .connect_timeout(EXPORT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                Client::Grpc(channel)
            }
            ForwardProtocol::HttpProtobuf => Client::Http {
                client: reqwest::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .tcp_nodelay(true)
                    .build()
                    .context("an HTTP client for forwarding")?,
                traces: format!("{}/v1/traces", config.endpoint).into(),
                logs: format!("{}/v1/logs", config.endpoint).into(),
            },
        })
    }

    async fn export_spans(&mut self, request: ExportTraceServiceRequest) -> anyhow::Result<()> {
        match self {
            Client::Grpc(channel) => {
                TraceServiceClient::new(channel.clone())
                    .export(request)
                    .await
                    .map_err(grpc_error)?;
                Ok(())
            }
            Client::Http { client, traces, .. } => post(client, traces, request).await,
        }
    }

    async fn export_logs(&mut self, request: ExportLogsServiceRequest) -> anyhow::Result<()> {
        match self {
            Client::Grpc(channel) => {
                LogsServiceClient::new(channel.clone())
                    .export(request)
                    .await
                    .map_err(grpc_error)?;
                Ok(())
            }
            Client::Http { client, logs, .. } => post(client, logs, request).await,
        }
    }
}

fn grpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

/// An OTLP/HTTP export of `request` to `url`.
async fn post(
    client: &reqwest::Client,
    url: &str,
    request: impl prost::Message,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header(axum::http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    Ok(())
}

/// What the exports in flight share: the counters, and whether the backend is
/// failing, so an outage is warned about once, not once per batch.
struct Outcomes {
    endpoint: String,
    counters: Arc<ForwardCounters>,
    failing: AtomicBool,
}

impl Outcomes {
    fn record(&self, what: Forwarded, count: u64, result: anyhow::Result<()>) {
        match result {
            Ok(()) => ForwardSent {
                what,
                count,
                endpoint: &self.endpoint,
                recovered: self.failing.swap(false, Ordering::Relaxed),
            }
            .emit(&self.counters),
            Err(error) => ForwardFailed {
                what,
                count,
                endpoint: &self.endpoint,
                error: &error,
                first: !self.failing.swap(true, Ordering::Relaxed),
            }
            .emit(&self.counters),
        }
    }
}

impl ForwardWorker {
    /// Exports until `cancel`, then what is still queued, for a few seconds at most.
    /// Up to [`EXPORTS_IN_FLIGHT`] exports run at once, so one slow answer does not
    /// hold the queue back.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let client = Client::new(&self.config)?;
        tracing::info!(
            endpoint = %self.config.endpoint,
            protocol = %self.config.protocol,
            "forwarding received spans and logs"
        );
        let outcomes = Arc::new(Outcomes {
            endpoint: self.config.endpoint.clone(),
            counters: Arc::clone(&self.counters),
            failing: AtomicBool::new(false),
        });
        let mut in_flight = JoinSet::new();
        loop {
            if in_flight.len() >= EXPORTS_IN_FLIGHT {
                tokio::select! {
                    _ = in_flight.join_next() => continue,
                    () = cancel.cancelled() => break,
                }
            }
            let first = tokio::select! {
                request = self.queue.recv() => request,
                Some(_) = in_flight.join_next() => continue,
                () = cancel.cancelled() => break,
            };
            let Some(first) = first else { break };
            let batch = self.merge_queued(first);
            self.spawn_export(&mut in_flight, &client, &outcomes, batch);
        }
        let drain = async {
            while let Ok(first) = self.queue.try_recv() {
                while in_flight.len() >= EXPORTS_IN_FLIGHT {
                    in_flight.join_next().await;
                }
                let batch = self.merge_queued(first);
                self.spawn_export(&mut in_flight, &client, &outcomes, batch);
            }
            while in_flight.join_next().await.is_some() {}
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("gave up forwarding the spans and logs still queued at shutdown");
        }
        Ok(())
    }

    /// `first` with whatever else is queued now, up to [`MERGED_BATCHES`]; their
    /// memory stays held until the export ends.
    fn merge_queued(&mut self, mut first: Queued) -> Queued {
        for _ in 1..MERGED_BATCHES {
            match self.queue.try_recv() {
                Ok(more) => {
                    first.spans.resource_spans.extend(more.spans.resource_spans);
                    first.logs.resource_logs.extend(more.logs.resource_logs);
                    first.held.absorb(more.held);
                }
                Err(_) => break,
            }
        }
        first
    }

    fn spawn_export(
        &self,
        in_flight: &mut JoinSet<()>,
        client: &Client,
        outcomes: &Arc<Outcomes>,
        batch: Queued,
    ) {
        let Queued {
            mut spans,
            mut logs,
            held,
        } = batch;
        prepare(&mut spans, &mut logs, &(self.private)());
        let (span_count, log_record_count) = (span_count(&spans), log_record_count(&logs));
        if span_count == 0 && log_record_count == 0 {
            return;
        }
        let (mut client, outcomes) = (client.clone(), Arc::clone(outcomes));
        in_flight.spawn(async move {
            if span_count > 0 {
                let result = client.export_spans(spans).await;
                outcomes.record(Forwarded::Spans, span_count, result);
            }
            if log_record_count > 0 {
                let result = client.export_logs(logs).await;
                outcomes.record(Forwarded::LogRecords, log_record_count, result);
            }
            drop(held);
        });
    }
}

/// Readies a batch for the backend: hides private attributes wherever they nest
/// ([`hide_private`]). Spans and records the receiver rejected were left out
/// already.
fn prepare(
    spans: &mut ExportTraceServiceRequest,
    logs: &mut ExportLogsServiceRequest,
    private: &PrivateAttributes,
) {
    hide_private(spans, private);
    hide_private_in_logs(logs, private);
}

fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

fn log_record_count(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn span(span_id: u8) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![span_id; 8],
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_by_the_bytes_it_holds() {
        let config =
            ForwardConfig::new("http://127.0.0.1:4317", ForwardProtocol::Grpc, 10_000).unwrap();
        let (forwarder, worker) = forwarder(config, Box::new(PrivateAttributes::default));
        let two = request(vec![span(1), span(2)]);
        let encoded = two.encoded_len();
        forwarder.offer(two, 6_000);
        forwarder.offer(request(vec![span(3)]), 4_000);
        forwarder.offer(request(vec![span(4)]), 1_000);
        assert_eq!(
            forwarder.stats(),
            ForwardStats {
                dropped: 1,
                queue_bytes: (6_000 + encoded + 1_000 + request(vec![span(4)]).encoded_len())
                    as u64,
                queue_limit_bytes: 10_000,
                ..ForwardStats::default()
            }
        );
        drop(worker);
        assert_eq!(forwarder.stats().queue_bytes, 0, "dropped with the queue");
    }

    #[test]
    fn endpoints_are_checked_with_a_reason() {
        let check = |endpoint| {
            ForwardConfig::new(endpoint, ForwardProtocol::HttpProtobuf, 8)
                .map(|c| c.endpoint)
                .map_err(|e| e.to_string())
        };
        assert_eq!(check("http://jaeger:4318/").unwrap(), "http://jaeger:4318");
        assert!(check("https://jaeger:4318").unwrap_err().contains("https"));
        assert!(
            check("jaeger:4318")
                .unwrap_err()
                .contains("http://host:port")
        );
        assert!(
            check("http://jaeger:4318/v1/traces")
                .unwrap_err()
                .contains("without a path")
        );
        assert!(check("not a url").unwrap_err().contains("not a URL"));
    }
}
