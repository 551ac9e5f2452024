//! Periodic validation (REFERENCE.md §2.3, upstream `eval_val`): the val stream in
//! non-overlapping windows of T tokens, rank r taking sequences `[n·r/W, n·(r+1)/W)` in batches;
//! NLL summed in f64, all-reduced, then `val_loss = ΣNLL / targets` and
//! `val_bpb = ΣNLL / (ln 2 · Σbytes)`. Every target is scored once. A model trained on packed
//! documents is validated as R0427's `eval_val` does: each batch one row, attention inside each
//! document (cut at every BOS and every T tokens from a cut).

use anyhow::{ensure, Result};
use pgolf_model::{Documents, Gpt, Hooks};
use pgolf_optim::Collective;
use std::f64::consts::LN_2;
use tch::{Kind, Tensor};

use crate::data::ValTokens;

#[derive(Clone, Copy, Debug)]
pub struct ValResult {
    pub loss: f64,
    pub bpb: f64,
}

pub fn validate(
    gpt: &Gpt,
    val: &ValTokens,
    batch_seqs: usize,
    packed_bos: Option<i64>,
    comm: &dyn Collective,
) -> Result<ValResult> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let total = val.sequences();
    let (start, end) = (total * rank / world, total * (rank + 1) / world);
    let t = val.seq_len as i64;
    let v = gpt.config().vocab_size as i64;
    let device = val.tokens.device();
    let mut sums = tch::no_grad(|| -> Result<Tensor> {
        let mut nll = Tensor::zeros([], (Kind::Double, device));
        let mut scored = 0u64;
        for first in (start..end).step_by(batch_seqs.max(1)) {
            let n = (batch_seqs.min(end - first)) as i64;
            let x = val.tokens.narrow(0, first as i64 * t, n * t).view([n, t]);
            let y = val
                .tokens
                .narrow(0, first as i64 * t + 1, n * t)
                .view([n, t]);
            let logits = match packed_bos {
                None => gpt.logits(&x),
                Some(bos) => {
                    let row = x.reshape([1, n * t]);
                    let host = Vec::<i64>::try_from(row.reshape([-1]).to_device(tch::Device::Cpu))?;
                    let docs = Documents::from_tokens(&host, bos, t as usize).to_device(device);
                    gpt.packed_forward(&row, &docs, &mut Hooks::default())
                }
            };
            let batch = logits.view([-1, v]).cross_entropy_loss(
                &y.view([-1]),
                None::<Tensor>,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
            nll += batch.to_kind(Kind::Double);
            scored += (n * t) as u64;
        }
        Ok(Tensor::stack(
            &[
                nll,
                Tensor::scalar_tensor(scored as f64, (Kind::Double, device)),
            ],
            0,
        ))
    })?;
    comm.all_reduce_sum(&mut sums)?;
    let nll = sums.double_value(&[0]);
    let scored = sums.double_value(&[1]) as u64;
    ensure!(
        scored == val.targets,
        "validation scored {scored} targets, expected {} (each exactly once)",
        val.targets
    );
    Ok(ValResult {
        loss: nll / scored as f64,
        bpb: nll / (LN_2 * val.bytes as f64),
    })
}
