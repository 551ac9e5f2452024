//! The device model as a [`Scorer`]: requests padded into batches of windows of one length,
//! split where the device's buffers are smaller than the batch asks.

use anyhow::{bail, Result};
use pgolf_eval::{Request, Scorer, Scores};

use crate::model::{Batch, GpuModel};

pub struct WgpuScorer<'m> {
    pub model: &'m GpuModel,
}

impl Scorer for WgpuScorer<'_> {
    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        if entropy {
            bail!("portable-eval does not compute predictive entropies");
        }
        let t = batch
            .iter()
            .map(|r| r.inputs.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let per_pass = (self.model.max_rows() / t).max(1);
        let mut out = Vec::with_capacity(batch.len());
        for part in batch.chunks(per_pass) {
            out.extend(self.pass(part, t)?);
        }
        Ok(out)
    }
}

impl WgpuScorer<'_> {
    /// One forward pass over `part`, every window padded to `t` positions.
    fn pass(&self, part: &[Request<'_>], t: usize) -> Result<Vec<Scores>> {
        let mut b = Batch {
            t,
            windows: part.len(),
            ids: vec![0; part.len() * t],
            rows: vec![],
            targets: vec![],
            probes: vec![],
        };
        let mut firsts = Vec::with_capacity(part.len());
        for (w, r) in part.iter().enumerate() {
            for (j, &id) in r.inputs.iter().enumerate() {
                b.ids[w * t + j] = id as u32;
            }
            firsts.push(b.rows.len());
            if let Some(k) = r.probe {
                b.probes.push(b.rows.len() + k);
            }
            for (k, &y) in r.targets.iter().enumerate() {
                b.rows.push((w * t + r.score_from + k) as u32);
                b.targets.push(y as u32);
            }
        }
        let out = self.model.forward(&b)?;
        let mut probes = out.probes.into_iter();
        Ok(part
            .iter()
            .zip(firsts)
            .map(|(r, first)| Scores {
                nll: out.nll[first..first + r.targets.len()]
                    .iter()
                    .map(|&v| v as f64)
                    .collect(),
                entropy: vec![],
                probe: r.probe.and_then(|_| probes.next()),
            })
            .collect())
    }
}
