//! Self-generated calibration (record 2026-03-25_ValCalib): the model samples its own sequences,
//! starting from a uniformly random token, at a temperature, with a fixed seed. No KV cache: each
//! new token reruns the prefix, so the cost grows with seq_len² (keep seq_len modest on a CPU).

use anyhow::Result;
use pgolf_model::Gpt;
use tch::{Device, Kind, Tensor};

use crate::calibration::Params;

/// `[sequences, seq_len]` token ids (i64, CPU).
pub fn sample(gpt: &Gpt, p: &Params, seq_len: usize, device: Device) -> Result<Tensor> {
    let vocab = gpt.config().vocab_size as i64;
    tch::manual_seed(p.seed);
    let bar = pgolf_store::progress::bar((p.sequences * seq_len) as u64, "generate");
    let mut out = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for start in (0..p.sequences).step_by(p.gen_batch) {
            let bs = p.gen_batch.min(p.sequences - start) as i64;
            let mut tokens = Tensor::f_randint(vocab, [bs, 1], (Kind::Int64, device))?;
            for _ in 1..seq_len {
                let logits = gpt.logits(&tokens);
                let last = logits.f_select(1, -1)?;
                let probs = (last / p.temperature).f_softmax(-1, Kind::Float)?;
                let next = probs.f_multinomial(1, false)?;
                tokens = Tensor::f_cat(&[tokens, next], 1)?;
                bar.inc(bs as u64);
            }
            out.push(tokens.f_to_device(Device::Cpu)?);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(Tensor::f_cat(&out, 0)?)
}
