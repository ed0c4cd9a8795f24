//! A mergeable latency sketch with bounded relative error (log-spaced buckets, as
//! DDSketch does it): quantiles are within ±1% of the true value, whatever the
//! distribution, and two sketches merge by adding their buckets.

/// Relative accuracy of every quantile the sketch returns.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Durations at or below this many nanoseconds share the lowest bucket.
const MIN_TRACKED_NS: f64 = 1_000.0;

/// Latency distribution of a set of spans, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySketch {
    /// counts[i] = spans whose duration falls in bucket `offset + i`.
    counts: Vec<u64>,
    offset: i32,
    /// Spans at or below `MIN_TRACKED_NS`.
    low_count: u64,
    total: u64,
    max_ns: u64,
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn bucket_of(duration_ns: f64) -> i32 {
    (duration_ns.ln() / gamma().ln()).ceil() as i32
}

/// Value reported for a bucket: the point whose relative error to both edges is equal.
fn bucket_value(index: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

impl LatencySketch {
    /// Adds one span's duration.
    pub fn record_ns(&mut self, duration_ns: u64) {
        self.total += 1;
        self.max_ns = self.max_ns.max(duration_ns);
        let value = duration_ns as f64;
        if value <= MIN_TRACKED_NS {
            self.low_count += 1;
            return;
        }
        let index = bucket_of(value);
        self.add_to_bucket(index, 1);
    }

    fn add_to_bucket(&mut self, index: i32, count: u64) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        } else if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        } else if index >= self.offset + self.counts.len() as i32 {
            self.counts.resize((index - self.offset) as usize + 1, 0);
        }
        self.counts[(index - self.offset) as usize] += count;
    }

    /// Adds every span of `other`.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.total += other.total;
        self.low_count += other.low_count;
        self.max_ns = self.max_ns.max(other.max_ns);
        for (i, &count) in other.counts.iter().enumerate() {
            if count > 0 {
                self.add_to_bucket(other.offset + i as i32, count);
            }
        }
    }

    /// Spans recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0–1) in milliseconds, or `None` when the sketch is empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_ns(q).map(|ns| ns / 1e6)
    }

    /// The `q` quantile (0–1) in nanoseconds, or `None` when the sketch is empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // Rank of the wanted span, 0-based, as the lower nearest rank.
        let rank = (q * (self.total - 1) as f64).floor() as u64;
        if rank < self.low_count {
            return Some(MIN_TRACKED_NS.min(self.max_ns as f64));
        }
        let mut seen = self.low_count;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                let value = bucket_value(self.offset + i as i32);
                return Some(value.min(self.max_ns as f64));
            }
        }
        Some(self.max_ns as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sketch_has_no_quantiles() {
        assert_eq!(LatencySketch::default().quantile_ms(0.99), None);
    }

    #[test]
    fn quantiles_are_within_relative_accuracy() {
        let mut sketch = LatencySketch::default();
        let mut exact: Vec<u64> = (1..=10_000u64).map(|i| i * i * 37 + 2_000).collect();
        for &d in &exact {
            sketch.record_ns(d);
        }
        exact.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99] {
            let truth = exact[(q * (exact.len() - 1) as f64).floor() as usize] as f64;
            let got = sketch.quantile_ns(q).unwrap();
            assert!(
                (got - truth).abs() <= truth * RELATIVE_ACCURACY * 1.0001,
                "q{q}: got {got}, truth {truth}"
            );
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = LatencySketch::default();
        let mut b = LatencySketch::default();
        let mut both = LatencySketch::default();
        for i in 0..5_000u64 {
            let d = 500 + i * 7_919 % 3_000_000;
            if i % 3 == 0 {
                a.record_ns(d)
            } else {
                b.record_ns(d)
            }
            both.record_ns(d);
        }
        a.merge(&b);
        assert_eq!(a.count(), both.count());
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(a.quantile_ns(q), both.quantile_ns(q));
        }
    }
}
