//! Weights as safetensors, by upstream `state_dict` name, so our files load into the Python
//! reference's `GPT` (`safetensors.torch.load_file` + `load_state_dict(strict=True)`) and back.
//! Loading is strict: a missing or unexpected tensor, or a shape mismatch, is an error naming the
//! file and the tensor. Dtypes convert to the variable's dtype.

use anyhow::{anyhow, bail, Result};
use pgolf_evaluator::{bank_slices, ModelConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn, Device, Tensor};

/// The stored layout of a model's tensors: per layer, or R0323's parameter banks when the config
/// says `banks` (each bank the stack of its per-layer matrices, `pgolf_evaluator::bank_slices`).
pub fn to_file_layout(
    cfg: &ModelConfig,
    named: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>> {
    if !cfg.banks {
        return Ok(named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect());
    }
    let mut by_name: BTreeMap<String, Tensor> = named
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let mut out = vec![];
    for (bank, slices) in bank_slices(cfg.num_layers) {
        let parts = slices
            .iter()
            .map(|s| {
                by_name
                    .remove(s)
                    .ok_or_else(|| anyhow!("{bank}: no tensor {s}"))
            })
            .collect::<Result<Vec<Tensor>>>()?;
        out.push((bank.to_string(), Tensor::stack(&parts, 0)));
    }
    out.extend(by_name);
    Ok(out)
}

/// A file's tensors in the per-layer layout: banks (recognised by name; the layer count from
/// `mlp_up_bank`'s first dim) split into their matrices, everything else as it is.
fn from_file_layout(
    path: &Path,
    mut file: BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>> {
    let Some(up) = file.get("mlp_up_bank") else {
        return Ok(file);
    };
    let layers = up.size()[0] as usize;
    for (bank, slices) in bank_slices(layers) {
        let t = file
            .remove(bank)
            .ok_or_else(|| anyhow!("{}: has mlp_up_bank but no {bank}", path.display()))?;
        if t.size()[0] as usize != slices.len() {
            bail!(
                "{}: {bank} has {} slices, {layers} layers need {}",
                path.display(),
                t.size()[0],
                slices.len()
            );
        }
        for (k, name) in slices.into_iter().enumerate() {
            file.insert(name, t.get(k as i64));
        }
    }
    Ok(file)
}

/// Reads every tensor of a safetensors file (on the CPU).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("{}: no such weights file", path.display());
    }
    Tensor::read_safetensors(path)
        .map_err(|e| anyhow!("{}: not a readable safetensors file ({e})", path.display()))
}

/// Writes named tensors (any device; copied to the CPU, contiguous), sorted by name, atomically.
pub fn save_tensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut sorted: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = path.with_extension("safetensors.partial");
    Tensor::write_safetensors(&sorted, &tmp)
        .map_err(|e| anyhow!("{}: cannot write weights ({e})", path.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow!("{}: cannot move weights into place ({e})", path.display()))?;
    Ok(())
}

/// Saves every variable of a VarStore under its name.
pub fn save_safetensors(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    save_tensors(&named, path)
}

/// Copies a file's tensors into `targets` (name → tensor), strictly: the file must hold exactly
/// these names with these shapes.
pub fn load_into(targets: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let file = from_file_layout(path, read_tensors(path)?.into_iter().collect())?;
    let mut missing: Vec<&String> = targets.keys().filter(|n| !file.contains_key(*n)).collect();
    missing.sort();
    if let Some(name) = missing.first() {
        bail!(
            "{}: missing tensor {name} ({} missing in all)",
            path.display(),
            missing.len()
        );
    }
    if let Some(name) = file.keys().find(|n| !targets.contains_key(*n)) {
        bail!(
            "{}: unexpected tensor {name} (not a parameter of this model)",
            path.display()
        );
    }
    for (name, src) in &file {
        let dst = &targets[name];
        if src.size() != dst.size() {
            bail!(
                "{}: tensor {name} has shape {:?}, the model expects {:?}",
                path.display(),
                src.size(),
                dst.size()
            );
        }
    }
    tch::no_grad(|| {
        for (name, src) in &file {
            let mut dst = targets[name].shallow_clone();
            dst.copy_(src);
        }
    });
    Ok(())
}

