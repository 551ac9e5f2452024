//! A micro-batch's forward and backward as one CUDA graph: on a GPU the eager step issues ~10k
//! small kernels, and replaying a captured graph removes their launch cost from the host.
//!
//! The graph reads its input from two fixed tensors (each micro-batch is copied in before a
//! replay), accumulates the gradients in place into the parameters' `.grad` (which exist before
//! capture and are only ever zeroed in place), and adds the micro-batch loss to a fixed scalar.

use anyhow::Result;
use pgolf_model::Gpt;
use pgolf_runtime::cuda::{self, CudaGraph};
use tch::{Device, Kind, Tensor};

use crate::optimizers::Optimizers;

pub struct GraphedMicroStep {
    graph: CudaGraph,
    x: Tensor,
    y: Tensor,
    loss_sum: Tensor,
    scale: f64,
}

/// Forward, `(loss · scale).backward()`, and the loss added to `loss_sum`.
fn micro_step(gpt: &Gpt, x: &Tensor, y: &Tensor, scale: f64, loss_sum: &Tensor) {
    let loss = gpt.loss(x, y);
    (&loss * scale).backward();
    let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
}

impl GraphedMicroStep {
    /// Warms up on a side stream (two micro-batches of token 0), zeroes the gradients it made,
    /// and captures one micro-batch of `[rows, seq_len]` tokens.
    pub fn capture(
        gpt: &Gpt,
        opt: &mut Optimizers,
        rows: i64,
        seq_len: i64,
        scale: f64,
        device: Device,
    ) -> Result<GraphedMicroStep> {
        let x = Tensor::zeros([rows, seq_len], (Kind::Int64, device));
        let y = Tensor::zeros([rows, seq_len], (Kind::Int64, device));
        let loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut graph = CudaGraph::new(device)?;
        graph.on_side_stream(|| {
            for _ in 0..2 {
                micro_step(gpt, &x, &y, scale, &loss_sum);
            }
        })?;
        opt.zero_grad();
        graph.capture(|| micro_step(gpt, &x, &y, scale, &loss_sum))?;
        // The warm-up's activations stay cached in the general pool; the graph has its own.
        cuda::empty_cache(device);
        Ok(GraphedMicroStep {
            graph,
            x,
            y,
            loss_sum,
            scale,
        })
    }

    /// Captures the micro-batch again, for a model whose forward pass changed (late QAT turning
    /// on): a graph replays the kernels it recorded, so without this the change would never run.
    pub fn recapture(&mut self, gpt: &Gpt, opt: &mut Optimizers) -> Result<()> {
        let (rows, seq_len) = self.x.size2()?;
        *self = GraphedMicroStep::capture(gpt, opt, rows, seq_len, self.scale, self.x.device())?;
        Ok(())
    }

    /// Replays the graph once per micro-batch; returns the sum of their losses and the running
    /// sum after each replay (on the device; read only to find a micro-batch whose loss is bad).
    pub fn run(&mut self, batches: &[(Tensor, Tensor)]) -> Result<(Tensor, Vec<Tensor>)> {
        let _ = self.loss_sum.zero_();
        let mut sums = Vec::with_capacity(batches.len());
        for (x, y) in batches {
            self.x.copy_(x);
            self.y.copy_(y);
            self.graph.replay()?;
            sums.push(self.loss_sum.copy());
        }
        Ok((self.loss_sum.copy(), sums))
    }
}
