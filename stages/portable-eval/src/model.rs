//! The GPT's forward pass on the device, the function of pgolf-model's `literal` formulation
//! (shared/model/src/gpt.rs, gpt/addons.rs) and of the counted evaluator's CPU forward
//! (shared/evaluator/src/model.rs), written in the same order as the latter: one method per part,
//! activations as row-major `[rows, width]` device buffers, every op a WGSL kernel
//! (`kernels.rs`). An architecture option is a field of `ModelConfig`, its tensors in
//! [`GpuModel::load`] and a branch in the one method it changes.
//!
//! A batch holds windows padded to one length `t`: row `r` is position `r % t` of window `r / t`.
//! Padding sits after each window's tokens, so causal attention keeps it out of every real
//! position; only the scored positions reach the head.
//!
//! The tensors are dequantized on the host at load (pgolf-evaluator, the counted decoder) and
//! uploaded once as f32: evaluation reads each weight thousands of times, so decoding on the
//! device would save only the load's upload.

use anyhow::{anyhow, bail, Result};
use pgolf_evaluator::{Activation, Artifact, FinalLane, ModelConfig};
use std::cell::RefCell;
use std::collections::HashMap;

use crate::gpu::{groups_1d, Args, Buf, Gpu, Plan};
use crate::kernels::Kernels;

/// One block's tensors (names under `blocks.{i}.`).
struct Block {
    c_q: Buf,
    c_k: Buf,
    c_v: Buf,
    attn_proj: Buf,
    q_gain: Buf,
    fc: Buf,
    mlp_proj: Buf,
    attn_scale: Buf,
    mlp_scale: Buf,
    resid_mix: Buf,
    norm_weights: Option<[Buf; 2]>,
    attn_gate: Option<Buf>,
}

/// A token table, its optional projection and its scalar scale: `scale · proj(embed[id])`.
struct Table {
    embed: Buf,
    dim: usize,
    proj: Option<Buf>,
    scale: f32,
}

pub struct GpuModel {
    pub cfg: ModelConfig,
    pub gpu: Gpu,
    k: Kernels,
    tok_emb: Buf,
    lm_head: Option<Buf>,
    skip_weights: Buf,
    blocks: Vec<Block>,
    smear_gate: Option<Buf>,
    bigram: Option<Table>,
    /// `ve_shared.*` and the per-layer scales `ve_layer_scales.{k}`.
    value_embed: Option<(Table, Vec<f32>)>,
    skip_gates: Option<Buf>,
    /// π `[L, 2, 2]` and ρ `[L, 2]`, on the host: each layer's six scalars go in its arguments.
    parallel: Option<(Vec<f32>, Vec<f32>)>,
    smear_v2: Option<(Buf, f32)>,
    /// Bound where a kernel's optional input is absent.
    dummy: Buf,
    rope: RefCell<HashMap<usize, (Buf, Buf)>>,
    scratch: RefCell<Option<Scratch>>,
}

/// The windows of one forward pass, as the device takes them.
pub struct Batch {
    /// Positions per window (the longest window; shorter ones are padded with token 0).
    pub t: usize,
    pub windows: usize,
    /// `windows · t` token ids.
    pub ids: Vec<u32>,
    /// The scored rows (`window · t + position`), in order, and their targets.
    pub rows: Vec<u32>,
    pub targets: Vec<u32>,
    /// Indices into `rows` whose whole distribution is wanted.
    pub probes: Vec<usize>,
}

pub struct Output {
    /// `−ln p(target)` per scored row, f32 as computed.
    pub nll: Vec<f32>,
    /// The probabilities of each probe row (f64 from the f32 log-softmax).
    pub probes: Vec<Vec<f64>>,
}

/// Activation buffers for up to `rows` rows, reused across layers and batches (each dispatch is
/// ordered after the writes it reads).
struct Scratch {
    rows: usize,
    h: Buf,
    x0: Buf,
    tmp: Buf,
    u: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    y: Buf,
    a: Buf,
    m: Buf,
    fc: Buf,
    lane1: Buf,
    /// The parallel blocks' attention input (lane 0 mixed with x0).
    read: Buf,
    skips: Vec<Buf>,
    bigram: Option<(Buf, Buf)>,
    ve: Option<(Buf, Buf)>,
}

