//! The operator's own logs and traces.
//!
//! Logs go to stderr through `tracing` (text or JSON). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans also go out over OTLP (gRPC, or
//! HTTP/protobuf when `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`): one span per
//! reconcile and per decision, carrying the flag, variant, revision, step, weight
//! and verdict, so a rollout reads as a timeline in Jaeger.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the trace pipeline alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. Blocks: call it off the async threads.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging (filter from `RUST_LOG`, else `default_filter`) and, when
/// configured by the standard OTLP environment variables, trace export. Must run
/// inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(tracer_provider()?),
        _ => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("spangate")));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init in one process (tests, the demo) keeps the first subscriber.
    let _ = result;
    Ok(Telemetry { provider })
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
    let exporter = if protocol.starts_with("http") {
        // The batch processor exports from a thread of its own, with no async
        // runtime: it needs the blocking client, which must be built off the runtime.
        let client = std::thread::spawn(reqwest::blocking::Client::new)
            .join()
            .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?;
        SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .build()?
    } else {
        SpanExporter::builder().with_tonic().build()?
    };
    let resource = Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "spangate".to_string()),
        )
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
