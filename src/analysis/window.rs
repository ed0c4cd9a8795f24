//! Aggregates of one rollout's current step, one per arm: counts, a latency
//! sketch, the same counts split into groups of units (so variances can be
//! computed per unit, not per span), and a sample of the distinct units seen (for
//! the sample-ratio check). Everything merges by addition or union, so windows of
//! several receivers merge into the window one receiver would have kept.

use super::{Arm, LatencySketch};

/// Trace IDs of failing candidate spans kept as evidence.
pub const MAX_EXEMPLARS: usize = 5;

/// Groups the units of an arm are hashed into. Between-group variance estimates
/// the variance of a rate whatever the correlation inside a unit (the "random
/// groups" estimator); more groups estimate it more precisely.
pub const GROUPS: usize = 64;

/// Distinct units remembered per window for the sample-ratio check.
pub const MAX_UNITS: usize = 1024;

/// Fixed-point scale of the summed log-latencies, so sums are exact integers and
/// merging in any order gives the same window.
const LOG_SCALE: f64 = 1e4;

/// What one span contributes to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub is_error: bool,
    pub duration_ns: u64,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// [`unit_hash`] of the span's bucketing value (the rollout's `bucketBy`
    /// attribute, or `feature_flag.context.id`), when it carries one.
    pub unit: Option<u64>,
    /// The flag resolved by the percentage split (reason `split`): only such units
    /// say whether the split's share is right.
    pub split: bool,
    /// How many spans this one stands for: 1, or its adjusted count when it was
    /// sampled ([`super::sampling::weight`]).
    pub weight: u32,
}

impl Observation {
    /// A span that carries no bucketing value; its span ID is the trace ID's first
    /// half, which is never all zero.
    pub fn span(is_error: bool, duration_ns: u64, trace_id: [u8; 16]) -> Self {
        Self {
            is_error,
            duration_ns,
            trace_id,
            span_id: trace_id[..8].try_into().expect("eight bytes"),
            unit: None,
            split: false,
            weight: 1,
        }
    }
}

/// A hash of a bucketing value, independent of the one bucketing uses (MurmurHash3
/// of flag key and value), so a unit's group and sampling say nothing of its arm.
pub fn unit_hash(value: &str) -> u64 {
    // FNV-1a, then the SplitMix64 finalizer to spread the low bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The spans of the units hashed into one group, each counted by its weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Group {
    pub spans: u64,
    pub errors: u64,
    /// Σ weight × ln(duration in ns) × [`LOG_SCALE`].
    log_latency: i64,
}

impl Group {
    /// Σ ln(duration in ns) of the group's spans.
    pub fn log_latency_sum(&self) -> f64 {
        self.log_latency as f64 / LOG_SCALE
    }
}

/// What the spans of one arm showed. `samples` and `errors` count the spans
/// received; everything else counts each span by its weight (its adjusted count when
/// it was sampled), so rates and quantiles are those of the traffic sampled from.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmWindow {
    pub samples: u64,
    pub errors: u64,
    pub weights: Weights,
    pub latency: LatencySketch,
    pub groups: Box<[Group; GROUPS]>,
    /// Σ weight × (ln(duration in ns) × [`LOG_SCALE`])², for the latency's design
    /// effect.
    log_latency_squares: u128,
    /// Whether the groups are units (spans carried their bucketing value) rather
    /// than traces.
    pub grouped_by_unit: bool,
    /// Erroring spans, the first [`MAX_EXEMPLARS`] seen.
    pub error_exemplars: Vec<SpanIds>,
    /// The slowest span and its duration in nanoseconds.
    pub slowest: Option<(u64, SpanIds)>,
}

/// Where a span is: its trace and span IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The spans of an arm counted by their weights: what the judge's rates and their
/// variances are computed from. Without sampling every weight is 1 and these are the
/// span counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weights {
    /// Σ weight: the spans the arm's spans stand for.
    pub spans: u64,
    /// Σ weight of erroring spans.
    pub errors: u64,
    /// Σ weight² of erroring spans and of the others: how much sampling widens a
    /// rate's variance (see [`Weights::error_weight`]).
    pub error_squares: u128,
    pub other_squares: u128,
    /// The largest weight, and the largest of an erroring span: how far one span
    /// can move an estimate, and one error raise a rate.
    pub max: u32,
    pub max_error: u32,
}

impl Weights {
    fn record(&mut self, weight: u32, is_error: bool) {
        let (w, square) = (u64::from(weight), u128::from(weight) * u128::from(weight));
        self.spans += w;
        if is_error {
            self.errors += w;
            self.error_squares += square;
            self.max_error = self.max_error.max(weight);
        } else {
            self.other_squares += square;
        }
        self.max = self.max.max(weight);
    }

