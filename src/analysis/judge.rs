//! The threshold judge.

use super::Window;
use crate::api::{AnalysisSpec, Verdict};

/// Judges the candidate arm of `window` against `analysis`.
pub fn judge(
    _analysis: &AnalysisSpec,
    _window: &Window,
    _baseline_variant: &str,
    _candidate_variant: &str,
) -> Verdict {
    unimplemented!("being written")
}