/// Loads a safetensors file into a VarStore's variables (strict, see the module doc).
pub fn load_safetensors(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    load_into(&vs.variables(), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gpt, ModelConfig};
    use tch::Kind;

    fn tiny() -> ModelConfig {
        ModelConfig {
            vocab_size: 64,
            num_layers: 3,
            model_dim: 32,
            num_heads: 4,
            num_kv_heads: 2,
            seq_len: 16,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_is_exact_and_strict() {
        tch::manual_seed(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let vs = nn::VarStore::new(Device::Cpu);
        let gpt = Gpt::new(&vs.root(), &tiny()).unwrap();
        // Perturb the zero-initialised projections so the round trip checks real values.
        tch::no_grad(|| {
            for (_, t) in gpt.named_parameters() {
                let _ = t.shallow_clone().g_add_(&(t.randn_like() * 0.01));
            }
        });
        save_safetensors(&vs, &path).unwrap();

        tch::manual_seed(2);
        let mut other = nn::VarStore::new(Device::Cpu);
        let gpt2 = Gpt::new(&other.root(), &tiny()).unwrap();
        load_safetensors(&mut other, &path).unwrap();
        for ((n1, a), (n2, b)) in gpt.named_parameters().iter().zip(gpt2.named_parameters()) {
            assert_eq!(n1, n2);
            assert!(a.equal(b), "{n1} differs after the round trip");
        }
        let x = Tensor::randint(64, [2, 8], (Kind::Int64, Device::Cpu));
        assert!(gpt.logits(&x).equal(&gpt2.logits(&x)));
    }

    #[test]
    fn bad_files_name_the_file_and_tensor() {
        tch::manual_seed(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (vs, _gpt) = crate::build(&tiny(), Device::Cpu).unwrap();
        save_safetensors(&vs, &path).unwrap();

        // A model of another shape: the mismatch names the tensor.
        let (mut wide, _) = crate::build(
            &ModelConfig {
                model_dim: 64,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let err = format!("{:#}", load_safetensors(&mut wide, &path).unwrap_err());
        assert!(
            err.contains("w.safetensors") && err.contains("shape"),
            "{err}"
        );

        // A deeper model: missing tensors of block 3.
        let (mut deep, _) = crate::build(
            &ModelConfig {
                num_layers: 4,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let err = format!("{:#}", load_safetensors(&mut deep, &path).unwrap_err());
        assert!(err.contains("missing tensor blocks.3."), "{err}");

        // A shallower model: unexpected tensors.
        let (mut shallow, _) = crate::build(
            &ModelConfig {
                num_layers: 2,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let err = format!("{:#}", load_safetensors(&mut shallow, &path).unwrap_err());
        assert!(err.contains("unexpected tensor blocks.2."), "{err}");

        // Weights of a model with an option this config lacks (BigramHash), and the reverse.
        let with_bigram = ModelConfig {
            bigram: Some(crate::config::BigramHash {
                buckets: 16,
                dim: 8,
            }),
            ..tiny()
        };
        let bigram_path = dir.path().join("bigram.safetensors");
        let (vs_bigram, _) = crate::build(&with_bigram, Device::Cpu).unwrap();
        save_safetensors(&vs_bigram, &bigram_path).unwrap();
        let (mut plain, _) = crate::build(&tiny(), Device::Cpu).unwrap();
        let err = format!(
            "{:#}",
            load_safetensors(&mut plain, &bigram_path).unwrap_err()
        );
        assert!(err.contains("unexpected tensor bigram."), "{err}");
        let (mut wants_bigram, _) = crate::build(&with_bigram, Device::Cpu).unwrap();
        let err = format!(
            "{:#}",
            load_safetensors(&mut wants_bigram, &path).unwrap_err()
        );
        assert!(err.contains("missing tensor bigram."), "{err}");
        // A config naming an option this build does not have is refused, naming the field.
        let cfg_path = dir.path().join("config.json");
        std::fs::write(&cfg_path, r#"{"num_layers": 2, "dtg_gate": true}"#).unwrap();
        let err = format!("{:#}", ModelConfig::read(&cfg_path).unwrap_err());
        assert!(
            err.contains("config.json") && err.contains("unknown field `dtg_gate`"),
            "{err}"
        );

        // Corrupted bytes (a truncated file) and a missing file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (mut same, _) = crate::build(&tiny(), Device::Cpu).unwrap();
        let err = format!("{:#}", load_safetensors(&mut same, &path).unwrap_err());
        assert!(
            err.contains("w.safetensors") && err.contains("not a readable safetensors file"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load_safetensors(&mut same, &dir.path().join("nope.safetensors")).unwrap_err()
        );
        assert!(
            err.contains("nope.safetensors: no such weights file"),
            "{err}"
        );
    }
}
