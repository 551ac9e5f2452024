//! A numerics diagnostic: what the network computes on the first windows of the val stream — the
//! input of every linear layer (the model's taps), the soft-capped logits and the per-token NLL —
//! saved so another implementation of the same model can be compared layer by layer
//! (`bench/eval_diag.py` compares them with upstream's forward hooks on the same weights).

use anyhow::{bail, Result};
use pgolf_model::{save_tensors, Hooks};
use std::path::Path;
use tch::{Kind, Tensor};

use super::net::Net;

/// Runs the first `windows` flat windows of `seq_len` (inputs `tokens[w·T .. (w+1)·T]`, targets one
/// later, as upstream `eval_val` batches them) through `net` in one batch and writes to `path`:
/// `in.{weight name}` (each linear layer's input `[windows·T, in]`, in the dtype it ran in),
/// `logits` (`[windows, T, V]` f32) and `nll` (`[windows, T]` f32, nats).
pub fn dump_activations(
    net: &Net,
    tokens: &[u16],
    windows: usize,
    seq_len: usize,
    path: &Path,
) -> Result<()> {
    let needed = windows * seq_len + 1;
    if windows == 0 || tokens.len() < needed {
        bail!(
            "dump_activations: {windows} windows of {seq_len} need {needed} val tokens; the stream has {}",
            tokens.len()
        );
    }
    let ids: Vec<i64> = tokens[..needed].iter().map(|&t| t as i64).collect();
    let all = Tensor::from_slice(&ids).to(net.device);
    let shape = [windows as i64, seq_len as i64];
    let x = all
        .narrow(0, 0, windows as i64 * seq_len as i64)
        .view(shape);
    let y = all
        .narrow(0, 1, windows as i64 * seq_len as i64)
        .view(shape);
    let mut named: Vec<(String, Tensor)> = vec![];
    let logits = {
        let mut tap = |name: &str, input: &Tensor| {
            named.push((format!("in.{name}"), input.detach().copy()));
        };
        tch::no_grad(|| net.gpt.forward(&x, &mut Hooks::with_taps(&mut tap)))
    };
    let v = logits.size()[2];
    let nll = logits
        .view([-1, v])
        .log_softmax(-1, Kind::Float)
        .gather(1, &y.view([-1, 1]), false)
        .neg()
        .view(shape);
    named.push(("logits".into(), logits));
    named.push(("nll".into(), nll));
    save_tensors(&named, path)
}
