//! Analysis (pure core): what the spans of each variant showed during the current
//! step, and whether the rollout variant is healthy compared with the default one.
//!
//! Ingest turns spans into [`SpanSample`]s, [`Routes`] says which rollout and which
//! arm (baseline or candidate) a sample belongs to, a [`Window`] aggregates the
//! samples of one rollout's current step (mergeable, so ingest can aggregate a batch
//! without a lock and merge once), and [`judge`] turns a window into a
//! [`Verdict`](crate::api::Verdict). No I/O, no clock.

mod judge;
mod routes;
mod sketch;
mod window;

pub use judge::judge;
pub use routes::{Route, Routes};
pub use sketch::LatencySketch;
pub use window::{ArmWindow, Window};

/// What ingest reads off one span, borrowed from the decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSample<'a> {
    /// Resource `service.name`.
    pub service: &'a str,
    /// Resource `vcs.ref.head.revision`, else `service.version`.
    pub revision: Option<&'a str>,
    /// `feature_flag.key`.
    pub flag_key: &'a str,
    /// `feature_flag.result.variant` (or the legacy `feature_flag.variant`).
    pub variant: &'a str,
    /// Span status code is ERROR.
    pub is_error: bool,
    /// end - start, in nanoseconds (0 when end precedes start).
    pub duration_ns: u64,
    pub trace_id: [u8; 16],
}

/// Which side of the comparison a sample is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The default variant: everyone not in the rollout.
    Baseline,
    /// The rollout variant.
    Candidate,
}
