//! The `spangate` command.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use spangate::cli::get::{OutputFormat, render};
use spangate::cluster::{LeaseSettings, RunConfig};
use spangate::demo::{DemoOptions, Scenario};
use spangate::flags::PrivateAttributes;
use spangate::ingest::{ForwardConfig, ForwardProtocol, IngestLimits, SpanChecks};
use spangate::net::{ServerLimits, Tokens};
use spangate::serve::{Access, OfrepConfig};
use spangate::standalone::{ListenAddrs, Standalone, StandaloneConfig};
use spangate::store::FileStore;
use spangate::telemetry::{self, LogFormat};

/// Progressive feature rollouts judged by OpenTelemetry traces.
///
/// spangate hands a flag's new variant to a growing share of users (1% → 5% → 25% →
/// 100%), serves the flag over OFREP, reads the spans of those users over OTLP, and
/// rolls the feature back on its own when the new variant shows more errors or more
/// latency than the old one.
///
/// Start with `spangate demo`, then run your own rollouts with
/// `spangate standalone --dir ./rollouts`.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Log format on stderr. Set RUST_LOG to change the level (e.g. RUST_LOG=debug).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SPANGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a whole rollout — and a rollback — in one command, with no cluster.
    ///
    /// Starts the operator in-process on loopback and a synthetic checkout service
    /// that asks for the flag over OFREP and sends real OTLP spans. In the default
    /// `regression` scenario the new variant is fine at 5% and 25% but fails and
    /// slows down at 50%, and spangate rolls it back by itself; `--scenario healthy` is promoted
    /// to 100%. Exits 0 when the rollout ended as the scenario says.
    Demo {
        #[arg(long, value_enum, default_value = "regression")]
        scenario: Scenario,
        /// Requests per second the synthetic service makes.
        #[arg(long, default_value_t = 800)]
        rate: u32,
        /// Keep the rollout file and its state in this folder (to inspect with
        /// `spangate get`) instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Give up after this long (e.g. 90s).
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        deadline: Duration,
    },
    /// Run the controller on a folder of FeatureRollout files (no cluster).
    ///
    /// Every `*.yaml`, `*.yml` and `*.json` file in the folder may hold FeatureRollout
    /// and Segment documents; the folder is re-read on every tick, so edits take
    /// effect within a tick. Status is kept in the state folder (default
    /// DIR/.spangate) and survives restarts. Applications ask for flags over OFREP
    /// and send spans over OTLP. `--flags FILE` serves a flagd flag-definition file
    /// too (with or without a folder).
    Standalone {
        /// Folder of rollout (and segment) files.
        #[arg(long, env = "SPANGATE_DIR", required_unless_present = "flags")]
        dir: Option<PathBuf>,
        /// A flagd flag-definition file to serve over OFREP as well, with flagd's
        /// semantics; re-read when it changes. A rollout of the same flag key wins.
        #[arg(long, env = "SPANGATE_FLAGS")]
        flags: Option<PathBuf>,
        /// Folder for status and events [default: DIR/.spangate].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// OTLP gRPC receiver.
        #[arg(long, default_value = "127.0.0.1:4317")]
        otlp_grpc_addr: SocketAddr,
        /// OTLP/HTTP receiver (POST /v1/traces, protobuf or JSON).
        #[arg(long, default_value = "127.0.0.1:4318")]
        otlp_http_addr: SocketAddr,
        /// OFREP (POST /ofrep/v1/evaluate/flags/{key}).
        #[arg(long, default_value = "127.0.0.1:8016")]
        ofrep_addr: SocketAddr,
        /// Probes (GET /healthz, /readyz) and Prometheus metrics (GET /metrics).
        #[arg(long, default_value = "127.0.0.1:8014")]
        probe_addr: SocketAddr,
        /// Longest time between two reconcile passes.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        tick: Duration,
        /// Largest OTLP request body accepted, in bytes (compressed or not); larger
        /// ones get 413 / RESOURCE_EXHAUSTED.
        #[arg(long, default_value_t = IngestLimits::default().max_body_bytes, value_parser = at_least_one)]
        max_body_bytes: usize,
        /// Largest rollout file read, in bytes; a larger one is Invalid and not read.
        #[arg(long, default_value_t = spangate::store::DEFAULT_MAX_FILE_BYTES as usize, value_parser = at_least_one)]
        max_rollout_file_bytes: usize,
        /// Once listening and the first pass has published the flags, write the
        /// bound addresses here as JSON (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        #[command(flatten)]
        ofrep: OfrepArgs,
        #[command(flatten)]
        forward: ForwardArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run the operator against a Kubernetes API server (what the Helm chart runs).
    ///
    /// Uses the in-cluster service account, or KUBECONFIG (or ~/.kube/config)
    /// outside a cluster. Watches FeatureRollouts and Segments in every namespace,
    /// writes their status and events, and publishes every flag in flagd's format to
    /// a ConfigMap. Serves OTLP, OFREP and the probes like `standalone`, plus
    /// `/metrics` beside the probes. With several replicas, the one holding the
    /// lease reconciles; the others serve flags and take over when it goes away.
    Run {
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
        /// How often new spans are looked for: a progressing rollout is judged again
        /// when its spans changed, and when its step's dwell ends.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        tick: Duration,
        /// Largest OTLP request body accepted, in bytes (compressed or not); larger
        /// ones get 413 / RESOURCE_EXHAUSTED.
        #[arg(long, default_value_t = IngestLimits::default().max_body_bytes, value_parser = at_least_one)]
        max_body_bytes: usize,
        /// Namespace of the lease and the flag-set ConfigMap [default: the pod's, or
        /// the kubeconfig context's].
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
        /// ConfigMap the flag set is published to, in flagd's flag-definition format
        /// (key flags.flagd.json).
        #[arg(long, default_value = "spangate-flags")]
        flags_configmap: String,
        /// Reconcile without a lease: only for a single replica.
        #[arg(long)]
        no_leader_election: bool,
        /// The coordination.k8s.io Lease replicas compete for.
        #[arg(long, default_value = "spangate-leader")]
        lease_name: String,
        /// How long the lease holds unrenewed: a new leader takes over within it.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        lease_duration: Duration,
        /// This replica's name in the lease and its events [default: the host name].
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Once listening, write the bound addresses here as JSON (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        #[command(flatten)]
        ofrep: OfrepArgs,
        #[command(flatten)]
        forward: ForwardArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print rollouts and their status, like `kubectl get`.
    Get {
        /// Folder of rollout files.
        #[arg(long, env = "SPANGATE_DIR")]
        dir: PathBuf,
        /// Folder for status [default: DIR/.spangate].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Only this rollout (`name` or `namespace/name`).
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Print the flags of a folder's rollouts, in their current state, as a flagd
    /// flag-definition file (for flagd or flagd's in-process providers).
    Export {
        /// Folder of rollout files.
        #[arg(long, env = "SPANGATE_DIR")]
        dir: PathBuf,
        /// Folder for status [default: DIR/.spangate].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions (FeatureRollout, Segment) as YAML.
    Crd,
    /// Run thousands of synthetic rollouts of a spec through the real judge and
    /// controller, to see how often it rolls back a healthy feature, how often and
    /// how soon it catches a regression, and how long a promotion takes.
    ///
    /// Time is simulated (a 2-minute rollout takes milliseconds) and every rollout is
    /// seeded. Describe the traffic (rate, error rate, latency, accounts) and,
    /// optionally, a regression of the rollout variant (examples below).
    ///
    /// Tune a spec with it before production: a spec whose false rollbacks or time
    /// to promote are too high here will be too high there.
    #[command(after_help = "Examples:\n  \
        spangate simulate rollout.yaml --rollouts 10000\n  \
        spangate simulate rollout.yaml --candidate-error-rate 0.03\n  \
        spangate simulate --candidate-latency-factor 1.5 --regression-from-weight 50")]
    Simulate(spangate::cli::simulate::SimulateArgs),
}

/// Where received spans go on to, in `standalone` and `run`.
#[derive(clap::Args)]
struct ForwardArgs {
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
    #[arg(long, default_value_t = ForwardConfig::DEFAULT_QUEUE_BYTES, value_parser = at_least_one)]
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
struct OfrepArgs {
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
    #[arg(long, default_value_t = spangate::serve::MAX_BODY_BYTES, value_parser = at_least_one)]
    ofrep_max_body_bytes: usize,
    /// Deepest nesting of an OFREP context; deeper ones get 400 INVALID_CONTEXT.
    #[arg(long, default_value_t = spangate::serve::MAX_CONTEXT_DEPTH)]
    ofrep_max_context_depth: usize,
}

impl OfrepArgs {
    fn config(self) -> anyhow::Result<OfrepConfig> {
        let private_attributes = PrivateAttributes::parse(&self.private_attributes)
            .map_err(|problems| anyhow::anyhow!("--private-attributes: {}", problems.join("; ")))?;
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
struct LimitArgs {
    /// Require OTLP senders (gRPC and HTTP) to authenticate with one of the tokens
    /// in this file (one a line; `#` comments), sent as `Authorization: Bearer
    /// <token>` (OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>") or
    /// `X-API-Key: <token>`; others get 401 / UNAUTHENTICATED.
    #[arg(long, env = "SPANGATE_OTLP_TOKENS_FILE")]
    otlp_tokens_file: Option<PathBuf>,
    /// Most memory, in bytes, one OTLP request may take once decoded (estimated
    /// before decoding); larger ones get 413 / RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = IngestLimits::default().max_decoded_bytes, value_parser = at_least_one)]
    max_decoded_bytes: usize,
    /// Most memory, in bytes, all OTLP requests in flight may hold together; beyond
    /// it requests get 503 with Retry-After / UNAVAILABLE.
    #[arg(long, default_value_t = IngestLimits::default().max_in_flight_bytes, value_parser = at_least_one)]
    max_in_flight_bytes: usize,
    /// Deepest nesting of span attribute values; a deeper span is rejected alone,
    /// in the partial success (at most 24).
    #[arg(long, default_value_t = IngestLimits::default().max_attribute_depth, value_parser = at_least_one)]
    max_attribute_depth: usize,
    /// Longest span accepted; a longer one (or one that ends before it starts) is
    /// rejected in the partial success and not judged.
    #[arg(long, default_value = "24h", value_parser = parse_positive_duration)]
    max_span_duration: Duration,
    /// Connections each OTLP listener keeps open at once; beyond, new ones are
    /// closed at once. Lowered to fit the open-files limit.
    #[arg(long, default_value_t = ServerLimits::default().otlp_max_connections, value_parser = at_least_one)]
    otlp_max_connections: usize,
    /// Connections the OFREP listener keeps open at once.
    #[arg(long, default_value_t = ServerLimits::default().ofrep_max_connections, value_parser = at_least_one)]
    ofrep_max_connections: usize,
    /// Connections the probes and metrics listener keeps open at once.
    #[arg(long, default_value_t = ServerLimits::default().probe_max_connections, value_parser = at_least_one)]
    probe_max_connections: usize,
    /// Time a client has to send a request's headers; also how long a new or
    /// keep-alive HTTP/1.1 connection may stay silent before it is closed.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    header_read_timeout: Duration,
    /// Time a client has to send a request's body, from the end of its headers;
    /// then 408 / DEADLINE_EXCEEDED.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    body_read_timeout: Duration,
    /// How long an HTTP/2 connection (gRPC) may stay open with no request in
    /// progress before it is closed (GOAWAY).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    idle_timeout: Duration,
    /// Requests (streams) one HTTP/2 connection may have in progress at once.
    #[arg(long, default_value_t = ServerLimits::default().http2_max_streams, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,
    /// On SIGTERM, how long requests in progress may take before every connection
    /// is closed and the process exits.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
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

fn parse_duration(text: &str) -> Result<Duration, String> {
    spangate::api::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than 0s".to_string());
    }
    Ok(duration)
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}

/// A rate of at least one request a second: 0 would refuse every request.
fn parse_rate_limit(text: &str) -> Result<NonZeroU32, String> {
    let rate: u32 = text.parse().map_err(|e| format!("{e}"))?;
    NonZeroU32::new(rate).ok_or_else(|| {
        "must be at least 1 request a second; leave --ofrep-rate-limit out for no limit".to_string()
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            write_stdout(&spangate::api::crd_yaml())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => spangate::cli::simulate::run(args),
        Command::Export { dir, state_dir } => {
            let store = FileStore::new(&dir, state_dir);
            let rollouts = store.list_read_only()?;
            let mut segments = spangate::controller::SegmentCatalog::default();
            segments.update(&store.segments_read_only()?);
            let flags: Vec<_> = rollouts
                .iter()
                .filter_map(|r| {
                    let spec = r.spec.as_ref().ok()?;
                    let compiled =
                        spangate::controller::compile_spec(spec, &r.key.namespace, &segments)
                            .ok()?;
                    spangate::controller::served_flag(r, &r.status, &compiled)
                })
                .collect();
            let export = spangate::flags::flagd::flag_set(&flags);
            write_stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&export.document)?
            ))?;
            for skipped in &export.skipped {
                eprintln!("error: {skipped}");
            }
            Ok(if export.skipped.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Get {
            dir,
            state_dir,
            name,
            output,
        } => {
            let store = FileStore::new(&dir, state_dir);
            let mut rollouts = store.list_read_only()?;
            if let Some(wanted) = &name {
                rollouts.retain(|r| r.key.name == *wanted || r.key.to_string() == *wanted);
                if rollouts.is_empty() {
                    anyhow::bail!("rollout {wanted:?} not found in {}", dir.display());
                }
            }
            if rollouts.is_empty() && matches!(output, OutputFormat::Table | OutputFormat::Wide) {
                eprintln!("No rollouts found in {}.", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            write_stdout(&render(
                &rollouts,
                output,
                name.is_some(),
                jiff::Timestamp::now(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            scenario,
            rate,
            dir,
            deadline,
        } => runtime()?.block_on(async {
            // The demo prints its own account of every decision; logs would repeat it.
            let _telemetry = telemetry::init(cli.log_format, "error")?;
            let options = DemoOptions {
                scenario,
                requests_per_second: rate,
                dir,
                deadline,
            };
            let mut out = std::io::stdout();
            let outcome = spangate::demo::run(options, &mut out).await?;
            Ok(if outcome.behaved() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Command::Run {
            otlp_grpc_addr,
            otlp_http_addr,
            ofrep_addr,
            probe_addr,
            tick,
            max_body_bytes,
            namespace,
            flags_configmap,
            no_leader_election,
            lease_name,
            lease_duration,
            identity,
            ready_file,
            ofrep,
            forward,
            limits,
        } => runtime()?.block_on(async {
            let ofrep = ofrep.config()?;
            let forward = forward.config()?;
            let (ingest_limits, server, otlp_tokens) = limits.config(max_body_bytes)?;
            let telemetry = telemetry::init(cli.log_format, "info")?;
            let config = RunConfig {
                ofrep,
                listen: ListenAddrs {
                    otlp_grpc: otlp_grpc_addr,
                    otlp_http: otlp_http_addr,
                    ofrep: ofrep_addr,
                    probes: probe_addr,
                },
                ingest_limits,
                tick,
                namespace,
                flags_configmap,
                lease: (!no_leader_election).then_some(LeaseSettings {
                    name: lease_name,
                    duration: lease_duration,
                }),
                identity,
                forward,
                server,
                otlp_tokens,
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let stop = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            let result = spangate::cluster::run(config, cancel, |addrs| {
                if let Some(path) = &ready_file {
                    spangate::store::write_atomically(path, &serde_json::to_vec(&addrs)?)
                        .with_context(|| format!("writing the ready file {}", path.display()))?;
                }
                Ok(())
            })
            .await;
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            result?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Standalone {
            dir,
            flags,
            state_dir,
            otlp_grpc_addr,
            otlp_http_addr,
            ofrep_addr,
            probe_addr,
            tick,
            max_body_bytes,
            max_rollout_file_bytes,
            ready_file,
            ofrep,
            forward,
            limits,
        } => runtime()?.block_on(async {
            let ofrep = ofrep.config()?;
            let forward = forward.config()?;
            let (ingest_limits, server, otlp_tokens) = limits.config(max_body_bytes)?;
            // Without a rollout folder (only --flags), an empty one stands in.
            let empty_dir = match &dir {
                Some(_) => None,
                None => Some(tempfile::tempdir().context("making an empty rollout folder")?),
            };
            let dir = dir
                .or_else(|| empty_dir.as_ref().map(|d| d.path().to_path_buf()))
                .context("give --dir, --flags or both")?;
            let telemetry = telemetry::init(cli.log_format, "info")?;
            let config = StandaloneConfig {
                dir,
                state_dir,
                otlp_grpc_addr,
                otlp_http_addr,
                ofrep_addr,
                probe_addr,
                tick,
                ingest_limits,
                ofrep,
                flags_file: flags,
                forward,
                server,
                otlp_tokens,
                max_rollout_file_bytes: max_rollout_file_bytes as u64,
            };
            let first_pass = Arc::new(tokio::sync::Notify::new());
            let passed = first_pass.clone();
            let mut standalone =
                Standalone::start(config.clone(), move |_| passed.notify_one()).await?;
            let addrs = standalone.addrs;
            tracing::info!(
                dir = %config.dir.display(),
                otlp_grpc = %addrs.otlp_grpc,
                otlp_http = %addrs.otlp_http,
                ofrep = %addrs.ofrep,
                probes = %addrs.probes,
                "spangate standalone is serving"
            );
            if let Some(path) = ready_file {
                // Once the first pass has published the flags: a script that starts
                // asking when the file appears finds every flag served.
                first_pass.notified().await;
                spangate::store::write_atomically(&path, &serde_json::to_vec(&addrs)?)
                    .with_context(|| format!("writing the ready file {}", path.display()))?;
            }
            let cancel = standalone.cancel_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                cancel.cancel();
            });
            let result = standalone.wait().await;
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            result?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Writes command output; a closed pipe (`spangate get | head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
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
