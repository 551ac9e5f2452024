//! The WGSL kernels, compiled once per model (the attention kernel is specialised to its head
//! dim). Each `.wgsl` file holds a shared prelude and sections opened by `//# kernel NAME`; a
//! kernel is compiled from the prelude plus its section, so every section keeps its own bindings
//! (0.. its buffers in order, then the arguments; gpu.rs `Plan::run`).

use anyhow::{bail, Result};

use crate::gpu::{Gpu, Kernel};

const GEMM: &str = include_str!("shaders/gemm.wgsl");
const ROWS: &str = include_str!("shaders/rows.wgsl");
const ELEMENTWISE: &str = include_str!("shaders/elementwise.wgsl");
const ATTENTION: &str = include_str!("shaders/attention.wgsl");

/// Workgroup memory the attention kernel may use for its key and value tiles: the WebGPU default
/// limit, which every adapter offers.
const ATTENTION_TILE_BYTES: usize = 16384;

pub struct Kernels {
    pub gemm: Kernel,
    pub rms_norm: Kernel,
    pub softcap_nll: Kernel,
    pub copy: Kernel,
    pub mean2: Kernel,
    pub scale: Kernel,
    pub resid_mix: Kernel,
    pub add_scaled: Kernel,
    pub skip_gate: Kernel,
    pub lanes: Kernel,
    pub activation: Kernel,
    pub embed: Kernel,
    pub bigram_embed: Kernel,
    pub smear_v1: Kernel,
    pub smear_v2: Kernel,
    pub gather_rows: Kernel,
    pub qk_norm_rope: Kernel,
    pub attention: Kernel,
    pub xsa: Kernel,
    pub head_gate: Kernel,
}

/// The prelude and section `name` of `file`, as one WGSL source.
fn section(file: &str, name: &str) -> Result<String> {
    let mut parts = file.split("//# kernel ");
    let prelude = parts.next().unwrap_or_default();
    for part in parts {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        if title.trim() == name {
            return Ok(format!("{prelude}\n{body}"));
        }
    }
    bail!("no WGSL kernel {name}")
}

impl Kernels {
    pub fn new(gpu: &Gpu, head_dim: usize) -> Result<Kernels> {
        let k = |file: &str, fname: &str, name: &str| -> Result<Kernel> {
            gpu.kernel(fname, &section(file, name)?, name)
        };
        // Keys and values of BK positions: 2 · BK · hd f32s, at most 64 positions a tile.
        let bk = (ATTENTION_TILE_BYTES / (8 * head_dim)).clamp(1, 64);
        let attention = section(ATTENTION, "attention")?
            .replace("{{HD}}", &head_dim.to_string())
            .replace("{{BK}}", &bk.to_string());
        let e = |name: &str| k(ELEMENTWISE, "elementwise.wgsl", name);
        let a = |name: &str| k(ATTENTION, "attention.wgsl", name);
        Ok(Kernels {
            gemm: k(GEMM, "gemm.wgsl", "gemm")?,
            rms_norm: k(ROWS, "rows.wgsl", "rms_norm")?,
            softcap_nll: k(ROWS, "rows.wgsl", "softcap_nll")?,
            copy: e("copy")?,
            mean2: e("mean2")?,
            scale: e("scale")?,
            resid_mix: e("resid_mix")?,
            add_scaled: e("add_scaled")?,
            skip_gate: e("skip_gate")?,
            lanes: e("lanes")?,
            activation: e("activation")?,
            embed: e("embed")?,
            bigram_embed: e("bigram_embed")?,
            smear_v1: e("smear_v1")?,
            smear_v2: e("smear_v2")?,
            gather_rows: e("gather_rows")?,
            qk_norm_rope: a("qk_norm_rope")?,
            attention: gpu.kernel("attention.wgsl", &attention, "attention")?,
            xsa: a("xsa")?,
            head_gate: a("head_gate")?,
        })
    }
}