    fn merge(&mut self, other: &Weights) {
        self.spans += other.spans;
        self.errors += other.errors;
        self.error_squares += other.error_squares;
        self.other_squares += other.other_squares;
        self.max = self.max.max(other.max);
        self.max_error = self.max_error.max(other.max_error);
    }

    /// The most one more error can raise the weighted error count by: the largest
    /// weight an error had, or any span's while none erred.
    pub fn error_jump(&self) -> u32 {
        if self.errors > 0 {
            self.max_error
        } else {
            self.max
        }
        .max(1)
    }

    /// Whether any span stood for more than one.
    pub fn sampled(&self) -> bool {
        self.max > 1
    }

    /// Σw²/Σw of erroring spans (of the others when none erred): the variance of a
    /// weighted rate at `p` is `p (1 - p) ((1 - p) e + p o) / Σw` with `e` this and
    /// `o` [`Weights::other_weight`]; 1 and 1 without sampling.
    pub fn error_weight(&self) -> f64 {
        mean_weight(self.error_squares, self.errors)
            .or_else(|| mean_weight(self.other_squares, self.spans - self.errors))
            .unwrap_or(1.0)
    }

    /// Σw²/Σw of the spans that did not err (of the erroring ones when all erred).
    pub fn other_weight(&self) -> f64 {
        mean_weight(self.other_squares, self.spans - self.errors)
            .or_else(|| mean_weight(self.error_squares, self.errors))
            .unwrap_or(1.0)
    }

    /// Σw²/Σw of every span: how many times wider the spread of a statistic
    /// unrelated to sampling is than were every span kept (Kish's design effect in
    /// weighted counts).
    pub fn mean_weight(&self) -> f64 {
        mean_weight(self.error_squares + self.other_squares, self.spans).unwrap_or(1.0)
    }
}

fn mean_weight(squares: u128, sum: u64) -> Option<f64> {
    (sum > 0).then(|| squares as f64 / sum as f64)
}

impl Default for ArmWindow {
    fn default() -> Self {
        Self {
            samples: 0,
            errors: 0,
            weights: Weights::default(),
            latency: LatencySketch::default(),
            groups: Box::new([Group::default(); GROUPS]),
            log_latency_squares: 0,
            grouped_by_unit: false,
            error_exemplars: Vec::new(),
            slowest: None,
        }
    }
}

fn scaled_log(duration_ns: u64) -> i64 {
    ((duration_ns.max(1) as f64).ln() * LOG_SCALE).round() as i64
}

impl ArmWindow {
    pub fn record(&mut self, observation: &Observation) {
        let Observation {
            is_error,
            duration_ns,
            trace_id,
            span_id,
            unit,
            weight,
            ..
        } = *observation;
        let weight = weight.max(1);
        self.samples += 1;
        self.weights.record(weight, is_error);
        let ids = SpanIds { trace_id, span_id };
        if is_error {
            self.errors += 1;
            if self.error_exemplars.len() < MAX_EXEMPLARS {
                self.error_exemplars.push(ids);
            }
        }
        self.keep_slowest(duration_ns, ids);
        self.latency.record_ns_times(duration_ns, u64::from(weight));
        let key = match unit {
            Some(unit) => {
                self.grouped_by_unit = true;
                unit
            }
            None => mix(u64::from_le_bytes(
                trace_id[..8].try_into().expect("eight bytes"),
            )),
        };
        let log = scaled_log(duration_ns);
        let w = u64::from(weight);
        let group = &mut self.groups[(key % GROUPS as u64) as usize];
        group.spans += w;
        group.errors += w * u64::from(is_error);
        group.log_latency += log * i64::from(weight);
        self.log_latency_squares += (log as i128 * log as i128) as u128 * u128::from(weight);
    }

    pub fn merge(&mut self, other: &ArmWindow) {
        self.samples += other.samples;
        self.errors += other.errors;
        self.weights.merge(&other.weights);
        self.latency.merge(&other.latency);
        for (mine, theirs) in self.groups.iter_mut().zip(other.groups.iter()) {
            mine.spans += theirs.spans;
            mine.errors += theirs.errors;
            mine.log_latency += theirs.log_latency;
        }
        self.log_latency_squares += other.log_latency_squares;
        self.grouped_by_unit |= other.grouped_by_unit;
        let room = MAX_EXEMPLARS.saturating_sub(self.error_exemplars.len());
        self.error_exemplars
            .extend(other.error_exemplars.iter().take(room).copied());
        if let Some((duration, ids)) = other.slowest {
            self.keep_slowest(duration, ids);
        }
    }

    /// Keeps the slower span; ties go to the greater IDs, so that windows merged
    /// in any order hold the same one.
    fn keep_slowest(&mut self, duration_ns: u64, ids: SpanIds) {
        let key = |(duration, ids): (u64, SpanIds)| (duration, ids.trace_id, ids.span_id);
        if self
            .slowest
            .is_none_or(|held| key((duration_ns, ids)) > key(held))
        {
            self.slowest = Some((duration_ns, ids));
        }
    }

