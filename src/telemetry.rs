//! The operator's own logs and traces.
//!
//! Logs go to stderr through `tracing` (text or JSON). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans also go out over OTLP (gRPC, or
//! HTTP/protobuf when `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`): one span per
//! reconcile and per decision, carrying the flag, variant, revision, step, weight
//! and verdict, so a rollout reads as a timeline in Jaeger.

pub mod metrics;

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithHttpConfig as _};
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

/// Where the operator's own spans go: an OTLP endpoint, over gRPC or HTTP/protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// `http://host:port`, without a path.
    pub endpoint: String,
    /// HTTP/protobuf rather than gRPC.
    pub http: bool,
}

impl TraceExport {
    /// What the standard variables ask for: `OTEL_EXPORTER_OTLP_ENDPOINT`, and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default, or `http/protobuf`).
    pub fn from_env() -> Option<Self> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
        Self::new(&endpoint, &protocol)
    }

    /// `endpoint` with `protocol` as the OTLP variables spell it; none when the
    /// endpoint is empty.
    pub fn new(endpoint: &str, protocol: &str) -> Option<Self> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        (!endpoint.is_empty()).then(|| Self {
            endpoint: endpoint.to_string(),
            http: protocol.starts_with("http"),
        })
    }
}

/// Installs logging (filter from `RUST_LOG`, else `default_filter`) and, when
/// configured by the standard OTLP environment variables, trace export. Must run
/// inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<Telemetry> {
    init_with(format, default_filter, TraceExport::from_env())
}

/// [`init`], exporting spans to `export`. Logs and spans are filtered apart: spans
/// keep `info` (or `RUST_LOG`) however quiet the logs are, so a command that
/// writes only errors (the demo) still exports every decision.
pub fn init_with(
    format: LogFormat,
    default_filter: &str,
    export: Option<TraceExport>,
) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::Layer as _;
    let filter = |default: &str| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    };
    let provider = export.map(|export| tracer_provider(&export)).transpose()?;
    let otel_layer = provider.as_ref().map(|p| {
        // Source locations, threads and busy/idle times say nothing about a
        // rollout and crowd its attributes in Jaeger: only when asked for.
        let detail = std::env::var("SPANGATE_TRACE_SOURCE").is_ok_and(|v| v == "1");
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("spangate"))
            .with_location(detail)
            .with_threads(detail)
            .with_tracked_inactivity(detail)
            .with_filter(filter("info"))
    });
    let registry = tracing_subscriber::registry().with(otel_layer);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colour codes only for a person at a terminal, not in a log file.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter(default_filter)),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter(default_filter)),
            )
            .try_init(),
    };
    // A second init in one process (tests, the demo) keeps the first subscriber.
    let _ = result;
    Ok(Telemetry { provider })
}

fn tracer_provider(export: &TraceExport) -> anyhow::Result<SdkTracerProvider> {
    let exporter = if export.http {
        // The batch processor exports from a thread of its own, with no async
        // runtime: it needs the blocking client, which must be built off the runtime.
        let client = std::thread::spawn(reqwest::blocking::Client::new)
            .join()
            .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?;
        SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{}/v1/traces", export.endpoint))
            .build()?
    } else {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(export.endpoint.clone())
            .build()?
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

/// The trace that holds one run of a rollout: a root `rollout` span, exported when
/// the run starts, whose children are every decision of the run. Its IDs live in
/// the rollout's status, so decisions after a restart join the same trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutTrace {
    root: opentelemetry::trace::SpanContext,
}

impl RolloutTrace {
    /// The trace `root` starts; none when the operator's spans are not exported.
    pub fn rooted_at(root: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let root = root.context().span().span_context().clone();
        root.is_valid().then_some(Self { root })
    }

    /// The trace whose IDs (hex) a status holds.
    pub fn from_ids(trace_id: &str, root_span_id: &str) -> Option<Self> {
        remote_span(trace_id, root_span_id).map(|root| Self { root })
    }

    /// The trace ID and the root span's ID, in hex.
    pub fn ids(&self) -> (String, String) {
        (
            self.root.trace_id().to_string(),
            self.root.span_id().to_string(),
        )
    }

    /// Makes `span` a child of the root span.
    pub fn adopt(&self, span: &tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span
            .set_parent(opentelemetry::Context::new().with_remote_span_context(self.root.clone()));
    }
}

/// A span recorded elsewhere, by its trace and span IDs in hex, to link to or to
/// parent under; none when the IDs do not parse or are the invalid all-zero ones.
pub fn remote_span(trace_id: &str, span_id: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Lets a repeated warning be written at most once per interval; the ones held
/// back are counted, said in the next line written, and shown in `/metrics`.
#[derive(Debug)]
pub struct WarnThrottle {
    /// Milliseconds since [`WarnThrottle::epoch`] before which lines are held back.
    next_ms: AtomicU64,
    /// Held back since the last line written.
    pending: AtomicU64,
    /// Held back since start.
    suppressed: AtomicU64,
}

impl Default for WarnThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl WarnThrottle {
    /// One line per this long at most, per kind of warning.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    pub const fn new() -> Self {
        Self {
            next_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now; if so, how many were held back before it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(epoch().elapsed())
    }

    /// [`WarnThrottle::admit`] at `now`, measured from any fixed origin.
    pub fn admit_at(&self, now: Duration) -> Option<u64> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Acquire);
        let interval = Self::INTERVAL.as_millis() as u64;
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(interval),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.pending.swap(0, Ordering::AcqRel));
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Lines held back since start.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// The origin of [`WarnThrottle`]'s clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::WarnThrottle;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let throttle = WarnThrottle::new();
        let at = Duration::from_secs;
        assert_eq!(throttle.admit_at(at(0)), Some(0));
        assert_eq!(throttle.admit_at(at(1)), None);
        assert_eq!(throttle.admit_at(at(9)), None);
        assert_eq!(throttle.admit_at(at(10)), Some(2));
        assert_eq!(throttle.admit_at(at(19)), None);
        assert_eq!(throttle.admit_at(at(30)), Some(1));
        assert_eq!(throttle.suppressed(), 3);
    }
}
