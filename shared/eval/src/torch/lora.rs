//! Per-document LoRA test-time training (REFERENCE.md §5.2): each document of a batch gets its own
//! low-rank adapters (`ΔW = B·A`, `A ~ U(±1/√in)`, `B = 0`) on the chosen projections; the base
//! weights stay frozen. After chunk `c` of the batch is scored, one Adam step on the mean NLL of
//! each document's chunk `c` (documents with a later chunk only) — gradients taken from the very
//! forward pass that produced the scores, so scoring costs no second pass.
//!
//! The driver (`adapt::score_first_docs`) calls `update` only with the [`ScoredSpan`]s the ledger
//! granted for the chunk just scored; `update` checks they are exactly the retained forward's rows.

use anyhow::{bail, Result};
use pgolf_data::Rng;
use pgolf_model::{Adapter, Site};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

use super::net::{answers, Net};
use crate::adapt::DocAdapt;
use crate::ledger::ScoredSpan;
use crate::scorer::{Request, Scorer, Scores};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// AdamW's decoupled decay of the adapters, `p ← p·(1 − lr·wd)` before each step (R0427's
    /// phased TTT: 0.5); 0 = plain Adam (§5.2).
    pub weight_decay: f64,
    /// Output scale `α / r` applied to every delta (§5.2 uses none: 1.0).
    pub scale: f64,
    /// Which projections get adapters: any of "q", "k", "v", "o", "mlp_out", "head".
    pub sites: Vec<String>,
    /// Targets per chunk (§5.2: 256).
    pub chunk: usize,
    /// Most input tokens a chunk's window sees, inside its document (§5.2: 1024).
    pub context: usize,
    /// Documents adapted side by side (§5.2: 64).
    pub batch_docs: usize,
    /// Seed of the adapters' `A` initialization (batch `i` draws from `seed + i`).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-10,
            weight_decay: 0.0,
            scale: 1.0,
            sites: vec!["q".into(), "v".into(), "head".into()],
            chunk: 256,
            context: 1024,
            batch_docs: 64,
            seed: 0,
        }
    }
}

fn parse_site(name: &str) -> Result<Site> {
    Ok(match name {
        "q" => Site::Q,
        "k" => Site::K,
        "v" => Site::V,
        "o" => Site::O,
        "mlp_out" => Site::MlpOut,
        "head" => Site::Head,
        other => bail!("unknown LoRA site {other:?} (expected q, k, v, o, mlp_out or head)"),
    })
}

/// One Adam-trained tensor.
struct AdamParam {
    p: Tensor,
    m: Tensor,
    v: Tensor,
}

/// The adapters of one batch: `A [docs, r, in]` and `B [docs, out, r]` per (site, layer).
struct LoraSet {
    mats: BTreeMap<(u8, usize), (AdamParam, AdamParam)>,
    steps: i32,
}

/// The adapters bound to the rows of one forward (row i uses document slot `rows[i]`).
struct Bound<'a> {
    set: &'a LoraSet,
    rows: Tensor,
    scale: f64,
}

fn site_key(site: Site) -> u8 {
    site as u8
}

impl Adapter for Bound<'_> {
    fn delta(&self, site: Site, layer: usize, input: &Tensor) -> Option<Tensor> {
        let (a, b) = self.set.mats.get(&(site_key(site), layer))?;
        let a = a.p.index_select(0, &self.rows);
        let b = b.p.index_select(0, &self.rows);
        let low = input.to_kind(Kind::Float).matmul(&a.transpose(1, 2));
        Some(low.matmul(&b.transpose(1, 2)) * self.scale)
    }
}

/// Per-token NLL `[B, T]` of the last scoring forward, with its graph, and each row's (document
/// slot, scored offsets in the row).
type Retained = (Tensor, Vec<(usize, Range<usize>)>);

pub struct LoraTtt {
    pub net: Net,
    cfg: LoraConfig,
    sites: Vec<Site>,
    set: Option<LoraSet>,
    /// The last scoring forward, kept for the update: per-token NLL `[B, T]` with its graph, and
    /// each row's (document slot, scored offsets in the row).
    retained: Option<Retained>,
    pub steps: u64,
}