    /// The error rate of the traffic the spans stand for (errors / samples without
    /// sampling), or `None` with no samples.
    pub fn error_rate(&self) -> Option<f64> {
        (self.weights.spans > 0).then(|| self.weights.errors as f64 / self.weights.spans as f64)
    }

    /// Σ weight × ln(duration in ns)² over the arm's spans.
    pub fn log_latency_square_sum(&self) -> f64 {
        self.log_latency_squares as f64 / (LOG_SCALE * LOG_SCALE)
    }
}

/// The first distinct units of a step that were assigned by the split, with the arm
/// each was seen in first. Bounded: after [`MAX_UNITS`] no unit is added, so the
/// sample stays a prefix of the step's units and the test on it stays sequential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSample {
    /// Sorted unit hashes, the lowest bit replaced by the arm (1 = candidate).
    units: Vec<u64>,
    /// How many of `units` are in the candidate arm, kept so the judge need not count.
    candidates: u64,
    /// Spans that carried a bucketing value, split or not.
    pub spans_with_unit: u64,
    /// Spans that were assigned by the split and carried a bucketing value.
    pub split_spans: u64,
}

impl UnitSample {
    fn record(&mut self, arm: Arm, observation: &Observation) {
        let Some(unit) = observation.unit else {
            return;
        };
        self.spans_with_unit += 1;
        if !observation.split {
            return;
        }
        self.split_spans += 1;
        // Whether an erroring span arrives can depend on its error (a tail sampler
        // keeps every error and a share of the rest), so that the variant failing
        // more would look served to more units: only the others show the split.
        if !observation.is_error {
            self.insert(unit, arm == Arm::Candidate);
        }
    }

    fn insert(&mut self, unit: u64, candidate: bool) {
        let entry = (unit & !1) | u64::from(candidate);
        match self.units.binary_search_by_key(&(unit & !1), |u| u & !1) {
            Ok(_) => {}
            Err(_) if self.units.len() >= MAX_UNITS => {}
            Err(at) => {
                self.units.insert(at, entry);
                self.candidates += u64::from(candidate);
            }
        }
    }

    fn merge(&mut self, other: &UnitSample) {
        self.spans_with_unit += other.spans_with_unit;
        self.split_spans += other.split_spans;
        for &entry in &other.units {
            self.insert(entry & !1, entry & 1 == 1);
        }
    }

    /// Distinct units sampled.
    pub fn units(&self) -> u64 {
        self.units.len() as u64
    }

    /// Distinct units sampled that were in the candidate arm.
    pub fn candidate_units(&self) -> u64 {
        self.candidates
    }
}

/// Both arms of one rollout during one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub baseline: ArmWindow,
    pub candidate: ArmWindow,
    pub units: UnitSample,
}

impl Window {
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmWindow {
        match arm {
            Arm::Baseline => &mut self.baseline,
            Arm::Candidate => &mut self.candidate,
        }
    }

    pub fn record(&mut self, arm: Arm, observation: &Observation) {
        self.arm_mut(arm).record(observation);
        self.units.record(arm, observation);
    }

    pub fn merge(&mut self, other: &Window) {
        self.baseline.merge(&other.baseline);
        self.candidate.merge(&other.candidate);
        self.units.merge(&other.units);
    }

