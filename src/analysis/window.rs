//! Aggregates of one rollout's current step, one per arm.

use super::{Arm, LatencySketch};

/// Trace IDs of failing candidate spans kept as evidence.
pub const MAX_EXEMPLARS: usize = 5;

/// What the spans of one arm showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmWindow {
    pub samples: u64,
    pub errors: u64,
    pub latency: LatencySketch,
    /// Trace IDs of erroring spans, the first [`MAX_EXEMPLARS`] seen.
    pub error_exemplars: Vec<[u8; 16]>,
}

impl ArmWindow {
    pub fn record(&mut self, is_error: bool, duration_ns: u64, trace_id: [u8; 16]) {
        self.samples += 1;
        if is_error {
            self.errors += 1;
            if self.error_exemplars.len() < MAX_EXEMPLARS {
                self.error_exemplars.push(trace_id);
            }
        }
        self.latency.record_ns(duration_ns);
    }

    pub fn merge(&mut self, other: &ArmWindow) {
        self.samples += other.samples;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        let room = MAX_EXEMPLARS.saturating_sub(self.error_exemplars.len());
        self.error_exemplars
            .extend(other.error_exemplars.iter().take(room).copied());
    }

    /// errors / samples, or `None` with no samples.
    pub fn error_rate(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.errors as f64 / self.samples as f64)
    }
}

/// Both arms of one rollout during one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub baseline: ArmWindow,
    pub candidate: ArmWindow,
}

impl Window {
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmWindow {
        match arm {
            Arm::Baseline => &mut self.baseline,
            Arm::Candidate => &mut self.candidate,
        }
    }

    pub fn record(&mut self, arm: Arm, is_error: bool, duration_ns: u64, trace_id: [u8; 16]) {
        self.arm_mut(arm).record(is_error, duration_ns, trace_id);
    }

    pub fn merge(&mut self, other: &Window) {
        self.baseline.merge(&other.baseline);
        self.candidate.merge(&other.candidate);
    }
}
