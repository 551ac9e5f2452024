//! What the optimizers, the loader and the evaluations need from a multi-rank run: the rank, the
//! world size and the collectives. One process is [`Single`]; `pgolf_dist::ProcessGroup` is the
//! multi-process implementation (PyTorch's c10d: Gloo on CPU, NCCL on CUDA).
//!
//! Every rank calls the same collectives in the same order with tensors of the same shape and
//! dtype; a collective returns an error (never hangs past the group's timeout) when a peer fails.

use anyhow::{bail, Result};
use tch::Tensor;

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// "single", or the process group's backend ("gloo", "nccl"): recorded with results.
    fn backend(&self) -> &str;
    /// Sums `t` over all ranks in place.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()>;
    /// The mean of `t` over all ranks in place: the sum, then divided by the world size (on every
    /// backend alike, so the result does not depend on which one ran; exact at world size 1).
    fn all_reduce_avg(&self, t: &mut Tensor) -> Result<()> {
        self.all_reduce_sum(t)?;
        let world = self.world_size();
        if world > 1 {
            let _ = t.g_div_scalar_(world as f64);
        }
        Ok(())
    }
    /// The element-wise maximum of `t` over all ranks in place (e.g. "has any rank stopped").
    fn all_reduce_max(&self, t: &mut Tensor) -> Result<()>;
    /// Replaces `t` by rank `root`'s `t`.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    /// Every rank's `t`, stacked in rank order: shape `[world, ..t.shape]`.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// `t`'s first dimension split into `world` equal chunks; returns this rank's chunk summed
    /// over all ranks (shape `[t.size(0) / world, ..]`).
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Returns once every rank has reached it.
    fn barrier(&self) -> Result<()>;
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
    fn backend(&self) -> &str {
        "single"
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn all_reduce_max(&self, _t: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _t: &mut Tensor, root: usize) -> Result<()> {
        if root != 0 {
            bail!("broadcast from rank {root} in a run of one process");
        }
        Ok(())
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.unsqueeze(0).copy())
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.copy())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn single_is_the_identity_and_copies() -> Result<()> {
        let t = Tensor::arange(6, (Kind::Double, Device::Cpu)).reshape([2, 3]);
        let mut r = t.copy();
        Single.all_reduce_sum(&mut r)?;
        Single.all_reduce_avg(&mut r)?;
        Single.all_reduce_max(&mut r)?;
        Single.broadcast(&mut r, 0)?;
        assert!(r.equal(&t));
        assert!(Single.broadcast(&mut r, 1).is_err());
        let g = Single.all_gather(&t)?;
        assert_eq!(g.size(), vec![1, 2, 3]);
        assert!(g.get(0).equal(&t));
        let s = Single.reduce_scatter_sum(&t)?;
        assert!(s.equal(&t));
        // Results are fresh tensors, not views of the input.
        let _ = s.shallow_clone().fill_(-1.0);
        assert!(t.equal(&Tensor::arange(6, (Kind::Double, Device::Cpu)).reshape([2, 3])));
        Single.barrier()?;
        assert_eq!(Single.backend(), "single");
        Ok(())
    }
}
