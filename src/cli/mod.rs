//! The commands: each one's arguments and what it does with them. `main.rs` only
//! parses and dispatches. `serve` holds what `standalone` and `run` share.

pub mod demo;
pub mod files;
pub mod get;
pub mod kubectl;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod standalone;
