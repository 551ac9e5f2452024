//! The GPT's forward pass (REFERENCE.md §3.2) in f32 on the CPU, written to be read beside the spec:
//! one function per part, activations as row-major `[tokens, width]` slices. An architecture option
//! is a field of [`ModelConfig`] plus a branch in the one function it changes (and its tensors in
//! [`Model::from_artifact`]).

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;

use crate::artifact::{Artifact, DecodedTensor};
use crate::config::{Activation, FinalLane, ModelConfig};

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
    /// `attn_norm.weight`, `mlp_norm.weight` when the norms are learnable.
    norm_weights: Option<[Vec<f32>; 2]>,
    /// `attn.attn_gate_w` `[H, n]` when the attention output is gated.
    attn_gate: Option<Mat>,
}

pub struct Model {
    pub cfg: ModelConfig,
    tok_emb: Mat,
    lm_head: Option<Mat>,
    skip_weights: Vec<f32>,
    blocks: Vec<Block>,
    /// SmearGate's `smear.gate` `[d]`.
    smear_gate: Option<Vec<f32>>,
    /// BigramHash's `bigram.*`.
    bigram: Option<Table>,
    /// The value embedding's `ve_shared.*` and its per-layer scales `ve_layer_scales.{k}`.
    value_embed: Option<(Table, Vec<f32>)>,
    /// `skip_gates` `[num_skip_weights, d]`.
    skip_gates: Option<Vec<f32>>,
    /// The parallel lanes' `parallel_post_lambdas` π `[L, 2, 2]` and `parallel_resid_lambdas` ρ
    /// `[L, 2]`.
    parallel: Option<(Vec<f32>, Vec<f32>)>,
    /// SmearGate v2's `smear_gate.weight` `[1, window]` and `smear_lambda` `[1]`.
    smear_v2: Option<(Vec<f32>, f32)>,
}

/// A token table, its optional projection and its scalar scale: `scale · proj(embed[id])`.
struct Table {
    embed: Mat,
    proj: Option<Mat>,
    scale: f32,
}

impl Table {
    fn take(t: &mut Tensors, prefix: &str, rows: usize, dim: usize, width: usize) -> Result<Table> {
        Ok(Table {
            embed: t.mat(&format!("{prefix}.embed.weight"), rows, dim)?,
            proj: match dim == width {
                true => None,
                false => Some(t.mat(&format!("{prefix}.proj.weight"), width, dim)?),
            },
            scale: t.take(&format!("{prefix}.scale"), &[])?[0],
        })
    }

    /// The rows of `ids`, projected and scaled: `[ids.len(), width]`.
    fn rows(&self, ids: impl Iterator<Item = usize>) -> Vec<f32> {
        let dim = self.embed.cols;
        let rows: Vec<f32> = ids
            .flat_map(|id| self.embed.data[id * dim..][..dim].iter().copied())
            .collect();
        let mut out = match &self.proj {
            Some(p) => linear(&rows, p),
            None => rows,
        };
        out.iter_mut().for_each(|v| *v *= self.scale);
        out
    }
}

