//! What the optimizers and the loader need from a multi-rank run: the rank, the world size and a
//! SUM all-reduce. One process is `Single`; an NCCL implementation plugs in here later.

use anyhow::Result;
use tch::Tensor;

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Sums `t` over all ranks in place.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()>;
}

/// A run of one process.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<()> {
        Ok(())
    }
}
