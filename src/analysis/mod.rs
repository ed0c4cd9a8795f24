//! Analysis (pure core): what the spans of each variant showed during the current
//! step, and whether the rollout variant is healthy compared with the default one.
//!
//! Ingest turns spans into [`SpanSample`]s, [`Routes`] says which rollout and which
//! arm (baseline or candidate) a sample belongs to, a [`Window`] aggregates the
//! samples of one rollout's current step (mergeable, so ingest can aggregate a batch
//! without a lock and merge once), and [`judge`] turns a window into a
//! [`Verdict`](crate::api::Verdict) with anytime-valid tests ([`sequential`])
//! whose error budget is spent as [`spending`] says. No I/O, no clock.

mod join;
mod judge;
mod routes;
pub mod sampling;
pub mod sequential;
mod sketch;
pub mod spending;
mod window;
mod words;

pub use join::{
    JoinLimits, JoinSpan, JoinStats, Joined, MAX_BUCKET_ATTRIBUTES, Resolution, TraceId, TraceJoin,
    name_hash,
};
pub use judge::{JudgeInput, SAMPLE_RATIO_ALPHA, judge};
pub use routes::{Route, Routes, Tags, Target, WindowEpoch};
pub use sketch::LatencySketch;
pub use spending::Spending;
pub use window::{
    ArmWindow, GROUPS, MAX_UNITS, Observation, SpanIds, UnitSample, Weights, Window, unit_hash,
};
pub use words::{percent, push_digits};

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
    pub span_id: [u8; 8],
    /// `feature_flag.context.id`: the targeting key the flag was evaluated for.
    pub context_id: Option<&'a str>,
    /// `feature_flag.result.reason` (`split` when the percentage decided).
    pub reason: Option<&'a str>,
    /// How many spans it stands for: its adjusted count when its `tracestate`
    /// records a sampling threshold ([`sampling::weight`]), else 1.
    pub weight: u32,
}

impl SpanSample<'_> {
    /// Whether the percentage split chose the variant.
    pub fn split(&self) -> bool {
        self.reason.is_some_and(|r| r.eq_ignore_ascii_case("split"))
    }
}

/// Which side of the comparison a sample is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The default variant: everyone not in the rollout.
    Baseline,
    /// The rollout variant.
    Candidate,
}
