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
        self.record_ns_times(duration_ns, 1);
    }

    /// Adds a duration `count` times: a sampled span counted by its weight.
    pub fn record_ns_times(&mut self, duration_ns: u64, count: u64) {
        self.total += count;
        self.max_ns = self.max_ns.max(duration_ns);
        let value = duration_ns as f64;
        if value <= MIN_TRACKED_NS {
            self.low_count += count;
            return;
        }
        let index = bucket_of(value);
        self.add_to_bucket(index, count);
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

    /// Spans certainly longer than `threshold_ns`: those in buckets whose lower edge
    /// is at or above it. Never more than the true count, so a test on it is as
    /// conservative as the sketch is coarse (±1%).
    pub fn count_above_ns(&self, threshold_ns: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        if threshold_ns < 0.0 {
            return self.total;
        }
        if threshold_ns < MIN_TRACKED_NS {
            // The lowest bucket's spans may lie anywhere below MIN_TRACKED_NS.
            return self.total - self.low_count;
        }
        // Bucket i holds (γ^(i−1), γ^i]; it is certainly above when γ^(i−1) ≥ threshold.
        let first = (threshold_ns.ln() / gamma().ln()).ceil() as i64 + 1;
        let start = (first - i64::from(self.offset)).clamp(0, self.counts.len() as i64) as usize;
        self.counts[start..].iter().sum()
    }

    /// The largest positive threshold `t` (ns) with `holds(count_above_ns(t))`, for
    /// a `holds` true of large counts and false of small ones, found in one walk
    /// down the buckets: infinity when it holds of no span at all, `None` when it
    /// holds of no count a positive threshold gives.
    pub fn largest_threshold_ns(&self, holds: impl Fn(u64) -> bool) -> Option<f64> {
        if holds(0) {
            return Some(f64::INFINITY);
        }
        let g = gamma();
        let mut above = 0;
        for (i, &count) in self.counts.iter().enumerate().rev() {
            above += count;
            if count > 0 && holds(above) {
                // A bucket counts as above every threshold up to its lower edge.
                let index = self.offset + i as i32;
                return Some(g.powi(index - 1).max(MIN_TRACKED_NS));
            }
        }
        // Below MIN_TRACKED_NS every tracked span counts.
        (self.total > self.low_count && holds(above)).then_some(MIN_TRACKED_NS)
    }

    /// Bounds on the `rank`-th shortest span (1-based), in nanoseconds: the edges of
    /// the bucket that holds it. `None` when the rank is outside 1..=count.
    pub fn rank_bounds_ns(&self, rank: u64) -> Option<(f64, f64)> {
        if rank == 0 || rank > self.total {
            return None;
        }
        if rank <= self.low_count {
            return Some((0.0, MIN_TRACKED_NS));
        }
        let g = gamma();
        Some(match self.bucket_holding(rank - 1) {
            Some(i) => {
                let index = self.offset + i as i32;
                // The longest span is in the last bucket, so it caps that bucket's edge.
                let upper = g.powi(index).min(self.max_ns as f64);
                (g.powi(index - 1), upper)
            }
            None => (self.max_ns as f64, self.max_ns as f64),
        })
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
        Some(match self.bucket_holding(rank) {
            Some(i) => bucket_value(self.offset + i as i32).min(self.max_ns as f64),
            None => self.max_ns as f64,
        })
    }

    /// The quantiles `qs` (ascending, 0–1) in milliseconds, in one walk up the
    /// buckets; each equals [`LatencySketch::quantile_ms`] of it.
    pub fn quantiles_ms<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        debug_assert!(qs.is_sorted(), "quantiles are asked in ascending order");
        let mut quantiles = [None; N];
        if self.total == 0 {
            return quantiles;
        }
        let max = self.max_ns as f64;
        // `seen` counts the spans below bucket `bucket`.
        let (mut bucket, mut seen) = (0, self.low_count);
        for (quantile, q) in quantiles.iter_mut().zip(qs) {
            let rank = (q.clamp(0.0, 1.0) * (self.total - 1) as f64).floor() as u64;
            let ns = if rank < self.low_count {
                MIN_TRACKED_NS.min(max)
            } else {
                while bucket < self.counts.len() && seen + self.counts[bucket] <= rank {
                    seen += self.counts[bucket];
                    bucket += 1;
                }
                if bucket < self.counts.len() {
                    bucket_value(self.offset + bucket as i32).min(max)
                } else {
                    max
                }
            };
            *quantile = Some(ns / 1e6);
        }
        quantiles
    }

    /// Index in `counts` of the bucket holding the span of 0-based `rank` (at or
    /// above the low count), walking from the nearer end: the judge mostly asks
    /// for high quantiles.
    fn bucket_holding(&self, rank: u64) -> Option<usize> {
        if rank >= self.total / 2 {
            let mut above = 0;
            for (i, &count) in self.counts.iter().enumerate().rev() {
                if self.total - above - count <= rank {
                    return Some(i);
                }
                above += count;
            }
        } else {
            let mut seen = self.low_count;
            for (i, &count) in self.counts.iter().enumerate() {
                seen += count;
                if seen > rank {
                    return Some(i);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_one_walk_equal_each_asked_alone() {
        let mut sketch = LatencySketch::default();
        assert_eq!(sketch.quantiles_ms([0.5, 0.99]), [None, None]);
        for i in 0..5_000u64 {
            // Gaps between clusters leave empty buckets, and a few spans fall
            // under the tracked floor.
            let ns = match i % 5 {
                0 => 500,
                1 | 2 => 2_000_000 + i * 17,
                _ => 90_000_000 + i * 1_301,
            };
            sketch.record_ns(ns);
        }
        let qs = [0.0, 0.1, 0.2, 0.5, 0.6, 0.9, 0.95, 0.99, 1.0];
        let together = sketch.quantiles_ms(qs);
        for (q, quantile) in qs.into_iter().zip(together) {
            assert_eq!(quantile, sketch.quantile_ms(q), "q = {q}");
        }
    }

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
    fn counts_above_never_exceed_the_truth_and_miss_only_one_bucket() {
        let mut sketch = LatencySketch::default();
        let values: Vec<u64> = (1..=20_000u64).map(|i| i * 997 + 500).collect();
        for &v in &values {
            sketch.record_ns(v);
        }
        for threshold in [0.0, 700.0, 5_000.0, 1e6, 7.5e6, 1.9e7, 3e7] {
            let truth = values.iter().filter(|&&v| v as f64 > threshold).count() as u64;
            let got = sketch.count_above_ns(threshold);
            assert!(got <= truth, "{threshold}: {got} > {truth}");
            // At most the spans within one bucket (2% wide) above the threshold are missed.
            let edge = threshold * (1.0 + 2.0 * RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
            let within = values
                .iter()
                .filter(|&&v| v as f64 > threshold && (v as f64) <= edge)
                .count() as u64;
            assert!(truth - got <= within, "{threshold}: missed {}", truth - got);
        }
    }

    #[test]
    fn the_largest_threshold_is_where_the_count_stops_holding() {
        let mut sketch = LatencySketch::default();
        (1..=1_000u64).for_each(|i| sketch.record_ns(i * 10_000));
        for wanted in [0, 1, 5, 10, 250, 990, 1_000, 1_001] {
            let holds = |count: u64| count >= wanted;
            match sketch.largest_threshold_ns(holds) {
                None => assert!(!holds(sketch.count_above_ns(1.0)), "{wanted}"),
                Some(t) if t.is_infinite() => assert_eq!(wanted, 0),
                Some(t) => {
                    assert!(holds(sketch.count_above_ns(t)), "{wanted} at {t}");
                    assert!(
                        !holds(sketch.count_above_ns(t * 1.000_001)),
                        "{wanted} past {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn rank_bounds_hold_the_ranked_value() {
        let mut sketch = LatencySketch::default();
        let mut values: Vec<u64> = (1..=5_000u64)
            .map(|i| (i * i) % 9_973 * 1_001 + 10)
            .collect();
        for &v in &values {
            sketch.record_ns(v);
        }
        values.sort_unstable();
        for rank in [1, 2, 100, 2_500, 4_950, 4_999, 5_000] {
            let (low, high) = sketch.rank_bounds_ns(rank).unwrap();
            let truth = values[rank as usize - 1] as f64;
            assert!(
                low <= truth && truth <= high,
                "rank {rank}: {truth} not in [{low}, {high}]"
            );
        }
        assert_eq!(sketch.rank_bounds_ns(0), None);
        assert_eq!(sketch.rank_bounds_ns(5_001), None);
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
