//! The network as a [`Scorer`]: the GPT of `pgolf-model` with given (decoded) weights, scoring
//! windows in batches: log-softmax of the f32 soft-capped logits, the target's `−ln p`, entropies
//! and probe rows from the same logits.

use anyhow::{bail, Result};
use pgolf_model::{Adapter, Gpt, Hooks, ModelConfig};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

use crate::scorer::{Request, Scorer, Scores};

pub struct Net {
    pub vs: nn::VarStore,
    pub gpt: Gpt,
    pub device: Device,
}

impl Net {
    /// A model of `cfg` on `device` holding exactly the tensors `named` (upstream state_dict names):
    /// a missing, unexpected or misshapen tensor is an error naming it.
    pub fn from_tensors(
        cfg: &ModelConfig,
        named: &[(String, Tensor)],
        device: Device,
        source: &str,
    ) -> Result<Net> {
        let vs = nn::VarStore::new(device);
        let gpt = Gpt::new(&vs.root(), cfg)?;
        let given: HashMap<&str, &Tensor> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, _) in named {
            if !gpt.named_parameters().iter().any(|(n, _)| n == name) {
                bail!("{source}: unexpected tensor {name} (not a parameter of this model)");
            }
        }
        tch::no_grad(|| -> Result<()> {
            for (name, param) in gpt.named_parameters() {
                let Some(src) = given.get(name.as_str()) else {
                    bail!("{source}: missing tensor {name}")
                };
                if src.size() != param.size() {
                    bail!(
                        "{source}: tensor {name} has shape {:?}, the model expects {:?}",
                        src.size(),
                        param.size()
                    );
                }
                param.shallow_clone().copy_(&src.to_kind(param.kind()));
            }
            Ok(())
        })?;
        Ok(Net { vs, gpt, device })
    }

    pub fn vocab_size(&self) -> usize {
        self.gpt.config().vocab_size
    }

    /// Pads a batch of requests into `[B, T]` inputs and targets (targets at the scored positions,
    /// 0 elsewhere) and returns them with the scored offsets of each row.
    pub fn batch(&self, batch: &[Request<'_>]) -> (Tensor, Tensor) {
        let t = batch
            .iter()
            .map(|r| r.inputs.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut x = vec![0i64; batch.len() * t];
        let mut y = vec![0i64; batch.len() * t];
        for (i, r) in batch.iter().enumerate() {
            for (j, &tok) in r.inputs.iter().enumerate() {
                x[i * t + j] = tok as i64;
            }
            for (k, &tok) in r.targets.iter().enumerate() {
                y[i * t + r.score_from + k] = tok as i64;
            }
        }
        let shape = [batch.len() as i64, t as i64];
        (
            Tensor::from_slice(&x).view(shape).to(self.device),
            Tensor::from_slice(&y).view(shape).to(self.device),
        )
    }

    /// Log-probabilities `[B, T, V]` (f32) for inputs `x` with an optional adapter.
    pub fn log_probs(&self, x: &Tensor, adapter: Option<&dyn Adapter>) -> Tensor {
        let mut hooks = Hooks {
            taps: None,
            adapter,
        };
        self.gpt.forward(x, &mut hooks).log_softmax(-1, Kind::Float)
    }
}

/// Turns log-probabilities `[B, T, V]` into the scorer's answers. Returns per-token NLL `[B, T]`
/// (still attached to the graph when `logp` is) for callers that train on the same forward.
pub fn answers(
    batch: &[Request<'_>],
    logp: &Tensor,
    y: &Tensor,
    entropy: bool,
) -> Result<(Vec<Scores>, Tensor)> {
    let nll = -logp.gather(2, &y.unsqueeze(-1), false).squeeze_dim(-1);
    let nll_cpu = Vec::<f32>::try_from(nll.detach().to_device(Device::Cpu).flatten(0, -1))?;
    let ent_cpu = if entropy {
        let lp = logp.detach();
        let h = -(lp.exp() * &lp).sum_dim_intlist(-1, false, Kind::Float);
        Vec::<f32>::try_from(h.to_device(Device::Cpu).flatten(0, -1))?
    } else {
        vec![]
    };
    let t = logp.size()[1] as usize;
    let mut out = Vec::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        let range = i * t + r.score_from..i * t + r.score_from + r.targets.len();
        let mut s = Scores {
            nll: nll_cpu[range.clone()].iter().map(|&v| v as f64).collect(),
            ..Default::default()
        };
        if entropy {
            s.entropy = ent_cpu[range].iter().map(|&v| v as f64).collect();
        }
        if let Some(k) = r.probe {
            let row = logp
                .get(i as i64)
                .get((r.score_from + k) as i64)
                .detach()
                .to_kind(Kind::Double)
                .exp()
                .to_device(Device::Cpu);
            s.probe = Some(Vec::<f64>::try_from(row)?);
        }
        out.push(s);
    }
    Ok((out, nll))
}

/// The fixed network (flat and sliding evaluation).
impl Scorer for Net {
    fn vocab_size(&self) -> usize {
        Net::vocab_size(self)
    }

    fn score(&mut self, batch: &[Request<'_>], entropy: bool) -> Result<Vec<Scores>> {
        let (x, y) = self.batch(batch);
        tch::no_grad(|| {
            let logp = self.log_probs(&x, None);
            answers(batch, &logp, &y, entropy).map(|(a, _)| a)
        })
    }
}
