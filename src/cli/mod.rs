//! Command-line front ends that are more than wiring: `get`'s rendering of rollouts,
//! and the kubectl plugin.

pub mod get;
pub mod kubectl;
