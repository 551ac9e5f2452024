//! The GPT's forward pass (REFERENCE.md §3.2) in f32 on the CPU, written to be read beside the spec:
//! one function per part, activations as row-major `[tokens, width]` slices. An architecture option
//! is a field of [`ModelConfig`] plus a branch in the one function it changes (and its tensors in
//! [`Model::from_artifact`]).

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;

use crate::artifact::{Artifact, DecodedTensor};
use crate::config::{Activation, ModelConfig};

/// A row-major `[rows, cols]` matrix; a Linear weight has `rows` = output features.
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// One block's tensors (names under `blocks.{i}.`, as upstream's `state_dict`).
struct Block {
    c_q: Mat,
    c_k: Mat,
    c_v: Mat,
    attn_proj: Mat,
    q_gain: Vec<f32>,
    fc: Mat,
    mlp_proj: Mat,
    attn_scale: Vec<f32>,
    mlp_scale: Vec<f32>,
    resid_mix: Vec<f32>,
}

pub struct Model {
    pub cfg: ModelConfig,
    tok_emb: Mat,
    lm_head: Option<Mat>,
    skip_weights: Vec<f32>,
    blocks: Vec<Block>,
}

/// The decoded tensors, handed out once each by name and shape.
struct Tensors(HashMap<String, DecodedTensor>);

impl Tensors {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .0
            .remove(name)
            .ok_or_else(|| anyhow!("missing tensor {name}"))?;
        if t.shape != shape {
            bail!(
                "tensor {name} has shape {:?}, the model expects {shape:?}",
                t.shape
            );
        }
        Ok(t.data)
    }

    fn mat(&mut self, name: &str, rows: usize, cols: usize) -> Result<Mat> {
        let data = self.take(name, &[rows, cols])?;
        Ok(Mat { rows, cols, data })
    }
}