/// The tensors of an artifact by name, each taken once.
struct Tensors<'g> {
    gpu: &'g Gpu,
    host: HashMap<String, Vec<f32>>,
}

impl Tensors<'_> {
    fn host(&mut self, name: &str) -> Result<Vec<f32>> {
        self.host
            .remove(name)
            .ok_or_else(|| anyhow!("missing tensor {name}"))
    }

    fn buf(&mut self, name: &str) -> Result<Buf> {
        Ok(self.gpu.upload(&self.host(name)?))
    }

    fn table(&mut self, prefix: &str, dim: usize, width: usize) -> Result<Table> {
        Ok(Table {
            embed: self.buf(&format!("{prefix}.embed.weight"))?,
            dim,
            proj: match dim == width {
                true => None,
                false => Some(self.buf(&format!("{prefix}.proj.weight"))?),
            },
            scale: self.host(&format!("{prefix}.scale"))?[0],
        })
    }
}

impl GpuModel {
    /// The model the artifact's config describes, holding exactly its tensors: the names and
    /// shapes are checked against the config's one parameter list (`parameter_shapes`, per
    /// layer: artifacts store banked models per layer too), so a missing, unexpected or misshapen
    /// tensor is an error naming it.
    pub fn load(art: &Artifact, gpu: Gpu) -> Result<GpuModel> {
        let cfg: ModelConfig = serde_json::from_value(art.config.clone())
            .map_err(|e| anyhow!("invalid model config inside the artifact: {e}"))?;
        cfg.validate()?;
        let decoded: HashMap<String, (Vec<usize>, Vec<f32>)> = art
            .decode_all()?
            .into_iter()
            .map(|t| (t.name, (t.shape, t.data)))
            .collect();
        let layout = ModelConfig {
            banks: false,
            ..cfg.clone()
        }
        .parameter_shapes();
        for (name, shape) in &layout {
            match decoded.get(name) {
                None => bail!("missing tensor {name}"),
                Some((s, _)) if s != shape => {
                    bail!("tensor {name} has shape {s:?}, the model expects {shape:?}")
                }
                _ => {}
            }
        }
        if let Some(name) = decoded
            .keys()
            .filter(|n| !layout.iter().any(|(l, _)| l == *n))
            .min()
        {
            bail!("unexpected tensor {name} (not a parameter of this model)");
        }
        let host = decoded.into_iter().map(|(n, (_, d))| (n, d)).collect();
        let k = Kernels::new(&gpu, cfg.head_dim())?;
        let mut t = Tensors { gpu: &gpu, host };
        let d = cfg.model_dim;
        let kv = cfg.kv_dim();
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| format!("blocks.{i}.{s}");
            blocks.push(Block {
                c_q: t.buf(&n("attn.c_q.weight"))?,
                c_k: t.buf(&n("attn.c_k.weight"))?,
                c_v: t.buf(&n("attn.c_v.weight"))?,
                attn_proj: t.buf(&n("attn.proj.weight"))?,
                q_gain: t.buf(&n("attn.q_gain"))?,
                fc: t.buf(&n("mlp.fc.weight"))?,
                mlp_proj: t.buf(&n("mlp.proj.weight"))?,
                attn_scale: t.buf(&n("attn_scale"))?,
                mlp_scale: t.buf(&n("mlp_scale"))?,
                resid_mix: t.buf(&n("resid_mix"))?,
                norm_weights: match cfg.norm_weights {
                    true => Some([
                        t.buf(&n("attn_norm.weight"))?,
                        t.buf(&n("mlp_norm.weight"))?,
                    ]),
                    false => None,
                },
                attn_gate: match cfg.attn_gate {
                    Some(_) => Some(t.buf(&n("attn.attn_gate_w"))?),
                    None => None,
                },
            });
        }
        let model = GpuModel {
            tok_emb: t.buf("tok_emb.weight")?,
            lm_head: match cfg.tie_embeddings {
                true => None,
                false => Some(t.buf("lm_head.weight")?),
            },
            skip_weights: t.buf("skip_weights")?,
            blocks,
            smear_gate: match cfg.smear_gate {
                true => Some(t.buf("smear.gate")?),
                false => None,
            },
            bigram: match &cfg.bigram {
                Some(b) => Some(t.table("bigram", b.dim, d)?),
                None => None,
            },
            value_embed: match &cfg.value_embed {
                Some(ve) => {
                    let table = t.table("ve_shared", ve.dim, kv)?;
                    let scales = (0..ve.layers.len())
                        .map(|k| Ok(t.host(&format!("ve_layer_scales.{k}"))?[0]))
                        .collect::<Result<Vec<f32>>>()?;
                    Some((table, scales))
                }
                None => None,
            },
            skip_gates: match cfg.skip_gates {
                true => Some(t.buf("skip_gates")?),
                false => None,
            },
            parallel: match cfg.parallel {
                Some(_) => Some((
                    t.host("parallel_post_lambdas")?,
                    t.host("parallel_resid_lambdas")?,
                )),
                None => None,
            },
            smear_v2: match cfg.smear_gate_v2 {
                Some(_) => Some((t.buf("smear_gate.weight")?, t.host("smear_lambda")?[0])),
                None => None,
            },
            dummy: gpu.zeros(1),
            rope: RefCell::new(HashMap::new()),
            scratch: RefCell::new(None),
            k,
            cfg,
            gpu,
        };
        Ok(model)
    }

    /// The most rows one forward pass may hold: every activation must fit one binding.
    pub fn max_rows(&self) -> usize {
        let c = &self.cfg;
        let widest = [c.model_dim, c.mlp_hidden(), c.kv_dim()]
            .into_iter()
            .chain(c.bigram.as_ref().map(|b| b.dim))
            .chain(c.value_embed.as_ref().map(|v| v.dim))
            .max()
            .unwrap_or(1);
        (self.gpu.max_binding() / (4 * widest as u64)) as usize
    }

    /// Scores one batch of windows.
    pub fn forward(&self, batch: &Batch) -> Result<Output> {
        let cfg = &self.cfg;
        let (t, rows) = (batch.t, batch.windows * batch.t);
        if rows == 0 || batch.ids.len() != rows || batch.rows.len() != batch.targets.len() {
            bail!(
                "malformed batch: {} ids for {} windows of {t}",
                batch.ids.len(),
                batch.windows
            );
        }
        if rows > self.max_rows() {
            bail!(
                "{rows} rows exceed the device's largest buffer ({} rows)",
                self.max_rows()
            );
        }
        if let Some(&id) = batch
            .ids
            .iter()
            .chain(&batch.targets)
            .find(|&&id| id as usize >= cfg.vocab_size)
        {
            bail!(
                "token {id} is outside the model's vocab of {}",
                cfg.vocab_size
            );
        }
        let d = cfg.model_dim;
        let s = self.scratch(rows);
        let s = s.as_ref().expect("scratch allocated");
        let (cos, sin) = self.rope(t);
        let mut p = Plan::default();
        let ids = self.gpu.upload(&batch.ids);
        let f = Fwd { m: self, rows, t };

        // h = smear(rms(smear_v2(E[x] + bigram(x)))); x0 = h.
        let mut h = s.h.clone();
        let mut tmp = s.tmp.clone();
        f.embed(&mut p, &ids, &self.tok_emb, d, &h);
        if let (Some(table), Some((raw, projected))) = (&self.bigram, &s.bigram) {
            let buckets = cfg.bigram.as_ref().map_or(0, |b| b.buckets);
            p.run(
                &self.k.bigram_embed,
                &[&ids, &table.embed, raw],
                Args::default()
                    .u(rows * table.dim)
                    .u(table.dim)
                    .u(t)
                    .u(buckets),
                groups_1d(rows * table.dim, 256),
            );
            let e = f.table_rows(&mut p, table, raw, projected, d);
            f.add_scaled(&mut p, &h, e, None, table.scale, d);
        }
        if let (Some((w, lambda)), Some(sv)) = (&self.smear_v2, &cfg.smear_gate_v2) {
            p.run(
                &self.k.smear_v2,
                &[&h, &ids, w, &tmp],
                Args::default()
                    .u(rows * d)
                    .u(d)
                    .u(t)
                    .u(sv.window)
                    .u(sv.bos_id)
                    .f(*lambda),
                groups_1d(rows * d, 256),
            );
            std::mem::swap(&mut h, &mut tmp);
        }
        f.rms(&mut p, &h, &tmp, d, rows, None, 1.0);
        std::mem::swap(&mut h, &mut tmp);
        if let Some(gate) = &self.smear_gate {
            p.run(
                &self.k.smear_v1,
                &[&h, gate, &tmp],
                Args::default().u(rows * d).u(d).u(t),
                groups_1d(rows * d, 256),
            );
            std::mem::swap(&mut h, &mut tmp);
        }
        f.copy(&mut p, &h, &s.x0, rows * d);
        let ve = match (&self.value_embed, &s.ve) {
            (Some((table, _)), Some((raw, projected))) => {
                f.embed(&mut p, &ids, &table.embed, table.dim, raw);
                let e = f.table_rows(&mut p, table, raw, projected, cfg.kv_dim());
                // Scaled in place: the layers add scale_k times it.
                f.scale(&mut p, e, table.scale, rows * cfg.kv_dim());
                Some(e.clone())
            }
            _ => None,
        };
        let ve_of = |i: usize| match (&self.value_embed, cfg.value_embed_slot(i), &ve) {
            (Some((_, scales)), Some(k), Some(e)) => Some((e, scales[k])),
            _ => None,
        };
        let rope = Rope { cos, sin };

        // U-Net over the layer slots (the recurrence's virtual list: evaluation always loops):
        // the encoder slots push their outputs; decoder slot j first merges the last one (into
        // lane 0 once the parallel lanes have split).
        let (enc, dec) = cfg.layer_order(true);
        for (slot, &i) in enc.iter().enumerate() {
            f.block(&mut p, s, i, &h, &rope, ve_of(i));
            f.copy(&mut p, &h, &s.skips[slot], rows * d);
        }
        let mut pending = enc.len();
        let mut lanes = false;
        for (j, &i) in dec.iter().enumerate() {
            let skip = (j < cfg.num_skip_weights() && pending > 0).then(|| {
                pending -= 1;
                &s.skips[pending]
            });
            if cfg.parallel_layer(i) {
                if !lanes {
                    f.copy(&mut p, &h, &s.lane1, rows * d);
                    lanes = true;
                }
                if let Some(skip) = skip {
                    f.merge_skip(&mut p, j, &h, skip);
                }
                f.parallel_block(&mut p, s, i, &h, &s.lane1, &rope, ve_of(i));
            } else {
                if let Some(skip) = skip {
                    f.merge_skip(&mut p, j, &h, skip);
                }
                f.block(&mut p, s, i, &h, &rope, ve_of(i));
            }
        }
        if lanes {
            match cfg.parallel.as_ref().map(|l| l.final_lane) {
                Some(FinalLane::Attn) => {}
                Some(FinalLane::Mlp) => f.copy(&mut p, &s.lane1, &h, rows * d),
                _ => {
                    p.run(
                        &self.k.mean2,
                        &[&h, &s.lane1, &tmp],
                        Args::default().u(rows * d),
                        groups_1d(rows * d, 256),
                    );
                    std::mem::swap(&mut h, &mut tmp);
                }
            }
        }
        let reads = f.head(&mut p, &h, batch)?;
        let out = p.submit(&self.gpu)?;
        reads.collect(&out)
    }

    /// Half-split RoPE tables for positions `0..t` over the rotated dims, `[t, rd/2]`:
    /// `inv_freq_i = 1 / base^(2i/rd)` and θ = t·inv_freq in f32, as pgolf-model builds them
    /// (rope.rs); past `rope_ntk_len` the base is `base·(t/len)^(rd/(rd−2))`. `t` is the batch's
    /// padded length, as ttt-eval's batches have.
    fn rope(&self, t: usize) -> (Buf, Buf) {
        let mut cache = self.rope.borrow_mut();
        let (cos, sin) = cache.entry(t).or_insert_with(|| {
            let cfg = &self.cfg;
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
            let cos: Vec<f32> = theta.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = theta.iter().map(|a| a.sin()).collect();
            (self.gpu.upload(&cos), self.gpu.upload(&sin))
        });
        (cos.clone(), sin.clone())
    }

    fn scratch(&self, rows: usize) -> std::cell::RefMut<'_, Option<Scratch>> {
        let mut s = self.scratch.borrow_mut();
        if s.as_ref().is_none_or(|s| s.rows < rows) {
            // Drop the old set before allocating the larger one.
            *s = None;
            let c = &self.cfg;
            let (d, kv) = (c.model_dim, c.kv_dim());
            let z = |w: usize| self.gpu.zeros(rows * w);
            let (enc, _) = c.layer_order(true);
            *s = Some(Scratch {
                rows,
                h: z(d),
                x0: z(d),
                tmp: z(d),
                u: z(d),
                q: z(d),
                k: z(kv),
                v: z(kv),
                y: z(d),
                a: z(d),
                m: z(d),
                fc: z(c.mlp_hidden()),
                lane1: match c.parallel {
                    Some(_) => z(d),
                    None => self.gpu.zeros(1),
                },
                read: match c.parallel {
                    Some(_) => z(d),
                    None => self.gpu.zeros(1),
                },
                skips: enc.iter().map(|_| z(d)).collect(),
                bigram: c.bigram.as_ref().map(|b| (z(b.dim), z(d))),
                ve: c.value_embed.as_ref().map(|v| (z(v.dim), z(kv))),
            });
        }
        s
    }
}

