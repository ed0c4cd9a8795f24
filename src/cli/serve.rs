//! The arguments `standalone` and `run` share: where to listen, how often to look,
//! OFREP access, forwarding and every limit, each with an environment variable,
//! and what both do around serving (the runtime, the ready file, signals).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::analysis::JoinLimits;
use crate::controller::notify::{NotifyConfig, parse_webhook};
use crate::controller::{TemplateError, TraceLinks};
use crate::flags::PrivateAttributes;
use crate::ingest::{ForwardConfig, ForwardProtocol, IngestLimits, SpanChecks};
use crate::net::{ServerLimits, Tokens};
use crate::serve::{Access, OfrepConfig};
use crate::server::{BindError, BoundAddrs, ListenAddrs, Listener, ServeConfig};
use crate::telemetry::Telemetry;

/// How `standalone` and `run` serve.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// OTLP gRPC receiver (0.0.0.0:4317 in a pod).
    #[arg(
        long,
        default_value = "127.0.0.1:4317",
        env = "SPANGATE_OTLP_GRPC_ADDR"
    )]
    otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP receiver (POST /v1/traces, protobuf or JSON).
    #[arg(
        long,
        default_value = "127.0.0.1:4318",
        env = "SPANGATE_OTLP_HTTP_ADDR"
    )]
    otlp_http_addr: SocketAddr,
    /// OFREP (POST /ofrep/v1/evaluate/flags/{key}).
    #[arg(long, default_value = "127.0.0.1:8016", env = "SPANGATE_OFREP_ADDR")]
    ofrep_addr: SocketAddr,
    /// Probes (GET /healthz, /readyz) and Prometheus metrics (GET /metrics).
    #[arg(long, default_value = "127.0.0.1:8014", env = "SPANGATE_PROBE_ADDR")]
    probe_addr: SocketAddr,
    /// Longest time between two looks at the rollouts: a progressing rollout is
    /// judged again when its spans changed, and moves on when its step's dwell ends.
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "SPANGATE_TICK")]
    tick: Duration,
    /// Largest OTLP request body accepted, in bytes (compressed or not); larger
    /// ones get 413 / RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = IngestLimits::default().max_body_bytes, value_parser = at_least_one, env = "SPANGATE_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// Once listening and serving the flags, write the bound addresses here as
    /// JSON (for scripts).
    #[arg(long, env = "SPANGATE_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Link to traces in the trace backend: a URL with {traceId} (and optionally
    /// {spanId}) where the IDs go, e.g.
    /// 'http://jaeger:16686/trace/{traceId}?uiFind={spanId}'. Status then carries
    /// a traceUrl next to each span a verdict points at (its failing and slowest
    /// spans) and for the rollout's own trace, and a rollback's event links to a
    /// failing request, so kubectl, `spangate get` and the plugin show links.
    #[arg(long, env = "SPANGATE_TRACE_URL_TEMPLATE", value_name = "URL", value_parser = parse_trace_links)]
    trace_url_template: Option<TraceLinks>,
    /// POST a JSON notice of every rollout event (started, each step, paused,
    /// rolled back, promoted, invalid, held) to this webhook; repeat for more. Its
    /// `text` field is one line a Slack or Mattermost incoming webhook shows as is.
    /// Only the leader sends; failures are retried, then counted.
    #[arg(long = "notify-webhook", env = "SPANGATE_NOTIFY_WEBHOOKS", value_delimiter = ',', value_name = "URL", value_parser = parse_webhook)]
    notify_webhooks: Vec<reqwest::Url>,
    /// PEM file of CA certificates the webhooks' TLS certificates may chain to,
    /// besides the system's (a private CA).
    #[arg(long, env = "SPANGATE_NOTIFY_CA_FILE", value_name = "PATH")]
    notify_ca_file: Option<PathBuf>,
    #[command(flatten)]
    ofrep: OfrepArgs,
    #[command(flatten)]
    forward: ForwardArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

