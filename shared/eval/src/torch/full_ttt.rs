//! Legal score-first full-parameter TTT (REFERENCE.md §5.3): after chunk `c` is scored, its tokens
//! are cut into sequences and the network trains on them for a few epochs with SGD (momentum,
//! persistent across chunks), a cosine learning rate over chunks and global-norm gradient clipping;
//! the first `freeze_blocks` blocks stay fixed. The driver (`adapt::score_first_chunks`) hands this
//! only [`ScoredSpan`]s, so training never sees an unscored token.
//!
//! Gradients accumulate in f64 over the micro-batches, so that on several ranks (each taking a
//! contiguous share of the micro-batches, their sums added by a collective) the step is the one
//! rank's step exactly: sums of a few f32 values in f64 do not depend on their order.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

use pgolf_model::{Documents, Hooks};

use super::net::Net;
use crate::adapt::{ChunkStep, StreamAdapt};
use crate::ledger::ScoredSpan;
use crate::peers::share;
use crate::scorer::{Request, Scorer, Scores};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullTttConfig {
    /// Targets per chunk (§5.3: 32,768).
    pub chunk_tokens: usize,
    /// Training sequence length inside a chunk (§5.3: 2048); default the eval window length
    /// (which the stage fills in before [`FullTtt::new`]).
    pub seq_len: Option<usize>,
    /// Peak learning rate; chunk c uses `lr · ½(1 + cos(π c / (C − 1)))`.
    pub lr: f64,
    pub momentum: f64,
    pub epochs: usize,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Blocks `0 .. freeze_blocks` are not trained.
    pub freeze_blocks: usize,
    /// Sequences per forward/backward (gradients accumulate to one step per epoch).
    pub micro_batch: usize,
}

impl Default for FullTttConfig {
    fn default() -> Self {
        FullTttConfig {
            chunk_tokens: 32768,
            seq_len: None,
            lr: 0.002,
            momentum: 0.9,
            epochs: 3,
            grad_clip: 1.0,
            freeze_blocks: 0,
            micro_batch: 32,
        }
    }
}

/// The ranks a TTT pass is shared by, as seen by its training step: each rank computes the
/// gradient of its share of a chunk's sequences, and `sum_` adds them over the ranks.
pub trait TensorPeers {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Sums `t` over all ranks in place.
    fn sum_(&self, t: &mut Tensor) -> Result<()>;
}

pub struct FullTtt<'c> {
    pub net: Net,
    /// The other ranks training the same copy of the network, if any.
    peers: Option<&'c dyn TensorPeers>,
    cfg: FullTttConfig,
    /// `cfg.seq_len`, resolved.
    seq_len: usize,
    /// (parameter, momentum buffer) of every trained parameter.
    trained: Vec<(Tensor, Option<Tensor>)>,
    /// Keep attention inside documents (the BOS id): each micro-batch one packed row.
    documents: Option<i64>,
    pub steps: u64,
}

