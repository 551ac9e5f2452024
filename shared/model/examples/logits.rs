//! Writes our model's logits and per-token NLL for the first sequences of a token shard, for the
//! cross-check against the Python reference (bench/check_model_vs_reference.py):
//!
//!     logits CONFIG.json WEIGHTS.safetensors SHARD.bin N_SEQS OUT.safetensors [literal|fast] [FLAGS]
//!
//! Runs on the CPU in f32, in the fast formulation unless `literal` is given. FLAGS, comma
//! separated: `loop-off` runs a configured depth recurrence switched off (the plain U-Net training
//! runs before it switches on); `packed` runs the N sequences as one row of packed documents
//! (R0427: cut at every BOS and every seq_len tokens from a document's start, attention inside
//! each), `x` and `y` then `[1, N·T]`.

use anyhow::{bail, Context, Result};
use pgolf_data::Shard;
use pgolf_model::{
    build, load_safetensors, save_tensors, Documents, Formulation, Hooks, ModelConfig,
};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(6..=8).contains(&args.len()) {
        bail!("usage: logits CONFIG.json WEIGHTS.safetensors SHARD.bin N_SEQS OUT.safetensors [literal|fast] [loop-off,packed]");
    }
    let cfg = ModelConfig::read(Path::new(&args[1]))?;
    let (mut vs, mut gpt) = build(&cfg, Device::Cpu)?;
    let formulation = match args.get(6).map(String::as_str) {
        None | Some("fast") => Formulation::Fast,
        Some("literal") => Formulation::Literal,
        Some(other) => bail!("formulation: literal or fast, not {other}"),
    };
    gpt.set_formulation(formulation, Device::Cpu)?;
    let mut packed = false;
    for flag in args
        .get(7)
        .map_or("", String::as_str)
        .split(',')
        .filter(|f| !f.is_empty())
    {
        match flag {
            "loop-off" => gpt.set_recurrence(false),
            "packed" => packed = true,
            other => bail!("flags: `loop-off`, `packed` (comma separated), not {other}"),
        }
    }
    load_safetensors(&mut vs, Path::new(&args[2]))?;
    let shard = Shard::open(Path::new(&args[3]))?;
    let n: usize = args[4].parse().context("N_SEQS")?;
    let t = cfg.seq_len;
    if shard.len() < n * t + 1 {
        bail!("{}: {} tokens, need {}", args[3], shard.len(), n * t + 1);
    }
    let ids: Vec<i64> = shard.tokens()[..n * t + 1]
        .iter()
        .map(|&v| v as i64)
        .collect();
    let all = Tensor::from_slice(&ids);
    let rows = if packed {
        [1, (n * t) as i64]
    } else {
        [n as i64, t as i64]
    };
    let x = all.narrow(0, 0, (n * t) as i64).view(rows);
    let y = all.narrow(0, 1, (n * t) as i64).view(rows);
    let docs = packed.then(|| {
        let bos = cfg.smear_gate_v2.as_ref().map_or(1, |s| s.bos_id as i64);
        Documents::from_tokens(&ids[..n * t], bos, t)
    });
    let (logits, nll) = tch::no_grad(|| match &docs {
        Some(d) => {
            let mut hooks = Hooks::default();
            (
                gpt.packed_forward(&x, d, &mut hooks),
                gpt.token_nll_in(&x, &y, Some(d), &mut hooks),
            )
        }
        None => (gpt.logits(&x), gpt.token_nll(&x, &y)),
    });
    let loss = nll.mean(Kind::Float);
    save_tensors(
        &[
            ("logits".into(), logits),
            ("nll".into(), nll),
            ("loss".into(), loss),
            ("x".into(), x),
            ("y".into(), y),
        ],
        Path::new(&args[5]),
    )
}
