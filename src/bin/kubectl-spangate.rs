//! `kubectl-spangate`: the kubectl plugin (`kubectl spangate get|status|pause|resume|promote|abort`).

use std::process::ExitCode;

use clap::Parser;

use spangate::cli::kubectl::{Plugin, run};

fn main() -> ExitCode {
    let plugin = Plugin::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(run(plugin, &mut out)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