impl Model {
    /// The model the artifact's config describes, holding exactly the artifact's tensors: a
    /// missing, unexpected or misshapen tensor is an error naming it.
    pub fn from_artifact(art: &Artifact) -> Result<Model> {
        let cfg: ModelConfig = serde_json::from_value(art.config.clone())
            .map_err(|e| anyhow!("invalid model config inside the artifact: {e}"))?;
        cfg.validate()?;
        let mut t = Tensors(
            art.decode_all()?
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
        );
        let (v, d, kv, hidden) = (
            cfg.vocab_size,
            cfg.model_dim,
            cfg.kv_dim(),
            cfg.mlp_hidden(),
        );
        let tok_emb = t.mat("tok_emb.weight", v, d)?;
        let skip_weights = t.take("skip_weights", &[cfg.num_skip_weights(), d])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| format!("blocks.{i}.{s}");
            blocks.push(Block {
                c_q: t.mat(&n("attn.c_q.weight"), d, d)?,
                c_k: t.mat(&n("attn.c_k.weight"), kv, d)?,
                c_v: t.mat(&n("attn.c_v.weight"), kv, d)?,
                attn_proj: t.mat(&n("attn.proj.weight"), d, d)?,
                q_gain: t.take(&n("attn.q_gain"), &[cfg.num_heads])?,
                fc: t.mat(&n("mlp.fc.weight"), hidden, d)?,
                mlp_proj: t.mat(&n("mlp.proj.weight"), d, hidden)?,
                attn_scale: t.take(&n("attn_scale"), &[d])?,
                mlp_scale: t.take(&n("mlp_scale"), &[d])?,
                resid_mix: t.take(&n("resid_mix"), &[2, d])?,
            });
        }
        let lm_head = match cfg.tie_embeddings {
            true => None,
            false => Some(t.mat("lm_head.weight", v, d)?),
        };
        if let Some(name) = t.0.keys().min() {
            bail!("unexpected tensor {name} (not a parameter of this model)");
        }
        Ok(Model {
            cfg,
            tok_emb,
            lm_head,
            skip_weights,
            blocks,
        })
    }

    /// `−ln p(target)` (f32, nats) for the last `targets.len()` positions of one window of
    /// `inputs`; position `p` predicts `targets[p − (inputs.len() − targets.len())]`.
    pub fn nll(&self, inputs: &[u16], targets: &[u16]) -> Result<Vec<f32>> {
        let (cfg, d) = (&self.cfg, self.cfg.model_dim);
        if targets.len() > inputs.len() {
            bail!("{} targets for {} inputs", targets.len(), inputs.len());
        }
        if let Some(id) = inputs
            .iter()
            .chain(targets)
            .find(|&&id| id as usize >= cfg.vocab_size)
        {
            bail!(
                "token {id} is outside the model's vocab of {}",
                cfg.vocab_size
            );
        }
        // h = rms(E[x]); x0 = h.
        let mut h: Vec<f32> = inputs
            .iter()
            .flat_map(|&id| self.tok_emb.data[id as usize * d..][..d].iter().copied())
            .collect();
        rms_norm(&mut h, d);
        let x0 = h.clone();
        let rope = Rope::new(cfg, inputs.len());
        // U-Net: the encoder half pushes its outputs; each decoder block first adds the last one.
        let enc = cfg.num_encoder_layers();
        let mut skips: Vec<Vec<f32>> = Vec::with_capacity(enc);
        for (i, b) in self.blocks.iter().enumerate() {
            if i >= enc {
                if let Some(skip) = skips.pop() {
                    add_scaled(&mut h, &self.skip_weights[(i - enc) * d..][..d], &skip);
                }
            }
            self.block(b, &mut h, &x0, &rope);
            if i < enc {
                skips.push(h.clone());
            }
        }
        let mut last = h[(inputs.len() - targets.len()) * d..].to_vec();
        rms_norm(&mut last, d);
        Ok(self.head_nll(&last, targets))
    }

    /// `h = m0⊙h + m1⊙x0; h += a_s⊙Attn(rms(h)); h += m_s⊙MLP(rms(h))`.
    fn block(&self, b: &Block, h: &mut [f32], x0: &[f32], rope: &Rope) {
        let d = self.cfg.model_dim;
        let (m0, m1) = b.resid_mix.split_at(d);
        for (row, row0) in h.chunks_mut(d).zip(x0.chunks(d)) {
            for c in 0..d {
                row[c] = m0[c] * row[c] + m1[c] * row0[c];
            }
        }
        let attn = self.attention(b, &normed(h, d), rope);
        add_scaled(h, &b.attn_scale, &attn);
        let mlp = self.mlp(b, &normed(h, d));
        add_scaled(h, &b.mlp_scale, &mlp);
    }

    /// GQA causal self-attention: q, k RMS-normed per head and rotated, q scaled by its head's
    /// gain; query head `h` reads kv head `h / (H / Hkv)`; scale `1/√hd`.
    fn attention(&self, b: &Block, u: &[f32], rope: &Rope) -> Vec<f32> {
        let cfg = &self.cfg;
        let (heads, hd, d, kvd) = (cfg.num_heads, cfg.head_dim(), cfg.model_dim, cfg.kv_dim());
        let group = heads / cfg.num_kv_heads;
        let (mut q, mut k, v) = (linear(u, &b.c_q), linear(u, &b.c_k), linear(u, &b.c_v));
        for (t, row) in q.chunks_mut(d).enumerate() {
            for (head, x) in row.chunks_mut(hd).enumerate() {
                rms_norm(x, hd);
                rope.rotate(x, t);
                x.iter_mut().for_each(|v| *v *= b.q_gain[head]);
            }
        }
        for (t, row) in k.chunks_mut(kvd).enumerate() {
            for x in row.chunks_mut(hd) {
                rms_norm(x, hd);
                rope.rotate(x, t);
            }
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut y = vec![0f32; q.len()];
        y.par_chunks_mut(d).enumerate().for_each(|(i, yi)| {
            let mut p = vec![0f32; i + 1];
            for head in 0..heads {
                let (qi, off) = (&q[i * d + head * hd..][..hd], head / group * hd);
                for (j, pj) in p.iter_mut().enumerate() {
                    *pj = dot(qi, &k[j * kvd + off..][..hd]) * scale;
                }
                let max = p.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
                p.iter_mut().for_each(|s| *s = (*s - max).exp());
                let sum: f32 = p.iter().sum();
                let out = &mut yi[head * hd..][..hd];
                for (j, pj) in p.iter().enumerate() {
                    let w = pj / sum;
                    for (o, x) in out.iter_mut().zip(&v[j * kvd + off..][..hd]) {
                        *o += w * x;
                    }
                }
            }
        });
        linear(&y, &b.attn_proj)
    }

    /// `act(u W1ᵀ) W2ᵀ` with `act` = relu² or leaky_relu(·, slope)².
    fn mlp(&self, b: &Block, u: &[f32]) -> Vec<f32> {
        let mut a = linear(u, &b.fc);
        let slope = match self.cfg.activation {
            Activation::Relu2 => 0.0,
            Activation::LeakyRelu2(s) => s as f32,
        };
        for x in &mut a {
            let y = if *x > 0.0 { *x } else { *x * slope };
            *x = y * y;
        }
        linear(&a, &b.mlp_proj)
    }

    /// Soft-capped logits `cap·tanh(h Eᵀ / cap)` (E the tied embedding, or the untied head), and
    /// `−ln softmax(logits)[y]` per row, all in f32.
    fn head_nll(&self, h: &[f32], targets: &[u16]) -> Vec<f32> {
        let head = self.lm_head.as_ref().unwrap_or(&self.tok_emb);
        let cap = self.cfg.logit_softcap as f32;
        let logits = linear(h, head);
        logits
            .par_chunks(head.rows)
            .zip(targets)
            .map(|(z, &y)| {
                let z: Vec<f32> = z.iter().map(|v| (v / cap).tanh() * cap).collect();
                let max = z.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                -((z[y as usize] - max) - sum.ln())
            })
            .collect()
    }
}

