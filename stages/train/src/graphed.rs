//! A micro-batch's forward and backward as one CUDA graph: on a GPU the eager step issues ~10k
//! small kernels, and replaying a captured graph removes their launch cost from the host.
//!
//! The graph reads its input from fixed tensors (each micro-batch is copied in before a replay),
//! accumulates the gradients in place into the parameters' `.grad` (which exist before capture
//! and are only ever zeroed in place), and adds the micro-batch loss to a fixed scalar. A packed
//! micro-batch's documents are copied into a fixed `cu_seqlens` buffer too (the varlen kernel
//! reads only that); a batch with more documents than the buffer holds first recaptures the graph
//! with a larger one.

use anyhow::Result;
use pgolf_model::docs::CU_BUCKET;
use pgolf_model::{Documents, Gpt};
use pgolf_runtime::cuda::{self, CudaGraph};
use tch::{Device, Kind, Tensor};

use crate::data::MicroBatch;
use crate::optimizers::Optimizers;

pub struct GraphedMicroStep {
    graph: CudaGraph,
    x: Tensor,
    y: Tensor,
    /// The captured `cu_seqlens` buffer of a packed micro-batch.
    docs: Option<Documents>,
    loss_sum: Tensor,
    scale: f64,
    /// Times the graph was captured again for more documents than its buffer held.
    pub recaptures_for_documents: u32,
}

/// Forward, `(loss · scale).backward()`, and the loss added to `loss_sum`.
fn micro_step(
    gpt: &Gpt,
    x: &Tensor,
    y: &Tensor,
    docs: Option<&Documents>,
    scale: f64,
    loss_sum: &Tensor,
) {
    let loss = gpt.loss_in(x, y, docs);
    (&loss * scale).backward();
    let _ = loss_sum.shallow_clone().g_add_(&loss.detach());
}

/// What warm-up and capture run on: a row of full-length documents (replays copy the real ones
/// in), with room for `entries` `cu_seqlens` entries.
fn full_length_documents(
    tokens: i64,
    max_len: i64,
    entries: usize,
    device: Device,
) -> Result<Documents> {
    let starts = (0..tokens as usize).step_by(max_len as usize);
    Documents::from_starts(starts, tokens as usize, max_len as usize)
        .to_device(device)
        .with_entries(entries)
}

/// The shape of what one replay reads.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// `[rows, seq_len]` sequences.
    Rows { rows: i64, seq_len: i64 },
    /// One packed row of `tokens`, documents capped at `max_len`, room for `entries`
    /// `cu_seqlens` entries.
    Packed {
        tokens: i64,
        max_len: i64,
        entries: usize,
    },
}

impl GraphedMicroStep {
    /// Warms up on a side stream (two micro-batches of token 0), zeroes the gradients it made,
    /// and captures one micro-batch.
    pub fn capture(
        gpt: &Gpt,
        opt: &mut Optimizers,
        input: Input,
        scale: f64,
        device: Device,
    ) -> Result<GraphedMicroStep> {
        let (shape, docs) = match input {
            Input::Rows { rows, seq_len } => ([rows, seq_len], None),
            Input::Packed {
                tokens,
                max_len,
                entries,
            } => (
                [1, tokens],
                Some(full_length_documents(tokens, max_len, entries, device)?),
            ),
        };
        let mut g = GraphedMicroStep {
            graph: CudaGraph::new(device)?,
            x: Tensor::zeros(shape, (Kind::Int64, device)),
            y: Tensor::zeros(shape, (Kind::Int64, device)),
            docs,
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            scale,
            recaptures_for_documents: 0,
        };
        g.record(gpt, opt)?;
        Ok(g)
    }

    /// Warm-up on a side stream, then the capture into `self.graph` (a fresh one).
    fn record(&mut self, gpt: &Gpt, opt: &mut Optimizers) -> Result<()> {
        let (x, y, docs, scale, loss_sum) = (
            &self.x,
            &self.y,
            self.docs.as_ref(),
            self.scale,
            &self.loss_sum,
        );
        self.graph.on_side_stream(|| {
            for _ in 0..2 {
                micro_step(gpt, x, y, docs, scale, loss_sum);
            }
        })?;
        opt.zero_grad();
        self.graph
            .capture(|| micro_step(gpt, x, y, docs, scale, loss_sum))?;
        // The warm-up's activations stay cached in the general pool; the graph has its own.
        cuda::empty_cache(self.x.device());
        Ok(())
    }

    /// A new graph in place of the old, whose memory pool is released first: a looped model's
    /// activations in two pools at once do not fit on the card.
    fn record_again(&mut self, gpt: &Gpt, opt: &mut Optimizers) -> Result<()> {
        let device = self.x.device();
        self.graph = CudaGraph::new(device)?;
        cuda::empty_cache(device);
        self.record(gpt, opt)
    }

    /// Captures the micro-batch again, for a model whose forward pass changed (late QAT or the
    /// depth recurrence turning on): a graph replays the kernels it recorded, so without this the
    /// change would never run.
    pub fn recapture(&mut self, gpt: &Gpt, opt: &mut Optimizers) -> Result<()> {
        self.record_again(gpt, opt)
    }

    /// Before a step's micro-batches: recaptures with a `cu_seqlens` buffer large enough for the
    /// step's documents when the current one is too small (it grows in [`CU_BUCKET`]s and never
    /// shrinks, so this is rare). It zeroes the gradients: call it before they accumulate.
    pub fn make_room(
        &mut self,
        gpt: &Gpt,
        opt: &mut Optimizers,
        batches: &[MicroBatch],
    ) -> Result<()> {
        let Some(buffer) = &self.docs else {
            return Ok(());
        };
        let entries = buffer.cu_seqlens().size()[0] as usize;
        let needed = batches
            .iter()
            .filter_map(|b| b.docs.as_ref().map(Documents::entries_needed))
            .max()
            .unwrap_or(0);
        if needed <= entries {
            return Ok(());
        }
        let (tokens, max_len) = (buffer.total(), buffer.max_len());
        let entries = needed.div_ceil(CU_BUCKET) * CU_BUCKET;
        self.docs = Some(full_length_documents(
            tokens,
            max_len,
            entries,
            self.x.device(),
        )?);
        self.recaptures_for_documents += 1;
        self.record_again(gpt, opt)
    }

    /// Replays the graph once per micro-batch; returns the sum of their losses and the running
    /// sum after each replay (on the device; read only to find a micro-batch whose loss is bad).
    pub fn run(&mut self, batches: &[MicroBatch]) -> Result<(Tensor, Vec<Tensor>)> {
        let _ = self.loss_sum.zero_();
        let mut sums = Vec::with_capacity(batches.len());
        for b in batches {
            self.x.copy_(&b.x);
            self.y.copy_(&b.y);
            if let (Some(buffer), Some(docs)) = (&self.docs, &b.docs) {
                docs.copy_into(buffer)?;
            }
            self.graph.replay()?;
            sums.push(self.loss_sum.copy());
        }
        Ok((self.loss_sum.copy(), sums))
    }
}
