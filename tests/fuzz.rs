//! Fuzz targets that run on the stable toolchain, as ordinary tests: OTLP protobuf
//! and JSON decoding, traces and logs, with the ingestor's accounting, OFREP evaluation contexts,
//! rollout files, and flagd flag sets with their JsonLogic.
//!
//! Each target first runs the seed files of `tests/fuzz/corpus/<target>/`, then
//! generated cases until `SPANGATE_FUZZ_SECONDS` have passed (3 by default;
//! `scripts/test` sets 30): corpus entries mutated (bytes flipped, cut, spliced,
//! repeated; interesting values inserted: huge varints and lengths, deep nesting,
//! long strings, extreme numbers, invalid UTF-8; protobuf fields and JSON members
//! added, dropped and retyped), and inputs generated from their structure (OTLP
//! requests, contexts, JsonLogic trees over every operation spangate knows).
//!
//! Every case is made from the run's seed and its own number alone, so a run is
//! replayed with `SPANGATE_FUZZ_SEED` (printed when it starts) and one case with
//! `SPANGATE_FUZZ_CASE` as well; `SPANGATE_FUZZ_INPUT=<file>` runs a saved input.
//! A case runs on a thread of its own with a Tokio worker's 2 MiB stack. A case
//! that panics, breaks an invariant or is still running after 20 s stops its
//! target: the input is saved under the target directory and the failure says
//! how to replay it. The heap is capped (4 GiB) so that a runaway case aborts
//! instead of taking the machine's memory.

/// The harness and the targets, in `tests/fuzz/`.
mod fuzz {
    pub mod harness;
    pub mod jsonlogic;
    pub mod mutate;
    pub mod ofrep;
    pub mod otlp;
    pub mod otlp_logs;
    pub mod rollout;
}

use fuzz::harness::{self, Target};
use fuzz::{jsonlogic, ofrep, otlp, otlp_logs, rollout};
use spangate::ingest::Encoding;

#[global_allocator]
static ALLOCATOR: harness::Capped = harness::Capped;

#[test]
fn otlp_protobuf() {
    harness::run(
        Target {
            name: "otlp_protobuf",
            hex: true,
            // Every JSON seed that decodes, encoded again as protobuf: the valid
            // requests the hand-written hex seeds leave out.
            seeds: otlp::json_seeds_as_protobuf(),
        },
        otlp::generate_protobuf,
        |input| otlp::check(Encoding::Protobuf, input),
    );
}

#[test]
fn otlp_json() {
    harness::run(Target::new("otlp_json"), otlp::generate_json, |input| {
        otlp::check(Encoding::Json, input)
    });
}

#[test]
fn otlp_logs_protobuf() {
    harness::run(
        Target {
            name: "otlp_logs_protobuf",
            hex: true,
            seeds: otlp_logs::json_seeds_as_protobuf(),
        },
        otlp_logs::generate_protobuf,
        |input| otlp_logs::check(Encoding::Protobuf, input),
    );
}

#[test]
fn otlp_logs_json() {
    harness::run(
        Target::new("otlp_logs_json"),
        otlp_logs::generate_json,
        |input| otlp_logs::check(Encoding::Json, input),
    );
}

#[test]
fn ofrep_context() {
    let ofrep = std::sync::Arc::new(ofrep::Ofrep::new());
    harness::run(
        Target::new("ofrep_context"),
        ofrep::generate,
        move |input| ofrep.check(input),
    );
}

#[test]
fn rollout_file() {
    harness::run(
        Target::new("rollout_file"),
        rollout::generate,
        rollout::check,
    );
}

#[test]
fn flagd_jsonlogic() {
    harness::run(
        Target::new("flagd_jsonlogic"),
        jsonlogic::generate,
        jsonlogic::check,
    );
}
