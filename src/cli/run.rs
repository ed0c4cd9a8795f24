//! `spangate run`: the operator against a Kubernetes API server.

use std::process::ExitCode;
use std::time::Duration;

use super::serve::{
    ServeArgs, cancel_on_signal, flush_telemetry_then, parse_duration, runtime, with_flag_hint,
    write_ready_file,
};
use crate::cluster::{LeaseSettings, RunConfig};
use crate::telemetry::{self, LogFormat};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Namespace of the lease and the flag-set ConfigMap [default: the pod's, or
    /// the kubeconfig context's].
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// ConfigMap the flag set is published to, in flagd's flag-definition format
    /// (key flags.flagd.json).
    #[arg(
        long,
        default_value = "spangate-flags",
        env = "SPANGATE_FLAGS_CONFIGMAP"
    )]
    flags_configmap: String,
    /// Reconcile without a lease: only for a single replica.
    #[arg(long)]
    no_leader_election: bool,
    /// The coordination.k8s.io Lease replicas compete for.
    #[arg(long, default_value = "spangate-leader", env = "SPANGATE_LEASE_NAME")]
    lease_name: String,
    /// How long the lease holds unrenewed: a new leader takes over within it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "SPANGATE_LEASE_DURATION")]
    lease_duration: Duration,
    /// This replica's name in the lease and its events [default: the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn run(args: RunArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let ready_file = args.serve.ready_file.clone();
        let serve = args.serve.config()?;
        let telemetry = telemetry::init(log_format, "info")?;
        let config = RunConfig {
            serve,
            namespace: args.namespace,
            flags_configmap: args.flags_configmap,
            lease: (!args.no_leader_election).then_some(LeaseSettings {
                name: args.lease_name,
                duration: args.lease_duration,
            }),
            identity: args.identity,
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel_on_signal(cancel.clone());
        let result = crate::cluster::run(config, cancel, |addrs| match &ready_file {
            Some(path) => write_ready_file(path, &addrs),
            None => Ok(()),
        })
        .await
        .map_err(with_flag_hint);
        flush_telemetry_then(telemetry, result).await?;
        Ok(ExitCode::SUCCESS)
    })
}
