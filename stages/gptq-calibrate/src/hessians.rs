//! Accumulating `XᵀX` per tapped weight over calibration batches (fp32, on the model's device).

use anyhow::{bail, Result};
use pgolf_model::{Gpt, Hooks};
use pgolf_optim::Collective;
use pgolf_quant::{write_safetensors, DType, Weight};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct Sums {
    /// Weight name → Σ XᵀX (fp32, on the device).
    sums: BTreeMap<String, Tensor>,
    /// Weight name → rows accumulated.
    pub rows: BTreeMap<String, usize>,
    pub batches: usize,
}

/// Runs the model over `ids` (`[n, T]`) in batches of `batch` sequences, summing every tap's XᵀX.
pub fn collect(gpt: &Gpt, ids: &Tensor, batch: usize, device: Device) -> Result<Sums> {
    let n = ids.size()[0] as usize;
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    let bar = pgolf_store::progress::bar(n.div_ceil(batch) as u64, "calibrate");
    let mut batches = 0;
    tch::no_grad(|| {
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            let x = ids.narrow(0, start as i64, len as i64).to_device(device);
            // c_q, c_k and c_v are tapped with the same input: compute its XᵀX once. The input is
            // held while it is remembered, so its address cannot be reused by another tensor.
            let mut last: Option<(Tensor, Tensor)> = None;
            let mut tap = |name: &str, input: &Tensor| {
                let same = last.as_ref().is_some_and(|(prev, _)| {
                    prev.data_ptr() == input.data_ptr() && prev.size() == input.size()
                });
                let xtx = match &last {
                    Some((_, xtx)) if same => xtx.shallow_clone(),
                    _ => {
                        let x = input.to_kind(Kind::Float);
                        let xtx = x.transpose(0, 1).matmul(&x);
                        last = Some((input.shallow_clone(), xtx.shallow_clone()));
                        xtx
                    }
                };
                match sums.get_mut(name) {
                    Some(s) => {
                        let _ = s.g_add_(&xtx);
                    }
                    None => {
                        sums.insert(name.to_string(), xtx.copy());
                    }
                }
                *rows.entry(name.to_string()).or_default() += input.size()[0] as usize;
            };
            let _ = gpt.forward(&x, &mut Hooks::with_taps(&mut tap));
            batches += 1;
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    if sums.is_empty() {
        bail!("the model exposed no linear inputs to calibrate");
    }
    Ok(Sums {
        sums,
        rows,
        batches,
    })
}

/// [`collect`] on several ranks: the same sequences on every rank (rank 0's, broadcast, so a
/// self-generated set is one set), each rank its contiguous share of the batches (the batches are
/// the ones one rank would make), then every sum, row count and the batch count summed over ranks.
/// The sums differ from one rank's only in the order of the f32 additions.
pub fn collect_over_ranks(
    gpt: &Gpt,
    ids: &Tensor,
    batch: usize,
    comm: &dyn Collective,
    device: Device,
) -> Result<Sums> {
    // On the rank's device, the group's (NCCL reduces CUDA tensors, Gloo CPU ones).
    let mut ids = ids.to_device(device).contiguous();
    comm.broadcast(&mut ids, 0)?;
    let n = ids.size()[0] as usize;
    let batches = n.div_ceil(batch);
    let world = comm.world_size();
    if batches < world {
        bail!("{batches} calibration batches cannot be shared by {world} ranks");
    }
    let mine = pgolf_dist::stage::share(batches, comm.rank(), world);
    let first = mine.start * batch;
    let last = (mine.end * batch).min(n);
    let mut sums = collect(
        gpt,
        &ids.narrow(0, first as i64, (last - first) as i64),
        batch,
        device,
    )?;
    for s in sums.sums.values_mut() {
        comm.all_reduce_sum(s)?;
    }
    // Counts as f64: exact far beyond any calibration set.
    let mut counts: Vec<f64> = sums.rows.values().map(|&r| r as f64).collect();
    counts.push(sums.batches as f64);
    let mut counts = Tensor::from_slice(&counts).to_device(device);
    comm.all_reduce_sum(&mut counts)?;
    let counts = Vec::<f64>::try_from(counts.to_device(Device::Cpu))?;
    for (r, c) in sums.rows.values_mut().zip(&counts) {
        *r = *c as usize;
    }
    sums.batches = counts[counts.len() - 1] as usize;
    Ok(sums)
}

impl Sums {
    /// Writes `H = Σ/batches` for every weight; returns how many.
    pub fn write(&self, path: &Path) -> Result<usize> {
        let mut out = Vec::with_capacity(self.sums.len());
        for (name, s) in &self.sums {
            let h = (s / self.batches as f64)
                .to_device(Device::Cpu)
                .contiguous();
            let cols = h.size()[0] as usize;
            let data = Vec::<f32>::try_from(h.view([-1]))?;
            if data.iter().any(|v| !v.is_finite()) {
                bail!("the Hessian of {name} holds non-finite values (the model produced inf/NaN activations)");
            }
            out.push(Weight {
                name: name.clone(),
                shape: vec![cols, cols],
                dtype: DType::F32,
                data,
            });
        }
        write_safetensors(path, &out)?;
        Ok(out.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_model::{build, ModelConfig};
    use pgolf_store::files;

    fn tiny() -> (tch::nn::VarStore, Gpt) {
        tch::manual_seed(5);
        let cfg = ModelConfig {
            vocab_size: 64,
            num_layers: 2,
            model_dim: 32,
            num_heads: 4,
            num_kv_heads: 2,
            seq_len: 16,
            ..Default::default()
        };
        let (vs, gpt) = build(&cfg, Device::Cpu).unwrap();
        tch::no_grad(|| {
            for (_, t) in gpt.named_parameters() {
                let _ = t.shallow_clone().g_add_(&(t.randn_like() * 0.05));
            }
        });
        (vs, gpt)
    }

    fn h(s: &Sums, name: &str) -> Tensor {
        &s.sums[name] / s.batches as f64
    }

    #[test]
    fn hessians_average_xtx_over_batches() {
        let (_vs, gpt) = tiny();
        let ids = Tensor::randint(64, [6, 16], (Kind::Int64, Device::Cpu));
        let sums = collect(&gpt, &ids, 2, Device::Cpu).unwrap();
        assert_eq!(sums.batches, 3);
        assert_eq!(sums.rows["blocks.1.mlp.proj.weight"], 6 * 16);
        assert_eq!(sums.sums.len(), 2 * 6 + 1);
        // The attention and head inputs are RMS-normalised (mean square 1 per row), so
        // trace(H) = rows · d / batches exactly up to rounding: an independent check of the sum.
        for name in [
            "blocks.0.attn.c_q.weight",
            "blocks.1.mlp.fc.weight",
            "tok_emb.weight",
        ] {
            let trace = h(&sums, name).trace().double_value(&[]);
            let expect = (6 * 16 * 32) as f64 / 3.0;
            assert!(
                (trace / expect - 1.0).abs() < 1e-4,
                "{name}: trace {trace}, expected {expect}"
            );
        }
        // c_q, c_k and c_v see one input; every H is symmetric.
        assert!(h(&sums, "blocks.0.attn.c_q.weight").equal(&h(&sums, "blocks.0.attn.c_v.weight")));
        let p = h(&sums, "blocks.0.mlp.proj.weight");
        assert!(p.allclose(&p.transpose(0, 1), 1e-6, 1e-6, false));
        // One batch of all six sequences: the sum is the same, the average three times larger.
        let one = collect(&gpt, &ids, 6, Device::Cpu).unwrap();
        let a = h(&one, "blocks.1.attn.proj.weight");
        let b = h(&sums, "blocks.1.attn.proj.weight") * 3.0;
        assert!(a.allclose(&b, 1e-4, 1e-4, false));
    }

    #[test]
    fn written_hessians_are_fp32_square_and_named_by_weight() {
        let (_vs, gpt) = tiny();
        let ids = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
        let sums = collect(&gpt, &ids, 1, Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::HESSIANS);
        assert_eq!(sums.write(&path).unwrap(), 13);
        let back = pgolf_quant::read_safetensors_map(&path).unwrap();
        let proj = &back["blocks.0.mlp.proj.weight"];
        assert_eq!((proj.dtype, proj.shape.clone()), (DType::F32, vec![64, 64]));
        assert_eq!(back["tok_emb.weight"].shape, vec![32, 32]);
    }
}
