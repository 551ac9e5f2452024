//! The ranks an evaluation pass is shared by (`--nproc N` or torchrun). Each rank scores a
//! contiguous share of the windows into a ledger of its own; the f64 sums (the total, every
//! document's, the normalization probes) are then summed over the ranks and must cover every
//! target. A document cut by a share boundary is summed from two partial sums, so the BPB can
//! differ from one rank's in the last bits of an f64 (the order of the additions), never by a
//! target. The collective itself is the stage's (`torch::RankPeers`); tests use threads.

use anyhow::{bail, Result};
use std::ops::Range;

use crate::bpb::BpbSums;
use crate::guards::Normalization;
use crate::ledger::LedgerReport;

/// The ranks of a pass, as the drivers see them: f64 vectors combined element-wise.
pub trait Peers {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Sums `v` element-wise over all ranks, in place.
    fn sum(&self, v: &mut [f64]) -> Result<()>;
    /// The element-wise maximum of `v` over all ranks, in place.
    fn max(&self, v: &mut [f64]) -> Result<()>;
}

/// A pass of one rank.
pub struct Alone;

impl Peers for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn sum(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn max(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

pub use pgolf_store::stage::share;

/// The report of the whole range `whole` from each rank's report of its share: sums over ranks,
/// which must count every target of `whole` exactly once; `norm` becomes the ranks' together.
pub fn merge_reports(
    mine: LedgerReport,
    norm: &mut Normalization,
    whole: Range<usize>,
    peers: &dyn Peers,
) -> Result<LedgerReport> {
    if mine.per_target.is_some() {
        bail!("per-target scores are not gathered over ranks");
    }
    // Counts travel as f64 too: exact below 2^53, far above any val set.
    let mut sums = vec![
        mine.total.nll,
        mine.total.targets as f64,
        mine.total.lut_bytes as f64,
        mine.spans as f64,
        norm.probes as f64,
    ];
    for d in &mine.docs {
        sums.extend([d.nll, d.targets as f64, d.lut_bytes as f64]);
    }
    peers.sum(&mut sums)?;
    let mut max_error = [norm.max_error];
    peers.max(&mut max_error)?;
    let at = |i: usize| BpbSums {
        nll: sums[i],
        targets: sums[i + 1] as u64,
        lut_bytes: sums[i + 2] as u64,
    };
    let total = at(0);
    if total.targets != whole.len() as u64 {
        bail!(
            "the ranks scored {} of {} targets together: every target must be scored exactly once",
            total.targets,
            whole.len()
        );
    }
    norm.probes = sums[4] as u64;
    norm.max_error = max_error[0];
    Ok(LedgerReport {
        expected: whole,
        total,
        docs: (0..mine.docs.len()).map(|d| at(5 + 3 * d)).collect(),
        per_target: None,
        spans: sums[3] as u64,
    })
}
