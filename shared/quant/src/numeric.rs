//! The f32 arithmetic of the upstream quantizers, reproduced operation by operation so our integers
//! and scales equal the ones the Python reference computes for the same weights (REFERENCE.md §8
//! item 3): torch's linear-interpolation quantile, round-half-to-even, fp16 scales.

use half::f16;

/// `torch.quantile(x, q)` (linear interpolation) of ascending-sorted values, as torch computes it on
/// a CPU: `q` is cast to f32 (torch wraps it in a tensor of the input dtype), the rank
/// `q·(n−1)` is an f32 product, the two neighbours are `trunc(rank)` and `ceil(rank)`, and the
/// interpolation is torch's `lerp`: one fused multiply-add from the nearer end.
pub fn quantile_sorted(sorted: &[f32], q: f64) -> f32 {
    let n = sorted.len();
    assert!(n > 0, "quantile of an empty slice");
    let rank = (q as f32) * ((n - 1) as f32);
    let below = rank as usize; // trunc: rank ≥ 0
    let above = (rank.ceil() as usize).min(n - 1);
    let weight = rank - below as f32;
    lerp(sorted[below], sorted[above], weight)
}

/// torch's `lerp(start, end, weight)`: `start + w·(end − start)` for |w| < 0.5, else
/// `end − (1 − w)·(end − start)`, each evaluated with a single rounding (a fused multiply-add, as
/// torch's vectorised kernel does).
pub fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight.abs() < 0.5 {
        weight.mul_add(diff, start)
    } else {
        (weight - 1.0).mul_add(diff, end)
    }
}

/// |x| of each value, sorted ascending (the input of the per-row percentile clips).
pub fn sorted_abs(values: &[f32]) -> Vec<f32> {
    let mut a: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    a.sort_unstable_by(f32::total_cmp);
    a
}

/// torch.round: to nearest, ties to even.
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

pub use pgolf_evaluator::container::max_level;

/// `clamp(round(x / s), -r, r)`, the quantization step shared by every scheme.
pub fn quantize_value(x: f32, s: f32, r: i32) -> i8 {
    let r = r as f32;
    round_half_even(x / s).clamp(-r, r) as i8
}

/// A scale stored as fp16, as torch's `.to(torch.float16)` rounds it (nearest, ties to even).
pub fn fp16(x: f32) -> f16 {
    f16::from_f32(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_linearly_between_order_statistics() {
        let s = [1.0f32, 2.0, 3.0, 5.0];
        // rank = 0.5·3 = 1.5 → halfway between 2 and 3.
        assert_eq!(quantile_sorted(&s, 0.5), 2.5);
        // rank = 0.9·3 = 2.7 (f32: 2.7000000476…) → 3 + 0.7·2 = 4.4 (one rounding from the far end).
        let rank = 0.9f32 * 3.0;
        let w = rank - 2.0;
        assert_eq!(quantile_sorted(&s, 0.9), (w - 1.0).mul_add(2.0, 5.0));
        assert!((quantile_sorted(&s, 0.9) - 4.4).abs() < 1e-6);
        assert_eq!(quantile_sorted(&s, 1.0), 5.0);
        assert_eq!(quantile_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_sorted(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn upstream_int8_percentile_rank_on_512_columns() {
        // q = 0.9999984 as f32, times 511: rank 510.99918, so the clip sits 0.08% of the way
        // below the row maximum, towards the second largest |w|.
        let mut s: Vec<f32> = (0..512).map(|i| i as f32).collect();
        s[511] = 1000.0;
        let c = quantile_sorted(&s, 99.99984 / 100.0);
        let rank = (0.9999984f64 as f32) * 511.0;
        assert_eq!(rank, 510.999_18);
        assert_eq!(c, (rank - 510.0 - 1.0).mul_add(1000.0 - 510.0, 1000.0));
        assert!(c < 1000.0 && c > 999.5);
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(-3.5), -4.0);
        assert_eq!(quantize_value(200.0, 1.0, 127), 127);
        assert_eq!(quantize_value(-200.0, 1.0, 31), -31);
        assert_eq!(max_level(8), 127);
        assert_eq!(max_level(6), 31);
        assert_eq!(max_level(5), 15);
        assert_eq!(max_level(7), 63);
    }
}