impl<'c> FullTtt<'c> {
    pub fn new(net: Net, cfg: FullTttConfig) -> Result<FullTtt<'c>> {
        let seq_len = cfg.seq_len.unwrap_or(0);
        if seq_len == 0 || cfg.epochs == 0 || cfg.micro_batch == 0 {
            bail!("TTT needs a positive seq_len, epochs and micro_batch");
        }
        let layers = net.gpt.config().num_layers;
        if cfg.freeze_blocks > layers {
            bail!(
                "freeze_blocks {} exceeds the model's {layers} blocks",
                cfg.freeze_blocks
            );
        }
        let frozen: Vec<String> = (0..cfg.freeze_blocks)
            .map(|i| format!("blocks.{i}."))
            .collect();
        let mut trained = Vec::new();
        for (name, p) in net.gpt.named_parameters() {
            let train = !frozen.iter().any(|f| name.starts_with(f));
            let mut p = p.shallow_clone();
            let _ = p.requires_grad_(train);
            if train {
                trained.push((p, None));
            }
        }
        Ok(FullTtt {
            net,
            peers: None,
            cfg,
            seq_len,
            trained,
            documents: None,
            steps: 0,
        })
    }

    /// Trains with attention kept inside documents (those starting at token `bos`): each
    /// micro-batch's sequences, consecutive in the stream, as one packed row (phased TTT's global
    /// SGD, R0427's varlen attention).
    pub fn isolating_documents(mut self, bos: i64) -> FullTtt<'c> {
        self.documents = Some(bos);
        self
    }

    /// The network, trained.
    pub fn into_net(self) -> Net {
        self.net
    }

    /// `epochs` SGD steps at chunk `step`'s learning rate on `tokens` (inputs and targets: the
    /// targets are `tokens[1..]`), cut into whole sequences of `seq_len` (a shorter stretch trains
    /// as a single shorter one).
    pub fn train_tokens(&mut self, tokens: &[u16], step: ChunkStep) -> Result<()> {
        let n = tokens.len() - 1;
        let len = self.seq_len.min(n);
        let rows: Vec<&[u16]> = (0..n / len)
            .map(|i| &tokens[i * len..(i + 1) * len + 1])
            .collect();
        let lr = self.lr(step);
        for _ in 0..self.cfg.epochs {
            self.step(&rows, lr)?;
        }
        Ok(())
    }

    /// Trains together with `peers` (every rank then holds the same network after each step).
    pub fn across(mut self, peers: &'c dyn TensorPeers) -> FullTtt<'c> {
        self.peers = Some(peers);
        self
    }

    /// The learning rate of chunk `c` of `C` (§5.3).
    pub fn lr(&self, step: ChunkStep) -> f64 {
        let progress = if step.chunks > 1 {
            step.chunk as f64 / (step.chunks - 1) as f64
        } else {
            0.0
        };
        self.cfg.lr * 0.5 * (1.0 + (PI * progress).cos())
    }

    /// One SGD step over `rows` (sequences of `len + 1` tokens), gradients averaged over all
    /// tokens; on several ranks this rank computes its share of the micro-batches.
    fn step(&mut self, rows: &[&[u16]], lr: f64) -> Result<()> {
        let total: usize = rows.iter().map(|r| r.len() - 1).sum();
        let groups: Vec<&[&[u16]]> = rows.chunks(self.cfg.micro_batch).collect();
        let mine = match self.peers {
            Some(peers) => share(groups.len(), peers.rank(), peers.world()),
            None => 0..groups.len(),
        };
        // Σ over micro-batches of each trained parameter's gradient, in f64.
        let mut sums: Vec<Option<Tensor>> = self.trained.iter().map(|_| None).collect();
        for group in &groups[mine] {
            let t = group[0].len() - 1;
            if group.iter().any(|r| r.len() - 1 != t) {
                bail!("TTT sequences of one micro-batch must have equal length");
            }
            let flat: Vec<i64> = group
                .iter()
                .flat_map(|r| r.iter().map(|&v| v as i64))
                .collect();
            let data = Tensor::from_slice(&flat)
                .view([group.len() as i64, t as i64 + 1])
                .to(self.net.device);
            let x = data.narrow(1, 0, t as i64).contiguous();
            let y = data.narrow(1, 1, t as i64).contiguous();
            let nll = match self.documents {
                None => self.net.gpt.token_nll(&x, &y),
                Some(bos) => {
                    // Consecutive sequences: their inputs are one stretch of the stream.
                    let row = |t: &Tensor| t.reshape([1, -1]);
                    let inputs: Vec<i64> = group
                        .iter()
                        .flat_map(|r| r[..t].iter().map(|&v| v as i64))
                        .collect();
                    let docs = Documents::from_tokens(&inputs, bos, t).to_device(self.net.device);
                    self.net.gpt.token_nll_in(
                        &row(&x),
                        &row(&y),
                        Some(&docs),
                        &mut Hooks::default(),
                    )
                }
            };
            let loss = nll.sum(Kind::Float) / total as f64;
            loss.backward();
            tch::no_grad(|| {
                for ((p, _), sum) in self.trained.iter().zip(sums.iter_mut()) {
                    let mut g = p.grad();
                    if g.defined() {
                        let g64 = g.to_kind(Kind::Double);
                        *sum = Some(match sum.take() {
                            None => g64,
                            Some(s) => s + g64,
                        });
                        let _ = g.zero_();
                    }
                }
            });
        }
        if let Some(peers) = self.peers {
            // One collective for all parameters; a rank without micro-batches adds zeros.
            let parts: Vec<Tensor> = self
                .trained
                .iter()
                .zip(&sums)
                .map(|((p, _), s)| match s {
                    Some(s) => s.flatten(0, -1),
                    None => Tensor::zeros([p.numel() as i64], (Kind::Double, p.device())),
                })
                .collect();
            let mut flat = Tensor::cat(&parts, 0);
            peers.sum_(&mut flat)?;
            let mut at = 0i64;
            for ((p, _), sum) in self.trained.iter().zip(sums.iter_mut()) {
                let n = p.numel() as i64;
                *sum = Some(flat.narrow(0, at, n).view_as(p));
                at += n;
            }
        }
        tch::no_grad(|| {
            let norm2: f64 = sums
                .iter()
                .flatten()
                .map(|g| g.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]))
                .sum();
            // torch.nn.utils.clip_grad_norm_: scale by max/(norm + 1e-6), never up.
            let clip = (self.cfg.grad_clip / (norm2.sqrt() + 1e-6)).min(1.0);
            for ((p, buf), g) in self.trained.iter_mut().zip(sums) {
                let Some(g) = g else { continue };
                let g = (g * clip).to_kind(p.kind());
                let b = match buf.take() {
                    None => g,
                    Some(b) => b * self.cfg.momentum + g,
                };
                let _ = p.f_sub_(&(&b * lr)).map(|_| ());
                *buf = Some(b);
            }
        });
        self.steps += 1;
        Ok(())
    }
}

impl Scorer for FullTtt<'_> {
    fn vocab_size(&self) -> usize {
        self.net.vocab_size()
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        self.net.score(batch, entropy)
    }
}

impl StreamAdapt for FullTtt<'_> {
    fn update(&mut self, span: ScoredSpan<'_>, step: ChunkStep) -> Result<()> {
        // x[a−1 .. b]: inputs [..len−1], targets [1..].
        self.train_tokens(span.tokens(), step)
    }
}
