//! spangate: progressive feature rollouts judged by OpenTelemetry traces.
//!
//! Pure core: [`flags`], [`rollout`], [`analysis`] (no I/O, no clock, no async).
//! Shells: [`ingest`], [`serve`], [`store`], [`controller`], [`telemetry`], and
//! [`net`], the HTTP serving under limits that `ingest` and `serve` share.
//! Run modes: [`standalone`] (a folder) and [`cluster`] (the API server), both
//! serving through [`server`]; [`cli`] holds the commands' arguments.

pub mod analysis;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod demo;
pub mod fingerprint;
pub mod flags;
pub mod ingest;
pub mod net;
pub mod rollout;
pub mod serve;
pub mod server;
pub mod simulate;
pub mod standalone;
pub mod store;
pub mod telemetry;
