//! Phased TTT (REFERENCE.md §5.4, R0427): per-document LoRA TTT ([`LoraTtt`]) interleaved with a
//! few phases of global SGD on the whole model over documents already scored. The driver
//! (`adapt::score_first_phased`) calls [`PhaseAdapt::phase`] at each boundary with the first
//! `boundary` documents of the pass, each granted whole by the ledger, so the global SGD never
//! sees a token before its score is final; phases are cumulative and each starts a fresh SGD.
//!
//! Each phase: the documents' tokens concatenated in processing order, cut into chunks of
//! `chunk_tokens` (the last chunk is not trained, as R0427), each chunk `epochs` SGD steps over its
//! sequences of `seq_len` with momentum, global-norm clipping and a cosine learning rate over the
//! chunks ([`FullTtt`]), attention kept inside each document (one packed row per micro-batch).
//! Then fresh adapters: the next batch's [`DocAdapt::reset`] makes them on the updated model.
//!
//! Differences from R0427 (said in docs/STAGES.md): one adapter set per physical layer (R0427 has
//! one per virtual slot of the loop); fresh `A` for every batch (R0427 warm-starts it across a
//! phase's batches); one rank (R0427 pulls batches from a shared queue). As R0427, the batches of
//! similar lengths run longest first.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::full_ttt::{FullTtt, FullTttConfig};
use super::lora::{LoraConfig, LoraTtt};
use super::net::Net;
use crate::adapt::{ChunkStep, DocAdapt, PhaseAdapt};
use crate::ledger::ScoredSpan;
use crate::scorer::{Request, Scorer, Scores};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhasedConfig {
    /// The documents the phases train on, counted in processing order (R0427: 2,500).
    pub prefix_docs: usize,
    /// Phases, at `prefix_docs · k / phases` documents for k = 1 … phases (R0427: 3).
    pub phases: usize,
    /// The global SGD of a phase: R0427's lr 0.001 with a cosine over chunks, momentum 0.9,
    /// one epoch, chunks of 32,768 tokens, 32 sequences per micro-batch, clip 1.0.
    pub sgd: FullTttConfig,
}

impl Default for PhasedConfig {
    fn default() -> Self {
        PhasedConfig {
            prefix_docs: 2500,
            phases: 3,
            sgd: FullTttConfig {
                chunk_tokens: 32768,
                seq_len: None,
                lr: 0.001,
                momentum: 0.9,
                epochs: 1,
                grad_clip: 1.0,
                freeze_blocks: 0,
                micro_batch: 32,
            },
        }
    }
}

impl PhasedConfig {
    /// The phase boundaries for a pass over `docs` documents (fewer documents than
    /// `prefix_docs`: the boundaries scale down; duplicates dropped).
    pub fn boundaries(&self, docs: usize) -> Result<Vec<usize>> {
        if self.phases == 0 || self.prefix_docs == 0 {
            bail!("phased TTT needs phases > 0 and prefix_docs > 0");
        }
        let prefix = self.prefix_docs.min(docs);
        let mut b: Vec<usize> = (1..=self.phases)
            .map(|k| prefix * k / self.phases)
            .filter(|&n| n > 0)
            .collect();
        b.dedup();
        Ok(b)
    }
}

pub struct PhasedTtt {
    /// The scorer between phases (taken apart for a phase's SGD, then rebuilt).
    lora: Option<LoraTtt>,
    lora_cfg: LoraConfig,
    sgd: FullTttConfig,
    bos: i64,
    /// Adam steps of the adapters and SGD steps of the phases so far.
    pub lora_steps: u64,
    pub sgd_steps: u64,
    /// Phases run.
    pub phases: usize,
}

impl PhasedTtt {
    /// `sgd.seq_len` must be resolved; `bos`: the data's BOS id (documents start at it).
    pub fn new(net: Net, lora: LoraConfig, sgd: FullTttConfig, bos: i64) -> Result<PhasedTtt> {
        if sgd.chunk_tokens == 0 {
            bail!("phased TTT: sgd.chunk_tokens must be positive");
        }
        Ok(PhasedTtt {
            lora: Some(LoraTtt::new(net, lora.clone())?),
            lora_cfg: lora,
            sgd,
            bos,
            lora_steps: 0,
            sgd_steps: 0,
            phases: 0,
        })
    }

    fn lora(&mut self) -> &mut LoraTtt {
        self.lora
            .as_mut()
            .expect("the LoRA scorer is back after every phase")
    }

    /// Every update made: adapter steps and phase steps.
    pub fn steps(&self) -> u64 {
        self.lora_steps + self.sgd_steps + self.lora.as_ref().map_or(0, |l| l.steps)
    }
}

impl Scorer for PhasedTtt {
    fn vocab_size(&self) -> usize {
        self.lora.as_ref().map_or(0, |l| l.vocab_size())
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        self.lora().score(batch, entropy)
    }
}

impl DocAdapt for PhasedTtt {
    fn reset(&mut self, batch: usize, docs: usize) -> Result<()> {
        self.lora().reset(batch, docs)
    }

    fn update(&mut self, spans: &[Option<ScoredSpan<'_>>]) -> Result<()> {
        self.lora().update(spans)
    }
}

impl PhaseAdapt for PhasedTtt {
    fn phase(&mut self, docs: &[ScoredSpan<'_>], _phase: usize) -> Result<()> {
        let lora = self.lora.take().expect("one phase at a time");
        self.lora_steps += lora.steps;
        let mut sgd =
            FullTtt::new(lora.into_net(), self.sgd.clone())?.isolating_documents(self.bos);
        // Each span is a whole document: its BOS, then its targets.
        let tokens: Vec<u16> = docs
            .iter()
            .flat_map(|s| s.tokens().iter().copied())
            .collect();
        let chunk = self.sgd.chunk_tokens;
        let chunks = tokens.len().saturating_sub(1).div_ceil(chunk);
        for c in 0..chunks.saturating_sub(1) {
            let end = ((c + 1) * chunk + 1).min(tokens.len());
            sgd.train_tokens(&tokens[c * chunk..end], ChunkStep { chunk: c, chunks })?;
        }
        self.sgd_steps += sgd.steps;
        self.lora = Some(LoraTtt::new(sgd.into_net(), self.lora_cfg.clone())?);
        self.phases += 1;
        Ok(())
    }
}