impl ServeArgs {
    /// The configuration both run modes serve with; a file named by a flag that
    /// cannot be read, or limits that do not fit together, are errors here.
    pub fn config(self) -> anyhow::Result<ServeConfig> {
        let (ingest_limits, server, otlp_tokens) = self.limits.config(self.max_body_bytes)?;
        Ok(ServeConfig {
            listen: ListenAddrs {
                otlp_grpc: self.otlp_grpc_addr,
                otlp_http: self.otlp_http_addr,
                ofrep: self.ofrep_addr,
                probes: self.probe_addr,
            },
            tick: self.tick,
            ingest_limits,
            ofrep: self.ofrep.config()?,
            forward: self.forward.config()?,
            server,
            otlp_tokens,
            trace_links: self.trace_url_template,
            notify: NotifyConfig {
                webhooks: self.notify_webhooks,
                ca_file: self.notify_ca_file,
            },
        })
    }
}

/// A trace URL template, or why it cannot make links.
pub fn parse_trace_links(text: &str) -> Result<TraceLinks, String> {
    text.parse().map_err(|e: TemplateError| e.to_string())
}

/// `error` with the flag that chooses the address, when a listener could not bind.
pub fn with_flag_hint(error: anyhow::Error) -> anyhow::Error {
    let Some(bind) = error.downcast_ref::<BindError>() else {
        return error;
    };
    let flag = match bind.listener {
        Listener::OtlpGrpc => "--otlp-grpc-addr",
        Listener::OtlpHttp => "--otlp-http-addr",
        Listener::Ofrep => "--ofrep-addr",
        Listener::Probes => "--probe-addr",
    };
    anyhow::anyhow!("{bind} choose another address with {flag}: {}", bind.source)
}

/// Writes the bound addresses to the ready file, whole or not at all.
pub fn write_ready_file(path: &Path, addrs: &BoundAddrs) -> anyhow::Result<()> {
    crate::store::write_atomically(path, &serde_json::to_vec(addrs)?)
        .with_context(|| format!("writing the ready file {}", path.display()))
}

/// Where received spans go on to, in `standalone` and `run`.
#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Forward every span received over OTLP to this endpoint (Jaeger, Tempo, an
    /// OpenTelemetry Collector), with private attributes hidden, so applications
    /// need only one exporter: http://HOST:4317 for gRPC, http://HOST:4318 for
    /// OTLP/HTTP (spans go to /v1/traces under it). Off when empty.
    #[arg(long, env = "SPANGATE_FORWARD_ENDPOINT", value_name = "URL")]
    forward_endpoint: Option<String>,
    /// Protocol of the forward endpoint.
    #[arg(
        long,
        value_enum,
        default_value = "grpc",
        env = "SPANGATE_FORWARD_PROTOCOL"
    )]
    forward_protocol: ForwardProtocol,
    /// Memory, in bytes, that span batches waiting for the endpoint (or being sent
    /// to it) may hold; beyond it, new batches are dropped (counted in /metrics)
    /// rather than slowing the applications.
    #[arg(long, default_value_t = ForwardConfig::DEFAULT_QUEUE_BYTES, value_parser = at_least_one, env = "SPANGATE_FORWARD_QUEUE_BYTES")]
    forward_queue_bytes: usize,
}

impl ForwardArgs {
    fn config(self) -> anyhow::Result<Option<ForwardConfig>> {
        self.forward_endpoint
            .filter(|endpoint| !endpoint.trim().is_empty())
            .map(|endpoint| {
                ForwardConfig::new(&endpoint, self.forward_protocol, self.forward_queue_bytes)
                    .context("--forward-endpoint")
            })
            .transpose()
    }
}

/// How OFREP is served, in `standalone` and `run`.
#[derive(clap::Args)]
pub struct OfrepArgs {
    /// Context attributes used for targeting that must never be shown: not in
    /// logs, traces, status, events or forwarded spans (comma-separated names or
    /// a.b paths), on top of each rollout's spec.privateAttributes. A value hides
    /// when its name (keys joined with dots, through lists and arrays) is one or
    /// ends with a dot and one: `email` hides `user.email`, not `user_email`.
    #[arg(long, env = "SPANGATE_PRIVATE_ATTRIBUTES", value_delimiter = ',')]
    private_attributes: Vec<String>,
    /// Require OFREP clients to authenticate with one of the tokens in this file
    /// (one a line; `#` comments), sent as `Authorization: Bearer <token>` or
    /// `X-API-Key: <token>`. Without it, anyone who reaches the port may ask.
    #[arg(long, env = "SPANGATE_OFREP_TOKENS_FILE")]
    ofrep_tokens_file: Option<PathBuf>,
    /// Most OFREP requests a second (all clients together); beyond it clients get
    /// 429 with Retry-After. Unlimited when left out.
    #[arg(long, env = "SPANGATE_OFREP_RATE_LIMIT", value_parser = parse_rate_limit)]
    ofrep_rate_limit: Option<NonZeroU32>,
    /// Largest OFREP request body, in bytes; larger ones get 413 (at once when
    /// their Content-Length says so).
    #[arg(long, default_value_t = crate::serve::MAX_BODY_BYTES, value_parser = at_least_one, env = "SPANGATE_OFREP_MAX_BODY_BYTES")]
    ofrep_max_body_bytes: usize,
    /// Deepest nesting of an OFREP context; deeper ones get 400 INVALID_CONTEXT.
    #[arg(long, default_value_t = crate::serve::MAX_CONTEXT_DEPTH, env = "SPANGATE_OFREP_MAX_CONTEXT_DEPTH")]
    ofrep_max_context_depth: usize,
}