impl LoraTtt {
    pub fn new(net: Net, cfg: LoraConfig) -> Result<LoraTtt> {
        if cfg.rank == 0 || cfg.chunk == 0 || cfg.context < cfg.chunk || cfg.batch_docs == 0 {
            bail!("LoRA TTT needs rank > 0 and 0 < chunk ≤ context, batch_docs > 0");
        }
        let sites = cfg
            .sites
            .iter()
            .map(|s| parse_site(s))
            .collect::<Result<Vec<_>>>()?;
        for (_, p) in net.gpt.named_parameters() {
            let _ = p.shallow_clone().requires_grad_(false);
        }
        Ok(LoraTtt {
            net,
            cfg,
            sites,
            set: None,
            retained: None,
            steps: 0,
        })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    /// The network (its base weights, never changed by the adapters).
    pub fn into_net(self) -> Net {
        self.net
    }

    /// (in, out) of a site's projection.
    fn dims(&self, site: Site) -> (i64, i64) {
        let c = self.net.gpt.config();
        let (d, kv, v, h) = (
            c.model_dim as i64,
            c.kv_dim() as i64,
            c.vocab_size as i64,
            c.mlp_hidden() as i64,
        );
        match site {
            Site::Q | Site::O => (d, d),
            Site::K | Site::V => (d, kv),
            Site::MlpIn => (d, h),
            Site::MlpOut => (h, d),
            Site::Head => (d, v),
        }
    }

    fn adam(&mut self) {
        let Some(set) = self.set.as_mut() else { return };
        set.steps += 1;
        let (b1, b2, eps, lr) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps, self.cfg.lr);
        let wd = self.cfg.weight_decay;
        let bc1 = 1.0 - b1.powi(set.steps);
        let bc2 = 1.0 - b2.powi(set.steps);
        tch::no_grad(|| {
            for (a, b) in set.mats.values_mut() {
                for q in [a, b] {
                    let mut g = q.p.grad();
                    if !g.defined() {
                        continue;
                    }
                    q.m = &q.m * b1 + &g * (1.0 - b1);
                    q.v = &q.v * b2 + g.square() * (1.0 - b2);
                    let update = (&q.m / bc1) / ((&q.v / bc2).sqrt() + eps) * lr;
                    if wd > 0.0 {
                        let _ = q.p.f_mul_scalar_(1.0 - lr * wd);
                    }
                    let _ = q.p.f_sub_(&update);
                    let _ = g.zero_();
                }
            }
        });
    }
}

impl Scorer for LoraTtt {
    fn vocab_size(&self) -> usize {
        self.net.vocab_size()
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        let Some(set) = self.set.as_ref() else {
            bail!("LoRA TTT scored before a document batch was started")
        };
        let (x, y) = self.net.batch(batch);
        let rows = Tensor::from_slice(&batch.iter().map(|r| r.slot as i64).collect::<Vec<_>>())
            .to(self.net.device);
        let bound = Bound {
            set,
            rows,
            scale: self.cfg.scale,
        };
        let logp = self.net.log_probs(&x, Some(&bound));
        let (scores, nll) = answers(batch, &logp, &y, entropy)?;
        // Remember which positions each row scored; the caller's spans must match them.
        let meta = batch
            .iter()
            .map(|r| (r.slot, r.score_from..r.score_from + r.targets.len()))
            .collect();
        self.retained = Some((nll, meta));
        Ok(scores)
    }
}

impl DocAdapt for LoraTtt {
    fn reset(&mut self, batch: usize, docs: usize) -> Result<()> {
        let dev: Device = self.net.device;
        let mut mats = BTreeMap::new();
        let layers = self.net.gpt.config().num_layers;
        let r = self.cfg.rank as i64;
        let mut rng = Rng(self.cfg.seed.wrapping_add(batch as u64));
        for &site in &self.sites {
            let (inp, out) = self.dims(site);
            let layer_ids: Vec<usize> = if site == Site::Head {
                vec![layers]
            } else {
                (0..layers).collect()
            };
            for layer in layer_ids {
                let bound = 1.0 / (inp as f64).sqrt();
                let n = docs as i64 * r * inp;
                let values: Vec<f32> = (0..n)
                    .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let a = Tensor::from_slice(&values)
                    .view([docs as i64, r, inp])
                    .to(dev);
                let b = Tensor::zeros([docs as i64, out, r], (Kind::Float, dev));
                let param = |t: Tensor| AdamParam {
                    m: t.zeros_like(),
                    v: t.zeros_like(),
                    p: t.set_requires_grad(true),
                };
                mats.insert((site_key(site), layer), (param(a), param(b)));
            }
        }
        self.set = Some(LoraSet { mats, steps: 0 });
        self.retained = None;
        Ok(())
    }

    fn update(&mut self, spans: &[Option<ScoredSpan<'_>>]) -> Result<()> {
        let Some((nll, meta)) = self.retained.take() else {
            bail!("LoRA update without a scored forward to learn from")
        };
        let t = nll.size()[1];
        let mut weights = vec![0f32; meta.len() * t as usize];
        for (row, (slot, offsets)) in meta.iter().enumerate() {
            let Some(span) = spans.get(*slot).and_then(|s| s.as_ref()) else {
                continue;
            };
            if span.targets().len() != offsets.len() {
                bail!(
                    "LoRA update: slot {slot}'s span has {} targets but its scored row has {}",
                    span.targets().len(),
                    offsets.len()
                );
            }
            for o in offsets.clone() {
                weights[row * t as usize + o] = 1.0 / offsets.len() as f32;
            }
        }
        if spans.iter().flatten().count() == 0 {
            return Ok(());
        }
        let w = Tensor::from_slice(&weights)
            .view([meta.len() as i64, t])
            .to(self.net.device);
        let loss = (nll * w).sum(Kind::Float);
        loss.backward();
        self.adam();
        self.steps += 1;
        Ok(())
    }
}
