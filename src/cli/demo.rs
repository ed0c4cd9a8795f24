//! `spangate demo`: a rollout and a rollback in one command, with no cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::serve::{parse_duration, parse_trace_links, runtime};
use crate::controller::TraceLinks;
use crate::demo::{DemoOptions, Scenario};
use crate::ingest::{ForwardConfig, ForwardProtocol};
use crate::telemetry::{self, LogFormat, TraceExport};

#[derive(clap::Args)]
pub struct DemoArgs {
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
    /// Send the demo's traces to this OTLP endpoint (Jaeger, a collector), e.g.
    /// http://localhost:4317: spangate's own decision spans, and the synthetic
    /// checkout service's spans, forwarded by spangate.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// How to reach --otlp-endpoint: grpc (port 4317) or http/protobuf (port 4318).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "grpc",
        value_parser = ["grpc", "http/protobuf"]
    )]
    otlp_protocol: String,
    /// Print the failing and slowest requests as links into the trace backend, e.g.
    /// 'http://localhost:16686/trace/{traceId}' for Jaeger; they are in the
    /// rollout's status too.
    #[arg(long, env = "SPANGATE_TRACE_URL_TEMPLATE", value_name = "URL", value_parser = parse_trace_links)]
    trace_url_template: Option<TraceLinks>,
}

pub fn run(args: DemoArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let export = args
        .otlp_endpoint
        .as_deref()
        .and_then(|endpoint| TraceExport::new(endpoint, &args.otlp_protocol));
    let forward = export
        .as_ref()
        .map(|export| {
            let protocol = if export.http {
                ForwardProtocol::HttpProtobuf
            } else {
                ForwardProtocol::Grpc
            };
            ForwardConfig::new(
                &export.endpoint,
                protocol,
                ForwardConfig::DEFAULT_QUEUE_BYTES,
            )
        })
        .transpose()?;
    runtime()?.block_on(async {
        // The demo prints its own account of every decision; logs would repeat it.
        // Its spans are exported all the same.
        let telemetry = telemetry::init_with(log_format, "error", export)?;
        let options = DemoOptions {
            scenario: args.scenario,
            requests_per_second: args.rate,
            dir: args.dir,
            deadline: args.deadline,
            forward,
            trace_links: args.trace_url_template,
        };
        let mut out = std::io::stdout();
        let outcome = crate::demo::run(options, &mut out).await;
        // Every span out before the process ends.
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        Ok(if outcome?.behaved() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
