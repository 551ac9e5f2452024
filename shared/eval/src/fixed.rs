//! The fixed-model modes, flat and sliding, as every evaluator that scores a network without
//! adapting it builds them (ttt-eval, portable-eval): the schedule, proved single-pass before any
//! model runs, and the byte denominator it is divided by.

use anyhow::{bail, Result};

use crate::report::Denominator;
use crate::schedule::{check_single_pass, flat, sliding, Window};

pub struct FixedSchedule {
    pub windows: Vec<Window>,
    /// Targets `1..=targets` are scored.
    pub targets: usize,
    pub denominator: Denominator,
}

/// Flat windows of `seq_len` (`stride` None) or sliding ones every `stride` over `n_targets`.
/// Upstream-compatible flat scoring drops the ragged tail (REFERENCE.md §1.4) and divides by
/// lookup-table bytes; ours scores the tail with a short last window and divides by raw bytes.
pub fn fixed_schedule(
    n_targets: usize,
    seq_len: usize,
    stride: Option<usize>,
    upstream_compatible: bool,
) -> Result<FixedSchedule> {
    let (targets, denominator) = if upstream_compatible {
        ((n_targets / seq_len) * seq_len, Denominator::UpstreamLut)
    } else {
        (n_targets, Denominator::Raw)
    };
    if targets == 0 {
        bail!("the val stream ({n_targets} targets) is shorter than one {seq_len}-token window");
    }
    let windows = match stride {
        None => flat(targets, seq_len)?,
        Some(s) => sliding(targets, seq_len, s)?,
    };
    check_single_pass(&windows, 1..targets + 1)?;
    Ok(FixedSchedule {
        windows,
        targets,
        denominator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_compatible_flat_drops_the_tail_and_sliding_keeps_it() {
        let up = fixed_schedule(100, 16, None, true).unwrap();
        assert_eq!((up.targets, up.windows.len()), (96, 6));
        assert_eq!(up.denominator, Denominator::UpstreamLut);
        let ours = fixed_schedule(100, 16, Some(4), false).unwrap();
        assert_eq!(ours.targets, 100);
        assert_eq!(ours.denominator, Denominator::Raw);
        let err = fixed_schedule(10, 16, None, true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("shorter than one 16-token window"), "{err}");
    }
}
