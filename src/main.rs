//! The `spangate` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spangate::cli::{demo, files, run, serve::write_stdout, simulate, standalone};
use spangate::telemetry::LogFormat;

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
    Demo(spangate::cli::demo::DemoArgs),
    /// Run the controller on a folder of FeatureRollout files (no cluster).
    ///
    /// Every `*.yaml`, `*.yml` and `*.json` file in the folder may hold FeatureRollout
    /// and Segment documents; the folder is re-read on every tick, so edits take
    /// effect within a tick. Status is kept in the state folder (default
    /// DIR/.spangate) and survives restarts. Applications ask for flags over OFREP
    /// and send spans over OTLP. `--flags FILE` serves a flagd flag-definition file
    /// too (with or without a folder).
    Standalone(spangate::cli::standalone::StandaloneArgs),
    /// Run the operator against a Kubernetes API server (what the Helm chart runs).
    ///
    /// Uses the in-cluster service account, or KUBECONFIG (or ~/.kube/config)
    /// outside a cluster. Watches FeatureRollouts and Segments in every namespace,
    /// writes their status and events, and publishes every flag in flagd's format to
    /// a ConfigMap. Serves OTLP, OFREP and the probes like `standalone`, plus
    /// `/metrics` beside the probes. With several replicas, the one holding the
    /// lease reconciles; the others serve flags and take over when it goes away.
    Run(spangate::cli::run::RunArgs),
    /// Print rollouts and their status, like `kubectl get`.
    Get(spangate::cli::files::GetArgs),
    /// Print the flags of a folder's rollouts, in their current state, as a flagd
    /// flag-definition file (for flagd or flagd's in-process providers).
    Export(spangate::cli::files::ExportArgs),
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
    Simulate(simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let result = match cli.command {
        Command::Demo(args) => demo::run(args, log_format),
        Command::Standalone(args) => standalone::run(args, log_format),
        Command::Run(args) => run::run(args, log_format),
        Command::Get(args) => files::get(args),
        Command::Export(args) => files::export(args),
        Command::Crd => write_stdout(&spangate::api::crd_yaml()).map(|()| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
