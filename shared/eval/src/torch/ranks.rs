//! The stage's process group (`pgolf_optim::Collective`: c10d Gloo or NCCL, or one process) as the
//! evaluation passes see it: f64 vectors and TTT gradients combined over the ranks.

use anyhow::Result;
use pgolf_optim::Collective;
use tch::{Device, Tensor};

use super::full_ttt::TensorPeers;
use crate::peers::Peers;

pub struct RankPeers<'a> {
    pub comm: &'a dyn Collective,
    /// Where the collective's tensors live (CUDA for NCCL).
    pub device: Device,
}

impl RankPeers<'_> {
    fn reduce(&self, v: &mut [f64], max: bool) -> Result<()> {
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        let mut t = Tensor::from_slice(v).to_device(self.device);
        if max {
            self.comm.all_reduce_max(&mut t)?;
        } else {
            self.comm.all_reduce_sum(&mut t)?;
        }
        v.copy_from_slice(&Vec::<f64>::try_from(t.to_device(Device::Cpu))?);
        Ok(())
    }
}

impl Peers for RankPeers<'_> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world_size()
    }
    fn sum(&self, v: &mut [f64]) -> Result<()> {
        self.reduce(v, false)
    }
    fn max(&self, v: &mut [f64]) -> Result<()> {
        self.reduce(v, true)
    }
}

impl TensorPeers for RankPeers<'_> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world_size()
    }
    fn sum_(&self, t: &mut Tensor) -> Result<()> {
        self.comm.all_reduce_sum(t)
    }
}
