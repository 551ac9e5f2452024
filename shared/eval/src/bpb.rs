//! Bits per byte (REFERENCE.md §2.3): `BPB = ΣNLL / (ln 2 · Σbytes)`, every sum in f64.
//!
//! Sums are kept as totals (never running means), so the result does not depend on how the
//! scored set was split into batches, windows or chunks.

use serde::Serialize;
use std::f64::consts::LN_2;

/// Sums over a set of scored targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BpbSums {
    /// Σ −ln p(target), nats.
    pub nll: f64,
    /// Number of scored targets.
    pub targets: u64,
    /// Σ bytes charged by the tokenizer lookup tables (§2.2), per target.
    pub lut_bytes: u64,
}

impl BpbSums {
    pub fn add(&mut self, nll: f64, lut_bytes: u32) {
        self.nll += nll;
        self.targets += 1;
        self.lut_bytes += lut_bytes as u64;
    }

    pub fn merge(&mut self, other: &BpbSums) {
        self.nll += other.nll;
        self.targets += other.targets;
        self.lut_bytes += other.lut_bytes;
    }

    /// Mean NLL per target, nats (upstream `val_loss`).
    pub fn val_loss(&self) -> f64 {
        self.nll / self.targets as f64
    }

    /// Total information, bits.
    pub fn bits(&self) -> f64 {
        self.nll / LN_2
    }

    /// Bits per byte against the lookup-table byte count.
    pub fn bpb_lut(&self) -> f64 {
        bits_per_byte(self.nll, self.lut_bytes)
    }
}

/// The formula is the counted evaluator's.
pub use pgolf_evaluator::bits_per_byte;

/// Relative disagreement of two byte counts, `|a − b| / b`.
pub fn relative_difference(a: u64, b: u64) -> f64 {
    if b == 0 {
        return if a == 0 { 0.0 } else { f64::INFINITY };
    }
    (a as f64 - b as f64).abs() / b as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpb_is_nats_over_ln2_bytes_independent_of_batching() {
        let nlls = [0.5f64, 1.25, 2.0, 0.125, 3.0];
        let bytes = [1u32, 0, 4, 2, 3];
        let mut whole = BpbSums::default();
        for (n, b) in nlls.iter().zip(bytes) {
            whole.add(*n, b);
        }
        let mut split = BpbSums::default();
        let (mut a, mut b) = (BpbSums::default(), BpbSums::default());
        for i in 0..5 {
            if i < 2 {
                a.add(nlls[i], bytes[i])
            } else {
                b.add(nlls[i], bytes[i])
            }
        }
        split.merge(&a);
        split.merge(&b);
        assert_eq!(whole, split);
        assert_eq!(whole.targets, 5);
        assert_eq!(whole.lut_bytes, 10);
        assert!((whole.bpb_lut() - 6.875 / (LN_2 * 10.0)).abs() < 1e-15);
        assert!((whole.val_loss() - 1.375).abs() < 1e-15);
        assert!(bits_per_byte(1.0, 0).is_nan());
    }

    #[test]
    fn relative_difference_is_symmetric_in_magnitude() {
        assert_eq!(relative_difference(1001, 1000), 0.001);
        assert_eq!(relative_difference(999, 1000), 0.001);
        assert_eq!(relative_difference(0, 0), 0.0);
        assert!(relative_difference(1, 0).is_infinite());
    }
}
