//! Magnitude pruning before quantization (issue 12; the "11L MLP3x int6" submission zeroes the
//! smallest weights of its large matrices before int6 GPTQ-lite): per matrix, the
//! `k = round(fraction · numel)` entries of smallest |w| become exactly 0, so they quantize to the
//! integer 0 and dequantize to 0.
//!
//! Ties are broken by position: among equal |w| the entry earlier in row-major order is pruned
//! first. So k is exact (a threshold rule `|w| < quantile` would prune fewer or more where values
//! tie, e.g. at the many exact zeros of a dead row) and the set depends only on the values.

/// `round(fraction · n)`, at most n. Rounding (not flooring) keeps a fraction that f64 cannot hold
/// exactly from losing one entry: 0.29 · 100 = 28.999999999999996.
pub fn prune_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).round() as usize).min(n)
}

/// Zeroes the [`prune_count`] entries of smallest |w| in `data`; returns which were pruned
/// (`true` = pruned, same layout as `data`).
pub fn prune_smallest(data: &mut [f32], fraction: f64) -> Vec<bool> {
    let k = prune_count(data.len(), fraction);
    let mut pruned = vec![false; data.len()];
    if k == 0 {
        return pruned;
    }
    // A strict total order (|w|, then position): the k smallest are one well-defined set, which
    // a partial selection finds in O(n).
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        data[a].abs().total_cmp(&data[b].abs()).then(a.cmp(&b))
    });
    for &i in &order[..k] {
        pruned[i] = true;
        data[i] = 0.0;
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_k_smallest_magnitudes_are_zeroed_and_ties_go_to_the_earlier_entry() {
        // 3 × 4, row-major. |w| sorted: 0 (idx 5), 0.1 (idx 2, 7, 9: a three-way tie), 0.2 (idx 0),
        // 0.3 (idx 10), then the rest.
        let w = [
            0.2, -0.9, 0.1, 0.5, //
            0.7, 0.0, -0.6, -0.1, //
            0.8, 0.1, -0.3, 0.4,
        ];
        let cases: [(f64, &[usize]); 6] = [
            (0.0, &[]),
            (0.05, &[5]),       // round(0.6) = 1
            (0.2, &[2, 5]),     // round(2.4) = 2: of the tie at 0.1, index 2 first
            (0.25, &[2, 5, 7]), // 3
            (1.0 / 3.0, &[2, 5, 7, 9]),
            (0.5, &[0, 2, 5, 7, 9, 10]),
        ];
        for (fraction, expect) in cases {
            let mut data = w;
            let pruned = prune_smallest(&mut data, fraction);
            let got: Vec<usize> = (0..12).filter(|i| pruned[*i]).collect();
            assert_eq!(got, expect, "fraction {fraction}");
            assert_eq!(got.len(), prune_count(12, fraction));
            for i in 0..12 {
                let want = if pruned[i] { 0.0 } else { w[i] };
                assert_eq!(
                    data[i].to_bits(),
                    want.to_bits(),
                    "fraction {fraction} entry {i}"
                );
            }
        }
    }

    #[test]
    fn counts_round_and_stay_within_the_matrix() {
        assert_eq!(prune_count(100, 0.29), 29);
        assert_eq!(prune_count(1000, 0.05), 50);
        assert_eq!(prune_count(10, 0.04), 0);
        assert_eq!(prune_count(10, 0.05), 1);
        assert_eq!(prune_count(3, 1.0), 3);
        assert_eq!(prune_count(0, 0.5), 0);
        // An all-zero matrix: still exactly k, the first k positions.
        let mut z = [0.0f32; 8];
        let p = prune_smallest(&mut z, 0.25);
        assert_eq!(p, [true, true, false, false, false, false, false, false]);
    }
}
