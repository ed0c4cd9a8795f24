//! `spangate standalone`: the controller over a folder of rollout files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::serve::{
    ServeArgs, at_least_one, cancel_on_signal, flush_telemetry_then, runtime, with_flag_hint,
    write_ready_file,
};
use crate::standalone::{Standalone, StandaloneConfig};
use crate::telemetry::{self, LogFormat};

#[derive(clap::Args)]
pub struct StandaloneArgs {
    /// Folder of rollout (and segment) files.
    #[arg(long, env = "SPANGATE_DIR", required_unless_present = "flags")]
    dir: Option<PathBuf>,
    /// A flagd flag-definition file to serve over OFREP as well, with flagd's
    /// semantics; re-read when it changes. A rollout of the same flag key wins.
    #[arg(long, env = "SPANGATE_FLAGS")]
    flags: Option<PathBuf>,
    /// Folder for status and events [default: DIR/.spangate].
    #[arg(long, env = "SPANGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Largest rollout file read, in bytes; a larger one is Invalid and not read.
    #[arg(long, default_value_t = crate::store::DEFAULT_MAX_FILE_BYTES as usize, value_parser = at_least_one, env = "SPANGATE_MAX_ROLLOUT_FILE_BYTES")]
    max_rollout_file_bytes: usize,
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn run(args: StandaloneArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let ready_file = args.serve.ready_file.clone();
        let serve = args.serve.config()?;
        // Without a rollout folder (only --flags), an empty one stands in.
        let empty_dir = match &args.dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().context("making an empty rollout folder")?),
        };
        let dir = args
            .dir
            .or_else(|| empty_dir.as_ref().map(|d| d.path().to_path_buf()))
            .context("give --dir, --flags or both")?;
        let telemetry = telemetry::init(log_format, "info")?;
        let config = StandaloneConfig {
            dir,
            state_dir: args.state_dir,
            flags_file: args.flags,
            max_rollout_file_bytes: args.max_rollout_file_bytes as u64,
            serve,
        };
        let first_pass = Arc::new(tokio::sync::Notify::new());
        let passed = first_pass.clone();
        let mut standalone = Standalone::start(config.clone(), move |_| passed.notify_one())
            .await
            .map_err(with_flag_hint)?;
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
            write_ready_file(&path, &addrs)?;
        }
        cancel_on_signal(standalone.cancel_token());
        let result = standalone.wait().await;
        flush_telemetry_then(telemetry, result).await?;
        Ok(ExitCode::SUCCESS)
    })
}