struct Rope {
    cos: Buf,
    sin: Buf,
}

/// One forward pass being recorded: the model, and the batch's rows and window length.
struct Fwd<'a> {
    m: &'a GpuModel,
    rows: usize,
    t: usize,
}

/// What the head asked to read back, and how to turn it into an [`Output`].
struct Reads {
    /// Per head chunk: the read holding its (nll, max, ln Σ) triples.
    stats: Vec<usize>,
    /// Per probe: the read of its soft-capped logits, and its row's position in `stats`.
    probes: Vec<(usize, usize)>,
    scored: usize,
}

impl Reads {
    fn collect(self, out: &[Vec<u32>]) -> Result<Output> {
        let stats: Vec<f32> = self
            .stats
            .iter()
            .flat_map(|&r| out[r].iter().map(|&b| f32::from_bits(b)))
            .collect();
        if stats.len() != 3 * self.scored {
            bail!(
                "the head returned {} values for {} rows",
                stats.len(),
                self.scored
            );
        }
        let nll = stats.chunks(3).map(|s| s[0]).collect();
        let probes = self
            .probes
            .iter()
            .map(|&(r, row)| {
                let (max, ls) = (stats[3 * row + 1] as f64, stats[3 * row + 2] as f64);
                out[r]
                    .iter()
                    .map(|&b| ((f32::from_bits(b) as f64 - max) - ls).exp())
                    .collect()
            })
            .collect();
        Ok(Output { nll, probes })
    }
}

