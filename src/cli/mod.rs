//! Command-line front ends that are more than wiring: `get`'s rendering of rollouts.

pub mod get;