impl OfrepArgs {
    fn config(self) -> anyhow::Result<OfrepConfig> {
        let private_attributes =
            PrivateAttributes::parse(&self.private_attributes).map_err(|problems| {
                let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("--private-attributes: {}", texts.join("; "))
            })?;
        let tokens = match &self.ofrep_tokens_file {
            None => Tokens::default(),
            Some(path) => Tokens::read_file(path, "the OFREP tokens file")?,
        };
        Ok(OfrepConfig {
            private_attributes,
            access: Access {
                tokens,
                requests_per_second: self.ofrep_rate_limit,
            },
            max_body_bytes: self.ofrep_max_body_bytes,
            max_context_depth: self.ofrep_max_context_depth,
            ..OfrepConfig::default()
        })
    }
}

/// What a client can make spangate spend, in `standalone` and `run`: each limit's
/// answer is in the README's "Limits and failure modes".
#[derive(clap::Args)]
pub struct LimitArgs {
    /// Require OTLP senders (gRPC and HTTP) to authenticate with one of the tokens
    /// in this file (one a line; `#` comments), sent as `Authorization: Bearer
    /// <token>` (OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>") or
    /// `X-API-Key: <token>`; others get 401 / UNAUTHENTICATED.
    #[arg(long, env = "SPANGATE_OTLP_TOKENS_FILE")]
    otlp_tokens_file: Option<PathBuf>,
    /// Most memory, in bytes, one OTLP request may take once decoded (estimated
    /// before decoding); larger ones get 413 / RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = IngestLimits::default().max_decoded_bytes, value_parser = at_least_one, env = "SPANGATE_MAX_DECODED_BYTES")]
    max_decoded_bytes: usize,
    /// Most memory, in bytes, all OTLP requests in flight may hold together; beyond
    /// it requests get 503 with Retry-After / UNAVAILABLE.
    #[arg(long, default_value_t = IngestLimits::default().max_in_flight_bytes, value_parser = at_least_one, env = "SPANGATE_MAX_IN_FLIGHT_BYTES")]
    max_in_flight_bytes: usize,
    /// Deepest nesting of span attribute values; a deeper span is rejected alone,
    /// in the partial success (at most 24).
    #[arg(long, default_value_t = IngestLimits::default().max_attribute_depth, value_parser = at_least_one, env = "SPANGATE_MAX_ATTRIBUTE_DEPTH")]
    max_attribute_depth: usize,
    /// Longest span accepted; a longer one (or one that ends before it starts) is
    /// rejected in the partial success and not judged.
    #[arg(long, default_value = "24h", value_parser = parse_positive_duration, env = "SPANGATE_MAX_SPAN_DURATION")]
    max_span_duration: Duration,
    /// How long a trace waits in the trace join for the flag evaluation that says
    /// its variant (spans and evaluations arrive in any order, from any service);
    /// a span whose trace resolves no flag within it is not judged.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, env = "SPANGATE_TRACE_JOIN_WINDOW")]
    trace_join_window: Duration,
    /// Most memory, in bytes, the traces waiting in the trace join may take; beyond
    /// it the oldest are let go (their unresolved spans counted, not judged).
    #[arg(long, default_value_t = IngestLimits::default().trace_join.max_bytes, value_parser = at_least_one, env = "SPANGATE_TRACE_JOIN_MEMORY")]
    trace_join_memory: usize,
    /// Connections each OTLP listener keeps open at once; beyond, new ones are
    /// closed at once. Lowered to fit the open-files limit.
    #[arg(long, default_value_t = ServerLimits::default().otlp_max_connections, value_parser = at_least_one, env = "SPANGATE_OTLP_MAX_CONNECTIONS")]
    otlp_max_connections: usize,
    /// Connections the OFREP listener keeps open at once.
    #[arg(long, default_value_t = ServerLimits::default().ofrep_max_connections, value_parser = at_least_one, env = "SPANGATE_OFREP_MAX_CONNECTIONS")]
    ofrep_max_connections: usize,
    /// Connections the probes and metrics listener keeps open at once.
    #[arg(long, default_value_t = ServerLimits::default().probe_max_connections, value_parser = at_least_one, env = "SPANGATE_PROBE_MAX_CONNECTIONS")]
    probe_max_connections: usize,
    /// Time a client has to send a request's headers; also how long a new or
    /// keep-alive HTTP/1.1 connection may stay silent before it is closed.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, env = "SPANGATE_HEADER_READ_TIMEOUT")]
    header_read_timeout: Duration,
    /// Time a client has to send a request's body, from the end of its headers;
    /// then 408 / DEADLINE_EXCEEDED.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, env = "SPANGATE_BODY_READ_TIMEOUT")]
    body_read_timeout: Duration,
    /// How long an HTTP/2 connection (gRPC) may stay open with no request in
    /// progress before it is closed (GOAWAY).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, env = "SPANGATE_IDLE_TIMEOUT")]
    idle_timeout: Duration,
    /// Requests (streams) one HTTP/2 connection may have in progress at once.
    #[arg(long, default_value_t = ServerLimits::default().http2_max_streams, value_parser = clap::value_parser!(u32).range(1..), env = "SPANGATE_HTTP2_MAX_STREAMS")]
    http2_max_streams: u32,
    /// On SIGTERM, how long requests in progress may take before every connection
    /// is closed and the process exits.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, env = "SPANGATE_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Duration,
}