impl<'a> Fwd<'a> {
    fn k(&self) -> &'a Kernels {
        &self.m.k
    }

    /// `y = x wᵀ` for `x` `[m, k]` and `w` `[n, k]` (the three dims as the GEMM names them).
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, p: &mut Plan<'a>, x: &Buf, w: &Buf, y: &Buf, m: usize, n: usize, k: usize) {
        p.run(
            &self.k().gemm,
            &[x, w, y],
            Args::default().u(m).u(n).u(k),
            [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1],
        );
    }

    /// `y = s · (w ⊙ rms(x))` per row of `width`.
    #[allow(clippy::too_many_arguments)]
    fn rms(
        &self,
        p: &mut Plan<'a>,
        x: &Buf,
        y: &Buf,
        width: usize,
        rows: usize,
        w: Option<&Buf>,
        s: f32,
    ) {
        p.run(
            &self.k().rms_norm,
            &[x, w.unwrap_or(&self.m.dummy), y],
            Args::default()
                .u(rows)
                .u(width)
                .u(w.is_some() as usize)
                .f(s),
            groups_1d(rows, 1),
        );
    }

    fn copy(&self, p: &mut Plan<'a>, src: &Buf, dst: &Buf, n: usize) {
        p.run(
            &self.k().copy,
            &[src, dst],
            Args::default().u(n),
            groups_1d(n, 256),
        );
    }

    fn scale(&self, p: &mut Plan<'a>, x: &Buf, alpha: f32, n: usize) {
        p.run(
            &self.k().scale,
            &[x],
            Args::default().u(n).f(alpha),
            groups_1d(n, 256),
        );
    }

    /// `h += alpha · s[s_off..][col] · y` (`s`: a per-column factor and its offset).
    fn add_scaled(
        &self,
        p: &mut Plan<'a>,
        h: &Buf,
        y: &Buf,
        s: Option<(&Buf, usize)>,
        alpha: f32,
        d: usize,
    ) {
        let n = self.rows * d;
        let (sb, off) = s.unwrap_or((&self.m.dummy, 0));
        p.run(
            &self.k().add_scaled,
            &[y, sb, h],
            Args::default()
                .u(n)
                .u(d)
                .u(off)
                .u(s.is_some() as usize)
                .f(alpha),
            groups_1d(n, 256),
        );
    }

    /// `dst[r] = table[ids[r]]`, rows of `width`.
    fn embed(&self, p: &mut Plan<'a>, ids: &Buf, table: &Buf, width: usize, dst: &Buf) {
        let n = self.rows * width;
        p.run(
            &self.k().embed,
            &[ids, table, dst],
            Args::default().u(n).u(width),
            groups_1d(n, 256),
        );
    }

    /// A table's gathered rows `raw`, projected to `width` into `projected` when it has a
    /// projection; returns the buffer holding the result (scale not yet applied).
    fn table_rows<'b>(
        &self,
        p: &mut Plan<'a>,
        table: &Table,
        raw: &'b Buf,
        projected: &'b Buf,
        width: usize,
    ) -> &'b Buf {
        match &table.proj {
            Some(w) => {
                self.gemm(p, raw, w, projected, self.rows, width, table.dim);
                projected
            }
            None => raw,
        }
    }

    /// Decoder slot `j`'s skip merge: `h += w_j⊙skip`, or with skip gates
    /// `h = w_j⊙skip + σ(g_j)⊙(h − w_j⊙skip)`.
    fn merge_skip(&self, p: &mut Plan<'a>, j: usize, h: &Buf, skip: &Buf) {
        let d = self.m.cfg.model_dim;
        match &self.m.skip_gates {
            None => self.add_scaled(p, h, skip, Some((&self.m.skip_weights, j * d)), 1.0, d),
            Some(g) => {
                let n = self.rows * d;
                p.run(
                    &self.k().skip_gate,
                    &[skip, &self.m.skip_weights, g, h],
                    Args::default().u(n).u(d).u(j * d),
                    groups_1d(n, 256),
                );
            }
        }
    }

    fn resid_mix(&self, p: &mut Plan<'a>, h: &Buf, x0: &Buf, mix: &Buf) {
        let d = self.m.cfg.model_dim;
        let n = self.rows * d;
        p.run(
            &self.k().resid_mix,
            &[x0, mix, h],
            Args::default().u(n).u(d),
            groups_1d(n, 256),
        );
    }

    /// `h = m0⊙h + m1⊙x0; h += a_s⊙Attn(s·rms(h)); h += m_s⊙MLP(s·rms(h))`, s the layer's LN
    /// scale (1 when off), `ve` its value embedding and scale.
    fn block(
        &self,
        p: &mut Plan<'a>,
        s: &Scratch,
        i: usize,
        h: &Buf,
        rope: &Rope,
        ve: Option<(&Buf, f32)>,
    ) {
        let (m, d) = (self.m, self.m.cfg.model_dim);
        let b = &m.blocks[i];
        self.resid_mix(p, h, &s.x0, &b.resid_mix);
        let sc = m.cfg.ln_scale_factor(i) as f32;
        let w = |k: usize| b.norm_weights.as_ref().map(|w| &w[k]);
        self.rms(p, h, &s.u, d, self.rows, w(0), sc);
        self.attention(p, s, i, &s.u, &s.a, rope, ve);
        self.add_scaled(p, h, &s.a, Some((&b.attn_scale, 0)), 1.0, d);
        self.rms(p, h, &s.u, d, self.rows, w(1), sc);
        self.mlp(p, s, i, &s.u, &s.m);
        self.add_scaled(p, h, &s.m, Some((&b.mlp_scale, 0)), 1.0, d);
    }

    /// Layer `i` in the parallel lanes, both branches from the lanes before it:
    /// `a = a_s⊙Attn(s·rms(m0⊙lane0 + m1⊙x0))`, `m = m_s⊙MLP(s·rms(lane1))`, then
    /// `lane_k ← ρ[i,k]·lane_k + π[i,0,k]·a + π[i,1,k]·m`.
    #[allow(clippy::too_many_arguments)]
    fn parallel_block(
        &self,
        p: &mut Plan<'a>,
        s: &Scratch,
        i: usize,
        lane0: &Buf,
        lane1: &Buf,
        rope: &Rope,
        ve: Option<(&Buf, f32)>,
    ) {
        let (m, d) = (self.m, self.m.cfg.model_dim);
        let b = &m.blocks[i];
        let (post, resid) = m.parallel.as_ref().expect("parallel lanes configured");
        self.copy(p, lane0, &s.read, self.rows * d);
        self.resid_mix(p, &s.read, &s.x0, &b.resid_mix);
        let sc = m.cfg.ln_scale_factor(i) as f32;
        let w = |k: usize| b.norm_weights.as_ref().map(|w| &w[k]);
        self.rms(p, &s.read, &s.u, d, self.rows, w(0), sc);
        self.attention(p, s, i, &s.u, &s.a, rope, ve);
        self.rms(p, lane1, &s.u, d, self.rows, w(1), sc);
        self.mlp(p, s, i, &s.u, &s.m);
        let (pi, r) = (&post[i * 4..][..4], &resid[i * 2..][..2]);
        let n = self.rows * d;
        p.run(
            &self.k().lanes,
            &[&s.a, &s.m, &b.attn_scale, &b.mlp_scale, lane0, lane1],
            Args::default()
                .u(n)
                .u(d)
                .f(r[0])
                .f(r[1])
                .f(pi[0])
                .f(pi[1])
                .f(pi[2])
                .f(pi[3]),
            groups_1d(n, 256),
        );
    }

    /// GQA causal self-attention of `u` into `out`: v plus the layer's value embedding; q, k
    /// RMS-normed per head and rotated, q scaled by its head's gain; scale `1/√hd`; XSA in the
    /// last `xsa_last_n` layers; the attention gate when configured; the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        p: &mut Plan<'a>,
        s: &Scratch,
        layer: usize,
        u: &Buf,
        out: &Buf,
        rope: &Rope,
        ve: Option<(&Buf, f32)>,
    ) {
        let cfg = &self.m.cfg;
        let b = &self.m.blocks[layer];
        let (rows, t) = (self.rows, self.t);
        let (heads, kvh, hd, d, kvd) = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim(),
            cfg.model_dim,
            cfg.kv_dim(),
        );
        self.gemm(p, u, &b.c_q, &s.q, rows, d, d);
        self.gemm(p, u, &b.c_k, &s.k, rows, kvd, d);
        self.gemm(p, u, &b.c_v, &s.v, rows, kvd, d);
        if let Some((e, alpha)) = ve {
            self.add_scaled(p, &s.v, e, None, alpha, kvd);
        }
        let half = cfg.rope_dims() / 2;
        for (x, n, gain) in [(&s.q, heads, Some(&b.q_gain)), (&s.k, kvh, None)] {
            p.run(
                &self.k().qk_norm_rope,
                &[&rope.cos, &rope.sin, gain.unwrap_or(&self.m.dummy), x],
                Args::default()
                    .u(rows * n)
                    .u(n)
                    .u(hd)
                    .u(half)
                    .u(t)
                    .u(gain.is_some() as usize),
                groups_1d(rows * n, 64),
            );
        }
        p.run(
            &self.k().attention,
            &[&s.q, &s.k, &s.v, &s.y],
            Args::default()
                .u(t)
                .u(heads)
                .u(kvh)
                .f(1.0 / (hd as f32).sqrt()),
            [t.div_ceil(64) as u32, heads as u32, (rows / t) as u32],
        );
        let vecs = rows * heads;
        if cfg.xsa(layer) {
            p.run(
                &self.k().xsa,
                &[&s.v, &s.y],
                Args::default().u(vecs).u(heads).u(kvh).u(hd),
                groups_1d(vecs, 64),
            );
        }
        if let (Some(w), Some(gate)) = (&b.attn_gate, &cfg.attn_gate) {
            p.run(
                &self.k().head_gate,
                &[u, w, &s.y],
                Args::default()
                    .u(vecs)
                    .u(heads)
                    .u(hd)
                    .u(d)
                    .u(gate.width(d))
                    .f(gate.scale() as f32),
                groups_1d(vecs, 64),
            );
        }
        self.gemm(p, &s.y, &b.attn_proj, out, rows, d, d);
    }

    /// `act(u W1ᵀ) W2ᵀ` into `out`, `act` = relu² or leaky_relu(·, slope)².
    fn mlp(&self, p: &mut Plan<'a>, s: &Scratch, layer: usize, u: &Buf, out: &Buf) {
        let cfg = &self.m.cfg;
        let b = &self.m.blocks[layer];
        let (rows, d, hidden) = (self.rows, cfg.model_dim, cfg.mlp_hidden());
        self.gemm(p, u, &b.fc, &s.fc, rows, hidden, d);
        let slope = match cfg.activation {
            Activation::Relu2 => 0.0,
            Activation::LeakyRelu2(s) => s as f32,
        };
        p.run(
            &self.k().activation,
            &[&s.fc],
            Args::default().u(rows * hidden).f(slope),
            groups_1d(rows * hidden, 256),
        );
        self.gemm(p, &s.fc, &b.mlp_proj, out, rows, d, hidden);
    }

    /// The final norm and soft-capped head over the scored rows only, in chunks whose logits fit
    /// one binding: per row `(nll, max, ln Σ)`, and the probe rows' logits.
    fn head(&self, p: &mut Plan<'a>, h: &Buf, batch: &Batch) -> Result<Reads> {
        let m = self.m;
        let (d, v) = (m.cfg.model_dim, m.cfg.vocab_size);
        let head = m.lm_head.as_ref().unwrap_or(&m.tok_emb);
        let limit = (m.gpu.max_binding() / (4 * v as u64)) as usize;
        let chunk = limit.clamp(1, 8192);
        let mut reads = Reads {
            stats: vec![],
            probes: vec![],
            scored: batch.rows.len(),
        };
        for (c, rows) in batch.rows.chunks(chunk).enumerate() {
            let start = c * chunk;
            let n = rows.len();
            let idx = m.gpu.upload(rows);
            let targets = m.gpu.upload(&batch.targets[start..start + n]);
            let (gathered, normed) = (m.gpu.zeros(n * d), m.gpu.zeros(n * d));
            let logits = m.gpu.zeros(n * v);
            let stats = m.gpu.zeros(n * 3);
            p.run(
                &self.k().gather_rows,
                &[&idx, h, &gathered],
                Args::default().u(n * d).u(d),
                groups_1d(n * d, 256),
            );
            self.rms(p, &gathered, &normed, d, n, None, 1.0);
            self.gemm(p, &normed, head, &logits, n, v, d);
            p.run(
                &self.k().softcap_nll,
                &[&targets, &logits, &stats],
                Args::default().u(n).u(v).f(m.cfg.logit_softcap as f32),
                groups_1d(n, 1),
            );
            reads.stats.push(p.read(&stats, 0, n * 3));
            for &probe in batch
                .probes
                .iter()
                .filter(|&&q| (start..start + n).contains(&q))
            {
                let r = p.read(&logits, (probe - start) * v, v);
                reads.probes.push((r, probe));
            }
        }
        Ok(reads)
    }
}
