//! `spangate get` and `spangate export`: a folder's rollouts as they stand, read
//! without writing anything.

use std::path::PathBuf;
use std::process::ExitCode;

use super::get::{OutputFormat, render};
use super::serve::write_stdout;
use crate::controller::SegmentCatalog;
use crate::store::FileStore;

#[derive(clap::Args)]
pub struct GetArgs {
    /// Folder of rollout files.
    #[arg(long, env = "SPANGATE_DIR")]
    dir: PathBuf,
    /// Folder for status [default: DIR/.spangate].
    #[arg(long, env = "SPANGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Only this rollout (`name` or `namespace/name`).
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: OutputFormat,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Folder of rollout files.
    #[arg(long, env = "SPANGATE_DIR")]
    dir: PathBuf,
    /// Folder for status [default: DIR/.spangate].
    #[arg(long, env = "SPANGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let GetArgs {
        dir,
        state_dir,
        name,
        output,
    } = args;
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

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = FileStore::new(&args.dir, args.state_dir);
    let rollouts = store.list_read_only()?;
    let mut segments = SegmentCatalog::default();
    segments.update(&store.segments_read_only()?);
    let flags: Vec<_> = rollouts
        .iter()
        .filter_map(|r| {
            let spec = r.spec.as_ref().ok()?;
            let compiled = segments.compile(&r.key, spec.clone()).ok()?;
            compiled.flag(&r.key.to_string(), &r.status)
        })
        .collect();
    let export = crate::flags::flagd::flag_set(&flags);
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
