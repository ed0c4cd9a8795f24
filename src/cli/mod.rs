//! Command-line front ends that are more than wiring: `get`'s rendering of rollouts,
//! the kubectl plugin, and `simulate`'s arguments and report.

pub mod get;
pub mod kubectl;
pub mod simulate;