impl LimitArgs {
    /// The ingest limits (with `max_body_bytes`, a flag of its own), the listeners'
    /// limits, and the OTLP tokens.
    fn config(self, max_body_bytes: usize) -> anyhow::Result<(IngestLimits, ServerLimits, Tokens)> {
        let ingest = IngestLimits {
            max_body_bytes,
            max_decoded_bytes: self.max_decoded_bytes,
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_attribute_depth: self.max_attribute_depth,
            span_checks: SpanChecks {
                max_duration: self.max_span_duration,
            },
            trace_join: JoinLimits {
                window_ns: u64::try_from(self.trace_join_window.as_nanos()).unwrap_or(u64::MAX),
                max_bytes: self.trace_join_memory,
            },
        };
        ingest.check()?;
        let server = ServerLimits {
            otlp_max_connections: self.otlp_max_connections,
            ofrep_max_connections: self.ofrep_max_connections,
            probe_max_connections: self.probe_max_connections,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            http2_max_streams: self.http2_max_streams,
            shutdown_timeout: self.shutdown_timeout,
        };
        let tokens = match &self.otlp_tokens_file {
            None => Tokens::default(),
            Some(path) => Tokens::read_file(path, "the OTLP tokens file")?,
        };
        Ok((ingest, server, tokens))
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::api::parse_duration(text).map_err(|e| e.to_string())
}

pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than 0s".to_string());
    }
    Ok(duration)
}

pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}

/// A rate of at least one request a second: 0 would refuse every request.
pub fn parse_rate_limit(text: &str) -> Result<NonZeroU32, String> {
    let rate: u32 = text.parse().map_err(|e| format!("{e}"))?;
    NonZeroU32::new(rate).ok_or_else(|| {
        "must be at least 1 request a second; leave --ofrep-rate-limit out for no limit".to_string()
    })
}

/// Writes command output; a closed pipe (`spangate get | head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Cancels `cancel` on SIGINT or SIGTERM, and says so in the log.
pub fn cancel_on_signal(cancel: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
}

/// Flushes the last spans and log lines, then hands back what the command ended
/// with: an error is reported after telemetry has been flushed, not lost with it.
pub async fn flush_telemetry_then<T>(
    telemetry: Telemetry,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
