//! What a sampled span stands for: OpenTelemetry's consistent-probability sampling
//! records the rejection threshold it applied in the span's `tracestate`
//! (`ot=th:<hex>`), so a span kept at 10% counts as ten. Weighing spans by these
//! adjusted counts judges a pipeline that keeps every error and a tenth of the rest
//! on the rates of the traffic, not on rates inflated tenfold.

/// Thresholds are 56-bit: a span is kept when its trace's 56 random bits are at or
/// above the threshold, so it was kept with probability `(2^56 - th) / 2^56`.
const THRESHOLD_BITS: u32 = 56;

/// The largest adjusted count a span is given (a sampling probability of 1/65,536):
/// rarer sampling is judged as if it were this, so one span cannot outweigh a window
/// and sums of squared weights stay far from overflowing.
pub const MAX_ADJUSTED_COUNT: u32 = 1 << 16;

/// The rejection threshold of a W3C `tracestate` value, when its `ot` entry records
/// a valid one (1 to 14 hex digits, trailing zeros omitted).
pub fn threshold(tracestate: &str) -> Option<u64> {
    let ot = tracestate
        .split(',')
        .find_map(|member| member.trim().strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|field| field.strip_prefix("th:"))?;
    if th.is_empty()
        || th.len() > 14
        || !th
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let digits = u64::from_str_radix(th, 16).ok()?;
    Some(digits << (4 * (14 - th.len())))
}

/// How many spans a span kept at rejection `threshold` stands for: `2^56 / (2^56 -
/// threshold)`, at most [`MAX_ADJUSTED_COUNT`].
pub fn adjusted_count(threshold: u64) -> f64 {
    let whole = (1u64 << THRESHOLD_BITS) as f64;
    let kept = whole - threshold.min((1u64 << THRESHOLD_BITS) - 1) as f64;
    (whole / kept).min(f64::from(MAX_ADJUSTED_COUNT))
}

/// The threshold that keeps `probability` of the traces (0 < probability ≤ 1), as a
/// sampler writes it.
pub fn threshold_of_probability(probability: f64) -> u64 {
    let whole = (1u64 << THRESHOLD_BITS) as f64;
    ((1.0 - probability.clamp(0.0, 1.0)) * whole).round() as u64 & ((1u64 << THRESHOLD_BITS) - 1)
}

/// The whole number of spans a sampled span counts as in a window: its adjusted
/// count rounded down or up at random, so that the expected weight is the adjusted
/// count and windows stay integer counts that merge exactly. The draw comes from the
/// trace ID (hashed, so it is independent of the bits the sampler compared), so
/// every replica and every replay weighs a span alike.
pub fn weight(tracestate: &str, trace_id: &[u8; 16]) -> u32 {
    threshold(tracestate).map_or(1, |th| weight_of_threshold(th, trace_id))
}

/// [`weight`] of a span kept at rejection `threshold`.
pub fn weight_of_threshold(threshold: u64, trace_id: &[u8; 16]) -> u32 {
    if threshold == 0 {
        return 1;
    }
    round_at_random(adjusted_count(threshold), trace_id)
}

/// Whether a consistent-probability sampler at rejection `threshold` keeps the
/// trace: its randomness, the trace ID's last 56 bits (W3C trace IDs are random
/// there), is at or above the threshold.
pub fn keeps(threshold: u64, trace_id: &[u8; 16]) -> bool {
    let mut randomness = [0u8; 8];
    randomness[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(randomness) >= threshold
}

fn round_at_random(adjusted: f64, trace_id: &[u8; 16]) -> u32 {
    let floor = adjusted.floor();
    let fraction = adjusted - floor;
    // Thresholds of 1/k probabilities land a hair off k; that is not a fraction.
    if fraction < 1e-9 {
        return floor as u32;
    }
    if fraction > 1.0 - 1e-9 {
        return floor as u32 + 1;
    }
    let bits = u64::from_le_bytes(trace_id[..8].try_into().expect("eight bytes"))
        ^ u64::from_le_bytes(trace_id[8..].try_into().expect("eight bytes")).rotate_left(29);
    let uniform = (super::window::mix(bits) >> 11) as f64 / (1u64 << 53) as f64;
    floor as u32 + u32::from(uniform < fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_read_from_the_ot_entry_only() {
        assert_eq!(threshold("ot=th:0"), Some(0));
        assert_eq!(threshold("ot=th:8"), Some(1 << 55));
        assert_eq!(threshold("vendor=x,ot=rv:1234;th:c"), Some(0xc << 52));
        assert_eq!(
            threshold(" ot=th:fffffffffffffe , b=2"),
            Some(0xff_ffff_ffff_fffe)
        );
        assert_eq!(threshold("other=th:8"), None);
        assert_eq!(threshold("ot=rv:00000000000001"), None);
        assert_eq!(threshold("ot=th:"), None);
        assert_eq!(threshold("ot=th:C"), None, "upper case is not the spec's");
        assert_eq!(threshold("ot=th:123456789abcdef"), None, "15 digits");
        assert_eq!(threshold("ot=th:xyz"), None);
        assert_eq!(threshold(""), None);
    }

    #[test]
    fn adjusted_counts_are_the_inverse_probabilities() {
        assert_eq!(adjusted_count(0), 1.0);
        assert_eq!(adjusted_count(threshold("ot=th:8").unwrap()), 2.0);
        assert_eq!(adjusted_count(threshold("ot=th:c").unwrap()), 4.0);
        let tenth = adjusted_count(threshold_of_probability(0.1));
        assert!((tenth - 10.0).abs() < 1e-9, "{tenth}");
        assert_eq!(
            adjusted_count((1 << 56) - 1),
            f64::from(MAX_ADJUSTED_COUNT),
            "capped"
        );
    }

    #[test]
    fn weights_round_at_random_to_their_adjusted_count_on_average() {
        let ten = format!("ot=th:{:014x}", threshold_of_probability(0.1));
        assert_eq!(weight(&ten, &[7; 16]), 10);
        assert_eq!(weight("ot=th:0", &[7; 16]), 1);
        assert_eq!(weight("", &[7; 16]), 1);
        let third = format!("ot=th:{:014x}", threshold_of_probability(0.3));
        let n = 30_000u64;
        let total: u64 = (0..n)
            .map(|i| {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&i.to_le_bytes());
                u64::from(weight(&third, &trace_id))
            })
            .sum();
        let mean = total as f64 / n as f64;
        assert!((mean - 1.0 / 0.3).abs() < 0.02, "{mean}");
    }
}
