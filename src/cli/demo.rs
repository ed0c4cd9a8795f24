//! `spangate demo`: a rollout and a rollback in one command, with no cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::serve::{parse_duration, runtime};
use crate::demo::{DemoOptions, Scenario};
use crate::telemetry::{self, LogFormat};

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
}

pub fn run(args: DemoArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        // The demo prints its own account of every decision; logs would repeat it.
        let _telemetry = telemetry::init(log_format, "error")?;
        let options = DemoOptions {
            scenario: args.scenario,
            requests_per_second: args.rate,
            dir: args.dir,
            deadline: args.deadline,
        };
        let mut out = std::io::stdout();
        let outcome = crate::demo::run(options, &mut out).await?;
        Ok(if outcome.behaved() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