/// Half-split RoPE tables for positions `0..t`: `inv_freq_i = 1 / base^(2i/hd)`, θ = t·inv_freq,
/// all in f32 as upstream builds them.
struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    fn new(cfg: &ModelConfig, t: usize) -> Rope {
        let (hd, base) = (cfg.head_dim(), cfg.rope_base as f32);
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / hd as f32))
            .collect();
        let theta: Vec<f32> = (0..t)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        Rope {
            half: hd / 2,
            cos: theta.iter().map(|a| a.cos()).collect(),
            sin: theta.iter().map(|a| a.sin()).collect(),
        }
    }

    /// `[x1 cos + x2 sin, x2 cos − x1 sin]` for one head's vector at position `t`.
    fn rotate(&self, x: &mut [f32], t: usize) {
        let (c, s) = (&self.cos[t * self.half..], &self.sin[t * self.half..]);
        let (x1, x2) = x.split_at_mut(self.half);
        for i in 0..self.half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c[i] + b * s[i];
            x2[i] = b * c[i] - a * s[i];
        }
    }
}

/// Weightless RMSNorm over each row of `width`: `x / √(mean(x²) + ε)`, ε the f32 machine epsilon
/// (torch's `rms_norm` default).
fn rms_norm(x: &mut [f32], width: usize) {
    for row in x.chunks_mut(width) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let r = 1.0 / (ms + f32::EPSILON).sqrt();
        row.iter_mut().for_each(|v| *v *= r);
    }
}

fn normed(x: &[f32], width: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    rms_norm(&mut y, width);
    y
}

/// `h += s ⊙ y`, with `s` one value per column.
fn add_scaled(h: &mut [f32], s: &[f32], y: &[f32]) {
    for (row, yr) in h.chunks_mut(s.len()).zip(y.chunks(s.len())) {
        for c in 0..s.len() {
            row[c] += s[c] * yr[c];
        }
    }
}

/// `x Wᵀ` for `x: [t, w.cols]` → `[t, w.rows]`. Blocks of 16 rows run in parallel; each weight row
/// is read once per block while it is in cache.
fn linear(x: &[f32], w: &Mat) -> Vec<f32> {
    const BLOCK: usize = 16;
    let (n, k) = (w.rows, w.cols);
    let mut out = vec![0f32; x.len() / k * n];
    out.par_chunks_mut(BLOCK * n)
        .zip(x.par_chunks(BLOCK * k))
        .for_each(|(o, xb)| {
            for (j, wj) in w.data.chunks_exact(k).enumerate() {
                for (i, xi) in xb.chunks_exact(k).enumerate() {
                    o[i * n + j] = dot(xi, wj);
                }
            }
        });
    out
}

/// A dot product in eight independent f32 lanes (which the compiler vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
