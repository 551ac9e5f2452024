//! ttt-eval on several ranks (`ttt-eval --nproc N`, or torchrun; `pgolf_dist::stage`).
//!
//! The fixed-model modes (flat, sliding) split the window schedule, already proved single-pass as
//! a whole, into one contiguous share per rank. Each rank's ledger proves that its share's targets
//! were scored exactly once; the f64 sums (the total, every document's, the normalization probes)
//! are then summed over ranks, and the merged report must cover the whole range. A document cut
//! by a share boundary is summed from two partial sums, so the BPB can differ from one rank's in
//! the last bits of an f64 (the order of the additions), never by a target.

use anyhow::{bail, Result};
use pgolf_eval::guards::Normalization;
use pgolf_eval::{BpbSums, LedgerReport};
use pgolf_optim::Collective;
use std::ops::Range;
use tch::{Device, Tensor};

/// The report of the whole range from each rank's report of its share: sums over ranks.
pub fn merge(
    mine: LedgerReport,
    norm: &mut Normalization,
    whole: Range<usize>,
    comm: &dyn Collective,
    device: Device,
) -> Result<LedgerReport> {
    if mine.per_target.is_some() {
        bail!("per-target scores are not gathered over ranks");
    }
    // Counts travel as f64 too: exact below 2^53, far above any val set.
    let mut flat = vec![
        mine.total.nll,
        mine.total.targets as f64,
        mine.total.lut_bytes as f64,
        mine.spans as f64,
        norm.probes as f64,
    ];
    for d in &mine.docs {
        flat.extend([d.nll, d.targets as f64, d.lut_bytes as f64]);
    }
    let mut sums = Tensor::from_slice(&flat).to_device(device);
    comm.all_reduce_sum(&mut sums)?;
    let mut max_error = Tensor::from_slice(&[norm.max_error]).to_device(device);
    comm.all_reduce_max(&mut max_error)?;
    let sums: Vec<f64> = Vec::<f64>::try_from(sums.to_device(Device::Cpu))?;
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
    norm.max_error = max_error.double_value(&[0]);
    Ok(LedgerReport {
        expected: whole,
        total,
        docs: (0..mine.docs.len()).map(|d| at(5 + 3 * d)).collect(),
        per_target: None,
        spans: sums[3] as u64,
    })
}
