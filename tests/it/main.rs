//! The integration tests, one module a subject, in one binary so the crate is
//! linked once (the fuzz targets and the allocation count, which needs a global
//! allocator of its own, are binaries of their own). Run one subject with
//! `cargo nextest run --test it -E 'test(/^cli::/)'` or `cargo test --test it cli::`.

mod common;

mod cli;
mod cluster;
mod collector;
mod crd_validation;
mod crds;
mod demo;
mod flagd_compat;
mod forward;
mod helm_chart;
mod hostile_connections;
mod hostile_folder;
mod hostile_otlp;
mod image;
mod krew;
mod node_hooks;
mod notify;
mod ofrep;
mod otlp_ingest;
mod otlp_logs;
mod private_attributes;
mod python_sdks;
mod reconcile_kube;
mod rollout_machine;
mod sampling;
mod sdk_targeting;
mod simulate;
mod standalone;
mod standalone_targeting;
mod targeting;
mod telemetry;
mod trace_join;