/// R0322's bigram hash of one window: position 0 → `B−1`; position t → `(36313·x_t XOR
/// 27191·x_{t−1}) mod (B−1)`, in the record's int32 arithmetic.
fn bigram_hash(ids: &[u16], buckets: usize) -> impl Iterator<Item = usize> + '_ {
    let m = buckets as i32 - 1;
    (0..ids.len()).map(move |t| match t {
        0 => m as usize,
        _ => {
            let (cur, prev) = (ids[t] as i32, ids[t - 1] as i32);
            (36313i32.wrapping_mul(cur) ^ 27191i32.wrapping_mul(prev)).rem_euclid(m) as usize
        }
    })
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
                norm_weights: match cfg.norm_weights {
                    true => Some([
                        t.take(&n("attn_norm.weight"), &[d])?,
                        t.take(&n("mlp_norm.weight"), &[d])?,
                    ]),
                    false => None,
                },
                attn_gate: match &cfg.attn_gate {
                    Some(g) => Some(t.mat(&n("attn.attn_gate_w"), cfg.num_heads, g.width(d))?),
                    None => None,
                },
            });
        }
        let lm_head = match cfg.tie_embeddings {
            true => None,
            false => Some(t.mat("lm_head.weight", v, d)?),
        };
        let smear_gate = match cfg.smear_gate {
            true => Some(t.take("smear.gate", &[d])?),
            false => None,
        };
        let bigram = match &cfg.bigram {
            Some(b) => Some(Table::take(&mut t, "bigram", b.buckets, b.dim, d)?),
            None => None,
        };
        let value_embed = match &cfg.value_embed {
            Some(ve) => {
                let table = Table::take(&mut t, "ve_shared", v, ve.dim, kv)?;
                let scales = (0..ve.layers.len())
                    .map(|k| Ok(t.take(&format!("ve_layer_scales.{k}"), &[1])?[0]))
                    .collect::<Result<Vec<f32>>>()?;
                Some((table, scales))
            }
            None => None,
        };
        let skip_gates = match cfg.skip_gates {
            true => Some(t.take("skip_gates", &[cfg.num_skip_weights(), d])?),
            false => None,
        };
        let parallel = match cfg.parallel {
            Some(_) => {
                let l = cfg.num_layers;
                Some((
                    t.take("parallel_post_lambdas", &[l, 2, 2])?,
                    t.take("parallel_resid_lambdas", &[l, 2])?,
                ))
            }
            None => None,
        };
        let smear_v2 = match &cfg.smear_gate_v2 {
            Some(s) => Some((
                t.take("smear_gate.weight", &[1, s.window])?,
                t.take("smear_lambda", &[1])?[0],
            )),
            None => None,
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
            smear_gate,
            bigram,
            value_embed,
            skip_gates,
            parallel,
            smear_v2,
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
        // h = smear(rms(smear_v2(E[x] + bigram(x)))); x0 = h.
        let mut h: Vec<f32> = inputs
            .iter()
            .flat_map(|&id| self.tok_emb.data[id as usize * d..][..d].iter().copied())
            .collect();
        if let (Some(table), Some(b)) = (&self.bigram, &cfg.bigram) {
            let rows = table.rows(bigram_hash(inputs, b.buckets));
            h.iter_mut().zip(rows).for_each(|(x, r)| *x += r);
        }
        if let (Some((w, lambda)), Some(s)) = (&self.smear_v2, &cfg.smear_gate_v2) {
            smear_v2(&mut h, d, inputs, w, *lambda, s.bos_id);
        }
        rms_norm(&mut h, d);
        if let Some(gate) = &self.smear_gate {
            smear(&mut h, gate);
        }
        let x0 = h.clone();
        let ve = self
            .value_embed
            .as_ref()
            .map(|(table, _)| table.rows(inputs.iter().map(|&id| id as usize)));
        let rope = Rope::new(cfg, inputs.len());
        let ve_of = |i: usize| match (&self.value_embed, cfg.value_embed_slot(i), &ve) {
            (Some((_, scales)), Some(k), Some(ve)) => {
                Some(ve.iter().map(|v| v * scales[k]).collect::<Vec<f32>>())
            }
            _ => None,
        };
        // U-Net over the layer slots (the recurrence's virtual list: evaluation always loops):
        // the encoder slots push their outputs; decoder slot j first merges the last one (into
        // lane 0 once the parallel lanes have split).
        let (enc, dec) = cfg.layer_order(true);
        let mut skips: Vec<Vec<f32>> = Vec::with_capacity(enc.len());
        for &i in &enc {
            self.block(i, &self.blocks[i], &mut h, &x0, &rope, ve_of(i).as_deref());
            skips.push(h.clone());
        }
        let mut lanes: Option<(Vec<f32>, Vec<f32>)> = None;
        for (j, &i) in dec.iter().enumerate() {
            let b = &self.blocks[i];
            if cfg.parallel_layer(i) {
                let (lane0, lane1) = lanes.get_or_insert_with(|| (h.clone(), h.clone()));
                if let Some(skip) = (j < cfg.num_skip_weights()).then(|| skips.pop()).flatten() {
                    self.merge_skip(j, lane0, &skip);
                }
                self.parallel_block(i, b, lane0, lane1, &x0, &rope, ve_of(i).as_deref());
            } else {
                if let Some(skip) = (j < cfg.num_skip_weights()).then(|| skips.pop()).flatten() {
                    self.merge_skip(j, &mut h, &skip);
                }
                self.block(i, b, &mut h, &x0, &rope, ve_of(i).as_deref());
            }
        }
        if let Some((lane0, lane1)) = lanes {
            h = match cfg.parallel.as_ref().map(|p| p.final_lane) {
                Some(FinalLane::Attn) => lane0,
                Some(FinalLane::Mlp) => lane1,
                _ => lane0
                    .iter()
                    .zip(&lane1)
                    .map(|(a, b)| 0.5 * (a + b))
                    .collect(),
            };
        }
        let mut last = h[(inputs.len() - targets.len()) * d..].to_vec();
        rms_norm(&mut last, d);
        Ok(self.head_nll(&last, targets))
    }

    /// Decoder slot `j`'s skip merge: `h += w_j⊙skip`, or with skip gates
    /// `h = lerp(w_j⊙skip, h, σ(g_j)) = w_j⊙skip + σ(g_j)⊙(h − w_j⊙skip)`.
    fn merge_skip(&self, j: usize, h: &mut [f32], skip: &[f32]) {
        let d = self.cfg.model_dim;
        let w = &self.skip_weights[j * d..][..d];
        let Some(gates) = &self.skip_gates else {
            return add_scaled(h, w, skip);
        };
        let g: Vec<f32> = gates[j * d..][..d].iter().map(|&v| sigmoid(v)).collect();
        for (row, sr) in h.chunks_mut(d).zip(skip.chunks(d)) {
            for c in 0..d {
                let start = w[c] * sr[c];
                row[c] = start + g[c] * (row[c] - start);
            }
        }
    }

    /// Layer `i` in the parallel lanes, both branches from the lanes before it:
    /// `a = a_s⊙Attn(s·rms(m0⊙lane0 + m1⊙x0))`, `m = m_s⊙MLP(s·rms(lane1))`, then
    /// `lane_k ← ρ[i,k]·lane_k + π[i,0,k]·a + π[i,1,k]·m`.
    #[allow(clippy::too_many_arguments)]
    fn parallel_block(
        &self,
        i: usize,
        b: &Block,
        lane0: &mut [f32],
        lane1: &mut [f32],
        x0: &[f32],
        rope: &Rope,
        ve: Option<&[f32]>,
    ) {
        let d = self.cfg.model_dim;
        let (post, resid) = self.parallel.as_ref().expect("parallel lanes configured");
        let (m0, m1) = b.resid_mix.split_at(d);
        let mut read = lane0.to_vec();
        for (row, row0) in read.chunks_mut(d).zip(x0.chunks(d)) {
            for c in 0..d {
                row[c] = m0[c] * row[c] + m1[c] * row0[c];
            }
        }
        let s = self.cfg.ln_scale_factor(i) as f32;
        let w = |k: usize| b.norm_weights.as_ref().map(|w| w[k].as_slice());
        let mut a = self.attention(i, b, &normed(&read, d, w(0), s), rope, ve);
        scale_columns(&mut a, &b.attn_scale);
        let mut m = self.mlp(b, &normed(lane1, d, w(1), s));
        scale_columns(&mut m, &b.mlp_scale);
        let (p, r) = (&post[i * 4..][..4], &resid[i * 2..][..2]);
        for k in 0..lane0.len() {
            let (l0, l1) = (lane0[k], lane1[k]);
            lane0[k] = r[0] * l0 + p[0] * a[k] + p[2] * m[k];
            lane1[k] = r[1] * l1 + p[1] * a[k] + p[3] * m[k];
        }
    }

    /// `h = m0⊙h + m1⊙x0; h += a_s⊙Attn(s·rms(h)); h += m_s⊙MLP(s·rms(h))`, s the layer's LN
    /// scale (1 when off), `ve` its value embedding.
    fn block(
        &self,
        i: usize,
        b: &Block,
        h: &mut [f32],
        x0: &[f32],
        rope: &Rope,
        ve: Option<&[f32]>,
    ) {
        let d = self.cfg.model_dim;
        let (m0, m1) = b.resid_mix.split_at(d);
        for (row, row0) in h.chunks_mut(d).zip(x0.chunks(d)) {
            for c in 0..d {
                row[c] = m0[c] * row[c] + m1[c] * row0[c];
            }
        }
        let s = self.cfg.ln_scale_factor(i) as f32;
        let w = |k: usize| b.norm_weights.as_ref().map(|w| w[k].as_slice());
        let attn = self.attention(i, b, &normed(h, d, w(0), s), rope, ve);
        add_scaled(h, &b.attn_scale, &attn);
        let mlp = self.mlp(b, &normed(h, d, w(1), s));
        add_scaled(h, &b.mlp_scale, &mlp);
    }

    /// GQA causal self-attention: v plus the layer's value embedding; q, k RMS-normed per head
    /// and rotated, q scaled by its head's gain; query head `h` reads kv head `h / (H / Hkv)`;
    /// scale `1/√hd`; in XSA layers each head's output loses its component along its normalised
    /// value; with an attention gate each head's output is then multiplied by
    /// `σ(s·w_h·u[0:n])`.
    fn attention(
        &self,
        layer: usize,
        b: &Block,
        u: &[f32],
        rope: &Rope,
        ve: Option<&[f32]>,
    ) -> Vec<f32> {
        let cfg = &self.cfg;
        let (heads, hd, d, kvd) = (cfg.num_heads, cfg.head_dim(), cfg.model_dim, cfg.kv_dim());
        let group = heads / cfg.num_kv_heads;
        let (mut q, mut k, mut v) = (linear(u, &b.c_q), linear(u, &b.c_k), linear(u, &b.c_v));
        if let Some(ve) = ve {
            v.iter_mut().zip(ve).for_each(|(x, e)| *x += e);
        }
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
                if cfg.xsa(layer) {
                    let vi = &v[i * kvd + off..][..hd];
                    let norm = dot(vi, vi).sqrt().max(1e-12);
                    let along = dot(out, vi) / norm;
                    for (o, x) in out.iter_mut().zip(vi) {
                        *o -= along * (x / norm);
                    }
                }
                if let (Some(w), Some(gate)) = (&b.attn_gate, &cfg.attn_gate) {
                    let n = w.cols;
                    let z = dot(&u[i * d..][..n], &w.data[head * n..][..n]);
                    let g = sigmoid(gate.scale() as f32 * z);
                    out.iter_mut().for_each(|o| *o *= g);
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

/// Half-split RoPE tables for positions `0..t` over the first `rd` dims of a head: `inv_freq_i =
/// 1 / base^(2i/rd)`, θ = t·inv_freq, all in f32 as upstream builds them; past `rope_ntk_len` the
/// base is `base·(t/len)^(rd/(rd−2))` (R0322's rescale).
struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    fn new(cfg: &ModelConfig, t: usize) -> Rope {
        let rd = cfg.rope_dims();
        let mut base = cfg.rope_base;
        if let Some(len) = cfg.rope_ntk_len.filter(|&len| t > len) {
            base *= (t as f64 / len as f64).powf(rd as f64 / (rd as f64 - 2.0));
        }
        let base = base as f32;
        let inv: Vec<f32> = (0..rd / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / rd as f32))
            .collect();
        let theta: Vec<f32> = (0..t)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        Rope {
            half: rd / 2,
            cos: theta.iter().map(|a| a.cos()).collect(),
            sin: theta.iter().map(|a| a.sin()).collect(),
        }
    }

    /// `[x1 cos + x2 sin, x2 cos − x1 sin]` over the rotated dims of one head's vector at
    /// position `t`; the rest pass through.
    fn rotate(&self, x: &mut [f32], t: usize) {
        let (c, s) = (&self.cos[t * self.half..], &self.sin[t * self.half..]);
        let (x1, x2) = x[..2 * self.half].split_at_mut(self.half);
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

/// `s · (w ⊙ rms(x))` per row (`w` the norm's weight, if it has one).
fn normed(x: &[f32], width: usize, w: Option<&[f32]>, s: f32) -> Vec<f32> {
    let mut y = x.to_vec();
    rms_norm(&mut y, width);
    if let Some(w) = w {
        for row in y.chunks_mut(width) {
            row.iter_mut().zip(w).for_each(|(v, g)| *v *= g);
        }
    }
    if s != 1.0 {
        y.iter_mut().for_each(|v| *v *= s);
    }
    y
}

/// SmearGate v1 in place: `x_t ← (1 − σ(g))⊙x_t + σ(g)⊙x_{t−1}` (the pre-smear `x_{t−1}`, 0 at t=0).
fn smear(h: &mut [f32], gate: &[f32]) {
    let d = gate.len();
    let g: Vec<f32> = gate.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    for t in (0..h.len() / d).rev() {
        for c in 0..d {
            let prev = if t == 0 { 0.0 } else { h[(t - 1) * d + c] };
            h[t * d + c] = (1.0 - g[c]) * h[t * d + c] + g[c] * prev;
        }
    }
}

/// SmearGate v2 in place on the raw embedding rows `h` of `ids`: for t ≥ 1,
/// `x_t ← x_t + λ·σ(w·x_t[0:n])·x_{t−1}·[id_t ≠ bos]` (the pre-smear `x_t`, `x_{t−1}`).
fn smear_v2(h: &mut [f32], d: usize, ids: &[u16], w: &[f32], lambda: f32, bos: usize) {
    let n = w.len();
    for t in (1..ids.len()).rev() {
        if ids[t] as usize == bos {
            continue;
        }
        let g = lambda * sigmoid(dot(&h[t * d..][..n], w));
        let (prev, cur) = h[(t - 1) * d..][..2 * d].split_at_mut(d);
        cur.iter_mut()
            .zip(prev.iter())
            .for_each(|(x, p)| *x += g * p);
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// `y *= s` per column.
fn scale_columns(y: &mut [f32], s: &[f32]) {
    for row in y.chunks_mut(s.len()) {
        row.iter_mut().zip(s).for_each(|(v, g)| *v *= g);
    }
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
