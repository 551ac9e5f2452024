//! Legal score-first full-parameter TTT (REFERENCE.md §5.3): after chunk `c` is scored, its tokens
//! are cut into sequences and the network trains on them for a few epochs with SGD (momentum,
//! persistent across chunks), a cosine learning rate over chunks and global-norm gradient clipping;
//! the first `freeze_blocks` blocks stay fixed. The driver (`adapt::score_first_chunks`) hands this
//! only [`ScoredSpan`]s, so training never sees an unscored token.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

use super::net::Net;
use crate::adapt::{ChunkStep, StreamAdapt};
use crate::ledger::ScoredSpan;
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

pub struct FullTtt {
    pub net: Net,
    cfg: FullTttConfig,
    /// `cfg.seq_len`, resolved.
    seq_len: usize,
    /// (parameter, momentum buffer) of every trained parameter.
    trained: Vec<(Tensor, Option<Tensor>)>,
    pub steps: u64,
}

impl FullTtt {
    pub fn new(net: Net, cfg: FullTttConfig) -> Result<FullTtt> {
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
            cfg,
            seq_len,
            trained,
            steps: 0,
        })
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

    /// One SGD step over `seqs` (rows of `len + 1` tokens), gradients averaged over all tokens.
    fn step(&mut self, rows: &[&[u16]], lr: f64) -> Result<()> {
        let total: usize = rows.iter().map(|r| r.len() - 1).sum();
        for group in rows.chunks(self.cfg.micro_batch) {
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
            let nll = self.net.gpt.token_nll(&x, &y);
            let loss = nll.sum(Kind::Float) / total as f64;
            loss.backward();
        }
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.trained.iter().map(|(p, _)| p.grad()).collect();
            let norm2: f64 = grads
                .iter()
                .filter(|g| g.defined())
                .map(|g| g.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]))
                .sum();
            // torch.nn.utils.clip_grad_norm_: scale by max/(norm + 1e-6), never up.
            let clip = (self.cfg.grad_clip / (norm2.sqrt() + 1e-6)).min(1.0);
            for ((p, buf), g) in self.trained.iter_mut().zip(grads) {
                if !g.defined() {
                    continue;
                }
                let g = &g * clip;
                let b = match buf.take() {
                    None => g.copy(),
                    Some(b) => b * self.cfg.momentum + g,
                };
                let _ = p.f_sub_(&(&b * lr)).map(|_| ());
                *buf = Some(b);
                let _ = p.grad().zero_();
            }
        });
        self.steps += 1;
        Ok(())
    }
}

impl Scorer for FullTtt {
    fn vocab_size(&self) -> usize {
        self.net.vocab_size()
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        self.net.score(batch, entropy)
    }
}

impl StreamAdapt for FullTtt {
    fn update(&mut self, span: ScoredSpan<'_>, step: ChunkStep) -> Result<()> {
        // x[a−1 .. b]: inputs [..len−1], targets [1..]. Whole sequences of seq_len; a chunk shorter
        // than one sequence trains as a single shorter one.
        let tokens = span.tokens();
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
}