    /// Spans in both arms.
    pub fn samples(&self) -> u64 {
        self.baseline.samples + self.candidate.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(i: u64, unit: Option<u64>, split: bool) -> Observation {
        Observation {
            is_error: i.is_multiple_of(7),
            duration_ns: 1_000_000 + i * 1_337,
            trace_id: (i as u128 * 0x9e37_79b9_7f4a_7c15).to_le_bytes(),
            span_id: [5; 8],
            unit,
            split,
            weight: 1,
        }
    }

    #[test]
    fn the_slowest_span_is_the_same_whatever_the_order_of_merges() {
        let span = |duration_ms: u64, id: u8| Observation {
            span_id: [id; 8],
            ..Observation::span(false, duration_ms * 1_000_000, [id; 16])
        };
        // Two spans tie for the slowest.
        let spans = [span(40, 1), span(90, 2), span(90, 3), span(10, 4)];
        let mut whole = ArmWindow::default();
        spans.iter().for_each(|s| whole.record(s));
        let (mut first, mut second) = (ArmWindow::default(), ArmWindow::default());
        spans[..2].iter().for_each(|s| first.record(s));
        spans[2..].iter().for_each(|s| second.record(s));
        let mut one_way = first.clone();
        one_way.merge(&second);
        let mut other_way = second.clone();
        other_way.merge(&first);
        let expected = Some((
            90_000_000,
            SpanIds {
                trace_id: [3; 16],
                span_id: [3; 8],
            },
        ));
        assert_eq!(whole.slowest, expected);
        assert_eq!(one_way.slowest, expected);
        assert_eq!(other_way.slowest, expected);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut parts = [Window::default(), Window::default(), Window::default()];
        let mut whole = Window::default();
        for i in 0..5_000u64 {
            let arm = if i % 5 == 0 {
                Arm::Candidate
            } else {
                Arm::Baseline
            };
            let obs = Observation {
                // Sampled spans too, some standing for ten.
                weight: if i % 6 == 1 { 10 } else { 1 },
                ..observation(
                    i,
                    (i % 3 != 0).then(|| unit_hash(&format!("u{}", i % 700))),
                    i % 4 != 0,
                )
            };
            parts[(i % 3) as usize].record(arm, &obs);
            whole.record(arm, &obs);
        }
        let mut merged = Window::default();
        for part in parts.iter().rev() {
            merged.merge(part);
        }
        assert_eq!(merged.baseline.weights, whole.baseline.weights);
        assert_eq!(merged.candidate.weights, whole.candidate.weights);
        assert!(whole.baseline.weights.sampled());
        assert_eq!(merged.candidate.latency, whole.candidate.latency);
        assert_eq!(merged.baseline.groups, whole.baseline.groups);
        assert_eq!(merged.candidate.groups, whole.candidate.groups);
        assert_eq!(
            merged.candidate.log_latency_square_sum(),
            whole.candidate.log_latency_square_sum()
        );
        assert_eq!(merged.units.units(), whole.units.units());
        assert_eq!(
            merged.units.candidate_units(),
            whole.units.candidate_units()
        );
        assert_eq!(merged.units.split_spans, whole.units.split_spans);
        assert_eq!(merged.samples(), whole.samples());
    }

    #[test]
    fn groups_partition_the_spans_and_keep_a_unit_together() {
        let mut arm = ArmWindow::default();
        for i in 0..1_000u64 {
            arm.record(&observation(i, Some(unit_hash("one account")), true));
        }
        let used: Vec<_> = arm.groups.iter().filter(|g| g.spans > 0).collect();
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].spans, 1_000);
        assert_eq!(used[0].errors, arm.errors);
        assert!(arm.grouped_by_unit);

        let mut by_trace = ArmWindow::default();
        for i in 0..1_000u64 {
            by_trace.record(&observation(i, None, false));
        }
        let used = by_trace.groups.iter().filter(|g| g.spans > 0).count();
        assert!(used > GROUPS / 2, "{used}");
        assert_eq!(by_trace.groups.iter().map(|g| g.spans).sum::<u64>(), 1_000);
        assert!(!by_trace.grouped_by_unit);
    }

    #[test]
    fn units_are_counted_once_only_when_split_and_stop_at_the_cap() {
        let mut window = Window::default();
        for i in 0..100u64 {
            let unit = Some(unit_hash(&format!("user-{}", i % 10)));
            let arm = if i % 10 < 3 {
                Arm::Candidate
            } else {
                Arm::Baseline
            };
            window.record(arm, &observation(i, unit, true));
            window.record(arm, &observation(i, Some(unit_hash("targeted")), false));
            window.record(arm, &observation(i, None, true));
        }
        assert_eq!(window.units.units(), 10);
        assert_eq!(window.units.candidate_units(), 3);
        assert_eq!(window.units.split_spans, 100);
        assert_eq!(window.units.spans_with_unit, 200);

        let mut full = Window::default();
        for i in 0..(MAX_UNITS as u64 + 500) {
            full.record(
                Arm::Baseline,
                &observation(i, Some(unit_hash(&i.to_string())), true),
            );
        }
        assert_eq!(full.units.units(), MAX_UNITS as u64);
    }

    #[test]
    fn units_of_erroring_spans_do_not_show_the_split() {
        let mut window = Window::default();
        let failing = Observation {
            unit: Some(unit_hash("acct-1")),
            split: true,
            ..Observation::span(true, 1_000, [1; 16])
        };
        window.record(Arm::Candidate, &failing);
        assert_eq!(window.units.units(), 0);
        assert_eq!(window.units.split_spans, 1);
        window.record(
            Arm::Candidate,
            &Observation {
                is_error: false,
                ..failing
            },
        );
        assert_eq!(window.units.units(), 1);
    }

    #[test]
    fn unit_hash_spreads_near_identical_values() {
        let groups: std::collections::HashSet<u64> = (0..200)
            .map(|i| unit_hash(&format!("acct-{i}")) % GROUPS as u64)
            .collect();
        assert!(groups.len() > GROUPS * 3 / 4, "{}", groups.len());
    }
}
