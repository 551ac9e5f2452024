//! Writes our model's logits and per-token NLL for the first sequences of a token shard, for the
//! cross-check against the Python reference (bench/check_model_vs_reference.py):
//!
//!     logits CONFIG.json WEIGHTS.safetensors SHARD.bin N_SEQS OUT.safetensors [literal|fast] [loop-off]
//!
//! Runs on the CPU in f32, in the fast formulation unless `literal` is given; `loop-off` runs a
//! configured depth recurrence switched off (the plain U-Net training runs before it switches on).

use anyhow::{bail, Context, Result};
use pgolf_data::Shard;
use pgolf_model::{build, load_safetensors, save_tensors, Formulation, ModelConfig};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !(6..=8).contains(&args.len()) {
        bail!("usage: logits CONFIG.json WEIGHTS.safetensors SHARD.bin N_SEQS OUT.safetensors [literal|fast] [loop-off]");
    }
    let cfg = ModelConfig::read(Path::new(&args[1]))?;
    let (mut vs, mut gpt) = build(&cfg, Device::Cpu)?;
    let formulation = match args.get(6).map(String::as_str) {
        None | Some("fast") => Formulation::Fast,
        Some("literal") => Formulation::Literal,
        Some(other) => bail!("formulation: literal or fast, not {other}"),
    };
    gpt.set_formulation(formulation, Device::Cpu)?;
    match args.get(7).map(String::as_str) {
        None => {}
        Some("loop-off") => gpt.set_recurrence(false),
        Some(other) => bail!("the 7th argument is `loop-off` or nothing, not {other}"),
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
    let x = all.narrow(0, 0, (n * t) as i64).view([n as i64, t as i64]);
    let y = all.narrow(0, 1, (n * t) as i64).view([n as i64, t as i64]);
    let (logits, nll) = tch::no_grad(|| (gpt.logits(&x), gpt.token_nll(&x, &y)));
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
